//! Black-box tests of the `marksync` binary: exit codes, exact output, colour, config discovery.
//!
//! Each test builds a temporary directory with [`Test`] (config, desired files, a hand-written
//! state file), runs the real binary in it and checks status, stdout and stderr. Every run is
//! bounded by a timeout, so a hang fails the test instead of stalling the suite.
//!
//! This file holds the builder ([`Test`]); the tests are in one file per concern beside it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "../common/mod.rs"]
mod common;

mod embedded;
mod inputs;
mod secrets;
mod signals;
mod usage;
mod validate_and_plan;

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
