//! Usage errors (exit 1, never clap's 2, which is `plan --detailed-exitcode`'s "changes"), help
//! and version, and the saved plan's name in `--help` and the README.

use super::*;

#[test]
fn usage_errors_exit_1_not_2() {
    for args in [
        &["plan", "--detailed-exitcod"][..],
        &["plan", "--no-such-flag"],
        &["apply", "plan.json", "extra-argument"],
        // A saved plan is applied exactly: refreshing first would change it.
        &["apply", "plan.json", "--refresh"],
        &["no-such-command"],
        &["--log-format", "xml", "plan"],
        &[],
    ] {
        let out = Test::new().config(CONFIG).args(args).run();
        assert_eq!(out.status, 1, "marksync {args:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "marksync {args:?}: {out:#?}");
        assert!(
            out.stderr.contains("Usage") || out.stderr.contains("--help"),
            "marksync {args:?} points to the usage: {out:#?}"
        );
    }
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["help"],
        &["--version"],
    ] {
        let out = Test::new().args(args).run();
        out.status(0);
        assert!(!out.stdout.is_empty(), "marksync {args:?}: {out:#?}");
    }
}

/// Issue 16: `--help` and the README call the saved plan by one name.
#[test]
fn the_help_and_the_readme_name_the_saved_plan_alike() {
    let dir = tempfile::tempdir().unwrap();
    let help = common::cli::marksync(dir.path(), &["--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    let name = help
        .stdout
        .split("--out ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the help's examples save a plan")
        .to_string();
    assert!(
        help.stdout.contains(&format!("marksync apply {name}")),
        "{}",
        help.stdout
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("--out {name}")),
        "README never says --out {name}"
    );
    assert!(
        readme.contains(&format!("apply {name}")),
        "README never says apply {name}"
    );
    for other in ["plan.bin", "plan.json"].iter().filter(|o| **o != name) {
        assert!(
            !readme.contains(&format!("--out {other}"))
                && !readme.contains(&format!("apply {other}")),
            "the README saves the plan as {other}, the help as {name}"
        );
    }
}
