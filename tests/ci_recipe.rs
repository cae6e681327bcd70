//! The CI recipes (`examples/ci/`) run, step by step and in order, against the emulator
//! (`endpoint: embedded`): validate; `plan --detailed-exitcode --out plan.bin` (exit 2: changes);
//! `apply plan.bin`; a new plan shows no changes; applying the same file again is refused with
//! nothing sent; a plan whose desired files changed after the review is refused.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{embedded_dir, marksync};

const CONFIG: &str = "sdkappid: 1400000000
identifier: administrator
secret_key_file: demo-secret.key
endpoint: embedded
desired: marks/
state: state/marksync.json
";

const DESIRED: &str = "# yaml-language-server: $schema=../schema/desired.schema.json
groups:
  \"@TGS#2PHYS101\":
    members:
      ms_chen: [1000]
    marks:
      1002: [student01, student02]
";

fn setup() -> tempfile::TempDir {
    embedded_dir(CONFIG, DESIRED)
}

fn state_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("state/marksync.json")).unwrap_or_default()
}

#[test]
fn the_ci_recipe_steps_run_in_order_against_the_emulator() {
    let dir = setup();
    let dir = dir.path();

    // Proposed change: validate, then plan with the saved plan as the artifact.
    let validate = marksync(dir, &["validate"]);
    assert_eq!(validate.code, 0, "{}", validate.stderr);

    let plan = marksync(dir, &["plan", "--detailed-exitcode", "--out", "plan.bin"]);
    assert_eq!(plan.code, 2, "changes: {}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("Plan: 3 to set, 0 to clear, 0 to renew in 1 group, 1 API call."),
        "{}",
        plan.stdout
    );
    assert!(dir.join("plan.bin").is_file(), "the saved plan is written");
    let saved = std::fs::read_to_string(dir.join("plan.bin")).unwrap();
    assert!(
        !saved.contains("5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"),
        "the saved plan holds no secret"
    );

    // Merge: apply exactly the reviewed plan (no terminal: no prompt).
    let apply = marksync(dir, &["apply", "plan.bin"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply
            .stdout
            .contains("Apply complete: 3 set, 0 cleared, 0 renewed"),
        "{}",
        apply.stdout
    );

    // The next proposed change without edits: nothing to do.
    let again = marksync(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again
            .stdout
            .starts_with(marksync::render::EMBEDDED_HEADLINE)
            && again
                .stdout
                .contains("\nNo changes. Marks match the recorded state."),
        "{}",
        again.stdout
    );

    // A second apply of the same file is refused, and nothing is sent or recorded.
    let before = state_bytes(dir);
    let replay = marksync(dir, &["apply", "plan.bin"]);
    assert_eq!(replay.code, 1, "{}{}", replay.stdout, replay.stderr);
    assert!(
        replay.stderr.contains("already applied"),
        "{}",
        replay.stderr
    );
    assert!(
        replay.stderr.contains("marksync plan --out FILE"),
        "says what to do: {}",
        replay.stderr
    );
    assert_eq!(state_bytes(dir), before, "the state is untouched");

    // A plan reviewed, then desired files edited before the merge: refused.
    let edited = DESIRED.replace("student02", "student03");
    std::fs::write(
        dir.join("marks/physics.yaml"),
        DESIRED.replace("1002:", "1003:"),
    )
    .unwrap();
    let plan = marksync(dir, &["plan", "--detailed-exitcode", "--out", "plan.bin"]);
    assert_eq!(plan.code, 2, "{}{}", plan.stdout, plan.stderr);
    std::fs::write(dir.join("marks/physics.yaml"), edited).unwrap();
    let before = state_bytes(dir);
    let stale = marksync(dir, &["apply", "plan.bin"]);
    assert_eq!(stale.code, 1, "{}{}", stale.stdout, stale.stderr);
    assert!(
        stale.stderr.contains("desired files changed"),
        "{}",
        stale.stderr
    );
    assert_eq!(state_bytes(dir), before, "the state is untouched");
}

/// The recipes name the steps this test runs, so the two cannot drift apart silently.
#[test]
fn the_recipes_run_the_tested_steps() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "examples/ci/github-actions.yml",
        "examples/ci/gitlab-ci.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let steps = [
            "marksync validate",
            "marksync plan --detailed-exitcode --out plan.bin",
            "marksync apply plan.bin",
            "marksync import",
        ];
        let mut at = 0;
        for step in &steps[..3] {
            let found = text[at..]
                .find(step)
                .unwrap_or_else(|| panic!("{file}: `{step}` missing or out of order"));
            at += found;
        }
        assert!(text.contains(steps[3]), "{file}: no recovery with import");
    }
    let hooks = std::fs::read_to_string(root.join(".pre-commit-hooks.yaml")).unwrap();
    assert!(hooks.contains("entry: marksync validate"));
}
