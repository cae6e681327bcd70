//! Processes, time and the host: bounded polling, a child process killed on drop, a tiny
//! blocking HTTP client, addresses read from a server's log, bench flags and `/proc`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::POLL;

/// The wall clock in Unix seconds (for state files written by hand and timestamp metrics).
pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

/// The wall clock in Unix milliseconds.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The value after `--name` on the command line (`--calls 500`), parsed; `None` when absent or
/// unparsable. For benches, which take their knobs this way.
pub fn flag<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// The text after `field:` in `/proc/<which>/status` (`which` is a pid or `self`), trimmed.
pub fn proc_status(which: &str, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{which}/status")).ok()?;
    status.lines().find_map(|l| {
        let value = l.strip_prefix(field)?.strip_prefix(':')?;
        Some(value.trim().to_string())
    })
}

/// The first number of a `/proc/<which>/status` field (`VmRSS`, `VmHWM`: KiB), 0 if absent.
pub fn proc_status_kib(which: &str, field: &str) -> u64 {
    proc_status(which, field)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` every [`POLL`] until it returns `Some`, or panics after `limit` naming `what`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?}: {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// How long [`within`] and [`wait_until`] let anything take before the test calls it hung.
pub const ASYNC_LIMIT: Duration = Duration::from_secs(60);

/// Fails the test instead of hanging it: `f`, or a panic naming the caller's line after
/// [`ASYNC_LIMIT`].
#[track_caller]
pub fn within<F: std::future::Future>(f: F) -> impl std::future::Future<Output = F::Output> {
    let at = std::panic::Location::caller();
    async move {
        match tokio::time::timeout(ASYNC_LIMIT, f).await {
            Ok(v) => v,
            Err(_) => panic!("timed out after {ASYNC_LIMIT:?} at {at}"),
        }
    }
}

/// Polls `check` every [`POLL`] until it holds, or panics after [`ASYNC_LIMIT`] naming `what`.
pub async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < ASYNC_LIMIT,
            "timed out after {ASYNC_LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing
/// running. Its stderr goes to a file; stdout to another one.
pub struct Proc {
    child: Child,
    /// Where stderr goes.
    pub log: PathBuf,
    /// Where stdout goes.
    pub out: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdin closed, stdout to `<log>.out` and stderr to `log`.
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let err = std::fs::File::create(&log).unwrap();
        let out_path = log.with_extension("out");
        let out = std::fs::File::create(&out_path).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Proc {
            child,
            log,
            out: out_path,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (a name for `kill -s`: `INT`, `TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig} {} failed", self.pid());
    }

    /// SIGKILL now, then reap (bounded).
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.wait_exit(Duration::from_secs(10))
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The exit status, if it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (bounded) for the process to exit; the panic at the limit shows its stderr.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?}: process {} to exit; its stderr:\n{}",
                    self.pid(),
                    self.stderr()
                );
            }
            std::thread::sleep(super::POLL);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A tiny HTTP/1.0 client (no keep-alive, no chunking): `(status, body)`. `body` is sent as
/// JSON when given.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The first address in `log` that follows `marker` on a line containing `line`: how the test
/// learns the port a server it started bound (the emulator logs `use endpoint http://ADDR`,
/// the daemon `listen=ADDR ... http listener`).
pub fn logged_addr(log: &str, marker: &str, line: &str) -> Option<SocketAddr> {
    log.lines().filter(|l| l.contains(line)).find_map(|l| {
        l.split(marker)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Whether the tests run in CI: `CI` is set to anything but empty, `0` or `false` (`.ci/run`
/// sets `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Whether `program ARGS` (a harmless probe such as `--version`, or the very thing the test
/// needs, such as `unshare -m true`) runs and succeeds, so a test that needs it can go on. When
/// it does not: in CI ([`in_ci`]) the test fails, since a test that skips there proves nothing;
/// on a developer's machine it prints a loud SKIPPED line and the caller returns.
pub fn require_tool(why: &str, program: &str, args: &[&str]) -> bool {
    let ok = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let what = format!(
        "`{program} {}` does not work here; it is needed {why}",
        args.join(" ")
    );
    if in_ci() {
        panic!("{what} (CI is set: install it, see .ci/run)");
    }
    eprintln!("\n*** SKIPPED: {what} ***\n*** (in CI this fails; .ci/run installs it) ***\n");
    false
}

/// `vars` as owned pairs, for a command's environment.
pub fn owned_env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sets `vars` on `cmd`, first removing every variable starting with `prefix` that it would
/// inherit (a developer's own `AWS_PROFILE` must not reach a test's store).
pub fn replace_env(cmd: &mut Command, prefix: &str, vars: Vec<(String, String)>) {
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with(prefix)) {
        cmd.env_remove(k);
    }
    cmd.envs(vars);
}
