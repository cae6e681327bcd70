//! `marksync state list | show | rm`: what the state records, and forgetting part of it. Pure
//! functions on [`State`]; the commands (`cmd`) take the lock, load, save and print.
//!
//! Forgetting is not clearing: `rm` only stops marksync managing what it removes (the marks stay
//! on the service). A mark with an intent (an apply that did not see its answer) is shown as
//! unknown, and `rm` forgets its intent too, so the next plan neither sets nor clears it.

use serde::Serialize;

use super::State;
use crate::model::{Account, GroupId, Mark, UnixTime};

/// A group, account or mark named on the command line that the state does not record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotInState {
    /// The group is not in the state.
    #[error("group {0} is not in the state; `marksync state list` shows the groups it records")]
    Group(GroupId),
    /// The member is not in the group's state.
    #[error(
        "account {account} is not in the state of group {group}; `marksync state show {group}` shows its members"
    )]
    Account {
        /// The group.
        group: GroupId,
        /// The account.
        account: Account,
    },
    /// The mark is not recorded for the member.
    #[error(
        "mark {mark} of {account} is not in the state of group {group}; `marksync state show {group} {account}` shows its marks"
    )]
    Mark {
        /// The group.
        group: GroupId,
        /// The account.
        account: Account,
        /// The mark.
        mark: Mark,
    },
}

/// One group of `state list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    /// The group.
    pub group: GroupId,
    /// Members with a confirmed or unknown mark.
    pub members: usize,
    /// Confirmed marks.
    pub confirmed: usize,
    /// Marks with an intent (unknown).
    pub unknown: usize,
}

/// One mark of `state show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarkStatus {
    /// The mark.
    pub mark: Mark,
    /// When the service last confirmed it, if it did.
    pub confirmed_at: Option<UnixTime>,
    /// Seconds since that confirmation.
    pub age_secs: Option<i64>,
    /// Whether an apply sent it without seeing the answer: on the service or not, unknown.
    pub unknown: bool,
}

/// One member of `state show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The group.
    pub group: GroupId,
    /// The account.
    pub account: Account,
    /// Its marks, by mark.
    pub marks: Vec<MarkStatus>,
}

/// What `state rm` forgot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// The group.
    pub group: GroupId,
    /// Accounts forgotten entirely (every mark of theirs in the group).
    pub accounts: usize,
    /// Marks forgotten, confirmed or unknown.
    pub marks: usize,
}

/// Every group the state records (confirmed or intents), or only `group`.
pub fn list(state: &State, group: Option<&GroupId>) -> Result<Vec<GroupSummary>, NotInState> {
    let mut groups: Vec<&GroupId> = state.groups.keys().chain(state.intents.keys()).collect();
    groups.sort();
    groups.dedup();
    if let Some(g) = group {
        if !groups.contains(&g) {
            return Err(NotInState::Group(g.clone()));
        }
        groups = vec![g];
    }
    Ok(groups
        .into_iter()
        .map(|g| {
            let members = members_of(state, g);
            let confirmed = state
                .groups
                .get(g)
                .map_or(0, |m| m.values().map(|c| c.len()).sum());
            let unknown = state
                .intents
                .get(g)
                .map_or(0, |m| m.values().map(|s| s.len()).sum());
            GroupSummary {
                group: g.clone(),
                members: members.len(),
                confirmed,
                unknown,
            }
        })
        .collect())
}

/// The members of `group` (or only `account`) with each mark, its confirmation time and age at
/// `now`, and whether it is unknown.
pub fn show(
    state: &State,
    group: &GroupId,
    account: Option<&Account>,
    now: UnixTime,
) -> Result<Vec<MemberStatus>, NotInState> {
    let mut members = members_of(state, group);
    if members.is_empty() {
        return Err(NotInState::Group(group.clone()));
    }
    if let Some(a) = account {
        if !members.contains(&a) {
            return Err(NotInState::Account {
                group: group.clone(),
                account: a.clone(),
            });
        }
        members = vec![a];
    }
    Ok(members
        .into_iter()
        .map(|a| {
            let confirmed = state.confirmed(group, a);
            let intended = state.intended(group, a);
            let mut marks: Vec<Mark> = confirmed
                .map(|c| c.iter().map(|(m, _)| m).collect())
                .unwrap_or_default();
            marks.extend(intended.into_iter().flat_map(|s| s.iter()));
            marks.sort();
            marks.dedup();
            let marks = marks
                .into_iter()
                .map(|m| {
                    let at = confirmed.and_then(|c| c.get(m));
                    MarkStatus {
                        mark: m,
                        confirmed_at: at,
                        age_secs: at.map(|t| now.saturating_sub(t)),
                        unknown: intended.is_some_and(|s| s.contains(m)),
                    }
                })
                .collect();
            MemberStatus {
                group: group.clone(),
                account: a.clone(),
                marks,
            }
        })
        .collect())
}

/// Forgets `group`, one `account` of it, or one `mark` of that account (confirmed and intent),
/// without clearing anything on the service. Refuses what the state does not record, changing
/// nothing.
pub fn rm(
    state: &mut State,
    group: &GroupId,
    account: Option<&Account>,
    mark: Option<Mark>,
) -> Result<Forgotten, NotInState> {
    let members: Vec<Account> = members_of(state, group).into_iter().cloned().collect();
    if members.is_empty() {
        return Err(NotInState::Group(group.clone()));
    }
    let marks_of = |state: &State, a: &Account| -> Vec<Mark> {
        let mut marks: Vec<Mark> = state
            .confirmed(group, a)
            .map(|c| c.iter().map(|(m, _)| m).collect())
            .unwrap_or_default();
        marks.extend(state.intended(group, a).into_iter().flat_map(|s| s.iter()));
        marks.sort();
        marks.dedup();
        marks
    };
    let Some(account) = account else {
        let marks = members.iter().map(|a| marks_of(state, a).len()).sum();
        state.forget_group(group);
        return Ok(Forgotten {
            group: group.clone(),
            accounts: members.len(),
            marks,
        });
    };
    if !members.contains(account) {
        return Err(NotInState::Account {
            group: group.clone(),
            account: account.clone(),
        });
    }
    let held = marks_of(state, account);
    let forget: Vec<Mark> = match mark {
        None => held.clone(),
        Some(m) if held.contains(&m) => vec![m],
        Some(m) => {
            return Err(NotInState::Mark {
                group: group.clone(),
                account: account.clone(),
                mark: m,
            });
        }
    };
    state.forget(group, account, forget.iter().copied());
    state.drop_intents(group, account, forget.iter().copied());
    Ok(Forgotten {
        group: group.clone(),
        accounts: usize::from(forget.len() == held.len()),
        marks: forget.len(),
    })
}

/// The accounts with a confirmed or unknown mark in `group`, sorted.
fn members_of<'a>(state: &'a State, group: &GroupId) -> Vec<&'a Account> {
    let mut members: Vec<&Account> = state
        .groups
        .get(group)
        .into_iter()
        .flat_map(|m| m.keys())
        .chain(state.intents.get(group).into_iter().flat_map(|m| m.keys()))
        .collect();
    members.sort();
    members.dedup();
    members
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_ids::{a, g, m};

    const NOW: UnixTime = 1_764_000_000;

    fn sample() -> State {
        let mut s = State::new(1400000000);
        s.confirm(&g("@TGS#a"), &a("host"), [m(500), m(1000)], NOW - 3600);
        s.confirm(&g("@TGS#a"), &a("teacher"), [m(1001)], NOW - 60);
        s.intend(&g("@TGS#a"), &a("teacher"), [m(1002)]);
        s.intend(&g("@TGS#b"), &a("x"), [m(600)]);
        s
    }

    #[test]
    fn list_counts_confirmed_and_unknown_marks_per_group() {
        let s = sample();
        let all = list(&s, None).unwrap();
        assert_eq!(
            all,
            [
                GroupSummary {
                    group: g("@TGS#a"),
                    members: 2,
                    confirmed: 3,
                    unknown: 1
                },
                GroupSummary {
                    group: g("@TGS#b"),
                    members: 1,
                    confirmed: 0,
                    unknown: 1
                },
            ]
        );
        assert_eq!(list(&s, Some(&g("@TGS#b"))).unwrap().len(), 1);
        assert_eq!(
            list(&s, Some(&g("@TGS#zz"))),
            Err(NotInState::Group(g("@TGS#zz")))
        );
    }

    #[test]
    fn show_gives_ages_and_marks_intents_unknown() {
        let s = sample();
        let members = show(&s, &g("@TGS#a"), None, NOW).unwrap();
        assert_eq!(members.len(), 2);
        let teacher = &show(&s, &g("@TGS#a"), Some(&a("teacher")), NOW).unwrap()[0];
        assert_eq!(
            teacher.marks,
            [
                MarkStatus {
                    mark: m(1001),
                    confirmed_at: Some(NOW - 60),
                    age_secs: Some(60),
                    unknown: false
                },
                MarkStatus {
                    mark: m(1002),
                    confirmed_at: None,
                    age_secs: None,
                    unknown: true
                },
            ]
        );
        assert!(matches!(
            show(&s, &g("@TGS#a"), Some(&a("nobody")), NOW),
            Err(NotInState::Account { .. })
        ));
        assert!(matches!(
            show(&s, &g("@TGS#zz"), None, NOW),
            Err(NotInState::Group(_))
        ));
    }

    #[test]
    fn rm_forgets_a_mark_a_member_or_a_group_and_its_intents() {
        let mut s = sample();
        let f = rm(&mut s, &g("@TGS#a"), Some(&a("teacher")), Some(m(1002))).unwrap();
        assert_eq!((f.accounts, f.marks), (0, 1));
        assert_eq!(s.intended(&g("@TGS#a"), &a("teacher")), None, "intent gone");
        assert!(s.confirmed(&g("@TGS#a"), &a("teacher")).is_some());

        let f = rm(&mut s, &g("@TGS#a"), Some(&a("teacher")), None).unwrap();
        assert_eq!((f.accounts, f.marks), (1, 1));
        assert_eq!(s.confirmed(&g("@TGS#a"), &a("teacher")), None);

        let f = rm(&mut s, &g("@TGS#a"), None, None).unwrap();
        assert_eq!((f.accounts, f.marks), (1, 2));
        assert!(!s.groups.contains_key(&g("@TGS#a")));
        assert!(s.intents.contains_key(&g("@TGS#b")), "other groups kept");
    }

    #[test]
    fn rm_of_what_the_state_does_not_record_changes_nothing() {
        let mut s = sample();
        let before = s.clone();
        assert!(rm(&mut s, &g("@TGS#zz"), None, None).is_err());
        assert!(rm(&mut s, &g("@TGS#a"), Some(&a("nobody")), None).is_err());
        assert_eq!(
            rm(&mut s, &g("@TGS#a"), Some(&a("host")), Some(m(1005))),
            Err(NotInState::Mark {
                group: g("@TGS#a"),
                account: a("host"),
                mark: m(1005)
            })
        );
        assert_eq!(s, before);
    }
}
