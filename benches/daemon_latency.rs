//! How quickly `marksync run` reacts, and what it costs idle. `cargo bench --bench daemon_latency`
//!
//! (a) file saved -> first call received by the emulator, example-sized desired files, debounce
//!     300 ms (median of 10; target: debounce + 50 ms);
//! (b) idle CPU (utime + stime from /proc/PID/stat over 10 s) and RSS of that daemon;
//! (c) the same reaction with 1,000 desired files holding 1,000,000 pairs (a state file that
//!     already matches is written first, so startup sends nothing; the change adds one member,
//!     which the emulator's demo settings accept; target: debounce + 100 ms).
//!
//! The daemon is the real binary; the emulator runs in this process.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use marksync::emulator::{Emulator, EmulatorConfig};

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const ADMIN: &str = "administrator";
const BIN: &str = env!("CARGO_BIN_EXE_marksync");
const DEBOUNCE_MS: u64 = 300;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes the config and starts the daemon; waits until `/readyz` is 200.
fn start_daemon(dir: &Path, endpoint: &str) -> (Killed, Duration) {
    let port = free_port();
    std::fs::write(dir.join("secret.key"), KEY).unwrap();
    std::fs::write(
        dir.join("marksync.yaml"),
        format!(
            "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: secret.key\nendpoint: {endpoint}\n\
             desired: marks/\nstate: state/marksync.json\ndebounce: {DEBOUNCE_MS}ms\n\
             http: {{ listen: 127.0.0.1:{port} }}\n"
        ),
    )
    .unwrap();
    let t = Instant::now();
    let child = Command::new(BIN)
        .arg("-c")
        .arg(dir.join("marksync.yaml"))
        .args(["-q", "run"])
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("daemon ready", Duration::from_secs(300), || {
        status(addr, "/readyz") == 200
    });
    (Killed(child), t.elapsed())
}

/// Writes `file` and returns the milliseconds until the emulator logged a new call.
fn reaction(emu: &Emulator, file: &Path, content: &str) -> f64 {
    let before = emu.stats(true).log.map_or(0, |l| l.len());
    let t0 = now_ms();
    std::fs::write(file, content).unwrap();
    let mut first = None;
    wait_until("a call after the change", Duration::from_secs(30), || {
        let log = emu.stats(true).log.unwrap_or_default();
        first = log.get(before).map(|c| c.at_ms);
        first.is_some()
    });
    // Let the reconcile finish before the next round.
    std::thread::sleep(Duration::from_millis(200));
    (first.unwrap() - t0) as f64
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line: utime and stime; `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu = rt.block_on(Emulator::start(cfg)).unwrap();
    let endpoint = emu.base_url();

    // (a) and (b): the example.
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/marks");
    for e in std::fs::read_dir(&examples).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), marks.join(e.file_name())).unwrap();
    }
    let (daemon, _) = start_daemon(dir.path(), &endpoint);
    let classroom = std::fs::read_to_string(marks.join("classroom.yaml")).unwrap();
    let mut samples = Vec::new();
    for i in 0..10 {
        let content = classroom.replacen(
            "    members:\n",
            &format!("    members:\n      late{i}: [1003]\n"),
            1,
        );
        samples.push(reaction(&emu, &marks.join("classroom.yaml"), &content));
    }
    let a = median(samples.clone());
    println!(
        "(a) example, debounce {DEBOUNCE_MS} ms: file saved -> first call: median {a:.0} ms \
         (min {:.0}, max {:.0}; target <= {} ms)",
        samples.iter().copied().fold(f64::MAX, f64::min),
        samples.iter().copied().fold(0.0, f64::max),
        DEBOUNCE_MS + 50
    );

    let pid = daemon.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let ticks0 = proc_cpu_ticks(pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let ticks = proc_cpu_ticks(pid) - ticks0;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_ms = ticks as f64 * 1000.0 / hz;
    println!(
        "(b) idle over {:.1} s: {cpu_ms:.0} ms CPU ({:.2}%), RSS {} KiB",
        t.elapsed().as_secs_f64(),
        cpu_ms / t.elapsed().as_secs_f64() / 10.0,
        rss_kib(pid)
    );
    drop(daemon);

    // (c): 1,000 files, 1,000,000 pairs, a state that already matches.
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let confirmed = now_ms() / 1000;
    let mut state = format!(r#"{{"format_version":1,"sdkappid":{APP},"serial":1,"groups":{{"#);
    for f in 0..1000 {
        let group = format!("@TGS#BENCH{f:04}");
        let mut yaml = format!("groups:\n  \"{group}\":\n    members:\n");
        if f > 0 {
            state.push(',');
        }
        write!(state, r#""{group}":{{"#).unwrap();
        for m in 0..1000 {
            let mark = 1000 + m % 10;
            writeln!(yaml, "      u{m:04}: [{mark}]").unwrap();
            if m > 0 {
                state.push(',');
            }
            write!(state, r#""u{m:04}":{{"{mark}":{confirmed}}}"#).unwrap();
        }
        state.push('}');
        std::fs::write(marks.join(format!("g{f:04}.yaml")), yaml).unwrap();
    }
    state.push_str(r#"},"intents":{}}"#);
    std::fs::write(dir.path().join("state/marksync.json"), state).unwrap();
    let calls_before = emu.call_count();
    let (daemon, startup) = start_daemon(dir.path(), &endpoint);
    assert_eq!(emu.call_count(), calls_before, "startup sent nothing");
    let file = marks.join("g0500.yaml");
    let base = std::fs::read_to_string(&file).unwrap();
    let mut samples = Vec::new();
    for i in 0..5 {
        samples.push(reaction(
            &emu,
            &file,
            &format!("{base}      newcomer{i}: [1000]\n"),
        ));
    }
    let c = median(samples.clone());
    println!(
        "(c) 1,000 files, 1,000,000 pairs (startup to ready {:.1} s, RSS {} MiB): file saved -> \
         first call: median {c:.0} ms (min {:.0}, max {:.0}; target <= {} ms)",
        startup.as_secs_f64(),
        rss_kib(daemon.0.id()) / 1024,
        samples.iter().copied().fold(f64::MAX, f64::min),
        samples.iter().copied().fold(0.0, f64::max),
        DEBOUNCE_MS + 100
    );
    drop(daemon);
    let _ = rt.block_on(emu.shutdown());
}
