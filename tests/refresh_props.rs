//! Property tests of the refresh classification (SPEC section 10) against an independent model,
//! and of what the planner does with the refreshed state.
//!
//! Inputs come from small alphabets (2 groups, 5 accounts, 4 marks) so that desired, recorded,
//! intended and live marks overlap often; confirmation times cluster around the 40 s staleness
//! boundary; listings are sometimes full. The expected kind of every (group, account, mark) is
//! computed here from the SPEC's definitions, not from anything in `marksync::refresh`.

use std::collections::{BTreeMap, BTreeSet};

use marksync::desired::DesiredState;
use marksync::model::{Account, GroupId, Mark, UnixTime};
use marksync::plan::{Command, Policy, plan};
use marksync::refresh::{GroupFacts, Listing, LiveFacts, classify, to_read};
use marksync::state::State;
use proptest::prelude::*;

mod common;

const GROUPS: [&str; 2] = ["@TGS#a", "@TGS#b"];
const ACCOUNTS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
const MARKS: [u64; 4] = [500, 600, 1000, 1001];
const NOW: UnixTime = 1_764_000_000;
/// The listings were read a little before `NOW`.
const READ: UnixTime = NOW - 30;
/// The staleness window, restated from the SPEC.
const STALE: i64 = 40;
/// Mark 500's lifetime, restated from the SPEC.
const LIFE: i64 = 72 * 3600;

type Key = (usize, usize, usize);

#[derive(Clone, Debug)]
struct Input {
    desired: BTreeSet<Key>,
    /// Key -> seconds before `READ` it was confirmed.
    recorded: BTreeMap<Key, i64>,
    intents: BTreeSet<Key>,
    /// Groups read (the others failed to read).
    read: [bool; 2],
    online: [BTreeSet<usize>; 2],
    online_full: [bool; 2],
    /// (group, mark) -> holders.
    holders: BTreeMap<(usize, usize), BTreeSet<usize>>,
    full_marks: BTreeSet<(usize, usize)>,
}

fn key() -> impl Strategy<Value = Key> {
    (0..GROUPS.len(), 0..ACCOUNTS.len(), 0..MARKS.len())
}

fn accounts() -> impl Strategy<Value = BTreeSet<usize>> {
    proptest::collection::btree_set(0..ACCOUNTS.len(), 0..=ACCOUNTS.len())
}

fn input() -> impl Strategy<Value = Input> {
    let age = prop_oneof![
        2 => STALE - 2..=STALE + 2,
        1 => -60i64..=3 * 3600,
    ];
    (
        proptest::collection::btree_set(key(), 0..14),
        proptest::collection::btree_map(key(), age, 0..14),
        proptest::collection::btree_set(key(), 0..4),
        (proptest::bool::weighted(0.9), proptest::bool::weighted(0.9)),
        (accounts(), accounts()),
        (
            proptest::bool::weighted(0.15),
            proptest::bool::weighted(0.15),
        ),
        proptest::collection::btree_map((0..GROUPS.len(), 0..MARKS.len()), accounts(), 0..8),
        proptest::collection::btree_set((0..GROUPS.len(), 0..MARKS.len()), 0..2),
    )
        .prop_map(
            |(desired, recorded, intents, read, online, online_full, holders, full_marks)| Input {
                desired,
                recorded,
                intents,
                read: [read.0, read.1],
                online: [online.0, online.1],
                online_full: [online_full.0, online_full.1],
                holders,
                full_marks,
            },
        )
}

fn g(i: usize) -> GroupId {
    GroupId::new(GROUPS[i]).unwrap()
}
fn a(i: usize) -> Account {
    Account::new(ACCOUNTS[i]).unwrap()
}
fn m(i: usize) -> Mark {
    Mark::new(MARKS[i]).unwrap()
}

impl Input {
    fn build(&self) -> (DesiredState, State, LiveFacts) {
        let mut d = DesiredState::default();
        for &(gi, ai, mi) in &self.desired {
            common::desire(&mut d, g(gi), a(ai), [m(mi)]);
        }
        let mut s = State::new(1);
        for (&(gi, ai, mi), &age) in &self.recorded {
            s.confirm(&g(gi), &a(ai), [m(mi)], READ - age);
        }
        for &(gi, ai, mi) in &self.intents {
            s.intend(&g(gi), &a(ai), [m(mi)]);
        }
        // What a refresh reads: the marks `to_read` names, each with the generated holders
        // (empty when none were generated), plus any extra mark listing that was generated.
        let wanted = to_read(&d, &s);
        let mut live = LiveFacts::default();
        for gi in 0..GROUPS.len() {
            if !self.read[gi] {
                continue;
            }
            let mut facts = GroupFacts {
                online: Listing::new(self.online[gi].iter().map(|&x| a(x)), READ),
                ..GroupFacts::default()
            };
            facts.online.full |= self.online_full[gi];
            let mut marks: BTreeSet<usize> = (0..MARKS.len())
                .filter(|&mi| wanted.get(&g(gi)).is_some_and(|w| w.contains(m(mi))))
                .collect();
            marks.extend(self.holders.keys().filter(|k| k.0 == gi).map(|k| k.1));
            for mi in marks {
                let holders = self.holders.get(&(gi, mi)).cloned().unwrap_or_default();
                let mut l = Listing::new(holders.iter().map(|&x| a(x)), READ);
                l.full |= self.full_marks.contains(&(gi, mi));
                facts.marks.insert(m(mi), l);
            }
            live.groups.insert(g(gi), facts);
        }
        (d, s, live)
    }

    fn listed(&self, gi: usize, mi: usize) -> bool {
        self.read[gi]
            && (self.holders.contains_key(&(gi, mi))
                || self
                    .desired
                    .iter()
                    .chain(&self.intents)
                    .any(|k| (k.0, k.2) == (gi, mi))
                || self.recorded.keys().any(|k| (k.0, k.2) == (gi, mi)))
    }

    /// The SPEC's kind of one (group, account, mark), or `None` when it is in sync (or left to
    /// the plan as it would be without a refresh).
    fn expected(&self, (gi, ai, mi): Key) -> Option<&'static str> {
        if !self.listed(gi, mi) {
            return None;
        }
        let holders = self.holders.get(&(gi, mi));
        let live = holders.is_some_and(|h| h.contains(&ai));
        let recorded = self.recorded.get(&(gi, ai, mi));
        let intended = self.intents.contains(&(gi, ai, mi));
        let desired = self.desired.contains(&(gi, ai, mi));
        let online = self.online[gi].contains(&ai)
            || self
                .holders
                .iter()
                .any(|(k, h)| k.0 == gi && h.contains(&ai));
        if live {
            return match (recorded.is_some() && !intended, desired) {
                (false, true) => Some("adopted"),
                (false, false) if !intended => Some("unmanaged"),
                _ => None,
            };
        }
        if intended {
            return Some("not_checked");
        }
        let age = *recorded?;
        // Absence is evidence only with listings below the window, and not of a mark confirmed
        // within 40 s before the listing.
        if self.online_full[gi] || age < STALE {
            return Some("not_checked");
        }
        if !online {
            return Some("offline");
        }
        if self.full_marks.contains(&(gi, mi)) {
            return Some("not_checked");
        }
        Some(if desired { "lost" } else { "gone" })
    }
}

/// (group, account, mark) -> command of every call of a plan.
fn calls(p: &marksync::plan::Plan) -> BTreeMap<(GroupId, Account, Mark), Command> {
    let mut out = BTreeMap::new();
    for c in &p.calls {
        for (acc, marks) in &c.members {
            for mk in marks.iter() {
                out.insert((c.group.clone(), acc.clone(), mk), c.command);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn classification_matches_the_model_and_the_refreshed_plan_repairs_it(input in input()) {
        let (d, s, live) = input.build();
        let c = classify(&d, &s, &live, NOW);

        // Sorted, one entry per (group, account, mark), and the kinds the model gives.
        let keys: Vec<_> = c.drift.iter().map(|x| (&x.group, &x.account, x.mark)).collect();
        prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {keys:?}");
        let got: BTreeMap<Key, &str> = c
            .drift
            .iter()
            .map(|x| {
                let gi = GROUPS.iter().position(|n| *n == x.group.as_str()).unwrap();
                let ai = ACCOUNTS.iter().position(|n| *n == x.account.as_str()).unwrap();
                let mi = MARKS.iter().position(|n| *n == u64::from(x.mark.get())).unwrap();
                ((gi, ai, mi), x.kind.as_str())
            })
            .collect();
        let mut want = BTreeMap::new();
        for gi in 0..GROUPS.len() {
            for ai in 0..ACCOUNTS.len() {
                for mi in 0..MARKS.len() {
                    if let Some(kind) = input.expected((gi, ai, mi)) {
                        want.insert((gi, ai, mi), kind);
                    }
                }
            }
        }
        prop_assert_eq!(&got, &want);
        // Deterministic.
        prop_assert_eq!(&classify(&d, &s, &live, NOW), &c);

        // The refreshed state, and what the planner makes of it.
        let mut refreshed = s.clone();
        c.changes.apply(&mut refreshed);
        let before = calls(&plan(&d, &s, NOW, &Policy::default()));
        let after = calls(&plan(&d, &refreshed, NOW, &Policy::default()));
        for x in &c.drift {
            let k = (x.group.clone(), x.account.clone(), x.mark);
            let conf = |st: &State| st.confirmed(&x.group, &x.account).and_then(|cf| cf.get(x.mark));
            let int = |st: &State| st.intended(&x.group, &x.account).is_some_and(|i| i.contains(x.mark));
            match x.kind.as_str() {
                // Set again.
                "lost" => prop_assert_eq!(after.get(&k), Some(&Command::Set)),
                // Desired: forgotten, so set again (pending while the member is away). Not
                // desired: absence never removes a clear; kept, cleared, and the clear's answer
                // forgets it.
                "offline" if x.desired => {
                    prop_assert_eq!(conf(&refreshed), None);
                    prop_assert_eq!(after.get(&k), Some(&Command::Set));
                }
                "offline" | "gone" => {
                    prop_assert!(!x.desired);
                    prop_assert_eq!(conf(&refreshed), conf(&s));
                    prop_assert_eq!(after.get(&k), Some(&Command::Clear));
                }
                "unmanaged" => prop_assert_eq!(after.get(&k), None),
                // Recorded without a call; a mark 500 of unknown age is renewed at once.
                "adopted" => {
                    prop_assert!(conf(&refreshed).is_some() && !int(&refreshed));
                    if x.mark == Mark::ALWAYS_ONLINE {
                        // Unknown age: "72 h ago", due at once; a recorded time is kept.
                        match conf(&s) {
                            Some(at) => prop_assert_eq!(conf(&refreshed), Some(at)),
                            None => {
                                prop_assert_eq!(conf(&refreshed), Some(NOW - LIFE));
                                prop_assert_eq!(after.get(&k), Some(&Command::Set));
                            }
                        }
                    } else {
                        prop_assert_eq!(after.get(&k), None);
                    }
                }
                // Not acted on: the state and the plan are what they were.
                "not_checked" => {
                    prop_assert_eq!(conf(&refreshed), conf(&s));
                    prop_assert_eq!(int(&refreshed), int(&s));
                    prop_assert_eq!(after.get(&k), before.get(&k));
                }
                other => prop_assert!(false, "unknown kind {other}"),
            }
        }
        // Nothing outside the drift list changes, and unread groups are untouched.
        let drifted: BTreeSet<_> =
            c.drift.iter().map(|x| (x.group.clone(), x.account.clone(), x.mark)).collect();
        for (k, cmd) in &before {
            if !drifted.contains(k) {
                prop_assert_eq!(after.get(k), Some(cmd), "{:?} changed without drift", k);
            }
        }
        for gi in 0..GROUPS.len() {
            if !input.read[gi] {
                prop_assert_eq!(refreshed.groups.get(&g(gi)), s.groups.get(&g(gi)));
                prop_assert_eq!(refreshed.intents.get(&g(gi)), s.intents.get(&g(gi)));
            }
        }
        // Never forgets a mark a listing shows live.
        for (gk, ak, mk) in &c.changes.forget {
            let gi = GROUPS.iter().position(|n| *n == gk.as_str()).unwrap();
            let ai = ACCOUNTS.iter().position(|n| *n == ak.as_str()).unwrap();
            let mi = MARKS.iter().position(|n| *n == u64::from(mk.get())).unwrap();
            prop_assert!(!input.holders.get(&(gi, mi)).is_some_and(|h| h.contains(&ai)));
        }
    }

    /// SPEC 10: a refresh may add calls, never remove one the plan without it would send. A
    /// listing cut short is indistinguishable from the real end, so every clear of the plain
    /// plan stays in the refreshed plan, whatever the listings say.
    #[test]
    fn a_refresh_never_removes_a_clear(input in input()) {
        let (d, s, live) = input.build();
        let c = classify(&d, &s, &live, NOW);
        let mut refreshed = s.clone();
        c.changes.apply(&mut refreshed);
        let clears = |st: &State| -> BTreeSet<(GroupId, Account, Mark)> {
            calls(&plan(&d, st, NOW, &Policy::default()))
                .into_iter()
                .filter(|(_, cmd)| *cmd == Command::Clear)
                .map(|(k, _)| k)
                .collect()
        };
        let before = clears(&s);
        let after = clears(&refreshed);
        prop_assert!(
            before.is_subset(&after),
            "the refresh removed clears: {:?}",
            before.difference(&after).collect::<Vec<_>>()
        );
    }
}
