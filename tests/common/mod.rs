//! The one home of the helpers the tests and benches share: constants of the test
//! application, marks tables and desired files, bounded polling, a child process killed on
//! drop, a tiny blocking HTTP client, a standalone emulator (`marksync emulator --listen
//! 127.0.0.1:0`) and the daemon under test ([`daemon`]). Every server a test talks to binds
//! port 0 itself and reports the address it got; nothing picks a port and hopes it stays free.
//!
//! Include with `mod common;` (tests) or `#[path = "../tests/common/mod.rs"] mod common;`
//! (benches). Each test crate uses only some of these, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod daemon;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The application every helper speaks for.
pub const APP: u64 = 1_400_000_000;
/// The bundled example's secret key (`examples/demo-secret.key`).
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// The admin identifier.
pub const ADMIN: &str = "administrator";
/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_marksync");
/// How often [`poll`] looks.
pub const POLL: Duration = Duration::from_millis(20);

/// group -> account -> marks (ascending). Accounts without marks are absent.
pub type Marks = BTreeMap<String, BTreeMap<String, Vec<u32>>>;

/// A group ID that must be valid.
pub fn g(s: &str) -> marksync::model::GroupId {
    marksync::model::GroupId::new(s).unwrap()
}

/// An account that must be valid.
pub fn a(s: &str) -> marksync::model::Account {
    marksync::model::Account::new(s).unwrap()
}

/// A mark that must be valid.
pub fn m(n: u64) -> marksync::model::Mark {
    marksync::model::Mark::new(n).unwrap()
}

/// Adds `marks` of `account` in `group` to a desired state.
pub fn desire(
    d: &mut marksync::desired::DesiredState,
    group: marksync::model::GroupId,
    account: marksync::model::Account,
    marks: impl IntoIterator<Item = marksync::model::Mark>,
) {
    d.groups
        .entry(group)
        .or_default()
        .members
        .entry(account)
        .or_default()
        .extend(marks);
}

/// Marks from `(group, account, marks)` rows (marks sorted; a later row for the same member
/// replaces an earlier one).
pub fn marks(rows: &[(&str, &str, &[u32])]) -> Marks {
    let mut out = Marks::new();
    for (g, a, m) in rows {
        let mut m = m.to_vec();
        m.sort_unstable();
        out.entry((*g).into()).or_default().insert((*a).into(), m);
    }
    out
}

/// One group per id in `ids` (`{prefix}{id:04}`), each with one member `u` holding 1000 and
/// 1001: one call per group.
pub fn groups_of_one(prefix: &str, ids: impl IntoIterator<Item = usize>) -> Marks {
    ids.into_iter()
        .map(|i| {
            let mut m = BTreeMap::new();
            m.insert("u".to_string(), vec![1000, 1001]);
            (format!("{prefix}{i:04}"), m)
        })
        .collect()
}

/// The marks a state records as confirmed.
pub fn confirmed_marks(st: &marksync::state::State) -> Marks {
    st.groups
        .iter()
        .map(|(g, accounts)| {
            let accounts = accounts
                .iter()
                .map(|(a, c)| (a.as_str().into(), c.iter().map(|(m, _)| m.get()).collect()))
                .collect();
            (g.as_str().into(), accounts)
        })
        .collect()
}

/// The groups of every part together (a later part's member replaces an earlier one's).
pub fn union(parts: &[&Marks]) -> Marks {
    let mut out = Marks::new();
    for p in parts {
        for (g, m) in *p {
            out.entry(g.clone()).or_default().extend(m.clone());
        }
    }
    out
}

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

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let what = format!("process {} to exit", self.pid());
        poll(&what, limit, || self.exited())
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
                "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: emu.key\ndesired: .\nstate: emu.json\n"
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

/// A desired file declaring `groups` (`groups: {}` when empty).
pub fn yaml(groups: &Marks) -> String {
    let mut s = String::from("groups:");
    if groups.is_empty() {
        s.push_str(" {}\n");
        return s;
    }
    s.push('\n');
    for (g, members) in groups {
        s.push_str(&format!("  \"{g}\":\n    members:\n"));
        if members.is_empty() {
            s.truncate(s.len() - "members:\n".len());
            s.push_str("members: {}\n");
            continue;
        }
        for (a, m) in members {
            let m: Vec<String> = m.iter().map(u32::to_string).collect();
            s.push_str(&format!("      {a}: [{}]\n", m.join(", ")));
        }
    }
    s
}

/// Writes `content` to `path` atomically (temporary file, rename), as editors and `git` do, so
/// a process reading it never sees half a file.
pub fn write_atomic(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One mark of one member: (group, account, mark).
pub type Triple = (String, String, u32);

/// What differs between `live` and `want`: `(stray, missing)`.
pub fn diff(live: &Marks, want: &Marks) -> (Vec<Triple>, Vec<Triple>) {
    let triples = |m: &Marks| -> std::collections::BTreeSet<Triple> {
        m.iter()
            .flat_map(|(g, accounts)| {
                accounts.iter().flat_map(move |(a, marks)| {
                    marks.iter().map(move |k| (g.clone(), a.clone(), *k))
                })
            })
            .collect()
    };
    let (l, w) = (triples(live), triples(want));
    (
        l.difference(&w).cloned().collect(),
        w.difference(&l).cloned().collect(),
    )
}
