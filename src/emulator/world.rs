//! The emulated service's data: groups, members, their presence and marks, and the rules of
//! `modify_user_info` and `get_members`.
//!
//! Architecture invariant: nothing here reads a clock, does I/O or knows the wire format beyond
//! the [`MemberMarks`] type; `now` is a parameter, so every rule is testable with plain values.
//! Time-dependent facts (mark 500 running out) are settled lazily by [`settle_group`] at the
//! start of every operation, which makes them exact at any virtual time without a timer.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{MARK_500_LIFETIME_SECS, MAX_MARKS_PER_GROUP, MAX_MEMBERS_PER_MARK, UnixTime};
use crate::tim::wire::{MemberMarks, OnlineMember};

/// Mark 500: "always online" for 72 hours.
pub(crate) const MARK_ALWAYS_ONLINE: u32 = 500;
/// Mark 600: hidden from the online list unless the list is pulled by that mark.
pub(crate) const MARK_HIDDEN: u32 = 600;

/// The group types of the service. Only audio-video groups support marks; the others exist so
/// that a test can check the refusal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupType {
    /// Audio-video group (live broadcast): the only type that supports marks.
    #[default]
    AVChatRoom,
    /// Work group (formerly Private).
    Private,
    /// Public group.
    Public,
    /// Meeting group (formerly ChatRoom).
    ChatRoom,
    /// Community.
    Community,
}

/// Where a member is with respect to a group, as the control API sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// In the group and connected: marks can be set.
    Online,
    /// In the group but disconnected: only mark 500 can be set; other marks were dropped.
    Offline,
    /// Not in the group (never joined, or left): everything, mark 500 included, is dropped.
    Left,
}

/// A failure of a service call: the error code and the `ErrorInfo` text.
pub(crate) type Refusal = (i64, String);

/// One member of a group.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    /// Whether the member's client is connected. A live mark 500 makes an offline member count
    /// as online anyway.
    connected: bool,
    /// Virtual time of joining, reported as `JoinTime`.
    joined_at: UnixTime,
    /// Join order within the group: the online list is "most recently joined first", and
    /// `NextTimestamp` is this value (an opaque cursor to clients).
    join_seq: u64,
    /// Marks other than 500.
    marks: BTreeSet<u32>,
    /// When mark 500 runs out, if the member carries it.
    mark_500_until: Option<UnixTime>,
}

impl Member {
    fn is_online(&self) -> bool {
        self.connected || self.mark_500_until.is_some()
    }

    fn has(&self, mark: u32) -> bool {
        if mark == MARK_ALWAYS_ONLINE {
            self.mark_500_until.is_some()
        } else {
            self.marks.contains(&mark)
        }
    }

    fn all_marks(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.marks.iter().copied().collect();
        if self.mark_500_until.is_some() {
            v.insert(0, MARK_ALWAYS_ONLINE);
        }
        v
    }
}

/// One group.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    /// Only AVChatRoom accepts marks.
    kind: GroupType,
    /// A dissolved group answers 10010 like one that never existed, until it is created again.
    dissolved: bool,
    /// Members by account, in account order so snapshots are deterministic.
    members: BTreeMap<String, Member>,
    /// The next `join_seq`; starts at 1 so that cursor 0 means "from the start".
    next_join_seq: u64,
    /// What `get_members` answers from: the online members as they were when it was taken
    /// (virtual time), kept for [`Rules::listing_cache_secs`]. Not kept in a world file: a new
    /// process lists the world as it is.
    #[serde(skip)]
    listing: Option<(UnixTime, Vec<ListedMember>)>,
}

/// An online member as a `get_members` snapshot holds it.
#[derive(Clone, Debug)]
struct ListedMember {
    account: String,
    joined_at: UnixTime,
    join_seq: u64,
    /// Every live mark, 500 included.
    marks: Vec<u32>,
}

impl Group {
    fn new(kind: GroupType) -> Self {
        Group {
            kind,
            dissolved: false,
            members: BTreeMap::new(),
            next_join_seq: 1,
            listing: None,
        }
    }

    /// Adds `account` as a fresh member (replacing any earlier record of it).
    fn join(&mut self, account: &str, connected: bool, now: UnixTime) -> &mut Member {
        self.members.remove(account);
        let member = self.member_or_join(account, now);
        member.connected = connected;
        member
    }

    /// The member, joining it online first if it is not in the group.
    fn member_or_join(&mut self, account: &str, now: UnixTime) -> &mut Member {
        match self.members.entry(account.to_owned()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let seq = self.next_join_seq;
                self.next_join_seq += 1;
                v.insert(Member {
                    connected: true,
                    joined_at: now,
                    join_seq: seq,
                    marks: BTreeSet::new(),
                    mark_500_until: None,
                })
            }
        }
    }

    /// How many members carry each mark (500 included).
    fn mark_counts(&self) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for m in self.members.values() {
            for mark in m.all_marks() {
                *counts.entry(mark).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// A member as the control API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// `online` or `offline` (connection state; a live mark 500 makes an offline member count
    /// as online for marks and the online list).
    pub state: MemberState,
    /// Every live mark, 500 included, ascending.
    pub marks: Vec<u32>,
    /// When mark 500 runs out (virtual unix seconds), if the member carries it.
    pub mark_500_expires_at: Option<UnixTime>,
    /// Virtual unix seconds of joining.
    pub joined_at: UnixTime,
}

/// A group as the control API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group's type.
    #[serde(rename = "type")]
    pub kind: GroupType,
    /// Whether it was dissolved.
    pub dissolved: bool,
    /// Members by account.
    pub members: BTreeMap<String, MemberView>,
}

/// Which accounts changed presence in one control call, for member-state callbacks.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PresenceChanges {
    /// Joined the group (online).
    pub joined: Vec<String>,
    /// Were offline, now online.
    pub recovered: Vec<String>,
    /// Were online, now offline.
    pub interrupted: Vec<String>,
    /// Left the group.
    pub quit: Vec<String>,
}

/// Rules the world needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// Unknown `@TGS#` group IDs become AVChatRoom groups on first use.
    pub auto_create_groups: bool,
    /// Unknown accounts join as online members on first use.
    pub members_online_by_default: bool,
    /// The code of a set call in which every account is offline or absent.
    pub all_offline_error_code: i64,
    /// The online list holds at most this many most recently joined members.
    pub online_list_cap: usize,
    /// `get_members` page size.
    pub page_size: usize,
    /// `get_members` answers from a snapshot of the online members taken at most this many
    /// seconds of virtual time ago (0: always current).
    pub listing_cache_secs: i64,
}

/// Every group the emulator knows. It serializes as the embedded emulator's world file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct World {
    groups: BTreeMap<String, Group>,
}

/// A validated `modify_user_info` request.
#[derive(Debug)]
pub(crate) struct Modify {
    pub group_id: String,
    pub set: bool,
    pub entries: Vec<(String, Vec<u32>)>,
}

/// A validated `get_members` request.
#[derive(Debug)]
pub(crate) struct ListMembers {
    pub group_id: String,
    pub cursor: u64,
    pub mark: Option<u32>,
}

impl World {
    /// Creates (or re-creates, fresh, after dissolution) a group.
    pub(crate) fn create_group(&mut self, id: &str, kind: GroupType) -> Result<(), String> {
        match self.groups.get(id) {
            Some(g) if !g.dissolved => Err(format!("group {id} already exists")),
            _ => {
                self.groups.insert(id.to_owned(), Group::new(kind));
                Ok(())
            }
        }
    }

    /// Dissolves a group: its members and marks are gone.
    pub(crate) fn dissolve_group(&mut self, id: &str) -> Result<(), String> {
        match self.groups.get_mut(id) {
            Some(g) if !g.dissolved => {
                g.dissolved = true;
                g.members.clear();
                Ok(())
            }
            _ => Err(format!("group {id} does not exist")),
        }
    }

    /// Sets the presence of `accounts` in a group (control API).
    pub(crate) fn set_members(
        &mut self,
        id: &str,
        accounts: &[String],
        state: MemberState,
        now: UnixTime,
    ) -> Result<PresenceChanges, String> {
        let group = match self.groups.get_mut(id) {
            Some(g) if !g.dissolved => g,
            _ => return Err(format!("group {id} does not exist")),
        };
        settle_group(group, now);
        let mut changes = PresenceChanges::default();
        for account in accounts {
            match (state, group.members.get_mut(account)) {
                (MemberState::Online, None) => {
                    group.join(account, true, now);
                    changes.joined.push(account.clone());
                }
                (MemberState::Online, Some(m)) => {
                    if !m.connected {
                        m.connected = true;
                        changes.recovered.push(account.clone());
                    }
                }
                (MemberState::Offline, None) => {
                    // Joined but not connected: possible for a member whose client dropped right
                    // after joining. It has no marks to lose.
                    group.join(account, false, now);
                }
                (MemberState::Offline, Some(m)) => {
                    if m.connected {
                        m.connected = false;
                        // The service clears marks when a member goes offline; mark 500 is the
                        // one that survives (it exists to ride out disconnections).
                        m.marks.clear();
                        changes.interrupted.push(account.clone());
                    }
                }
                (MemberState::Left, None) => {}
                (MemberState::Left, Some(_)) => {
                    group.members.remove(account);
                    changes.quit.push(account.clone());
                }
            }
        }
        Ok(changes)
    }

    /// Live marks by account of a group's members that carry any (unknown group: empty).
    pub(crate) fn marks_of(&mut self, id: &str, now: UnixTime) -> BTreeMap<String, Vec<u32>> {
        let Some(group) = self.groups.get_mut(id) else {
            return BTreeMap::new();
        };
        settle_group(group, now);
        group
            .members
            .iter()
            .filter(|(_, m)| m.mark_500_until.is_some() || !m.marks.is_empty())
            .map(|(a, m)| (a.clone(), m.all_marks()))
            .collect()
    }

    /// A full view of one group, or of all groups when `id` is `None`.
    pub(crate) fn view(&mut self, id: Option<&str>, now: UnixTime) -> BTreeMap<String, GroupView> {
        let mut out = BTreeMap::new();
        for (gid, group) in &mut self.groups {
            if id.is_some_and(|want| want != gid) {
                continue;
            }
            settle_group(group, now);
            let members = group
                .members
                .iter()
                .map(|(a, m)| {
                    let view = MemberView {
                        state: if m.connected {
                            MemberState::Online
                        } else {
                            MemberState::Offline
                        },
                        marks: m.all_marks(),
                        mark_500_expires_at: m.mark_500_until,
                        joined_at: m.joined_at,
                    };
                    (a.clone(), view)
                })
                .collect();
            let view = GroupView {
                kind: group.kind,
                dissolved: group.dissolved,
                members,
            };
            out.insert(gid.clone(), view);
        }
        out
    }

    /// The group a service call addresses, created on the fly when the rules allow it.
    fn service_group(
        &mut self,
        id: &str,
        rules: &Rules,
        now: UnixTime,
    ) -> Result<&mut Group, Refusal> {
        if !self.groups.contains_key(id) && rules.auto_create_groups && id.starts_with("@TGS#") {
            self.groups
                .insert(id.to_owned(), Group::new(GroupType::AVChatRoom));
        }
        let group = match self.groups.get_mut(id) {
            Some(g) if !g.dissolved => g,
            Some(_) => return Err((10010, format!("group {id} has been dissolved"))),
            None => return Err((10010, format!("group {id} does not exist"))),
        };
        if group.kind != GroupType::AVChatRoom {
            return Err((
                10007,
                format!(
                    "group {id} is a {:?} group; marks are supported only for AVChatRoom groups",
                    group.kind
                ),
            ));
        }
        settle_group(group, now);
        Ok(group)
    }

    /// `modify_user_info`: returns the response's `MemberList`.
    pub(crate) fn modify(
        &mut self,
        req: &Modify,
        rules: &Rules,
        now: UnixTime,
    ) -> Result<Vec<MemberMarks>, Refusal> {
        let group = self.service_group(&req.group_id, rules, now)?;
        if req.set {
            set_marks(group, req, rules, now)
        } else {
            delete_marks(group, req, rules, now)
        }
    }

    /// `get_members`: one page of the online list and the next cursor (0 = last page).
    pub(crate) fn list(
        &mut self,
        req: &ListMembers,
        rules: &Rules,
        now: UnixTime,
    ) -> Result<(Vec<OnlineMember>, u64), Refusal> {
        let group = self.service_group(&req.group_id, rules, now)?;
        let stale = match &group.listing {
            Some((taken, _)) => now < *taken || now - *taken >= rules.listing_cache_secs,
            None => true,
        };
        if stale {
            let snapshot = group
                .members
                .iter()
                .filter(|(_, m)| m.is_online())
                .map(|(a, m)| ListedMember {
                    account: a.clone(),
                    joined_at: m.joined_at,
                    join_seq: m.join_seq,
                    marks: m.all_marks(),
                })
                .collect();
            group.listing = Some((now, snapshot));
        }
        let snapshot = group
            .listing
            .as_ref()
            .map_or(&[][..], |(_, v)| v.as_slice());
        let mut online: Vec<&ListedMember> = snapshot
            .iter()
            .filter(|m| match req.mark {
                Some(mark) => m.marks.contains(&mark),
                None => !m.marks.contains(&MARK_HIDDEN),
            })
            .collect();
        online.sort_by_key(|m| std::cmp::Reverse(m.join_seq));
        online.truncate(rules.online_list_cap);
        let rest = online
            .into_iter()
            .filter(|m| req.cursor == 0 || m.join_seq < req.cursor);
        let size = rules.page_size.max(1);
        let mut page: Vec<&ListedMember> = rest.take(size.saturating_add(1)).collect();
        let more = page.len() > size;
        page.truncate(size);
        let next = if more {
            page.last().map_or(0, |m| m.join_seq)
        } else {
            0
        };
        let members = page
            .into_iter()
            .map(|m| OnlineMember {
                account: m.account.clone(),
                join_time: m.joined_at,
            })
            .collect();
        Ok((members, next))
    }
}

/// Makes the group exact at `now`: a mark 500 that ran out is removed, and a member it kept
/// "online" while disconnected loses its other marks, as if it went offline at that moment.
fn settle_group(group: &mut Group, now: UnixTime) {
    for m in group.members.values_mut() {
        if m.mark_500_until.is_some_and(|until| until <= now) {
            m.mark_500_until = None;
        }
        if !m.is_online() {
            m.marks.clear();
        }
    }
}

fn set_marks(
    group: &mut Group,
    req: &Modify,
    rules: &Rules,
    now: UnixTime,
) -> Result<Vec<MemberMarks>, Refusal> {
    // Pass 1: decide what each entry would set, without touching the group, so that a call
    // that breaks a limit changes nothing.
    let mut plan: Vec<(&str, Vec<u32>)> = Vec::new();
    let mut additions: BTreeSet<(u32, &str)> = BTreeSet::new();
    for (account, marks) in &req.entries {
        let online = match group.members.get(account) {
            Some(m) => m.is_online(),
            None if rules.members_online_by_default => true,
            // Not a member: nothing can be set, not even 500.
            None => continue,
        };
        let mut applied: Vec<u32> = Vec::new();
        for &mark in marks {
            // Offline members take mark 500 only (the vendor: marks are for online members,
            // except 500). A 500 in the same entry does not bring the others along: they are
            // left out of the response and the client re-sends them later.
            if (online || mark == MARK_ALWAYS_ONLINE) && !applied.contains(&mark) {
                applied.push(mark);
            }
        }
        if applied.is_empty() {
            continue;
        }
        for &mark in &applied {
            let has = group.members.get(account).is_some_and(|m| m.has(mark));
            if !has {
                additions.insert((mark, account.as_str()));
            }
        }
        plan.push((account.as_str(), applied));
    }
    if plan.is_empty() {
        return Err((
            rules.all_offline_error_code,
            "all accounts are offline or not members of the group; no mark was set".to_owned(),
        ));
    }

    let mut counts = group.mark_counts();
    for (mark, _) in &additions {
        *counts.entry(*mark).or_insert(0) += 1;
    }
    if counts.len() > MAX_MARKS_PER_GROUP {
        let marks: Vec<String> = counts.keys().map(u32::to_string).collect();
        return Err((
            10004,
            format!(
                "too many marks: the group would carry {} distinct marks ({}); at most {MAX_MARKS_PER_GROUP} are allowed per group",
                counts.len(),
                marks.join(",")
            ),
        ));
    }
    if let Some((mark, n)) = counts.iter().find(|(_, n)| **n > MAX_MEMBERS_PER_MARK) {
        return Err((
            10004,
            format!(
                "too many members on mark {mark}: it would be carried by {n} members; at most {MAX_MEMBERS_PER_MARK} are allowed per mark"
            ),
        ));
    }

    // Pass 2: apply.
    let mut response = Vec::with_capacity(plan.len());
    for (account, marks) in plan {
        let member = group.member_or_join(account, now);
        for &mark in &marks {
            if mark == MARK_ALWAYS_ONLINE {
                // Setting it again restarts the 72 hours.
                member.mark_500_until = Some(now.saturating_add(MARK_500_LIFETIME_SECS));
            } else {
                member.marks.insert(mark);
            }
        }
        response.push(MemberMarks {
            account: account.to_owned(),
            marks,
        });
    }
    Ok(response)
}

fn delete_marks(
    group: &mut Group,
    req: &Modify,
    rules: &Rules,
    now: UnixTime,
) -> Result<Vec<MemberMarks>, Refusal> {
    // Like a set call, a delete in which every account is offline or not a member fails as a
    // whole (reference section 3); nothing is left on such members but, at most, nothing.
    let any_online = req.entries.iter().any(|(account, _)| {
        group
            .members
            .get(account)
            .map_or(rules.members_online_by_default, Member::is_online)
    });
    if !any_online {
        return Err((
            rules.all_offline_error_code,
            "all accounts are offline or not members of the group; no mark was deleted".to_owned(),
        ));
    }
    let mut response = Vec::new();
    for (account, marks) in &req.entries {
        // Under the demo rule an unknown account is an online member with no marks, so
        // deleting from it trivially succeeds.
        if !group.members.contains_key(account) && !rules.members_online_by_default {
            continue;
        }
        let member = group.member_or_join(account, now);
        for &mark in marks {
            if mark == MARK_ALWAYS_ONLINE {
                member.mark_500_until = None;
            } else {
                member.marks.remove(&mark);
            }
        }
        if !member.is_online() {
            member.marks.clear();
        }
        response.push(MemberMarks {
            account: account.clone(),
            marks: marks.clone(),
        });
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "@TGS#g";
    const T0: UnixTime = 1_800_000_000;

    fn rules() -> Rules {
        Rules {
            auto_create_groups: false,
            members_online_by_default: false,
            all_offline_error_code: 10004,
            online_list_cap: 1000,
            page_size: 2,
            listing_cache_secs: 0,
        }
    }

    fn world(online: &[&str], offline: &[&str]) -> World {
        let mut w = World::default();
        w.create_group(G, GroupType::AVChatRoom).unwrap();
        let acc = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        w.set_members(G, &acc(online), MemberState::Online, T0)
            .unwrap();
        w.set_members(G, &acc(offline), MemberState::Offline, T0)
            .unwrap();
        w
    }

    fn set(w: &mut World, entries: &[(&str, &[u32])], now: UnixTime) -> Result<String, i64> {
        call(w, true, entries, now)
    }

    fn call(
        w: &mut World,
        set: bool,
        entries: &[(&str, &[u32])],
        now: UnixTime,
    ) -> Result<String, i64> {
        let req = Modify {
            group_id: G.into(),
            set,
            entries: entries
                .iter()
                .map(|(a, m)| (a.to_string(), m.to_vec()))
                .collect(),
        };
        w.modify(&req, &rules(), now)
            .map(|list| {
                list.iter()
                    .map(|m| format!("{}:{:?}", m.account, m.marks))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .map_err(|(code, _)| code)
    }

    fn marks(w: &mut World, now: UnixTime) -> String {
        format!("{:?}", w.marks_of(G, now))
    }

    #[test]
    fn set_lists_online_members_only() {
        let mut w = world(&["a"], &["b"]);
        assert_eq!(
            set(
                &mut w,
                &[("a", &[1000]), ("b", &[1000]), ("zz", &[1000])],
                T0
            ),
            Ok("a:[1000]".into())
        );
        assert_eq!(
            set(&mut w, &[("b", &[1000]), ("zz", &[1001])], T0),
            Err(10004)
        );
        // Mark 500 is for offline members, not for accounts outside the group.
        assert_eq!(set(&mut w, &[("zz", &[500])], T0), Err(10004));
        assert_eq!(marks(&mut w, T0), r#"{"a": [1000]}"#);
    }

    #[test]
    fn offline_members_take_mark_500_only_and_it_keeps_them_online() {
        let mut w = world(&[], &["b"]);
        assert_eq!(
            set(&mut w, &[("b", &[500, 1000])], T0),
            Ok("b:[500]".into())
        );
        assert_eq!(
            set(&mut w, &[("b", &[1000])], T0 + 1),
            Ok("b:[1000]".into())
        );
        assert_eq!(marks(&mut w, T0 + 1), r#"{"b": [500, 1000]}"#);
        // 72 h later, 500 is gone and so is the online status it lent: 1000 goes too.
        assert_eq!(
            marks(&mut w, T0 + MARK_500_LIFETIME_SECS - 1),
            r#"{"b": [500, 1000]}"#
        );
        assert_eq!(marks(&mut w, T0 + MARK_500_LIFETIME_SECS), "{}");
    }

    #[test]
    fn re_setting_500_restarts_its_72_hours() {
        let mut w = world(&["a"], &[]);
        set(&mut w, &[("a", &[500])], T0).unwrap();
        set(&mut w, &[("a", &[500])], T0 + 3600).unwrap();
        assert_eq!(
            marks(&mut w, T0 + MARK_500_LIFETIME_SECS + 10),
            r#"{"a": [500]}"#
        );
        assert_eq!(marks(&mut w, T0 + 3600 + MARK_500_LIFETIME_SECS), "{}");
    }

    #[test]
    fn going_offline_keeps_500_leaving_drops_all() {
        let mut w = world(&["a", "b"], &[]);
        set(&mut w, &[("a", &[500, 1000]), ("b", &[500, 1000])], T0).unwrap();
        w.set_members(G, &["a".into()], MemberState::Offline, T0)
            .unwrap();
        w.set_members(G, &["b".into()], MemberState::Left, T0)
            .unwrap();
        assert_eq!(marks(&mut w, T0), r#"{"a": [500]}"#);
    }

    #[test]
    fn delete_lists_members_even_offline_and_skips_strangers() {
        let mut w = world(&["a"], &["b"]);
        set(&mut w, &[("a", &[1000, 1001]), ("b", &[500])], T0).unwrap();
        assert_eq!(
            call(
                &mut w,
                false,
                &[("a", &[1000]), ("b", &[500]), ("zz", &[1000])],
                T0
            ),
            Ok("a:[1000] b:[500]".into())
        );
        assert_eq!(marks(&mut w, T0), r#"{"a": [1001]}"#);
        // Nobody online in the call: refused as a whole, like a set.
        assert_eq!(call(&mut w, false, &[("zz", &[1000])], T0), Err(10004));
        w.set_members(G, &["a".into()], MemberState::Offline, T0)
            .unwrap();
        assert_eq!(call(&mut w, false, &[("a", &[1001])], T0), Err(10004));
    }

    #[test]
    fn limits_refuse_the_whole_call() {
        let mut w = world(&["a", "b"], &[]);
        let ten: Vec<u32> = (1000..1010).collect();
        set(&mut w, &[("a", &ten)], T0).unwrap();
        assert_eq!(
            set(&mut w, &[("b", &[1000]), ("b", &[1010])], T0),
            Err(10004)
        );
        assert_eq!(
            marks(&mut w, T0).matches("1000").count(),
            1,
            "nothing applied"
        );
        // Setting an existing mark again does not count as a new one.
        assert!(set(&mut w, &[("b", &[1009])], T0).is_ok());
    }

    #[test]
    fn online_list_pages_most_recent_first_and_hides_600() {
        let mut w = world(&["a", "b", "c", "d"], &["e"]);
        set(&mut w, &[("d", &[600]), ("a", &[1000]), ("b", &[1000])], T0).unwrap();
        let list = |w: &mut World, cursor, mark| {
            let req = ListMembers {
                group_id: G.into(),
                cursor,
                mark,
            };
            let (page, next) = w.list(&req, &rules(), T0).unwrap();
            let names: Vec<String> = page.into_iter().map(|m| m.account).collect();
            (names.join(","), next)
        };
        let (p1, n1) = list(&mut w, 0, None);
        assert_eq!(p1, "c,b");
        let (p2, n2) = list(&mut w, n1, None);
        assert_eq!((p2.as_str(), n2), ("a", 0));
        assert_eq!(list(&mut w, 0, Some(600)), ("d".into(), 0));
        assert_eq!(list(&mut w, 0, Some(1000)), ("b,a".into(), 0));
    }

    #[test]
    fn the_online_list_is_a_snapshot_retaken_after_the_cache_period() {
        let mut w = world(&["a", "b"], &[]);
        set(&mut w, &[("a", &[1000])], T0).unwrap();
        let r = Rules {
            listing_cache_secs: 40,
            page_size: 10,
            ..rules()
        };
        let list = |w: &mut World, mark, now| {
            let req = ListMembers {
                group_id: G.into(),
                cursor: 0,
                mark,
            };
            let (page, _) = w.list(&req, &r, now).unwrap();
            page.into_iter()
                .map(|m| m.account)
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(list(&mut w, None, T0), "b,a");
        w.set_members(G, &["a".into()], MemberState::Offline, T0 + 1)
            .unwrap();
        set(&mut w, &[("b", &[1000])], T0 + 1).unwrap();
        // Up to 40 s later the list still shows the snapshot, marks included.
        assert_eq!(list(&mut w, None, T0 + 39), "b,a");
        assert_eq!(list(&mut w, Some(1000), T0 + 39), "a");
        assert_eq!(list(&mut w, None, T0 + 40), "b");
        assert_eq!(list(&mut w, Some(1000), T0 + 40), "b");
        // A clock set back retakes it too.
        w.set_members(G, &["b".into()], MemberState::Left, T0 + 41)
            .unwrap();
        assert_eq!(list(&mut w, None, T0 + 20), "");
    }
}
