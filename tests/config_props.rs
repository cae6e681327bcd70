//! Issue 7, "no input may panic the binary": config text, arbitrary or a valid config mutated
//! (random bytes, absurd durations, huge and negative numbers, nested junk), loads to either a
//! config whose every value is within its documented range, or diagnostics naming the file. Never
//! a panic, and never a value the daemon could overflow a timer with.

use std::path::Path;
use std::time::{Duration, Instant};

use marksync::config::{Config, duration_bounds_for, parse};
use proptest::prelude::*;

const PATH: &str = "conf/marksync.yaml";

/// A valid config using every key.
const GOOD: &str = "\
sdkappid: 1400000000
identifier: administrator
secret_key_file: secret.key
region: singapore
desired: marks/
state: state/marksync.json
max_calls_per_second: 200
renew_margin: 12h
retry_pending_every: 1m
reassert_every: 30m
debounce: 300ms
usersig_ttl: 7d
guard: { max_clear_fraction: 0.25, min_clears: 10 }
http: { listen: 127.0.0.1:9464, callback_token_file: callback.token }
offline_error_codes: [10004]
";

/// What every accepted config must satisfy: the ranges of SPEC section 2, and timers that the
/// daemon can arm with these values without overflowing.
fn check_accepted(c: &Config) {
    for (key, d) in c.bounded_durations() {
        let (lo, hi) = duration_bounds_for(key, &c.endpoint).expect("a bounded key");
        assert!((lo..=hi).contains(&d), "{key} = {d:?} accepted");
        assert!(Instant::now().checked_add(d * 4).is_some(), "{key}");
    }
    assert!(c.renew_margin < Duration::from_secs(72 * 3600));
    assert!(c.sdkappid > 0);
    assert!((1..=200).contains(&c.max_calls_per_second));
    let f = c.guard.max_clear_fraction;
    assert!(f.is_finite() && (0.0..=1.0).contains(&f), "fraction {f}");
    assert!(
        c.offline_error_codes
            .iter()
            .all(|&n| (1..=i64::from(i32::MAX)).contains(&n)
                && marksync::tim::codes::offline_conflict(n).is_none())
    );
    assert!(!c.identifier.is_empty() && c.identifier.len() <= 32);
}

/// Loads `text` and checks the outcome: never a panic (proptest reports one as a failure), and
/// either a config within range or at least one error, each naming the file.
fn check_text(text: &str) {
    match parse(Path::new(PATH), text) {
        Ok(c) => check_accepted(&c),
        Err(d) => {
            assert!(d.error_count() > 0, "rejected without an error");
            let shown = d.to_string();
            assert!(shown.starts_with(PATH), "{shown}");
            for line in shown.lines().filter(|l| l.contains(": error: ")) {
                assert!(line.starts_with(PATH), "an error without the file: {line}");
            }
        }
    }
}

/// A number as YAML might spell it, reasonable or not.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i128>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        (0u32..300).prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-0".to_string()),
        Just("1e999".to_string()),
        Just(".inf".to_string()),
        Just("-.inf".to_string()),
        Just(".nan".to_string()),
        Just("0x10".to_string()),
        Just("0o17".to_string()),
        Just("1_000".to_string()),
        Just("007".to_string()),
        Just("\"200\"".to_string()),
    ]
}

/// A duration as a user might write it, in range or absurd.
fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(vec![
        "ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", "min", "sec", "hours", "", " s",
    ]);
    prop_oneof![
        (any::<u64>(), unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (0u64..100_000, unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (0u64..100, unit.clone(), 0u64..100, unit)
            .prop_map(|(a, u, b, v)| format!("{a}{u} {b}{v}")),
        Just("500000000000y".to_string()),
        Just("99999999999y".to_string()),
        Just("99999999999999999999999999s".to_string()),
        Just("-5m".to_string()),
        Just("0s".to_string()),
        number(),
    ]
}

/// Nested junk: flow lists and maps, some deep.
fn junk() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        number(),
        duration_text(),
        Just("~".to_string()),
        Just("\"\"".to_string()),
        Just("true".to_string()),
        "[a-z]{0,8}".prop_map(String::from),
    ];
    let nested = leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|v| {
                let entries: Vec<String> =
                    v.into_iter().map(|(k, x)| format!("{k}: {x}")).collect();
                format!("{{ {} }}", entries.join(", "))
            }),
        ]
    });
    prop_oneof![
        nested,
        (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..300).prop_map(|n| format!("{}x{}", "{ a: ".repeat(n), " }".repeat(n))),
    ]
}

/// A value for any key: a number, a duration, junk.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![number(), duration_text(), junk()]
}

/// `GOOD` with the values of some lines replaced.
fn mutated_config() -> impl Strategy<Value = String> {
    let lines = GOOD.lines().count();
    prop::collection::vec((0..lines, value()), 1..5).prop_map(|edits| {
        let mut lines: Vec<String> = GOOD.lines().map(String::from).collect();
        for (i, v) in edits {
            let key = lines[i].split(':').next().unwrap_or_default().to_string();
            lines[i] = format!("{key}: {v}");
        }
        lines.join("\n") + "\n"
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_text(&text);
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in "([a-z_]{1,12}: ?[ -~]{0,20}\n){0,12}") {
        check_text(&text);
    }

    #[test]
    fn mutated_config_values_never_panic_and_stay_in_range(text in mutated_config()) {
        check_text(&text);
    }

    /// Byte-level damage, through `load` (the file path: UTF-8 check, bounded read).
    #[test]
    fn random_bytes_in_a_valid_config_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut bytes = GOOD.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => bytes[i] = byte,
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marksync.yaml");
        std::fs::write(&path, &bytes).unwrap();
        match marksync::config::load(&path) {
            Ok(c) => check_accepted(&c),
            Err(d) => prop_assert!(d.error_count() > 0),
        }
    }

    /// Every duration key, with any value: accepted only within its range.
    #[test]
    fn any_duration_value_is_in_range_or_refused(
        key in prop::sample::select(vec!["debounce", "retry_pending_every", "reassert_every", "usersig_ttl", "renew_margin"]),
        v in duration_text(),
        endpoint in prop::sample::select(vec!["", "endpoint: embedded\n", "endpoint: http://127.0.0.1:9\n"]),
    ) {
        let text = format!("sdkappid: 1\nidentifier: a\ndesired: m\n{endpoint}{key}: {v}\n");
        check_text(&text);
    }
}

#[test]
fn deeply_nested_values_are_refused_not_a_stack_overflow() {
    for depth in [100, 1_000, 10_000, 100_000] {
        for value in [
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
        ] {
            check_text(&format!(
                "sdkappid: 1\nidentifier: a\ndesired: m\nguard: {value}\n"
            ));
        }
        let block: String = (0..depth.min(2_000))
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        check_text(&format!(
            "sdkappid: 1\nidentifier: a\ndesired: m\nhttp:\n{block}"
        ));
    }
}
