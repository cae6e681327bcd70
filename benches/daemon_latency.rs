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
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
use common::daemon::Daemon;
use common::{APP, unix_now_ms};

use marksync::emulator::Emulator;

const DEBOUNCE_MS: u64 = 300;

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    common::poll(what, limit, || f().then_some(()));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes the config and starts the daemon (its listener on a port the OS chooses, read from
/// its log); waits until `/readyz` is 200.
fn start_daemon(dir: &Path, endpoint: &str) -> (Daemon, Duration) {
    common::daemon::write_secret(dir);
    let mut config = common::daemon::config(endpoint);
    config.insert("debounce", format!("{DEBOUNCE_MS}ms"));
    config.remove("retry_pending_every");
    config.remove("reassert_every");
    std::fs::write(
        dir.join("marksync.yaml"),
        common::daemon::config_text(&config),
    )
    .unwrap();
    let t = Instant::now();
    let d = Daemon::spawn(&dir.join("marksync.yaml"), dir.join("daemon.log"), |_| {});
    wait_until("daemon ready", Duration::from_secs(300), || {
        if let Some(a) = d.addr() {
            return common::http(a, "GET", "/readyz", None).is_ok_and(|r| r.0 == 200);
        }
        false
    });
    (d, t.elapsed())
}

/// Writes `file` and returns the milliseconds until the emulator logged a new call; then
/// waits until the daemon has recorded the reconcile, so the next round starts from rest.
fn reaction(emu: &Emulator, daemon: &Daemon, file: &Path, content: &str) -> f64 {
    let reconciles = daemon.reconciles("files");
    let before = emu.stats(true).log.map_or(0, |l| l.len());
    let t0 = unix_now_ms();
    std::fs::write(file, content).unwrap();
    let mut first = None;
    wait_until("a call after the change", Duration::from_secs(30), || {
        let log = emu.stats(true).log.unwrap_or_default();
        first = log.get(before).map(|c| c.at_ms);
        first.is_some()
    });
    wait_until("the reconcile to finish", Duration::from_secs(30), || {
        daemon.reconciles("files") > reconciles
    });
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
    common::proc_status_kib(&pid.to_string(), "VmRSS")
}

fn main() {
    let rt = common::runtime();
    let emu = rt
        .block_on(Emulator::start(common::demo_emulator_config()))
        .unwrap();
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
        samples.push(reaction(
            &emu,
            &daemon,
            &marks.join("classroom.yaml"),
            &content,
        ));
    }
    let a = median(samples.clone());
    println!(
        "(a) example, debounce {DEBOUNCE_MS} ms: file saved -> first call: median {a:.0} ms \
         (min {:.0}, max {:.0}; target <= {} ms)",
        samples.iter().copied().fold(f64::MAX, f64::min),
        samples.iter().copied().fold(0.0, f64::max),
        DEBOUNCE_MS + 50
    );

    let pid = daemon.proc.pid();
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
    let confirmed = unix_now_ms() / 1000;
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
            &daemon,
            &file,
            &format!("{base}      newcomer{i}: [1000]\n"),
        ));
    }
    let c = median(samples.clone());
    println!(
        "(c) 1,000 files, 1,000,000 pairs (startup to ready {:.1} s, RSS {} MiB): file saved -> \
         first call: median {c:.0} ms (min {:.0}, max {:.0}; target <= {} ms)",
        startup.as_secs_f64(),
        rss_kib(daemon.proc.pid()) / 1024,
        samples.iter().copied().fold(f64::MAX, f64::min),
        samples.iter().copied().fold(0.0, f64::max),
        DEBOUNCE_MS + 100
    );
    drop(daemon);
    let _ = rt.block_on(emu.shutdown());
}
