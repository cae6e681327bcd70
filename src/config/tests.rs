use super::*;

fn check(text: &str) -> Result<Config, String> {
    parse(Path::new("conf/marksync.yaml"), text).map_err(|d| d.to_string())
}

#[test]
fn minimal_config_gets_defaults_and_relative_paths() {
    let c = check("sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\n").unwrap();
    assert_eq!(c.sdkappid, 1_400_000_000);
    assert_eq!(c.desired, Path::new("conf/marks/"));
    assert_eq!(c.state, Location::File("conf/state/marksync.json".into()));
    assert_eq!(c.endpoint, Endpoint::Region(Region::China));
    assert_eq!(c.max_calls_per_second, 200);
    assert_eq!(c.renew_margin, Duration::from_secs(12 * 3600));
    assert_eq!(c.debounce, Duration::from_millis(300));
    assert_eq!(c.guard, Guard::default());
    assert_eq!(c.http, None);
}

#[test]
fn full_config_reads_every_key() {
    let c = check(
        "sdkappid: 1\nidentifier: admin\nsecret_key_file: /etc/k\nregion: singapore\ndesired: /m\nstate: /s.json\n\
         max_calls_per_second: 50\nrenew_margin: 6h\nretry_pending_every: 30s\nreassert_every: 1h\ndebounce: 100ms\n\
         usersig_ttl: 2d\nguard: { max_clear_fraction: 0.5, min_clears: 3 }\nhttp: { listen: 127.0.0.1:9000, callback_token_file: t }\n",
    )
    .unwrap();
    assert_eq!(c.endpoint, Endpoint::Region(Region::Singapore));
    assert_eq!(c.secret_key_file.as_deref(), Some(Path::new("/etc/k")));
    assert_eq!(
        c.guard,
        Guard {
            max_clear_fraction: 0.5,
            min_clears: 3
        }
    );
    let http = c.http.unwrap();
    assert_eq!(http.listen.port(), 9000);
    assert_eq!(
        http.callback_token_file.as_deref(),
        Some(Path::new("conf/t"))
    );
    assert_eq!(c.usersig_ttl, Duration::from_secs(2 * 86400));
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = check("identifier: 5\nregoin: china\ndebounce: soon\nguard: { min_clears: -1 }\n")
        .unwrap_err();
    for want in [
        "conf/marksync.yaml:1:1: error: missing required key `sdkappid`",
        "conf/marksync.yaml:1:13: error: `identifier` must be an account name, but YAML reads 5 as a number; quote it: identifier: \"5\"",
        "conf/marksync.yaml:2:1: error: unknown key `regoin`; did you mean `region`?",
        "conf/marksync.yaml:3:11: error: `debounce`: \"soon\" is not a duration",
        "`guard.min_clears` must be a whole number of marks, 0 or more, found -1",
        "missing required key `desired`",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn endpoint_forms() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
    assert_eq!(
        check(&format!("{base}endpoint: embedded\n"))
            .unwrap()
            .endpoint,
        Endpoint::Embedded
    );
    assert_eq!(
        check(&format!("{base}endpoint: https://x.example/\n"))
            .unwrap()
            .endpoint,
        Endpoint::Url("https://x.example".into())
    );
    assert!(check(&format!("{base}endpoint: ftp://x\n")).is_err());
    assert!(
        check(&format!("{base}region: mars\n"))
            .unwrap_err()
            .contains("unknown region \"mars\"")
    );
}

/// Issue 7, "durations are unbounded": the largest accepted value of every duration goes
/// through what the daemon and the client do with it (deadlines from `Instant::now()`, 4x the
/// debounce, tokio intervals, UserSig expiry in Unix seconds) without overflowing or
/// panicking; the smallest is not zero (a zero interval panics in tokio).
#[test]
fn durations_in_range_cannot_overflow_the_daemons_timers() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // What the issue's `reassert_every: 500000000000y` did before it was refused at load.
    let issue = humantime::parse_duration("500000000000y").unwrap();
    assert!(std::time::Instant::now().checked_add(issue).is_none());
    for &(key, lo, hi) in DURATION_BOUNDS {
        assert!(!lo.is_zero(), "{key}");
        for d in [lo, hi] {
            let _ = std::time::Instant::now() + d * 4;
            let _ = std::time::SystemTime::now() + d * 4;
            // The UserSig's expiry and the daemon's renewal arithmetic, in Unix seconds.
            let year_2100: crate::model::UnixTime = 4_102_444_800;
            let secs = i64::try_from(d.as_secs()).unwrap();
            assert!(year_2100.checked_add(secs * 4).is_some(), "{key}");
            let _ = crate::tim::usersig::generate(1, &key_for_tests(), "a", d.as_secs(), year_2100);
            runtime.block_on(async {
                let _ = tokio::time::Instant::now() + d * 4;
                let mut timer = tokio::time::interval(d);
                timer.tick().await; // the first tick is immediate
                drop(tokio::time::sleep(d));
            });
        }
        // What the config accepts at the edges is exactly the table.
        let text = |d: Duration| {
            format!(
                "sdkappid: 1\nidentifier: a\ndesired: m\n{key}: {}\n",
                short(d)
            )
        };
        {
            assert!(check(&text(lo)).is_ok(), "{key} at {}", short(lo));
            assert!(check(&text(hi)).is_ok(), "{key} at {}", short(hi));
            let over = check(&text(hi + Duration::from_secs(1))).unwrap_err();
            assert!(over.contains(&format!("`{key}` must be between")), "{over}");
        }
    }
}

#[test]
fn short_periods_only_against_the_local_emulator() {
    let text = |endpoint: &str, period: &str| {
        format!(
            "sdkappid: 1\nidentifier: a\ndesired: m\n{endpoint}reassert_every: {period}\nretry_pending_every: {period}\n"
        )
    };
    for endpoint in ["endpoint: embedded\n", "endpoint: http://127.0.0.1:9000\n"] {
        let c = check(&text(endpoint, "1s")).unwrap();
        assert_eq!(c.reassert_every, Duration::from_secs(1));
        let e = check(&text(endpoint, "999ms")).unwrap_err();
        assert!(
            e.contains("`reassert_every` must be between 1s and 7d"),
            "{e}"
        );
        let e = check(&format!("{}usersig_ttl: 1m\n", text(endpoint, "1s"))).unwrap_err();
        assert!(
            e.contains("`usersig_ttl` must be between 1h and 180d"),
            "{e}"
        );
    }
    for endpoint in ["", "region: tokyo\n", "endpoint: https://x.example\n"] {
        let e = check(&text(endpoint, "1s")).unwrap_err();
        assert!(
            e.contains("`reassert_every` must be between 1m and 7d"),
            "{e}"
        );
        assert!(
            e.contains("`retry_pending_every` must be between 5s and 1d"),
            "{e}"
        );
    }
    assert!(!EMULATOR_MIN_PERIOD.is_zero());
}

#[test]
fn defaults_are_within_their_bounds() {
    let c = check("sdkappid: 1\nidentifier: a\ndesired: m\n").unwrap();
    for (key, d) in c.bounded_durations() {
        let (lo, hi) = duration_bounds(key).unwrap();
        assert!((lo..=hi).contains(&d), "default {key} {d:?}");
        assert!(KEYS.contains(&key));
    }
}

#[test]
fn unit_typos_get_a_hint_other_units_do_not() {
    let minutes = (Duration::from_secs(60), Duration::from_secs(7 * DAY));
    let hint = |s: &str, (lo, hi): (Duration, Duration)| unit_typo(s, lo, hi);
    assert_eq!(hint("30ms", minutes).as_deref(), Some("30m"));
    assert_eq!(hint("1M", minutes).as_deref(), Some("1m"));
    assert_eq!(hint("72h", lo_hi("renew_margin")), None);
    let debounce = lo_hi("debounce");
    assert_eq!(hint("300s", debounce).as_deref(), Some("300ms"));
    assert_eq!(hint("500000000000y", minutes), None);
    assert_eq!(hint("4294967296ms", minutes), None);
    assert_eq!(hint("1h 30ms", minutes), None);
}

fn key_for_tests() -> crate::tim::usersig::SecretKey {
    crate::tim::usersig::SecretKey::new("abcd").unwrap()
}

fn lo_hi(key: &str) -> (Duration, Duration) {
    duration_bounds(key).unwrap()
}

#[test]
fn callback_token_is_one_printable_line_from_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callback.token");
    let read = |content: &[u8]| {
        std::fs::write(&path, content).unwrap();
        read_callback_token(&path)
    };
    assert_eq!(read(b"s3cr3t-t0ken\n").unwrap(), "s3cr3t-t0ken");
    for (content, reason) in [
        (&b"\xEF\xBB\xBFs3cr3t"[..], "byte-order mark"),
        (b"s3cr3t\nother\n", "second line"),
        (b"\"s3cr3t\"", "quotes"),
        (b"s3cr3t token", "a space or a non-printable"),
        (b" \n", "is empty"),
    ] {
        let e = read(content).unwrap_err();
        assert!(e.contains(reason), "{content:?}: {e}");
        assert!(e.contains("callback.token"), "{e}");
        assert!(!e.contains("s3cr3t"), "the token leaked: {e}");
    }
    let e = read_callback_token(Path::new("/dev/zero")).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    let e = read(&vec![b'a'; 5000]).unwrap_err();
    assert!(e.contains("larger than the limit"), "{e}");
}

#[test]
fn config_file_must_be_a_small_regular_file() {
    let e = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(
        e.contains("/dev/zero") && e.contains("not a regular file"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("marksync.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let e = load(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    let e = load(&big).unwrap_err().to_string();
    assert!(e.contains("larger than the limit of 1 MiB"), "{e}");
}

#[test]
fn config_path_precedence() {
    assert_eq!(
        resolve_path(Some("a.yaml".into()), Some("b.yaml".into())),
        Path::new("a.yaml")
    );
    assert_eq!(
        resolve_path(None, Some("b.yaml".into())),
        Path::new("b.yaml")
    );
    assert_eq!(resolve_path(None, None), Path::new("marksync.yaml"));
}

#[test]
fn refresh_every_is_off_unless_set_and_bounded() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
    assert_eq!(check(base).unwrap().refresh_every, None);
    let c = check(&format!("{base}refresh_every: 10m\n")).unwrap();
    assert_eq!(c.refresh_every, Some(Duration::from_secs(600)));
    let e = check(&format!("{base}refresh_every: 9s\n")).unwrap_err();
    assert!(
        e.contains("`refresh_every` must be between 10s and 7d"),
        "{e}"
    );
    // Against the local emulator, short periods are allowed like the other timers.
    let c = check(&format!("{base}endpoint: embedded\nrefresh_every: 1s\n")).unwrap();
    assert_eq!(c.refresh_every, Some(Duration::from_secs(1)));
}

#[test]
fn backup_endpoint_is_checked_like_endpoint() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
    assert_eq!(check(base).unwrap().backup_endpoint, None);
    let c = check(&format!(
        "{base}endpoint: https://a.example\nbackup_endpoint: https://b.example/\n"
    ))
    .unwrap();
    assert_eq!(c.backup_endpoint.as_deref(), Some("https://b.example"));
    let e = check(&format!("{base}backup_endpoint: http://b.example\n")).unwrap_err();
    assert!(e.contains("`backup_endpoint`"), "{e}");
    let e = check(&format!("{base}backup_endpoint: ftp://b.example\n")).unwrap_err();
    assert!(
        e.contains("`backup_endpoint` must be an https:// URL"),
        "{e}"
    );
}

#[test]
fn saved_plan_max_age_defaults_to_a_day_and_is_bounded() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
    assert_eq!(
        check(base).unwrap().saved_plan_max_age,
        Duration::from_secs(24 * 3600)
    );
    let c = check(&format!("{base}saved_plan_max_age: 2h\n")).unwrap();
    assert_eq!(c.saved_plan_max_age, Duration::from_secs(2 * 3600));
    for bad in ["30s", "31d"] {
        let e = check(&format!("{base}saved_plan_max_age: {bad}\n")).unwrap_err();
        assert!(
            e.contains("`saved_plan_max_age` must be between 1m and 30d"),
            "{bad}: {e}"
        );
    }
    // No emulator exception: the age protects the review, not the service.
    let e = check(&format!(
        "{base}endpoint: embedded\nsaved_plan_max_age: 30s\n"
    ))
    .unwrap_err();
    assert!(e.contains("saved_plan_max_age"), "{e}");
}

#[test]
fn max_alias_pairs_defaults_to_a_million_and_is_bounded() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
    assert_eq!(check(base).unwrap().max_alias_pairs, 1_000_000);
    for (ok, n) in [("0", 0), ("5000", 5000), ("100000000", 100_000_000)] {
        let c = check(&format!("{base}max_alias_pairs: {ok}\n")).unwrap();
        assert_eq!(c.max_alias_pairs, n);
    }
    for bad in ["-1", "100000001", "1.5", "lots"] {
        let e = check(&format!("{base}max_alias_pairs: {bad}\n")).unwrap_err();
        assert!(e.contains("max_alias_pairs"), "{bad}: {e}");
    }
}

#[test]
fn offline_error_codes_with_another_meaning_are_refused_naming_it() {
    let base = "sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\n";
    for (code, meaning) in [
        (70009, "signature check failed"),
        (70001, "expired"),
        (60007, "rate limited"),
        (10006, "rate limited"),
        (10002, "system error"),
        (60008, "timed out"),
        (10010, "does not exist"),
        (10015, "invalid group ID"),
        (60006, "SDKAppID is invalid"),
        (10007, "permission"),
        (10008, "signature"),
        (70050, "UserSig failures"),
        (10003, "invalid command"),
        (10011, "parse"),
    ] {
        let e = check(&format!("{base}offline_error_codes: [10004, {code}]\n")).unwrap_err();
        assert!(
            e.contains(&format!("{code}")) && e.contains(meaning) && e.contains(":4:"),
            "{code}: {e}"
        );
        assert!(e.contains("offline_error_codes"), "{e}");
    }
    // The documented default, the "account does not exist" code and undocumented codes.
    for codes in ["[10004]", "[10019]", "[20001, 10004]", "[]"] {
        let c = check(&format!("{base}offline_error_codes: {codes}\n")).unwrap();
        assert_eq!(format!("{:?}", c.offline_error_codes), codes);
    }
}

/// Writes a config in a new directory (with `marks/`, `elsewhere/` and `volume/` in it) and
/// loads it; returns the directory and the outcome.
fn load_in(state: &str, desired: &str, prepare: impl FnOnce(&Path)) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    for d in ["marks/sub", "elsewhere", "volume"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("single.yaml"), "groups: {}\n").unwrap();
    prepare(dir.path());
    let path = dir.path().join("marksync.yaml");
    std::fs::write(
        &path,
        format!(
            "sdkappid: 1400000000\nidentifier: administrator\ndesired: {desired}\nstate: {state}\n"
        ),
    )
    .unwrap();
    load(&path).map_err(|d| d.to_string())
}

#[test]
fn a_state_path_inside_the_desired_tree_is_a_config_error() {
    // (state, desired, a symbolic link to make first: (where, to what))
    let refused = [
        ("marks/state.json", "marks/", None),
        ("marks/sub/x.yaml", "marks", None),
        ("marks/sub/state", "./marks/", None),
        // In a directory the reader skips: a tree replaced whole would take it away.
        ("marks/.state/s.json", "marks/", None),
        // Through a linked directory.
        ("st/state.json", "marks/", Some(("st", "marks"))),
        // A link outside whose target is inside.
        (
            "state.json",
            "marks/",
            Some(("state.json", "marks/sub/real.json")),
        ),
        // A link inside (read as a desired file) whose target is outside.
        (
            "marks/state.json",
            "marks/",
            Some(("marks/state.json", "../volume/s.json")),
        ),
        // The desired path is a link to the directory holding the state.
        ("elsewhere/state.json", "m", Some(("m", "elsewhere"))),
        // A single desired file.
        ("single.yaml", "single.yaml", None),
    ];
    let link = |l: Option<(&'static str, &'static str)>| {
        move |d: &Path| {
            if let Some((from, to)) = l {
                std::os::unix::fs::symlink(to, d.join(from)).unwrap();
            }
        }
    };
    for (state, desired, l) in refused {
        let e = load_in(state, desired, link(l)).expect_err(state);
        assert!(
            e.contains("`state`")
                && e.contains("`desired`")
                && (e.contains("is inside the directory") || e.contains("is the file")),
            "{state} in {desired}: {e}"
        );
    }
    let accepted = [
        ("state/marksync.json", "marks/", None),
        ("marks-state.json", "marks", None),
        ("volume/s.json", "single.yaml", None),
        (
            "state.json",
            "marks/",
            Some(("state.json", "volume/s.json")),
        ),
    ];
    for (state, desired, l) in accepted {
        load_in(state, desired, link(l)).unwrap_or_else(|e| panic!("{state} {desired}: {e}"));
    }
}

#[test]
fn unsigned_callbacks_on_a_non_loopback_address_are_refused_unless_allowed() {
    let base = "sdkappid: 1\nidentifier: admin\ndesired: m\n";
    // Loopback without a token: only this machine can send callbacks.
    for listen in ["127.0.0.1:9464", "127.0.0.2:9464", "[::1]:9464"] {
        let c = check(&format!("{base}http: {{ listen: \"{listen}\" }}\n")).unwrap();
        assert!(!c.http.unwrap().allow_unsigned_callbacks);
    }
    // Any other address without a token: refused at the key, saying what to do.
    for listen in ["0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464"] {
        let e = check(&format!("{base}http: {{ listen: \"{listen}\" }}\n")).unwrap_err();
        assert!(e.contains("conf/marksync.yaml:4:"), "{e}");
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(e.contains("callback_token_file"), "{e}");
        assert!(e.contains("allow_unsigned_callbacks: true"), "{e}");
        // With a token, or knowingly allowed, it loads.
        let c = check(&format!(
            "{base}http: {{ listen: \"{listen}\", callback_token_file: t }}\n"
        ))
        .unwrap();
        assert!(!c.http.unwrap().allow_unsigned_callbacks);
        let c = check(&format!(
            "{base}http: {{ listen: \"{listen}\", allow_unsigned_callbacks: true }}\n"
        ))
        .unwrap();
        assert!(c.http.unwrap().allow_unsigned_callbacks);
    }
    let e = check(&format!(
        "{base}http: {{ listen: 127.0.0.1:1, allow_unsigned_callbacks: \"true\" }}\n"
    ))
    .unwrap_err();
    assert!(e.contains("allow_unsigned_callbacks"), "{e}");
}

#[test]
fn a_callback_token_file_readable_by_group_or_others_gets_the_key_files_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callback.token");
    std::fs::write(&path, "xxxxyyyy\n").unwrap();
    // The file has the test process's own group: readable by it is not loose (the Kubernetes
    // Secret mount); writable by it, or readable by others, is.
    let cases = [
        (0o600, false),
        (0o400, false),
        (0o440, false),
        (0o640, false),
        (0o660, true),
        (0o644, true),
        (0o604, true),
    ];
    for (mode, warned) in cases {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let warning = callback_token_permission_warning(&path);
        assert_eq!(warning.is_some(), warned, "{mode:o}: {warning:?}");
        if let Some(w) = warning {
            assert!(w.contains("callback token file"), "{w}");
            assert!(w.contains(&format!("{mode:03o}")), "{w}");
            assert!(w.contains("chmod 600"), "{w}");
            assert!(!w.contains("xxxxyyyy"), "{w}");
        }
    }
}

#[test]
fn state_is_a_path_or_a_served_url_and_never_a_url_read_as_a_path() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
    let state = |value: &str| check(&format!("{base}state: {value}\n")).map(|c| c.state);
    assert_eq!(
        state("s.json").unwrap(),
        Location::File("conf/s.json".into())
    );
    // `./` makes anything a path, colon and all.
    assert_eq!(
        state("./s3:/x.json").unwrap(),
        Location::File("conf/./s3:/x.json".into())
    );
    for url in [
        "s3://bucket/marksync/state.json",
        "az://container/state.json",
    ] {
        assert_eq!(state(url).unwrap(), Location::Object(url.into()), "{url}");
    }
    // (value, what the error must say): each at `state`'s line and column.
    for (value, says) in [
        (
            "file:///srv/state.json",
            "write the path itself: /srv/state.json",
        ),
        ("http://store.example/state.json", "is not a state store"),
        ("https://store.example/b/state.json", "state_store.endpoint"),
        (
            "S3://bucket/state.json",
            "did you mean s3://bucket/state.json?",
        ),
        (
            "s3:/bucket/state.json",
            "did you mean s3://bucket/state.json?",
        ),
        (
            "s3:bucket/state.json",
            "did you mean s3://bucket/state.json?",
        ),
        ("s3://bucket", "needs a bucket and an object key"),
        ("s3://bucket/", "needs a bucket and an object key"),
        ("s3:///state.json", "needs a bucket and an object key"),
        ("s3://bucket/dir/", "ends with `/`"),
        ("ftp://host/state.json", "unknown scheme `ftp://`"),
        // GCS is not verified (docs/remote-state.md): refused, never served unchecked.
        (
            "gs://bucket/state.json",
            "gs:// (Google Cloud Storage) is not supported",
        ),
        (
            "GS://bucket/state.json",
            "gs:// (Google Cloud Storage) is not supported",
        ),
        (
            "gs:/bucket/state.json",
            "gs:// (Google Cloud Storage) is not supported",
        ),
        // With the slashes missing as well: read as a path it would make a folder `gs:`.
        (
            "gs:bucket/state.json",
            "gs:// (Google Cloud Storage) is not supported",
        ),
    ] {
        let e = state(value).expect_err(value);
        assert!(
            e.contains("conf/marksync.yaml:4:8: error: `state`"),
            "{value}: not located at the value:\n{e}"
        );
        assert!(e.contains(says), "{value}: missing {says:?} in:\n{e}");
    }
}

#[test]
fn lock_ttl_defaults_to_30s_and_is_held_to_10s_to_10m() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
    assert_eq!(check(base).unwrap().lock_ttl, Duration::from_secs(30));
    assert_eq!(
        check(&format!("{base}lock_ttl: 2m\n")).unwrap().lock_ttl,
        Duration::from_secs(120)
    );
    for (value, says) in [
        ("5s", "`lock_ttl` must be between 10s and 10m, found 5s"),
        ("11m", "`lock_ttl` must be between 10s and 10m, found 11m"),
        ("30", "`lock_ttl` needs a unit"),
    ] {
        let e = check(&format!("{base}lock_ttl: {value}\n")).expect_err(value);
        assert!(e.contains("conf/marksync.yaml:4:11"), "{value}: {e}");
        assert!(e.contains(says), "{value}: missing {says:?} in:\n{e}");
    }
    // Not relaxed against the emulator: a lease shorter than a slow store's answer is no lease.
    assert!(check(&format!("{base}endpoint: embedded\nlock_ttl: 2s\n")).is_err());
}

#[test]
fn state_store_settings_are_checked_and_only_taken_for_an_object_state() {
    let base = "sdkappid: 1\nidentifier: a\ndesired: m\nstate: s3://b/k.json\n";
    let c = check(&format!(
        "{base}state_store: {{ endpoint: \"https://cos.ap-singapore.myqcloud.com\", region: ap-singapore }}\n"
    ))
    .unwrap();
    assert_eq!(
        c.state_store,
        Some(StoreSettings {
            endpoint: Some("https://cos.ap-singapore.myqcloud.com".into()),
            region: Some("ap-singapore".into()),
            account: None,
            allow_http: false,
        })
    );
    let c = check(&format!(
        "{base}state_store: {{ endpoint: \"http://127.0.0.1:8333\", allow_http: true }}\n"
    ))
    .unwrap();
    assert!(c.state_store.unwrap().allow_http);
    assert_eq!(check(base).unwrap().state_store, None);
    for (text, says) in [
        (
            format!("{base}state_store: {{ endpoint: \"http://127.0.0.1:8333\" }}\n"),
            "`state_store.endpoint` is plain http",
        ),
        (
            format!("{base}state_store: {{ endpoint: \"store.example\" }}\n"),
            "`state_store.endpoint` must be an https:// URL",
        ),
        (
            format!("{base}state_store: {{ region: \"\" }}\n"),
            "`state_store.region` must not be empty",
        ),
        (
            format!("{base}state_store: {{ allow_http: \"true\" }}\n"),
            "`state_store.allow_http` must be true or false",
        ),
        (
            format!("{base}state_store: {{ bucket: b }}\n"),
            "unknown key `bucket`",
        ),
        (
            "sdkappid: 1\nidentifier: a\ndesired: m\nstate_store: { region: x }\n".to_string(),
            "`state_store` applies to a state in an object store",
        ),
    ] {
        let e = check(&text).expect_err(&text);
        assert!(e.contains(says), "missing {says:?} in:\n{e}");
    }
}
