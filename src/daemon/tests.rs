//! The daemon in this process, against the emulator in this process: what needs the whole loop
//! (files, the client, the state) but no signals or systemd (those stay in `tests/daemon/`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Input, RunOptions, run};
use crate::clock::{Clock, SystemClock};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::metrics::Metrics;
use crate::model::{Account, GroupId, Mark, UnixTime};
use crate::state::{self, State};

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const ADMIN: &str = "administrator";

/// A temp directory with a config (debounce 100 ms, timers at an hour) and `marks/`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(endpoint: &str) -> Setup {
        Setup::with(endpoint, "")
    }

    /// A setup whose config also holds `extra` (YAML lines, overriding the defaults above).
    fn with(endpoint: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.key"), format!("{KEY}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("marks")).unwrap();
        let config = format!(
            "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: secret.key\nendpoint: {endpoint}\n\
             desired: marks/\nstate: state/marksync.json\ndebounce: 100ms\n\
             retry_pending_every: 1h\nreassert_every: 1h\n"
        );
        let config = config
            .lines()
            .filter(|l| {
                let key = l.split(':').next().unwrap_or_default();
                !extra.lines().any(|e| e.starts_with(&format!("{key}:")))
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + extra;
        std::fs::write(dir.path().join("marksync.yaml"), config).unwrap();
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts the daemon on the system clock; returns its input channel and its task.
    fn start(&self) -> (mpsc::Sender<Input>, Daemon) {
        let (tx, task, _) = self.start_with(RunOptions::default(), Arc::new(SystemClock));
        (tx, task)
    }

    /// Starts the daemon with `opts` on `clock`; returns its input channel, its task and its
    /// metrics.
    fn start_with(
        &self,
        opts: RunOptions,
        clock: Arc<dyn Clock>,
    ) -> (mpsc::Sender<Input>, Daemon, Arc<Metrics>) {
        let (tx, rx) = mpsc::channel(64);
        let config = self.path("marksync.yaml");
        let sender = tx.clone();
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let task = tokio::spawn(async move { run(&config, opts, clock, m, sender, rx).await });
        (tx, task, metrics)
    }

    fn state_text(&self) -> String {
        std::fs::read_to_string(self.path("state/marksync.json")).unwrap_or_default()
    }
}

fn group_file(group: &str, account: &str) -> String {
    format!("groups:\n  \"{group}\":\n    members:\n      {account}: [1000]\n")
}

/// Waits (at most `limit`) until `cond` holds.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// The daemon's task.
type Daemon = tokio::task::JoinHandle<Result<u8, crate::error::Error>>;

async fn stop(tx: mpsc::Sender<Input>, task: Daemon) {
    tx.send(Input::Shutdown).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the daemon stops")
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_file_that_could_not_be_read_is_read_again_without_a_file_event() {
    let setup = Setup::new("embedded");
    // `a.yaml` points at a file that is not there yet (a rename in progress); it appears later
    // outside the watched directory, so no event under `marks/` says so.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("a.yaml");
    std::os::unix::fs::symlink(&target, setup.path("marks/a.yaml")).unwrap();
    let (tx, task) = setup.start();
    // The startup read comes right after the lock. (Should the file appear before that read,
    // this test passes without testing anything; it can never fail for that reason.)
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .path("state/marksync.json.lock")
            .exists())
        .await,
        "the daemon started"
    );
    tokio::task::yield_now().await;
    std::fs::write(&target, group_file("@TGS#io", "alice")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .state_text()
            .contains("@TGS#io"))
        .await,
        "the file was read again on its own and applied: {}",
        setup.state_text()
    );
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_fatal_code_no_call_is_sent_during_the_backoff() {
    // The emulator holds another key: every call is answered 70009 (bad signature), fatal.
    let mut cfg = EmulatorConfig::new(APP, OTHER_KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu = Emulator::start(cfg).await.unwrap();
    let setup = Setup::new(&emu.base_url());
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#f", "alice")).unwrap();
    let (tx, task) = setup.start();
    assert!(
        wait_until(Duration::from_secs(10), || emu.call_count() >= 1).await,
        "the startup reconcile called"
    );
    let after_startup = emu.call_count();
    // Triggers during the pause: none may send another badly signed call.
    tx.send(Input::Reassert).await.unwrap();
    tx.send(Input::RetryPending).await.unwrap();
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#f", "bob")).unwrap();
    let sent_more = wait_until(Duration::from_secs(2), || emu.call_count() > after_startup).await;
    assert!(
        !sent_more,
        "no call within the backoff: {} calls",
        emu.call_count()
    );
    // The operator fixes the key and reloads: the pause ends and the marks go out.
    std::fs::write(setup.path("secret.key"), format!("{OTHER_KEY}\n")).unwrap();
    tx.send(Input::Reload).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .state_text()
            .contains("@TGS#f"))
        .await,
        "applied after the reload: {}",
        setup.state_text()
    );
    stop(tx, task).await;
}

const T: UnixTime = 1_764_000_000;

/// Wall-clock seconds that move with tokio's clock (paused in these tests) from `base`, so the
/// daemon's `Clock` and its timers agree.
struct TokioClock {
    base: UnixTime,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> UnixTime {
        self.base + (tokio::time::Instant::now() - self.start).as_secs() as i64
    }
}

/// A state where bob holds mark 500 in `@TGS#r`, confirmed at `at`; the desired files want it.
fn with_mark_500(setup: &Setup, at: UnixTime) {
    let mut st = State::new(APP);
    let (g, bob) = (
        GroupId::new("@TGS#r").unwrap(),
        Account::new("bob").unwrap(),
    );
    st.confirm(&g, &bob, [Mark::ALWAYS_ONLINE], at);
    std::fs::create_dir_all(setup.path("state")).unwrap();
    state::save(&setup.path("state/marksync.json"), &mut st).unwrap();
    std::fs::write(
        setup.path("marks/r.yaml"),
        "groups:\n  \"@TGS#r\":\n    members:\n      bob: [500]\n",
    )
    .unwrap();
}

/// The value of one series in the metrics text (0 when absent).
fn series(metrics: &Metrics, name: &str) -> i64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Rounds run for `trigger`, whatever their outcome.
fn rounds(metrics: &Metrics, trigger: &str) -> i64 {
    let prefix = format!("marksync_reconciles_total{{trigger=\"{trigger}\",");
    metrics
        .encode()
        .lines()
        .filter_map(|l| {
            l.strip_prefix(&prefix)?
                .rsplit_once(' ')?
                .1
                .trim()
                .parse::<i64>()
                .ok()
        })
        .sum()
}

fn reconciles(metrics: &Metrics, trigger: &str) -> i64 {
    series(
        metrics,
        &format!("marksync_reconciles_total{{trigger=\"{trigger}\",outcome=\"no_changes\"}}"),
    )
}

/// Starts a dry-run daemon whose clock reads `T` at the returned paused-clock instant and moves
/// with tokio's paused time.
fn start_dry_run_on_paused_clock(
    setup: &Setup,
) -> (
    mpsc::Sender<Input>,
    Daemon,
    Arc<Metrics>,
    tokio::time::Instant,
) {
    let start = tokio::time::Instant::now();
    let clock = Arc::new(TokioClock { base: T, start });
    let opts = RunOptions {
        dry_run: true,
        ..RunOptions::default()
    };
    let (tx, task, metrics) = setup.start_with(opts, clock);
    (tx, task, metrics, start)
}

/// Sleeps on tokio's (paused) clock until `secs` after `start`.
async fn at(start: tokio::time::Instant, secs: u64) {
    tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn renewals_wake_the_daemon_exactly_when_due_then_retry_after_the_period() {
    // Reassert out of the way: its reconcile would renew a due mark itself.
    let setup = Setup::with("embedded", "renew_margin: 6h\nreassert_every: 7d\n");
    with_mark_500(&setup, T);
    let (tx, task, metrics, start) = start_dry_run_on_paused_clock(&setup);
    // Due 72 h - 6 h after the confirmation. Dry-run: it stays due, so it is tried again a
    // `retry_pending_every` (1 h) after each attempt, never in a tight loop.
    let due = 66 * 3600;
    at(start, due - 1).await;
    assert_eq!(reconciles(&metrics, "startup"), 1);
    assert_eq!(reconciles(&metrics, "renewal"), 0, "not before it is due");
    at(start, due + 1).await;
    assert_eq!(reconciles(&metrics, "renewal"), 1, "woken when due");
    at(start, due + 3599).await;
    assert_eq!(reconciles(&metrics, "renewal"), 1);
    at(start, due + 3601).await;
    assert_eq!(
        reconciles(&metrics, "renewal"),
        2,
        "retried after the period"
    );
    stop(tx, task).await;
}

#[tokio::test(start_paused = true)]
async fn reassert_runs_every_period_exactly() {
    let setup = Setup::with("embedded", "reassert_every: 2h\n");
    with_mark_500(&setup, T);
    let (tx, task, metrics, start) = start_dry_run_on_paused_clock(&setup);
    for (secs, want) in [(7_199, 0), (7_201, 1), (14_399, 1), (14_401, 2)] {
        at(start, secs).await;
        assert_eq!(reconciles(&metrics, "reassert"), want, "at {secs}s");
    }
    stop(tx, task).await;
}

#[tokio::test(start_paused = true)]
async fn a_mark_500_confirmed_in_the_future_shows_as_expiring_now() {
    // The clock was stepped back an hour after the confirmation.
    let setup = Setup::new("embedded");
    with_mark_500(&setup, T + 3_600);
    let (tx, task, metrics, start) = start_dry_run_on_paused_clock(&setup);
    at(start, 1).await;
    assert_eq!(reconciles(&metrics, "startup"), 1);
    let expiry = series(
        &metrics,
        "marksync_mark500_earliest_expiry_timestamp_seconds",
    );
    assert!(
        (T..=T + 1).contains(&expiry),
        "expiry {expiry}, not T + 73 h"
    );
    stop(tx, task).await;
}

/// Reconciles with `trigger`, whatever their outcome.
fn reconciles_any(metrics: &Metrics, trigger: &str) -> i64 {
    let prefix = format!("marksync_reconciles_total{{trigger=\"{trigger}\",");
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// An emulator (groups created on first use, members online) whose every call takes 1.5 s, so a
/// reconcile is still running when a test's triggers come.
async fn slow_emulator() -> Emulator {
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu = Emulator::start(cfg).await.unwrap();
    let latency = crate::emulator::Fault::always(crate::emulator::FaultKind::Latency { ms: 1_500 });
    emu.inject_fault(latency).unwrap();
    emu
}

// Real time: the paused clock jumps while a loopback request waits on the client's blocking
// work, so a test with calls in flight runs on the real clock, with bounded waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_during_a_reconcile_cause_exactly_one_more() {
    // Every call takes 1.5 s, so a reconcile is still running when the triggers come.
    let emu = slow_emulator().await;
    let setup = Setup::new(&emu.base_url());
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#c", "bob")).unwrap();
    let (tx, task, metrics) = setup.start_with(RunOptions::default(), Arc::new(SystemClock));
    let limit = Duration::from_secs(20);
    assert!(wait_until(limit, || reconciles_any(&metrics, "startup") == 1).await);
    let calls = emu.call_count();
    tx.send(Input::Reassert).await.unwrap();
    assert!(
        wait_until(limit, || emu.call_count() > calls).await,
        "the reassert call is in flight"
    );
    for _ in 0..3 {
        tx.send(Input::Reassert).await.unwrap();
    }
    tx.send(Input::RetryPending).await.unwrap();
    assert_eq!(
        reconciles_any(&metrics, "reassert"),
        0,
        "sent during the reconcile"
    );
    assert!(
        wait_until(limit, || reconciles_any(&metrics, "reassert") == 2).await,
        "one more reconcile"
    );
    let more = wait_until(Duration::from_secs(2), || {
        reconciles_any(&metrics, "reassert") > 2
    })
    .await;
    assert!(!more, "exactly one more, not four");
    assert_eq!(
        reconciles_any(&metrics, "retry_pending"),
        0,
        "nothing was pending"
    );
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_during_the_startup_reconcile_cause_one_more() {
    // The first call takes 1.5 s, so the startup reconcile is still running when the trigger
    // comes; it must run afterwards, not be dropped with the startup round.
    let emu = slow_emulator().await;
    let setup = Setup::new(&emu.base_url());
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#s", "bob")).unwrap();
    let (tx, task, metrics) = setup.start_with(RunOptions::default(), Arc::new(SystemClock));
    let limit = Duration::from_secs(20);
    assert!(
        wait_until(limit, || emu.call_count() > 0).await,
        "the startup call is in flight"
    );
    tx.send(Input::Reassert).await.unwrap();
    assert_eq!(
        reconciles_any(&metrics, "startup"),
        0,
        "sent during startup"
    );
    assert!(
        wait_until(limit, || reconciles_any(&metrics, "reassert") == 1).await,
        "the trigger that came during startup runs once it is over"
    );
    stop(tx, task).await;
}

/// The system clock shifted by an adjustable number of seconds.
struct ShiftedClock(std::sync::atomic::AtomicI64);

impl Clock for ShiftedClock {
    fn now(&self) -> UnixTime {
        SystemClock.now() + self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_every_heals_a_member_who_went_offline_and_came_back_without_callbacks() {
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu = Emulator::start(cfg).await.unwrap();
    // No `http`: no callback can tell the daemon anything. Refresh every second (allowed
    // against the local emulator only).
    let setup = Setup::with(&emu.base_url(), "refresh_every: 1s\n");
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#heal", "alice")).unwrap();
    // The startup reconcile confirms the mark "two minutes ago": old enough for a refresh to
    // judge (a mark confirmed within the listing's 40 s staleness is not checked).
    let clock = Arc::new(ShiftedClock(std::sync::atomic::AtomicI64::new(-120)));
    let (tx, task, metrics) = setup.start_with(RunOptions::default(), clock.clone());
    let has_mark = |emu: &Emulator| {
        emu.marks_of("@TGS#heal")
            .get("alice")
            .is_some_and(|m| m.contains(&1000))
    };
    assert!(
        wait_until(Duration::from_secs(10), || has_mark(&emu)).await,
        "the startup reconcile set the mark"
    );
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .state_text()
            .contains("alice"))
        .await,
        "and recorded it"
    );
    clock.0.store(0, std::sync::atomic::Ordering::SeqCst);
    // Offline drops the mark; back online, nobody tells the daemon.
    emu.set_offline("@TGS#heal", &["alice"]).await.unwrap();
    emu.set_online("@TGS#heal", &["alice"]).await.unwrap();
    assert!(!has_mark(&emu), "the service dropped it");
    // The listing is a snapshot refreshed every 40 s of the emulator's clock.
    emu.advance_clock(41);
    assert!(
        wait_until(Duration::from_secs(15), || has_mark(&emu)).await,
        "a refresh found the mark lost and set it again"
    );
    assert!(series(&metrics, "marksync_last_refresh_timestamp_seconds") > 0);
    assert!(
        wait_until(Duration::from_secs(10), || series(
            &metrics,
            "marksync_reconciles_total{trigger=\"refresh\",outcome=\"ok\"}"
        ) >= 1)
        .await,
        "the repair was a refresh round: {}",
        metrics.encode()
    );
    stop(tx, task).await;
}

fn get_members_calls(emu: &Emulator) -> u64 {
    emu.stats(false)
        .calls_by_path
        .iter()
        .filter(|(p, _)| p.ends_with("get_members"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_members_refusal_turns_refresh_off_until_sighup() {
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu = Emulator::start(cfg).await.unwrap();
    emu.inject_fault(crate::emulator::Fault {
        path: Some("get_members".into()),
        ..crate::emulator::Fault::always(crate::emulator::FaultKind::ErrorCode { code: 10007 })
    })
    .unwrap();
    // Reassert on the same period as refresh: its rounds show the periods going by.
    let setup = Setup::with(&emu.base_url(), "refresh_every: 1s\nreassert_every: 1s\n");
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#perm", "alice")).unwrap();
    let (tx, task, metrics) = setup.start_with(RunOptions::default(), Arc::new(SystemClock));
    assert!(
        wait_until(Duration::from_secs(10), || get_members_calls(&emu) >= 1).await,
        "a refresh ran"
    );
    let refused = get_members_calls(&emu);
    // Three more periods (counted by the reassert rounds, not by a sleep): no read, and the
    // rounds still run (the files still apply).
    let reasserts = rounds(&metrics, "reassert");
    assert!(
        wait_until(Duration::from_secs(20), || rounds(&metrics, "reassert")
            >= reasserts + 3)
        .await,
        "three reassert rounds"
    );
    assert_eq!(get_members_calls(&emu), refused, "refresh is off");
    assert_eq!(
        series(&metrics, "marksync_last_refresh_timestamp_seconds"),
        0
    );
    assert!(setup.state_text().contains("alice"), "writes go on");
    // SIGHUP turns it on again (the operator flipped the console switch).
    emu.clear_faults();
    tx.send(Input::Reload).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || series(
            &metrics,
            "marksync_last_refresh_timestamp_seconds"
        ) > 0)
        .await,
        "refreshed after the reload"
    );
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_slow_refresh_stops_the_daemon_at_once() {
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu = Emulator::start(cfg).await.unwrap();
    let setup = Setup::with(&emu.base_url(), "refresh_every: 1s\n");
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#slow", "alice")).unwrap();
    let (tx, task) = setup.start();
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .state_text()
            .contains("alice"))
        .await,
        "started and applied"
    );
    // Every read now takes 20 s.
    emu.inject_fault(crate::emulator::Fault {
        path: Some("get_members".into()),
        ..crate::emulator::Fault::always(crate::emulator::FaultKind::Latency { ms: 20_000 })
    })
    .unwrap();
    // A refresh is under way within two periods.
    let reads = get_members_calls(&emu);
    assert!(
        wait_until(Duration::from_secs(5), || get_members_calls(&emu) > reads).await,
        "a refresh started"
    );
    let started = std::time::Instant::now();
    tx.send(Input::Shutdown).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the daemon stops without waiting for the reads")
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}
