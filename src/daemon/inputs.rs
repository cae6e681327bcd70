//! What the daemon's inputs do to it: a batch folded into flags and a trigger, the desired
//! files and the config read again, the state flushed after changes outside a round, and when
//! the next mark 500 renewal is due.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;

use super::systemd::notify;
use super::timers::Timers;
use super::{
    Daemon, Input, STATE_FLUSH_AFTER, Trigger, audit, schedule, sleep_or_forever, sleep_until_opt,
    tick_opt,
};
use crate::config::{Config, Endpoint};
use crate::desired::cache::Refresh;
use crate::engine;
use crate::http::CallbackEvent;

/// What a batch of inputs asks for ([`Daemon::absorb`]).
pub(super) struct Absorbed {
    /// The reconcile to run, if any.
    trigger: Option<Trigger>,
    /// SIGHUP came: re-read the config.
    reload: bool,
    /// Desired files changed: re-read them.
    files_changed: bool,
}

/// Records that `t` asks for a reconcile: the most significant trigger names it.
pub(super) fn note(t: Trigger, trigger: &mut Option<Trigger>) {
    *trigger = Some(trigger.map_or(t, |old| old.min(t)));
}

impl Daemon {
    /// Waits for the next input: a message on `inputs`, or a timer (a renewal due, the end of a
    /// pause, a re-read, a periodic timer). `None` when what woke it was handled here (the
    /// state's delayed save, a watchdog ping) and there is nothing to absorb.
    pub(super) async fn next_input(
        &mut self,
        timers: &mut Timers,
        inputs: &mut mpsc::Receiver<Input>,
    ) -> Option<Input> {
        // While calls are paused, a renewal that comes due waits for the pause to end.
        let renewal = if self.pause.calls_paused_until.is_some() {
            None
        } else {
            self.next_renewal_in()
        };
        tokio::select! {
            Some(input) = inputs.recv() => Some(input),
            () = sleep_or_forever(renewal) => Some(Input::RenewalDue),
            () = sleep_until_opt(self.dirty_since.map(|t| t + STATE_FLUSH_AFTER)) => {
                self.flush_state().await;
                None
            }
            () = sleep_until_opt(self.pause.calls_paused_until) => {
                self.pause.calls_paused_until = None;
                Some(Input::BackoffOver)
            }
            () = sleep_until_opt(
                self.pause.callback_not_before.filter(|_| self.pause.callback_waiting)
            ) => Some(Input::CallbackRoundDue),
            () = sleep_until_opt(self.due.reread_at) => {
                self.due.reread_at = None;
                Some(Input::FilesChanged)
            }
            _ = timers.retry.tick() => Some(Input::RetryPending),
            _ = timers.reassert.tick() => Some(Input::Reassert),
            () = tick_opt(&mut timers.refresh) => Some(Input::Refresh),
            _ = timers.watchdog.tick() => {
                notify(&[sd_notify::NotifyState::Watchdog]);
                None
            }
        }
    }

    /// Folds a batch of inputs into the daemon's flags, reading nothing: returns the trigger of
    /// the reconcile to run, if any (the most significant one, for the metric label), and what
    /// must be read again ([`Daemon::read_again`] does the reading).
    pub(super) fn absorb(&mut self, batch: Vec<Input>) -> Absorbed {
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
                    self.due.reassert_due = true;
                    note(Trigger::Reassert, &mut trigger);
                }
                Input::Refresh => {
                    if self.session.config.refresh_every.is_some() && !self.due.refresh_off {
                        self.due.refresh_due = true;
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
                    if let Some(held) = self.pause.held.take() {
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
    pub(super) fn read_again(&mut self, absorbed: Absorbed) -> Option<Trigger> {
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

    pub(super) fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Saves state changes made outside a reconcile (callbacks) and updates the gauges they
    /// move, so neither `/metrics` nor a restart after a crash waits for the next non-empty
    /// reconcile, which could be hours away.
    pub(super) async fn flush_state(&mut self) {
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
    pub(super) fn apply_callback(&mut self, event: CallbackEvent) -> bool {
        let unknown = schedule::presence_changed(&mut self.state, &event);
        if unknown > 0 {
            tracing::debug!(group = %event.group, members = event.accounts.len(), marks = unknown, event = ?event.event, "callback: confirmed marks are unknown until settled");
            self.mark_dirty();
        }
        schedule::callback_needs_reconcile(&event, unknown, self.desired.desired())
    }

    /// Re-reads the desired files; returns whether the desired state changed.
    pub(super) fn refresh_desired(&mut self) -> bool {
        let refresh = self.desired.refresh();
        if self.desired.last_unreadable {
            let wait = self.due.reread_backoff.next_wait();
            tracing::warn!("desired files could not be read; reading them again in {wait:?}");
            self.due.reread_at = Some(Instant::now() + wait);
        } else {
            self.due.reread_backoff.reset();
            self.due.reread_at = None;
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
                let verb = if self.health.reconciled {
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
                if self.health.desired_problems.as_deref() != Some(text.as_str()) {
                    tracing::error!(
                        errors = problems.error_count(),
                        "desired files do not parse; keeping the last good desired state and renewing mark 500 only: {}",
                        audit::one_line(&text)
                    );
                }
                self.metrics.set_desired_errors(problems.error_count());
                self.notifier.condition(
                    crate::config::notify::Event::DesiredInvalid,
                    true,
                    "desired files do not parse; keeping the last good desired state and renewing mark 500 only",
                    || text.clone(),
                );
                self.health.desired_problems = Some(text);
                self.health.desired_problems_at = Some(problems.location_summary());
                self.publish_readiness();
                false
            }
        }
    }

    /// Records that the desired files parse; returns whether they did not before.
    pub(super) fn set_desired_ok(&mut self) -> bool {
        let was_broken = self.health.desired_problems.take().is_some();
        if was_broken {
            tracing::info!("desired files parse again");
        }
        self.metrics.set_desired_errors(0);
        self.notifier.condition(
            crate::config::notify::Event::DesiredInvalid,
            false,
            "desired files parse again",
            String::new,
        );
        self.publish_readiness();
        was_broken
    }

    /// SIGHUP: a new config replaces the old one only if it loads; the desired files are re-read.
    pub(super) fn reload(&mut self) {
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
                if config.notify != self.session.config.notify {
                    tracing::warn!(
                        "reload: `notify` changes need a restart; keeping the old webhooks"
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
                let notify = std::mem::take(&mut self.session.config.notify); // the notifier's
                self.session.config = config;
                self.session.config.notify = notify;
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
                    self.due.reconnect = true;
                }
                if std::mem::take(&mut self.due.refresh_off)
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
    pub(super) fn next_renewal_in(&self) -> Option<Duration> {
        // While the files are broken every confirmed 500 is renewed (see `renewals_only`), so
        // every one of them counts here too.
        let desired = self
            .desired
            .desired()
            .filter(|_| self.health.desired_problems.is_none());
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
}
