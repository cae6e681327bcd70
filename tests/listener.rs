//! `marksync run`'s HTTP listener under a descriptor flood, as a real process with a soft and
//! hard `RLIMIT_NOFILE` of 64 (set in the child before exec), against the in-process emulator.
//!
//! Before the listener was bounded, idle connections took every descriptor: `/healthz` hung and
//! a desired-file edit was read as "Too many open files". These tests open far more idle
//! connections than the daemon may hold and check that `/healthz` still answers at once, that an
//! edit is still applied, and that the idle connections are closed.
//!
//! Every wait is bounded; everything stays on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use marksync::emulator::{Emulator, EmulatorConfig};

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const ADMIN: &str = "administrator";
const BIN: &str = env!("CARGO_BIN_EXE_marksync");
const GROUP: &str = "@TGS#LISTENER";
/// The daemon's descriptor limit, soft and hard.
const NOFILE: u64 = 64;
/// Idle connections opened at once: several times what the daemon may hold (64 / 4 = 16).
const FLOOD: usize = 300;
const WAIT: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-shot HTTP/1.0 GET: `(status, body)`.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Opens `n` connections that never send anything.
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect"))
        .collect()
}

/// `marksync run` with `RLIMIT_NOFILE` at [`NOFILE`]; killed on drop.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
    addr: SocketAddr,
}

impl Daemon {
    fn start(dir: &Path, endpoint: &str) -> Daemon {
        let port = free_port();
        std::fs::write(dir.join("secret.key"), format!("{KEY}\n")).unwrap();
        std::fs::write(
            dir.join("marksync.yaml"),
            format!(
                "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: secret.key\n\
                 endpoint: {endpoint}\ndesired: marks/\nstate: state/marksync.json\n\
                 debounce: 100ms\nretry_pending_every: 1h\nreassert_every: 1h\n\
                 http: {{ listen: 127.0.0.1:{port} }}\n"
            ),
        )
        .unwrap();
        let log = dir.join("daemon.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(dir.join("marksync.yaml"))
            .args(["--log-format", "text", "run"])
            .env_remove("NOTIFY_SOCKET")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child,
            log,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        poll("GET /readyz to answer 200", WAIT, || {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", d.stderr());
            }
            (get(d.addr, "/readyz").map(|r| r.0).unwrap_or(0) == 200).then_some(())
        });
        d
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The soft descriptor limit the daemon runs with, from `/proc/PID/limits`.
    fn nofile(&self) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon stderr ---\n{}", self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn desired(members: &[(&str, u32)]) -> String {
    let mut y = format!("groups:\n  \"{GROUP}\":\n    members:\n");
    for (m, mark) in members {
        y.push_str(&format!("      {m}: [{mark}]\n"));
    }
    y
}

#[test]
fn an_idle_connection_flood_neither_hangs_healthz_nor_starves_the_daemon() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu: Emulator = rt.block_on(Emulator::start(cfg)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("marks")).unwrap();
    let file = dir.path().join("marks/listener.yaml");
    std::fs::write(&file, desired(&[("u1", 1001)])).unwrap();
    let d = Daemon::start(dir.path(), &emu.base_url());
    assert_eq!(d.nofile(), NOFILE);
    assert_eq!(emu.marks_of(GROUP).get("u1"), Some(&vec![1001]));

    // Several times more idle connections than the daemon has descriptors.
    let opened = Instant::now();
    let mut idle = flood(d.addr, FLOOD);
    std::thread::sleep(Duration::from_millis(200));

    // /healthz answers, at once, every time.
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = get(d.addr, "/healthz").expect("GET /healthz");
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/healthz took {:?} under the flood",
            t.elapsed()
        );
    }

    // A desired-file edit made during a second flood is applied: descriptors stayed in reserve.
    idle.extend(flood(d.addr, FLOOD));
    std::fs::write(&file, desired(&[("u1", 1001), ("u2", 1002)])).unwrap();
    poll("the edit to reach the emulator", WAIT, || {
        (emu.marks_of(GROUP).get("u2") == Some(&vec![1002])).then_some(())
    });
    assert_eq!(get(d.addr, "/readyz").unwrap().0, 200);
    let log = d.stderr();
    assert!(!log.contains("Too many open files"), "{log}");

    // Every idle connection is closed by the daemon: evicted, or after the 5 s header read
    // timeout (the second flood started later; allow for it and for a loaded machine).
    let bound = marksync::http::HEADER_READ_TIMEOUT + Duration::from_secs(10);
    for s in &mut idle {
        let left = bound
            .saturating_sub(opened.elapsed())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "an idle connection was still open {:?} after the flood",
                        opened.elapsed()
                    )
                }
                Err(_) => break, // reset: closed too
            }
        }
    }
    drop(idle);
    let (status, _) = get(d.addr, "/healthz").unwrap();
    assert_eq!(status, 200);
    drop(d);
    let _ = rt.block_on(emu.shutdown());
}
