//! Output formats (SPEC section 6): the human plan and the `--json` contract.
//!
//! Rendering writes ANSI styles unconditionally; callers write through `anstream`, which strips
//! them when the output is not a terminal or `NO_COLOR` is set.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::model::UnixTime;
use crate::plan::{ChangeKind, Plan, Summary};

const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const BOLD: Style = Style::new().bold();

/// The human plan, ending with the summary line.
pub fn human_plan(plan: &Plan, now: UnixTime) -> String {
    if plan.is_empty() {
        return "No changes. Marks match the desired state.\n".into();
    }
    let mut out = String::new();
    for (group, changes) in &plan.changes {
        let _ = writeln!(out, "{BOLD}group {group}{BOLD:#}");
        let width = changes
            .iter()
            .map(|c| c.account.as_str().chars().count())
            .max()
            .unwrap_or(0)
            + 3;
        let mark_width = changes
            .iter()
            .map(|c| c.mark.to_string().len())
            .max()
            .unwrap_or(0);
        for c in changes {
            let (sign, style, note) = match c.kind {
                ChangeKind::Set => ('+', GREEN, String::new()),
                ChangeKind::Reassert => ('+', GREEN, "reassert".to_string()),
                ChangeKind::Clear => ('-', RED, String::new()),
                ChangeKind::Renew(at) => (
                    '~',
                    YELLOW,
                    format!("renew (confirmed {} ago)", age(now - at)),
                ),
            };
            let account = format!("{:<width$}", c.account.as_str());
            let line = if note.is_empty() {
                format!("{sign} {account}{}", c.mark)
            } else {
                format!(
                    "{sign} {account}{:<mark_width$}  {note}",
                    c.mark.to_string()
                )
            };
            let _ = writeln!(out, "  {style}{line}{style:#}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", summary_line(&plan.summary));
    out
}

/// `Plan: 1 to set, 1 to clear, 1 to renew in 1 group, 2 API calls.`
pub fn summary_line(s: &Summary) -> String {
    format!(
        "Plan: {} to set, {} to clear, {} to renew in {} {}, {} API {}.",
        s.set,
        s.clear,
        s.renew,
        s.groups,
        plural(s.groups, "group", "groups"),
        s.calls,
        plural(s.calls, "call", "calls"),
    )
}

/// Singular or plural by count.
pub fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// An age such as `61h`, `45m` or `30s`: hours are what matters for mark 500's 72 h.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 2 * 3600 {
        format!("{}h", secs / 3600)
    } else if secs >= 120 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The `plan --json` object. Field names are a contract (SPEC section 6).
#[derive(Serialize)]
pub struct JsonPlan<'a> {
    /// Bumped only on incompatible changes.
    pub format_version: u32,
    /// Counts.
    pub summary: JsonSummary,
    /// The calls in execution order.
    pub calls: Vec<JsonCall<'a>>,
}

/// The `summary` object.
#[derive(Serialize)]
pub struct JsonSummary {
    /// Marks to set.
    pub set: usize,
    /// Marks to clear.
    pub clear: usize,
    /// Marks 500 to renew.
    pub renew: usize,
    /// Groups with changes.
    pub groups: usize,
    /// API calls.
    pub calls: usize,
}

/// One call.
#[derive(Serialize)]
pub struct JsonCall<'a> {
    /// The group ID.
    pub group: &'a str,
    /// "set" or "clear".
    pub command: &'static str,
    /// Members and their marks.
    pub members: Vec<JsonMember<'a>>,
}

/// One member of a call.
#[derive(Serialize)]
pub struct JsonMember<'a> {
    /// The account.
    pub account: &'a str,
    /// The marks, ascending.
    pub marks: Vec<u32>,
}

impl<'a> JsonPlan<'a> {
    /// The JSON view of a plan.
    pub fn new(plan: &'a Plan) -> Self {
        let s = plan.summary;
        JsonPlan {
            format_version: 1,
            summary: JsonSummary {
                set: s.set,
                clear: s.clear,
                renew: s.renew,
                groups: s.groups,
                calls: s.calls,
            },
            calls: plan
                .calls
                .iter()
                .map(|c| JsonCall {
                    group: c.group.as_str(),
                    command: c.command.as_str(),
                    members: c
                        .members
                        .iter()
                        .map(|(a, m)| JsonMember {
                            account: a.as_str(),
                            marks: m.iter().map(|m| m.get()).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The plan as one line of JSON.
pub fn json_plan(plan: &Plan) -> String {
    serde_json::to_string(&JsonPlan::new(plan)).expect("plan serializes")
}

/// One applied call, for humans: `set @TGS#a: 9 members confirmed, 2 pending (offline)`.
pub fn human_call(report: &crate::apply::CallReport<'_>) -> String {
    use crate::apply::Outcome;
    let call = report.call;
    let head = format!("{} {}", call.command.as_str(), call.group);
    let n = call.members.len();
    match report.outcome {
        Outcome::Done { confirmed, pending } => {
            let verb = match call.command {
                crate::plan::Command::Set => "confirmed",
                crate::plan::Command::Clear => "cleared",
            };
            let mut line = format!(
                "{GREEN}{head}{GREEN:#}: {} {} {verb}",
                confirmed.len(),
                plural(confirmed.len(), "member", "members")
            );
            if !pending.is_empty() {
                let names: Vec<&str> = pending.iter().take(5).map(|(a, _)| a.as_str()).collect();
                let more = if pending.len() > 5 { ", ..." } else { "" };
                let _ = write!(
                    line,
                    ", {YELLOW}{} pending (offline: {}{more}){YELLOW:#}",
                    pending.len(),
                    names.join(", ")
                );
            }
            line
        }
        Outcome::GroupGone(e) => format!(
            "{YELLOW}{head}{YELLOW:#}: the group no longer exists ({e}); its recorded marks were forgotten"
        ),
        Outcome::Failed(e) if e.code().is_some() => format!(
            "{RED}{head}{RED:#}: failed for {n} {}: {e} ({})",
            plural(n, "member", "members"),
            crate::tim::codes::describe(e.code().unwrap_or_default())
        ),
        Outcome::Failed(e) => format!(
            "{RED}{head}{RED:#}: failed for {n} {}: {e}",
            plural(n, "member", "members")
        ),
        Outcome::Skipped { group_gone: true } => {
            format!("{head}: skipped, the group no longer exists")
        }
        Outcome::Skipped { group_gone: false } => {
            format!("{RED}{head}{RED:#}: not sent, the run stopped at a fatal error")
        }
    }
}

/// One applied call as a JSON line.
pub fn json_call(report: &crate::apply::CallReport<'_>) -> String {
    use crate::apply::Outcome;
    let call = report.call;
    fn members(list: &[(crate::model::Account, crate::model::MarkSet)]) -> Vec<JsonMember<'_>> {
        list.iter()
            .map(|(a, m)| JsonMember {
                account: a.as_str(),
                marks: m.iter().map(|m| m.get()).collect(),
            })
            .collect()
    }
    let value = match report.outcome {
        Outcome::Done { confirmed, pending } => serde_json::json!({
            "group": call.group.as_str(), "command": call.command.as_str(),
            "outcome": if pending.is_empty() { "ok" } else if confirmed.is_empty() { "offline" } else { "partial" },
            "confirmed": members(confirmed), "pending": members(pending),
        }),
        Outcome::GroupGone(e) => serde_json::json!({
            "group": call.group.as_str(), "command": call.command.as_str(), "outcome": "group_gone",
            "error": {"code": e.code(), "message": e.to_string()},
        }),
        Outcome::Failed(e) => serde_json::json!({
            "group": call.group.as_str(), "command": call.command.as_str(), "outcome": "failed",
            "members": members(&call.members),
            "error": {"code": e.code(), "kind": e.metric_label(), "message": e.to_string()},
        }),
        Outcome::Skipped { group_gone } => serde_json::json!({
            "group": call.group.as_str(), "command": call.command.as_str(), "outcome": "skipped",
            "reason": if *group_gone { "group_gone" } else { "stopped" },
        }),
    };
    value.to_string()
}

/// `Apply complete: N set, N cleared, N renewed, N pending (offline), N failed, N API calls.`
pub fn apply_line(t: &crate::apply::Totals) -> String {
    format!(
        "Apply complete: {} set, {} cleared, {} renewed, {} pending (offline), {} failed, {} API {}.",
        t.set,
        t.cleared,
        t.renewed,
        t.pending,
        t.failed,
        t.calls,
        plural(t.calls, "call", "calls")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_unit_that_matters() {
        assert_eq!(age(61 * 3600 + 59), "61h");
        assert_eq!(age(2 * 3600), "2h");
        assert_eq!(age(119 * 60), "119m");
        assert_eq!(age(5), "5s");
        assert_eq!(age(-5), "0s");
    }

    #[test]
    fn summary_line_pluralizes() {
        let s = Summary {
            set: 1,
            clear: 0,
            renew: 0,
            groups: 1,
            calls: 1,
        };
        assert_eq!(
            summary_line(&s),
            "Plan: 1 to set, 0 to clear, 0 to renew in 1 group, 1 API call."
        );
        let s = Summary {
            set: 3,
            clear: 2,
            renew: 1,
            groups: 2,
            calls: 4,
        };
        assert_eq!(
            summary_line(&s),
            "Plan: 3 to set, 2 to clear, 1 to renew in 2 groups, 4 API calls."
        );
    }
}
