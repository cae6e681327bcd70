//! The daemon's log as an audit trail: one record per call (group, command, members, outcome)
//! and, at `-v`, one per member whose marks changed (marks before -> after), each a single line.
//! What to log is decided here, purely; `round` emits it.

use std::collections::HashMap;

use crate::model::{Account, GroupId, MarkSet};
use crate::outcome::Outcome;
use crate::plan::{Call, Command, Plan};
use crate::state::State;

/// A call's outcome as one word (also the `outcome` label of the calls metric).
pub(crate) fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done { pending, confirmed } if pending.is_empty() || !confirmed.is_empty() => {
            if pending.is_empty() {
                "ok"
            } else {
                "partial"
            }
        }
        Outcome::Done { .. } => "offline",
        Outcome::GroupGone(_) => "group_gone",
        Outcome::Failed(_) => "failed",
        Outcome::Skipped(_) => "skipped",
    }
}

/// One member's confirmed marks before and after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberChange {
    pub group: GroupId,
    pub account: Account,
    pub before: MarkSet,
    pub after: MarkSet,
}

/// The confirmed marks of every member a plan touches, kept current call by call, so that a
/// member in two calls (a clear, then a set) shows each step.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    marks: HashMap<(GroupId, Account), MarkSet>,
}

impl Audit {
    /// The members of `plan`'s calls with their confirmed marks in `state` (before any call).
    pub(crate) fn new(state: &State, plan: &Plan) -> Self {
        let mut marks = HashMap::new();
        for call in &plan.calls {
            for (account, _) in &call.members {
                marks
                    .entry((call.group.clone(), account.clone()))
                    .or_insert_with(|| {
                        state
                            .confirmed(&call.group, account)
                            .map(|c| c.marks())
                            .unwrap_or_default()
                    });
            }
        }
        Audit { marks }
    }

    /// The member changes `call` made, given its `outcome`: only what the service confirmed
    /// (set, or cleared) counts; a failed, skipped or offline call changes nothing.
    pub(crate) fn record(&mut self, call: &Call, outcome: &Outcome) -> Vec<MemberChange> {
        let Outcome::Done { confirmed, .. } = outcome else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        for (account, marks) in confirmed {
            let entry = self
                .marks
                .entry((call.group.clone(), account.clone()))
                .or_default();
            let before = entry.clone();
            for m in marks.iter() {
                match call.command {
                    Command::Set => {
                        entry.insert(m);
                    }
                    Command::Clear => {
                        entry.remove(m);
                    }
                }
            }
            // A renewal confirms a mark already held: still worth a line (the mark was sent).
            changes.push(MemberChange {
                group: call.group.clone(),
                account: account.clone(),
                before,
                after: entry.clone(),
            });
        }
        changes
    }
}

/// A member's marks for the log: `1000, 1003`, or `none`.
pub(crate) fn marks_text(marks: &MarkSet) -> String {
    if marks.is_empty() {
        "none".to_string()
    } else {
        marks.to_string()
    }
}

/// A multi-line text (a diagnostic with its source snippet) as one log line: its lines trimmed,
/// without the blank ones and the snippet's bare `|` gutters, joined with ` | `.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_ids::{a, g, m};

    fn call(command: Command, members: &[(&str, &[u64])]) -> Call {
        Call {
            group: g("@TGS#a"),
            command,
            members: members
                .iter()
                .map(|(acc, ms)| (a(acc), ms.iter().map(|&n| m(n)).collect::<Vec<_>>().into()))
                .collect(),
        }
    }

    fn set(marks: &[u64]) -> MarkSet {
        marks.iter().map(|&n| m(n)).collect::<Vec<_>>().into()
    }

    #[test]
    fn each_confirmed_member_gets_before_and_after_step_by_step() {
        let mut state = State::new(1);
        state.confirm(&g("@TGS#a"), &a("tom"), [m(1001), m(1002)], 10);
        let clear = call(Command::Clear, &[("tom", &[1002])]);
        let add = call(Command::Set, &[("tom", &[1003]), ("ann", &[1000])]);
        let plan = Plan {
            calls: vec![clear.clone(), add.clone()],
            ..Plan::default()
        };
        let mut audit = Audit::new(&state, &plan);

        let done = |c: &Call| Outcome::Done {
            confirmed: c.members.clone(),
            pending: Vec::new(),
        };
        let first = audit.record(&clear, &done(&clear));
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].before.clone(), first[0].after.clone()),
            (set(&[1001, 1002]), set(&[1001]))
        );
        let second = audit.record(&add, &done(&add));
        assert_eq!(second[0].before, set(&[1001]), "after the clear");
        assert_eq!(second[0].after, set(&[1001, 1003]));
        assert_eq!(
            (second[1].before.clone(), second[1].after.clone()),
            (set(&[]), set(&[1000]))
        );
    }

    #[test]
    fn offline_or_skipped_calls_change_no_member() {
        let add = call(Command::Set, &[("ann", &[1000])]);
        let plan = Plan {
            calls: vec![add.clone()],
            ..Plan::default()
        };
        let mut audit = Audit::new(&State::new(1), &plan);
        let offline = Outcome::Done {
            confirmed: Vec::new(),
            pending: add.members.clone(),
        };
        assert!(audit.record(&add, &offline).is_empty());
        assert_eq!(outcome_label(&offline), "offline");
        let skipped = Outcome::Skipped(crate::outcome::Skip::Halted);
        assert!(audit.record(&add, &skipped).is_empty());
        assert_eq!(outcome_label(&skipped), "skipped");
    }

    #[test]
    fn a_snippet_becomes_one_line() {
        let text = "error: unknown key `memebrs`\n  --> marks/a.yaml:3:5\n   |\n 3 |     memebrs:\n   |     ^^^^^^^\n\n";
        assert_eq!(
            one_line(text),
            "error: unknown key `memebrs` | --> marks/a.yaml:3:5 | 3 |     memebrs: | |     ^^^^^^^"
        );
        assert_eq!(one_line("one line"), "one line");
    }
}
