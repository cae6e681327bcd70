//! `marksync run`'s HTTP listener under a descriptor flood, as a real process with a soft and
//! hard `RLIMIT_NOFILE` of 64 (set in the child before exec), against the in-process emulator.
//!
//! Before the listener was bounded, idle connections took every descriptor: `/healthz` hung and
//! a desired-file edit was read as "Too many open files". These tests open far more idle
//! connections than the daemon may hold and check that `/healthz` still answers at once, that an
//! edit is still applied, and that the idle connections are closed. The flood tests run the
//! daemon's listener in this process against a flood from other loopback addresses
//! (`tests/common/flood.rs`) and count what a real client on `127.0.0.1` got answered.
//!
//! Every wait is bounded; everything stays on loopback.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::daemon::Daemon;
use common::{http, poll};

use marksync::emulator::Emulator;

const GROUP: &str = "@TGS#LISTENER";
/// The daemon's descriptor limit, soft and hard.
const NOFILE: u64 = 64;
/// Idle connections opened at once: several times what the daemon may hold (64 / 4 = 16).
const FLOOD: usize = 300;
const WAIT: Duration = Duration::from_secs(15);

/// A one-shot HTTP/1.0 GET: `(status, body)`.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path, None)
}

/// Opens `n` connections that never send anything.
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect"))
        .collect()
}

/// Starts `marksync run` with `RLIMIT_NOFILE` at [`NOFILE`] (killed on drop) and waits until it
/// is ready; returns it with its listener's address.
fn start(dir: &Path, endpoint: &str) -> (Daemon, SocketAddr) {
    common::daemon::write_secret(dir);
    let config = common::daemon::config_text(&common::daemon::config(endpoint));
    std::fs::write(dir.join("marksync.yaml"), config).unwrap();
    let mut d = Daemon::spawn(&dir.join("marksync.yaml"), dir.join("daemon.log"), |cmd| {
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
    });
    d.wait_ready();
    let addr = d.addr().expect("the daemon's listener");
    (d, addr)
}

/// The soft descriptor limit the process `pid` runs with, from `/proc/PID/limits`.
fn nofile(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap()
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
    let rt = common::runtime();
    let emu: Emulator = rt
        .block_on(Emulator::start(common::demo_emulator_config()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("marks")).unwrap();
    let file = dir.path().join("marks/listener.yaml");
    std::fs::write(&file, desired(&[("u1", 1001)])).unwrap();
    let (d, addr) = start(dir.path(), &emu.base_url());
    assert_eq!(nofile(d.proc.pid()), NOFILE);
    assert_eq!(emu.marks_of(GROUP).get("u1"), Some(&vec![1001]));

    // Several times more idle connections than the daemon has descriptors.
    let opened = Instant::now();
    let mut idle = flood(addr, FLOOD);
    std::thread::sleep(Duration::from_millis(200));

    // /healthz answers, at once, every time.
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = get(addr, "/healthz").expect("GET /healthz");
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/healthz took {:?} under the flood",
            t.elapsed()
        );
    }

    // A desired-file edit made during a second flood is applied: descriptors stayed in reserve.
    idle.extend(flood(addr, FLOOD));
    std::fs::write(&file, desired(&[("u1", 1001), ("u2", 1002)])).unwrap();
    poll("the edit to reach the emulator", WAIT, || {
        (emu.marks_of(GROUP).get("u2") == Some(&vec![1002])).then_some(())
    });
    assert_eq!(get(addr, "/readyz").unwrap().0, 200);
    let log = d.proc.stderr();
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
    let (status, _) = get(addr, "/healthz").unwrap();
    assert_eq!(status, 200);
    drop(d);
    let _ = rt.block_on(emu.shutdown());
}

/// 1,000 hostile connections a second from `127.0.0.2`, half trickling a callback body, half
/// idle, while a real client on `127.0.0.1` sends callbacks and probes on new connections and
/// `/healthz` on a kept-alive one. Before the listener capped each address, reserved room for
/// probes and evicted connections that never completed a request first, about a quarter of the
/// callbacks and probes and a sixth of the kept-alive requests were answered (the others'
/// connections were closed: the flood's trickling callbacks held every place, its idle
/// connections pushed the kept-alive one out). `benches/listener_flood.rs` runs it longer.
#[test]
fn a_connection_flood_from_another_address_leaves_the_real_client_served() {
    let report = common::flood::run(common::flood::Flood {
        rate: 1000,
        sources: 1,
        duration: Duration::from_secs(4),
        warmup: Duration::from_millis(700),
        every: Duration::from_millis(20),
    });
    println!("{report}");
    assert!(
        report.hostile >= 2000,
        "the flood was too weak to show anything:\n{report}"
    );
    for (what, tally) in [
        ("callbacks", report.callbacks),
        ("probes", report.probes),
        ("kept-alive requests", report.kept_alive),
    ] {
        assert!(tally.sent >= 50, "too few {what} sent:\n{report}");
        assert!(
            tally.share() >= 0.99,
            "{what}: {tally} under the flood:\n{report}"
        );
    }
}

/// The same flood from eight addresses (`127.0.0.2` to `127.0.0.9`), which together may hold
/// twice the listener's places: the per-address cap no longer keeps room on its own. The real
/// client is still served: a new connection never replaces one of an address holding fewer
/// than its own, idle connections that never completed a request are evicted first, trickling
/// callbacks cannot fill the places reserved for probes, and half of those take the request of
/// an address with none in progress. Before: a quarter of the callbacks and probes and a sixth
/// of the kept-alive requests answered; with the reserve for probes alone, a fifth of the
/// callbacks (the rest got a 503).
#[test]
fn a_flood_from_many_addresses_still_leaves_the_real_client_served() {
    let report = common::flood::run(common::flood::Flood {
        rate: 1000,
        sources: 8,
        duration: Duration::from_secs(4),
        warmup: Duration::from_millis(700),
        every: Duration::from_millis(20),
    });
    println!("{report}");
    assert!(
        report.hostile >= 2000,
        "the flood was too weak to show anything:\n{report}"
    );
    for (what, tally) in [
        ("callbacks", report.callbacks),
        ("probes", report.probes),
        ("kept-alive requests", report.kept_alive),
    ] {
        assert!(tally.sent >= 50, "too few {what} sent:\n{report}");
        assert!(
            tally.share() >= 0.99,
            "{what}: {tally} under the flood:\n{report}"
        );
    }
}
