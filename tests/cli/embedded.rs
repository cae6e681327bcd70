//! The bundled example with `endpoint: embedded`: the quick start, and a damaged world file.

use super::*;

/// A copy of the bundled example (config, demo key, desired files) in a fresh directory.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["marksync.yaml", "demo-secret.key"] {
        std::fs::copy(examples().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::create_dir(dir.path().join("marks")).unwrap();
    for entry in std::fs::read_dir(examples().join("marks")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("marks").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    dir
}

/// Issue 16: the README's quick start tells the truth. With `endpoint: embedded` every process
/// starts its own emulator; the world it holds is kept beside the state, so `plan --refresh`
/// right after `apply` sees the marks apply set (no drift, nothing to send) and
/// `import --dry-run` forgets none of them.
#[test]
fn the_quick_start_keeps_the_embedded_world_so_a_refresh_after_apply_finds_no_drift() {
    let dir = example_copy();
    let run = |args: &[&str]| common::cli::marksync(dir.path(), args);
    let apply = run(&["apply"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply.stdout.contains("Apply complete: 15 set"),
        "{}",
        apply.stdout
    );
    let plan = run(&["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("the service holds what the state records"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("Drift"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("offline"), "{}", plan.stdout);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);

    // Within 40 s the listing cannot judge what apply just confirmed; an hour later it can.
    // Age the state's confirmations by an hour, as if the commands ran an hour after apply.
    let state_path = dir.path().join("state/marksync.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    for members in state["groups"].as_object_mut().unwrap().values_mut() {
        for marks in members.as_object_mut().unwrap().values_mut() {
            for at in marks.as_object_mut().unwrap().values_mut() {
                *at = (at.as_i64().unwrap() - 3600).into();
            }
        }
    }
    std::fs::write(&state_path, state.to_string()).unwrap();
    let plan = run(&["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("the service holds what the state records"),
        "{}",
        plan.stdout
    );
    let import = run(&["import", "--dry-run"]);
    assert_eq!(import.code, 0, "{}{}", import.stdout, import.stderr);
    assert!(import.stdout.contains(" 0 forgotten"), "{}", import.stdout);
    assert!(
        import.stdout.contains(" 0 not checked"),
        "{}",
        import.stdout
    );

    let again = run(&["apply"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("No changes"), "{}", again.stdout);
}

/// Issue 16: a damaged world file is an error naming it and saying how to start over, never
/// a silent fresh world (which would show every mark as dropped).
#[test]
fn a_corrupt_embedded_world_file_is_refused_with_its_name_and_the_way_out() {
    let dir = example_copy();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let world = dir.path().join("state/marksync.json.emulator.json");
    std::fs::write(&world, "{\"format_version\": 1, \"groups\": [").unwrap();
    let out = common::cli::marksync(dir.path(), &["apply"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("state/marksync.json.emulator.json: not an emulator world file"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("delete it"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&world).unwrap(),
        "{\"format_version\": 1, \"groups\": ["
    );
}
