//! The journal's entries (SPEC 11 "Cost"): what one object of `KEY/journal/` holds, the delta
//! between two states, and the replay of a snapshot and the entries after it. Pure: no I/O.
//!
//! Entry `n` is `KEY/journal/{n:020}.json`. Every [`SNAPSHOT_EVERY`]th entry (`n % SNAPSHOT_EVERY
//! == 0`, the first one included) is a snapshot: the whole state, in exactly the format of a state
//! file, so `state pull --serial N` prints it as it is. Every other entry is a delta (the members
//! whose confirmed marks changed, the open intents, the last saved plan) or an intents record
//! (the open intents alone). Which kind an entry is follows from its number, so two writers that
//! race for a number race for the same object name, and the store's `If-None-Match` lets one win.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::{Confirmed, FORMAT_VERSION, State};
use crate::model::{Account, GroupId, MarkSet};

/// One snapshot every this many entries: a save costs a delta, and one save in this many costs
/// the whole state.
pub const SNAPSHOT_EVERY: u64 = 64;

/// How many snapshots the store keeps (SPEC 11): compaction deletes the entries older than the
/// oldest of them, never a snapshot that is one of the newest this many.
pub const KEEP_SNAPSHOTS: u64 = 10;

/// Whether entry `seq` is a snapshot.
pub fn is_snapshot(seq: u64) -> bool {
    seq.is_multiple_of(SNAPSHOT_EVERY)
}

/// The object name of entry `seq` under the journal's prefix.
pub fn entry_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The entry number an object name under the journal's prefix stands for, if it is one.
pub fn entry_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A journal entry that is not a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Always [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// The application the state belongs to.
    pub sdkappid: u64,
    /// The state's serial after this entry.
    pub serial: u64,
    /// What the entry records.
    pub kind: Kind,
    /// Members whose confirmed marks changed: their marks now, or `null` when none is left.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::super::unique_nested"
    )]
    pub members: BTreeMap<GroupId, BTreeMap<Account, Option<Confirmed>>>,
    /// The open intents after this entry (all of them: they are few, and replace the last).
    #[serde(default, deserialize_with = "super::super::unique_nested")]
    pub intents: BTreeMap<GroupId, BTreeMap<Account, MarkSet>>,
    /// The last saved plan applied, after this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_saved_plan: Option<String>,
}

/// What an [`Entry`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A save: the changed members, the intents and the saved plan.
    Delta,
    /// A record of intents before calls: the state's confirmed marks are unchanged.
    Intents,
}

/// The delta entry that turns `before` into `after` (whose serial it records).
pub fn delta(before: &State, after: &State) -> Entry {
    let mut members: BTreeMap<GroupId, BTreeMap<Account, Option<Confirmed>>> = BTreeMap::new();
    let empty = BTreeMap::new();
    let mut record = |g: &GroupId, a: &Account, c: Option<&Confirmed>| {
        members
            .entry(g.clone())
            .or_default()
            .insert(a.clone(), c.cloned());
    };
    merge_walk(&before.groups, &after.groups, |g, old, new| {
        let old = old.unwrap_or(&empty);
        let new = new.unwrap_or(&empty);
        if std::ptr::eq(old, new) {
            return;
        }
        merge_walk(old, new, |a, o, n| {
            if o != n {
                record(g, a, n);
            }
        });
    });
    Entry {
        format_version: FORMAT_VERSION,
        sdkappid: after.sdkappid,
        serial: after.serial,
        kind: Kind::Delta,
        members,
        intents: after.intents.clone(),
        last_saved_plan: after.last_saved_plan.clone(),
    }
}

/// The intents entry of `state`.
pub fn intents(state: &State) -> Entry {
    Entry {
        format_version: FORMAT_VERSION,
        sdkappid: state.sdkappid,
        serial: state.serial,
        kind: Kind::Intents,
        members: BTreeMap::new(),
        intents: state.intents.clone(),
        last_saved_plan: None,
    }
}

/// Applies `entry` to `state`.
pub fn apply(state: &mut State, entry: Entry) {
    if entry.kind == Kind::Delta {
        for (group, accounts) in entry.members {
            let held = state.groups.entry(group.clone()).or_default();
            for (account, marks) in accounts {
                match marks {
                    Some(m) if !m.is_empty() => {
                        held.insert(account, m);
                    }
                    _ => {
                        held.remove(&account);
                    }
                }
            }
            if held.is_empty() {
                state.groups.remove(&group);
            }
        }
        state.last_saved_plan = entry.last_saved_plan;
    }
    state.serial = entry.serial;
    state.intents = entry.intents;
}

/// Calls `f` with each key of `a` or `b` in order, and its value in each.
fn merge_walk<'m, K: Ord, V>(
    a: &'m BTreeMap<K, V>,
    b: &'m BTreeMap<K, V>,
    mut f: impl FnMut(&'m K, Option<&'m V>, Option<&'m V>),
) {
    let mut a = a.iter().peekable();
    let mut b = b.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some((ka, va)), None) => {
                f(ka, Some(va), None);
                a.next();
            }
            (None, Some((kb, vb))) => {
                f(kb, None, Some(vb));
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    f(ka, Some(va), None);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    f(kb, None, Some(vb));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    f(ka, Some(va), Some(vb));
                    a.next();
                    b.next();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mark;

    fn g(s: &str) -> GroupId {
        GroupId::try_from(s.to_string()).unwrap()
    }
    fn a(s: &str) -> Account {
        Account::try_from(s.to_string()).unwrap()
    }
    fn m(n: u64) -> Mark {
        Mark::new(n).unwrap()
    }

    fn sample() -> State {
        let mut s = State::new(1_400_000_000);
        for i in 0..50 {
            s.confirm(&g("@TGS#a"), &a(&format!("u{i}")), [m(1000), m(1001)], 100);
            s.confirm(&g("@TGS#b"), &a(&format!("u{i}")), [m(1000)], 100);
        }
        s.serial = 3;
        s
    }

    #[test]
    fn a_delta_replays_to_the_state_it_was_taken_from() {
        let before = sample();
        let mut after = before.clone();
        after.serial = 4;
        after.confirm(&g("@TGS#a"), &a("u1"), [m(1002)], 200);
        after.forget(&g("@TGS#a"), &a("u2"), [m(1000), m(1001)]);
        after.forget_group(&g("@TGS#b"));
        after.confirm(&g("@TGS#c"), &a("new"), [m(1000)], 300);
        after.intend(&g("@TGS#a"), &a("u3"), [m(1005)]);
        after.last_saved_plan = Some("plan-1".into());
        let d = delta(&before, &after);
        // Only what changed: u1 and u2 of a, 50 of b, one of c.
        assert_eq!(d.members[&g("@TGS#a")].len(), 2);
        assert_eq!(d.members[&g("@TGS#b")].len(), 50);
        assert_eq!(d.members[&g("@TGS#c")].len(), 1);
        let bytes = serde_json::to_vec(&d).unwrap();
        let back: Entry = serde_json::from_slice(&bytes).unwrap();
        let mut replayed = before.clone();
        apply(&mut replayed, back);
        assert_eq!(replayed, after);
    }

    #[test]
    fn a_one_member_delta_is_small_whatever_the_state() {
        let before = sample();
        let mut after = before.clone();
        after.serial += 1;
        after.confirm(&g("@TGS#a"), &a("u7"), [m(1009)], 200);
        let bytes = serde_json::to_vec(&delta(&before, &after)).unwrap();
        assert!(bytes.len() < 200, "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn an_intents_entry_keeps_the_confirmed_marks_and_serial() {
        let before = sample();
        let mut with = before.clone();
        with.intend(&g("@TGS#a"), &a("u3"), [m(1005)]);
        let mut replayed = before.clone();
        apply(&mut replayed, intents(&with));
        assert_eq!(replayed, with);
    }

    #[test]
    fn an_entry_with_a_duplicate_member_is_refused() {
        let text = r#"{"format_version":1,"sdkappid":1,"serial":2,"kind":"delta",
            "members":{"@TGS#a":{"u1":null,"u1":{"1000":5}}},"intents":{}}"#;
        let err = serde_json::from_str::<Entry>(text).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn entry_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(entry_seq(&entry_name(0)), Some(0));
        assert_eq!(entry_seq(&entry_name(12345)), Some(12345));
        assert_eq!(entry_seq("12.json"), None);
        assert_eq!(entry_seq("0000000000000000001x.json"), None);
        assert!(is_snapshot(0) && is_snapshot(SNAPSHOT_EVERY) && !is_snapshot(1));
    }
}
