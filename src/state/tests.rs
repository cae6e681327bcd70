use super::*;

use crate::model::test_ids::{a, g, m};

fn sample() -> State {
    let mut s = State::new(1400000000);
    s.confirm(&g("@TGS#a"), &a("host"), [m(500), m(1000)], 1_764_000_000);
    s.confirm(&g("@TGS#a"), &a("teacher"), [m(1001)], 1_764_000_100);
    s.intend(&g("@TGS#b"), &a("x"), [m(600)]);
    s
}

#[test]
fn save_then_load_round_trips_and_counts_generations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("st/marksync.json");
    let mut s = sample();
    save(&path, &mut s).unwrap();
    assert_eq!(s.serial, 1);
    assert!(
        !backup_path(&path).exists(),
        "first save has no previous generation"
    );
    let loaded = load(&path, 1400000000).unwrap();
    assert_eq!(loaded, s);
    s.forget(&g("@TGS#a"), &a("teacher"), [m(1001)]);
    save(&path, &mut s).unwrap();
    let bak = parse(
        &backup_path(&path),
        &std::fs::read(backup_path(&path)).unwrap(),
    )
    .unwrap();
    assert_eq!(bak.serial, 1, ".bak holds the previous generation");
    assert_eq!(load(&path, 1400000000).unwrap().serial, 2);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(r#""host":{"500":1764000000,"1000":1764000000}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""intents":{"@TGS#b":{"x":[600]}}"#),
        "{text}"
    );
}

#[test]
fn missing_state_is_a_first_run_unless_a_backup_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    assert_eq!(load(&path, 7).unwrap(), State::new(7));
    std::fs::write(backup_path(&path), "{}").unwrap();
    assert!(matches!(
        load(&path, 7),
        Err(StateError::MissingWithBackup { .. })
    ));
}

#[test]
fn unusable_states_are_refused_never_read_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let cases: &[(&str, &str)] = &[
        ("", "corrupt"),
        (
            "{\"format_version\": 1, \"sdkappid\": 7, \"serial\": 1, \"groups\": {",
            "corrupt",
        ),
        ("[]", "corrupt"),
        (
            "{\"format_version\": 2, \"sdkappid\": 7, \"serial\": 1}",
            "version",
        ),
        (
            "{\"format_version\": 1, \"sdkappid\": 8, \"serial\": 1}",
            "other_app",
        ),
        (
            "{\"format_version\": 1, \"sdkappid\": 7, \"serial\": 1, \"groups\": {\"g\": {\"a\": {\"999\": 1}}}}",
            "corrupt",
        ),
        (
            "{\"format_version\": 1, \"sdkappid\": 7, \"serial\": 1, \"extra\": true}",
            "corrupt",
        ),
    ];
    for (text, label) in cases {
        std::fs::write(&path, text).unwrap();
        let err = load(&path, 7).expect_err(text);
        assert_eq!(err.metric_label(), *label, "{text}: {err}");
    }
}

#[test]
fn second_lock_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let held = lock(&path).unwrap();
    match lock(&path) {
        Err(StateError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(held);
    lock(&path).expect("lock is free again once dropped");
}

#[test]
fn confirm_resolves_intents() {
    let mut s = State::new(1);
    s.intend(&g("G"), &a("u"), [m(1000), m(1001)]);
    s.confirm(&g("G"), &a("u"), [m(1000)], 5);
    assert_eq!(s.intents[&g("G")][&a("u")].as_slice(), &[m(1001)]);
    s.drop_intents(&g("G"), &a("u"), [m(1001)]);
    assert!(s.intents.is_empty());
    assert_eq!(s.managed_count(), 1);
}

#[test]
fn intents_sidecar_survives_a_crash_and_is_folded_by_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    // A first apply that crashed after recording its intents: no state file yet.
    let mut s = State::new(7);
    s.intend(&g("G"), &a("u"), [m(1000), m(1001)]);
    save_intents(&path, &s).unwrap();
    assert!(!path.exists());
    let loaded = load(&path, 7).unwrap();
    assert_eq!(
        loaded.intents, s.intents,
        "a crash before the first save loses no intent"
    );

    let mut later = State::new(7);
    later.confirm(&g("G"), &a("u"), [m(1000)], 5);
    save(&path, &mut later).unwrap();
    assert!(
        !intents_path(&path).exists(),
        "a save folds and removes the sidecar"
    );
    // A sidecar written against the current generation is merged whole: an intent on a
    // confirmed mark (a clear in flight) makes that mark unknown.
    let mut clearing = later.clone();
    clearing.intend(&g("G"), &a("u"), [m(1000)]);
    save_intents(&path, &clearing).unwrap();
    let merged = load(&path, 7).unwrap();
    assert_eq!(merged.intents[&g("G")][&a("u")].as_slice(), &[m(1000)]);
    assert!(merged.confirmed(&g("G"), &a("u")).is_some());
    // One written against an older generation was folded by the save that made this one
    // (a crash between that save's rename and its removal of the sidecar): ignored.
    save_intents(&path, &s).unwrap();
    assert!(load(&path, 7).unwrap().intents.is_empty());

    std::fs::write(intents_path(&path), "{").unwrap();
    assert_eq!(load(&path, 7).unwrap_err().metric_label(), "corrupt");
    std::fs::write(
        intents_path(&path),
        r#"{"format_version":1,"sdkappid":8,"intents":{}}"#,
    )
    .unwrap();
    assert_eq!(load(&path, 7).unwrap_err().metric_label(), "other_app");
}

#[test]
fn a_failed_save_leaves_the_serial_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let mut s = sample();
    save(&path, &mut s).unwrap();
    assert_eq!(s.serial, 1);
    // Root ignores permissions: make the rename fail instead (a non-empty directory where
    // the state file goes).
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir_all(path.join("x")).unwrap();
    assert_eq!(save(&path, &mut s).unwrap_err().metric_label(), "write");
    assert_eq!(s.serial, 1, "serial moves only with a successful write");
}

#[test]
fn ids_in_the_state_and_sidecar_are_validated_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let long = "a".repeat(40);
    let cases = [
        format!(
            r#"{{"format_version":1,"sdkappid":7,"serial":1,"groups":{{"G":{{"{long}":{{"1000":1}}}}}}}}"#
        ),
        r#"{"format_version":1,"sdkappid":7,"serial":1,"groups":{"@TGS#\u0001":{"u":{"1000":1}}}}"#
            .to_string(),
        format!(
            r#"{{"format_version":1,"sdkappid":7,"serial":1,"intents":{{"G":{{"{long}":[1000]}}}}}}"#
        ),
        r#"{"format_version":1,"sdkappid":7,"serial":1,"groups":{"G":{"":{"1000":1}}}}"#
            .to_string(),
        r#"{"format_version":1,"sdkappid":7,"serial":1,"groups":{"G":{"alice bob":{"1000":1}}}}"#
            .to_string(),
    ];
    for text in &cases {
        std::fs::write(&path, text).unwrap();
        let err = load(&path, 7).expect_err(text);
        assert_eq!(err.metric_label(), "corrupt", "{text}: {err}");
        assert!(err.to_string().contains("s.json"), "names the file: {err}");
    }
    std::fs::remove_file(&path).unwrap();
    std::fs::write(
        intents_path(&path),
        format!(r#"{{"format_version":1,"sdkappid":7,"intents":{{"G":{{"{long}":[1000]}}}}}}"#),
    )
    .unwrap();
    let err = load(&path, 7).unwrap_err();
    assert_eq!(err.metric_label(), "corrupt", "{err}");
    assert!(err.to_string().contains("s.json.intents"), "{err}");
}

/// Runs `load` on another thread so that a reader that blocks fails the test instead of
/// hanging it.
fn load_within(path: &Path) -> Result<State, StateError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(load(&path, 7));
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("load returned instead of blocking")
}

#[test]
fn a_fifo_or_device_as_state_or_sidecar_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let err = load_within(&path).unwrap_err();
    assert_eq!(err.metric_label(), "read", "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    std::fs::remove_file(&path).unwrap();

    let made = |p: &Path| {
        std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .is_ok_and(|s| s.success())
    };
    if made(&path) {
        let err = load_within(&path).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
    save(&path, &mut State::new(7)).unwrap();
    if made(&intents_path(&path)) {
        let err = load_within(&path).unwrap_err();
        assert!(err.to_string().contains("s.json.intents"), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}

#[test]
fn last_saved_plan_is_optional_and_round_trips() {
    // A state written before saved plans has no such field: it still loads.
    let old = br#"{"format_version": 1, "sdkappid": 7, "serial": 3, "groups": {}}"#;
    let st = parse(Path::new("s.json"), old).unwrap();
    assert_eq!(st.last_saved_plan, None);
    let text = serde_json::to_string(&st).unwrap();
    assert!(
        !text.contains("last_saved_plan"),
        "skipped when None: {text}"
    );

    let mut st = st;
    st.last_saved_plan = Some("abc".into());
    let text = serde_json::to_string(&st).unwrap();
    let back = parse(Path::new("s.json"), text.as_bytes()).unwrap();
    assert_eq!(back.last_saved_plan.as_deref(), Some("abc"));
}

/// The entries of a directory, sorted, with dot-names (temporary files) included.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_symlinked_state_is_written_through_to_its_target_and_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let links = dir.path().join("links");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&links).unwrap();
    let target = real.join("state.json");
    let link = links.join("s.json");
    // Relative, and dangling until the first save: a first run through a link.
    std::os::unix::fs::symlink("../real/state.json", &link).unwrap();
    assert_eq!(load(&link, 1400000000).unwrap(), State::new(1400000000));

    let mut s = sample();
    let _held = lock(&link).unwrap();
    save_intents(&link, &s).unwrap();
    save(&link, &mut s).unwrap();
    s.forget(&g("@TGS#a"), &a("teacher"), [m(1001)]);
    save_intents(&link, &s).unwrap();
    save(&link, &mut s).unwrap();

    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link stays a link"
    );
    let on_disk = parse(&target, &std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(on_disk, s, "the target holds the last generation");
    let bak = backup_path(&target);
    assert!(
        std::fs::symlink_metadata(&bak)
            .unwrap()
            .file_type()
            .is_file(),
        ".bak is a file, not a link to the current state"
    );
    assert_eq!(
        parse(&bak, &std::fs::read(&bak).unwrap()).unwrap().serial,
        1
    );
    assert_eq!(
        names(&real),
        ["state.json", "state.json.bak", "state.json.lock"],
        "sidecars live beside the target (the intents were folded)"
    );
    assert_eq!(names(&links), ["s.json"], "nothing beside the link");
    assert_eq!(load(&link, 1400000000).unwrap(), s);
    // Another process resolves to the same lock.
    assert!(matches!(lock(&target), Err(StateError::Locked { .. })));

    // An intents sidecar written through the link is found beside the target.
    let mut pending = s.clone();
    pending.intend(&g("@TGS#c"), &a("y"), [m(1002)]);
    save_intents(&link, &pending).unwrap();
    assert!(intents_path(&target).exists());
    assert_eq!(load(&target, 1400000000).unwrap().intents, pending.intents);
}

#[test]
fn a_state_whose_directory_is_a_symlink_keeps_its_sidecars_in_the_real_directory() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("via")).unwrap();
    // A chain: a link to a link to a missing file, in a linked directory.
    let path = dir.path().join("via/s.json");
    std::os::unix::fs::symlink("t.json", &path).unwrap();
    std::os::unix::fs::symlink(real.join("u.json"), real.join("t.json")).unwrap();
    let mut s = sample();
    save(&path, &mut s).unwrap();
    save(&path, &mut s).unwrap();
    assert_eq!(
        names(&real),
        ["s.json", "t.json", "u.json", "u.json.bak"],
        "{:?}",
        names(&real)
    );
    assert!(
        std::fs::symlink_metadata(real.join("t.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(load(&path, 1400000000).unwrap().serial, 2);
}

#[test]
fn a_symlink_loop_as_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::os::unix::fs::symlink("s.json", &path).unwrap();
    let err = load(&path, 7).unwrap_err();
    assert_eq!(err.metric_label(), "read", "{err}");
    assert!(err.to_string().contains("symbolic links"), "{err}");
    assert!(save(&path, &mut State::new(7)).is_err());
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_symlink_as_lock_file_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, lock_path(&path)).unwrap();
    let err = lock(&path).unwrap_err();
    assert_eq!(err.metric_label(), "lock", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("s.json.lock") && text.contains("symbolic link"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // A dangling one must not create its target either.
    std::fs::remove_file(lock_path(&path)).unwrap();
    let absent = dir.path().join("absent");
    std::os::unix::fs::symlink(&absent, lock_path(&path)).unwrap();
    assert!(lock(&path).is_err());
    assert!(!absent.exists());
}

#[test]
fn the_lock_file_is_created_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let _held = lock(&path).unwrap();
    let mode = std::fs::metadata(lock_path(&path))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn duplicate_keys_in_the_state_or_sidecar_are_corrupt_not_last_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let head = r#""format_version":1,"sdkappid":7,"serial":1"#;
    let cases = [
        // A group twice: the first one's members would vanish.
        (
            format!(r#"{{{head},"groups":{{"G":{{"a":{{"1000":1}}}},"G":{{"b":{{"1000":1}}}}}}}}"#),
            "\"G\"",
        ),
        // An account twice in a group.
        (
            format!(r#"{{{head},"groups":{{"G":{{"a":{{"1000":1}},"a":{{"1001":1}}}}}}}}"#),
            "\"a\"",
        ),
        // A mark twice for an account.
        (
            format!(r#"{{{head},"groups":{{"G":{{"a":{{"1000":1,"1000":2}}}}}}}}"#),
            "1000",
        ),
        // Top level.
        (
            format!(r#"{{{head},"groups":{{}},"groups":{{"G":{{"a":{{"1000":1}}}}}}}}"#),
            "groups",
        ),
        (format!(r#"{{{head},"serial":2}}"#), "serial"),
        (
            format!(r#"{{{head},"intents":{{"G":{{"a":[1000]}},"G":{{"b":[1000]}}}}}}"#),
            "\"G\"",
        ),
        (
            format!(r#"{{{head},"intents":{{"G":{{"a":[1000],"a":[1001]}}}}}}"#),
            "\"a\"",
        ),
    ];
    for (text, key) in &cases {
        std::fs::write(&path, text).unwrap();
        let err = load(&path, 7).expect_err(text);
        assert_eq!(err.metric_label(), "corrupt", "{text}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("duplicate") && msg.contains(key) && msg.contains("line 1 column"),
            "{text}: {msg}"
        );
    }
    std::fs::remove_file(&path).unwrap();
    for text in [
        r#"{"format_version":1,"sdkappid":7,"serial":1,"intents":{"G":{"a":[1000]},"G":{"b":[1000]}}}"#,
        r#"{"format_version":1,"sdkappid":7,"serial":1,"intents":{"G":{"a":[1000],"a":[1001]}}}"#,
        r#"{"format_version":1,"sdkappid":7,"sdkappid":7,"serial":1,"intents":{}}"#,
    ] {
        std::fs::write(intents_path(&path), text).unwrap();
        let err = load(&path, 7).expect_err(text);
        assert_eq!(err.metric_label(), "corrupt", "{text}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("s.json.intents") && msg.contains("duplicate"),
            "{text}: {msg}"
        );
    }
}

#[test]
fn keys_out_of_order_still_load_and_a_duplicate_after_them_is_refused() {
    // The reader builds sorted maps in one pass while keys ascend; a hand-edited state need not
    // be sorted, and a key repeated after the order broke must still be caught.
    let head = r#""format_version":1,"sdkappid":7,"serial":1"#;
    let text = format!(
        r#"{{{head},"groups":{{"H":{{"c":{{"1000":1}},"a":{{"1001":2}},"b":{{"1002":3}}}},"G":{{"z":{{"1000":4}}}}}}}}"#
    );
    let st = parse(Path::new("s.json"), text.as_bytes()).unwrap();
    let members =
        |grp: &str| -> Vec<String> { st.groups[&g(grp)].keys().map(|k| k.to_string()).collect() };
    assert_eq!(
        st.groups.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["G", "H"]
    );
    assert_eq!(members("H"), ["a", "b", "c"]);
    assert_eq!(st.groups[&g("H")][&a("a")].get(m(1001)), Some(2));
    assert_eq!(members("G"), ["z"]);
    for (text, key) in [
        (
            format!(
                r#"{{{head},"groups":{{"G":{{"a":{{"1000":1}},"c":{{"1000":1}},"b":{{"1000":1}},"a":{{"1000":1}}}}}}}}"#
            ),
            "\"a\"",
        ),
        (
            format!(
                r#"{{{head},"groups":{{"G":{{"a":{{"1000":1}},"b":{{"1000":1}},"b":{{"1000":1}}}}}}}}"#
            ),
            "\"b\"",
        ),
    ] {
        let err = parse(Path::new("s.json"), text.as_bytes()).expect_err(&text);
        let msg = err.to_string();
        assert!(
            msg.contains("duplicate") && msg.contains(key) && msg.contains("line 1 column"),
            "{text}: {msg}"
        );
    }
}

#[test]
fn errors_name_the_path_as_written_or_the_target_of_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("via")).unwrap();
    std::fs::write(real.join("s.json"), "{").unwrap();
    let written = dir.path().join("via/s.json");
    let err = load(&written, 7).unwrap_err().to_string();
    assert!(
        err.contains(&format!("state file {} is corrupt", written.display()))
            && err.contains(&backup_path(&written).display().to_string()),
        "{err}"
    );
    std::os::unix::fs::symlink("real/s.json", dir.path().join("link.json")).unwrap();
    let err = load(&dir.path().join("link.json"), 7)
        .unwrap_err()
        .to_string();
    let target = real.join("s.json");
    assert!(
        err.contains(&format!("state file {} is corrupt", target.display())),
        "a link's error names its target: {err}"
    );
}

#[test]
fn a_save_never_replaces_a_target_that_is_not_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mkfifo is needed for this test");
    let path = dir.path().join("s.json");
    std::os::unix::fs::symlink(&fifo, &path).unwrap();
    let err = save(&path, &mut State::new(7)).unwrap_err();
    assert_eq!(err.metric_label(), "write", "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// A state file that is valid JSON of another kind (`null` from a bad script, a list) is named
/// for what it holds, with what to do, not with serde's "expected struct".
#[test]
fn a_state_file_of_another_json_kind_says_what_it_holds() {
    for (text, kind) in [
        ("null", "null"),
        (" null\n", "null"),
        ("[]", "a list"),
        ("\"x\"", "a string"),
        ("1", "a number"),
    ] {
        let e = parse(Path::new("st/marksync.json"), text.as_bytes()).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("the state file holds {kind}, not a state; restore st/marksync.json.bak or run `marksync import`")),
            "{text}: {shown}"
        );
        assert!(!shown.contains("expected struct"), "{shown}");
    }
}

/// A dropped lock is free at once, even while another descriptor of the same open file (a child
/// process between its fork and exec) is still open: seen as a flaky "locked" exit in the suite.
#[test]
fn a_dropped_lock_is_free_while_another_descriptor_still_shares_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let held = lock(&path).unwrap();
    let shared = held.file.try_clone().unwrap();
    drop(held);
    let again = lock(&path);
    assert!(again.is_ok(), "{:?}", again.err());
    drop(shared);
}

/// `--lock-timeout` on a local state: the lock is taken once its holder lets go within the
/// wait; without a wait, or past it, the holder is named at once (exit 5).
#[test]
fn a_file_lock_waits_for_its_holder_as_long_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let store = FileStore::new(&path);
    let request = |wait| LockRequest {
        command: "apply".into(),
        wait,
        ttl: std::time::Duration::from_secs(30),
        address: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let held = lock(&path).unwrap();
    let refused = rt.block_on(store.lock(&request(std::time::Duration::ZERO)));
    assert!(
        matches!(refused, Err(StateError::Locked { .. })),
        "{refused:?}"
    );
    let refused = rt.block_on(store.lock(&request(std::time::Duration::from_millis(200))));
    assert!(
        matches!(refused, Err(StateError::Locked { .. })),
        "{refused:?}"
    );
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let taken = rt.block_on(store.lock(&request(std::time::Duration::from_secs(30))));
    assert!(taken.is_ok(), "{taken:?}");
    releaser.join().unwrap();
}
