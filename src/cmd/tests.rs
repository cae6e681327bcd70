//! Unit tests of `cmd`: the approval decision and reader, and the signal-and-grace wait.

use super::*;

// tokio's paused clock: the durations are exact and nothing waits for real.

/// Work that takes `ms` and says so.
async fn work(ms: u64) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "done"
}

const GRACE: Duration = Duration::from_millis(300);

/// A signal source that sends `signal` after `ms`, then stays open.
fn signal_after(ms: u64, signal: Interrupt) -> watch::Receiver<Option<Interrupt>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let _ = tx.send(Some(signal));
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    rx
}

#[test]
fn only_a_person_at_a_terminal_is_asked() {
    assert!(needs_approval(true, true, false));
    assert!(!needs_approval(true, true, true), "--auto-approve");
    assert!(!needs_approval(false, true, false), "stdin piped (CI)");
    assert!(!needs_approval(true, false, false), "stdout piped");
    assert!(!needs_approval(false, false, false), "systemd");
}

#[test]
fn only_yes_approves() {
    let ask = |input: &str| {
        let mut out = Vec::new();
        let ok = read_approval(&mut std::io::Cursor::new(input), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(APPROVAL_PROMPT), "{out}");
        ok
    };
    assert!(ask("yes\n"));
    assert!(ask("  yes  \n"));
    for no in ["", "y\n", "Yes\n", "no\n", "yes please\n", "\n"] {
        assert!(!ask(no), "{no:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn work_without_a_signal_runs_to_its_end() {
    let (_tx, mut rx) = watch::channel(None);
    let stop = AtomicBool::new(false);
    let r = until_interrupted(work(50), &mut rx, &stop, GRACE, |_| panic!("no signal")).await;
    assert_eq!(r, Some("done"));
    assert!(!stop.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_signal_sets_stop_and_the_work_in_flight_finishes_within_the_grace() {
    let mut rx = signal_after(20, Interrupt::Term);
    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let r = until_interrupted(work(150), &mut rx, &stop, GRACE, |s| seen.push(s)).await;
    assert_eq!(r, Some("done"), "finished within the grace");
    assert!(stop.load(Ordering::SeqCst), "no new calls after the signal");
    assert_eq!(seen, [Interrupt::Term]);
}

#[tokio::test(start_paused = true)]
async fn work_still_running_when_the_grace_runs_out_is_cut() {
    let mut rx = signal_after(20, Interrupt::Int);
    let stop = AtomicBool::new(false);
    let started = tokio::time::Instant::now();
    let r = until_interrupted(work(60_000), &mut rx, &stop, GRACE, |_| {}).await;
    assert_eq!(r, None);
    let took = started.elapsed();
    assert_eq!(
        took,
        Duration::from_millis(20) + GRACE,
        "cut exactly at the grace"
    );
}

#[tokio::test(start_paused = true)]
async fn no_signal_source_means_waiting_for_the_work() {
    let (tx, mut rx) = watch::channel(None);
    drop(tx);
    let stop = AtomicBool::new(false);
    let r = until_interrupted(work(50), &mut rx, &stop, GRACE, |_| panic!("no signal")).await;
    assert_eq!(r, Some("done"));
}

#[test]
fn the_progress_rate_is_rounded() {
    assert_eq!(rate_text(68.1048), "68/s");
    assert_eq!(rate_text(199.6), "200/s");
    assert_eq!(rate_text(0.0), "0/s");
}
