//! One reconcile: plan from the desired cache and the in-memory state (renewals of mark 500 only
//! while the files are broken or the guard refuses), then [`apply::execute`], the same code as
//! `marksync apply`, with systemd kept informed and SIGTERM honoured while it runs.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::systemd::{notify, watchdog_period};
use super::{Daemon, Input, Trigger, interval, schedule};
use crate::apply;
use crate::config::notify::Event;
use crate::engine::SHUTDOWN_GRACE;
use crate::model::UnixTime;
use crate::outcome::{CallReport, Outcome};
use crate::plan::{self, Plan};

impl Daemon {
    /// The plan of this round: the full plan when the desired files are good, else renewals of
    /// mark 500 only (nothing else changes while the files are broken).
    pub(super) fn plan(&mut self, now: UnixTime) -> Plan {
        let policy = crate::engine::policy(
            &self.session.config,
            std::mem::take(&mut self.due.reassert_due),
        );
        match (
            self.desired.desired(),
            self.health.desired_problems.is_some(),
        ) {
            (Some(desired), false) => {
                let full = plan::plan(desired, &self.state, now, &policy);
                let verdict = if self.opts.allow_mass_clear {
                    Ok(())
                } else {
                    full.check_guard(&self.session.config.guard)
                };
                self.notifier.condition(
                    Event::GuardRefused,
                    verdict.is_err(),
                    "the mass-clear guard refused the plan: renewing mark 500 only until the desired files change or the daemon runs with --allow-mass-clear",
                    || verdict.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                );
                match verdict {
                    Ok(()) => full,
                    Err(refusal) => {
                        tracing::error!(
                            "{refusal}; renewing mark 500 only until the desired files change or the daemon runs with --allow-mass-clear"
                        );
                        self.health.guard_refused = true;
                        schedule::renewals_only(&self.state, now, &policy)
                    }
                }
            }
            _ => schedule::renewals_only(&self.state, now, &policy),
        }
    }

    /// One reconcile. Inputs that arrive meanwhile go to `deferred` (Shutdown acts at once:
    /// no new calls are sent, calls in flight finish within [`SHUTDOWN_GRACE`]).
    pub(super) async fn reconcile(
        &mut self,
        trigger: Trigger,
        inputs: &mut mpsc::Receiver<Input>,
        deferred: &mut Vec<Input>,
    ) {
        if std::mem::take(&mut self.due.refresh_due) {
            self.refresh(inputs, deferred).await;
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
        }
        let now = self.session.clock().now();
        self.last_reconcile_at = Some(now);
        let plan = self.plan(now);
        self.pause.last_round_calls = plan.summary.calls;
        self.metrics.set_managed(self.state.managed_count());
        if plan.is_empty() {
            self.finish_round(trigger, "no_changes", true);
            return;
        }
        tracing::info!(
            trigger = trigger.label(),
            set = plan.summary.set,
            clear = plan.summary.clear,
            renew = plan.summary.renew,
            calls = plan.summary.calls,
            "{}",
            crate::render::summary_line(&plan.summary)
        );
        if self.opts.dry_run {
            self.finish_round(trigger, "no_changes", true);
            return;
        }
        let settings = apply::Settings {
            offline_error_codes: self.session.config.offline_error_codes.clone(),
            stop: self.stop.clone(),
        };
        let metrics = self.metrics.clone();
        let mut audit = super::audit::Audit::new(&self.state, &plan);
        let on_call = |report: CallReport<'_>| {
            let outcome = super::audit::outcome_label(report.outcome);
            metrics.record_call(report.call.command.as_str(), outcome, report.elapsed);
            let call = report.call;
            if let Outcome::Failed(e) = report.outcome {
                tracing::warn!(group = %call.group, command = call.command.as_str(), members = call.members.len(), outcome, kind = e.metric_label(), "call failed: {e}");
            } else {
                tracing::info!(group = %call.group, command = call.command.as_str(), members = call.members.len(), outcome, elapsed_ms = report.elapsed.as_millis() as u64, "call");
            }
            for change in audit.record(call, report.outcome) {
                let (before, after) = (
                    super::audit::marks_text(&change.before),
                    super::audit::marks_text(&change.after),
                );
                tracing::debug!(group = %change.group, account = %change.account, before, after, "member marks {before} -> {after}");
            }
        };
        let work = self.session.execute(
            plan,
            &mut self.state,
            &settings,
            on_call,
            shutdown_requested(inputs, deferred),
            |()| {
                tracing::info!(
                    "shutdown requested during a reconcile: no new calls; waiting for calls in flight"
                )
            },
        );
        let result = match keep_systemd_informed(work, self.health.ready).await {
            Ok(ended) => ended.output,
            Err(e) => {
                tracing::error!(kind = e.metric_label(), "cannot connect: {e}");
                self.finish_round(trigger, "failed", false);
                return;
            }
        };
        match result {
            None => {
                tracing::error!(
                    "calls in flight did not finish within {SHUTDOWN_GRACE:?}; the next start settles them from the saved intents"
                );
                // What was confirmed before the cut is in memory only: save it on the way out.
                self.mark_dirty();
                self.round_detail = Some(format!(
                    "calls in flight did not finish within {}s of the shutdown",
                    SHUTDOWN_GRACE.as_secs()
                ));
                self.finish_round(trigger, "failed", false);
            }
            Some(Err(e)) => {
                tracing::error!(kind = e.metric_label(), "cannot save state: {e}");
                self.mark_dirty();
                self.round_detail = Some(format!("cannot save state: {e}"));
                self.finish_round(trigger, "failed", false);
            }
            Some(Ok(applied)) => {
                self.dirty_since = None;
                let t = applied.totals;
                tracing::info!(
                    trigger = trigger.label(),
                    "{}",
                    crate::render::apply_line(&t)
                );
                let outcome = if applied.fatal.is_some() {
                    "failed"
                } else if t.failed > 0 {
                    "partial"
                } else {
                    "ok"
                };
                let fatal = applied
                    .fatal
                    .as_ref()
                    .map(|f| format!("\nstopped by a fatal API error: {f}"));
                self.round_detail = Some(format!(
                    "{}{}",
                    crate::render::apply_line(&t),
                    fatal.unwrap_or_default()
                ));
                self.finish_round(trigger, outcome, outcome == "ok");
                match &applied.fatal {
                    Some(fatal) => {
                        let pause = self.pause.fatal_backoff.next_wait();
                        self.pause.calls_paused_until = Some(Instant::now() + pause);
                        let text = format!(
                            "fatal API error: {fatal}; no API calls for {}s",
                            pause.as_secs()
                        );
                        tracing::error!(kind = fatal.metric_label(), "{text}");
                        self.health.last_failure = Some(text);
                        self.publish_readiness();
                    }
                    None => self.pause.fatal_backoff.reset(),
                }
            }
        }
    }

    /// Reads the live marks and makes the in-memory state agree (SPEC section 10), before this
    /// round plans: its reads go through the shared rate limiter ahead of the round's writes.
    /// Only with good desired files (classifying against stale ones could adopt or forget the
    /// wrong marks). A permission refusal turns refresh off until SIGHUP; any other failure is
    /// a warning and the round plans from the state as it is.
    ///
    /// Inputs arriving meanwhile go to `deferred`; a shutdown abandons the reads at once (the
    /// state is changed only after every read, so it stays as it was).
    async fn refresh(&mut self, inputs: &mut mpsc::Receiver<Input>, deferred: &mut Vec<Input>) {
        let Some(desired) = self
            .desired
            .desired()
            .filter(|_| self.health.desired_problems.is_none())
        else {
            return;
        };
        let reads = self.session.refresh(
            desired,
            &mut self.state,
            shutdown_requested(inputs, deferred),
            |()| {
                tracing::info!(
                    "shutdown requested during a refresh: reads abandoned, state unchanged"
                )
            },
        );
        let ended = match keep_systemd_informed(reads, self.health.ready).await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::warn!(
                    kind = e.metric_label(),
                    "refresh failed; planning from the recorded state: {e}"
                );
                return;
            }
        };
        let Some(result) = ended.output else {
            // A shutdown came: the reads were abandoned, and no round follows.
            self.stop.store(true, Ordering::SeqCst);
            return;
        };
        match result {
            Ok(r) => {
                let counts = r.classified.counts();
                if !r.classified.changes.is_empty() {
                    self.mark_dirty();
                }
                self.metrics.set_drift(&counts);
                self.metrics.set_last_refresh(self.session.clock().now());
                let needs_calls = r.classified.needs_calls();
                self.notifier.condition(
                    Event::Drift,
                    needs_calls,
                    if needs_calls {
                        "a refresh found drift: marks the service lost or holds without the desired files; repairing"
                    } else {
                        "a refresh found no drift that needs calls"
                    },
                    || crate::notify::drift_line(&counts),
                );
                tracing::info!(
                    drift = %counts
                        .iter()
                        .map(|(kind, n)| format!("{}={n}", kind.as_str()))
                        .collect::<Vec<_>>()
                        .join(" "),
                    unnameable_holders = r.classified.unnameable.len(),
                    unread = r.unread.len(),
                    reads = r.calls,
                    "refreshed the live marks"
                );
                self.health.last_drift = Some(counts);
            }
            Err(e) if e.is_no_permission() => {
                tracing::error!("refresh turned off until SIGHUP, relying on reassert_every: {e}");
                self.due.refresh_off = true;
            }
            Err(e) => {
                tracing::warn!(
                    kind = e.metric_label(),
                    "refresh failed; planning from the recorded state: {e}"
                );
            }
        }
        self.observe_failovers();
    }

    /// Mirrors the client's failover count into the metric.
    pub(super) fn observe_failovers(&mut self) {
        let total = self.session.failovers();
        self.metrics
            .record_failovers(total.saturating_sub(self.failovers_seen));
        self.failovers_seen = self.failovers_seen.max(total);
    }

    pub(super) fn finish_round(&mut self, trigger: Trigger, outcome: &str, ok: bool) {
        // Once per change: a failed or partial round starts `apply_failed`, a round whose calls
        // all succeeded (or that had none to send) clears it.
        let detail = self.round_detail.take().unwrap_or_default();
        let failed = matches!(outcome, "failed" | "partial");
        self.notifier.condition(
            Event::ApplyFailed,
            failed,
            &format!(
                "reconcile ({}) {}",
                trigger.label(),
                if failed { outcome } else { "succeeded" }
            ),
            || detail,
        );
        let (outcome, ok) = if std::mem::take(&mut self.health.guard_refused) {
            ("refused", false)
        } else {
            (outcome, ok)
        };
        self.health.last_ok = ok;
        self.health.reconciled = true;
        self.observe_failovers();
        self.metrics.record_reconcile(trigger.label(), outcome);
        if ok {
            self.metrics.set_last_success(self.session.clock().now());
        }
        self.refresh_counts();
        self.health.last_failure = (!ok).then(|| {
            format!(
                "last reconcile ({}) did not succeed: {outcome}",
                trigger.label()
            )
        });
        self.publish_readiness();
    }
}

/// Resolves when a shutdown arrives on `inputs`; every other input that arrives meanwhile goes
/// to `deferred` (the next round's).
async fn shutdown_requested(inputs: &mut mpsc::Receiver<Input>, deferred: &mut Vec<Input>) {
    while let Some(input) = inputs.recv().await {
        if matches!(input, Input::Shutdown) {
            return;
        }
        deferred.push(input);
    }
    // Nobody can ask any more.
    std::future::pending().await
}

/// Runs `work`, keeping systemd informed meanwhile: watchdog pings once the daemon is `ready`,
/// start-timeout extensions during the first reconcile (it runs before READY=1).
async fn keep_systemd_informed<T>(work: impl Future<Output = T>, ready: bool) -> T {
    tokio::pin!(work);
    let mut keepalive = interval(watchdog_period().min(Duration::from_secs(10)));
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = keepalive.tick() => {
                if ready {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(30_000_000)]);
                }
            }
        }
    }
}
