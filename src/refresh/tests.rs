use super::*;
use crate::plan::{Policy, plan};

const NOW: UnixTime = 1_764_000_000;
/// When the listings were read: a minute before `NOW`.
const READ: UnixTime = NOW - 60;
const OLD: UnixTime = READ - 3600;

use crate::model::test_ids::{a, g, m};

/// One case: the desired marks, the recorded ones (with times), the intents, and the live
/// facts of group G, all for the member `u` (others as named).
#[derive(Default)]
struct Case {
    desired: Vec<(&'static str, u64)>,
    recorded: Vec<(&'static str, u64, UnixTime)>,
    intents: Vec<(&'static str, u64)>,
    online: Vec<&'static str>,
    /// mark -> holders.
    live: Vec<(u64, Vec<&'static str>)>,
    online_full: bool,
    full_marks: Vec<u64>,
}

impl Case {
    fn inputs(&self) -> (DesiredState, State, LiveFacts) {
        let mut d = DesiredState::default();
        let mut s = State::new(1);
        for (acc, mark) in &self.desired {
            d.groups
                .entry(g("G"))
                .or_default()
                .members
                .entry(a(acc))
                .or_default()
                .insert(m(*mark));
        }
        for (acc, mark, at) in &self.recorded {
            s.confirm(&g("G"), &a(acc), [m(*mark)], *at);
        }
        for (acc, mark) in &self.intents {
            s.intend(&g("G"), &a(acc), [m(*mark)]);
        }
        let mut facts = GroupFacts {
            online: Listing::new(self.online.iter().map(|x| a(x)), READ),
            marks: BTreeMap::new(),
        };
        facts.online.full |= self.online_full;
        // Every mark a refresh reads has a listing, empty unless `live` says otherwise.
        for mark in to_read(&d, &s)
            .get(&g("G"))
            .into_iter()
            .flat_map(MarkSet::iter)
        {
            facts.marks.insert(mark, Listing::new([], READ));
        }
        for (mark, holders) in &self.live {
            let mut l = Listing::new(holders.iter().map(|x| a(x)), READ);
            l.full |= self.full_marks.contains(mark);
            facts.marks.insert(m(*mark), l);
        }
        for mark in &self.full_marks {
            facts.marks.entry(m(*mark)).or_default().full = true;
        }
        let mut live = LiveFacts::default();
        live.groups.insert(g("G"), facts);
        (d, s, live)
    }

    /// The drift as `account mark kind[/reason]` lines, and the plan on the refreshed state.
    fn run(&self) -> (Vec<String>, Vec<String>) {
        let (d, mut s, live) = self.inputs();
        let c = classify(&d, &s, &live, NOW);
        let drift = c
            .drift
            .iter()
            .map(|x| {
                let reason = x
                    .reason
                    .map(|r| format!("/{}", serde_json::to_value(r).unwrap().as_str().unwrap()))
                    .unwrap_or_default();
                format!("{} {} {}{reason}", x.account, x.mark, x.kind.as_str())
            })
            .collect();
        c.changes.apply(&mut s);
        let p = plan(&d, &s, NOW, &Policy::default());
        let calls = p
            .calls
            .iter()
            .flat_map(|call| {
                call.members
                    .iter()
                    .map(move |(acc, ms)| format!("{} {acc} {ms}", call.command.as_str()))
            })
            .collect();
        (drift, calls)
    }
}

fn check(case: Case, drift: &[&str], calls: &[&str]) {
    let (got_drift, got_calls) = case.run();
    assert_eq!(got_drift, drift, "drift");
    assert_eq!(got_calls, calls, "calls on the refreshed state");
}

#[test]
fn lost_is_set_again() {
    check(
        Case {
            desired: vec![("u", 1000)],
            recorded: vec![("u", 1000, OLD)],
            online: vec!["u"],
            ..Case::default()
        },
        &["u 1000 lost"],
        &["set u 1000"],
    );
}

#[test]
fn offline_is_forgotten_and_set_again_if_desired_and_still_cleared_if_not() {
    check(
        Case {
            desired: vec![("u", 1000)],
            recorded: vec![("u", 1000, OLD), ("u", 1001, OLD), ("u", 500, OLD)],
            online: vec!["v"],
            ..Case::default()
        },
        &["u 500 offline", "u 1000 offline", "u 1001 offline"],
        // 1000 is pending (the apply finds u offline). The undesired 1001 and 500 may still be on
        // the service (the listing may be cut short; 500 outlives a disconnection): the clear
        // is sent as without a refresh, and its answer forgets them.
        &["clear u 500,1001", "set u 1000"],
    );
    let (d, s, live) = Case {
        desired: vec![("u", 1000)],
        recorded: vec![("u", 1000, OLD), ("u", 1001, OLD)],
        online: vec!["v"],
        ..Case::default()
    }
    .inputs();
    let c = classify(&d, &s, &live, NOW);
    assert_eq!(c.changes.forget, [(g("G"), a("u"), m(1000))]);
}

#[test]
fn gone_is_still_cleared_a_listing_cut_short_never_removes_a_clear() {
    check(
        Case {
            recorded: vec![("u", 1001, OLD)],
            online: vec!["u"],
            ..Case::default()
        },
        &["u 1001 gone"],
        &["clear u 1001"],
    );
    let (d, s, live) = Case {
        recorded: vec![("u", 1001, OLD)],
        online: vec!["u"],
        ..Case::default()
    }
    .inputs();
    let c = classify(&d, &s, &live, NOW);
    assert!(c.changes.is_empty(), "{:?}", c.changes);
    assert!(c.drift[0].needs_call());
}

#[test]
fn unmanaged_is_reported_and_never_touched() {
    check(
        Case {
            desired: vec![("u", 1000)],
            recorded: vec![("u", 1000, OLD)],
            online: vec!["u", "x"],
            live: vec![(1000, vec!["u", "x"])],
            ..Case::default()
        },
        &["x 1000 unmanaged"],
        &[],
    );
}

#[test]
fn adopted_is_recorded_without_a_call_and_500_renewed_at_once() {
    check(
        Case {
            desired: vec![("u", 1000), ("u", 500)],
            online: vec!["u"],
            live: vec![(1000, vec!["u"]), (500, vec!["u"])],
            ..Case::default()
        },
        &["u 500 adopted", "u 1000 adopted"],
        &["set u 500"],
    );
    let (d, s, live) = Case {
        desired: vec![("u", 1000)],
        live: vec![(1000, vec!["u"])],
        ..Case::default()
    }
    .inputs();
    let c = classify(&d, &s, &live, NOW);
    assert_eq!(c.changes.adopt, [(g("G"), a("u"), m(1000), READ)]);
}

#[test]
fn in_sync_says_nothing() {
    check(
        Case {
            desired: vec![("u", 1000), ("u", 600)],
            recorded: vec![("u", 1000, OLD), ("u", 600, OLD)],
            // Hidden by 600 from the plain listing, listed by its marks.
            online: vec![],
            live: vec![(1000, vec!["u"]), (600, vec!["u"])],
            ..Case::default()
        },
        &[],
        &[],
    );
}

#[test]
fn a_full_listing_is_not_evidence_of_absence() {
    // The online listing full: neither offline nor lost can be judged.
    check(
        Case {
            desired: vec![("u", 1000)],
            recorded: vec![("u", 1000, OLD), ("u", 1001, OLD)],
            online_full: true,
            ..Case::default()
        },
        &[
            "u 1000 not_checked/full_listing",
            "u 1001 not_checked/full_listing",
        ],
        // Unchanged: the undesired 1001 is cleared as it would be without a refresh.
        &["clear u 1001"],
    );
    // The mark's listing full: present, but the mark cannot be judged.
    check(
        Case {
            desired: vec![("u", 1000)],
            recorded: vec![("u", 1000, OLD)],
            online: vec!["u"],
            full_marks: vec![1000],
            ..Case::default()
        },
        &["u 1000 not_checked/full_listing"],
        &[],
    );
    // 999 is not full, 1000 is.
    let l = Listing::new((0..999).map(|i| a(&format!("m{i}"))), READ);
    assert!(!l.full);
    assert!(Listing::new((0..1000).map(|i| a(&format!("m{i}"))), READ).full);
}

#[test]
fn a_mark_recorded_within_40s_of_the_listing_is_not_judged() {
    for (at, kind) in [
        (READ - STALENESS_SECS, "lost"),
        (READ - STALENESS_SECS + 1, "not_checked/recent"),
        (READ + 10, "not_checked/recent"),
    ] {
        let case = Case {
            desired: vec![("u", 1000)],
            recorded: vec![("u", 1000, at)],
            online: vec!["u"],
            ..Case::default()
        };
        assert_eq!(case.run().0, [format!("u 1000 {kind}")], "recorded at {at}");
    }
}

#[test]
fn intents_are_confirmed_when_live_and_desired_and_otherwise_left_to_the_plan() {
    check(
        Case {
            desired: vec![("u", 1000), ("u", 500)],
            recorded: vec![("u", 500, OLD)],
            intents: vec![("u", 1000), ("u", 500), ("u", 1001), ("v", 1002)],
            online: vec!["u", "v"],
            live: vec![(1000, vec!["u"]), (500, vec!["u"]), (1001, vec!["u"])],
            ..Case::default()
        },
        // 1001 is live and not desired: the plan clears it again; v's 1002 is absent but in
        // flight: kept, so the plan clears it again too.
        &[
            "u 500 adopted",
            "u 1000 adopted",
            "v 1002 not_checked/in_flight",
        ],
        &["clear u 1001", "clear v 1002"],
    );
    // The recorded 500 keeps its (older) time when an intent on it is confirmed.
    let (d, s, live) = Case {
        desired: vec![("u", 500)],
        recorded: vec![("u", 500, OLD)],
        intents: vec![("u", 500)],
        live: vec![(500, vec!["u"])],
        ..Case::default()
    }
    .inputs();
    assert_eq!(
        classify(&d, &s, &live, NOW).changes.adopt,
        [(g("G"), a("u"), m(500), OLD)]
    );
}

#[test]
fn unread_groups_and_marks_are_not_classified() {
    let (d, s, _) = Case {
        desired: vec![("u", 1000)],
        recorded: vec![("u", 1000, OLD)],
        ..Case::default()
    }
    .inputs();
    let c = classify(&d, &s, &LiveFacts::default(), NOW);
    assert_eq!(c, Classified::default());
}

#[test]
fn to_read_names_every_managed_desired_or_intended_mark() {
    let (d, s, _) = Case {
        desired: vec![("u", 1000)],
        recorded: vec![("v", 1001, OLD)],
        intents: vec![("w", 600)],
        ..Case::default()
    }
    .inputs();
    let r = to_read(&d, &s);
    assert_eq!(r[&g("G")].to_string(), "600,1000,1001");
    let mut d = d;
    d.groups.insert(g("empty"), Default::default());
    assert!(!to_read(&d, &s).contains_key(&g("empty")));
}

#[test]
fn drift_json_and_counts() {
    let d = Drift {
        group: g("@TGS#a"),
        account: a("u"),
        mark: m(1000),
        kind: DriftKind::NotChecked,
        reason: Some(NotChecked::FullListing),
        desired: true,
    };
    assert_eq!(
        serde_json::to_string(&d).unwrap(),
        r#"{"group":"@TGS#a","account":"u","mark":1000,"kind":"not_checked","reason":"full_listing"}"#
    );
    let lost = Drift {
        kind: DriftKind::Lost,
        reason: None,
        ..d.clone()
    };
    assert!(lost.needs_call() && !d.needs_call());
    let counts = DriftCounts::of(&[d, lost.clone(), lost]);
    assert_eq!(
        serde_json::to_string(&counts).unwrap(),
        r#"{"lost":2,"offline":0,"gone":0,"unmanaged":0,"adopted":0,"not_checked":1}"#
    );
    for k in DriftKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap().as_str(), Some(k.as_str()));
    }
}

#[test]
fn read_calls_count_pages() {
    assert_eq!(read_calls(0, &[], 100), 1);
    assert_eq!(read_calls(250, &[0, 100, 101], 100), 3 + 1 + 1 + 2);
    // The window caps the online listing.
    assert_eq!(read_calls(5000, &[], 100), 10);
    assert_eq!(read_time(400, 200), Duration::from_secs(2));
}

#[test]
fn unnameable_holders_are_kept_apart_reported_and_count_toward_the_window() {
    // 999 nameable holders and one empty name: 1000 on the service, so the listing is full.
    let mut names: Vec<String> = (0..999).map(|i| format!("m{i}")).collect();
    names.push(String::new());
    let l = listing(LiveListing {
        accounts: names,
        pages: 10,
        read_at: READ,
    });
    assert!(
        l.full,
        "an unnameable holder still takes a place in the window"
    );
    assert_eq!(l.accounts.len(), 999);
    assert_eq!(l.unnameable, BTreeSet::from([String::new()]));

    // Reported per (group, holder, mark), sorted; not drift, and nothing changes.
    let (d, s, mut live) = Case {
        desired: vec![("u", 1000)],
        recorded: vec![("u", 1000, OLD)],
        live: vec![(1000, vec!["u"])],
        online: vec!["u"],
        ..Case::default()
    }
    .inputs();
    let facts = live.groups.get_mut(&g("G")).unwrap();
    let marks = facts.marks.get_mut(&m(1000)).unwrap();
    marks.unnameable = BTreeSet::from(["a b".to_string(), "x".repeat(42)]);
    let c = classify(&d, &s, &live, NOW);
    assert!(c.drift.is_empty() && c.changes.is_empty(), "{c:?}");
    let holders: Vec<(&str, u32)> = c
        .unnameable
        .iter()
        .map(|h| (h.holder.as_str(), h.mark.get()))
        .collect();
    assert_eq!(holders, [("a b", 1000), ("x".repeat(42).as_str(), 1000)]);
}

#[test]
fn holders_marksync_does_not_manage_or_name_count_toward_the_1000_per_mark() {
    // 998 declared (recorded and live), one unmanaged and two unnameable holders: 1001.
    let (mut d, mut s, _) = Case::default().inputs();
    let mut holders = BTreeSet::new();
    for i in 0..998 {
        let acc = a(&format!("m{i}"));
        d.groups
            .entry(g("G"))
            .or_default()
            .members
            .entry(acc.clone())
            .or_default()
            .insert(m(1000));
        s.confirm(&g("G"), &acc, [m(1000)], OLD);
        holders.insert(acc);
    }
    holders.insert(a("other"));
    let mut marks = Listing::new(holders.clone(), READ);
    marks.unnameable = BTreeSet::from([String::new(), "a b".to_string()]);
    // The online listing would be full (1000+): not needed here, the mark's own listing says it.
    let mut live = LiveFacts::default();
    live.groups.insert(
        g("G"),
        GroupFacts {
            online: Listing::new(holders, READ),
            marks: BTreeMap::from([(m(1000), marks)]),
        },
    );
    let c = classify(&d, &s, &live, NOW);
    assert_eq!(
        c.over_capacity,
        [OverCapacity {
            group: g("G"),
            mark: m(1000),
            desired: 998,
            unmanaged: 1,
            unnameable: 2,
        }]
    );
    // Within the 1000 without the unnameable ones: nothing to say.
    live.groups
        .get_mut(&g("G"))
        .unwrap()
        .marks
        .get_mut(&m(1000))
        .unwrap()
        .unnameable
        .clear();
    assert!(classify(&d, &s, &live, NOW).over_capacity.is_empty());
}
