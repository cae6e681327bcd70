//! The daemon (`marksync run`, SPEC section 8): one loop over a closed enum of [`Input`]s driving
//! a level-triggered reconcile.
//!
//! The reconcile never asks why it runs: it recomputes the plan from the desired files and the
//! state and applies it through [`crate::apply::execute`], the same code path as `marksync apply`.
//! One reconcile runs at a time; triggers that arrive during one are coalesced into exactly one
//! more run afterwards. The loop sleeps until the earliest mark 500 renewal is due (no polling),
//! retries pending (offline) marks every `retry_pending_every`, and re-sends every desired mark
//! every `reassert_every`, and, with `refresh_every`, reads the live marks and repairs drift
//! (SPEC section 10).
//!
//! Refresh is a flag like the others: the `refresh_every` timer sets it, and a round still running
//! when the next one is due is not doubled (the flag is set once, consumed by the next round). A
//! round with the flag reads the live marks *before* it plans: the reads share the client's rate
//! limiter with the writes and yield to them by running first, never beside that round's calls.
//! After a `get_members` permission refusal the daemon logs it once and stops refreshing until
//! SIGHUP, relying on `reassert_every`; other refresh errors are warnings and the round goes on
//! with the plan from the state.
//!
//! Architecture invariant: while the desired files do not parse, the daemon keeps the last good
//! desired state, keeps renewing mark 500, and changes nothing else.

mod audit;
mod round;
mod schedule;
mod signals;
mod systemd;
mod watch;

#[cfg(test)]
mod tests;

pub use schedule::{CONFIRMATION_LAG_SECS, Debounce, presence_changed};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Endpoint};
use crate::desired::cache::{DesiredCache, Refresh};
use crate::engine::{self, Session};
use crate::error::{Error, exit};
use crate::http::{CallbackEvent, HttpState, Readiness};
use crate::metrics::Metrics;
use crate::model::UnixTime;
use crate::state::State;
use systemd::{notify, watchdog_period};
use watch::{describe_watch_error, watch_files};

/// Everything that can wake the daemon. Timers are inputs too, so the loop has one shape.
#[derive(Debug)]
pub enum Input {
    /// Something changed under the desired directory (debounced).
    FilesChanged,
    /// The earliest mark 500 renewal is due.
    RenewalDue,
    /// Time to retry marks of members who were offline.
    RetryPending,
    /// Time to re-send every desired mark.
    Reassert,
    /// Time to read the live marks and repair drift (`refresh_every`).
    Refresh,
    /// A member came online or went offline (from the service's callbacks).
    Callback(CallbackEvent),
    /// SIGHUP: re-read the config and the desired files.
    Reload,
    /// SIGTERM or SIGINT: finish in-flight calls, save, exit.
    Shutdown,
    /// The pause in API calls after a fatal code is over: run what was held back.
    BackoffOver,
    /// Callbacks' share of the call budget allows the reconcile they wait for.
    CallbackRoundDue,
}

/// Why a reconcile ran (the `trigger` label of the reconciles metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// The first reconcile after start.
    Startup,
    /// Desired files changed.
    Files,
    /// A mark 500 renewal came due.
    Renewal,
    /// The retry-pending timer.
    RetryPending,
    /// The reassert timer.
    Reassert,
    /// The refresh timer.
    Refresh,
    /// A member came online.
    Callback,
    /// SIGHUP.
    Reload,
}

impl Trigger {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Files => "files",
            Trigger::Renewal => "renewal",
            Trigger::RetryPending => "retry_pending",
            Trigger::Reassert => "reassert",
            Trigger::Refresh => "refresh",
            Trigger::Callback => "callback",
            Trigger::Reload => "reload",
        }
    }
}

/// Options of `marksync run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Plan and log, never call the API or write state.
    pub dry_run: bool,
    /// Let plans through the mass-clear guard.
    pub allow_mass_clear: bool,
}

/// What a batch of inputs asks for ([`Daemon::absorb`]).
struct Absorbed {
    /// The reconcile to run, if any.
    trigger: Option<Trigger>,
    /// SIGHUP came: re-read the config.
    reload: bool,
    /// Desired files changed: re-read them.
    files_changed: bool,
}

/// Records that `t` asks for a reconcile: the most significant trigger names it.
fn note(t: Trigger, trigger: &mut Option<Trigger>) {
    *trigger = Some(trigger.map_or(t, |old| old.min(t)));
}

/// How long state changes made outside a reconcile (offline callbacks) may stay unsaved: long
/// enough to batch a wave of callbacks into one write at a million marks, short enough that a
/// crash loses little.
const STATE_FLUSH_AFTER: Duration = Duration::from_secs(1);

/// The daemon's mutable world, owned by the main loop.
struct Daemon {
    config_path: PathBuf,
    /// The config, the clock, the state store and the client (the state is locked by `run` for
    /// the daemon's life, unless a dry run).
    session: Session,
    opts: RunOptions,
    state: State,
    desired: DesiredCache,
    /// The last desired-file problems, logged once per change.
    desired_problems: Option<String>,
    /// Where they are (count, first file and line) without the source text, for `/readyz`.
    desired_problems_at: Option<String>,
    metrics: Arc<Metrics>,
    readiness: tokio::sync::watch::Sender<Readiness>,
    /// Set by the reassert timer, consumed by the next reconcile.
    reassert_due: bool,
    /// Set by the refresh timer, consumed by the next reconcile (which refreshes first).
    refresh_due: bool,
    /// Set after a `get_members` permission refusal: no refresh until SIGHUP.
    refresh_off: bool,
    /// The drift counts of the last refresh, for `/readyz`.
    last_drift: Option<crate::refresh::DriftCounts>,
    /// The client's failover count when last looked at (for the failovers counter).
    failovers_seen: u64,
    /// Since when the in-memory state holds changes the file does not (callbacks forgot marks;
    /// a reconcile was cut short): saved [`STATE_FLUSH_AFTER`] later, by the next reconcile, or
    /// at shutdown, whichever comes first.
    dirty_since: Option<Instant>,
    /// Whether a reconcile has finished: `/readyz` is 503 until then.
    reconciled: bool,
    /// Set by a reload: rebuild the API client from the new config before the next reconcile.
    reconnect: bool,
    /// Whether the last reconcile ended without failures.
    last_ok: bool,
    /// Why the last reconcile did not succeed, if it did not.
    last_failure: Option<String>,
    /// Desired marks not confirmed, as of the last [`Daemon::refresh_counts`].
    pending: usize,
    /// Whether READY=1 was sent (the first reconcile is over).
    ready: bool,
    /// When the last reconcile started (clock time): a mark 500 renewal due before then was
    /// attempted, so it is retried after `retry_pending_every`, not at once.
    last_reconcile_at: Option<UnixTime>,
    /// Whether this round's plan was refused by the mass-clear guard (the reconcile outcome).
    guard_refused: bool,
    /// Shared with apply: set on SIGTERM to stop sending new calls.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Waits between reads of desired files that could not be read (I/O, not parse, problems).
    reread_backoff: schedule::Backoff,
    /// When to read the desired files again because the last read failed on I/O: such a
    /// problem (`EMFILE`, a rename in progress) can clear with no file event to say so.
    reread_at: Option<Instant>,
    /// Waits without API calls after a fatal code (a bad signature, say), doubling while the
    /// code comes back, so a broken key cannot run into the service's 70050 block.
    fatal_backoff: schedule::Backoff,
    /// Until when no API call is made, after a fatal code.
    calls_paused_until: Option<Instant>,
    /// The reconcile held back by the pause, run when it is over.
    held: Option<Trigger>,
    /// A reconcile started by callbacks alone may not start before this
    /// (`schedule::next_callback_round`: callbacks spend a share of the call budget).
    callback_not_before: Option<Instant>,
    /// Callbacks asked for a reconcile before `callback_not_before`: it runs then.
    callback_waiting: bool,
    /// Calls planned by the last reconcile (for `callback_not_before`).
    last_round_calls: usize,
}

/// The first pause in API calls after a fatal code; doubles up to [`FATAL_PAUSE_MAX`] while
/// fatal codes come back, and starts over after a round without one.
const FATAL_PAUSE_FIRST: Duration = Duration::from_secs(60);
/// The longest pause in API calls after fatal codes.
const FATAL_PAUSE_MAX: Duration = Duration::from_secs(600);

/// The first wait before reading desired files again after an I/O problem; doubles up to
/// [`REREAD_MAX`].
const REREAD_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between reads of desired files that could not be read.
const REREAD_MAX: Duration = Duration::from_secs(30);

/// `marksync run`: the daemon on the system clock, until SIGTERM or SIGINT; SIGHUP reloads.
pub fn main(config_path: &Path, opts: RunOptions) -> Result<u8, Error> {
    engine::runtime()?.block_on(async {
        let (sender, inputs) = mpsc::channel::<Input>(1024);
        signals::install(sender.clone())?;
        let metrics = Arc::new(Metrics::new());
        run(
            config_path,
            opts,
            Arc::new(SystemClock),
            metrics,
            sender,
            inputs,
        )
        .await
    })
}

/// Runs the daemon until `Input::Shutdown` arrives on `inputs` (which the caller feeds from
/// signals; the file watcher and the HTTP listener feed it too through `sender`). Time comes from
/// `clock` and tokio's timers, and what it does shows in `metrics`, so tests drive and watch it.
pub async fn run(
    config_path: &Path,
    opts: RunOptions,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    sender: mpsc::Sender<Input>,
    mut inputs: mpsc::Receiver<Input>,
) -> Result<u8, Error> {
    // One session for the daemon's life: the lock and every save go to the state the lock was
    // taken on, even if a symlinked state path is re-pointed while it runs (a restart picks the
    // new target).
    let mut session = Session::open(engine::load_config(config_path)?, clock)?;
    let _lock = if opts.dry_run {
        None
    } else {
        Some(session.lock("run", true).await?)
    };
    let st = session.load_state().await?;
    // Connected before the first round, so a config the client refuses stops the start.
    session.client().await?;
    let config = &session.config;
    let endpoint = match &config.endpoint {
        Endpoint::Embedded => "embedded",
        Endpoint::Region(_) => "region",
        Endpoint::Url(_) => "url",
    };
    tracing::info!(
        state = %session.store().describe(),
        serial = st.serial,
        managed = st.managed_count(),
        endpoint,
        dry_run = opts.dry_run,
        "state loaded: serial {}, {} managed {}; endpoint {endpoint}",
        st.serial,
        st.managed_count(),
        crate::render::plural(st.managed_count(), "mark", "marks"),
    );
    let (readiness, readiness_rx) = tokio::sync::watch::channel(Readiness {
        desired_ok: false,
        last_reconcile_ok: false,
        detail: "starting".into(),
    });
    let mut daemon = Daemon {
        config_path: config_path.to_path_buf(),
        desired: DesiredCache::new(config.desired.clone(), config.max_alias_pairs),
        session,
        opts,
        state: st,
        desired_problems: None,
        desired_problems_at: None,
        metrics,
        readiness,
        reassert_due: false,
        refresh_due: false,
        refresh_off: false,
        last_drift: None,
        failovers_seen: 0,
        dirty_since: None,
        reconciled: false,
        reconnect: false,
        last_ok: true,
        guard_refused: false,
        ready: false,
        pending: 0,
        last_reconcile_at: None,
        last_failure: None,
        stop: Arc::default(),
        reread_backoff: schedule::Backoff::new(REREAD_FIRST, REREAD_MAX),
        reread_at: None,
        fatal_backoff: schedule::Backoff::new(FATAL_PAUSE_FIRST, FATAL_PAUSE_MAX),
        calls_paused_until: None,
        held: None,
        callback_not_before: None,
        callback_waiting: false,
        last_round_calls: 0,
    };

    let mut watcher = watch_files(
        daemon.desired.root(),
        daemon.session.config.debounce,
        sender.clone(),
    )
    .map_err(|source| Error::Watch {
        root: daemon.desired.root().to_path_buf(),
        source,
    })?;
    let _http = match daemon.session.config.http.clone() {
        None => None,
        Some(http) => {
            let (events_tx, mut events_rx) = mpsc::channel::<CallbackEvent>(1024);
            let state = HttpState::new(
                daemon.metrics.clone(),
                readiness_rx,
                events_tx,
                daemon.session.config.sdkappid,
                daemon.session.clock().clone(),
            );
            let listener = crate::http::start(&http, state).await?;
            let callbacks = sender.clone();
            tokio::spawn(async move {
                while let Some(event) = events_rx.recv().await {
                    if callbacks.send(Input::Callback(event)).await.is_err() {
                        break;
                    }
                }
            });
            Some(listener)
        }
    };

    daemon.refresh_desired();
    // Inputs that arrive during the startup reconcile form the first round after it.
    let mut deferred: Vec<Input> = Vec::new();
    daemon
        .reconcile(Trigger::Startup, &mut inputs, &mut deferred)
        .await;
    notify(&[sd_notify::NotifyState::Ready]);
    daemon.ready = true;
    daemon.report_status();
    tracing::info!(desired = %daemon.desired.root().display(), "marksync is running");

    let mut retry = interval(daemon.session.config.retry_pending_every);
    let mut reassert = interval(daemon.session.config.reassert_every);
    let mut refresh = daemon.session.config.refresh_every.map(interval);
    let mut watchdog = interval(watchdog_period());
    // Checked first too: a SIGTERM during the startup reconcile stops the daemon right after it.
    while !daemon.stop.load(Ordering::SeqCst) {
        // Inputs deferred during the last reconcile form the next round, all together: however
        // many arrived, they cause exactly one more reconcile.
        let mut batch = std::mem::take(&mut deferred);
        if batch.is_empty() {
            // While calls are paused, a renewal that comes due waits for the pause to end.
            let renewal = if daemon.calls_paused_until.is_some() {
                None
            } else {
                daemon.next_renewal_in()
            };
            batch.push(tokio::select! {
                Some(input) = inputs.recv() => input,
                () = sleep_or_forever(renewal) => Input::RenewalDue,
                () = sleep_until_opt(daemon.dirty_since.map(|t| t + STATE_FLUSH_AFTER)) => {
                    daemon.flush_state().await;
                    continue;
                }
                () = sleep_until_opt(daemon.calls_paused_until) => {
                    daemon.calls_paused_until = None;
                    Input::BackoffOver
                }
                () = sleep_until_opt(
                    daemon.callback_not_before.filter(|_| daemon.callback_waiting)
                ) => Input::CallbackRoundDue,
                () = sleep_until_opt(daemon.reread_at) => {
                    daemon.reread_at = None;
                    Input::FilesChanged
                }
                _ = retry.tick() => Input::RetryPending,
                _ = reassert.tick() => Input::Reassert,
                () = tick_opt(&mut refresh) => Input::Refresh,
                _ = watchdog.tick() => {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                    continue;
                }
            });
        }
        while let Ok(more) = inputs.try_recv() {
            batch.push(more);
        }
        let absorbed = daemon.absorb(batch);
        if daemon.stop.load(Ordering::SeqCst) {
            break;
        }
        let trigger = daemon.read_again(absorbed);
        // A reload's new periods, debounce and connection take effect now.
        if retry.period() != daemon.session.config.retry_pending_every {
            retry = interval(daemon.session.config.retry_pending_every);
        }
        if reassert.period() != daemon.session.config.reassert_every {
            reassert = interval(daemon.session.config.reassert_every);
        }
        if refresh.as_ref().map(|i| i.period()) != daemon.session.config.refresh_every {
            refresh = daemon.session.config.refresh_every.map(interval);
        }
        if watcher.debounce != daemon.session.config.debounce {
            match watch_files(
                daemon.desired.root(),
                daemon.session.config.debounce,
                sender.clone(),
            ) {
                Ok(w) => watcher = w,
                Err(e) => tracing::error!(
                    "reload: cannot restart the file watcher; keeping the old one: {}",
                    describe_watch_error(&e)
                ),
            }
        }
        if std::mem::take(&mut daemon.reconnect) {
            match daemon.session.reconnect().await {
                Ok(()) => {
                    daemon.failovers_seen = 0;
                    // A new key or endpoint may be the fix for the fatal code: try it now.
                    if daemon.calls_paused_until.take().is_some() {
                        tracing::info!(
                            "reload: new API client; the pause after a fatal API error ends"
                        );
                        daemon.held = None;
                    }
                }
                Err(e) => tracing::error!(
                    kind = e.metric_label(),
                    "reload: cannot build the API client from the new config; keeping the old one: {e}"
                ),
            }
        }
        if let Some(trigger) = trigger
            && daemon.calls_paused_until.is_some()
        {
            daemon.held = Some(daemon.held.map_or(trigger, |held| held.min(trigger)));
        } else if let Some(trigger) = trigger
            && trigger == Trigger::Callback
            && daemon
                .callback_not_before
                .is_some_and(|t| Instant::now() < t)
        {
            // Callbacks' re-sends wait for their share of the budget; meanwhile more callbacks
            // only make marks unknown, so each member is re-sent once when the round runs.
            daemon.callback_waiting = true;
        } else if let Some(trigger) = trigger {
            let started = Instant::now();
            daemon.reconcile(trigger, &mut inputs, &mut deferred).await;
            // Every reconcile sends what callbacks made unknown.
            daemon.callback_waiting = false;
            if trigger == Trigger::Callback {
                daemon.callback_not_before = Some(schedule::next_callback_round(
                    started,
                    daemon.last_round_calls,
                    daemon.session.config.max_calls_per_second,
                ));
            }
            daemon.report_status();
            if daemon.stop.load(Ordering::SeqCst) {
                break;
            }
        }
    }

    notify(&[sd_notify::NotifyState::Stopping]);
    if !daemon.opts.dry_run && daemon.dirty_since.is_some() {
        daemon.session.save(&mut daemon.state).await?;
    }
    tracing::info!("marksync stopped");
    Ok(exit::OK)
}

impl Daemon {
    /// Folds a batch of inputs into the daemon's flags, reading nothing: returns the trigger of
    /// the reconcile to run, if any (the most significant one, for the metric label), and what
    /// must be read again ([`Daemon::read_again`] does the reading).
    fn absorb(&mut self, batch: Vec<Input>) -> Absorbed {
        let mut trigger: Option<Trigger> = None;
        let (mut reload, mut files_changed) = (false, false);
        for input in batch {
            match input {
                Input::Shutdown => {
                    tracing::info!("shutting down: finishing calls in flight");
                    self.stop.store(true, Ordering::SeqCst);
                }
                Input::Reload => reload = true,
                Input::FilesChanged => files_changed = true,
                Input::RenewalDue => note(Trigger::Renewal, &mut trigger),
                Input::RetryPending => {
                    if self.pending_count() > 0 {
                        note(Trigger::RetryPending, &mut trigger);
                    }
                }
                Input::Reassert => {
                    self.reassert_due = true;
                    note(Trigger::Reassert, &mut trigger);
                }
                Input::Refresh => {
                    if self.session.config.refresh_every.is_some() && !self.refresh_off {
                        self.refresh_due = true;
                        note(Trigger::Refresh, &mut trigger);
                    }
                }
                Input::Callback(event) => {
                    if self.apply_callback(event) {
                        note(Trigger::Callback, &mut trigger);
                    }
                }
                Input::CallbackRoundDue => note(Trigger::Callback, &mut trigger),
                Input::BackoffOver => {
                    if let Some(held) = self.held.take() {
                        tracing::info!("the pause after a fatal API error is over");
                        note(held, &mut trigger);
                    }
                }
            }
        }
        Absorbed {
            trigger,
            reload,
            files_changed,
        }
    }

    /// The file I/O a batch asked for: SIGHUP re-reads the config (and the desired files), a
    /// file event the desired files. Returns the batch's trigger with theirs folded in.
    fn read_again(&mut self, absorbed: Absorbed) -> Option<Trigger> {
        let mut trigger = absorbed.trigger;
        if absorbed.reload {
            self.reload();
            note(Trigger::Reload, &mut trigger);
        }
        if absorbed.files_changed && self.refresh_desired() {
            note(Trigger::Files, &mut trigger);
        }
        trigger
    }

    fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Saves state changes made outside a reconcile (callbacks) and updates the gauges they
    /// move, so neither `/metrics` nor a restart after a crash waits for the next non-empty
    /// reconcile, which could be hours away.
    async fn flush_state(&mut self) {
        // The gauges describe the state in memory: published before it is written, so whoever
        // sees the new file sees them too.
        self.refresh_counts();
        if self.opts.dry_run {
            self.dirty_since = None;
        } else if let Err(e) = self.session.save(&mut self.state).await {
            tracing::error!(kind = e.metric_label(), "cannot save state: {e}");
            // Retry at the next period rather than in a tight loop.
            self.dirty_since = Some(Instant::now());
        } else {
            self.dirty_since = None;
        }
    }

    /// A member came online or went offline (SPEC section 4 and 8). The service drops every mark
    /// but 500 of a member who goes offline, and a member who comes online may have been
    /// offline (a missed Offline callback): either way its confirmed marks (500 excepted) may
    /// be gone, so [`presence_changed`] makes them unknown, never absent. A member who comes
    /// online gets its desired marks again at once: returns whether a reconcile is needed.
    fn apply_callback(&mut self, event: CallbackEvent) -> bool {
        let unknown = schedule::presence_changed(&mut self.state, &event);
        if unknown > 0 {
            tracing::debug!(group = %event.group, members = event.accounts.len(), marks = unknown, event = ?event.event, "callback: confirmed marks are unknown until settled");
            self.mark_dirty();
        }
        schedule::callback_needs_reconcile(&event, unknown, self.desired.desired())
    }

    /// Re-reads the desired files; returns whether the desired state changed.
    fn refresh_desired(&mut self) -> bool {
        let refresh = self.desired.refresh();
        if self.desired.last_unreadable {
            let wait = self.reread_backoff.next_wait();
            tracing::warn!("desired files could not be read; reading them again in {wait:?}");
            self.reread_at = Some(Instant::now() + wait);
        } else {
            self.reread_backoff.reset();
            self.reread_at = None;
        }
        match refresh {
            // Back to parsing with the last good content: reconcile all the same, since what
            // came up meanwhile (members back online, reasserts) was held back as renewals only.
            Refresh::Unchanged => self.set_desired_ok(),
            Refresh::Changed(files) => {
                let (groups, marks) = self
                    .desired
                    .desired()
                    .map_or((0, 0), |d| (d.groups.len(), d.pair_count()));
                let total = self.desired.file_count();
                let verb = if self.reconciled {
                    "reloaded"
                } else {
                    "loaded"
                };
                tracing::info!(
                    groups,
                    marks,
                    files = total,
                    changed = files.len(),
                    reparsed = self.desired.last_parsed,
                    "desired files {verb}: {groups} {}, {marks} {} from {total} {}",
                    crate::render::plural(groups, "group", "groups"),
                    crate::render::plural(marks, "mark", "marks"),
                    crate::render::plural(total, "file", "files"),
                );
                for w in self
                    .desired
                    .desired()
                    .map(|d| d.warnings.as_slice())
                    .unwrap_or_default()
                {
                    tracing::warn!("{}", audit::one_line(&w.to_string()));
                }
                self.set_desired_ok();
                true
            }
            Refresh::Broken(problems) => {
                let text = problems.to_string();
                if self.desired_problems.as_deref() != Some(text.as_str()) {
                    tracing::error!(
                        errors = problems.error_count(),
                        "desired files do not parse; keeping the last good desired state and renewing mark 500 only: {}",
                        audit::one_line(&text)
                    );
                }
                self.metrics.set_desired_errors(problems.error_count());
                self.desired_problems = Some(text);
                self.desired_problems_at = Some(problems.location_summary());
                self.publish_readiness();
                false
            }
        }
    }

    /// Records that the desired files parse; returns whether they did not before.
    fn set_desired_ok(&mut self) -> bool {
        let was_broken = self.desired_problems.take().is_some();
        if was_broken {
            tracing::info!("desired files parse again");
        }
        self.metrics.set_desired_errors(0);
        self.publish_readiness();
        was_broken
    }

    /// SIGHUP: a new config replaces the old one only if it loads; the desired files are re-read.
    fn reload(&mut self) {
        match engine::load_config(&self.config_path) {
            Ok(config) => {
                if config.state != self.session.config.state
                    || config.state_store != self.session.config.state_store
                    || config.lock_ttl != self.session.config.lock_ttl
                    || config.sdkappid != self.session.config.sdkappid
                {
                    tracing::warn!(
                        "reload: `state`, `state_store`, `lock_ttl` and `sdkappid` changes need a restart; keeping the old ones"
                    );
                }
                if config.desired != self.session.config.desired {
                    tracing::warn!(
                        "reload: a new `desired` path needs a restart; keeping the old one"
                    );
                }
                if config.max_alias_pairs != self.session.config.max_alias_pairs {
                    tracing::warn!(
                        "reload: a new `max_alias_pairs` needs a restart; keeping the old one"
                    );
                }
                if config.http != self.session.config.http {
                    tracing::warn!(
                        "reload: `http` changes need a restart; keeping the old listener"
                    );
                }
                let embedded = |c: &Config| matches!(c.endpoint, Endpoint::Embedded);
                if embedded(&config) != embedded(&self.session.config) {
                    tracing::warn!(
                        "reload: switching to or from `endpoint: embedded` needs a restart; keeping the old endpoint"
                    );
                }
                let keep = (
                    self.session.config.state.clone(),
                    self.session.config.state_store.clone(),
                    self.session.config.lock_ttl,
                    self.session.config.sdkappid,
                    self.session.config.desired.clone(),
                    self.session.config.http.clone(),
                );
                let old_endpoint = self.session.config.endpoint.clone();
                let max_alias_pairs = self.session.config.max_alias_pairs; // the desired cache's
                self.session.config = config;
                self.session.config.max_alias_pairs = max_alias_pairs;
                (
                    self.session.config.state,
                    self.session.config.state_store,
                    self.session.config.lock_ttl,
                    self.session.config.sdkappid,
                    self.session.config.desired,
                    self.session.config.http,
                ) = keep;
                if embedded(&self.session.config) || matches!(old_endpoint, Endpoint::Embedded) {
                    self.session.config.endpoint = old_endpoint;
                } else {
                    // Endpoint, identifier, secret key (possibly rotated in place), rate and
                    // UserSig validity: the main loop rebuilds the client before the next round.
                    self.reconnect = true;
                }
                if std::mem::take(&mut self.refresh_off)
                    && self.session.config.refresh_every.is_some()
                {
                    tracing::info!("reload: refresh is on again");
                }
                tracing::info!("reload: config re-read");
            }
            Err(e) => {
                tracing::error!(
                    kind = e.metric_label(),
                    "reload: the new config is invalid; keeping the old one: {}",
                    audit::one_line(&e.to_string())
                )
            }
        }
        self.refresh_desired();
    }

    /// How long until the earliest desired mark 500 renewal is due (`None` when there is none).
    fn next_renewal_in(&self) -> Option<Duration> {
        // While the files are broken every confirmed 500 is renewed (see `renewals_only`), so
        // every one of them counts here too.
        let desired = self
            .desired
            .desired()
            .filter(|_| self.desired_problems.is_none());
        let margin = self.session.config.renew_margin.as_secs() as i64;
        let now = self.session.clock().now();
        let due = schedule::next_renewal_at(&self.state, desired, margin, now)?;
        Some(schedule::renewal_wait(
            due,
            self.last_reconcile_at,
            self.session.config.retry_pending_every,
            now,
        ))
    }

    /// Recomputes the state's gauges (one walk of the desired marks for the pending count, kept
    /// for the `STATUS=` line).
    fn refresh_counts(&mut self) {
        self.pending = self.pending_count();
        self.metrics.set_managed(self.state.managed_count());
        self.metrics.set_pending(self.pending);
        self.metrics
            .set_mark500_earliest_expiry(schedule::earliest_500_expiry(
                &self.state,
                self.session.clock().now(),
            ));
    }

    /// Desired marks the state does not hold yet (offline members, failures).
    fn pending_count(&self) -> usize {
        schedule::pending_count(&self.state, self.desired.desired())
    }

    /// What `/readyz` says: ready when the desired files parse and the last reconcile succeeded.
    fn publish_readiness(&self) {
        let desired_ok = self.desired.desired().is_some() && self.desired_problems.is_none();
        let detail = match (&self.desired_problems, &self.last_failure) {
            (Some(_), _) => format!(
                "desired files do not parse: {} (every problem, with its source line, is in the log)",
                self.desired_problems_at.as_deref().unwrap_or("see the log")
            ),
            (None, Some(f)) => f.clone(),
            (None, None) if !self.reconciled => "the first reconcile is in progress".into(),
            (None, None) if desired_ok => match &self.last_drift {
                // Drift is normal (members go offline): reported, never "not ready".
                Some(c) if c.total() > 0 => format!(
                    "ok; drift at the last refresh: {}",
                    c.iter()
                        .map(|(kind, n)| format!("{n} {}", crate::render::drift_words(kind)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => "ok".into(),
            },
            (None, None) => "desired files not loaded yet".into(),
        };
        // Not ready before the first reconcile is over: "last reconcile healthy" cannot be true
        // of a reconcile that has not happened.
        let _ = self.readiness.send(Readiness {
            desired_ok,
            last_reconcile_ok: self.reconciled && self.last_failure.is_none(),
            detail,
        });
    }

    /// The `STATUS=` line systemd shows.
    fn report_status(&self) {
        let desired = if self.desired_problems.is_some() {
            "desired files broken (last good kept)"
        } else {
            "desired ok"
        };
        let status = format!(
            "{desired}; {} managed marks, {} pending; last reconcile {}",
            self.state.managed_count(),
            self.pending,
            if self.last_ok { "ok" } else { "failed" }
        );
        notify(&[sd_notify::NotifyState::Status(&status)]);
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

async fn tick_opt(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
