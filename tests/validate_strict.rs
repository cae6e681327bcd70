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

/// A secret key that is not 64 lower-case hex digits: a warning, and an error with --strict
/// (issue 14). The key itself is never shown.
#[test]
fn validate_strict_refuses_a_mistyped_secret_key() {
    let key = "5BD2850FFF3ECB11D7C805251C51EE463A25727BDDC2385F3FA8BFEE1BB93B5"; // 63, upper case
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("marks")).unwrap();
        std::fs::write(
            dir.path().join("marksync.yaml"),
            "sdkappid: 1400000000\nidentifier: administrator\nregion: singapore\nsecret_key_file: secret.key\ndesired: marks/\nstate: state.json\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("secret.key"), format!("{key}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("secret.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.path().join("marks/a.yaml"), "groups: {}\n").unwrap();
        let out = common::cli::run_bounded(
            common::cli::marksync_command()
                .arg("validate")
                .args(extra)
                .current_dir(dir.path())
                .env_remove("CREDENTIALS_DIRECTORY"),
            "",
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, stderr) = run(&[]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains("the secret key has 63 hexadecimal digits"),
        "{stderr}"
    );
    assert!(stderr.contains("upper-case letters"), "{stderr}");
    let (status, stderr) = run(&["--strict"]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("(an error with --strict)"), "{stderr}");
    assert!(
        !stderr.contains(&key[..8]),
        "the key reached the output: {stderr}"
    );
}
