//! Once per condition change (SPEC section 12): the daemon reports each condition (drift, a
//! failed apply, a guard refusal, broken desired files) every round, and a message goes out only
//! when one starts or clears. Pure: a set of active conditions and a transition function.

use std::collections::BTreeMap;

use crate::config::notify::Event;

/// The conditions that are up, each with the summary it started with.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    active: BTreeMap<Event, String>,
}

/// What to send after an observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// `event` itself when the condition started, [`Event::Recovered`] when it cleared.
    pub send: Event,
    /// The condition that changed (for `recovered`: which one cleared).
    pub condition: Event,
    /// The summary to send.
    pub summary: String,
}

impl Conditions {
    /// Records that `condition` is `up` (or not) now, and returns the message to send, if the
    /// condition changed: `condition` with `summary` when it starts, `recovered` when it clears
    /// (its summary names the condition and what `summary` says now). Staying up or staying
    /// down sends nothing, however many rounds it lasts.
    pub fn observe(&mut self, condition: Event, up: bool, summary: &str) -> Option<Transition> {
        match (up, self.active.contains_key(&condition)) {
            (true, false) => {
                self.active.insert(condition, summary.to_string());
                Some(Transition {
                    send: condition,
                    condition,
                    summary: summary.to_string(),
                })
            }
            (false, true) => {
                let was = self.active.remove(&condition).unwrap_or_default();
                let now = if summary.is_empty() {
                    String::new()
                } else {
                    format!(": {summary}")
                };
                Some(Transition {
                    send: Event::Recovered,
                    condition,
                    summary: format!("{} cleared{now} (it began with: {was})", condition.label()),
                })
            }
            _ => None,
        }
    }

    /// Whether `condition` is up.
    pub fn is_up(&self, condition: Event) -> bool {
        self.active.contains_key(&condition)
    }
}
