//! What the daemon reports about itself: `/readyz`, the state's gauges, systemd's status line.

use super::{Daemon, schedule, systemd::notify};
use crate::http::Readiness;

/// What `/readyz`, the metrics and systemd's status line report.
pub(super) struct Health {
    /// The last desired-file problems, logged once per change.
    pub(super) desired_problems: Option<String>,
    /// Where they are (count, first file and line) without the source text, for `/readyz`.
    pub(super) desired_problems_at: Option<String>,
    pub(super) readiness: tokio::sync::watch::Sender<Readiness>,
    /// The drift counts of the last refresh, for `/readyz`.
    pub(super) last_drift: Option<crate::refresh::DriftCounts>,
    /// Whether a reconcile has finished: `/readyz` is 503 until then.
    pub(super) reconciled: bool,
    /// Whether the last reconcile ended without failures.
    pub(super) last_ok: bool,
    /// Why the last reconcile did not succeed, if it did not.
    pub(super) last_failure: Option<String>,
    /// Desired marks not confirmed, as of the last [`Daemon::refresh_counts`].
    pub(super) pending: usize,
    /// Whether READY=1 was sent (the first reconcile is over).
    pub(super) ready: bool,
    /// Whether this round's plan was refused by the mass-clear guard (the reconcile outcome).
    pub(super) guard_refused: bool,
}

impl Daemon {
    /// Recomputes the state's gauges (one walk of the desired marks for the pending count, kept
    /// for the `STATUS=` line).
    pub(super) fn refresh_counts(&mut self) {
        self.health.pending = self.pending_count();
        self.metrics.set_managed(self.state.managed_count());
        self.metrics.set_pending(self.health.pending);
        self.metrics
            .set_mark500_earliest_expiry(schedule::earliest_500_expiry(
                &self.state,
                self.session.clock().now(),
            ));
    }

    /// Desired marks the state does not hold yet (offline members, failures).
    pub(super) fn pending_count(&self) -> usize {
        schedule::pending_count(&self.state, self.desired.desired())
    }

    /// What `/readyz` says: ready when the desired files parse and the last reconcile succeeded.
    pub(super) fn publish_readiness(&self) {
        let desired_ok = self.desired.desired().is_some() && self.health.desired_problems.is_none();
        let detail = match (&self.health.desired_problems, &self.health.last_failure) {
            (Some(_), _) => format!(
                "desired files do not parse: {} (every problem, with its source line, is in the log)",
                self.health
                    .desired_problems_at
                    .as_deref()
                    .unwrap_or("see the log")
            ),
            (None, Some(f)) => f.clone(),
            (None, None) if !self.health.reconciled => "the first reconcile is in progress".into(),
            (None, None) if desired_ok => match &self.health.last_drift {
                // Drift is normal (members go offline): reported, never "not ready".
                Some(c) if c.total() > 0 => drift_detail(c),
                _ => "ok".into(),
            },
            (None, None) => "desired files not loaded yet".into(),
        };
        // Not ready before the first reconcile is over: "last reconcile healthy" cannot be true
        // of a reconcile that has not happened.
        let _ = self.health.readiness.send(Readiness {
            desired_ok,
            last_reconcile_ok: self.health.reconciled && self.health.last_failure.is_none(),
            detail,
            standby: None,
        });
    }

    /// The `STATUS=` line systemd shows.
    pub(super) fn report_status(&self) {
        let desired = if self.health.desired_problems.is_some() {
            "desired files broken (last good kept)"
        } else {
            "desired ok"
        };
        let status = format!(
            "{desired}; {} managed marks, {} pending; last reconcile {}",
            self.state.managed_count(),
            self.health.pending,
            if self.health.last_ok { "ok" } else { "failed" }
        );
        notify(&[sd_notify::NotifyState::Status(&status)]);
    }
}

/// `/readyz`'s words for the last refresh: marks it could not judge ("not checked") are not
/// drift, and must not read as drift.
fn drift_detail(c: &crate::refresh::DriftCounts) -> String {
    use crate::refresh::DriftKind;
    let unchecked = c.get(DriftKind::NotChecked);
    let drift = c.without(DriftKind::NotChecked);
    let mut text = if drift.total() == 0 {
        "ok; the last refresh found no drift".to_string()
    } else {
        format!(
            "ok; drift at the last refresh: {}",
            drift
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(kind, n)| format!("{n} {}", crate::render::drift_words(kind)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if unchecked > 0 {
        text.push_str(&format!(
            "; {unchecked} {} not checked",
            crate::render::plural(unchecked, "mark", "marks")
        ));
    }
    text
}

#[cfg(test)]
mod drift_tests {
    use super::drift_detail;
    use crate::model::{Account, GroupId, Mark};
    use crate::refresh::{Drift, DriftCounts, DriftKind, NotChecked};

    fn counts(kinds: &[DriftKind]) -> DriftCounts {
        let drift: Vec<Drift> = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| Drift {
                group: GroupId::new("@TGS#a").unwrap(),
                account: Account::from_string(format!("m{i}")).unwrap(),
                mark: Mark::new(1000).unwrap(),
                kind,
                reason: (kind == DriftKind::NotChecked).then_some(NotChecked::Recent),
                desired: true,
            })
            .collect();
        DriftCounts::of(&drift)
    }

    #[test]
    fn marks_not_checked_are_not_reported_as_drift() {
        use DriftKind::*;
        assert_eq!(
            drift_detail(&counts(&[NotChecked, NotChecked])),
            "ok; the last refresh found no drift; 2 marks not checked"
        );
        assert_eq!(
            drift_detail(&counts(&[Lost, NotChecked])),
            "ok; drift at the last refresh: 1 lost; 1 mark not checked"
        );
        assert_eq!(
            drift_detail(&counts(&[Offline, Offline])),
            "ok; drift at the last refresh: 2 offline"
        );
    }
}
