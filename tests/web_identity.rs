//! Web identity credentials end to end (SPEC 11: credentials from the crate's standard chain,
//! web identity / OIDC tokens as CI and Kubernetes service accounts give them): the real
//! `marksync` binary, with no static keys in its environment, exchanges a token file at an STS
//! (the fake of `tests/common/sts.rs`, over HTTPS trusted through `SSL_CERT_FILE`) for temporary
//! credentials, and writes and reads its state in the real S3 server (SeaweedFS) with them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cli::{EMBEDDED_CONFIG, Output, run_bounded, write_embedded};
use common::s3::{ACCESS_KEY, S3, SECRET_KEY};
use common::sts::{Role, Sts};
use marksync::state::{ObjectStore, StateStore, StoreSettings};

const ROLE: &str = "arn:aws:iam::123456789012:role/marksync-ci";
/// The token the identity provider gave (a JWT in real life); it must never be printed.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.web-identity-token-under-test.c2lnbmF0dXJl";
const DESIRED: &str = "groups:\n  \"@TGS#2PHYS101\":\n    members:\n      ms_chen: [1000]\n";

/// A directory for `endpoint: embedded` whose state is `url`.
fn config_dir(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = EMBEDDED_CONFIG.replace("state: state.json", &format!("state: {url}"));
    write_embedded(dir.path(), &config, DESIRED);
    dir
}

/// The fake STS for [`ROLE`] and [`TOKEN`], handing out the S3 server's identity with an empty
/// session token (SeaweedFS refuses any other with these keys; see the last test).
fn sts() -> Sts {
    Sts::start(Role {
        arn: ROLE.into(),
        token: TOKEN.into(),
        credentials: (ACCESS_KEY.into(), SECRET_KEY.into(), String::new()),
        ttl: Duration::from_secs(3600),
    })
}

/// Runs `marksync ARGS` in `dir` with exactly this environment (nothing inherited, so no static
/// key can slip in): the S3 endpoint and region, and web identity through `sts` with the token
/// file `token_file`.
fn marksync(dir: &Path, args: &[&str], s3: &S3, sts: &Sts, token_file: &Path) -> Output {
    run(dir, args, s3, sts, token_file, true, &[])
}

/// [`marksync`], with `SSL_CERT_FILE` (the STS's CA) only if `trust`, and `extra` variables.
fn run(
    dir: &Path,
    args: &[&str],
    s3: &S3,
    sts: &Sts,
    token_file: &Path,
    trust: bool,
    extra: &[(&str, &str)],
) -> Output {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", token_file)
        .env("AWS_ROLE_ARN", ROLE)
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .args(args)
        .current_dir(dir);
    if trust {
        cmd.env("SSL_CERT_FILE", &sts.ca_file);
    }
    cmd.envs(extra.iter().copied());
    let out = run_bounded(&mut cmd, "");
    let out = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for secret in [TOKEN, SECRET_KEY] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a secret in the output of {args:?}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    out
}

#[test]
fn apply_and_pull_with_a_web_identity_token_and_no_static_keys() {
    let Some(s3) = common::s3::s3() else { return };
    let sts = sts();
    let url = s3.url("wid/state.json");
    let dir = config_dir(&url);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();

    let applied = marksync(dir.path(), &["-q", "apply"], s3, &sts, &token_file);
    assert_eq!(
        applied.code,
        0,
        "{}\nSTS saw: {:?}",
        applied.stderr,
        sts.log()
    );
    assert!(sts.granted() >= 1, "STS saw: {:?}", sts.log());
    assert_eq!(sts.refused(), 0, "STS saw: {:?}", sts.log());

    let pulled = marksync(dir.path(), &["state", "pull"], s3, &sts, &token_file);
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    let state = marksync::state::parse(Path::new("pulled"), pulled.stdout.as_bytes()).unwrap();
    assert_eq!(state.serial, 1);
    assert!(pulled.stdout.contains("ms_chen"), "{}", pulled.stdout);

    // The state is in the bucket: the server's identity, with static keys, reads the same one.
    let direct = ObjectStore::open(&url, &StoreSettings::default(), s3.env()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let read = rt
        .block_on(common::within(direct.load(common::APP)))
        .unwrap();
    assert_eq!(read, state);
}

#[test]
fn a_refused_token_is_a_credentials_error_that_names_web_identity() {
    let Some(s3) = common::s3::s3() else { return };
    let sts = sts();
    let dir = config_dir(&s3.url("wid-refused/state.json"));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}-expired")).unwrap();

    let out = marksync(dir.path(), &["apply"], s3, &sts, &token_file);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(sts.refused() >= 1, "STS saw: {:?}", sts.log());
    assert_eq!(sts.granted(), 0);
    let err = &out.stderr;
    assert!(err.contains("web identity"), "{err}");
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(err.contains(ROLE), "{err}");
    assert!(err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");
    for library in ["Error performing", "REDACTED", "non-2xx", "<ErrorResponse"] {
        assert!(!err.contains(library), "library wording {library:?}: {err}");
    }
}

#[test]
fn a_missing_or_unreadable_token_file_is_named() {
    let Some(s3) = common::s3::s3() else { return };
    let sts = sts();
    let dir = config_dir(&s3.url("wid-missing/state.json"));
    let missing = dir.path().join("no-such-token");
    let out = marksync(dir.path(), &["state", "pull"], s3, &sts, &missing);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = &out.stderr;
    assert!(err.contains("web identity"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert!(!err.contains("Failed to read token file"), "{err}");
    assert_eq!(sts.granted() + sts.refused(), 0, "STS saw: {:?}", sts.log());

    // A directory where the token file should be: unreadable as a file.
    let out = marksync(dir.path(), &["state", "pull"], s3, &sts, dir.path());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("web identity"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&dir.path().display().to_string()),
        "{}",
        out.stderr
    );
}

/// A CI that maps an undefined secret to `AWS_ACCESS_KEY_ID` gets an empty variable: it is unset,
/// as the AWS tools take it, and does not hide the web identity token behind an empty key.
#[test]
fn empty_static_key_variables_do_not_hide_the_web_identity_token() {
    let Some(s3) = common::s3::s3() else { return };
    let sts = sts();
    let dir = config_dir(&s3.url("wid-empty-keys/state.json"));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let empty = [
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SESSION_TOKEN", ""),
    ];
    let out = run(
        dir.path(),
        &["-q", "apply"],
        s3,
        &sts,
        &token_file,
        true,
        &empty,
    );
    assert_eq!(out.code, 0, "{}\nSTS saw: {:?}", out.stderr, sts.log());
    assert!(sts.granted() >= 1, "STS saw: {:?}", sts.log());
}

#[test]
fn an_sts_whose_certificate_is_not_trusted_points_at_ssl_cert_file() {
    let Some(s3) = common::s3::s3() else { return };
    let sts = sts();
    let dir = config_dir(&s3.url("wid-untrusted/state.json"));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let out = run(
        dir.path(),
        &["state", "pull"],
        s3,
        &sts,
        &token_file,
        false,
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = &out.stderr;
    assert!(
        err.contains("cannot get credentials by web identity"),
        "{err}"
    );
    assert!(err.contains(&sts.endpoint), "{err}");
    assert!(err.contains("not trusted"), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
    assert!(!err.contains("Error performing"), "{err}");
    assert_eq!(sts.granted() + sts.refused(), 0, "STS saw: {:?}", sts.log());
}

/// Why [`sts`] hands out an empty session token: SeaweedFS (4.48) takes any
/// `X-Amz-Security-Token` for a session of its own STS and refuses the request
/// (`InvalidAccessKeyId`) when it is not one, even with a configured identity's keys; the same
/// keys with an empty token are that identity. If this fails, the server takes a foreign token:
/// give [`sts`] a real-looking one, as AWS STS does.
#[test]
fn seaweedfs_refuses_a_foreign_session_token_with_static_keys() {
    let Some(s3) = common::s3::s3() else { return };
    use object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let put = |token: &str| {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(common::s3::BUCKET)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_token(token)
            .with_region("us-east-1")
            .with_endpoint(&s3.endpoint)
            .with_allow_http(true)
            .build()
            .unwrap();
        let path = object_store::path::Path::from(format!("wid-token-probe-{}", token.len()));
        rt.block_on(common::within(store.put(&path, b"x".to_vec().into())))
    };
    let refused = put("FwoGZXIvYXdzEXAMPLEsessiontoken");
    assert!(
        matches!(refused, Err(object_store::Error::PermissionDenied { .. })),
        "{refused:?}"
    );
    put("").expect("the identity's keys with an empty session token");
}

/// A daemon runs longer than its credentials last, and Kubernetes rotates the token file under
/// it: the daemon exchanges the token again whenever its credentials near their expiry, reads
/// the file anew each time, and keeps its lease and its work with the rotated token.
#[test]
fn a_daemon_renews_its_credentials_with_the_rotated_token() {
    use common::daemon::{Daemon, config, write_config};
    let Some(s3) = common::s3::s3() else { return };
    const ROTATED: &str = "eyJhbGciOiJSUzI1NiJ9.the-rotated-token.c2lnbmF0dXJlMg";
    // The crate renews credentials with under 300 s left: these are renewed about every 2 s.
    let sts = Sts::start(Role {
        arn: ROLE.into(),
        token: TOKEN.into(),
        credentials: (ACCESS_KEY.into(), SECRET_KEY.into(), String::new()),
        ttl: Duration::from_secs(302),
    });
    let emu = common::StandaloneEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut c = config(&emu.endpoint());
    c.insert("state", s3.url("wid-daemon/state.json"));
    c.insert("lock_ttl", "10s".into());
    let config_path = write_config(d, &c);
    let token_file = d.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let first = common::marks(&[("@TGS#1A", "host", &[1000])]);
    common::write_atomic(&d.join("marks/all.yaml"), &common::yaml(&first));
    let applied = |want: &common::Marks| {
        let want = want.clone();
        common::poll("the daemon to apply", Duration::from_secs(60), || {
            (common::diff(&emu.marks(), &want) == (vec![], vec![])).then_some(())
        })
    };

    let mut daemon = Daemon::spawn(&config_path, d.join("daemon.log"), |cmd| {
        for (k, _) in
            std::env::vars().filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("SSL_CERT"))
        {
            cmd.env_remove(k);
        }
        cmd.env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &s3.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
            .env("AWS_ROLE_ARN", ROLE)
            .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
            .env("SSL_CERT_FILE", &sts.ca_file);
    });
    daemon.wait_ready();
    applied(&first);
    assert!(sts.granted_for(TOKEN) >= 1, "STS saw: {:?}", sts.log());

    // The token rotates: for a while both are valid, then only the new one.
    sts.accept(&[TOKEN, ROTATED]);
    common::write_atomic(&token_file, ROTATED);
    common::poll(
        "an exchange with the rotated token",
        Duration::from_secs(60),
        || (sts.granted_for(ROTATED) >= 1).then_some(()),
    );
    sts.accept(&[ROTATED]);
    let before = sts.granted_for(ROTATED);
    common::poll(
        "a renewal after the old token's end",
        Duration::from_secs(60),
        || (sts.granted_for(ROTATED) > before).then_some(()),
    );

    let second = common::marks(&[("@TGS#1A", "host", &[1000]), ("@TGS#1A", "ann", &[1001])]);
    common::write_atomic(&d.join("marks/all.yaml"), &common::yaml(&second));
    applied(&second);
    assert_eq!(
        daemon.metric("marksync_leader"),
        1.0,
        "{}",
        daemon.proc.stderr()
    );
    assert_eq!(sts.refused(), 0, "STS saw: {:?}", sts.log());
    let log = daemon.proc.stderr();
    for secret in [TOKEN, ROTATED, SECRET_KEY] {
        assert!(
            !log.contains(secret),
            "a secret in the daemon's log:\n{log}"
        );
    }
}
