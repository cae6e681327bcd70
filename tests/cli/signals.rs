//! Signals on `apply` and during a refresh (real process, real signals, a standalone emulator
//! with injected latency).

use super::*;

/// `n` groups of one member with two marks: one call per group.
fn groups(n: usize) -> Marks {
    common::groups_of_one("@TGS#s", 0..n)
}

/// A directory with a config pointing at `emu` (calls spaced by `rate` per second).
fn signal_env(emu: &StandaloneEmulator, rate: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.key"), common::KEY).unwrap();
    std::fs::write(
        dir.path().join("marksync.yaml"),
        format!(
            "sdkappid: {APP}\nidentifier: administrator\nsecret_key_file: secret.key\n\
             endpoint: {}\ndesired: marks/\nstate: state.json\nmax_calls_per_second: {rate}\n",
            emu.endpoint()
        ),
    )
    .unwrap();
    dir
}

fn desire(dir: &Path, want: &Marks) {
    common::write_atomic(&dir.join("marks/all.yaml"), &common::yaml(want));
}

fn spawn_apply(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    Proc::spawn(
        common::cli::marksync_command()
            .current_dir(dir)
            .args(["apply"])
            .args(extra),
        dir.join(format!("{name}.log")),
    )
}

/// The state's confirmed marks, read through the library (so the file must parse).
fn confirmed(dir: &Path) -> (Marks, usize) {
    let st = marksync::state::load(&dir.join("state.json"), APP).expect("the state parses");
    let out = common::confirmed_marks(&st);
    let intents = st.intents.values().map(|a| a.len()).sum();
    (out, intents)
}

/// Runs `apply` with a slow emulator, sends `signal` once a few calls are in, and checks the
/// daemon-like stop: exit `code`, no new calls, the state equal to what the service holds.
fn interrupted_apply_saves_what_the_service_holds(signal: &str, code: i32, clear: bool) {
    let emu = StandaloneEmulator::start();
    let dir = signal_env(&emu, 10);
    let all = groups(30);
    desire(dir.path(), &all);
    if clear {
        // Everything set first (fast), then a slow apply clearing it all.
        let first = Test::run_in(dir.path(), &["apply"]);
        assert_eq!(first.status, 0, "{first:#?}");
        desire(dir.path(), &Marks::new());
    }
    emu.inject(serde_json::json!({"kind": "latency", "ms": 1500}));
    let before = emu.calls();
    let extra: &[&str] = if clear { &["--allow-mass-clear"] } else { &[] };
    let mut apply = spawn_apply(dir.path(), "apply", extra);
    common::poll("three calls to arrive", Duration::from_secs(20), || {
        (emu.calls() >= before + 3).then_some(())
    });
    apply.signal(signal);
    let status = apply.wait_exit(Duration::from_secs(20));
    let sent = emu.calls() - before;
    assert_eq!(status.code(), Some(code), "{}", apply.stderr());
    assert!(
        sent < 30,
        "no new calls after the signal: {sent} of 30 sent"
    );
    let stderr = apply.stderr();
    assert!(
        stderr.contains(&format!("Apply interrupted by SIG{signal}"))
            && stderr.contains("state.json"),
        "says it was interrupted and what was saved: {stderr}"
    );
    let stdout = apply.stdout();
    assert!(
        stdout.contains("not sent, the run was interrupted") && !stdout.contains("fatal error"),
        "the calls a signal kept from starting say so, not \"fatal error\": {stdout}"
    );
    assert_eq!(emu.settle(Duration::from_secs(5)), 0, "calls in flight");
    let (state, intents) = confirmed(dir.path());
    assert_eq!(
        state,
        emu.marks(),
        "the state records exactly what the service holds"
    );
    assert_eq!(intents, 0, "the calls in flight finished and were recorded");

    emu.clear_faults();
    let again = Test::run_in(dir.path(), &["apply", "--allow-mass-clear"]);
    assert_eq!(again.status, 0, "{again:#?}");
    let want = if clear { Marks::new() } else { all };
    assert_eq!(emu.marks(), want);
}

#[test]
fn sigint_on_apply_finishes_calls_in_flight_saves_and_exits_130() {
    interrupted_apply_saves_what_the_service_holds("INT", 130, false);
}

#[test]
fn sigterm_on_apply_mid_clear_saves_the_clears_and_exits_143() {
    interrupted_apply_saves_what_the_service_holds("TERM", 143, true);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_next_apply_settles_the_calls_in_flight() {
    let emu = StandaloneEmulator::start();
    let dir = signal_env(&emu, 10);
    let all = groups(10);
    desire(dir.path(), &all);
    emu.inject(serde_json::json!({"kind": "latency", "ms": 4000}));
    let mut apply = spawn_apply(dir.path(), "apply", &[]);
    common::poll("a call to arrive", Duration::from_secs(20), || {
        (emu.calls() >= 1).then_some(())
    });
    apply.signal("INT");
    common::poll(
        "the first signal to be acknowledged",
        Duration::from_secs(10),
        || {
            apply
                .stderr()
                .contains("sending no new calls")
                .then_some(())
        },
    );
    let t = std::time::Instant::now();
    apply.signal("INT");
    let status = apply.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", apply.stderr());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the second Ctrl-C does not wait for the calls in flight ({:?})",
        t.elapsed()
    );
    let (_, intents) = confirmed(dir.path());
    assert!(intents > 0, "the calls in flight are recorded as intents");

    emu.settle(Duration::from_secs(10));
    emu.clear_faults();
    let again = Test::run_in(dir.path(), &["apply"]);
    assert_eq!(again.status, 0, "{again:#?}");
    assert_eq!(emu.marks(), all);
    let (state, intents) = confirmed(dir.path());
    assert_eq!((state, intents), (all, 0));
}

/// Runs `args` with a slow `get_members` (3 s per page, so the refresh's reads take about 12 s),
/// sends `signal` once the first read is in, and checks the stop: exit `code` within a couple of
/// seconds, no write call, and the state file byte for byte as it was.
fn a_signal_during_the_refresh_stops_at_once(args: &[&str], signal: &str, code: i32) {
    let emu = StandaloneEmulator::start();
    let dir = signal_env(&emu, 200);
    desire(dir.path(), &groups(30));
    let first = Test::run_in(dir.path(), &["apply"]);
    assert_eq!(first.status, 0, "{first:#?}");
    let state_before = std::fs::read(dir.path().join("state.json")).unwrap();
    emu.inject(serde_json::json!({"kind": "latency", "ms": 3000, "path": "get_members"}));
    let before = emu.calls();
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_marksync"))
            .current_dir(dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("MARKSYNC_CONFIG")
            .env_remove("MARKSYNC_LOG"),
        dir.path().join("refresh.log"),
    );
    common::poll("a read to arrive", Duration::from_secs(20), || {
        (emu.calls() > before).then_some(())
    });
    let t = std::time::Instant::now();
    proc.signal(signal);
    let status = proc.wait_exit(Duration::from_secs(40));
    let took = t.elapsed();
    eprintln!("{args:?}: exit {status} {took:?} after SIG{signal}");
    assert_eq!(status.code(), Some(code), "{args:?}: {}", proc.stderr());
    assert!(
        took < Duration::from_secs(2),
        "{args:?} stops within a second or so of SIG{signal}, not after the reads ({took:?})"
    );
    assert!(
        proc.stderr().contains(&format!("SIG{signal}")),
        "says what stopped it: {}",
        proc.stderr()
    );
    assert_eq!(
        std::fs::read(dir.path().join("state.json")).unwrap(),
        state_before,
        "{args:?}: the state is unchanged"
    );
    let stats = emu.control("GET", "/emulator/stats", None);
    let writes = stats["calls_by_path"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.contains("modify_user_info"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(
        writes, 30,
        "{args:?}: no write call after the first apply's 30"
    );
}

#[test]
fn sigterm_during_apply_refresh_reads_exits_143_at_once_with_the_state_unchanged() {
    a_signal_during_the_refresh_stops_at_once(&["apply", "--refresh"], "TERM", 143);
}

#[test]
fn sigint_during_plan_refresh_reads_exits_130_at_once() {
    a_signal_during_the_refresh_stops_at_once(&["plan", "--refresh"], "INT", 130);
}

#[test]
fn sigterm_during_import_reads_exits_143_at_once_with_the_state_unchanged() {
    a_signal_during_the_refresh_stops_at_once(&["import"], "TERM", 143);
}
