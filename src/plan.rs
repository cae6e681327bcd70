//! The planner (SPEC section 5): `(desired, state, now, policy) -> Plan`.
//!
//! Architecture invariant: this module is pure. It reads no clock, environment or file; `now` is a
//! parameter. Output is sorted, so the same inputs always give the same plan.
//!
//! Per group and member, with `held` = confirmed marks plus intents (marks an interrupted apply
//! may have set or cleared):
//! - a mark with an intent is unknown, whatever its confirmation says;
//! - set = desired marks not confirmed (or unknown), plus mark 500 when its confirmation is
//!   older than 72 h minus the renew margin or in the future (a clock stepped back): a renewal;
//!   plus every desired mark when reasserting;
//! - clear = held marks that are not desired. Marks marksync never set are never touched.
//!
//! Calls: per group, clears first (they free the 10-mark and 1000-member capacity), then sets, at
//! most 500 members per call, one entry per member carrying all its marks. That reaches the lower
//! bound `sum over groups of ceil(clear members / 500) + ceil(set members / 500)`.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::desired::{DesiredGroup, DesiredState};
use crate::model::{
    Account, GroupId, MARK_500_LIFETIME_SECS, MAX_MEMBERS_PER_CALL, Mark, MarkSet, UnixTime,
};
use crate::state::{Confirmed, State};

/// The mass-clear guard (SPEC section 5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guard {
    /// Refuse a plan clearing more than this fraction of the managed marks...
    pub max_clear_fraction: f64,
    /// ...when it also clears more than this many marks.
    pub min_clears: u64,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            max_clear_fraction: 0.25,
            min_clears: 10,
        }
    }
}

/// Knobs of planning that come from the config and the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Renew mark 500 this many seconds before its 72 h run out.
    pub renew_margin_secs: i64,
    /// Re-send every desired mark, confirmed or not (the service drops marks of members who went
    /// offline, and marksync cannot see that).
    pub reassert: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            renew_margin_secs: 12 * 3600,
            reassert: false,
        }
    }
}

/// Whether a call sets or clears marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Command {
    /// `CommandType` 2: delete the listed marks.
    Clear,
    /// `CommandType` 1: set the listed marks.
    Set,
}

impl Command {
    /// "set" or "clear", as in the JSON plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Set => "set",
            Command::Clear => "clear",
        }
    }
}

/// One `modify_user_info` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The group the call is for.
    pub group: GroupId,
    /// Set or clear.
    pub command: Command,
    /// At most 500 members, sorted by account, each with all its marks for this command.
    pub members: Vec<(Account, MarkSet)>,
}

/// Why a mark is in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Desired and not confirmed.
    Set,
    /// Held and not desired.
    Clear,
    /// Mark 500 confirmed long enough ago that it is due again; carries the confirmation time.
    Renew(UnixTime),
    /// Desired and confirmed, re-sent because the policy reasserts.
    Reassert,
}

/// One (account, mark) change, for the human plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What happens.
    pub kind: ChangeKind,
    /// The member.
    pub account: Account,
    /// The mark.
    pub mark: Mark,
}

/// Counts for the summary line and the JSON `summary` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Marks to set (including reasserted ones).
    pub set: usize,
    /// Marks to clear.
    pub clear: usize,
    /// Marks 500 to renew.
    pub renew: usize,
    /// Groups with at least one change.
    pub groups: usize,
    /// API calls.
    pub calls: usize,
}

/// What `apply` would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The calls, grouped by group (sorted), clears before sets within a group.
    pub calls: Vec<Call>,
    /// Every change, by group, sorted by kind, account and mark.
    pub changes: BTreeMap<GroupId, Vec<Change>>,
    /// Counts.
    pub summary: Summary,
    /// Confirmed marks in the state before this plan (the guard's denominator).
    pub managed: usize,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls of one group, in order.
    pub fn calls_by_group(&self) -> BTreeMap<&GroupId, Vec<&Call>> {
        let mut out: BTreeMap<&GroupId, Vec<&Call>> = BTreeMap::new();
        for c in &self.calls {
            out.entry(&c.group).or_default().push(c);
        }
        out
    }

    /// The mass-clear guard: refuses a plan that clears more than `max_clear_fraction` of the
    /// managed marks and more than `min_clears` marks.
    ///
    /// The fraction is compared as a ratio, `clears / managed > fraction`, not as
    /// `clears > fraction * managed`: the product rounds (0.29 * 100.0 is 28.999999999999996), so
    /// it would refuse exactly 29 of 100 at 29%, which is not more than 29%. The quotient of two
    /// integers and the configured decimal round alike when they are equal. With nothing managed
    /// the quotient is infinite (any clear is more than 0%), or NaN for 0 / 0, which refuses
    /// nothing.
    pub fn check_guard(&self, guard: &Guard) -> Result<(), MassClear> {
        let clears = self.summary.clear;
        let too_many = clears as u64 > guard.min_clears;
        let too_large = clears as f64 / self.managed as f64 > guard.max_clear_fraction;
        if too_many && too_large {
            Err(MassClear {
                clears,
                managed: self.managed,
                guard: *guard,
            })
        } else {
            Ok(())
        }
    }
}

/// A plan refused by the mass-clear guard.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "refusing to clear {clears} of {managed} managed marks (more than {} and more than {:.0}%); \
     if that is really what you want, run again with --allow-mass-clear",
    guard.min_clears,
    guard.max_clear_fraction * 100.0
)]
pub struct MassClear {
    /// Marks the plan would clear.
    pub clears: usize,
    /// Marks marksync manages.
    pub managed: usize,
    /// The guard's settings.
    pub guard: Guard,
}

/// Computes the plan. Pure and deterministic.
///
/// Groups are planned in parallel (each group's plan depends only on that group's inputs) and
/// collected in group order, so the output is the same as a sequential run.
pub fn plan(desired: &DesiredState, state: &State, now: UnixTime, policy: &Policy) -> Plan {
    let renew_before = now - (MARK_500_LIFETIME_SECS - policy.renew_margin_secs);

    // Every group that is desired, confirmed or intended, in sorted order: a merge-join of the
    // three maps' sorted keys.
    let groups: Vec<_> = MergeJoin3::new(
        desired.groups.iter(),
        state.groups.iter(),
        state.intents.iter(),
    )
    .collect();
    let planned: Vec<Option<GroupPlan>> = groups
        .into_par_iter()
        .map(|(group, want, confirmed, intents)| {
            plan_group(group, want, confirmed, intents, now, renew_before, policy)
        })
        .collect();

    let mut out = Plan {
        managed: state.managed_count(),
        ..Plan::default()
    };
    let mut changes = Vec::new();
    for p in planned.into_iter().flatten() {
        out.summary.set += p.set;
        out.summary.clear += p.clear;
        out.summary.renew += p.renew;
        out.summary.groups += 1;
        out.calls.extend(p.calls);
        changes.push((p.group.clone(), p.changes));
    }
    // Sorted input: `BTreeMap` bulk-builds it.
    out.changes = changes.into_iter().collect();
    out.summary.calls = out.calls.len();
    out
}

/// The plan of one group that has changes.
struct GroupPlan<'a> {
    group: &'a GroupId,
    calls: Vec<Call>,
    changes: Vec<Change>,
    set: usize,
    clear: usize,
    renew: usize,
}

/// Plans one group; `None` when it has nothing to do.
fn plan_group<'a>(
    group: &'a GroupId,
    want: Option<&DesiredGroup>,
    confirmed: Option<&BTreeMap<Account, Confirmed>>,
    intents: Option<&BTreeMap<Account, MarkSet>>,
    now: UnixTime,
    renew_before: UnixTime,
    policy: &Policy,
) -> Option<GroupPlan<'a>> {
    let mut sets: Vec<(Account, MarkSet)> = Vec::new();
    let mut clears: Vec<(Account, MarkSet)> = Vec::new();
    // One list per change kind, each filled in account order and, within an account, in mark
    // order: concatenated in display order they are sorted without a sort.
    let mut set_changes: Vec<Change> = Vec::new();
    let mut clear_changes: Vec<Change> = Vec::new();
    let mut renew_changes: Vec<Change> = Vec::new();
    let mut reassert_changes: Vec<Change> = Vec::new();

    let no_marks = MarkSet::new();
    let no_confirmed = Confirmed::default();
    // Accounts in any of the three maps, sorted: a merge-join of sorted keys.
    let accounts = MergeJoin3::new(
        want.into_iter().flat_map(|w| w.members.iter()),
        confirmed.into_iter().flatten(),
        intents.into_iter().flatten(),
    );
    for (account, desired_marks, held, intended) in accounts {
        let desired_marks = desired_marks.unwrap_or(&no_marks);
        let held = held.unwrap_or(&no_confirmed);
        let intended = intended.unwrap_or(&no_marks);

        let mut set = MarkSet::new();
        for m in desired_marks.iter() {
            // A mark with an intent is unknown (a set or a clear of it was in flight when an
            // apply stopped), whatever its confirmation says: set it again.
            let known = held.get(m).filter(|_| !intended.contains(m));
            let (list, kind) = match known {
                None => (&mut set_changes, ChangeKind::Set),
                // Due: old enough, or confirmed "in the future" (the clock was stepped back), which
                // would otherwise never come due while the real mark runs out.
                Some(at) if m.expires() && (at <= renew_before || at > now) => {
                    (&mut renew_changes, ChangeKind::Renew(at))
                }
                Some(_) if policy.reassert => (&mut reassert_changes, ChangeKind::Reassert),
                Some(_) => continue,
            };
            list.push(Change {
                kind,
                account: account.clone(),
                mark: m,
            });
            set.insert(m);
        }
        let mut clear = MarkSet::new();
        for m in held.iter().map(|(m, _)| m).chain(intended.iter()) {
            if !desired_marks.contains(m) {
                clear.insert(m);
            }
        }
        for m in clear.iter() {
            clear_changes.push(Change {
                kind: ChangeKind::Clear,
                account: account.clone(),
                mark: m,
            });
        }
        if !set.is_empty() {
            sets.push((account.clone(), set));
        }
        if !clear.is_empty() {
            clears.push((account.clone(), clear));
        }
    }
    let (set, clear, renew) = (
        set_changes.len() + reassert_changes.len(),
        clear_changes.len(),
        renew_changes.len(),
    );
    if set + clear + renew == 0 {
        return None;
    }
    // Display order: sets, clears, renewals, reasserts (see `kind_order`).
    let mut changes = set_changes;
    changes.reserve_exact(clear + renew + reassert_changes.len());
    changes.append(&mut clear_changes);
    changes.append(&mut renew_changes);
    changes.append(&mut reassert_changes);
    debug_assert!(changes.is_sorted_by(|a, b| {
        (kind_order(a.kind), &a.account, a.mark) <= (kind_order(b.kind), &b.account, b.mark)
    }));
    let mut calls = Vec::with_capacity(
        clears.len().div_ceil(MAX_MEMBERS_PER_CALL) + sets.len().div_ceil(MAX_MEMBERS_PER_CALL),
    );
    push_calls(&mut calls, group, Command::Clear, clears);
    push_calls(&mut calls, group, Command::Set, sets);
    Some(GroupPlan {
        group,
        calls,
        changes,
        set,
        clear,
        renew,
    })
}

/// A merge-join of three iterators of `(key, value)` sorted by strictly ascending key: yields
/// each key once, in order, with the value of every iterator that has it.
struct MergeJoin3<K, A, B, C, IA, IB, IC>
where
    IA: Iterator<Item = (K, A)>,
    IB: Iterator<Item = (K, B)>,
    IC: Iterator<Item = (K, C)>,
{
    a: std::iter::Peekable<IA>,
    b: std::iter::Peekable<IB>,
    c: std::iter::Peekable<IC>,
}

impl<K, A, B, C, IA, IB, IC> MergeJoin3<K, A, B, C, IA, IB, IC>
where
    IA: Iterator<Item = (K, A)>,
    IB: Iterator<Item = (K, B)>,
    IC: Iterator<Item = (K, C)>,
{
    fn new(a: IA, b: IB, c: IC) -> Self {
        MergeJoin3 {
            a: a.peekable(),
            b: b.peekable(),
            c: c.peekable(),
        }
    }
}

impl<K, A, B, C, IA, IB, IC> Iterator for MergeJoin3<K, A, B, C, IA, IB, IC>
where
    K: Ord + Copy,
    IA: Iterator<Item = (K, A)>,
    IB: Iterator<Item = (K, B)>,
    IC: Iterator<Item = (K, C)>,
{
    type Item = (K, Option<A>, Option<B>, Option<C>);

    fn next(&mut self) -> Option<Self::Item> {
        let ka = self.a.peek().map(|e| e.0);
        let kb = self.b.peek().map(|e| e.0);
        let kc = self.c.peek().map(|e| e.0);
        let k = [ka, kb, kc].into_iter().flatten().min()?;
        let a = if ka == Some(k) {
            self.a.next().map(|e| e.1)
        } else {
            None
        };
        let b = if kb == Some(k) {
            self.b.next().map(|e| e.1)
        } else {
            None
        };
        let c = if kc == Some(k) {
            self.c.next().map(|e| e.1)
        } else {
            None
        };
        Some((k, a, b, c))
    }
}

/// Display order of change kinds: sets, clears, renewals, reasserts.
fn kind_order(k: ChangeKind) -> u8 {
    match k {
        ChangeKind::Set => 0,
        ChangeKind::Clear => 1,
        ChangeKind::Renew(_) => 2,
        ChangeKind::Reassert => 3,
    }
}

fn push_calls(
    calls: &mut Vec<Call>,
    group: &GroupId,
    command: Command,
    members: Vec<(Account, MarkSet)>,
) {
    let mut members = members.into_iter().peekable();
    while members.peek().is_some() {
        let batch: Vec<_> = members.by_ref().take(MAX_MEMBERS_PER_CALL).collect();
        calls.push(Call {
            group: group.clone(),
            command,
            members: batch,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Guard;

    use crate::model::test_ids::{a, g, m};
    fn desired(entries: &[(&str, &str, &[u64])]) -> DesiredState {
        let mut d = DesiredState::default();
        for (group, account, marks) in entries {
            d.groups
                .entry(g(group))
                .or_default()
                .members
                .entry(a(account))
                .or_default()
                .extend(marks.iter().map(|&n| m(n)));
        }
        d
    }

    const NOW: UnixTime = 1_764_000_000;
    const H: i64 = 3600;

    #[test]
    fn spec_example_plan() {
        let d = desired(&[
            ("@TGS#a6I4ZUUGO", "teacher10", &[1000]),
            ("@TGS#a6I4ZUUGO", "host", &[500]),
        ]);
        let mut s = State::new(1);
        s.confirm(&g("@TGS#a6I4ZUUGO"), &a("student9"), [m(1001)], NOW - H);
        s.confirm(&g("@TGS#a6I4ZUUGO"), &a("host"), [m(500)], NOW - 61 * H);
        let p = plan(&d, &s, NOW, &Policy::default());
        assert_eq!(
            p.summary,
            Summary {
                set: 1,
                clear: 1,
                renew: 1,
                groups: 1,
                calls: 2
            }
        );
        assert_eq!(p.calls[0].command, Command::Clear);
        assert_eq!(
            p.calls[0].members,
            vec![(a("student9"), [m(1001)].into_iter().collect())]
        );
        assert_eq!(p.calls[1].command, Command::Set);
        assert_eq!(
            p.calls[1].members,
            vec![
                (a("host"), [m(500)].into_iter().collect()),
                (a("teacher10"), [m(1000)].into_iter().collect())
            ]
        );
    }

    #[test]
    fn mark_500_renews_exactly_at_72h_minus_margin() {
        let d = desired(&[("G", "host", &[500])]);
        let policy = Policy {
            renew_margin_secs: 12 * H,
            reassert: false,
        };
        // A negative age is a confirmation "in the future": the clock was stepped back, and the
        // real mark may run out before that time comes, so it is due at once.
        for (age, due) in [
            (60 * H - 1, false),
            (60 * H, true),
            (71 * H, true),
            (0, false),
            (-1, true),
            (-100 * H, true),
        ] {
            let mut s = State::new(1);
            s.confirm(&g("G"), &a("host"), [m(500)], NOW - age);
            assert_eq!(
                plan(&d, &s, NOW, &policy).summary.renew == 1,
                due,
                "age {age}"
            );
        }
    }

    #[test]
    fn marks_never_set_are_never_cleared_and_intents_are() {
        let d = desired(&[("G", "u", &[1000])]);
        let mut s = State::new(1);
        s.confirm(&g("G"), &a("u"), [m(1000)], NOW);
        s.intend(&g("G"), &a("u"), [m(1001)]);
        s.intend(&g("G"), &a("v"), [m(1000)]);
        let p = plan(&d, &s, NOW, &Policy::default());
        assert_eq!(p.summary.clear, 2);
        assert_eq!(p.summary.set, 0);
        assert!(p.calls.iter().all(|c| c.command == Command::Clear));
    }

    #[test]
    fn a_confirmed_mark_with_an_intent_is_unknown_set_if_desired_cleared_if_not() {
        // An apply stopped while clearing (or setting) these marks: the service may or may not
        // hold them, whatever the confirmation says.
        let d = desired(&[("G", "u", &[1000, 500])]);
        let mut s = State::new(1);
        s.confirm(&g("G"), &a("u"), [m(1000), m(1001), m(500)], NOW);
        s.intend(&g("G"), &a("u"), [m(1000), m(1001), m(500)]);
        let p = plan(&d, &s, NOW, &Policy::default());
        assert_eq!((p.summary.set, p.summary.clear, p.summary.renew), (2, 1, 0));
        assert_eq!(
            p.calls
                .iter()
                .map(|c| (c.command, c.members[0].1.iter().map(Mark::get).collect()))
                .collect::<Vec<(Command, Vec<u32>)>>(),
            [
                (Command::Clear, vec![1001]),
                (Command::Set, vec![500, 1000])
            ]
        );
    }

    #[test]
    fn changes_are_in_display_order_without_a_sort() {
        // Every kind, several accounts and marks, intents: the per-kind lists concatenated must
        // equal a sort by (kind, account, mark), as the plan used to do explicitly.
        let d = desired(&[
            ("G", "u1", &[500, 1000, 1001]),
            ("G", "u2", &[1000]),
            ("G", "u0", &[600, 1002]),
            ("G", "u3", &[500]),
        ]);
        let mut s = State::new(1);
        s.confirm(&g("G"), &a("u1"), [m(500)], NOW - 70 * H);
        s.confirm(&g("G"), &a("u1"), [m(1000)], NOW);
        s.confirm(&g("G"), &a("u3"), [m(500)], NOW - 61 * H);
        s.confirm(&g("G"), &a("u2"), [m(1003), m(1002)], NOW);
        s.confirm(&g("G"), &a("u0"), [m(1003)], NOW);
        s.intend(&g("G"), &a("u2"), [m(1001), m(600)]);
        s.intend(&g("G"), &a("u4"), [m(1000)]);
        let policy = Policy {
            reassert: true,
            ..Policy::default()
        };
        let p = plan(&d, &s, NOW, &policy);
        let changes = &p.changes[&g("G")];
        let mut sorted = changes.clone();
        sorted.sort_by(|x, y| {
            (kind_order(x.kind), &x.account, x.mark).cmp(&(kind_order(y.kind), &y.account, y.mark))
        });
        assert_eq!(changes, &sorted);
        let kinds: Vec<u8> = changes.iter().map(|c| kind_order(c.kind)).collect();
        assert_eq!(kinds, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 3]);
        assert_eq!((p.summary.set, p.summary.clear, p.summary.renew), (5, 6, 2));
    }

    #[test]
    fn calls_split_at_500_members() {
        let names: Vec<String> = (0..1001).map(|i| format!("u{i:04}")).collect();
        let entries: Vec<(&str, &str, &[u64])> = names
            .iter()
            .map(|n| ("G", n.as_str(), &[1000u64][..]))
            .collect();
        let p = plan(&desired(&entries), &State::new(1), NOW, &Policy::default());
        let sizes: Vec<usize> = p.calls.iter().map(|c| c.members.len()).collect();
        assert_eq!(sizes, vec![500, 500, 1]);
    }

    #[test]
    fn guard_counts_clears_against_managed_marks() {
        let mut s = State::new(1);
        for i in 0..100 {
            s.confirm(&g("G"), &a(&format!("u{i}")), [m(1000)], NOW);
        }
        let guard = Guard {
            max_clear_fraction: 0.25,
            min_clears: 10,
        };
        let keep = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
            let entries: Vec<(&str, &str, &[u64])> = names
                .iter()
                .map(|x| ("G", x.as_str(), &[1000u64][..]))
                .collect();
            plan(&desired(&entries), &s, NOW, &Policy::default())
        };
        assert!(
            keep(75).check_guard(&guard).is_ok(),
            "25% is not more than 25%"
        );
        assert!(keep(74).check_guard(&guard).is_err(), "26 of 100 is");
        assert!(keep(0).check_guard(&guard).is_err());
    }

    #[test]
    fn guard_limit_is_not_moved_by_rounding() {
        // 0.29 * 100.0 rounds to 28.999999999999996: 29 clears of 100 must still pass at 29%.
        let plan = |clear, managed| Plan {
            summary: Summary {
                clear,
                ..Summary::default()
            },
            managed,
            ..Plan::default()
        };
        let at = |f| Guard {
            max_clear_fraction: f,
            min_clears: 0,
        };
        for (fraction, managed, clear) in [(0.29, 100, 29), (0.57, 200, 114), (0.7, 90, 63)] {
            assert!(plan(clear, managed).check_guard(&at(fraction)).is_ok());
            assert!(plan(clear + 1, managed).check_guard(&at(fraction)).is_err());
        }
        assert!(plan(1, 0).check_guard(&at(1.0)).is_err(), "nothing managed");
        assert!(plan(0, 0).check_guard(&at(0.0)).is_ok());
    }
}
