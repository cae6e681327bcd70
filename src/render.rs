//! Output formats (SPEC section 6): the human plan and the `--json` contract.
//!
//! Rendering writes ANSI styles unconditionally; callers write through `anstream`, which strips
//! them when the output is not a terminal or `NO_COLOR` is set.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use std::collections::BTreeMap;
use std::path::Path;

use crate::desired::Origin;
use crate::model::{Account, GroupId, MarkSet, UnixTime, age};
use crate::plan::{Call, Change, ChangeKind, Plan, Summary};
use crate::refresh::{Classified, Drift, DriftCounts, OverCapacity, UnnameableHolder};
use crate::state::State;

mod drift;
mod guard;
mod markdown;

use drift::drift_counts_text;
pub use drift::{drift, drift_words, unnameable_count};
pub use guard::{GuardReport, Verdict};
pub use markdown::{MARKDOWN_BUDGET, MARKDOWN_MARKER, markdown_plan};

const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const BOLD: Style = Style::new().bold();

/// What the human plan shows besides the plan itself.
#[derive(Clone, Copy, Debug)]
pub struct PlanView<'a> {
    /// The state the plan was made against: each member's marks before the plan.
    pub state: &'a State,
    /// Where each desired group is declared (heads each group with `file:line`).
    pub origins: &'a BTreeMap<GroupId, Origin>,
    /// The desired path of the config: origins are shown relative to its parent directory
    /// (`marks/classroom.yaml:4` for `desired: marks/`).
    pub desired_root: &'a Path,
    /// When the plan was made (renewals show the age of their confirmation).
    pub now: UnixTime,
    /// Whether the plan compared with the service (`--refresh`); without it, "No changes" hints
    /// that it could.
    pub refreshed: bool,
    /// Whether the plan is against `endpoint: embedded`: headed with [`EMBEDDED_HEADLINE`].
    pub embedded: bool,
}

impl<'a> PlanView<'a> {
    /// The view of a plan made from `desired` against `state` at `now`, without `--refresh`.
    pub fn new(
        desired: &'a crate::desired::DesiredState,
        state: &'a State,
        desired_root: &'a Path,
        now: UnixTime,
    ) -> Self {
        PlanView {
            state,
            origins: &desired.origins,
            desired_root,
            now,
            refreshed: false,
            embedded: false,
        }
    }
}

/// The first line of a human plan against `endpoint: embedded`, so that a real-looking config
/// pointed at the emulator cannot pass for a run against the service.
pub const EMBEDDED_HEADLINE: &str =
    "Against the embedded emulator (endpoint: embedded): nothing reaches Tencent Cloud.\n\n";

/// What [`against_embedded`] adds to a summary line.
pub const EMBEDDED_NOTE: &str = "(against the embedded emulator: nothing reached Tencent Cloud)";

/// `line` (a summary ending in `.`) with [`EMBEDDED_NOTE`] before its period.
pub fn against_embedded(line: &str) -> String {
    let body = line.strip_suffix('.').unwrap_or(line);
    format!("{body} {EMBEDDED_NOTE}.")
}

/// The "no changes" text: what it means, and how to compare with the service.
pub fn no_changes(refreshed: bool) -> String {
    let mut out = String::from("No changes. Marks match the recorded state.\n");
    if !refreshed {
        out.push_str(
            "(The state records what marksync last applied; `--refresh` compares with the service.)\n",
        );
    }
    out
}

/// One member's line before alignment.
struct MemberLine {
    sign: char,
    style: Style,
    account: String,
    before: String,
    after: String,
    note: String,
}

/// The human plan: per group (headed with the `file:line` declaring it), one line per member,
/// `sign account  before -> after  note`; members with marks to clear first (their calls run
/// first), then the others, each part in account order (the calls' order); the summary line last.
pub fn human_plan(plan: &Plan, view: &PlanView<'_>) -> String {
    let headline = if view.embedded { EMBEDDED_HEADLINE } else { "" };
    if plan.is_empty() {
        return format!("{headline}{}", no_changes(view.refreshed));
    }
    let mut out = String::from(headline);
    for (group, changes) in &plan.changes {
        match declared_at(group, view) {
            Some(at) => {
                let _ = writeln!(out, "{BOLD}group {group}{BOLD:#}  ({at})");
            }
            None => {
                let _ = writeln!(
                    out,
                    "{BOLD}group {group}{BOLD:#}  (no longer declared: its marks are cleared)"
                );
            }
        }
        for (style, text) in member_texts(group, changes, view) {
            let _ = writeln!(out, "  {style}{text}{style:#}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", summary_line(&plan.summary));
    out
}

/// `marks/classroom.yaml:4`: where `group` is declared, relative to the desired root's parent;
/// `None` when no desired file declares it any more.
fn declared_at(group: &GroupId, view: &PlanView<'_>) -> Option<String> {
    let base = view.desired_root.parent().unwrap_or(Path::new(""));
    view.origins.get(group).map(|o| {
        let path = o.path.strip_prefix(base).unwrap_or(&o.path);
        format!("{}:{}", path.display(), o.line)
    })
}

/// One group's member lines, aligned and unstyled, each with the style it is shown in:
/// `sign account  before -> after  note`. The one rendering of a member's change, shared by the
/// human plan (`plan`, `apply`, `apply FILE`) and `plan --markdown`.
fn member_texts(group: &GroupId, changes: &[Change], view: &PlanView<'_>) -> Vec<(Style, String)> {
    let lines = member_lines(group, changes, view);
    let aw = lines
        .iter()
        .map(|l| l.account.chars().count())
        .max()
        .unwrap_or(0);
    let bw = lines
        .iter()
        .map(|l| l.before.chars().count())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            let text = format!(
                "{} {:<aw$}  {:<bw$}  -> {}",
                l.sign, l.account, l.before, l.after
            );
            let text = if l.note.is_empty() {
                text.trim_end().to_string()
            } else {
                format!("{text}   {}", l.note)
            };
            (l.style, text)
        })
        .collect()
}

/// The members of one group's changes, clears first, with their marks before and after.
fn member_lines(group: &GroupId, changes: &[Change], view: &PlanView<'_>) -> Vec<MemberLine> {
    let mut by_account: BTreeMap<&Account, Vec<&Change>> = BTreeMap::new();
    for c in changes {
        by_account.entry(&c.account).or_default().push(c);
    }
    let mut lines: Vec<(bool, MemberLine)> = by_account
        .into_iter()
        .map(|(account, changes)| {
            let confirmed = view
                .state
                .confirmed(group, account)
                .map(|c| c.marks())
                .unwrap_or_default();
            let intended = view
                .state
                .intended(group, account)
                .cloned()
                .unwrap_or_default();
            let mut before: MarkSet = confirmed.clone();
            before.extend(intended.iter());
            let mut after = before.clone();
            let mut clears = false;
            let mut notes = Vec::new();
            for c in &changes {
                match c.kind {
                    ChangeKind::Clear => {
                        clears = true;
                        after.remove(c.mark);
                    }
                    ChangeKind::Set => {
                        after.insert(c.mark);
                    }
                    ChangeKind::Reassert => {
                        after.insert(c.mark);
                        notes.push(format!("reassert {}", c.mark));
                    }
                    ChangeKind::Renew(at) => {
                        after.insert(c.mark);
                        notes.push(format!(
                            "renew {} ({})",
                            c.mark,
                            confirmed_ago(view.now - at)
                        ));
                    }
                }
            }
            // A mark an interrupted apply may have set or cleared is unknown: `1001?`, even
            // when a confirmation is recorded too (the planner counts it as unknown as well).
            let before_text = before
                .iter()
                .map(|m| {
                    if confirmed.contains(m) && !intended.contains(m) {
                        m.to_string()
                    } else {
                        format!("{m}?")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let (sign, style) = if before.is_empty() {
                ('+', GREEN)
            } else if after.is_empty() {
                ('-', RED)
            } else {
                ('~', YELLOW)
            };
            let line = MemberLine {
                sign,
                style,
                account: account.as_str().to_string(),
                before: before_text,
                after: after
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                note: notes.join(", "),
            };
            (clears, line)
        })
        .collect();
    // Stable: account order within each part.
    lines.sort_by_key(|(clears, _)| !*clears);
    lines.into_iter().map(|(_, l)| l).collect()
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

/// `confirmed 61h ago`, for a confirmation `secs` before now. A confirmation after now (the
/// clock was stepped back, or another host's clock runs ahead) says so instead of "0s ago".
pub fn confirmed_ago(secs: i64) -> String {
    if secs < 0 {
        "confirmed in the future: clock skew?".into()
    } else {
        format!("confirmed {} ago", age(secs))
    }
}

/// The `plan --json` object. Field names are a contract (SPEC section 6).
#[derive(Serialize)]
pub struct JsonPlan<'a> {
    /// Bumped only on incompatible changes.
    pub format_version: u32,
    /// Counts.
    pub summary: JsonSummary,
    /// The calls in execution order, serialized straight from the plan (a million members
    /// are not copied into a second tree first).
    pub calls: JsonCalls<'a>,
    /// With `--refresh`: every drifted (group, account, mark) and its kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<&'a [Drift]>,
    /// With `--refresh`: live holders whose names marksync cannot hold as an account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unnameable_holders: Option<&'a [UnnameableHolder]>,
    /// With `--refresh`, when there are any: marks whose holders after the plan exceed the
    /// service's 1000 per mark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_capacity: Option<&'a [OverCapacity]>,
    /// `plan --json`: the mass-clear guard's verdict (SPEC section 12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
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
    /// With `--refresh`: drifted marks counted by kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftCounts>,
    /// With `--refresh`: how many live holders marksync cannot name (see
    /// [`JsonPlan::unnameable_holders`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unnameable_holders: Option<usize>,
}

/// The calls of a plan as a JSON array of `{"group", "command", "members": [{"account",
/// "marks"}]}` objects, written as they are read from the plan.
#[derive(Clone, Copy)]
pub struct JsonCalls<'a>(pub &'a [Call]);

impl Serialize for JsonCalls<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};
        struct Members<'a>(&'a [(Account, MarkSet)]);
        impl Serialize for Members<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for (account, marks) in self.0 {
                    seq.serialize_element(&Member(account, marks))?;
                }
                seq.end()
            }
        }
        struct Member<'a>(&'a Account, &'a MarkSet);
        impl Serialize for Member<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut member = serializer.serialize_struct("JsonMember", 2)?;
                member.serialize_field("account", self.0.as_str())?;
                member.serialize_field("marks", &Marks(self.1))?;
                member.end()
            }
        }
        struct Marks<'a>(&'a MarkSet);
        impl Serialize for Marks<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|m| m.get()))
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for call in self.0 {
            struct One<'a>(&'a Call);
            impl Serialize for One<'_> {
                fn serialize<S: serde::Serializer>(
                    &self,
                    serializer: S,
                ) -> Result<S::Ok, S::Error> {
                    let mut call = serializer.serialize_struct("JsonCall", 3)?;
                    call.serialize_field("group", self.0.group.as_str())?;
                    call.serialize_field("command", self.0.command.as_str())?;
                    call.serialize_field("members", &Members(&self.0.members))?;
                    call.end()
                }
            }
            seq.serialize_element(&One(call))?;
        }
        seq.end()
    }
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
                drift: None,
                unnameable_holders: None,
            },
            drift: None,
            unnameable_holders: None,
            over_capacity: None,
            guard: None,
            calls: JsonCalls(&plan.calls),
        }
    }

    /// Adds what `--refresh` found: the `"drift"` array and `summary.drift`.
    pub fn with_drift(mut self, classified: &'a Classified) -> Self {
        self.summary.drift = Some(classified.counts());
        self.drift = Some(&classified.drift);
        self.summary.unnameable_holders = Some(classified.unnameable.len());
        self.unnameable_holders = Some(&classified.unnameable);
        self.over_capacity =
            (!classified.over_capacity.is_empty()).then_some(&classified.over_capacity[..]);
        self
    }
}

/// The plan as one line of JSON.
pub fn json_plan(plan: &Plan) -> String {
    serde_json::to_string(&JsonPlan::new(plan)).expect("plan serializes")
}

/// The plan made with `--refresh` as one line of JSON: the plan object plus `"drift"` and
/// `summary.drift`.
pub fn json_plan_refreshed(plan: &Plan, classified: &Classified) -> String {
    serde_json::to_string(&JsonPlan::new(plan).with_drift(classified)).expect("plan serializes")
}

/// Writes [`json_plan`] (or, with `classified`, [`json_plan_refreshed`]) and a newline to `out`
/// as it is serialized: a plan of a million members is never held as one string (42 MB).
pub fn write_json_plan(
    out: &mut impl std::io::Write,
    plan: &Plan,
    classified: Option<&Classified>,
) -> std::io::Result<()> {
    write_json_plan_guarded(out, plan, classified, None)
}

/// [`write_json_plan`] with the `"guard"` object of `plan --json`, when `guard` is given.
pub fn write_json_plan_guarded(
    out: &mut impl std::io::Write,
    plan: &Plan,
    classified: Option<&Classified>,
    guard: Option<GuardReport>,
) -> std::io::Result<()> {
    let mut view = match classified {
        Some(c) => JsonPlan::new(plan).with_drift(c),
        None => JsonPlan::new(plan),
    };
    view.guard = guard;
    serde_json::to_writer(&mut *out, &view).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

/// One applied call, for humans: `set @TGS#a: 9 members confirmed, 2 pending (offline)`.
pub fn human_call(report: &crate::outcome::CallReport<'_>) -> String {
    use crate::outcome::{Outcome, Skip};
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
        Outcome::Skipped(Skip::GroupGone) => {
            format!("{head}: skipped, the group no longer exists")
        }
        Outcome::Skipped(Skip::Halted) => {
            format!("{RED}{head}{RED:#}: not sent, the run stopped at an earlier error")
        }
        Outcome::Skipped(Skip::Stopped) => {
            format!("{YELLOW}{head}{YELLOW:#}: not sent, the run was interrupted")
        }
    }
}

/// One applied call as a JSON line.
pub fn json_call(report: &crate::outcome::CallReport<'_>) -> String {
    use crate::outcome::{Outcome, Skip};
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
        Outcome::Skipped(skip) => serde_json::json!({
            "group": call.group.as_str(), "command": call.command.as_str(), "outcome": "skipped",
            "reason": match skip {
                Skip::GroupGone => "group_gone",
                Skip::Halted => "halted",
                Skip::Stopped => "interrupted",
            },
        }),
    };
    value.to_string()
}

/// `Apply complete: N set, N cleared, N renewed, N pending (offline), N failed, N API calls.`,
/// headed `Apply incomplete:` after any failed call (SPEC 6), so the first word tells the truth.
pub fn apply_line(t: &crate::outcome::Totals) -> String {
    let head = if t.failed > 0 {
        "Apply incomplete"
    } else {
        "Apply complete"
    };
    format!("{head}: {}.", totals(t))
}

/// `N set, N cleared, N renewed, N pending (offline), N failed, N API calls`: what an apply
/// did, for its last line and for the line of an interrupted one.
pub fn totals(t: &crate::outcome::Totals) -> String {
    format!(
        "{} set, {} cleared, {} renewed, {} pending (offline), {} failed, {} API {}",
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
mod tests;
