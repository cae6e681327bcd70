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
