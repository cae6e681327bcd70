//! Black-box tests of the `marksync` binary: exit codes, exact output, colour, config discovery.
//!
//! Each test builds a temporary directory with [`Test`] (config, desired files, a hand-written
//! state file), runs the real binary in it and checks status, stdout and stderr. Every run is
//! bounded by a timeout, so a hang fails the test instead of stalling the suite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{ADMIN, APP, KEY, Marks, Proc, StandaloneEmulator, unix_now};

const GROUP: &str = "@TGS#a6I4ZUUGO";

/// A config for the test directory: desired files under `marks/`, state in `state.json`.
const CONFIG: &str =
    "sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\nstate: state.json\n";

/// The SPEC's example group: teacher10 to set, host's mark 500 to renew (with the state below).
const DESIRED: &str = "groups:\n  \"@TGS#a6I4ZUUGO\":\n    members:\n      teacher10: [1000]\n      host: [500, 1000]\n";

/// A temporary directory to run `marksync` in, built step by step.
struct Test {
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// What a run produced.
#[derive(Debug)]
struct Output {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Test {
    fn new() -> Self {
        Test {
            dir: tempfile::tempdir().expect("temporary directory"),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Writes `marksync.yaml`, the file the binary reads when given no `-c`.
    fn config(self, yaml: &str) -> Self {
        self.file("marksync.yaml", yaml)
    }

    /// Writes a file (creating its directories) relative to the test directory.
    fn file(self, path: &str, content: &str) -> Self {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Writes `state.json` holding `groups` (group -> account -> mark -> confirmation time).
    fn state(self, sdkappid: u64, groups: &str) -> Self {
        let json =
            format!(r#"{{"format_version":1,"sdkappid":{sdkappid},"serial":1,"groups":{groups}}}"#);
        self.file("state.json", &json)
    }

    fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(arg.as_ref().to_string());
        self
    }

    fn args(self, args: &[&str]) -> Self {
        args.iter().fold(self, Test::arg)
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs the binary in the test directory, stdout and stderr piped (so not a terminal), with
    /// the variables that change colour or config discovery removed unless the test sets them.
    fn run(&self) -> Output {
        self.run_at(self.dir.path())
    }

    fn run_at(&self, dir: &Path) -> Output {
        let mut cmd = common::cli::marksync_command();
        cmd.args(&self.args).current_dir(dir);
        for var in [
            "NO_COLOR",
            "CLICOLOR",
            "CLICOLOR_FORCE",
            "CREDENTIALS_DIRECTORY",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = common::cli::run_bounded(&mut cmd, "");
        Output {
            status: out.status.code().expect("exited, not killed by a signal"),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }
}

impl Test {
    /// Runs the binary with `args` in an existing directory (bounded like [`Test::run`]).
    fn run_in(dir: &Path, args: &[&str]) -> Output {
        let t = Test {
            dir: tempfile::tempdir().expect("temporary directory"),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        };
        t.run_at(dir)
    }
}

impl Output {
    /// Asserts the exit status, showing everything the run printed when it differs.
    fn status(&self, code: i32) -> &Self {
        assert_eq!(self.status, code, "unexpected exit status; {self:#?}");
        self
    }

    fn stdout(&self, expected: &str) -> &Self {
        assert_eq!(
            self.stdout, expected,
            "stdout differs; stderr was:\n{}",
            self.stderr
        );
        self
    }

    fn stderr(&self, expected: &str) -> &Self {
        assert_eq!(
            self.stderr, expected,
            "stderr differs; stdout was:\n{}",
            self.stdout
        );
        self
    }

    fn stderr_contains(&self, part: &str) -> &Self {
        assert!(
            self.stderr.contains(part),
            "stderr does not contain {part:?}:\n{}",
            self.stderr
        );
        self
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The example config and desired file, with a state holding `groups` (JSON, `{GROUP}` is
/// replaced).
fn with_state(groups: &str) -> Test {
    Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .state(APP, &groups.replace("{GROUP}", GROUP))
}

/// The SPEC section 6 situation: teacher10 is new (set), student9 is no longer desired (clear),
/// host's mark 500 was confirmed 61 h ago (renew: due 12 h before its 72 h run out).
fn spec_example() -> Test {
    let t = unix_now();
    let renew = t - 61 * 3600;
    with_state(&format!(
        r#"{{"{{GROUP}}":{{"host":{{"500":{renew},"1000":{t}}},"student9":{{"1001":{t}}}}}}}"#
    ))
}

/// A state that matches [`DESIRED`] exactly, mark 500 freshly confirmed.
fn in_sync() -> Test {
    let t = unix_now() - 3600;
    with_state(&format!(
        r#"{{"{{GROUP}}":{{"host":{{"500":{t},"1000":{t}}},"teacher10":{{"1000":{t}}}}}}}"#
    ))
}

#[test]
fn validate_accepts_the_example() {
    Test::new()
        .arg("-c")
        .arg(examples().join("marksync.yaml").to_str().unwrap())
        .arg("validate")
        .run()
        .status(0)
        .stdout("OK: 2 groups with 13 members and 15 marks in 2 files.\n")
        .stderr("");
}

#[test]
fn validate_reports_every_error_in_every_file() {
    Test::new()
        .config(CONFIG)
        .file(
            "marks/a.yaml",
            "groups:\n  \"@TGS#a\":\n    memebrs:\n      alice: [1000]\n    members:\n      bob: [999]\n",
        )
        .file("marks/b.yaml", "groups:\n  \"@TGS#b\":\n    members: [1, 2]\n")
        .file("marks/ok.yaml", "groups:\n  \"@TGS#c\":\n    marks:\n      1000: [carol]\n")
        .arg("validate")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "marks/a.yaml:3:5: error: unknown key `memebrs`; expected `members` or `marks`
 3 |     memebrs:
   |     ^
marks/a.yaml:6:13: error: mark 999 is not allowed: a mark is an integer >= 1000, or the special 500 or 600
 6 |       bob: [999]
   |             ^
marks/b.yaml:3:14: error: `members` must be a mapping of account to its marks (such as `host: [500, 1000]`), found a list
 3 |     members: [1, 2]
   |              ^
",
        );
}

#[test]
fn validate_reports_config_errors() {
    Test::new()
        .config("sdkappid: \"1400000000\"\nidentifier: administrator\ndesired: marks/\nregoin: tokyo\n")
        .arg("validate")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "marksync.yaml:1:11: error: `sdkappid` must be a number, found the string \"1400000000\"; write it without quotes
 1 | sdkappid: \"1400000000\"
   |           ^
marksync.yaml:4:1: error: unknown key `regoin`; did you mean `region`?
 4 | regoin: tokyo
   | ^
",
        );
}

#[test]
fn plan_prints_set_clear_and_renew() {
    spec_example()
        .arg("plan")
        .run()
        .status(0)
        .stderr("")
        .stdout(
            "group @TGS#a6I4ZUUGO  (marks/class.yaml:2)
  - student9   1001       ->
  ~ host       500, 1000  -> 500, 1000   renew 500 (confirmed 61h ago)
  + teacher10             -> 1000

Plan: 1 to set, 1 to clear, 1 to renew in 1 group, 2 API calls.
",
        );
}

#[test]
fn plan_json_is_the_documented_contract() {
    spec_example()
        .args(&["plan", "--json"])
        .run()
        .status(0)
        .stderr("")
        .stdout(concat!(
            r#"{"format_version":1,"summary":{"set":1,"clear":1,"renew":1,"groups":1,"calls":2},"#,
            r#""calls":[{"group":"@TGS#a6I4ZUUGO","command":"clear","members":[{"account":"student9","marks":[1001]}]},"#,
            r#"{"group":"@TGS#a6I4ZUUGO","command":"set","members":[{"account":"host","marks":[500]},{"account":"teacher10","marks":[1000]}]}],"#,
            r#""guard":{"refuses":false,"clears":1,"managed":3,"max_clear_fraction":0.25,"min_clears":10,"overridden":false,"verdict":"passes"}}"#,
            "\n"
        ));
}

#[test]
fn plan_without_changes_says_so() {
    in_sync()
        .arg("plan")
        .run()
        .status(0)
        .stdout("No changes. Marks match the recorded state.\n\
             (The state records what marksync last applied; `--refresh` compares with the service.)\n")
        .stderr("");
}

#[test]
fn detailed_exitcode_is_2_with_changes_and_0_without() {
    spec_example()
        .args(&["plan", "--detailed-exitcode"])
        .run()
        .status(2);
    in_sync()
        .args(&["plan", "--detailed-exitcode"])
        .run()
        .status(0)
        .stdout("No changes. Marks match the recorded state.\n\
             (The state records what marksync last applied; `--refresh` compares with the service.)\n");
    spec_example()
        .args(&["plan", "--json", "--detailed-exitcode"])
        .run()
        .status(2);
}

#[test]
fn without_detailed_exitcode_changes_exit_0() {
    spec_example().arg("plan").run().status(0);
    in_sync().arg("plan").run().status(0);
}

#[test]
fn piped_and_no_color_output_has_no_escapes_but_clicolor_force_does() {
    let piped = spec_example().arg("plan").run();
    assert!(!piped.stdout.contains('\x1b'), "{:?}", piped.stdout);
    let no_color = spec_example().arg("plan").env("NO_COLOR", "1").run();
    assert!(!no_color.stdout.contains('\x1b'), "{:?}", no_color.stdout);
    assert_eq!(no_color.stdout, piped.stdout);
    let forced = spec_example().arg("plan").env("CLICOLOR_FORCE", "1").run();
    assert!(forced.stdout.contains('\x1b'), "{:?}", forced.stdout);
    let json = spec_example()
        .args(&["plan", "--json"])
        .env("CLICOLOR_FORCE", "1")
        .run();
    assert!(
        !json.stdout.contains('\x1b'),
        "JSON is never coloured: {:?}",
        json.stdout
    );
}

#[test]
fn missing_state_is_a_first_run_that_plans_everything() {
    Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .arg("plan")
        .run()
        .status(0)
        .stderr("")
        .stdout(
            "group @TGS#a6I4ZUUGO  (marks/class.yaml:2)
  + host         -> 500, 1000
  + teacher10    -> 1000

Plan: 3 to set, 0 to clear, 0 to renew in 1 group, 1 API call.
",
        );
}

#[test]
fn corrupt_state_is_an_error_and_nothing_is_planned() {
    let test = Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .file(
            "state.json",
            "{\"format_version\":1,\"sdkappid\":1400000000,\"groups\":{",
        );
    let out = test.arg("plan").run();
    out.status(1)
        .stdout("")
        .stderr_contains("state file state.json is corrupt (")
        .stderr_contains("it was not used");
}

#[test]
fn state_of_another_application_is_refused() {
    Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .state(1_400_000_001, "{}")
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "state file state.json belongs to sdkappid 1400000001, but the config says 1400000000; \
             refusing to mix two applications' state\n",
        );
}

#[test]
fn broken_desired_file_plans_nothing_not_clears() {
    let t = unix_now();
    Test::new()
        .config(CONFIG)
        .file(
            "marks/class.yaml",
            "groups:\n  \"@TGS#a6I4ZUUGO\":\n    members: [\n",
        )
        .state(APP, &format!(r#"{{"{GROUP}":{{"host":{{"1000":{t}}}}}}}"#))
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr_contains("marks/class.yaml:3:14: error:");
}

#[test]
fn missing_desired_directory_is_an_error() {
    Test::new()
        .config(CONFIG)
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr("marks/: error: the desired path does not exist (a missing directory is an error, never \"no groups\")\n");
}

#[test]
fn config_comes_from_marksync_config_and_paths_are_relative_to_it() {
    let test = Test::new()
        .file("conf/app.yaml", CONFIG)
        .file("conf/marks/class.yaml", DESIRED)
        .env("MARKSYNC_CONFIG", "conf/app.yaml")
        .arg("plan");
    test.run().status(0).stderr("").stdout(
        "group @TGS#a6I4ZUUGO  (marks/class.yaml:2)
  + host         -> 500, 1000
  + teacher10    -> 1000

Plan: 3 to set, 0 to clear, 0 to renew in 1 group, 1 API call.
",
    );
    // -c wins over the environment.
    Test::new()
        .file("conf/app.yaml", CONFIG)
        .file("conf/marks/class.yaml", DESIRED)
        .env("MARKSYNC_CONFIG", "nowhere.yaml")
        .args(&["-c", "conf/app.yaml", "validate"])
        .run()
        .status(0)
        .stdout("OK: 1 group with 2 members and 3 marks in 1 file.\n");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    Test::new().arg("plan").run().status(1).stdout("").stderr(
        "marksync.yaml: error: config file not found (pass -c FILE or set MARKSYNC_CONFIG)\n",
    );
    Test::new()
        .args(&["-c", "elsewhere.yaml", "validate"])
        .run()
        .status(1)
        .stderr(
            "elsewhere.yaml: error: config file not found (pass -c FILE or set MARKSYNC_CONFIG)\n",
        );
}

#[test]
fn plan_warns_when_apply_would_refuse_a_mass_clear() {
    // 12 managed marks in a group that is gone from the desired files: all would be cleared,
    // more than min_clears (10) and more than 25% of what is managed.
    let t = unix_now();
    let accounts: Vec<String> = (0..12)
        .map(|i| format!(r#""student{i:02}":{{"1001":{t}}}"#))
        .collect();
    let test = Test::new()
        .config(CONFIG)
        .file(
            "marks/other.yaml",
            "groups:\n  \"@TGS#other\":\n    marks:\n      1000: [teacher]\n",
        )
        .state(
            APP,
            &format!(r#"{{"@TGS#gone":{{{}}}}}"#, accounts.join(",")),
        );
    let out = test.arg("plan").run();
    out.status(0).stderr(
        "warning: apply would refuse this plan: refusing to clear 12 of 12 managed marks \
         (more than 10 and more than 25%); if that is really what you want, run again with \
         --allow-mass-clear\n",
    );
    assert!(
        out.stdout
            .ends_with("Plan: 1 to set, 12 to clear, 0 to renew in 2 groups, 2 API calls.\n"),
        "{}",
        out.stdout
    );
    let under = Test::new()
        .config(CONFIG)
        .file("marks/other.yaml", "groups: {}\n")
        .state(
            APP,
            &format!(r#"{{"@TGS#gone":{{{}}}}}"#, accounts[..10].join(",")),
        )
        .arg("plan")
        .run();
    under.status(0).stderr("");
}

#[test]
fn state_missing_but_backup_present_is_an_error_not_a_first_run() {
    Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .file("state.json.bak", "{}")
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "state file state.json is missing but state.json.bak exists; restore it \
             (cp state.json.bak state.json) rather than starting from nothing\n",
        );
}

#[test]
fn usersig_prints_a_sig_the_service_would_accept_and_never_the_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/marksync.yaml");
    let out = common::cli::run_bounded(
        common::cli::marksync_command()
            .arg("-c")
            .arg(&root)
            .arg("usersig"),
        "",
    );
    assert!(out.status.success());
    let sig = String::from_utf8(out.stdout).unwrap();
    let key = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-secret.key"),
    )
    .unwrap();
    assert!(!sig.contains(key.trim()));
    let secret = marksync::tim::usersig::SecretKey::new(key.trim()).unwrap();
    marksync::tim::usersig::verify(sig.trim(), APP, &secret, ADMIN, unix_now())
        .expect("the printed UserSig verifies with the configured key and identity");
}

/// A config whose secret key comes from `secret.key`.
fn with_key_file(content: &[u8], mode: u32) -> Test {
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new().config(&format!("{CONFIG}secret_key_file: secret.key\n"));
    let path = t.dir.path().join("secret.key");
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    t
}

/// Issue 7: `reassert_every: 500000000000y` passed `validate` (then `run` panicked), `30ms`
/// (for 30m) flooded the API. `validate` now reports both with the range and a hint.
#[test]
fn validate_refuses_out_of_range_durations_with_the_range() {
    Test::new()
        .config(&format!(
            "{CONFIG}reassert_every: 500000000000y\ndebounce: 500000000000y\n"
        ))
        .arg("validate")
        .run()
        .status(1)
        .stderr_contains("marksync.yaml:5:17: error: `reassert_every` must be between 1m and 7d, found 500000000000y")
        .stderr_contains("marksync.yaml:6:11: error: `debounce` must be between 10ms and 1m, found 500000000000y");
    Test::new()
        .config(&format!("{CONFIG}reassert_every: 30ms\n"))
        .arg("validate")
        .run()
        .status(1)
        .stderr_contains(
            "`reassert_every` must be between 1m and 7d, found 30ms; did you mean 30m?",
        );
}

/// Issue 7, "the secret key": a pasted key with a BOM, quotes, a prefix or a second line is
/// refused with the reason (it used to fail later with 70009), from the file and the
/// environment, and the key never appears in the output.
#[test]
fn malformed_secret_key_is_refused_with_the_reason_and_never_printed() {
    let cases: [(Vec<u8>, &str); 4] = [
        (
            [b"\xEF\xBB\xBF".as_slice(), KEY.as_bytes()].concat(),
            "starts with a UTF-8 byte-order mark",
        ),
        (format!("\"{KEY}\"\n").into_bytes(), "is wrapped in quotes"),
        (
            format!("KEY={KEY}\n").into_bytes(),
            "starts with a `NAME=` prefix",
        ),
        (
            format!("{KEY}\n{KEY}\n").into_bytes(),
            "contains a second line",
        ),
    ];
    for (content, reason) in &cases {
        let out = with_key_file(content, 0o600).arg("usersig").run();
        out.status(1)
            .stdout("")
            .stderr_contains("secret.key")
            .stderr_contains(reason);
        assert!(!out.stderr.contains(&KEY[..8]), "{}", out.stderr);
        let env = String::from_utf8(content.clone()).unwrap();
        let out = Test::new()
            .config(CONFIG)
            .env("MARKSYNC_SECRET_KEY", &env)
            .arg("usersig")
            .run();
        out.status(1)
            .stderr_contains("MARKSYNC_SECRET_KEY")
            .stderr_contains(reason);
        assert!(!out.stderr.contains(&KEY[..8]), "{}", out.stderr);
    }
    with_key_file(format!("{KEY}\n").as_bytes(), 0o600)
        .arg("usersig")
        .run()
        .status(0)
        .stderr("");
}

/// Issue 7: a key file readable by others works, with a warning on stderr.
#[test]
fn secret_key_file_readable_by_others_is_warned_about() {
    let out = with_key_file(KEY.as_bytes(), 0o644).arg("usersig").run();
    out.status(0)
        .stderr_contains("readable by others or by a group")
        .stderr_contains("secret.key");
    assert!(!out.stderr.contains(&KEY[..8]), "{}", out.stderr);
}

/// Issue 16: the Kubernetes Secret is mounted 0440 with the pod's own group (fsGroup =
/// runAsGroup), the only way uid 10001 can read a file the kubelet owns as root. That is not a
/// loose key: no warning. The same mode with a group that is not the process's own is warned
/// about (a shared group such as `users` could read the key).
#[test]
fn a_key_readable_by_the_processs_own_group_only_is_not_warned_about_another_group_is() {
    let out = with_key_file(KEY.as_bytes(), 0o440).arg("usersig").run();
    out.status(0);
    assert!(!out.stderr.contains("readable"), "{}", out.stderr);

    let t = with_key_file(KEY.as_bytes(), 0o440);
    let path = t.dir.path().join("secret.key");
    let own_gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&path).unwrap());
    if std::os::unix::fs::chown(&path, None, Some(own_gid + 4242)).is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: cannot give the key file a foreign group (needs root)"
        );
        eprintln!("SKIPPED the foreign-group half: chown needs root");
        return;
    }
    t.arg("usersig")
        .run()
        .status(0)
        .stderr_contains("readable by others or by a group")
        .stderr_contains("secret.key");
}

/// The embedded emulator's demo key guards nothing: the quick start must not warn about its mode.
#[test]
fn the_embedded_emulators_demo_key_is_not_warned_about() {
    let t = Test::new().config(&format!(
        "{CONFIG}endpoint: embedded\nsecret_key_file: secret.key\n"
    ));
    let path = t.dir.path().join("secret.key");
    std::fs::write(&path, KEY).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = t.arg("usersig").run();
    out.status(0);
    assert!(!out.stderr.contains("readable by"), "{}", out.stderr);
}

/// A key variable that is set but not UTF-8 is refused, never skipped as if unset.
#[test]
fn a_secret_key_variable_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let t = Test::new().config(CONFIG);
    let out = common::cli::run_bounded(
        common::cli::marksync_command()
            .current_dir(t.dir.path())
            .args(["usersig"])
            .env(
                "MARKSYNC_SECRET_KEY",
                std::ffi::OsStr::from_bytes(b"5bd2850fff3e\xff"),
            )
            .env_remove("CREDENTIALS_DIRECTORY"),
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the secret key from environment variable MARKSYNC_SECRET_KEY is not hex"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret key: the secret key"),
        "said once: {stderr}"
    );
    assert!(!stderr.contains("5bd2850f"), "{stderr}");
}

/// Issue 7: `secret_key_file: /dev/zero` read until out of memory; a FIFO as the config or the
/// key hung. Each is refused at once (the run is bounded by `common::cli::RUN_TIMEOUT`).
#[test]
fn devices_and_fifos_as_config_or_secret_key_are_refused_not_read() {
    Test::new()
        .config(&format!("{CONFIG}secret_key_file: /dev/zero\n"))
        .arg("usersig")
        .run()
        .status(1)
        .stderr_contains("/dev/zero: not a regular file");
    let t = Test::new().config(&format!("{CONFIG}secret_key_file: key.fifo\n"));
    let made = Command::new("mkfifo")
        .arg(t.dir.path().join("key.fifo"))
        .status();
    if made.is_ok_and(|s| s.success()) {
        t.arg("usersig")
            .run()
            .status(1)
            .stderr_contains("not a regular file");
        let t = Test::new();
        Command::new("mkfifo")
            .arg(t.dir.path().join("marksync.yaml"))
            .status()
            .unwrap();
        t.arg("validate")
            .run()
            .status(1)
            .stderr_contains("marksync.yaml: error: cannot read config file: not a regular file");
    }
}

// ---------------------------------------------------------------------------------------------
// Usage errors (exit 1, never clap's 2, which is `plan --detailed-exitcode`'s "changes")

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

// ---------------------------------------------------------------------------------------------
// Signals on `apply` (real process, real signals, a standalone emulator with injected latency)

/// `n` groups of one member with two marks: one call per group.
fn groups(n: usize) -> Marks {
    common::groups_of_one("@TGS#s", 0..n)
}

/// A directory with a config pointing at `emu` (calls spaced by `rate` per second).
fn signal_env(emu: &StandaloneEmulator, rate: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.key"), common::KEY).unwrap();
    std::fs::write(
        dir.path().join("marksync.yaml"),
        format!(
            "sdkappid: {APP}\nidentifier: administrator\nsecret_key_file: secret.key\n\
             endpoint: {}\ndesired: marks/\nstate: state.json\nmax_calls_per_second: {rate}\n",
            emu.endpoint()
        ),
    )
    .unwrap();
    dir
}

fn desire(dir: &Path, want: &Marks) {
    common::write_atomic(&dir.join("marks/all.yaml"), &common::yaml(want));
}

fn spawn_apply(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    Proc::spawn(
        common::cli::marksync_command()
            .current_dir(dir)
            .args(["apply"])
            .args(extra),
        dir.join(format!("{name}.log")),
    )
}

/// The state's confirmed marks, read through the library (so the file must parse).
fn confirmed(dir: &Path) -> (Marks, usize) {
    let st = marksync::state::load(&dir.join("state.json"), APP).expect("the state parses");
    let out = common::confirmed_marks(&st);
    let intents = st.intents.values().map(|a| a.len()).sum();
    (out, intents)
}

/// Runs `apply` with a slow emulator, sends `signal` once a few calls are in, and checks the
/// daemon-like stop: exit `code`, no new calls, the state equal to what the service holds.
fn interrupted_apply_saves_what_the_service_holds(signal: &str, code: i32, clear: bool) {
    let emu = StandaloneEmulator::start();
    let dir = signal_env(&emu, 10);
    let all = groups(30);
    desire(dir.path(), &all);
    if clear {
        // Everything set first (fast), then a slow apply clearing it all.
        let first = Test::run_in(dir.path(), &["apply"]);
        assert_eq!(first.status, 0, "{first:#?}");
        desire(dir.path(), &Marks::new());
    }
    emu.inject(serde_json::json!({"kind": "latency", "ms": 1500}));
    let before = emu.calls();
    let extra: &[&str] = if clear { &["--allow-mass-clear"] } else { &[] };
    let mut apply = spawn_apply(dir.path(), "apply", extra);
    common::poll("three calls to arrive", Duration::from_secs(20), || {
        (emu.calls() >= before + 3).then_some(())
    });
    apply.signal(signal);
    let status = apply.wait_exit(Duration::from_secs(20));
    let sent = emu.calls() - before;
    assert_eq!(status.code(), Some(code), "{}", apply.stderr());
    assert!(
        sent < 30,
        "no new calls after the signal: {sent} of 30 sent"
    );
    let stderr = apply.stderr();
    assert!(
        stderr.contains(&format!("Apply interrupted by SIG{signal}"))
            && stderr.contains("state.json"),
        "says it was interrupted and what was saved: {stderr}"
    );
    let stdout = apply.stdout();
    assert!(
        stdout.contains("not sent, the run was interrupted") && !stdout.contains("fatal error"),
        "the calls a signal kept from starting say so, not \"fatal error\": {stdout}"
    );
    assert_eq!(emu.settle(Duration::from_secs(5)), 0, "calls in flight");
    let (state, intents) = confirmed(dir.path());
    assert_eq!(
        state,
        emu.marks(),
        "the state records exactly what the service holds"
    );
    assert_eq!(intents, 0, "the calls in flight finished and were recorded");

    emu.clear_faults();
    let again = Test::run_in(dir.path(), &["apply", "--allow-mass-clear"]);
    assert_eq!(again.status, 0, "{again:#?}");
    let want = if clear { Marks::new() } else { all };
    assert_eq!(emu.marks(), want);
}

#[test]
fn sigint_on_apply_finishes_calls_in_flight_saves_and_exits_130() {
    interrupted_apply_saves_what_the_service_holds("INT", 130, false);
}

#[test]
fn sigterm_on_apply_mid_clear_saves_the_clears_and_exits_143() {
    interrupted_apply_saves_what_the_service_holds("TERM", 143, true);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_next_apply_settles_the_calls_in_flight() {
    let emu = StandaloneEmulator::start();
    let dir = signal_env(&emu, 10);
    let all = groups(10);
    desire(dir.path(), &all);
    emu.inject(serde_json::json!({"kind": "latency", "ms": 4000}));
    let mut apply = spawn_apply(dir.path(), "apply", &[]);
    common::poll("a call to arrive", Duration::from_secs(20), || {
        (emu.calls() >= 1).then_some(())
    });
    apply.signal("INT");
    common::poll(
        "the first signal to be acknowledged",
        Duration::from_secs(10),
        || {
            apply
                .stderr()
                .contains("sending no new calls")
                .then_some(())
        },
    );
    let t = std::time::Instant::now();
    apply.signal("INT");
    let status = apply.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", apply.stderr());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the second Ctrl-C does not wait for the calls in flight ({:?})",
        t.elapsed()
    );
    let (_, intents) = confirmed(dir.path());
    assert!(intents > 0, "the calls in flight are recorded as intents");

    emu.settle(Duration::from_secs(10));
    emu.clear_faults();
    let again = Test::run_in(dir.path(), &["apply"]);
    assert_eq!(again.status, 0, "{again:#?}");
    assert_eq!(emu.marks(), all);
    let (state, intents) = confirmed(dir.path());
    assert_eq!((state, intents), (all, 0));
}

/// Runs `args` with a slow `get_members` (3 s per page, so the refresh's reads take about 12 s),
/// sends `signal` once the first read is in, and checks the stop: exit `code` within a couple of
/// seconds, no write call, and the state file byte for byte as it was.
fn a_signal_during_the_refresh_stops_at_once(args: &[&str], signal: &str, code: i32) {
    let emu = StandaloneEmulator::start();
    let dir = signal_env(&emu, 200);
    desire(dir.path(), &groups(30));
    let first = Test::run_in(dir.path(), &["apply"]);
    assert_eq!(first.status, 0, "{first:#?}");
    let state_before = std::fs::read(dir.path().join("state.json")).unwrap();
    emu.inject(serde_json::json!({"kind": "latency", "ms": 3000, "path": "get_members"}));
    let before = emu.calls();
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_marksync"))
            .current_dir(dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("MARKSYNC_CONFIG")
            .env_remove("MARKSYNC_LOG"),
        dir.path().join("refresh.log"),
    );
    common::poll("a read to arrive", Duration::from_secs(20), || {
        (emu.calls() > before).then_some(())
    });
    let t = std::time::Instant::now();
    proc.signal(signal);
    let status = proc.wait_exit(Duration::from_secs(40));
    let took = t.elapsed();
    eprintln!("{args:?}: exit {status} {took:?} after SIG{signal}");
    assert_eq!(status.code(), Some(code), "{args:?}: {}", proc.stderr());
    assert!(
        took < Duration::from_secs(2),
        "{args:?} stops within a second or so of SIG{signal}, not after the reads ({took:?})"
    );
    assert!(
        proc.stderr().contains(&format!("SIG{signal}")),
        "says what stopped it: {}",
        proc.stderr()
    );
    assert_eq!(
        std::fs::read(dir.path().join("state.json")).unwrap(),
        state_before,
        "{args:?}: the state is unchanged"
    );
    let stats = emu.control("GET", "/emulator/stats", None);
    let writes = stats["calls_by_path"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.contains("modify_user_info"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(
        writes, 30,
        "{args:?}: no write call after the first apply's 30"
    );
}

#[test]
fn sigterm_during_apply_refresh_reads_exits_143_at_once_with_the_state_unchanged() {
    a_signal_during_the_refresh_stops_at_once(&["apply", "--refresh"], "TERM", 143);
}

#[test]
fn sigint_during_plan_refresh_reads_exits_130_at_once() {
    a_signal_during_the_refresh_stops_at_once(&["plan", "--refresh"], "INT", 130);
}

#[test]
fn sigterm_during_import_reads_exits_143_at_once_with_the_state_unchanged() {
    a_signal_during_the_refresh_stops_at_once(&["import"], "TERM", 143);
}

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
