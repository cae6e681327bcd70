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
mod health;
mod inputs;
mod listener;
mod round;
mod schedule;
mod signals;
mod standby;
mod systemd;
mod timers;
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
use crate::desired::cache::DesiredCache;
use crate::engine::{self, Session};
use crate::error::{Error, exit};
use crate::http::{CallbackEvent, Readiness};
use crate::metrics::Metrics;
use crate::model::UnixTime;
use crate::state::State;
use health::Health;
use systemd::notify;
use watch::FileWatch;

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
    /// How long to wait for another holder of the state's lock (`--lock-timeout`; zero fails at
    /// once, naming it).
    pub lock_timeout: std::time::Duration,
    /// Let plans through the mass-clear guard.
    pub allow_mass_clear: bool,
    /// Where standby daemons relay callbacks to (`--advertise`), when not the bound address.
    pub advertise: Option<crate::http::advertise::Advertise>,
}

/// Refuses `--advertise` where it would mean nothing: without a listener, or with a local state
/// (no other daemon can share it, so none relays to this one). Warns when standbys could not
/// reach this daemon: a listener on all interfaces and no advertised address.
fn check_advertise(config: &Config, opts: &RunOptions) -> Result<(), Error> {
    let remote = matches!(config.state, crate::state::Location::Object(_));
    match (&opts.advertise, &config.http) {
        (Some(_), None) => Err(Error::Advertise(
            "the config has no `http.listen`: this daemon takes no callbacks to relay".into(),
        )),
        (Some(_), Some(_)) if !remote => Err(Error::Advertise(
            "the state is a local file: no standby daemon shares it; remove --advertise \
             (MARKSYNC_ADVERTISE), or keep the state in an object store"
                .into(),
        )),
        (None, Some(http)) if remote && http.listen.ip().is_unspecified() => {
            tracing::warn!(
                "http.listen {} binds all interfaces, and no --advertise address is set: \
                 standby daemons cannot relay callbacks to this one; set --advertise \
                 (MARKSYNC_ADVERTISE) to the address they reach it at",
                http.listen
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// How long state changes made outside a reconcile (offline callbacks) may stay unsaved: long
/// enough to batch a wave of callbacks into one write at a million marks, short enough that a
/// crash loses little.
const STATE_FLUSH_AFTER: Duration = Duration::from_secs(1);

/// The daemon's mutable world, owned by the main loop; each part owns one concern.
struct Daemon {
    /// The state's one-writer lock, held for the daemon's life (none in a dry run).
    lock: Option<Arc<dyn crate::state::StoreLock>>,
    config_path: PathBuf,
    /// The config, the clock, the state store and the client (the state is locked by `run` for
    /// the daemon's life, unless a dry run).
    session: Session,
    opts: RunOptions,
    state: State,
    desired: DesiredCache,
    metrics: Arc<Metrics>,
    /// The client's failover count when last looked at (for the failovers counter).
    failovers_seen: u64,
    /// Since when the in-memory state holds changes the file does not (callbacks forgot marks;
    /// a reconcile was cut short): saved [`STATE_FLUSH_AFTER`] later, by the next reconcile, or
    /// at shutdown, whichever comes first.
    dirty_since: Option<Instant>,
    /// When the last reconcile started (clock time): a mark 500 renewal due before then was
    /// attempted, so it is retried after `retry_pending_every`, not at once.
    last_reconcile_at: Option<UnixTime>,
    /// Shared with apply: set on SIGTERM to stop sending new calls.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// What `/readyz`, the metrics and systemd's status line report.
    health: Health,
    /// When calls may be made: the pause after fatal codes, and callbacks' share of the budget.
    pause: CallPause,
    /// What the next round must do besides planning (reassert, refresh, read again, reconnect).
    due: Due,
    /// Tells the team when a condition starts or clears (`notify:`).
    notifier: crate::notify::Notifier,
    /// What went wrong in this round, for the `apply_failed` message.
    round_detail: Option<String>,
}

/// When calls may be made: the pause after fatal codes, and callbacks' share of the budget.
struct CallPause {
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

/// What the next round must do besides planning.
struct Due {
    /// Set by the reassert timer, consumed by the next reconcile.
    reassert_due: bool,
    /// Set by the refresh timer, consumed by the next reconcile (which refreshes first).
    refresh_due: bool,
    /// Set after a `get_members` permission refusal: no refresh until SIGHUP.
    refresh_off: bool,
    /// Waits between reads of desired files that could not be read (I/O, not parse, problems).
    reread_backoff: schedule::Backoff,
    /// When to read the desired files again because the last read failed on I/O: such a
    /// problem (`EMFILE`, a rename in progress) can clear with no file event to say so.
    reread_at: Option<Instant>,
    /// Set by a reload: rebuild the API client from the new config before the next reconcile.
    reconnect: bool,
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
    let Some(Running {
        mut daemon,
        mut watcher,
        listener: _listener,
        lease_lost,
    }) = begin(config_path, opts, clock, metrics, &sender, &mut inputs).await?
    else {
        return Ok(exit::OK);
    };

    daemon.refresh_desired();
    // Inputs that arrive during the startup reconcile form the first round after it.
    let mut deferred: Vec<Input> = Vec::new();
    daemon
        .reconcile(Trigger::Startup, &mut inputs, &mut deferred)
        .await;
    notify(&[sd_notify::NotifyState::Ready]);
    daemon.health.ready = true;
    daemon.report_status();
    tracing::info!(desired = %daemon.desired.root().display(), "marksync is running");

    let mut timers = timers::Timers::new(&daemon.session.config);
    // Checked first too: a SIGTERM during the startup reconcile stops the daemon right after it.
    while !daemon.stop.load(Ordering::SeqCst) {
        // Inputs deferred during the last reconcile form the next round, all together: however
        // many arrived, they cause exactly one more reconcile.
        let mut batch = std::mem::take(&mut deferred);
        if batch.is_empty() {
            match daemon.next_input(&mut timers, &mut inputs).await {
                Some(input) => batch.push(input),
                None => continue,
            }
        }
        while let Ok(more) = inputs.try_recv() {
            batch.push(more);
        }
        let absorbed = daemon.absorb(batch);
        if daemon.stop.load(Ordering::SeqCst) {
            break;
        }
        let trigger = daemon.read_again(absorbed);
        // A reload's new periods, debounce and connection take effect now, and the watch moves
        // to where the desired path now leads (git-sync re-pointed it).
        timers.follow(&daemon.session.config);
        watcher.follow(
            daemon.desired.root(),
            daemon.session.config.debounce,
            &sender,
        );
        daemon.reconnect_if_asked().await;
        if let Some(trigger) = trigger {
            daemon.run_round(trigger, &mut inputs, &mut deferred).await;
        }
    }
    daemon.finish(&lease_lost).await
}

/// A daemon that acts, with what it runs alongside.
struct Running {
    daemon: Daemon,
    /// The watch on the desired files.
    watcher: FileWatch,
    /// The HTTP listener, if the config asks for one; dropping it stops it.
    listener: Option<crate::http::Listener>,
    /// Set when a remote state's lease is lost ([`standby::watch_the_lease`]).
    lease_lost: Arc<std::sync::atomic::AtomicBool>,
}

/// Everything before the first reconcile: the config, the lock (standing by while another daemon
/// holds a remote state's), the daemon's state, the file watch and the listener. `None`: a
/// signal came while standing by.
///
/// A remote state may be held by another daemon: this one stands by until it can act, with its
/// listener up (`/readyz` says `standby`, callbacks go to the active daemon) and its desired
/// files watched. A local state's lock is taken first, as always: a second daemon exits 5 before
/// binding a port.
async fn begin(
    config_path: &Path,
    opts: RunOptions,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    sender: &mpsc::Sender<Input>,
    inputs: &mut mpsc::Receiver<Input>,
) -> Result<Option<Running>, Error> {
    let (readiness, readiness_rx) = tokio::sync::watch::channel(Readiness {
        desired_ok: false,
        last_reconcile_ok: false,
        detail: "starting".into(),
        standby: None,
    });
    let (role, role_rx) = tokio::sync::watch::channel(crate::http::forward::Role::Active);
    let config = engine::load_config(config_path)?;
    check_advertise(&config, &opts)?;
    let remote = matches!(config.state, crate::state::Location::Object(_)) && !opts.dry_run;
    let (mut listener, mut watcher, mut held, mut took_over) = (None, None, None, false);
    if remote {
        listener = listener::start_listener(
            &config,
            &metrics,
            &clock,
            readiness_rx.clone(),
            role_rx.clone(),
            sender,
        )
        .await?;
        let address = listener
            .as_ref()
            .map(|l: &crate::http::Listener| match &opts.advertise {
                Some(a) => a.address(l.addr),
                None => l.addr.to_string(),
            });
        let waiting = standby::Waiting {
            readiness: &readiness,
            role: &role,
            files: watcher.insert(FileWatch::start(&config.desired, config.debounce, sender)?),
            sender,
            inputs,
        };
        match standby::lead(&config, opts.lock_timeout, &metrics, address, waiting).await? {
            standby::Lead::Taken { lock, took_over: t } => (held, took_over) = (Some(lock), t),
            standby::Lead::Stopped => return Ok(None),
        }
        role.send_replace(crate::http::forward::Role::Active);
    }
    let daemon = Daemon::start(config_path, opts, clock, metrics, readiness, held).await?;
    if took_over {
        daemon.notifier.condition(
            crate::config::notify::Event::Takeover,
            true,
            "this daemon took over the state's lock from one that stopped renewing it, and acts now",
            || daemon.session.store().describe(),
        );
    }
    let lease_lost = standby::watch_the_lease(&daemon, sender);
    let watcher = match watcher {
        Some(w) => w,
        None => FileWatch::start(
            daemon.desired.root(),
            daemon.session.config.debounce,
            sender,
        )?,
    };
    if !remote {
        listener = listener::start_listener(
            &daemon.session.config,
            &daemon.metrics,
            daemon.session.clock(),
            readiness_rx,
            role_rx,
            sender,
        )
        .await?;
    }
    Ok(Some(Running {
        daemon,
        watcher,
        listener,
        lease_lost,
    }))
}

impl Daemon {
    /// After the loop: saves what is unsaved, delivers pending notifications, and says how the
    /// daemon ends (an error when it stopped because its lease was lost).
    async fn finish(mut self, lease_lost: &std::sync::atomic::AtomicBool) -> Result<u8, Error> {
        notify(&[sd_notify::NotifyState::Stopping]);
        if !self.opts.dry_run && self.dirty_since.is_some() {
            match self.session.save(&mut self.state).await {
                Ok(()) => {}
                // The daemon that takes over acts from the state as last saved; the intents
                // written before each call let it settle what was in flight.
                Err(e) if lease_lost.load(Ordering::SeqCst) => {
                    tracing::warn!("the last changes to the state are not saved: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.notifier.flush(crate::notify::SHUTDOWN_FLUSH).await;
        if lease_lost.load(Ordering::SeqCst) {
            return Err(Error::State(crate::state::StateError::Unavailable {
                state: self.session.store().describe(),
                detail: "this daemon lost the state's lease (or could not renew it in time) and \
                         stopped acting; restarted, it stands by while another daemon acts"
                    .into(),
            }));
        }
        tracing::info!("marksync stopped");
        Ok(exit::OK)
    }

    /// Opens the session, takes the lock (unless a dry run), reads the state and connects: the
    /// daemon before its first round, and the receiver of its readiness for the listener.
    async fn start(
        config_path: &Path,
        opts: RunOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        readiness: tokio::sync::watch::Sender<Readiness>,
        held: Option<Box<dyn crate::state::StoreLock>>,
    ) -> Result<Daemon, Error> {
        // One session for the daemon's life: the lock and every save go to the state the lock was
        // taken on, even if a symlinked state path is re-pointed while it runs (a restart picks the
        // new target).
        let mut session = Session::open(engine::load_config(config_path)?, clock)?;
        // Taken already when this daemon stood by for a remote state's lock.
        let lock = match held {
            Some(lock) => Some(lock),
            None if opts.dry_run => None,
            None => Some(session.lock("run", true, opts.lock_timeout).await?),
        };
        // The one daemon that acts on this state (a dry run acts on nothing).
        metrics.set_leader(lock.is_some());
        let st = session.load_state().await?;
        // Connected before the first round, so a config the client refuses stops the start.
        session.client().await?;
        let config = &session.config;
        let notifier = crate::notify::Notifier::new(config, metrics.clone())?;
        // Where calls go: the base URL (a region's domain, or the `endpoint` URL), or `embedded`.
        let endpoint = match &config.endpoint {
            Endpoint::Embedded => "embedded".to_owned(),
            _ => engine::endpoint_urls(config)?.0,
        };
        tracing::info!(
            state = %session.store().describe(),
            serial = st.serial,
            managed = st.managed_count(),
            endpoint = %endpoint,
            dry_run = opts.dry_run,
            "state loaded: serial {}, {} managed {}; endpoint {endpoint}",
            st.serial,
            st.managed_count(),
            crate::render::plural(st.managed_count(), "mark", "marks"),
        );
        let desired = DesiredCache::new(config.desired.clone(), config.max_alias_pairs);
        let daemon = Daemon {
            lock: lock.map(Arc::from),
            config_path: config_path.to_path_buf(),
            session,
            opts,
            state: st,
            desired,
            metrics,
            failovers_seen: 0,
            dirty_since: None,
            last_reconcile_at: None,
            stop: Arc::default(),
            health: Health {
                desired_problems: None,
                desired_problems_at: None,
                readiness,
                last_drift: None,
                reconciled: false,
                last_ok: true,
                last_failure: None,
                pending: 0,
                ready: false,
                guard_refused: false,
            },
            pause: CallPause {
                fatal_backoff: schedule::Backoff::new(FATAL_PAUSE_FIRST, FATAL_PAUSE_MAX),
                calls_paused_until: None,
                held: None,
                callback_not_before: None,
                callback_waiting: false,
                last_round_calls: 0,
            },
            due: Due {
                reassert_due: false,
                refresh_due: false,
                refresh_off: false,
                reread_backoff: schedule::Backoff::new(REREAD_FIRST, REREAD_MAX),
                reread_at: None,
                reconnect: false,
            },
            notifier,
            round_detail: None,
        };
        Ok(daemon)
    }

    /// Rebuilds the client when a reload asked for it; the old one stays if the new one fails.
    async fn reconnect_if_asked(&mut self) {
        if !std::mem::take(&mut self.due.reconnect) {
            return;
        }
        match self.session.reconnect().await {
            Ok(()) => {
                self.failovers_seen = 0;
                // A new key or endpoint may be the fix for the fatal code: try it now.
                if self.pause.calls_paused_until.take().is_some() {
                    tracing::info!(
                        "reload: new API client; the pause after a fatal API error ends"
                    );
                    self.pause.held = None;
                }
            }
            Err(e) => tracing::error!(
                kind = e.metric_label(),
                "reload: cannot build the API client from the new config; keeping the old one: {e}"
            ),
        }
    }

    /// Runs the round `trigger` asks for, unless calls are paused (it is held until the pause
    /// ends) or it is callbacks' and their share of the budget is spent (it waits for it).
    async fn run_round(
        &mut self,
        trigger: Trigger,
        inputs: &mut mpsc::Receiver<Input>,
        deferred: &mut Vec<Input>,
    ) {
        if self.pause.calls_paused_until.is_some() {
            self.pause.held = Some(self.pause.held.map_or(trigger, |held| held.min(trigger)));
        } else if trigger == Trigger::Callback
            && self
                .pause
                .callback_not_before
                .is_some_and(|t| Instant::now() < t)
        {
            // Callbacks' re-sends wait for their share of the budget; meanwhile more callbacks
            // only make marks unknown, so each member is re-sent once when the round runs.
            self.pause.callback_waiting = true;
        } else {
            let started = Instant::now();
            self.reconcile(trigger, inputs, deferred).await;
            // Every reconcile sends what callbacks made unknown.
            self.pause.callback_waiting = false;
            if trigger == Trigger::Callback {
                self.pause.callback_not_before = Some(schedule::next_callback_round(
                    started,
                    self.pause.last_round_calls,
                    self.session.config.max_calls_per_second,
                ));
            }
            self.report_status();
        }
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
