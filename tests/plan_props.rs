//! Property tests of the planner (SPEC section 5) against an independent model.
//!
//! Inputs come from small alphabets (4 groups, 5 accounts, 4 marks) so that desired marks,
//! confirmed marks and intents overlap often; confirmation times of mark 500 cluster around the
//! renewal boundary; and some cases add a bulk group of ~500 or ~1000 members to exercise batching.
//! The expected set/clear of every member is computed here from the definitions in the SPEC, not
//! from anything in `marksync::plan`.

use std::collections::{BTreeMap, BTreeSet};

use marksync::desired::{DesiredGroup, DesiredState};
use marksync::model::{Account, GroupId, MAX_MEMBERS_PER_CALL, Mark, MarkSet, UnixTime};
use marksync::plan::Guard;
use marksync::plan::{ChangeKind, Command, Plan, Policy, plan};
use marksync::state::State;
use proptest::prelude::*;

mod common;
use common::{a, g, m};

const GROUPS: [&str; 4] = ["@TGS#a", "@TGS#b", "@TGS#c", "@TGS#d"];
const ACCOUNTS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
const MARKS: [u64; 4] = [500, 600, 1000, 1001];
const H: i64 = 3600;
/// Mark 500's lifetime, restated from the SPEC rather than imported.
const LIFE: i64 = 72 * H;
const BASE_NOW: UnixTime = 1_764_000_000;

fn marks_of(mask: u8) -> impl Iterator<Item = Mark> {
    MARKS
        .iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, &n)| m(n))
}

/// How long ago a mark was confirmed.
#[derive(Clone, Copy, Debug)]
enum Age {
    /// `delta` seconds past the renewal boundary `72h - margin` (negative: not yet due).
    Boundary(i64),
    /// A plain age in seconds (negative: a clock that went backwards).
    Secs(i64),
}

/// A bulk group of `n` members `m0000..`, to exercise the 500-member batching.
#[derive(Clone, Debug)]
struct Bulk {
    group: usize,
    n: usize,
    /// Member i is desired unless `i % desired_every == 0`.
    desired_every: usize,
    desired_mask: u8,
    /// Member i is confirmed when `i % confirmed_every == 0`.
    confirmed_every: usize,
    confirmed_mask: u8,
    confirmed_age: Age,
}

#[derive(Clone, Debug)]
struct Input {
    now: UnixTime,
    policy: Policy,
    /// Groups declared in the desired files, possibly with no members.
    declared: Vec<usize>,
    /// (group, account, mark mask); a zero mask is a member listed with no marks.
    desired: Vec<(usize, usize, u8)>,
    /// (group, account, mark or none for an empty entry, age). The first entry of a triple wins.
    confirmed: Vec<(usize, usize, Option<usize>, Age)>,
    /// (group, account, mark mask); a zero mask is an empty entry.
    intents: Vec<(usize, usize, u8)>,
    /// Indices into `confirmed` (modulo its length) whose mark also gets an intent: a clear or
    /// a set that was in flight when an apply stopped, so the mark is unknown.
    intents_on_confirmed: Vec<usize>,
    bulk: Option<Bulk>,
    /// Seed of the shuffled rebuild.
    seed: u64,
}

fn age() -> impl Strategy<Value = Age> {
    prop_oneof![
        3 => (-2i64..=2).prop_map(Age::Boundary),
        2 => (-3 * H..=3 * H).prop_map(Age::Boundary),
        2 => (-H..=100 * H).prop_map(Age::Secs),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    let margin = prop_oneof![Just(12 * H), Just(1i64), Just(LIFE - 1), 1i64..LIFE,];
    (margin, proptest::bool::weighted(0.2)).prop_map(|(renew_margin_secs, reassert)| Policy {
        renew_margin_secs,
        reassert,
    })
}

fn bulk() -> impl Strategy<Value = Bulk> {
    (
        0..GROUPS.len(),
        prop_oneof![499usize..=501, 999usize..=1001, 0usize..1100],
        1usize..6,
        0u8..16,
        1usize..4,
        1u8..16,
        age(),
    )
        .prop_map(
            |(
                group,
                n,
                desired_every,
                desired_mask,
                confirmed_every,
                confirmed_mask,
                confirmed_age,
            )| {
                Bulk {
                    group,
                    n,
                    desired_every,
                    desired_mask,
                    confirmed_every,
                    confirmed_mask,
                    confirmed_age,
                }
            },
        )
}

fn input() -> impl Strategy<Value = Input> {
    let ga = (0..GROUPS.len(), 0..ACCOUNTS.len());
    (
        BASE_NOW - 5..=BASE_NOW + 5,
        policy(),
        proptest::collection::vec(0..GROUPS.len(), 0..3),
        proptest::collection::vec((ga.clone(), 0u8..16), 0..16),
        proptest::collection::vec(
            (
                ga.clone(),
                prop_oneof![1 => Just(None), 9 => (0..MARKS.len()).prop_map(Some)],
                age(),
            ),
            0..20,
        ),
        proptest::collection::vec((ga, 0u8..16), 0..5),
        proptest::collection::vec(any::<usize>(), 0..4),
        proptest::option::weighted(0.15, bulk()),
        any::<u64>(),
    )
        .prop_map(
            |(now, policy, declared, desired, confirmed, intents, on_confirmed, bulk, seed)| {
                Input {
                    now,
                    policy,
                    declared,
                    desired: desired.into_iter().map(|((g, a), k)| (g, a, k)).collect(),
                    confirmed: confirmed
                        .into_iter()
                        .map(|((g, a), mk, age)| (g, a, mk, age))
                        .collect(),
                    intents: intents.into_iter().map(|((g, a), k)| (g, a, k)).collect(),
                    intents_on_confirmed: on_confirmed,
                    bulk,
                    seed,
                }
            },
        )
}

impl Input {
    fn time(&self, age: Age) -> UnixTime {
        match age {
            Age::Boundary(delta) => self.now - (LIFE - self.policy.renew_margin_secs) - delta,
            Age::Secs(s) => self.now - s,
        }
    }

    /// The operations that build the inputs, in a canonical order.
    fn ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for &gi in &self.declared {
            ops.push(Op::Declare(g(GROUPS[gi])));
        }
        for &(gi, ai, mask) in &self.desired {
            ops.push(Op::Desire(
                g(GROUPS[gi]),
                a(ACCOUNTS[ai]),
                marks_of(mask).collect(),
            ));
        }
        let mut seen = BTreeSet::new();
        for &(gi, ai, mk, age) in &self.confirmed {
            if seen.insert((gi, ai, mk)) {
                let marks = mk.map(|i| m(MARKS[i])).into_iter().collect();
                ops.push(Op::Confirm(
                    g(GROUPS[gi]),
                    a(ACCOUNTS[ai]),
                    marks,
                    self.time(age),
                ));
            }
        }
        for &i in &self.intents_on_confirmed {
            if let Some(&(gi, ai, Some(mi), _)) =
                self.confirmed.get(i % self.confirmed.len().max(1))
            {
                ops.push(Op::Intend(
                    g(GROUPS[gi]),
                    a(ACCOUNTS[ai]),
                    [m(MARKS[mi])].into_iter().collect(),
                ));
            }
        }
        for &(gi, ai, mask) in &self.intents {
            ops.push(Op::Intend(
                g(GROUPS[gi]),
                a(ACCOUNTS[ai]),
                marks_of(mask).collect(),
            ));
        }
        if let Some(b) = &self.bulk {
            let group = g(GROUPS[b.group]);
            for i in 0..b.n {
                let account = a(&format!("m{i:04}"));
                if i % b.desired_every != 0 {
                    ops.push(Op::Desire(
                        group.clone(),
                        account.clone(),
                        marks_of(b.desired_mask).collect(),
                    ));
                }
                if i % b.confirmed_every == 0 {
                    ops.push(Op::Confirm(
                        group.clone(),
                        account,
                        marks_of(b.confirmed_mask).collect(),
                        self.time(b.confirmed_age),
                    ));
                }
            }
        }
        ops
    }
}

/// One step of building the desired state and the state file.
#[derive(Clone, Debug)]
enum Op {
    Declare(GroupId),
    Desire(GroupId, Account, MarkSet),
    Confirm(GroupId, Account, MarkSet, UnixTime),
    Intend(GroupId, Account, MarkSet),
}

/// Builds the inputs by writing the public fields directly, so that states the API would not
/// produce (an intent next to a confirmation of the same mark, empty entries) occur too.
fn build(ops: &[Op]) -> (DesiredState, State) {
    let mut d = DesiredState::default();
    let mut s = State::new(1);
    for op in ops {
        match op {
            Op::Declare(group) => {
                d.groups.entry(group.clone()).or_default();
            }
            Op::Desire(group, account, marks) => d
                .groups
                .entry(group.clone())
                .or_default()
                .members
                .entry(account.clone())
                .or_default()
                .extend(marks.iter()),
            Op::Confirm(group, account, marks, at) => {
                let c = s
                    .groups
                    .entry(group.clone())
                    .or_default()
                    .entry(account.clone())
                    .or_default();
                for mark in marks.iter() {
                    c.confirm(mark, *at);
                }
            }
            Op::Intend(group, account, marks) => s
                .intents
                .entry(group.clone())
                .or_default()
                .entry(account.clone())
                .or_default()
                .extend(marks.iter()),
        }
    }
    (d, s)
}

/// Fisher-Yates with a xorshift generator: a reproducible permutation of `v`.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

type Triple = (GroupId, Account, Mark);

fn desired_triples(d: &DesiredState) -> BTreeSet<Triple> {
    d.groups
        .iter()
        .flat_map(|(g, dg)| {
            dg.members
                .iter()
                .flat_map(move |(a, ms)| ms.iter().map(move |m| (g.clone(), a.clone(), m)))
        })
        .collect()
}

fn confirmed_times(s: &State) -> BTreeMap<Triple, UnixTime> {
    s.groups
        .iter()
        .flat_map(|(g, accounts)| {
            accounts
                .iter()
                .flat_map(move |(a, c)| c.iter().map(move |(m, t)| ((g.clone(), a.clone(), m), t)))
        })
        .collect()
}

fn intent_triples(s: &State) -> BTreeSet<Triple> {
    s.intents
        .iter()
        .flat_map(|(g, accounts)| {
            accounts
                .iter()
                .flat_map(move |(a, ms)| ms.iter().map(move |m| (g.clone(), a.clone(), m)))
        })
        .collect()
}

/// What SPEC section 5 says each member gets: per (group, command), account -> marks.
struct Expected {
    calls: BTreeMap<(GroupId, Command), BTreeMap<Account, BTreeSet<Mark>>>,
    /// (group, account, confirmation time) of every mark 500 due for renewal.
    renewals: BTreeSet<(GroupId, Account, UnixTime)>,
    /// Confirmed desired marks 500 that are not due.
    not_due: BTreeSet<(GroupId, Account)>,
    managed: usize,
}

fn expected(d: &DesiredState, s: &State, now: UnixTime, policy: &Policy) -> Expected {
    let want = desired_triples(d);
    let held = confirmed_times(s);
    let intended = intent_triples(s);
    let mut calls: BTreeMap<(GroupId, Command), BTreeMap<Account, BTreeSet<Mark>>> =
        BTreeMap::new();
    let mut add = |(g, a, m): &Triple, c: Command| {
        calls
            .entry((g.clone(), c))
            .or_default()
            .entry(a.clone())
            .or_default()
            .insert(*m);
    };
    let mut renewals = BTreeSet::new();
    let mut not_due = BTreeSet::new();
    for t in &want {
        // A mark with an intent is unknown (SPEC 4): whatever its confirmation says, a desired
        // one is set again.
        let known = held.get(t).filter(|_| !intended.contains(t));
        match known {
            None => add(t, Command::Set),
            // Due: old enough, or confirmed "in the future" (a clock stepped back).
            Some(&at)
                if t.2.get() == 500
                    && (at > now || now - at >= LIFE - policy.renew_margin_secs) =>
            {
                renewals.insert((t.0.clone(), t.1.clone(), at));
                add(t, Command::Set);
            }
            Some(_) => {
                if t.2.get() == 500 {
                    not_due.insert((t.0.clone(), t.1.clone()));
                }
                if policy.reassert {
                    add(t, Command::Set);
                }
            }
        }
    }
    for t in held.keys().chain(&intended) {
        if !want.contains(t) {
            add(t, Command::Clear);
        }
    }
    Expected {
        calls,
        renewals,
        not_due,
        managed: held.len(),
    }
}

/// A service that confirms everything: clears are forgotten (and their intents resolved), sets
/// are confirmed at `now` (which resolves their intents).
fn fold(s: &State, p: &Plan, now: UnixTime) -> State {
    let mut s = s.clone();
    for call in &p.calls {
        for (account, marks) in &call.members {
            match call.command {
                Command::Clear => {
                    s.forget(&call.group, account, marks.iter());
                    s.drop_intents(&call.group, account, marks.iter());
                }
                Command::Set => s.confirm(&call.group, account, marks.iter(), now),
            }
        }
    }
    s
}

fn ceil_div(n: usize, d: usize) -> usize {
    n.div_ceil(d)
}

/// Checks every property of one planning problem; returns the plan.
fn check(
    d: &DesiredState,
    s: &State,
    now: UnixTime,
    policy: &Policy,
) -> Result<Plan, TestCaseError> {
    let p = plan(d, s, now, policy);
    let exp = expected(d, s, now, policy);

    // Shape of every call: 1..=500 members, sorted, each at most once.
    for (i, c) in p.calls.iter().enumerate() {
        prop_assert!(!c.members.is_empty(), "call {i} has no members");
        prop_assert!(
            c.members.len() <= MAX_MEMBERS_PER_CALL,
            "call {i} has {} members",
            c.members.len()
        );
        prop_assert!(
            c.members.windows(2).all(|w| w[0].0 < w[1].0),
            "call {i}: members not sorted or repeated"
        );
        prop_assert!(
            c.members.iter().all(|(_, ms)| !ms.is_empty()),
            "call {i}: member without marks"
        );
    }

    // Ordering: a group's calls are contiguous, groups ascending, clears before sets.
    for w in p.calls.windows(2) {
        prop_assert!(
            w[0].group <= w[1].group,
            "groups out of order: {} then {}",
            w[0].group,
            w[1].group
        );
        if w[0].group == w[1].group {
            prop_assert!(
                !(w[0].command == Command::Set && w[1].command == Command::Clear),
                "a clear after a set in {}",
                w[0].group
            );
            if w[0].command == w[1].command {
                prop_assert!(
                    w[0].members.last().unwrap().0 < w[1].members[0].0,
                    "batches of {} not in account order",
                    w[0].group
                );
            }
        }
    }

    // Each member is in exactly one call per (group, command), carrying exactly the marks the SPEC
    // gives it.
    let mut got: BTreeMap<(GroupId, Command), BTreeMap<Account, BTreeSet<Mark>>> = BTreeMap::new();
    for c in &p.calls {
        let per = got.entry((c.group.clone(), c.command)).or_default();
        for (account, marks) in &c.members {
            prop_assert!(
                per.insert(account.clone(), marks.iter().collect())
                    .is_none(),
                "{} is in two {:?} calls of {}",
                account,
                c.command,
                c.group
            );
        }
    }
    prop_assert_eq!(&got, &exp.calls);

    // The call count is the lower bound.
    let bound: usize = exp
        .calls
        .values()
        .map(|members| ceil_div(members.len(), MAX_MEMBERS_PER_CALL))
        .sum();
    prop_assert_eq!(p.calls.len(), bound);

    // Marks marksync never set are never cleared.
    let held = confirmed_times(s);
    let intended = intent_triples(s);
    for c in p.calls.iter().filter(|c| c.command == Command::Clear) {
        for (account, marks) in &c.members {
            for mark in marks.iter() {
                let t = (c.group.clone(), account.clone(), mark);
                prop_assert!(
                    held.contains_key(&t) || intended.contains(&t),
                    "clears unrecorded {t:?}"
                );
            }
        }
    }

    // Mark 500 renews exactly when due.
    let in_set = |g: &GroupId, acc: &Account| {
        got.get(&(g.clone(), Command::Set))
            .and_then(|ms| ms.get(acc))
            .is_some_and(|ms| ms.contains(&Mark::ALWAYS_ONLINE))
    };
    let renew_changes: BTreeSet<(GroupId, Account, UnixTime)> = p
        .changes
        .iter()
        .flat_map(|(g, cs)| {
            cs.iter().filter_map(move |c| match c.kind {
                ChangeKind::Renew(at) => Some((g.clone(), c.account.clone(), at)),
                _ => None,
            })
        })
        .collect();
    prop_assert_eq!(&renew_changes, &exp.renewals);
    for (g, acc, _) in &exp.renewals {
        prop_assert!(in_set(g, acc), "due 500 of {acc} in {g} not renewed");
    }
    for (g, acc) in &exp.not_due {
        prop_assert_eq!(
            in_set(g, acc),
            policy.reassert,
            "500 of {} in {} not due",
            acc,
            g
        );
    }

    // Reassert sends every desired mark.
    if policy.reassert {
        for (g, acc, mark) in desired_triples(d) {
            let sent = got
                .get(&(g.clone(), Command::Set))
                .and_then(|ms| ms.get(&acc))
                .is_some_and(|ms| ms.contains(&mark));
            prop_assert!(sent, "reassert did not send {mark} of {acc} in {g}");
        }
    }

    // Summary matches the calls.
    let marks_in = |cmd: Command| -> usize {
        p.calls
            .iter()
            .filter(|c| c.command == cmd)
            .flat_map(|c| c.members.iter().map(|(_, ms)| ms.len()))
            .sum()
    };
    prop_assert_eq!(p.summary.set + p.summary.renew, marks_in(Command::Set));
    prop_assert_eq!(p.summary.renew, exp.renewals.len());
    prop_assert_eq!(p.summary.clear, marks_in(Command::Clear));
    let groups: BTreeSet<&GroupId> = p.calls.iter().map(|c| &c.group).collect();
    prop_assert_eq!(p.summary.groups, groups.len());
    prop_assert_eq!(p.summary.calls, p.calls.len());
    prop_assert_eq!(p.managed, exp.managed);

    // Deterministic.
    prop_assert_eq!(&plan(d, s, now, policy), &p);

    // Applying the plan against a service that confirms everything reaches the desired marks, and
    // then there is nothing left to do.
    let after = fold(s, &p, now);
    let reached: BTreeSet<Triple> = confirmed_times(&after).into_keys().collect();
    prop_assert_eq!(&reached, &desired_triples(d));
    let again = plan(
        d,
        &after,
        now,
        &Policy {
            reassert: false,
            ..*policy
        },
    );
    prop_assert!(
        again.is_empty(),
        "second plan is not empty: {:?}",
        again.calls
    );
    Ok(p)
}

/// The guard, computed exactly: the fraction is `num / den`, so "more than the fraction of the
/// managed marks" is `clears * den > num * managed` in integers.
fn guard_refuses(clears: usize, managed: usize, (num, den): (u32, u32), min_clears: u64) -> bool {
    clears as u64 > min_clears
        && clears as u128 * u128::from(den) > u128::from(num) * managed as u128
}

/// How many of the managed marks the guard test clears.
#[derive(Clone, Copy, Debug)]
enum Cleared {
    PerMille(usize),
    /// Off by this much from `percent` of the managed marks.
    AtLimit(i64),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn plans_meet_the_spec(inp in input(), percent in 0u32..=100, min_clears in 0u64..12) {
        let ops = inp.ops();
        let (d, s) = build(&ops);
        let p = check(&d, &s, inp.now, &inp.policy)?;

        // Insertion order does not matter.
        let mut shuffled = ops.clone();
        shuffle(&mut shuffled, inp.seed);
        let (d2, s2) = build(&shuffled);
        prop_assert_eq!(&plan(&d2, &s2, inp.now, &inp.policy), &p);

        // The guard.
        let exp = expected(&d, &s, inp.now, &inp.policy);
        let clears: usize = exp
            .calls
            .iter()
            .filter(|((_, c), _)| *c == Command::Clear)
            .flat_map(|(_, members)| members.values().map(BTreeSet::len))
            .sum();
        let guard = Guard { max_clear_fraction: f64::from(percent) / 100.0, min_clears };
        prop_assert_eq!(
            p.check_guard(&guard).is_err(),
            guard_refuses(clears, exp.managed, (percent, 100), min_clears),
            "clears {} managed {} guard {:?}", clears, exp.managed, guard
        );
    }

    /// The guard at many (clears, managed) ratios, including exact ones such as 57 of 100 at 57%.
    #[test]
    fn guard_refuses_exactly_above_both_limits(
        managed in prop_oneof![0usize..300, (1usize..=6).prop_map(|k| k * 50)],
        cleared in prop_oneof![
            (0usize..=1000).prop_map(Cleared::PerMille),
            (-1i64..=1).prop_map(Cleared::AtLimit),
        ],
        extra_intents in 0usize..3,
        percent in 0u32..=100,
        min_clears in 0u64..12,
    ) {
        let cleared = match cleared {
            Cleared::PerMille(k) => managed * k / 1000,
            Cleared::AtLimit(off) => {
                ((percent as usize * managed / 100) as i64 + off).clamp(0, managed as i64) as usize
            }
        };
        let group = g("@TGS#guard");
        let mut d = DesiredState::default();
        let mut dg = DesiredGroup::default();
        let mut s = State::new(1);
        for i in 0..managed {
            let account = a(&format!("m{i:03}"));
            s.confirm(&group, &account, [m(1000)], BASE_NOW);
            if i >= cleared {
                dg.members.insert(account, [m(1000)].into_iter().collect());
            }
        }
        for i in 0..extra_intents {
            s.intend(&group, &a(&format!("x{i}")), [m(1001)]);
        }
        d.groups.insert(group, dg);
        let p = plan(&d, &s, BASE_NOW, &Policy::default());
        let clears = cleared + extra_intents;
        prop_assert_eq!(p.summary.clear, clears);
        let guard = Guard { max_clear_fraction: f64::from(percent) / 100.0, min_clears };
        prop_assert_eq!(
            p.check_guard(&guard).is_err(),
            guard_refuses(clears, managed, (percent, 100), min_clears),
            "clears {} managed {} guard {:?}", clears, managed, guard
        );
    }
}

#[test]
fn group_only_in_state_has_all_its_marks_cleared() {
    let mut s = State::new(1);
    s.confirm(
        &g("@TGS#gone"),
        &a("u0"),
        [m(500), m(1000)],
        BASE_NOW - 100 * H,
    );
    s.confirm(&g("@TGS#gone"), &a("u1"), [m(600)], BASE_NOW);
    s.intend(&g("@TGS#gone"), &a("u2"), [m(1001)]);
    let p = check(&DesiredState::default(), &s, BASE_NOW, &Policy::default()).unwrap();
    assert_eq!(p.calls.len(), 1);
    assert_eq!(p.calls[0].command, Command::Clear);
    let members: Vec<(String, String)> = p.calls[0]
        .members
        .iter()
        .map(|(a, ms)| (a.to_string(), ms.to_string()))
        .collect();
    assert_eq!(
        members,
        [("u0", "500,1000"), ("u1", "600"), ("u2", "1001")].map(|(a, m)| (a.into(), m.into()))
    );
    assert_eq!(p.summary.clear, 4);
    assert_eq!(
        p.summary.renew, 0,
        "an undesired stale 500 is cleared, not renewed"
    );
}

#[test]
fn desired_group_without_members_clears_its_recorded_marks() {
    let mut d = DesiredState::default();
    d.groups.insert(g("@TGS#empty"), DesiredGroup::default());
    d.groups
        .entry(g("@TGS#listed"))
        .or_default()
        .members
        .insert(a("u0"), MarkSet::new());
    let mut s = State::new(1);
    s.confirm(&g("@TGS#empty"), &a("u0"), [m(1000)], BASE_NOW);
    s.confirm(&g("@TGS#listed"), &a("u0"), [m(1000)], BASE_NOW);
    let p = check(&d, &s, BASE_NOW, &Policy::default()).unwrap();
    let calls: Vec<(&str, Command, usize)> = p
        .calls
        .iter()
        .map(|c| (c.group.as_str(), c.command, c.members.len()))
        .collect();
    assert_eq!(
        calls,
        [
            ("@TGS#empty", Command::Clear, 1),
            ("@TGS#listed", Command::Clear, 1)
        ]
    );
}

#[test]
fn a_member_in_both_commands_is_cleared_first_then_set() {
    let mut d = DesiredState::default();
    d.groups
        .entry(g("G"))
        .or_default()
        .members
        .insert(a("u0"), [m(500), m(1000)].into_iter().collect());
    let mut s = State::new(1);
    s.confirm(&g("G"), &a("u0"), [m(500), m(1001)], BASE_NOW - 60 * H);
    let p = check(&d, &s, BASE_NOW, &Policy::default()).unwrap();
    let calls: Vec<(Command, String)> = p
        .calls
        .iter()
        .map(|c| (c.command, c.members[0].1.to_string()))
        .collect();
    assert_eq!(
        calls,
        [
            (Command::Clear, "1001".into()),
            (Command::Set, "500,1000".into())
        ]
    );
    assert_eq!((p.summary.set, p.summary.renew, p.summary.clear), (1, 1, 1));
}

#[test]
fn nothing_recorded_and_nothing_desired_plans_nothing() {
    let mut s = State::new(1);
    s.intents
        .entry(g("G"))
        .or_default()
        .insert(a("u0"), MarkSet::new());
    let p = check(&DesiredState::default(), &s, BASE_NOW, &Policy::default()).unwrap();
    assert!(p.is_empty());
    assert_eq!(p.summary.groups, 0);
}

/// The guard's arithmetic at every whole percentage and per mille and every ratio up to 300
/// managed marks, right at the limit: "more than 29% of 100" must not refuse 29 clears.
#[test]
fn guard_is_exact_at_every_ratio() {
    use marksync::plan::Summary;
    for den in [100u32, 1000] {
        for num in 0..=den {
            let guard = Guard {
                max_clear_fraction: f64::from(num) / f64::from(den),
                min_clears: 0,
            };
            for managed in 0..=300usize {
                let limit = num as usize * managed / den as usize;
                for clear in limit.saturating_sub(1)..=limit + 1 {
                    let p = Plan {
                        summary: Summary {
                            clear,
                            ..Summary::default()
                        },
                        managed,
                        ..Plan::default()
                    };
                    assert_eq!(
                        p.check_guard(&guard).is_err(),
                        guard_refuses(clear, managed, (num, den), 0),
                        "{clear} clears of {managed} managed at {num}/{den}"
                    );
                }
            }
        }
    }
}
