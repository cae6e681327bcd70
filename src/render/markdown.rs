//! `plan --markdown` (SPEC section 12): the plan as a pull or merge request comment. A headline
//! with the counts and the guard's verdict, the verdict with its numbers and what to do, the
//! drift when refreshed, and each group's member lines (the human plan's, in a `diff` block)
//! inside a collapsed `<details>` block, cut past a size with a count of what was cut. The first
//! line is the hidden [`MARKDOWN_MARKER`], so a CI recipe finds and updates one sticky comment.
//!
//! Names from the desired files and the state (group IDs, file paths) are written inside
//! `<code>` with every character Markdown or HTML could read as syntax written as a numeric
//! character reference, so a group ID such as `a|b<c>` renders as written and can neither
//! break the layout nor forge the marker. Accounts appear only inside the fenced `diff` block,
//! where nothing is interpreted, and always after a sign, so no account can close the fence.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{GuardReport, PlanView, Verdict, declared_at, member_texts, plural, summary_line};
use crate::model::GroupId;
use crate::plan::Plan;
use crate::refresh::{Classified, Drift, DriftCounts};

/// The hidden line a CI recipe looks for to update its one comment instead of adding another.
pub const MARKDOWN_MARKER: &str = "<!-- marksync-plan -->";

/// The most bytes `plan --markdown` prints: GitHub caps a comment at 65,536 characters (a
/// character is at least one byte), and a recipe may add a few lines of its own.
pub const MARKDOWN_BUDGET: usize = 50_000;

/// Room kept for the cut note and the end of the `<details>` block.
const RESERVE: usize = 400;

/// The most groups the drift section lists one by one.
const DRIFT_GROUPS: usize = 20;

/// The plan as Markdown for a pull or merge request comment, at most `budget` bytes (see the
/// module documentation). `drift` is what `--refresh` found, if it ran.
pub fn markdown_plan(
    plan: &Plan,
    view: &PlanView<'_>,
    guard: &GuardReport,
    drift: Option<&Classified>,
    budget: usize,
) -> String {
    let mut out = format!("{MARKDOWN_MARKER}\n");
    let headline = if plan.is_empty() {
        "no changes".to_string()
    } else {
        summary_line(&plan.summary)
            .trim_start_matches("Plan: ")
            .trim_end_matches('.')
            .to_string()
    };
    let verdict = match guard.verdict {
        Verdict::Passes => "",
        Verdict::Refuses => " · ⛔ the mass-clear guard would refuse it",
        Verdict::Overridden => " · ⚠️ mass-clear guard overridden",
    };
    let _ = writeln!(out, "### marksync plan: {headline}{verdict}\n");
    if view.embedded {
        out.push_str(
            "Against the embedded emulator (`endpoint: embedded`): nothing reaches Tencent \
             Cloud.\n\n",
        );
    }
    if !plan.is_empty() {
        guard_paragraph(&mut out, guard);
    }
    match drift {
        Some(c) => drift_section(&mut out, c),
        None if plan.is_empty() => out.push_str(
            "Planned against the recorded state (what marksync last applied); `marksync plan \
             --refresh` compares with the service.\n\n",
        ),
        None => {}
    }
    if !plan.is_empty() {
        changes_block(&mut out, plan, view, budget);
    }
    out
}

/// The guard's verdict, its numbers, and what to do about a refusal.
fn guard_paragraph(out: &mut String, guard: &GuardReport) {
    let numbers = guard.numbers();
    let _ = match guard.verdict {
        Verdict::Passes => writeln!(
            out,
            "✅ **Mass-clear guard: passes.** This plan {numbers}.\n"
        ),
        Verdict::Refuses => writeln!(
            out,
            "⛔ **Mass-clear guard: would refuse.** This plan {numbers}: `marksync apply` would \
             exit 3 and send nothing. If these clears are intended, approve them after review \
             by planning with `marksync plan --allow-mass-clear --out FILE`: the saved plan \
             records the override, and `marksync apply FILE` honours it for that plan only.\n"
        ),
        Verdict::Overridden => writeln!(
            out,
            "⚠️ **Mass-clear guard: overridden** (`--allow-mass-clear`). This plan {numbers}; \
             a plan saved with `--out` records the override, and `marksync apply FILE` sends \
             it.\n"
        ),
    };
}

/// What `--refresh` found: the counts by kind, per group (the first [`DRIFT_GROUPS`]).
fn drift_section(out: &mut String, c: &Classified) {
    if c.drift.is_empty() {
        out.push_str("**Drift:** none: the service holds what the state records.\n");
    } else {
        let _ = writeln!(
            out,
            "**Drift** (read from the service): {} {} to report ({}).",
            c.drift.len(),
            plural(c.drift.len(), "mark", "marks"),
            super::drift_counts_text(&c.counts())
        );
        let mut by_group: BTreeMap<&GroupId, Vec<Drift>> = BTreeMap::new();
        for d in &c.drift {
            by_group.entry(&d.group).or_default().push(d.clone());
        }
        let groups = by_group.len();
        for (group, list) in by_group.into_iter().take(DRIFT_GROUPS) {
            let _ = writeln!(
                out,
                "- group {}: {}",
                code(group.as_str()),
                super::drift_counts_text(&DriftCounts::of(&list))
            );
        }
        if groups > DRIFT_GROUPS {
            let _ = writeln!(out, "- … and {} more groups", groups - DRIFT_GROUPS);
        }
    }
    if !c.unnameable.is_empty() {
        let _ = writeln!(
            out,
            "\n{} (set by another tool: never touched).",
            super::unnameable_count(c.unnameable.len())
        );
    }
    if !c.over_capacity.is_empty() {
        let _ = writeln!(
            out,
            "\n⚠️ {} {} would have more than the service's 1000 holders per mark after this \
             plan: sets past it will be refused (`marksync plan --refresh` names them).",
            c.over_capacity.len(),
            plural(c.over_capacity.len(), "mark", "marks"),
        );
    }
    out.push('\n');
}

/// The member lines of every group in a collapsed block, cut so that `out` stays within
/// `budget` bytes, with a count of the member lines and groups left out.
fn changes_block(out: &mut String, plan: &Plan, view: &PlanView<'_>, budget: usize) {
    let members: usize = plan.changes.values().map(|c| member_count(c)).sum();
    let calls = plan.calls_by_group();
    let _ = writeln!(
        out,
        "<details><summary>Changes: {members} {} in {} {}, {} API {}</summary>\n",
        plural(members, "member", "members"),
        plan.summary.groups,
        plural(plan.summary.groups, "group", "groups"),
        plan.summary.calls,
        plural(plan.summary.calls, "call", "calls"),
    );
    let (mut cut_lines, mut cut_groups) = (0usize, 0usize);
    for (group, changes) in &plan.changes {
        if cut_lines > 0 {
            // Counted, not rendered: a plan of a million members is cut after a few hundred.
            cut_lines += member_count(changes);
            cut_groups += 1;
            continue;
        }
        let lines = member_texts(group, changes, view);
        let n = calls.get(group).map_or(0, Vec::len);
        let where_ = match declared_at(group, view) {
            Some(at) => format!("({})", code(&at)),
            None => "(no longer declared: its marks are cleared)".to_string(),
        };
        let head = format!(
            "**group {}** {where_}: {n} API {}\n\n```diff\n",
            code(group.as_str()),
            plural(n, "call", "calls")
        );
        const FENCE_END: &str = "```\n\n";
        let first = lines.first().map_or(0, |(_, t)| t.len() + 1);
        if out.len() + head.len() + first + FENCE_END.len() + RESERVE > budget {
            cut_lines += lines.len();
            cut_groups += 1;
            continue;
        }
        out.push_str(&head);
        for (i, (_, text)) in lines.iter().enumerate() {
            if out.len() + text.len() + 1 + FENCE_END.len() + RESERVE > budget {
                cut_lines += lines.len() - i;
                cut_groups += 1;
                break;
            }
            out.push_str(text);
            out.push('\n');
        }
        out.push_str(FENCE_END);
    }
    if cut_lines > 0 {
        let _ = writeln!(
            out,
            "_Not shown: {cut_lines} member {} in {cut_groups} {}, to keep this comment well \
             under GitHub's 65,536 characters. Run `marksync plan` for the whole plan._\n",
            plural(cut_lines, "line", "lines"),
            plural(cut_groups, "group", "groups"),
        );
    }
    out.push_str("</details>\n");
}

/// How many member lines a group's changes make: one per account.
fn member_count(changes: &[crate::plan::Change]) -> usize {
    changes
        .iter()
        .map(|c| &c.account)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// `s` in `<code>`, with every ASCII character that Markdown or HTML could read as syntax
/// written as a numeric character reference: it renders as written and forges nothing.
fn code(s: &str) -> String {
    let mut out = String::from("<code>");
    for c in s.chars() {
        if c.is_ascii_punctuation() && !matches!(c, '.' | '-' | '/' | ',' | '@' | '#') {
            let _ = write!(out, "&#{};", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out.push_str("</code>");
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::desired::{DesiredState, Origin};
    use crate::model::UnixTime;
    use crate::model::test_ids::{a, g, m};
    use crate::plan::{self, Guard, Policy};
    use crate::refresh::{DriftKind, NotChecked};
    use crate::state::State;

    const NOW: UnixTime = 1_764_000_000;

    /// Desired (group, account, marks) against a state holding (group, account, mark).
    fn setup(
        desired: &[(&str, &str, &[u64])],
        held: &[(&str, &str, u64)],
    ) -> (DesiredState, State) {
        let mut d = DesiredState::default();
        for (group, account, marks) in desired {
            d.groups
                .entry(g(group))
                .or_default()
                .members
                .entry(a(account))
                .or_default()
                .extend(marks.iter().map(|&n| m(n)));
            d.origins.insert(
                g(group),
                Origin {
                    path: PathBuf::from("/srv/marks/a|b<c>.yaml"),
                    line: 4,
                    column: 3,
                    source_line: String::new(),
                    source_offset: 0,
                },
            );
        }
        let mut st = State::new(1);
        for (group, account, mark) in held {
            st.confirm(&g(group), &a(account), [m(*mark)], NOW - 3600);
        }
        (d, st)
    }

    fn render(
        d: &DesiredState,
        st: &State,
        allow: bool,
        drift: Option<&Classified>,
        budget: usize,
    ) -> (String, Plan) {
        let plan = plan::plan(d, st, NOW, &Policy::default());
        let view = PlanView::new(d, st, Path::new("/srv/marks"), NOW);
        let guard = GuardReport::of(&plan, &Guard::default(), allow);
        (markdown_plan(&plan, &view, &guard, drift, budget), plan)
    }

    /// The lines inside each fenced block, checking that every fence opened is closed.
    fn fenced(text: &str) -> Vec<Vec<&str>> {
        let mut blocks = Vec::new();
        let mut current: Option<Vec<&str>> = None;
        for line in text.lines() {
            match (&mut current, line) {
                (None, "```diff") => current = Some(Vec::new()),
                (Some(_), "```") => blocks.push(current.take().unwrap()),
                (Some(block), l) => block.push(l),
                (None, l) => assert!(!l.starts_with("```"), "a stray fence: {l}"),
            }
        }
        assert!(current.is_none(), "a fence left open:\n{text}");
        blocks
    }

    #[test]
    fn headline_guard_and_members_of_a_small_plan() {
        let (d, st) = setup(
            &[("@TGS#a", "tom", &[1001, 1003]), ("@TGS#a", "new", &[1000])],
            &[("@TGS#a", "tom", 1001), ("@TGS#a", "gone", 1002)],
        );
        let (text, _) = render(&d, &st, false, None, MARKDOWN_BUDGET);
        assert!(text.starts_with(&format!("{MARKDOWN_MARKER}\n### marksync plan: 2 to set, 1 to clear, 0 to renew in 1 group, 2 API calls\n")), "{text}");
        assert_eq!(text.matches(MARKDOWN_MARKER).count(), 1);
        assert!(
            text.contains("✅ **Mass-clear guard: passes.** This plan clears 1 of 2 managed marks"),
            "{text}"
        );
        assert!(
            text.contains("<details><summary>Changes: 3 members in 1 group, 2 API calls</summary>"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("</details>"), "{text}");
        // The human plan's lines, the same text: one rendering.
        assert_eq!(
            fenced(&text),
            vec![vec![
                "- gone  1002  ->",
                "+ new         -> 1000",
                "~ tom   1001  -> 1001, 1003"
            ]]
        );
        assert!(!text.contains("Not shown"), "{text}");
    }

    #[test]
    fn a_mass_clear_says_the_guard_would_refuse_and_how_to_override() {
        let held: Vec<(String, u64)> = (0..20).map(|i| (format!("s{i:02}"), 1000)).collect();
        let held: Vec<(&str, &str, u64)> = held
            .iter()
            .map(|(a, m)| ("@TGS#a", a.as_str(), *m))
            .collect();
        let (d, st) = setup(&[("@TGS#a", "s00", &[1000])], &held);
        let (text, plan) = render(&d, &st, false, None, MARKDOWN_BUDGET);
        assert_eq!(plan.summary.clear, 19);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("· ⛔ the mass-clear guard would refuse it"),
            "{text}"
        );
        assert!(
            text.contains("⛔ **Mass-clear guard: would refuse.** This plan clears 19 of 20 managed marks (the guard refuses more than 10 and more than 25%): `marksync apply` would exit 3"),
            "{text}"
        );
        assert!(
            text.contains("marksync plan --allow-mass-clear --out FILE"),
            "{text}"
        );
        let (text, _) = render(&d, &st, true, None, MARKDOWN_BUDGET);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("· ⚠️ mass-clear guard overridden"),
            "{text}"
        );
        assert!(
            text.contains("**Mass-clear guard: overridden** (`--allow-mass-clear`)"),
            "{text}"
        );
    }

    #[test]
    fn names_with_markdown_and_html_characters_render_as_written_and_forge_nothing() {
        let group = "x|y<b>`z`&#60;<!-- marksync-plan -->";
        let account = "a|b<i>`c`";
        let (d, st) = setup(&[(group, account, &[1000])], &[(group, "<!--x-->|", 1001)]);
        let (text, _) = render(&d, &st, false, None, MARKDOWN_BUDGET);
        assert_eq!(text.matches(MARKDOWN_MARKER).count(), 1, "{text}");
        assert!(text.starts_with(MARKDOWN_MARKER));
        // Outside the code block no raw `<`, `|` or backtick of a name survives.
        let outside: String = text
            .lines()
            .filter(|l| !l.starts_with(['+', '-', '~']))
            .collect::<Vec<_>>()
            .join("\n");
        for bad in ["x|y", "<b>", "`z`", "&#60;<", "a|b<c>"] {
            assert!(!outside.contains(bad), "{bad} raw in:\n{text}");
        }
        assert!(
            outside.contains(
                "<code>x&#124;y&#60;b&#62;&#96;z&#96;&#38;#60&#59;&#60;&#33;-- marksync-plan --&#62;</code>"
            ),
            "{text}"
        );
        assert!(
            outside.contains("(<code>marks/a&#124;b&#60;c&#62;.yaml&#58;4</code>)"),
            "{text}"
        );
        // Accounts stay as written inside the one closed fence.
        assert_eq!(
            fenced(&text),
            vec![vec!["- <!--x-->|  1001  ->", "+ a|b<i>`c`        -> 1000"]]
        );
    }

    #[test]
    fn a_large_plan_is_cut_within_the_budget_with_a_count_of_what_was_cut() {
        let names: Vec<(String, String)> = (0..3000)
            .map(|i| (format!("@TGS#g{}", i / 1000), format!("student{i:05}")))
            .collect();
        let desired: Vec<(&str, &str, &[u64])> = names
            .iter()
            .map(|(g, a)| (g.as_str(), a.as_str(), &[1000u64][..]))
            .collect();
        let (d, st) = setup(&desired, &[]);
        for budget in [MARKDOWN_BUDGET, 5_000, 2_000] {
            let (text, _) = render(&d, &st, false, None, budget);
            assert!(text.len() <= budget, "{} > {budget}", text.len());
            assert!(text.trim_end().ends_with("</details>"), "{text}");
            let shown: usize = fenced(&text).iter().map(Vec::len).sum();
            assert!(shown > 0, "{budget}: something is shown");
            let note = text
                .lines()
                .find(|l| l.starts_with("_Not shown: "))
                .unwrap_or_else(|| panic!("{budget}: no cut note:\n{text}"));
            let cut: usize = note["_Not shown: ".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(shown + cut, 3000, "{note}");
            assert!(
                note.contains("in 3 groups")
                    || note.contains("in 2 groups")
                    || note.contains("in 1 group"),
                "{note}"
            );
            assert!(text.contains("Changes: 3000 members in 3 groups"), "{text}");
        }
    }

    #[test]
    fn drift_is_shown_when_refreshed_and_no_changes_says_what_was_compared() {
        let (d, st) = setup(&[("@TGS#a", "x", &[1000])], &[("@TGS#a", "x", 1000)]);
        let (text, _) = render(&d, &st, false, None, MARKDOWN_BUDGET);
        assert!(text.contains("### marksync plan: no changes\n"), "{text}");
        assert!(
            text.contains("`marksync plan --refresh` compares with the service"),
            "{text}"
        );
        assert!(!text.contains("<details>"), "{text}");
        assert!(
            !text.contains("Mass-clear guard"),
            "nothing to guard: {text}"
        );
        let drift = |kind| Drift {
            group: g("@TGS#a|b"),
            account: a("x"),
            mark: m(1000),
            kind,
            reason: (kind == DriftKind::NotChecked).then_some(NotChecked::Recent),
            desired: true,
        };
        let c = Classified {
            drift: vec![drift(DriftKind::Lost), drift(DriftKind::NotChecked)],
            ..Classified::default()
        };
        let (text, _) = render(&d, &st, false, Some(&c), MARKDOWN_BUDGET);
        assert!(
            text.contains("**Drift** (read from the service): 2 marks to report (1 lost, 1 not checked).\n- group <code>@TGS#a&#124;b</code>: 1 lost, 1 not checked\n"),
            "{text}"
        );
        assert!(!text.contains("compares with the service"), "{text}");
        let (text, _) = render(
            &d,
            &st,
            false,
            Some(&Classified::default()),
            MARKDOWN_BUDGET,
        );
        assert!(text.contains("**Drift:** none"), "{text}");
    }
}
