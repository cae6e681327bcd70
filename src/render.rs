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
use crate::model::{Account, GroupId, MarkSet, UnixTime};
use crate::plan::{Call, Change, ChangeKind, Plan, Summary};
use crate::refresh::{Classified, Drift, DriftCounts, DriftKind, OverCapacity, UnnameableHolder};
use crate::state::State;

mod guard;
mod markdown;

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

/// Drift kinds in words, for the human drift section.
pub fn drift_words(kind: DriftKind) -> &'static str {
    match kind {
        DriftKind::Lost => "lost",
        DriftKind::Offline => "offline",
        DriftKind::Gone => "gone",
        DriftKind::Unmanaged => "unmanaged",
        DriftKind::Adopted => "adopted",
        DriftKind::NotChecked => "not checked",
    }
}

/// `2 lost, 1 unmanaged`: the non-zero counts, in report order.
fn drift_counts_text(counts: &DriftCounts) -> String {
    DriftKind::ALL
        .iter()
        .filter(|k| counts.get(**k) > 0)
        .map(|k| format!("{} {}", counts.get(*k), drift_words(*k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The drift section a `--refresh` plan shows before its calls: per group, counts by kind; with
/// `verbose`, every drifted member and mark (`not checked` ones with the reason). Ends with a
/// blank line, so the plan follows.
pub fn drift(classified: &Classified, verbose: bool) -> String {
    let total = classified.drift.len();
    let unchecked: Vec<&Drift> = classified
        .drift
        .iter()
        .filter(|d| d.kind == DriftKind::NotChecked)
        .collect();
    if total == 0 {
        let mut out = String::from("Refreshed: the service holds what the state records.\n");
        unnameable(&mut out, &classified.unnameable, verbose);
        over_capacity(&mut out, &classified.over_capacity);
        out.push('\n');
        return out;
    }
    let mut out = String::new();
    let drifted = total - unchecked.len();
    if drifted == 0 {
        // Nothing the refresh could judge differs: that is not drift, and must not read as it.
        let _ = writeln!(
            out,
            "Refreshed: no drift found; {} {} not checked: {}.",
            unchecked.len(),
            plural(unchecked.len(), "mark", "marks"),
            not_checked_reasons(&unchecked)
        );
        if !verbose {
            unnameable(&mut out, &classified.unnameable, verbose);
            over_capacity(&mut out, &classified.over_capacity);
            out.push('\n');
            return out;
        }
    } else {
        let counts = classified
            .counts()
            .without(crate::refresh::DriftKind::NotChecked);
        let _ = write!(
            out,
            "{BOLD}Drift{BOLD:#}: {drifted} {} to report ({})",
            plural(drifted, "mark", "marks"),
            drift_counts_text(&counts)
        );
        if unchecked.is_empty() {
            out.push_str(".\n");
        } else {
            let _ = writeln!(
                out,
                "; {} more not checked: {}.",
                unchecked.len(),
                not_checked_reasons(&unchecked)
            );
        }
    }
    let mut by_group: BTreeMap<&GroupId, Vec<&Drift>> = BTreeMap::new();
    for d in &classified.drift {
        by_group.entry(&d.group).or_default().push(d);
    }
    for (group, list) in by_group {
        let owned: Vec<Drift> = list.iter().map(|d| (*d).clone()).collect();
        let _ = writeln!(
            out,
            "  group {group}: {}",
            drift_counts_text(&DriftCounts::of(&owned))
        );
        if verbose {
            let kw = list
                .iter()
                .map(|d| drift_words(d.kind).len())
                .max()
                .unwrap_or(0);
            let aw = list
                .iter()
                .map(|d| d.account.as_str().chars().count())
                .max()
                .unwrap_or(0);
            let mut sorted = list;
            sorted.sort_by(|a, b| (a.kind, &a.account, a.mark).cmp(&(b.kind, &b.account, b.mark)));
            for d in sorted {
                let reason = match d.reason {
                    Some(crate::refresh::NotChecked::FullListing) => {
                        "  (the listing was full: absence is not evidence)"
                    }
                    Some(crate::refresh::NotChecked::Recent) => {
                        "  (confirmed too recently to judge)"
                    }
                    Some(crate::refresh::NotChecked::InFlight) => {
                        "  (an interrupted apply: re-sent by the plan)"
                    }
                    None => "",
                };
                let _ = writeln!(
                    out,
                    "    {:<kw$}  {:<aw$}  {}{reason}",
                    drift_words(d.kind),
                    d.account.as_str(),
                    d.mark
                );
            }
        }
    }
    unnameable(&mut out, &classified.unnameable, verbose);
    over_capacity(&mut out, &classified.over_capacity);
    out.push('\n');
    out
}

/// `12 confirmed too recently to judge (...), 3 ...`: why marks were not checked, by reason.
fn not_checked_reasons(unchecked: &[&Drift]) -> String {
    use crate::refresh::NotChecked;
    [
        (
            NotChecked::Recent,
            "confirmed too recently to judge (the listing lags up to 40 s: refresh again later)",
        ),
        (
            NotChecked::FullListing,
            "beyond a full listing (1000 members: absence is no evidence)",
        ),
        (
            NotChecked::InFlight,
            "left unknown by an interrupted apply (the plan sends them again)",
        ),
    ]
    .iter()
    .filter_map(|(reason, words)| {
        let n = unchecked
            .iter()
            .filter(|d| d.reason == Some(*reason))
            .count();
        (n > 0).then(|| format!("{n} {words}"))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// One warning per mark whose holders after the plan exceed the service's 1000 per mark.
fn over_capacity(out: &mut String, list: &[OverCapacity]) {
    for c in list {
        let total = c.desired + c.unmanaged + c.unnameable;
        let _ = writeln!(
            out,
            "{YELLOW}warning{YELLOW:#}: group {} mark {}: {total} holders after this plan ({} \
             declared, {} unmanaged, {} unnameable) exceed the service's 1000 per mark; sets past \
             it will be refused until another tool clears some.",
            c.group, c.mark, c.desired, c.unmanaged, c.unnameable,
        );
    }
}

/// `4 live holders with names marksync cannot hold as an account`.
pub fn unnameable_count(n: usize) -> String {
    if n == 1 {
        "1 live holder with a name marksync cannot hold as an account".into()
    } else {
        format!("{n} live holders with names marksync cannot hold as an account")
    }
}

/// The drift section's report of live holders marksync cannot name: the count, per group and
/// mark; with `verbose`, each name quoted and escaped (an empty name reads `""`).
fn unnameable(out: &mut String, list: &[UnnameableHolder], verbose: bool) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{YELLOW}{}{YELLOW:#} (set by another tool: never touched, and still using the group's \
         10-mark and 1000-member capacity).",
        unnameable_count(list.len())
    );
    let mut by_group: BTreeMap<&GroupId, Vec<&UnnameableHolder>> = BTreeMap::new();
    for h in list {
        by_group.entry(&h.group).or_default().push(h);
    }
    for (group, holders) in by_group {
        let mut per_mark: BTreeMap<crate::model::Mark, usize> = BTreeMap::new();
        for h in &holders {
            *per_mark.entry(h.mark).or_default() += 1;
        }
        let marks = per_mark
            .iter()
            .map(|(m, n)| format!("mark {m}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "  group {group}: {} ({marks})", holders.len());
        if verbose {
            let names: Vec<String> = holders.iter().map(|h| format!("{:?}", h.holder)).collect();
            let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
            for (h, name) in holders.iter().zip(&names) {
                let _ = writeln!(out, "    {name:<w$}  {}", h.mark);
            }
        }
    }
}

/// One applied call, for humans: `set @TGS#a: 9 members confirmed, 2 pending (offline)`.
pub fn human_call(report: &crate::apply::CallReport<'_>) -> String {
    use crate::apply::{Outcome, Skip};
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
pub fn json_call(report: &crate::apply::CallReport<'_>) -> String {
    use crate::apply::{Outcome, Skip};
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
pub fn apply_line(t: &crate::apply::Totals) -> String {
    let head = if t.failed > 0 {
        "Apply incomplete"
    } else {
        "Apply complete"
    };
    format!("{head}: {}.", totals(t))
}

/// `N set, N cleared, N renewed, N pending (offline), N failed, N API calls`: what an apply
/// did, for its last line and for the line of an interrupted one.
pub fn totals(t: &crate::apply::Totals) -> String {
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
mod tests {
    use super::*;
    use crate::desired::{DesiredGroup, DesiredState};
    use crate::model::test_ids::{a, g, m};
    use crate::plan::{self, Policy};
    use crate::refresh::NotChecked;
    use std::path::PathBuf;

    const NOW: UnixTime = 1_764_000_000;
    const H: i64 = 3600;

    fn origin(file: &str, line: u64) -> Origin {
        Origin {
            path: PathBuf::from(format!("/srv/marks/{file}")),
            line,
            column: 3,
            source_line: String::new(),
            source_offset: 0,
        }
    }

    /// Plans `desired` (group, account, marks) against `state` (group, account, mark, confirmed
    /// hours ago) and renders it without styles.
    fn render(
        desired: &[(&str, &str, &[u64])],
        state: &[(&str, &str, u64, i64)],
        refreshed: bool,
    ) -> String {
        let mut d = DesiredState::default();
        for (group, account, marks) in desired {
            let grp: &mut DesiredGroup = d.groups.entry(g(group)).or_default();
            grp.members
                .entry(a(account))
                .or_default()
                .extend(marks.iter().map(|&n| m(n)));
            d.origins.insert(g(group), origin("classroom.yaml", 4));
        }
        let mut st = State::new(1);
        for (group, account, mark, hours) in state {
            st.confirm(&g(group), &a(account), [m(*mark)], NOW - hours * H);
        }
        let plan = plan::plan(&d, &st, NOW, &Policy::default());
        let mut view = PlanView::new(&d, &st, Path::new("/srv/marks"), NOW);
        view.refreshed = refreshed;
        anstream::adapter::strip_str(&human_plan(&plan, &view)).to_string()
    }

    #[test]
    fn members_read_before_to_after_with_clears_first_and_the_summary_last() {
        let text = render(
            &[
                ("@TGS#a", "tom_li", &[1001, 1003]),
                ("@TGS#a", "new_one", &[1000]),
                ("@TGS#a", "host", &[500]),
            ],
            &[
                ("@TGS#a", "tom_li", 1001, 1),
                ("@TGS#a", "tom_li", 1002, 1),
                ("@TGS#a", "gone", 1001, 1),
                ("@TGS#a", "host", 500, 61),
            ],
            false,
        );
        assert_eq!(
            text,
            "group @TGS#a  (marks/classroom.yaml:4)\n\
             \x20 - gone     1001        ->\n\
             \x20 ~ tom_li   1001, 1002  -> 1001, 1003\n\
             \x20 ~ host     500         -> 500   renew 500 (confirmed 61h ago)\n\
             \x20 + new_one              -> 1000\n\
             \n\
             Plan: 2 to set, 2 to clear, 1 to renew in 1 group, 2 API calls.\n"
        );
    }

    #[test]
    fn a_group_no_longer_declared_says_so() {
        let text = render(&[], &[("@TGS#old", "x", 1000, 1)], false);
        assert!(
            text.starts_with(
                "group @TGS#old  (no longer declared: its marks are cleared)\n  - x  1000  ->\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_mark_in_flight_is_shown_as_unknown() {
        let mut d = DesiredState::default();
        d.groups.entry(g("@TGS#a")).or_default();
        let mut st = State::new(1);
        st.intend(&g("@TGS#a"), &a("x"), [m(1000)]);
        let plan = plan::plan(&d, &st, NOW, &Policy::default());
        let view = PlanView::new(&d, &st, Path::new("/srv/marks"), NOW);
        let text = anstream::adapter::strip_str(&human_plan(&plan, &view)).to_string();
        assert!(text.contains("  - x  1000?  ->\n"), "{text}");
    }

    /// A confirmed mark that an interrupted apply was sending again is unknown too: the plan
    /// re-sends it, and `~ x  1000  -> 1000` would read as a change that changes nothing.
    #[test]
    fn a_confirmed_mark_in_flight_is_shown_as_unknown() {
        let mut d = DesiredState::default();
        d.groups
            .entry(g("@TGS#a"))
            .or_default()
            .members
            .insert(a("x"), [m(1000)].into_iter().collect());
        let mut st = State::new(1);
        st.confirm(&g("@TGS#a"), &a("x"), [m(1000)], NOW - H);
        st.intend(&g("@TGS#a"), &a("x"), [m(1000)]);
        d.origins.insert(g("@TGS#a"), origin("classroom.yaml", 4));
        let plan = plan::plan(&d, &st, NOW, &Policy::default());
        assert_eq!(plan.summary.set, 1, "re-sent");
        let view = PlanView::new(&d, &st, Path::new("/srv/marks"), NOW);
        let text = anstream::adapter::strip_str(&human_plan(&plan, &view)).to_string();
        assert!(text.contains("  ~ x  1000?  -> 1000\n"), "{text}");
    }

    #[test]
    fn no_changes_says_what_was_compared() {
        assert_eq!(
            render(
                &[("@TGS#a", "x", &[1000])],
                &[("@TGS#a", "x", 1000, 1)],
                false
            ),
            "No changes. Marks match the recorded state.\n\
             (The state records what marksync last applied; `--refresh` compares with the service.)\n"
        );
        assert_eq!(
            render(&[], &[], true),
            "No changes. Marks match the recorded state.\n"
        );
    }

    fn drift(group: &str, account: &str, mark: u64, kind: DriftKind) -> Drift {
        Drift {
            group: g(group),
            account: a(account),
            mark: m(mark),
            kind,
            reason: (kind == DriftKind::NotChecked).then_some(NotChecked::FullListing),
            desired: true,
        }
    }

    fn classified() -> Classified {
        Classified {
            drift: vec![
                drift("@TGS#a", "ann", 1001, DriftKind::Lost),
                drift("@TGS#a", "bob", 1001, DriftKind::Unmanaged),
                drift("@TGS#a", "cy", 1000, DriftKind::Lost),
                drift("@TGS#b", "dee", 500, DriftKind::NotChecked),
            ],
            ..Classified::default()
        }
    }

    #[test]
    fn live_holders_marksync_cannot_name_are_counted_and_quoted() {
        let holder = |name: &str, mark| UnnameableHolder {
            group: g("@TGS#a"),
            holder: name.into(),
            mark: m(mark),
        };
        let c = Classified {
            unnameable: vec![holder("", 1000), holder("a b", 1000), holder("t\tx", 1001)],
            ..Classified::default()
        };
        let text = anstream::adapter::strip_str(&super::drift(&c, true)).to_string();
        assert_eq!(
            text,
            "Refreshed: the service holds what the state records.\n\
             3 live holders with names marksync cannot hold as an account (set by another tool: \
             never touched, and still using the group's 10-mark and 1000-member capacity).\n\
             \x20 group @TGS#a: 3 (mark 1000: 2, mark 1001: 1)\n\
             \x20   \"\"      1000\n\
             \x20   \"a b\"   1000\n\
             \x20   \"t\\tx\"  1001\n\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json_plan_refreshed(&Plan::default(), &c)).unwrap();
        assert_eq!(json["summary"]["unnameable_holders"], 3);
        assert!(
            json.get("over_capacity").is_none(),
            "only when there is any"
        );
        let full = Classified {
            over_capacity: vec![OverCapacity {
                group: g("@TGS#a"),
                mark: m(1000),
                desired: 998,
                unmanaged: 1,
                unnameable: 2,
            }],
            ..c.clone()
        };
        let text = anstream::adapter::strip_str(&super::drift(&full, false)).to_string();
        assert!(
            text.contains(
                "warning: group @TGS#a mark 1000: 1001 holders after this plan (998 declared, 1 \
                 unmanaged, 2 unnameable) exceed the service's 1000 per mark"
            ),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json_plan_refreshed(&Plan::default(), &full)).unwrap();
        assert_eq!(json["over_capacity"][0]["unnameable"], 2);
        assert_eq!(
            json["unnameable_holders"][1],
            serde_json::json!({"group": "@TGS#a", "holder": "a b", "mark": 1000})
        );
    }

    #[test]
    fn drift_is_counted_per_group_and_listed_when_verbose() {
        let c = classified();
        let short = anstream::adapter::strip_str(&super::drift(&c, false)).to_string();
        assert_eq!(
            short,
            "Drift: 3 marks to report (2 lost, 1 unmanaged); 1 more not checked: 1 beyond a full listing \
             (1000 members: absence is no evidence).\n\
             \x20 group @TGS#a: 2 lost, 1 unmanaged\n\
             \x20 group @TGS#b: 1 not checked\n\n"
        );
        let long = anstream::adapter::strip_str(&super::drift(&c, true)).to_string();
        assert!(
            long.contains(
                "  group @TGS#a: 2 lost, 1 unmanaged\n\
                 \x20   lost       ann  1001\n\
                 \x20   lost       cy   1000\n\
                 \x20   unmanaged  bob  1001\n"
            ),
            "{long}"
        );
        assert!(
            long.contains("not checked  dee  500  (the listing was full"),
            "{long}"
        );
        assert_eq!(
            super::drift(&Classified::default(), true),
            "Refreshed: the service holds what the state records.\n\n"
        );
        // Issue 16: marks only "not checked" are no drift and must not read as drift.
        let mut recent = c.clone();
        recent.drift.retain(|d| d.kind == DriftKind::NotChecked);
        recent.drift[0].reason = Some(crate::refresh::NotChecked::Recent);
        assert_eq!(
            anstream::adapter::strip_str(&super::drift(&recent, false)).to_string(),
            "Refreshed: no drift found; 1 mark not checked: 1 confirmed too recently to judge \
             (the listing lags up to 40 s: refresh again later).\n\n"
        );
    }

    #[test]
    fn the_json_plan_gains_drift_only_with_refresh() {
        let plan = Plan::default();
        let plain: serde_json::Value = serde_json::from_str(&json_plan(&plan)).unwrap();
        assert!(plain.get("drift").is_none());
        assert!(plain["summary"].get("drift").is_none());
        let c = classified();
        let v: serde_json::Value = serde_json::from_str(&json_plan_refreshed(&plan, &c)).unwrap();
        assert_eq!(v["summary"]["drift"]["lost"], 2);
        assert_eq!(v["summary"]["drift"]["not_checked"], 1);
        assert_eq!(
            v["drift"][0],
            serde_json::json!({"group": "@TGS#a", "account": "ann", "mark": 1001, "kind": "lost"})
        );
        assert_eq!(v["drift"][3]["reason"], "full_listing");
    }

    #[test]
    fn apply_json_summary_uses_the_plan_field_names() {
        let t = crate::apply::Totals {
            set: 1,
            cleared: 2,
            renewed: 3,
            pending: 4,
            failed: 5,
            calls: 6,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            serde_json::json!({"set": 1, "clear": 2, "renew": 3, "pending": 4, "failed": 5, "calls": 6})
        );
    }

    #[test]
    fn a_renewal_confirmed_in_the_future_says_clock_skew_not_0s_ago() {
        // Mark 500 confirmed two hours ahead of `now` (the clock was stepped back): due for
        // renewal (SPEC 4), and the note must not read "confirmed 0s ago".
        let text = render(
            &[("@TGS#a", "host", &[500])],
            &[("@TGS#a", "host", 500, -2)],
            false,
        );
        assert!(
            text.contains("renew 500 (confirmed in the future: clock skew?)"),
            "{text}"
        );
        assert_eq!(confirmed_ago(61 * 3600), "confirmed 61h ago");
        assert_eq!(confirmed_ago(0), "confirmed 0s ago");
        assert_eq!(confirmed_ago(-1), "confirmed in the future: clock skew?");
    }

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

    #[test]
    fn the_apply_line_says_incomplete_after_any_failed_call() {
        let mut t = crate::apply::Totals {
            set: 3,
            calls: 2,
            ..Default::default()
        };
        assert_eq!(
            apply_line(&t),
            "Apply complete: 3 set, 0 cleared, 0 renewed, 0 pending (offline), 0 failed, 2 API calls."
        );
        t.failed = 2;
        assert!(apply_line(&t).starts_with("Apply incomplete: 3 set,"));
    }

    #[test]
    fn a_call_not_sent_says_why() {
        use crate::apply::{CallReport, Outcome, Skip};
        let call = plan::Call {
            group: g("@TGS#a"),
            command: plan::Command::Set,
            members: vec![(a("alice"), [m(1000)].into_iter().collect())],
        };
        let line = |skip| {
            let outcome = Outcome::Skipped(skip);
            let report = CallReport {
                call: &call,
                outcome: &outcome,
                elapsed: std::time::Duration::ZERO,
            };
            anstream::adapter::strip_str(&human_call(&report)).to_string()
        };
        assert_eq!(
            line(Skip::Stopped),
            "set @TGS#a: not sent, the run was interrupted"
        );
        assert_eq!(
            line(Skip::Halted),
            "set @TGS#a: not sent, the run stopped at an earlier error"
        );
        assert_eq!(
            line(Skip::GroupGone),
            "set @TGS#a: skipped, the group no longer exists"
        );
    }
}
