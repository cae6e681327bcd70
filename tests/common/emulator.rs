//! Emulators: the in-process one's demo config and runtime, the standalone process (its
//! address read from its log), its control API, and fake endpoints on loopback.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ADMIN, APP, BIN, KEY, Marks, POLL, Proc, http, logged_addr, poll};

/// An in-process emulator's config as `--demo` sets it up: groups are created on first use and
/// members are online.
pub fn demo_emulator_config() -> marksync::emulator::EmulatorConfig {
    let mut cfg = marksync::emulator::EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    cfg
}

/// A two-worker tokio runtime for an in-process emulator driven from blocking test code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves `app` in this runtime on a loopback port the OS chose; returns the address.
pub async fn serve_on_loopback(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A standalone `marksync emulator --demo` on a port the OS chose (groups are created on first
/// use and members are online), read from its log line: never a port picked, released and
/// hoped to be still free.
pub struct StandaloneEmulator {
    /// The emulator process (killed on drop).
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Calls counted on arrival that were never answered: their client went away and the
    /// emulator dropped them with the connection (see [`StandaloneEmulator::settle`]).
    dropped: std::cell::Cell<u64>,
    _dir: tempfile::TempDir,
}

impl StandaloneEmulator {
    /// Starts the emulator and waits (bounded) until it answers.
    pub fn start() -> StandaloneEmulator {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("emu.key"), KEY).unwrap();
        std::fs::write(
            dir.path().join("emu.yaml"),
            format!(
                "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: emu.key\ndesired: marks/\nstate: emu.json\n"
            ),
        )
        .unwrap();
        let mut proc = Proc::spawn(
            Command::new(BIN)
                .arg("-c")
                .arg(dir.path().join("emu.yaml"))
                .args(["emulator", "--demo", "--listen", "127.0.0.1:0"])
                .env("NO_COLOR", "1")
                .env_remove("MARKSYNC_LOG"),
            dir.path().join("emulator.log"),
        );
        let addr: SocketAddr = poll(
            "the emulator's address in its log",
            Duration::from_secs(20),
            || {
                if let Some(s) = proc.exited() {
                    panic!("emulator exited ({s}): {}", proc.stderr());
                }
                logged_addr(&proc.stderr(), "use endpoint http://", "")
            },
        );
        let emu = StandaloneEmulator {
            proc,
            addr,
            dropped: std::cell::Cell::new(0),
            _dir: dir,
        };
        poll("the emulator to answer", Duration::from_secs(10), || {
            http(emu.addr, "GET", "/emulator/stats", None)
                .ok()
                .map(|_| ())
        });
        emu
    }

    /// The endpoint for a config.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A control call that must succeed; its JSON answer.
    pub fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, text) =
            http(self.addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Adds a fault (`{"kind": "latency", "ms": 200}`, ...).
    pub fn inject(&self, fault: Value) {
        self.control("POST", "/emulator/faults", Some(&fault));
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.control("POST", "/emulator/faults/clear", None);
    }

    /// Service calls received so far (counted on arrival).
    pub fn calls(&self) -> u64 {
        calls_total(self.addr)
    }

    /// Calls that arrived and have not been answered yet: the emulator logs a call when it
    /// answers and counts it when it arrives.
    pub fn in_flight(&self) -> u64 {
        let stats = self.control("GET", "/emulator/stats?log=true", None);
        let total = stats["calls_total"].as_u64().unwrap();
        let answered = stats["log"].as_array().map_or(0, Vec::len) as u64;
        total.saturating_sub(answered + self.dropped.get())
    }

    /// Waits until no call is in flight, or at most `limit` (longer than the injected latency):
    /// a call whose client went away is either answered (and applied) once its latency is
    /// slept, or dropped with its connection before that (never applied). So after `limit`
    /// nothing more can land; calls still unanswered then are counted as dropped. Returns how
    /// many were.
    pub fn settle(&self, limit: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let n = self.in_flight();
            if n == 0 {
                return 0;
            }
            if start.elapsed() > limit {
                self.dropped.set(self.dropped.get() + n);
                return n;
            }
            std::thread::sleep(POLL);
        }
    }

    /// The live marks, from the control API.
    pub fn marks(&self) -> Marks {
        live_marks(self.addr)
    }
}

/// The live marks of the emulator at `addr`, from its control API (dissolved groups and
/// members without marks left out).
pub fn live_marks(addr: SocketAddr) -> Marks {
    let (status, body) = http(addr, "GET", "/emulator/groups", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let groups: Value = serde_json::from_str(&body).unwrap();
    let mut out = Marks::new();
    for (g, view) in groups.as_object().unwrap() {
        if view["dissolved"].as_bool() == Some(true) {
            continue;
        }
        for (a, m) in view["members"].as_object().unwrap() {
            let mut marks: Vec<u32> = m["marks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            if marks.is_empty() {
                continue;
            }
            marks.sort_unstable();
            out.entry(g.clone()).or_default().insert(a.clone(), marks);
        }
    }
    out
}

/// Service calls the emulator at `addr` received (counted on arrival).
pub fn calls_total(addr: SocketAddr) -> u64 {
    let (status, body) = http(addr, "GET", "/emulator/stats", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    stats["calls_total"].as_u64().unwrap()
}
