//! What happened to an apply's calls: each call's outcome and the run's totals. `apply` makes
//! them and `render` shows them; they live here, below both, so the renderer never knows the
//! executor.

use std::time::Duration;

use crate::model::{Account, MarkSet};
use crate::plan::Call;
use crate::tim::client::CallError;

/// What happened to one call.
#[derive(Debug)]
pub enum Outcome {
    /// The service answered; for sets, `pending` lists the members it left out (offline).
    Done {
        /// Members and the marks the service confirmed.
        confirmed: Vec<(Account, MarkSet)>,
        /// Members and marks that were not applied because the member was offline.
        pending: Vec<(Account, MarkSet)>,
    },
    /// The group no longer exists (10010/10015): its recorded marks are dropped.
    GroupGone(CallError),
    /// The call failed after retries.
    Failed(CallError),
    /// Not sent, and why.
    Skipped(Skip),
}

/// Why a call was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// An earlier call found the group gone: nothing is left to do there.
    GroupGone,
    /// This run stopped itself: a fatal code, or a state save that failed.
    Halted,
    /// The caller stopped the run (a signal, the daemon's shutdown): the next run plans it again.
    Stopped,
}

/// One call's report, for the per-call output lines.
#[derive(Debug)]
pub struct CallReport<'a> {
    /// The call as planned.
    pub call: &'a Call,
    /// What happened.
    pub outcome: &'a Outcome,
    /// How long the call took, retries included (zero when it was not sent).
    pub elapsed: Duration,
}

/// The counts of the final `Apply complete:` line (and, serialized, of `apply --json`'s summary
/// line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Marks newly confirmed (including reasserted ones).
    pub set: usize,
    /// Marks cleared (`clear` in JSON, the plan's name).
    #[serde(rename = "clear")]
    pub cleared: usize,
    /// Marks 500 renewed (`renew` in JSON, the plan's name).
    #[serde(rename = "renew")]
    pub renewed: usize,
    /// Marks not applied because their member was offline.
    pub pending: usize,
    /// Marks in calls that failed or were skipped.
    pub failed: usize,
    /// Calls sent (not counting retries).
    pub calls: usize,
    /// Groups found gone and forgotten.
    #[serde(skip)]
    pub groups_gone: usize,
    /// Marks in calls not sent because the run was stopped (by a fatal error, or from outside).
    #[serde(skip)]
    pub skipped: usize,
}
