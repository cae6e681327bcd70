//! The daemon's Prometheus metrics (SPEC section 8), served as OpenMetrics text on `GET /metrics`.
//!
//! One [`Metrics`] per process, shared behind an `Arc`: every method takes `&self` and is cheap
//! (atomics, plus a read lock on a labelled family). This module knows nothing of the daemon; the
//! daemon calls the typed recorders below and the HTTP listener calls [`Metrics::encode`].
//!
//! Series (all prefixed `marksync_`):
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `marksync_calls_total` | counter | `command` (set, clear), `outcome` |
//! | `marksync_call_duration_seconds` | histogram | `command` |
//! | `marksync_reconciles_total` | counter | `trigger`, `outcome` |
//! | `marksync_managed_marks` | gauge | |
//! | `marksync_leader` | gauge: 1 while this daemon holds the state's lock (active), 0 while it stands by | |
//! | `marksync_pending_marks` | gauge | |
//! | `marksync_mark500_earliest_expiry_timestamp_seconds` | gauge (0: none) | |
//! | `marksync_desired_errors` | gauge | |
//! | `marksync_desired_ok` | gauge (1/0) | |
//! | `marksync_last_success_timestamp_seconds` | gauge (0: never) | |
//! | `marksync_callbacks_total` | counter | `command`, `outcome` |
//! | `marksync_callback_events_dropped_total` | counter | |
//! | `marksync_callback_refusals_total` | counter | `reason` ([`CALLBACK_REFUSAL_REASONS`]) |
//! | `marksync_drift_marks` | gauge, per kind, as of the last refresh | `kind` (lost, offline, gone, unmanaged, adopted, not_checked) |
//! | `marksync_last_refresh_timestamp_seconds` | gauge (0: never) | |
//! | `marksync_endpoint_failovers_total` | counter | |
//! | `marksync_notify_delivered_total` | counter | `format`, `event` |
//! | `marksync_notify_failures_total` | counter (after retries) | `format`, `event` |
//! | `marksync_notify_dropped_total` | counter (queue full: the oldest dropped) | `format` |
//! | `marksync_build_info` | gauge (always 1) | `version`, `commit` |
//!
//! The documented label combinations are created at zero up front, so `rate()` and `increase()`
//! see a series before its first event. Other label values (such as a `CallError::metric_label()`)
//! are accepted and appear on first use.
//!
//! Label order is stable: labels are encoded in the order of the fields of their label struct
//! (histogram buckets put `le` first). The text ends in `# EOF`: it is OpenMetrics, which the
//! listener serves as `application/openmetrics-text; version=1.0.0`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::model::UnixTime;

/// The commit the binary was built from: `MARKSYNC_BUILD_COMMIT` at build time (the container
/// build and release scripts set it; `build.rs` sets it from git in a checkout of this crate),
/// else `unknown`.
pub const BUILD_COMMIT: &str = match option_env!("MARKSYNC_BUILD_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// The `command` label values of the calls counter and latency histogram.
pub const CALL_COMMANDS: &[&str] = &["set", "clear"];
/// The `outcome` label values of the calls counter: `ok` (every account confirmed), `partial`
/// (some accounts offline), `offline` (every account offline), `failed` (after retries),
/// `group_gone` (the group no longer exists), `skipped` (not sent after a fatal error).
pub const CALL_OUTCOMES: &[&str] = &[
    "ok",
    "partial",
    "offline",
    "failed",
    "group_gone",
    "skipped",
];
/// The `trigger` label values of the reconciles counter.
pub const RECONCILE_TRIGGERS: &[&str] = &[
    "startup",
    "files",
    "renewal",
    "retry_pending",
    "reassert",
    "refresh",
    "callback",
    "reload",
];
/// The `outcome` label values of the reconciles counter: `ok`, `partial` (some calls pending or
/// failed), `failed`, `refused` (the mass-clear guard or a broken desired file stopped it),
/// `no_changes` (nothing to do).
pub const RECONCILE_OUTCOMES: &[&str] = &["ok", "partial", "failed", "refused", "no_changes"];
/// The `outcome` label values of the callbacks counter: `accepted` (an event was passed on),
/// `rejected_sign` (missing or wrong `Sign`), `rejected_time` (`RequestTime` missing, not a number
/// or more than 60 s away), `rejected_app` (another `SdkAppid`), `malformed` (unreadable query or
/// body), `too_large` (body over the limit), `replayed` (a `(Sign, RequestTime)` accepted
/// before), `replay_capacity` (too many signed callbacks within the window), `ignored`
/// (answered OK, nothing to do), `forwarded` (a standby relayed it to the active daemon, which
/// answered), `forward_failed` (a standby could not relay it), `forward_loop` (relayed by a
/// standby to another standby, which never relays it again).
pub const CALLBACK_OUTCOMES: &[&str] = &[
    "forwarded",
    "forward_failed",
    "forward_loop",
    "accepted",
    "rejected_sign",
    "rejected_time",
    "rejected_app",
    "malformed",
    "too_large",
    "replayed",
    "replay_capacity",
    "ignored",
];
/// The `reason` label values of the refusals counter: the refusing outcomes of
/// [`CALLBACK_OUTCOMES`], plus `replayed` (a `(Sign, RequestTime)` accepted before) and
/// `replay_capacity` (too many signed callbacks within the window to remember another).
pub const CALLBACK_REFUSAL_REASONS: &[&str] = &[
    "forward_failed",
    "forward_loop",
    "rejected_sign",
    "rejected_time",
    "rejected_app",
    "malformed",
    "too_large",
    "replayed",
    "replay_capacity",
];
/// The `command` label values of the callbacks counter. Any other `CallbackCommand` is counted
/// as `other`, so a caller cannot create series at will.
pub const CALLBACK_COMMANDS: &[&str] = &[
    crate::tim::callback::MEMBER_STATE_CHANGE,
    crate::tim::callback::AFTER_NEW_MEMBER_JOIN,
    crate::tim::callback::AFTER_MEMBER_EXIT,
    "other",
];

/// Labels of the calls counter and the callbacks counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandOutcome {
    /// Which command.
    command: String,
    /// How it ended.
    outcome: String,
}

/// Labels of the call latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    /// Which command.
    command: String,
}

/// Labels of `marksync_build_info`, in this order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// The package version.
    version: String,
    /// [`BUILD_COMMIT`].
    commit: String,
}

/// Labels of the callback refusals counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    /// Why the callback was refused ([`CALLBACK_REFUSAL_REASONS`]).
    reason: String,
}

/// Labels of the drift gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// The drift kind (SPEC section 10).
    kind: String,
}

/// Labels of the notification counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatEvent {
    /// The `notify:` entry's format.
    format: String,
    /// The event sent.
    event: String,
}

/// Labels of the dropped-notifications counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabel {
    /// The `notify:` entry's format.
    format: String,
}

/// Labels of the reconciles counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerOutcome {
    /// What started it.
    trigger: String,
    /// How it ended.
    outcome: String,
}

/// A new latency histogram: 5 ms to about 41 s, doubling (a call includes its retries and its
/// wait for the rate limiter).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric of the daemon, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    /// Owns the encoding of everything below (the handles share their values with it).
    registry: Registry,
    /// `marksync_calls_total{command,outcome}`.
    calls: Family<CommandOutcome, Counter>,
    /// `marksync_call_duration_seconds{command}`.
    call_latency: Family<CommandLabel, Histogram, fn() -> Histogram>,
    /// `marksync_reconciles_total{trigger,outcome}`.
    reconciles: Family<TriggerOutcome, Counter>,
    /// `marksync_managed_marks`.
    managed: Gauge,
    /// `marksync_leader`.
    leader: Gauge,
    /// `marksync_pending_marks`.
    pending: Gauge,
    /// `marksync_mark500_earliest_expiry_timestamp_seconds`.
    mark500_expiry: Gauge,
    /// `marksync_desired_errors`.
    desired_errors: Gauge,
    /// `marksync_desired_ok`.
    desired_ok: Gauge,
    /// `marksync_last_success_timestamp_seconds`.
    last_success: Gauge,
    /// `marksync_callbacks_total{command,outcome}`.
    callbacks: Family<CommandOutcome, Counter>,
    /// `marksync_callback_events_dropped_total`.
    callback_events_dropped: Counter,
    /// `marksync_callback_refusals_total{reason}`.
    callback_refusals: Family<ReasonLabel, Counter>,
    /// `marksync_drift_marks{kind}`.
    drift: Family<KindLabel, Gauge>,
    /// `marksync_last_refresh_timestamp_seconds`.
    last_refresh: Gauge,
    /// `marksync_endpoint_failovers_total`: mirrors the client's own count.
    failovers: Counter,
    /// `marksync_notify_delivered_total{format,event}`.
    notify_delivered: Family<FormatEvent, Counter>,
    /// `marksync_notify_failures_total{format,event}`.
    notify_failures: Family<FormatEvent, Counter>,
    /// `marksync_notify_dropped_total{format}`.
    notify_dropped: Family<FormatLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every series, with the documented label combinations at zero and the gauges at
    /// 0 (`desired_ok` included: nothing is loaded yet).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("marksync");
        let calls = Family::<CommandOutcome, Counter>::default();
        registry.register(
            "calls",
            "modify_user_info calls by command (set, clear) and outcome",
            calls.clone(),
        );
        let call_latency: Family<CommandLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "call_duration",
            "Duration of modify_user_info calls, retries and rate-limit waits included",
            Unit::Seconds,
            call_latency.clone(),
        );
        let reconciles = Family::<TriggerOutcome, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by trigger and outcome",
            reconciles.clone(),
        );
        let managed = Gauge::default();
        registry.register(
            "managed_marks",
            "Member marks confirmed set by marksync (pairs of member and mark)",
            managed.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this daemon holds the state's lock and acts, 0 while it stands by",
            leader.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "pending_marks",
            "Desired member marks not set yet because the member was offline",
            pending.clone(),
        );
        let mark500_expiry = Gauge::default();
        registry.register_with_unit(
            "mark500_earliest_expiry_timestamp",
            "Unix time at which the earliest mark 500 expires; 0 when none is held",
            Unit::Seconds,
            mark500_expiry.clone(),
        );
        let desired_errors = Gauge::default();
        registry.register(
            "desired_errors",
            "Problems in the desired files as last read; 0 when they parse",
            desired_errors.clone(),
        );
        let desired_ok = Gauge::default();
        registry.register(
            "desired_ok",
            "1 when the desired files as last read parse, else 0",
            desired_ok.clone(),
        );
        let last_success = Gauge::default();
        registry.register_with_unit(
            "last_success_timestamp",
            "Unix time of the end of the last fully successful reconcile; 0 when none yet",
            Unit::Seconds,
            last_success.clone(),
        );
        let callbacks = Family::<CommandOutcome, Counter>::default();
        registry.register(
            "callbacks",
            "Callbacks received by command and outcome",
            callbacks.clone(),
        );
        let callback_events_dropped = Counter::default();
        registry.register(
            "callback_events_dropped",
            "Accepted callbacks whose event could not be queued (queue full or daemon stopping)",
            callback_events_dropped.clone(),
        );
        let callback_refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "callback_refusals",
            "Callbacks refused, by reason (replays, wrong signatures, other apps, bad requests)",
            callback_refusals.clone(),
        );
        let drift = Family::<KindLabel, Gauge>::default();
        registry.register(
            "drift_marks",
            "Marks that differed from the recorded state at the last refresh, by kind",
            drift.clone(),
        );
        let last_refresh = Gauge::default();
        registry.register_with_unit(
            "last_refresh_timestamp",
            "Unix time of the last successful refresh of the live marks; 0 when none yet",
            Unit::Seconds,
            last_refresh.clone(),
        );
        let failovers = Counter::default();
        registry.register(
            "endpoint_failovers",
            "Times calls switched from the main endpoint to the backup endpoint",
            failovers.clone(),
        );
        let notify_delivered = Family::<FormatEvent, Counter>::default();
        registry.register(
            "notify_delivered",
            "Notifications a webhook accepted, by format and event",
            notify_delivered.clone(),
        );
        let notify_failures = Family::<FormatEvent, Counter>::default();
        registry.register(
            "notify_failures",
            "Notifications not delivered after retries (an error status or an error in the body), by format and event",
            notify_failures.clone(),
        );
        let notify_dropped = Family::<FormatLabel, Counter>::default();
        registry.register(
            "notify_dropped",
            "Notifications dropped unsent because the webhook's queue was full (the oldest go first)",
            notify_dropped.clone(),
        );

        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The version and commit of this binary (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: BUILD_COMMIT.to_owned(),
            })
            .set(1);

        // Creating a labelled series is enough to list it at zero; the guard is not needed.
        let m = Metrics {
            registry,
            calls,
            call_latency,
            reconciles,
            managed,
            leader,
            pending,
            mark500_expiry,
            desired_errors,
            desired_ok,
            last_success,
            callbacks,
            callback_events_dropped,
            callback_refusals,
            drift,
            last_refresh,
            failovers,
            notify_delivered,
            notify_failures,
            notify_dropped,
        };
        for kind in crate::refresh::DriftKind::ALL {
            drop(m.drift.get_or_create(&KindLabel {
                kind: kind.as_str().to_owned(),
            }));
        }
        for command in CALL_COMMANDS {
            drop(m.call_latency.get_or_create(&CommandLabel {
                command: (*command).to_owned(),
            }));
            for outcome in CALL_OUTCOMES {
                drop(m.calls.get_or_create(&CommandOutcome {
                    command: (*command).to_owned(),
                    outcome: (*outcome).to_owned(),
                }));
            }
        }
        for trigger in RECONCILE_TRIGGERS {
            for outcome in RECONCILE_OUTCOMES {
                drop(m.reconciles.get_or_create(&TriggerOutcome {
                    trigger: (*trigger).to_owned(),
                    outcome: (*outcome).to_owned(),
                }));
            }
        }
        for reason in CALLBACK_REFUSAL_REASONS {
            drop(m.callback_refusals.get_or_create(&ReasonLabel {
                reason: (*reason).to_owned(),
            }));
        }
        for command in CALLBACK_COMMANDS {
            for outcome in CALLBACK_OUTCOMES {
                drop(m.callbacks.get_or_create(&CommandOutcome {
                    command: (*command).to_owned(),
                    outcome: (*outcome).to_owned(),
                }));
            }
        }
        m
    }

    /// Sets `marksync_drift_marks{kind}` from a refresh's counts.
    pub fn set_drift(&self, counts: &crate::refresh::DriftCounts) {
        for kind in crate::refresh::DriftKind::ALL {
            self.drift
                .get_or_create(&KindLabel {
                    kind: kind.as_str().to_owned(),
                })
                .set(counts.get(kind) as i64);
        }
    }

    /// Lists the notification series of a configured `format` at zero, for every event (the
    /// notifier calls this once per `notify:` entry, so unused formats add no series).
    pub fn init_notify(&self, format: &str, events: &[&str]) {
        drop(self.notify_dropped.get_or_create(&FormatLabel {
            format: format.to_owned(),
        }));
        for event in events {
            let labels = FormatEvent {
                format: format.to_owned(),
                event: (*event).to_owned(),
            };
            drop(self.notify_delivered.get_or_create(&labels));
            drop(self.notify_failures.get_or_create(&labels));
        }
    }

    /// Counts a notification delivered (`ok`) or given up on after retries.
    pub fn record_notify(&self, format: &str, event: &str, ok: bool) {
        let labels = FormatEvent {
            format: format.to_owned(),
            event: event.to_owned(),
        };
        if ok {
            self.notify_delivered.get_or_create(&labels).inc();
        } else {
            self.notify_failures.get_or_create(&labels).inc();
        }
    }

    /// Counts a notification dropped from a full queue.
    pub fn record_notify_dropped(&self, format: &str) {
        self.notify_dropped
            .get_or_create(&FormatLabel {
                format: format.to_owned(),
            })
            .inc();
    }

    /// Sets `marksync_last_refresh_timestamp_seconds`.
    pub fn set_last_refresh(&self, at: UnixTime) {
        self.last_refresh.set(at);
    }

    /// Adds `n` failovers to `marksync_endpoint_failovers_total` (the daemon passes the growth
    /// of `Client::endpoint_stats().failovers` since it last looked).
    pub fn record_failovers(&self, n: u64) {
        if n > 0 {
            self.failovers.inc_by(n);
        }
    }

    /// Counts one `modify_user_info` call and observes its latency. `command` is `set` or `clear`;
    /// `outcome` one of [`CALL_OUTCOMES`] or a `CallError::metric_label()`.
    pub fn record_call(&self, command: &str, outcome: &str, latency: Duration) {
        self.calls
            .get_or_create(&CommandOutcome {
                command: command.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.call_latency
            .get_or_create(&CommandLabel {
                command: command.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts one reconcile: `trigger` one of [`RECONCILE_TRIGGERS`], `outcome` one of
    /// [`RECONCILE_OUTCOMES`]. Does not touch the last success time: see
    /// [`Metrics::set_last_success`].
    pub fn record_reconcile(&self, trigger: &str, outcome: &str) {
        self.reconciles
            .get_or_create(&TriggerOutcome {
                trigger: trigger.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one callback. `command` is the query's `CallbackCommand` (anything but the three
    /// presence commands is counted as `other`); `outcome` one of [`CALLBACK_OUTCOMES`].
    pub fn record_callback(&self, command: &str, outcome: &str) {
        let command = CALLBACK_COMMANDS
            .iter()
            .find(|c| **c == command)
            .copied()
            .unwrap_or("other");
        self.callbacks
            .get_or_create(&CommandOutcome {
                command: command.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a refused callback by `reason` (one of [`CALLBACK_REFUSAL_REASONS`]; any other
    /// value is counted as given, so callers pass only constants).
    pub fn record_callback_refusal(&self, reason: &str) {
        self.callback_refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an accepted callback whose event could not be queued for the daemon.
    pub fn record_callback_event_dropped(&self) {
        self.callback_events_dropped.inc();
    }

    /// Sets whether this daemon is the active one (`marksync_leader`).
    pub fn set_leader(&self, active: bool) {
        self.leader.set(i64::from(active));
    }

    /// Sets how many (member, mark) pairs the state holds as confirmed.
    pub fn set_managed(&self, n: usize) {
        self.managed.set(saturating_i64(n));
    }

    /// Sets how many desired (member, mark) pairs wait for their member to come online.
    pub fn set_pending(&self, n: usize) {
        self.pending.set(saturating_i64(n));
    }

    /// Sets the Unix time at which the earliest held mark 500 expires; `None` (no mark 500
    /// held) reads 0.
    pub fn set_mark500_earliest_expiry(&self, at: Option<UnixTime>) {
        self.mark500_expiry.set(at.unwrap_or(0));
    }

    /// Sets the number of diagnostics of the last desired-file read, and `desired_ok` to 1 when
    /// it is 0 (the files parse) or 0 otherwise.
    pub fn set_desired_errors(&self, n: usize) {
        self.desired_errors.set(saturating_i64(n));
        self.desired_ok.set(i64::from(n == 0));
    }

    /// Sets the Unix time of the last fully successful reconcile.
    pub fn set_last_success(&self, at: UnixTime) {
        self.last_success.set(at);
    }

    /// Everything in the Prometheus text format (OpenMetrics-compatible, ending in `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; keep whatever was written rather than panic.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// `n` as an `i64` gauge value, saturating (no count here comes close).
fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line that starts with `series ` (name and labels).
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn fresh_metrics_list_every_series_at_zero() {
        let text = Metrics::new().encode();
        for series in [
            r#"marksync_calls_total{command="set",outcome="ok"}"#,
            r#"marksync_calls_total{command="clear",outcome="skipped"}"#,
            r#"marksync_call_duration_seconds_count{command="set"}"#,
            r#"marksync_reconciles_total{trigger="reload",outcome="no_changes"}"#,
            "marksync_managed_marks",
            "marksync_leader",
            "marksync_pending_marks",
            r#"marksync_drift_marks{kind="lost"}"#,
            r#"marksync_drift_marks{kind="not_checked"}"#,
            "marksync_last_refresh_timestamp_seconds",
            "marksync_endpoint_failovers_total",
            "marksync_mark500_earliest_expiry_timestamp_seconds",
            "marksync_desired_errors",
            "marksync_desired_ok",
            "marksync_last_success_timestamp_seconds",
            r#"marksync_callbacks_total{command="other",outcome="ignored"}"#,
            "marksync_callback_events_dropped_total",
        ] {
            assert_eq!(
                sample(&text, series).as_deref(),
                Some("0"),
                "{series}\n{text}"
            );
        }
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn build_info_names_version_and_commit_in_that_order() {
        let text = Metrics::new().encode();
        let series = format!(
            r#"marksync_build_info{{version="{}",commit="{}"}}"#,
            env!("CARGO_PKG_VERSION"),
            BUILD_COMMIT
        );
        assert_eq!(sample(&text, &series).as_deref(), Some("1"), "{text}");
        assert!(
            text.contains("# TYPE marksync_build_info gauge\n"),
            "{text}"
        );
        assert!(!BUILD_COMMIT.is_empty());
    }

    #[test]
    fn recorders_show_in_the_text() {
        let m = Metrics::new();
        m.record_call("set", "ok", Duration::from_millis(30));
        m.record_call("set", "ok", Duration::from_millis(3));
        m.record_call("clear", "transport", Duration::from_secs(2));
        m.record_reconcile("startup", "ok");
        m.record_callback(crate::tim::callback::AFTER_MEMBER_EXIT, "accepted");
        m.record_callback("Group.SomethingElse", "ignored");
        m.record_callback_event_dropped();
        m.set_managed(1234);
        m.set_pending(5);
        m.set_mark500_earliest_expiry(Some(1_700_000_000));
        m.set_desired_errors(3);
        m.set_last_success(1_700_000_100);
        let text = m.encode();
        let expect = [
            (r#"marksync_calls_total{command="set",outcome="ok"}"#, "2"),
            (
                r#"marksync_calls_total{command="clear",outcome="transport"}"#,
                "1",
            ),
            (
                r#"marksync_call_duration_seconds_count{command="set"}"#,
                "2",
            ),
            (
                r#"marksync_call_duration_seconds_sum{command="set"}"#,
                "0.033",
            ),
            (
                r#"marksync_call_duration_seconds_bucket{le="0.005",command="set"}"#,
                "1",
            ),
            (
                r#"marksync_reconciles_total{trigger="startup",outcome="ok"}"#,
                "1",
            ),
            (
                r#"marksync_callbacks_total{command="Group.CallbackAfterMemberExit",outcome="accepted"}"#,
                "1",
            ),
            (
                r#"marksync_callbacks_total{command="other",outcome="ignored"}"#,
                "1",
            ),
            ("marksync_callback_events_dropped_total", "1"),
            ("marksync_managed_marks", "1234"),
            ("marksync_pending_marks", "5"),
            (
                "marksync_mark500_earliest_expiry_timestamp_seconds",
                "1700000000",
            ),
            ("marksync_desired_errors", "3"),
            ("marksync_desired_ok", "0"),
            ("marksync_last_success_timestamp_seconds", "1700000100"),
        ];
        for (series, value) in expect {
            assert_eq!(
                sample(&text, series).as_deref(),
                Some(value),
                "{series}\n{text}"
            );
        }
        m.set_desired_errors(0);
        m.set_mark500_earliest_expiry(None);
        let text = m.encode();
        assert_eq!(sample(&text, "marksync_desired_ok").as_deref(), Some("1"));
        assert_eq!(
            sample(&text, "marksync_mark500_earliest_expiry_timestamp_seconds").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn metrics_are_shared_across_threads() {
        let m = std::sync::Arc::new(Metrics::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                let m = m.clone();
                s.spawn(move || {
                    for _ in 0..100 {
                        m.record_call("clear", "ok", Duration::from_millis(1));
                    }
                });
            }
        });
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                r#"marksync_calls_total{command="clear",outcome="ok"}"#
            )
            .as_deref(),
            Some("400")
        );
    }
}
