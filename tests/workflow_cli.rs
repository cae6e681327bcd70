//! The operator's workflow at the command line (issue 10): approval on a terminal, `apply
//! --dry-run`'s last line, `state list | show | rm`, `version`, `schema`, `completions`, `man`.
//!
//! Every run is the real binary against `endpoint: embedded` (the emulator in the process, on
//! loopback), bounded by [`RUN_TIMEOUT`].

use std::path::{Path, PathBuf};

mod common;

use common::cli::{EMBEDDED_CONFIG as CONFIG, Output, embedded_dir, marksync, run_program};

const DESIRED: &str = "groups:
  \"@TGS#2PHYS101\":
    members:
      ms_chen: [1000]
    marks:
      1002: [student01, student02]
";

fn setup() -> tempfile::TempDir {
    embedded_dir(CONFIG, DESIRED)
}

/// Runs `marksync ARGS` on a pseudo-terminal (`script`, from util-linux or bsdutils), typing
/// `typed`. `None` (skipped loudly; a failure in CI) when `script` is not installed.
fn marksync_on_a_terminal(dir: &Path, args: &str, typed: &str) -> Option<Output> {
    if !common::require_tool("for a pseudo-terminal", "script", &["--version"]) {
        return None;
    }
    let command = format!("'{}' {args}", env!("CARGO_BIN_EXE_marksync"));
    Some(run_program(
        dir,
        "script",
        &["-qec", &command, "/dev/null"],
        typed,
    ))
}

fn state_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("state.json")).unwrap_or_default()
}

#[test]
fn apply_on_a_terminal_asks_and_only_yes_applies() {
    let dir = setup();
    let dir = dir.path();
    let Some(no) = marksync_on_a_terminal(dir, "apply", "no\n") else {
        return;
    };
    assert_eq!(no.code, 1, "{}{}", no.stdout, no.stderr);
    assert!(
        no.stdout
            .contains("Do you want to apply these changes? Only 'yes' will be accepted:"),
        "{}",
        no.stdout
    );
    assert!(no.stdout.contains("Apply cancelled."), "{}", no.stdout);
    assert_eq!(state_text(dir), "", "nothing sent, nothing recorded");

    let auto = marksync_on_a_terminal(dir, "apply --dry-run", "").unwrap();
    assert_eq!(auto.code, 0, "a dry run asks nothing: {}", auto.stdout);
    assert!(!auto.stdout.contains("Do you want"), "{}", auto.stdout);

    let yes = marksync_on_a_terminal(dir, "apply", "yes\n").unwrap();
    assert_eq!(yes.code, 0, "{}{}", yes.stdout, yes.stderr);
    assert!(
        yes.stdout.contains("Apply complete: 3 set"),
        "{}",
        yes.stdout
    );
    assert!(state_text(dir).contains("student01"));
}

#[test]
fn auto_approve_and_no_terminal_apply_without_asking() {
    let dir = setup();
    let dir = dir.path();
    let piped = marksync(dir, &["apply"]);
    assert_eq!(piped.code, 0, "{}{}", piped.stdout, piped.stderr);
    assert!(!piped.stdout.contains("Do you want"), "{}", piped.stdout);

    std::fs::write(
        dir.join("marks/physics.yaml"),
        DESIRED.replace("student02", "student03"),
    )
    .unwrap();
    let Some(auto) = marksync_on_a_terminal(dir, "apply --auto-approve", "") else {
        return;
    };
    assert_eq!(auto.code, 0, "{}{}", auto.stdout, auto.stderr);
    assert!(!auto.stdout.contains("Do you want"), "{}", auto.stdout);
    assert!(state_text(dir).contains("student03"));
}

#[test]
fn apply_dry_run_ends_saying_nothing_was_sent() {
    let dir = setup();
    let out = marksync(dir.path(), &["apply", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim_end().lines().last(),
        Some("Dry run: nothing was sent and the state was not changed."),
        "{}",
        out.stdout
    );
    assert_eq!(state_text(dir.path()), "");
}

#[test]
fn plan_no_longer_takes_dry_run() {
    let dir = setup();
    let out = marksync(dir.path(), &["plan", "--dry-run"]);
    assert_eq!(out.code, 1, "a usage error: {}", out.stderr);
    assert!(out.stderr.contains("--dry-run"), "{}", out.stderr);
}

#[test]
fn a_saved_plan_older_than_saved_plan_max_age_is_refused() {
    let dir = setup();
    let dir = dir.path();
    let plan = marksync(dir, &["plan", "--out", "plan.json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    // Age the plan by rewriting it as made two days ago (the plan_id covers created_at, so it
    // is recomputed through the library).
    let mut saved = marksync::saved_plan::SavedPlan::read(&dir.join("plan.json")).unwrap();
    let provenance = marksync::saved_plan::Provenance {
        created_at: saved.created_at - 2 * 86400,
        sdkappid: saved.sdkappid,
        state_serial: saved.state_serial,
        desired_digest: saved.desired_digest.clone(),
        reassert: saved.reassert,
    };
    saved = marksync::saved_plan::SavedPlan::new(&saved.to_plan(), provenance, None);
    saved.write(&dir.join("plan.json")).unwrap();
    let apply = marksync(dir, &["apply", "plan.json"]);
    assert_eq!(apply.code, 1, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply.stderr.contains("older than saved_plan_max_age"),
        "{}",
        apply.stderr
    );
    assert_eq!(state_text(dir), "", "nothing sent");
}

/// `saved_plan_max_age` at its edge, through the binary (issue 14): with `1h`, a plan made two
/// minutes short of an hour ago applies; one made two minutes over an hour ago is refused with
/// nothing sent.
#[test]
fn a_saved_plan_just_under_saved_plan_max_age_applies_and_just_over_is_refused() {
    /// `plan --out plan.json`, then the file rewritten as made `secs` ago (the plan ID covers
    /// `created_at`, so it is recomputed through the library).
    fn plan_made_ago(dir: &Path, secs: i64) {
        let plan = marksync(dir, &["plan", "--out", "plan.json"]);
        assert_eq!(plan.code, 0, "{}", plan.stderr);
        let saved = marksync::saved_plan::SavedPlan::read(&dir.join("plan.json")).unwrap();
        let provenance = marksync::saved_plan::Provenance {
            created_at: saved.created_at - secs,
            sdkappid: saved.sdkappid,
            state_serial: saved.state_serial,
            reassert: saved.reassert,
            desired_digest: saved.desired_digest.clone(),
        };
        marksync::saved_plan::SavedPlan::new(&saved.to_plan(), provenance, None)
            .write(&dir.join("plan.json"))
            .unwrap();
    }
    let config = format!("{CONFIG}saved_plan_max_age: 1h\n");
    for (ago, applies) in [(3600 + 120, false), (3600 - 120, true)] {
        let dir = common::cli::embedded_dir(&config, DESIRED);
        let dir = dir.path();
        plan_made_ago(dir, ago);
        let apply = marksync(dir, &["apply", "plan.json"]);
        let out = format!("{}{}", apply.stdout, apply.stderr);
        if applies {
            assert_eq!(apply.code, 0, "{ago} s old: {out}");
            assert!(
                state_text(dir).contains("student01"),
                "{ago} s old: applied"
            );
        } else {
            assert_eq!(apply.code, 1, "{ago} s old: {out}");
            assert!(
                apply.stderr.contains("older than saved_plan_max_age (60m)"),
                "{out}"
            );
            assert_eq!(state_text(dir), "", "{ago} s old: nothing sent");
        }
    }
}

#[test]
fn state_list_show_and_rm() {
    let dir = setup();
    let dir = dir.path();
    assert_eq!(marksync(dir, &["apply"]).code, 0);

    let list = marksync(dir, &["state", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains("@TGS#2PHYS101"), "{}", list.stdout);
    let json = marksync(dir, &["state", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["groups"][0]["members"], 3);
    assert_eq!(v["groups"][0]["confirmed"], 3);

    let show = marksync(dir, &["state", "show", "@TGS#2PHYS101", "ms_chen"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(
        show.stdout.contains("ms_chen  1000 (confirmed "),
        "{}",
        show.stdout
    );
    let json = marksync(dir, &["state", "show", "@TGS#2PHYS101", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    assert_eq!(v["members"][0]["marks"][0]["unknown"], false);

    // Not in the state: refused, nothing changed.
    let before = state_text(dir);
    for args in [
        &["state", "rm", "@TGS#nope"][..],
        &["state", "rm", "@TGS#2PHYS101", "nobody"],
        &["state", "rm", "@TGS#2PHYS101", "ms_chen", "1002"],
    ] {
        let out = marksync(dir, args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("is not in the state"), "{}", out.stderr);
    }
    assert_eq!(state_text(dir), before);

    let rm = marksync(dir, &["state", "rm", "@TGS#2PHYS101", "student01", "1002"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    assert!(
        rm.stdout
            .contains("Forgot mark 1002 of student01 in @TGS#2PHYS101"),
        "{}",
        rm.stdout
    );
    assert!(rm.stdout.contains("Nothing was cleared"), "{}", rm.stdout);
    assert!(!state_text(dir).contains("student01"));
    assert_eq!(
        std::fs::read_to_string(dir.join("state.json.bak")).unwrap(),
        before,
        "the previous generation is kept"
    );
    // Still desired: the next plan sets it again (forgetting is not clearing).
    let plan = marksync(dir, &["plan"]);
    assert!(plan.stdout.contains("1 to set"), "{}", plan.stdout);

    let rm = marksync(dir, &["state", "rm", "@TGS#2PHYS101"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    assert!(
        rm.stdout
            .contains("Forgot group @TGS#2PHYS101 (2 accounts, 2 marks)"),
        "{}",
        rm.stdout
    );
    let list = marksync(dir, &["state", "list"]);
    assert!(
        list.stdout.contains("The state records no group."),
        "{}",
        list.stdout
    );
}

#[test]
fn version_names_version_commit_and_build_date() {
    let dir = tempfile::tempdir().unwrap();
    let flag = marksync(dir.path(), &["--version"]);
    assert_eq!(flag.code, 0);
    let line = flag.stdout.trim_end();
    let rest = line
        .strip_prefix(&format!("marksync {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(rest.contains(", built ") && rest.ends_with(')'), "{line}");

    let cmd = marksync(dir.path(), &["version"]);
    assert_eq!(
        cmd.stdout, flag.stdout,
        "the command says what the flag says"
    );

    let json = marksync(dir.path(), &["version", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        v["commit"].is_string() && v["build_date"].is_string(),
        "{v}"
    );
    // Built from this checkout (CI's clean clone, a developer's tree): the commit is git's.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head.filter(|_| std::env::var_os("MARKSYNC_BUILD_COMMIT").is_none()) {
        assert_eq!(v["commit"], head.as_str(), "the commit comes from git: {v}");
    }
}

#[test]
fn help_shows_examples_exit_codes_and_global_flags_once() {
    let dir = tempfile::tempdir().unwrap();
    let help = marksync(dir.path(), &["--help"]);
    assert_eq!(help.code, 0);
    for want in ["Examples:", "marksync apply plan.bin", "Exit codes:", "130"] {
        assert!(help.stdout.contains(want), "{want}: {}", help.stdout);
    }
    let sub = marksync(dir.path(), &["apply", "--help"]);
    assert_eq!(
        sub.stdout.matches("--log-format").count(),
        1,
        "{}",
        sub.stdout
    );
    assert_eq!(
        sub.stdout.matches("Global options:").count(),
        1,
        "{}",
        sub.stdout
    );
}

#[test]
fn schema_prints_the_committed_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = marksync(dir.path(), &["schema"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/desired.schema.json"),
    )
    .unwrap();
    assert_eq!(out.stdout, committed);
}

#[test]
fn completions_are_generated_for_each_shell_with_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = marksync(dir.path(), &["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        for sub in ["validate", "plan", "apply", "state", "completions"] {
            assert!(out.stdout.contains(sub), "{shell} lacks {sub}");
        }
    }
    let bad = marksync(dir.path(), &["completions", "cmd.exe"]);
    assert_eq!(bad.code, 1, "a usage error");
}

#[test]
fn man_is_roff_naming_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = marksync(dir.path(), &["man"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(".TH marksync 1"), "roff title");
    assert!(out.stdout.contains(".SH SUBCOMMANDS"), "{}", out.stdout);
    for sub in ["validate", "plan", "apply", "run", "state", "schema"] {
        assert!(out.stdout.contains(sub), "{sub}");
    }
}

#[test]
fn a_saved_plan_is_refused_once_the_state_moved_and_a_dry_run_of_it_sends_nothing() {
    let dir = setup();
    let dir = dir.path();
    assert_eq!(marksync(dir, &["apply"]).code, 0);
    std::fs::write(
        dir.join("marks/physics.yaml"),
        DESIRED.replace("student02", "student03"),
    )
    .unwrap();
    let plan = marksync(dir, &["plan", "--out", "plan.json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stderr.contains("marksync apply plan.json"),
        "{}",
        plan.stderr
    );

    let dry = marksync(dir, &["apply", "plan.json", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("student03"),
        "the saved plan: {}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("Dry run: nothing was sent"),
        "{}",
        dry.stdout
    );

    // Someone forgets a member in between: the state the plan was made against is gone.
    assert_eq!(
        marksync(dir, &["state", "rm", "@TGS#2PHYS101", "ms_chen"]).code,
        0
    );
    let before = state_text(dir);
    let stale = marksync(dir, &["apply", "plan.json"]);
    assert_eq!(stale.code, 1, "{}{}", stale.stdout, stale.stderr);
    assert!(
        stale.stderr.contains("refusing to apply plan.json"),
        "{}",
        stale.stderr
    );
    assert!(
        stale
            .stderr
            .contains("the state was saved since the plan was made"),
        "{}",
        stale.stderr
    );
    assert!(
        stale.stderr.contains("marksync plan --out FILE"),
        "{}",
        stale.stderr
    );
    assert_eq!(state_text(dir), before, "nothing sent, nothing recorded");
}

/// A run against `endpoint: embedded` says so in the plan's headline and the apply's summary
/// (issue 17: a real-looking config applied to the emulator said only "Apply complete").
#[test]
fn runs_against_the_embedded_emulator_say_so() {
    let dir = setup();
    let dir = dir.path();
    let note = "(against the embedded emulator: nothing reached Tencent Cloud)";
    let plan = marksync(dir, &["plan"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.starts_with(
            "Against the embedded emulator (endpoint: embedded): nothing reaches Tencent Cloud.\n"
        ),
        "{}",
        plan.stdout
    );
    let apply = marksync(dir, &["apply"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply
            .stdout
            .contains(&format!("Apply complete: 3 set, 0 cleared, 0 renewed, 0 pending (offline), 0 failed, 1 API call {note}.")),
        "{}",
        apply.stdout
    );
    let again = marksync(dir, &["plan"]);
    assert!(
        again.stdout.starts_with("Against the embedded emulator")
            && again.stdout.contains("No changes."),
        "{}",
        again.stdout
    );
}

/// Issue 16: each refusal and each `state rm` says what actually happened and what to do.
#[test]
fn refusals_and_state_rm_say_what_changed_and_what_to_do() {
    let dir = setup();
    let dir = dir.path();
    assert_eq!(marksync(dir, &["apply"]).code, 0);
    std::fs::write(
        dir.join("marks/physics.yaml"),
        DESIRED.replace("student02", "student03"),
    )
    .unwrap();
    assert_eq!(marksync(dir, &["plan", "--out", "plan.json"]).code, 0);

    // A hand edit without its ID recomputed: refused, with a line saying what to do.
    let text = std::fs::read_to_string(dir.join("plan.json")).unwrap();
    std::fs::write(dir.join("edited.json"), text.replacen("1002", "1003", 1)).unwrap();
    let out = marksync(dir, &["apply", "edited.json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("edited.json was modified after it was written"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "\nWhat to do: run `marksync plan --out FILE` again, review the new plan, and apply \
             it; never edit a saved plan by hand."
        ),
        "{}",
        out.stderr
    );

    // `state rm` of a mark a desired file still declares: it says so, and that the next apply
    // sets it again.
    let rm = marksync(dir, &["state", "rm", "@TGS#2PHYS101", "ms_chen"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    assert!(
        !rm.stdout.contains("unless a desired file declares it"),
        "{}",
        rm.stdout
    );
    assert!(
        rm.stdout.contains(
            "marks/physics.yaml:2 still declares it (mark 1000 of ms_chen): the next apply sets \
             it again. To stop managing it, remove it from the desired files first."
        ),
        "{}",
        rm.stdout
    );
    // ... and of one no desired file declares any more: marksync lets go of it.
    let rm = marksync(dir, &["state", "rm", "@TGS#2PHYS101", "student02", "1002"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    assert!(
        rm.stdout.contains(
            "No desired file declares it: marksync no longer manages it, and the next apply \
             leaves it alone."
        ),
        "{}",
        rm.stdout
    );

    // The saved plan no longer fits: the refusal says what moved, not "already applied, or".
    let stale = marksync(dir, &["apply", "plan.json"]);
    assert_eq!(stale.code, 1, "{}{}", stale.stdout, stale.stderr);
    assert!(
        !stale.stderr.contains("already applied"),
        "{}",
        stale.stderr
    );
    assert!(
        stale.stderr.contains(
            "the state was saved since the plan was made: its serial moved from 1 to 3 (an \
             apply, `marksync state rm`, `marksync import` or the daemon changed it)"
        ),
        "{}",
        stale.stderr
    );
    assert!(
        stale
            .stderr
            .contains("\nWhat to do: run `marksync plan --out FILE` again"),
        "{}",
        stale.stderr
    );
}
