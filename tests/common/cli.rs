//! One-shot runs of the real binary against `endpoint: embedded` (the emulator in the process,
//! on loopback): a directory holding a config, the demo key and a desired file, and bounded runs
//! of `marksync` in it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The longest one run may take before the test calls it hung.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A config for `endpoint: embedded`, its paths relative to the directory.
pub const EMBEDDED_CONFIG: &str = "sdkappid: 1400000000
identifier: administrator
secret_key_file: demo-secret.key
endpoint: embedded
desired: marks/
state: state.json
";

/// What a finished run printed and how it ended.
pub struct Output {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Writes `config` as `marksync.yaml`, the example's demo key, and `desired` as
/// `marks/physics.yaml` into `dir`.
pub fn write_embedded(dir: &Path, config: &str, desired: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(dir.join("marksync.yaml"), config).unwrap();
    std::fs::copy(
        root.join("examples/demo-secret.key"),
        dir.join("demo-secret.key"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("marks")).unwrap();
    std::fs::write(dir.join("marks/physics.yaml"), desired).unwrap();
}

/// A new temporary directory set up by [`write_embedded`].
pub fn embedded_dir(config: &str, desired: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_embedded(dir.path(), config, desired);
    dir
}

/// The command `marksync` with the variables that change config discovery, the key or colour
/// removed.
pub fn marksync_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marksync"));
    cmd.env_remove("MARKSYNC_CONFIG")
        .env_remove("MARKSYNC_SECRET_KEY")
        .env_remove("MARKSYNC_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs `cmd` to the end with `stdin` as its input and stdout and stderr piped (so not a
/// terminal); kills it and panics after [`RUN_TIMEOUT`]. The one bounded runner of the tests.
pub fn run_bounded(cmd: &mut Command, stdin: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut input = child.stdin.take().unwrap();
    // A program that exits without reading its input closes the pipe: not an error here.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(out) => out.expect("wait for the program"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within {RUN_TIMEOUT:?}");
        }
    }
}

/// Runs `program ARGS` in `dir` with `stdin` as its input (no terminal), bounded by
/// [`RUN_TIMEOUT`].
pub fn run_program(dir: &Path, program: &str, args: &[&str], stdin: &str) -> Output {
    let mut cmd = if program == env!("CARGO_BIN_EXE_marksync") {
        marksync_command()
    } else {
        let mut cmd = Command::new(program);
        cmd.env_remove("MARKSYNC_CONFIG")
            .env_remove("MARKSYNC_SECRET_KEY")
            .env_remove("MARKSYNC_LOG")
            .env("NO_COLOR", "1");
        cmd
    };
    let out = run_bounded(cmd.args(args).current_dir(dir), stdin);
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `marksync ARGS` in `dir` without a terminal (as CI does), bounded by [`RUN_TIMEOUT`].
pub fn marksync(dir: &Path, args: &[&str]) -> Output {
    run_program(dir, env!("CARGO_BIN_EXE_marksync"), args, "")
}
