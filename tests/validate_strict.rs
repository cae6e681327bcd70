//! `marksync validate --strict` turns warnings into errors (issue 7): the real binary, bounded.

mod common;

/// Runs `marksync validate [extra]` on a desired file with one warning; returns (status, stderr).
fn validate(extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("marks")).unwrap();
    std::fs::write(
        dir.path().join("marksync.yaml"),
        "sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\nstate: state.json\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("marks/a.yaml"),
        "groups:\n  \"@TGS#a\":\n    members:\n      n\u{e9}v: [1000]\n",
    )
    .unwrap();
    let out = common::cli::run_bounded(
        common::cli::marksync_command()
            .arg("validate")
            .args(extra)
            .current_dir(dir.path()),
        "",
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_strict_turns_warnings_into_errors() {
    let (status, stderr) = validate(&[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("warning: account \"név\""), "{stderr}");

    let (status, stderr) = validate(&["--strict"]);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("error: account \"név\" has characters outside [a-zA-Z0-9_-]"),
        "{stderr}"
    );
    assert!(stderr.contains("(an error with --strict)"), "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
}
