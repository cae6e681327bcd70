//! `marksync run` under test: its config, its process and its HTTP listener. The daemon binds
//! `http: {listen: 127.0.0.1:0}` and logs the address it got (`listen=ADDR ... http
//! listener`); [`Daemon::addr`] reads it from there.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{ADMIN, APP, BIN, KEY, POLL, Proc, http, logged_addr, poll};

/// How long a daemon test waits for anything that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// The config a daemon test starts from (top-level key -> value as YAML text): `endpoint`,
/// the secret key written by [`write_secret`], `marks/` and `state/marksync.json` under the
/// config's directory, short debounce, timers an hour away, the listener on a port the OS
/// chooses.
pub fn config(endpoint: &str) -> BTreeMap<&'static str, String> {
    let mut c = BTreeMap::new();
    c.insert("sdkappid", APP.to_string());
    c.insert("identifier", ADMIN.into());
    c.insert("secret_key_file", "secret.key".into());
    c.insert("endpoint", endpoint.into());
    c.insert("desired", "marks/".into());
    c.insert("state", "state/marksync.json".into());
    c.insert("debounce", "100ms".into());
    c.insert("retry_pending_every", "1h".into());
    c.insert("reassert_every", "1h".into());
    c.insert("http", "{ listen: 127.0.0.1:0 }".into());
    c
}

/// `config` as the text of `marksync.yaml`.
pub fn config_text(config: &BTreeMap<&'static str, String>) -> String {
    config.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// Writes `config` as `dir/marksync.yaml` (atomically, as an editor does, so a daemon reading
/// it never sees half a file), with the secret key and `marks/` of [`write_secret`]; returns
/// the config's path. The one config writer of the tests that talk to a service.
pub fn write_config(dir: &Path, config: &BTreeMap<&'static str, String>) -> PathBuf {
    write_secret(dir);
    let path = dir.join("marksync.yaml");
    super::write_atomic(&path, &config_text(config));
    path
}

/// Writes the secret key [`config`] names into `dir`, and creates `dir/marks`.
pub fn write_secret(dir: &Path) {
    std::fs::write(dir.join("secret.key"), format!("{KEY}\n")).unwrap();
    std::fs::create_dir_all(dir.join("marks")).unwrap();
}

/// A running `marksync run` (killed on drop) and its HTTP listener.
pub struct Daemon {
    /// The process; its stderr (the text log at info level) is in `proc.log`.
    pub proc: Proc,
    /// The listener's address, once read from the log.
    addr: OnceCell<SocketAddr>,
}

impl Daemon {
    /// Starts `marksync -c CONFIG --log-format text run` logging at info to `log`, without
    /// waiting for anything. `prepare` may adjust the command (limits, environment).
    pub fn spawn(config: &Path, log: PathBuf, prepare: impl FnOnce(&mut Command)) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(config)
            .args(["--log-format", "text", "run"])
            .env_remove("NOTIFY_SOCKET")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        prepare(&mut cmd);
        Daemon {
            proc: Proc::spawn(&mut cmd, log),
            addr: OnceCell::new(),
        }
    }

    /// Where the listener is, waiting (bounded) for its log line; `None` if the daemon never
    /// said (it exited, or the listener failed).
    pub fn addr(&self) -> Option<SocketAddr> {
        if let Some(a) = self.addr.get() {
            return Some(*a);
        }
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Some(a) = logged_addr(&self.proc.stderr(), "listen=", "http listener") {
                return Some(*self.addr.get_or_init(|| a));
            }
            std::thread::sleep(POLL);
        }
        None
    }

    /// `GET path`: `(status, body)`, `(0, "")` when the listener cannot be reached.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.addr()
            .and_then(|a| http(a, "GET", path, None).ok())
            .unwrap_or((0, String::new()))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics");
        body
    }

    /// The sum of the series starting with `prefix` (see [`metric`]); panics when none does.
    pub fn metric(&self, prefix: &str) -> f64 {
        metric(&self.metrics(), prefix).unwrap_or_else(|| panic!("no series {prefix}"))
    }

    /// Reconciles recorded with `trigger`, whatever their outcome.
    pub fn reconciles(&self, trigger: &str) -> f64 {
        self.metric(&format!("marksync_reconciles_total{{trigger=\"{trigger}\""))
    }

    /// Waits until at least `n` reconciles with `trigger` were recorded (the emulator can show
    /// a reconcile's effect a moment before the daemon records it).
    pub fn wait_reconciles(&self, trigger: &str, n: f64) {
        poll(&format!("{n} reconciles by {trigger}"), WAIT, || {
            (self.reconciles(trigger) >= n).then_some(())
        })
    }

    /// `GET /readyz`'s status.
    pub fn readyz(&self) -> u16 {
        self.get("/readyz").0
    }

    /// Waits until `/readyz` answers 200; panics with the log if the daemon exits first.
    pub fn wait_ready(&mut self) {
        self.wait_status("/readyz");
    }

    /// Waits until the listener answers (ready or not).
    pub fn wait_listening(&mut self) {
        self.wait_status("/healthz");
    }

    fn wait_status(&mut self, path: &str) {
        let what = format!("GET {path} to answer 200");
        let start = Instant::now();
        loop {
            if self.get(path).0 == 200 {
                return;
            }
            if let Some(status) = self.proc.exited() {
                panic!("the daemon exited ({status}):\n{}", self.proc.stderr());
            }
            if start.elapsed() > WAIT {
                panic!("timed out: {what}\n{}", self.proc.stderr());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until stderr contains `part`; returns the whole stderr.
    pub fn wait_stderr(&self, part: &str) -> String {
        poll(&format!("stderr to contain {part:?}"), WAIT, || {
            let e = self.proc.stderr();
            e.contains(part).then_some(e)
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon stderr ---\n{}", self.proc.stderr());
            if self.addr.get().is_some() {
                let (_, metrics) = self.get("/metrics");
                let lines: Vec<&str> = metrics
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                    .collect();
                eprintln!("--- daemon metrics (non-zero) ---\n{}", lines.join("\n"));
            }
        }
    }
}

/// The sum of every sample whose series starts with `prefix` (`name{label="x"` sums over the
/// other labels), or `None` when there is none.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let matches = series == prefix
            || (series.starts_with(prefix)
                && matches!(series.as_bytes().get(prefix.len()), Some(b'{' | b',')));
        if matches {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}
