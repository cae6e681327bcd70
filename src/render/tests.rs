//! Tests of the human and JSON renderings.

use super::*;
use crate::desired::{DesiredGroup, DesiredState};
use crate::model::test_ids::{a, g, m};
use crate::plan::{self, Policy};
use crate::refresh::DriftKind;
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
    let t = crate::outcome::Totals {
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
    let mut t = crate::outcome::Totals {
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
    use crate::outcome::{CallReport, Outcome, Skip};
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
