//! Knowing what the service holds (SPEC section 10): read the live marks, compare them with the
//! state and the desired files, and say what drifted and how the state must change.
//!
//! Three layers, from pure to I/O:
//! - [`to_read`]: which groups and marks a refresh reads (pure).
//! - [`classify`]: `(desired, state, live facts, now) -> Classified` (pure, sorted): one
//!   [`Drift`] per (group, account, mark) that is not simply in sync, and the [`StateChanges`]
//!   that make the state agree with what was seen, so that [`crate::plan::plan`] on the
//!   refreshed state sends what the drift needs: lost marks set again, offline members' desired
//!   marks pending, gone (and offline undesired) marks still cleared, unmanaged marks never
//!   touched. A refresh may add calls, never remove one the plan without it would send.
//! - [`read`] and [`refresh`]: the reads through the shared [`Client`] (groups in parallel,
//!   bounded), then [`classify`] and the state changes.
//!
//! # The rules, per (group, account, mark)
//! Words: *recorded* = confirmed in `state.groups`; *intended* = in `state.intents` (unknown:
//! an apply was setting or clearing it when it stopped); *live* = listed by the `Mark` query of
//! that mark; *present* = listed by the online query or by any `Mark` query of the group (mark
//! 600 hides a member from the plain listing, not from its own).
//!
//! Absence is evidence only when the listings that would show the member are not full: a
//! listing of [`LISTING_WINDOW`] (1000) accounts or more may have left the member out. The online
//! listing has to be below the window too, even to judge a `Mark` listing: the service does not
//! say whether its window of the 1000 most recently joined members is applied before or after
//! the `Mark` filter. And the service answers from a cache refreshed about every
//! [`STALENESS_SECS`] (40 s), so a mark recorded less than that before the listing was read is
//! not judged on its absence either. Both are reported as [`DriftKind::NotChecked`] and change
//! nothing.
//!
//! For a mark that is recorded and not intended:
//! - not present (and the absence is evidence): [`DriftKind::Offline`]. If desired, forgotten:
//!   the next plan sets it again and the apply finds the member offline: pending.
//! - present, not live: desired [`DriftKind::Lost`] (forgotten, so set again), else
//!   [`DriftKind::Gone`].
//! - live: in sync (if not desired, the plan clears it as before); nothing reported.
//!
//! A mark that is not desired is never forgotten on its absence (`gone`, or `offline`): a
//! `get_members` page can end early with an answer that reads exactly like the real end, and
//! mark 500 outlives a disconnection. It stays recorded, the plan clears it as it would without
//! a refresh (the clear is idempotent), and the clear's answer forgets it. So a refresh may add
//! calls (a lost mark set again), never remove one; `import`, which sends none, keeps it.
//!
//! For a mark that is live, not recorded and not intended: desired [`DriftKind::Adopted`]
//! (recorded without a call: at the listing's read time, or, for mark 500 whose age is unknown,
//! 72 h before `now` so the next plan renews it at once); not desired [`DriftKind::Unmanaged`]
//! (reported, never touched).
//!
//! Intended marks are unknown, and a refresh resolves them only one way:
//! - live and desired: confirmed ([`DriftKind::Adopted`]), the intent dropped. A mark 500 keeps
//!   its recorded confirmation time if it has one (the intent was a renewal that may not have
//!   landed: the older time renews sooner), or gets "72 h ago" if it has none.
//! - anything else: left as it is and reported [`DriftKind::NotChecked`] when absent. An intent
//!   carries no time, so the 40 s rule cannot be applied to it: a set that landed after the
//!   service's cached listing was taken would look absent, and forgetting it would leave a mark
//!   marksync placed on the service with nobody managing it. The plan already re-sends it (set
//!   if desired, clear if not), which is the bounded idempotent cost SPEC section 4 accepts.
//!
//! Architecture invariant: [`classify`] and [`to_read`] are pure: no clock, no I/O; `now` and
//! the read times are parameters. A listing that failed to read is never "absent": its group is
//! not classified at all (and is reported as unread by [`refresh`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::Clock;
use crate::desired::DesiredState;
use crate::model::{
    Account, GroupId, MARK_500_LIFETIME_SECS, MAX_MEMBERS_PER_MARK, Mark, MarkSet, UnixTime,
};
use crate::state::State;
use crate::tim::client::{Client, ListError, LiveListing};

/// The service lists at most this many online members (the top edition's window; lower editions
/// list 30, and a listing of 30 is then just as full). A listing this long, or longer, is not
/// evidence that anyone is absent.
pub const LISTING_WINDOW: usize = 1000;

/// The service answers `get_members` from a cache refreshed about this often; a mark recorded
/// less than this before a listing was read is not judged on its absence.
pub const STALENESS_SECS: i64 = 40;

/// How many groups [`refresh`] reads at once by default. The shared rate limiter sets the pace;
/// this only bounds the work in flight.
pub const DEFAULT_PARALLEL_GROUPS: usize = 16;

/// One listing as seen: the accounts, whether it hit the window, when it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The listed accounts.
    pub accounts: BTreeSet<Account>,
    /// Listed names that marksync cannot hold as an account (empty, too long, with spaces or
    /// invisible characters): set by other tools, never managed, but on the service all the
    /// same, so they are reported and use the group's capacity.
    pub unnameable: BTreeSet<String>,
    /// Whether the listing reached [`LISTING_WINDOW`] entries: absence from it proves nothing.
    pub full: bool,
    /// When its first page was requested (unix seconds): the 40 s staleness counts back from here.
    pub read_at: UnixTime,
}

impl Listing {
    /// A listing of `accounts` read at `read_at`; `full` when there are [`LISTING_WINDOW`] or more.
    pub fn new(accounts: impl IntoIterator<Item = Account>, read_at: UnixTime) -> Self {
        let accounts: BTreeSet<Account> = accounts.into_iter().collect();
        Listing {
            full: accounts.len() >= LISTING_WINDOW,
            accounts,
            unnameable: BTreeSet::new(),
            read_at,
        }
    }
}

/// What the service said about one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupFacts {
    /// The online listing (no `Mark` filter).
    pub online: Listing,
    /// Per mark read, its holders (the `Mark` filter).
    pub marks: BTreeMap<Mark, Listing>,
}

impl GroupFacts {
    /// Whether the member shows in any listing of the group.
    fn present(&self, account: &Account) -> bool {
        self.online.accounts.contains(account)
            || self.marks.values().any(|l| l.accounts.contains(account))
    }
}

/// What the service said about every group that was read. A group missing here was not read
/// (or its read failed): it is not classified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveFacts {
    /// Group -> facts.
    pub groups: BTreeMap<GroupId, GroupFacts>,
}

/// The kinds of SPEC section 10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Recorded, desired, member present, mark missing: forgotten, so it is set again.
    Lost,
    /// Recorded, member not online: the service dropped it (500 excepted); a desired mark is
    /// forgotten and pending, an undesired one is still cleared.
    Offline,
    /// Recorded, not desired, absent from the listing: still cleared (the listing may be cut
    /// short); the clear's answer forgets it.
    Gone,
    /// Live, never set by marksync, not desired: reported, never touched.
    Unmanaged,
    /// Live and desired, not (or not surely) recorded: recorded without a call.
    Adopted,
    /// Absent, but the absence is not evidence (full listing, recent confirmation, intent).
    NotChecked,
}

impl DriftKind {
    /// Every kind, in report order (the order of declaration: [`DriftCounts`] is indexed by
    /// the discriminant).
    pub const ALL: [DriftKind; 6] = [
        DriftKind::Lost,
        DriftKind::Offline,
        DriftKind::Gone,
        DriftKind::Unmanaged,
        DriftKind::Adopted,
        DriftKind::NotChecked,
    ];

    /// The name in `plan --json` and the metric label of `marksync_drift_marks{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Lost => "lost",
            DriftKind::Offline => "offline",
            DriftKind::Gone => "gone",
            DriftKind::Unmanaged => "unmanaged",
            DriftKind::Adopted => "adopted",
            DriftKind::NotChecked => "not_checked",
        }
    }
}

/// Why an absence was not judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotChecked {
    /// A listing that would show it had [`LISTING_WINDOW`] entries.
    FullListing,
    /// Recorded less than [`STALENESS_SECS`] before the listing was read.
    Recent,
    /// An apply was setting or clearing it when it stopped (an intent): unknown, re-sent by the plan.
    InFlight,
}

/// One drifted (group, account, mark): the `plan --json` `"drift"` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Drift {
    /// The group.
    pub group: GroupId,
    /// The member.
    pub account: Account,
    /// The mark.
    pub mark: Mark,
    /// What happened to it.
    pub kind: DriftKind,
    /// For `not_checked`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotChecked>,
    /// Whether the desired files want it (so whether the drift needs a call).
    #[serde(skip)]
    pub desired: bool,
}

impl Drift {
    /// Whether this drift comes with a call: `lost` and `offline` of a desired mark are set
    /// again; `gone` and `offline` of an undesired mark are cleared (absence is no proof that
    /// the service dropped it). `adopted`, `unmanaged` and `not_checked` take none.
    pub fn needs_call(&self) -> bool {
        matches!(
            self.kind,
            DriftKind::Lost | DriftKind::Offline | DriftKind::Gone
        )
    }
}

/// A live holder of a mark whose name marksync cannot hold as an account (empty, over 32 bytes,
/// spaces or invisible characters): another tool put it there. Reported with its count, never
/// touched; it still uses the group's 10-mark and 1000-member capacity. The
/// `plan --json` `"unnameable_holders"` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UnnameableHolder {
    /// The group.
    pub group: GroupId,
    /// The name as the service sent it.
    pub holder: String,
    /// The mark it holds.
    pub mark: Mark,
}

/// A mark whose holders after the plan (the desired ones, plus live holders marksync does not
/// manage or cannot name, which it never clears) exceed the service's 1000 per mark: the sets
/// that go past it will be refused. The `plan --json` `"over_capacity"` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct OverCapacity {
    /// The group.
    pub group: GroupId,
    /// The mark.
    pub mark: Mark,
    /// Holders the desired files want.
    pub desired: usize,
    /// Live holders never set by marksync (`unmanaged`).
    pub unmanaged: usize,
    /// Live holders whose names marksync cannot hold as an account.
    pub unnameable: usize,
}

/// Counts per kind: `summary.drift` of `plan --json`. A map from [`DriftKind`] (every kind
/// present, zero or not), so a new kind is counted, reported and exported everywhere without a
/// list of fields to keep in step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriftCounts([usize; DriftKind::ALL.len()]);

impl DriftCounts {
    /// Counts the drift list.
    pub fn of(drift: &[Drift]) -> Self {
        let mut c = DriftCounts::default();
        for d in drift {
            c.0[d.kind as usize] += 1;
        }
        c
    }

    /// The count of one kind.
    pub fn get(&self, kind: DriftKind) -> usize {
        self.0[kind as usize]
    }

    /// Every kind with its count, in report order.
    pub fn iter(&self) -> impl Iterator<Item = (DriftKind, usize)> + '_ {
        DriftKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }

    /// The drifted marks of every kind together.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// The same counts with `kind` left out (zero).
    pub fn without(mut self, kind: DriftKind) -> Self {
        self.0[kind as usize] = 0;
        self
    }
}

impl Serialize for DriftCounts {
    /// `{"lost": 2, "offline": 0, ...}`: every kind, in report order.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(DriftKind::ALL.len()))?;
        for (kind, n) in self.iter() {
            map.serialize_entry(kind.as_str(), &n)?;
        }
        map.end()
    }
}

/// How the state must change to agree with what was seen. Sorted by (group, account, mark).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateChanges {
    /// Recorded desired marks the service no longer holds (lost, offline): forget them, so the
    /// plan sets them again. Undesired marks are never here: their clear forgets them.
    pub forget: Vec<(GroupId, Account, Mark)>,
    /// Live and desired marks to record as confirmed at the given time (adopted), dropping any
    /// intent on them.
    pub adopt: Vec<(GroupId, Account, Mark, UnixTime)>,
}

impl StateChanges {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.forget.is_empty() && self.adopt.is_empty()
    }

    /// Applies both lists to `state` (what `plan --refresh`, `apply --refresh` and the daemon
    /// do; `import` may apply `adopt` only through [`StateChanges::apply_adopt`]).
    pub fn apply(&self, state: &mut State) {
        self.apply_forget(state);
        self.apply_adopt(state);
    }

    /// Forgets the lost and offline desired marks.
    pub fn apply_forget(&self, state: &mut State) {
        for (g, a, m) in &self.forget {
            state.forget(g, a, [*m]);
        }
    }

    /// Records the adopted marks (and drops their intents).
    pub fn apply_adopt(&self, state: &mut State) {
        for (g, a, m, at) in &self.adopt {
            state.confirm(g, a, [*m], *at);
        }
    }
}

/// The result of [`classify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// Every (group, account, mark) that is not simply in sync, sorted by group, account, mark.
    pub drift: Vec<Drift>,
    /// Live holders marksync cannot name, sorted by group, holder, mark: reported, not drift
    /// (no [`Drift`] can carry a name that is not an [`Account`]).
    pub unnameable: Vec<UnnameableHolder>,
    /// Marks whose holders after the plan exceed the service's 1000 per mark, sorted.
    pub over_capacity: Vec<OverCapacity>,
    /// What to do to the state.
    pub changes: StateChanges,
}

impl Classified {
    /// Counts per kind.
    pub fn counts(&self) -> DriftCounts {
        DriftCounts::of(&self.drift)
    }

    /// Whether some drift takes a call to repair (for `--detailed-exitcode`).
    pub fn needs_calls(&self) -> bool {
        self.drift.iter().any(Drift::needs_call)
    }
}

/// The groups a refresh reads, each with the marks to query: every group desired, recorded or
/// intended, with every mark it desires, records or intends. A group with no such mark (declared
/// with no members) is left out: there is nothing to classify in it. Pure.
pub fn to_read(desired: &DesiredState, state: &State) -> BTreeMap<GroupId, MarkSet> {
    let mut out: BTreeMap<GroupId, MarkSet> = BTreeMap::new();
    for (g, group) in &desired.groups {
        let marks = out.entry(g.clone()).or_default();
        for set in group.members.values() {
            marks.extend(set.iter());
        }
    }
    for (g, accounts) in &state.groups {
        let marks = out.entry(g.clone()).or_default();
        for c in accounts.values() {
            marks.extend(c.iter().map(|(m, _)| m));
        }
    }
    for (g, accounts) in &state.intents {
        let marks = out.entry(g.clone()).or_default();
        for set in accounts.values() {
            marks.extend(set.iter());
        }
    }
    out.retain(|_, marks| !marks.is_empty());
    out
}

/// Classifies every (group, account, mark) of the groups in `live` (module docs). Pure and
/// deterministic: the output is sorted by group, account and mark.
pub fn classify(
    desired: &DesiredState,
    state: &State,
    live: &LiveFacts,
    now: UnixTime,
) -> Classified {
    let mut out = Classified::default();
    for (group, facts) in &live.groups {
        classify_group(group, facts, desired, state, now, &mut out);
    }
    out.unnameable.sort();
    out
}

/// Everything known about one (account, mark) of a group.
#[derive(Default)]
struct Triple {
    recorded: Option<UnixTime>,
    intended: bool,
    desired: bool,
}

fn classify_group(
    group: &GroupId,
    facts: &GroupFacts,
    desired: &DesiredState,
    state: &State,
    now: UnixTime,
    out: &mut Classified,
) {
    // Every (account, mark) the desired files, the state or the listings name, sorted.
    let mut triples: BTreeMap<(&Account, Mark), Triple> = BTreeMap::new();
    // Per mark: desired holders, and live holders nobody here manages (for the capacity).
    let mut desired_holders: BTreeMap<Mark, usize> = BTreeMap::new();
    let mut unmanaged_holders: BTreeMap<Mark, usize> = BTreeMap::new();
    if let Some(d) = desired.groups.get(group) {
        for (a, marks) in &d.members {
            for m in marks.iter() {
                triples.entry((a, m)).or_default().desired = true;
                *desired_holders.entry(m).or_default() += 1;
            }
        }
    }
    if let Some(accounts) = state.groups.get(group) {
        for (a, c) in accounts {
            for (m, at) in c.iter() {
                triples.entry((a, m)).or_default().recorded = Some(at);
            }
        }
    }
    if let Some(accounts) = state.intents.get(group) {
        for (a, marks) in accounts {
            for m in marks.iter() {
                triples.entry((a, m)).or_default().intended = true;
            }
        }
    }
    for (m, listing) in &facts.marks {
        for a in &listing.accounts {
            triples.entry((a, *m)).or_default();
        }
        for holder in &listing.unnameable {
            out.unnameable.push(UnnameableHolder {
                group: group.clone(),
                holder: holder.clone(),
                mark: *m,
            });
        }
    }

    for ((account, mark), t) in triples {
        let Some(listing) = facts.marks.get(&mark) else {
            // Not queried (only a caller that read fewer marks than `to_read` gets here):
            // nothing is known about it.
            continue;
        };
        let live = listing.accounts.contains(account);
        let mut report = |kind: DriftKind, reason: Option<NotChecked>| {
            out.drift.push(Drift {
                group: group.clone(),
                account: account.clone(),
                mark,
                kind,
                reason,
                desired: t.desired,
            });
        };
        if live {
            // Mark 500 of unknown age is due for renewal at once; a recorded time is older than
            // the truth (a renewal may have landed since), so keeping it renews no later.
            let adopt_at = match (mark.expires(), t.recorded) {
                (true, Some(at)) => at,
                (true, None) => now.saturating_sub(MARK_500_LIFETIME_SECS),
                (false, _) => listing.read_at,
            };
            match (t.recorded.is_some(), t.intended, t.desired) {
                // In sync (or a planned clear): nothing to say.
                (true, false, _) => {}
                (_, true, true) | (false, false, true) => {
                    report(DriftKind::Adopted, None);
                    out.changes
                        .adopt
                        .push((group.clone(), account.clone(), mark, adopt_at));
                }
                // Intended and not desired: the plan clears it again.
                (_, true, false) => {}
                (false, false, false) => {
                    report(DriftKind::Unmanaged, None);
                    *unmanaged_holders.entry(mark).or_default() += 1;
                }
            }
            continue;
        }
        // Not live.
        if t.intended {
            report(DriftKind::NotChecked, Some(NotChecked::InFlight));
            continue;
        }
        let Some(at) = t.recorded else {
            // Desired and not recorded: the plan sets it anyway; not drift.
            continue;
        };
        let present = facts.present(account);
        let absent_from_group = !present && !facts.online.full;
        let absent_mark = !listing.full && !facts.online.full;
        let kind = if absent_from_group {
            DriftKind::Offline
        } else if absent_mark {
            if t.desired {
                DriftKind::Lost
            } else {
                DriftKind::Gone
            }
        } else {
            report(DriftKind::NotChecked, Some(NotChecked::FullListing));
            continue;
        };
        // The listing may predate the confirmation: the service's cache is up to 40 s old.
        let read_at = facts.online.read_at.min(listing.read_at);
        if at > read_at - STALENESS_SECS {
            report(DriftKind::NotChecked, Some(NotChecked::Recent));
            continue;
        }
        report(kind, None);
        // A listing cut short reads exactly like its real end, so absence never removes a
        // clear: a mark that is not desired stays recorded, the plan clears it as it would
        // without a refresh, and the clear's answer forgets it. A desired one is forgotten, so
        // the plan sets it again: a refresh may add calls, never remove one.
        if t.desired {
            out.changes
                .forget
                .push((group.clone(), account.clone(), mark));
        }
    }

    // Holders marksync neither manages nor can name stay on the service after the plan and use
    // the mark's 1000 places as much as the desired ones do.
    for (mark, listing) in &facts.marks {
        let others = unmanaged_holders.get(mark).copied().unwrap_or(0);
        let unnameable = listing.unnameable.len();
        let desired = desired_holders.get(mark).copied().unwrap_or(0);
        if others + unnameable > 0 && desired + others + unnameable > MAX_MEMBERS_PER_MARK {
            out.over_capacity.push(OverCapacity {
                group: group.clone(),
                mark: *mark,
                desired,
                unmanaged: others,
                unnameable,
            });
        }
    }
}

/// Why a refresh failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// A read failed in a way every other read would repeat (no permission for `get_members`,
    /// credentials, a wrong endpoint): nothing was classified and the state is unchanged.
    #[error(transparent)]
    Read(#[from] ListError),
}

impl RefreshError {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RefreshError::Read(e) => e.metric_label(),
        }
    }

    /// Whether it is the missing `get_members` permission (edition or console switch): the daemon
    /// logs it once and falls back to `reassert_every`.
    pub fn is_no_permission(&self) -> bool {
        matches!(self, RefreshError::Read(ListError::NoPermission { .. }))
    }
}

/// What [`read`] saw.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// The groups read in full.
    pub facts: LiveFacts,
    /// Groups whose read failed (after retries) with an error that does not stop the others: not
    /// classified, their state untouched.
    pub unread: BTreeMap<GroupId, ListError>,
    /// `get_members` calls made (pages), for the cost report.
    pub calls: u64,
}

/// Converts a client listing into model terms. Names the model refuses as accounts (none a
/// desired file or the state can hold) are kept apart as `unnameable`, never dropped; the window
/// is judged on what the service sent.
fn listing(raw: LiveListing) -> Listing {
    let full = raw.accounts.len() >= LISTING_WINDOW;
    let mut accounts = BTreeSet::new();
    let mut unnameable = BTreeSet::new();
    for name in raw.accounts {
        // Checked on the borrowed name, so that the rare refused one is kept without a copy.
        match Account::new(&name) {
            Ok(a) => {
                accounts.insert(a);
            }
            Err(_) => {
                unnameable.insert(name);
            }
        }
    }
    Listing {
        accounts,
        unnameable,
        full,
        read_at: raw.read_at,
    }
}

/// Reads the live facts of `groups` (from [`to_read`]), at most `parallel` groups at once, all
/// through `client`'s shared rate limiter. A fatal error (see [`ListError::is_fatal`]) stops the
/// whole read; any other failure leaves its group out of the facts and in `unread`.
pub async fn read(
    client: &Client,
    groups: &BTreeMap<GroupId, MarkSet>,
    parallel: usize,
) -> Result<ReadOutcome, RefreshError> {
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (group, marks) in groups {
        let client = client.clone();
        let permits = permits.clone();
        let group = group.clone();
        let marks: Vec<u32> = marks.iter().map(Mark::get).collect();
        tasks.spawn(async move {
            // The semaphore is never closed.
            let _permit = permits.acquire_owned().await.ok();
            let result = client.read_live(group.as_str(), &marks).await;
            (group, result)
        });
    }
    let mut out = ReadOutcome::default();
    // How far the reads are, for a terminal (`progress`); nothing reads these otherwise. The
    // guard says the reads are over however they end (done, a fatal error, or the future
    // dropped by Ctrl-C), so no bar outlives them.
    let total = groups.len() as u64;
    let mut read: u64 = 0;
    tracing::trace!(target: crate::progress::TARGET, read, total, "groups read");
    let _over = crate::progress::ReadsOver;
    while let Some(joined) = tasks.join_next().await {
        read += 1;
        tracing::trace!(target: crate::progress::TARGET, read, total, "groups read");
        let (group, result) = match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue,
        };
        match result {
            Ok(live) => {
                out.calls += live.calls();
                let marks = live
                    .marks
                    .into_iter()
                    .filter_map(|(m, l)| Some((Mark::new(u64::from(m)).ok()?, listing(l))))
                    .collect();
                let facts = GroupFacts {
                    online: listing(live.online),
                    marks,
                };
                out.facts.groups.insert(group, facts);
            }
            Err(e) if e.is_fatal() => {
                tasks.abort_all();
                return Err(RefreshError::Read(e));
            }
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "group not refreshed");
                out.unread.insert(group, e);
            }
        }
    }
    Ok(out)
}

/// What [`refresh`] did.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// The drift and the state changes that were applied.
    pub classified: Classified,
    /// Groups that could not be read: not classified, state untouched (say so to the user).
    pub unread: BTreeMap<GroupId, ListError>,
    /// `get_members` calls made.
    pub calls: u64,
}

/// The whole refresh: reads what [`to_read`] names through `client` (groups in parallel, up to
/// [`DEFAULT_PARALLEL_GROUPS`]), [`classify`]s it, and applies the changes to `state` (in memory;
/// saving is the caller's). Then `plan::plan(desired, state, now, policy)` sends what the drift
/// needs. Groups that could not be read are left as they are (never treated as absent) and
/// listed in [`Refreshed::unread`]; the caller reports them. The reading time is `clock`'s, after
/// the reads.
pub async fn refresh(
    client: &Client,
    desired: &DesiredState,
    state: &mut State,
    clock: &dyn Clock,
) -> Result<Refreshed, RefreshError> {
    let groups = to_read(desired, state);
    let read = read(client, &groups, DEFAULT_PARALLEL_GROUPS).await?;
    let classified = classify(desired, state, &read.facts, clock.now());
    classified.changes.apply(state);
    Ok(Refreshed {
        classified,
        unread: read.unread,
        calls: read.calls,
    })
}

/// The `get_members` calls one refresh makes for a group: the online listing plus one listing per
/// mark, each at least one page of `page_size` members. `online` is capped at the window.
pub fn read_calls(online: usize, holders_per_mark: &[usize], page_size: usize) -> u64 {
    let pages = |n: usize| n.min(LISTING_WINDOW).div_ceil(page_size.max(1)).max(1) as u64;
    pages(online) + holders_per_mark.iter().map(|&n| pages(n)).sum::<u64>()
}

/// How long `calls` take at `per_second`.
pub fn read_time(calls: u64, per_second: u32) -> Duration {
    Duration::from_secs_f64(calls as f64 / f64::from(per_second.max(1)))
}

#[cfg(test)]
mod tests;
