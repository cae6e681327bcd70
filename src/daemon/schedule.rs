//! The daemon's decisions about time and state, as pure functions of their inputs: when the next
//! mark 500 renewal is due, what is pending, what a presence callback makes unknown, the
//! renewal-only plan, and the file-event debounce as a state machine. No clock is read here:
//! `now` is a parameter, so every rule is unit-tested exactly.

use std::time::Duration;

use tokio::time::Instant;

use crate::desired::{DesiredGroup, DesiredState};
use crate::model::{MARK_500_LIFETIME_SECS, Mark, MarkSet, UnixTime};
use crate::plan::{self, Plan, Policy};
use crate::state::State;
use crate::tim::callback::{CallbackEvent, MemberEvent};

/// When the earliest renewal of a desired mark 500 is due; with `desired` `None` (the desired
/// files are broken, so every confirmed 500 is renewed, see [`renewals_only`]) of any held one.
///
/// A confirmation later than `now` (the clock was stepped back) is due now, as the planner
/// treats it: the real mark may run out long before `at + 72 h` comes round on this clock.
pub fn next_renewal_at(
    state: &State,
    desired: Option<&DesiredState>,
    renew_margin_secs: i64,
    now: UnixTime,
) -> Option<UnixTime> {
    let mut earliest: Option<UnixTime> = None;
    for (group, accounts) in &state.groups {
        let wanted = desired.and_then(|d| d.groups.get(group));
        for (account, confirmed) in accounts {
            let Some(at) = confirmed.get(Mark::ALWAYS_ONLINE) else {
                continue;
            };
            let is_desired = wanted.is_some_and(|g| {
                g.members
                    .get(account)
                    .is_some_and(|m| m.contains(Mark::ALWAYS_ONLINE))
            });
            if is_desired || desired.is_none() {
                let due = if at > now {
                    now
                } else {
                    at + MARK_500_LIFETIME_SECS - renew_margin_secs
                };
                earliest = Some(earliest.map_or(due, |e: UnixTime| e.min(due)));
            }
        }
    }
    earliest
}

/// How long to sleep for a renewal due at `due`, at `now`.
///
/// A renewal that came due after the last reconcile started has not been attempted: it is due
/// now, however the loop was woken meanwhile. One that was attempted and did not go through
/// (member gone, call failed) is retried `retry_period` after that attempt, not in a tight loop.
pub fn renewal_wait(
    due: UnixTime,
    last_reconcile_at: Option<UnixTime>,
    retry_period: Duration,
    now: UnixTime,
) -> Duration {
    let at = match last_reconcile_at {
        Some(last) if due <= last => last + retry_period.as_secs().max(1) as i64,
        _ => due,
    };
    Duration::from_secs((at - now).max(0) as u64)
}

/// When the earliest held mark 500 expires (the `marksync_mark500_earliest_expiry` gauge). A
/// confirmation later than `now` (the clock was stepped back) says nothing about when the mark
/// runs out: it counts as expiring now, the way the planner counts it as due now.
pub fn earliest_500_expiry(state: &State, now: UnixTime) -> Option<UnixTime> {
    state
        .groups
        .values()
        .flat_map(|a| a.values())
        .filter_map(|c| c.get(Mark::ALWAYS_ONLINE))
        .map(|at| {
            if at > now {
                now
            } else {
                at + MARK_500_LIFETIME_SECS
            }
        })
        .min()
}

/// Desired marks the state does not hold yet (offline members, failures); 0 before the desired
/// files first loaded.
pub fn pending_count(state: &State, desired: Option<&DesiredState>) -> usize {
    let Some(desired) = desired else {
        return 0;
    };
    let mut n = 0;
    for (group, g) in &desired.groups {
        for (account, marks) in &g.members {
            let held = state.confirmed(group, account);
            n += marks
                .iter()
                .filter(|&m| held.and_then(|c| c.get(m)).is_none())
                .count();
        }
    }
    n
}

/// How long after the service applied a call the daemon may record its confirmation: at most
/// the client's timeout of the attempt that succeeded (15 s, connecting included), with room for
/// folding the answer in and for whole-second clocks. An event this close before a confirmation may have happened
/// after the service applied the mark, so it is not "older than the confirmation".
pub const CONFIRMATION_LAG_SECS: i64 = 21;

/// Folds a presence callback into the state: every confirmed mark of the event's members,
/// mark 500 excepted, that was confirmed before the event (allowing
/// [`CONFIRMATION_LAG_SECS`]) becomes unknown: its confirmation is forgotten and an intent is
/// recorded, so the planner sets it again if it is desired and clears it again if not. A mark
/// confirmed after the event is left alone (the event is older news). Returns how many marks
/// became unknown. (Forgetting them instead would lose a mark the desired files stop wanting in
/// the same round: neither confirmed nor intended, nothing would ever clear it.)
pub fn presence_changed(state: &mut State, event: &CallbackEvent) -> usize {
    let mut n = 0;
    for account in &event.accounts {
        let stale: Vec<Mark> = state
            .confirmed(&event.group, account)
            .map(|c| {
                c.iter()
                    .filter(|&(m, at)| !m.expires() && event.at + CONFIRMATION_LAG_SECS >= at)
                    .map(|(m, _)| m)
                    .collect()
            })
            .unwrap_or_default();
        if !stale.is_empty() {
            n += stale.len();
            state.intend(&event.group, account, stale.iter().copied());
            state.forget(&event.group, account, stale);
        }
    }
    n
}

/// The share of `max_calls_per_second` that reconciles started by callbacks alone may spend, so
/// that writes from desired changes and renewals always keep the rest of the budget.
pub const CALLBACK_SHARE: f64 = 0.25;

/// When the next reconcile started by callbacks alone may start, after one that started at
/// `started` and planned `calls` calls: callbacks in between only make marks unknown (coalesced
/// per member in the state), and their re-sends wait, so that callback rounds average at most
/// [`CALLBACK_SHARE`] of `max_calls_per_second`. Any other reconcile sends them too.
pub fn next_callback_round(started: Instant, calls: usize, max_calls_per_second: u32) -> Instant {
    let per_second = (f64::from(max_calls_per_second) * CALLBACK_SHARE).max(1.0);
    started + Duration::from_secs_f64(calls as f64 / per_second)
}

/// Whether a presence callback that made `unknown` marks unknown needs a reconcile now: an
/// Online event does when it made marks unknown or names a member of a desired group (its
/// desired marks are sent again at once); an Offline event never does (the member cannot take
/// marks until it is back).
pub fn callback_needs_reconcile(
    event: &CallbackEvent,
    unknown: usize,
    desired: Option<&DesiredState>,
) -> bool {
    match event.event {
        MemberEvent::Offline => false,
        MemberEvent::Online => {
            unknown > 0
                || desired
                    .and_then(|d| d.groups.get(&event.group))
                    .is_some_and(|g| event.accounts.iter().any(|a| g.members.contains_key(a)))
        }
    }
}

/// The renewal-only plan: every confirmed mark 500 that is due, nothing else. Used while the
/// desired files are broken or a plan is refused by the guard.
pub fn renewals_only(state: &State, now: UnixTime, policy: &Policy) -> Plan {
    let mut desired = DesiredState::default();
    let mut held = State::new(state.sdkappid);
    for (group, accounts) in &state.groups {
        for (account, confirmed) in accounts {
            if let Some(at) = confirmed.get(Mark::ALWAYS_ONLINE) {
                let g: &mut DesiredGroup = desired.groups.entry(group.clone()).or_default();
                g.members
                    .insert(account.clone(), MarkSet::from_iter([Mark::ALWAYS_ONLINE]));
                held.confirm(group, account, [Mark::ALWAYS_ONLINE], at);
            }
        }
    }
    let policy = Policy {
        reassert: false,
        ..*policy
    };
    plan::plan(&desired, &held, now, &policy)
}

/// A doubling backoff: `first`, then twice the previous wait, at most `max`, until `reset`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first wait after a success.
    first: Duration,
    /// The longest wait.
    max: Duration,
    /// The last wait handed out since the last reset.
    last: Option<Duration>,
}

impl Backoff {
    /// A backoff from `first` doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            last: None,
        }
    }

    /// The next wait: `first` after a reset, else twice the last one, at most `max`.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.last.map_or(self.first, |l| (l * 2).min(self.max));
        self.last = Some(wait);
        wait
    }

    /// Back to `first`: the thing being retried succeeded.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// The file-event debounce (SPEC: "quiet time after a file event; max wait 4x this"): after the
/// first event of a burst, fire once no event came for `quiet`, or at most `4 * quiet` after the
/// burst began, whichever is first. A burst longer than the debounce (a `git checkout` of many
/// files, a script writing a file 100 times) is therefore delivered once, not in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// The quiet period that ends a burst.
    quiet: Duration,
    /// The open burst: (when it began, when its last event came).
    burst: Option<(Instant, Instant)>,
}

impl Debounce {
    /// A debounce with no burst open.
    pub fn new(quiet: Duration) -> Self {
        Debounce { quiet, burst: None }
    }

    /// An event came at `now`: opens a burst or extends the open one.
    pub fn event(&mut self, now: Instant) {
        let began = self.burst.map_or(now, |(began, _)| began);
        self.burst = Some((began, now));
    }

    /// When the open burst fires (`None` when there is none).
    pub fn deadline(&self) -> Option<Instant> {
        self.burst
            .map(|(began, last)| (last + self.quiet).min(began + self.quiet * 4))
    }

    /// At `now`: whether the open burst is due; if so it is closed (the caller sends one
    /// "files changed").
    pub fn fire(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|d| now >= d) {
            self.burst = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Account, GroupId};

    const T: UnixTime = 1_764_000_000;

    fn g() -> GroupId {
        GroupId::new("@TGS#a").unwrap()
    }

    fn a(name: &str) -> Account {
        Account::new(name).unwrap()
    }

    fn m(n: u32) -> Mark {
        Mark::new(u64::from(n)).unwrap()
    }

    fn event(event: MemberEvent, accounts: &[&str], at: UnixTime) -> CallbackEvent {
        CallbackEvent {
            group: g(),
            accounts: accounts.iter().map(|x| a(x)).collect(),
            event,
            at,
        }
    }

    /// bob holds 500, 1000 and 1001, confirmed at `T`.
    fn state() -> State {
        let mut st = State::new(1);
        st.confirm(&g(), &a("bob"), [m(500), m(1000), m(1001)], T);
        st
    }

    fn desired(marks: &[u32]) -> DesiredState {
        let mut d = DesiredState::default();
        d.groups
            .entry(g())
            .or_default()
            .members
            .insert(a("bob"), marks.iter().map(|&x| m(x)).collect());
        d
    }

    /// (command, marks of bob) of every call of a plan.
    fn calls(p: &Plan) -> Vec<(&'static str, Vec<u32>)> {
        p.calls
            .iter()
            .map(|c| {
                let marks = c.members[0].1.iter().map(Mark::get).collect();
                (c.command.as_str(), marks)
            })
            .collect()
    }

    fn plan_after(st: &State, want: &[u32]) -> Vec<(&'static str, Vec<u32>)> {
        calls(&plan::plan(&desired(want), st, T + 100, &Policy::default()))
    }

    #[test]
    fn offline_makes_confirmed_marks_unknown_not_absent_and_keeps_500() {
        for kind in [MemberEvent::Offline, MemberEvent::Online] {
            let mut st = state();
            assert_eq!(presence_changed(&mut st, &event(kind, &["bob"], T + 60)), 2);
            let held = st.confirmed(&g(), &a("bob")).unwrap();
            assert_eq!(held.marks(), MarkSet::from_iter([m(500)]), "{kind:?}");
            assert_eq!(
                st.intents[&g()][&a("bob")],
                MarkSet::from_iter([m(1000), m(1001)]),
                "{kind:?}: recorded as unknown"
            );
        }
    }

    #[test]
    fn a_mark_removed_from_the_desired_files_in_the_same_round_is_cleared() {
        // The stray: an Online callback, and the desired files dropping 1001, absorbed
        // together. Forgetting 1001 planned nothing for it; unknown, it is cleared.
        let mut st = state();
        presence_changed(&mut st, &event(MemberEvent::Online, &["bob"], T + 60));
        assert_eq!(
            plan_after(&st, &[500, 1000]),
            vec![("clear", vec![1001]), ("set", vec![1000])]
        );
        // Still desired: set again at once.
        assert_eq!(
            plan_after(&st, &[500, 1000, 1001]),
            vec![("set", vec![1000, 1001])]
        );
    }

    #[test]
    fn an_event_older_than_the_confirmation_is_ignored() {
        for kind in [MemberEvent::Offline, MemberEvent::Online] {
            let mut st = state();
            let old = T - CONFIRMATION_LAG_SECS - 1;
            assert_eq!(presence_changed(&mut st, &event(kind, &["bob"], old)), 0);
            assert_eq!(st, state(), "{kind:?}");
            assert!(plan_after(&st, &[500, 1000, 1001]).is_empty());
        }
    }

    #[test]
    fn an_event_just_before_the_confirmation_may_postdate_the_service_applying_it() {
        // The service applied the call up to a request's duration before its answer was
        // recorded: an Offline in that window dropped the mark.
        let mut st = state();
        let event = event(MemberEvent::Offline, &["bob"], T - CONFIRMATION_LAG_SECS);
        assert_eq!(presence_changed(&mut st, &event), 2);
    }

    #[test]
    fn other_members_and_groups_are_untouched() {
        let mut st = state();
        st.confirm(&g(), &a("carol"), [m(1000)], T);
        let other = GroupId::new("@TGS#b").unwrap();
        st.confirm(&other, &a("bob"), [m(1000)], T);
        presence_changed(
            &mut st,
            &event(MemberEvent::Offline, &["bob", "dave"], T + 60),
        );
        assert!(st.confirmed(&g(), &a("carol")).is_some());
        assert!(st.confirmed(&other, &a("bob")).is_some());
        assert_eq!(st.intents.len(), 1);
        assert_eq!(st.intents[&g()].len(), 1);
    }

    /// Drives a [`Debounce`] through events at the given millisecond offsets and returns when it
    /// fires, polling it every millisecond up to `until`.
    fn fire_times(events: &[u64], until: u64) -> Vec<u64> {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut d = Debounce::new(Duration::from_millis(100));
        let mut out = Vec::new();
        for ms in 0..=until {
            if events.contains(&ms) {
                d.event(at(ms));
            }
            if d.fire(at(ms)) {
                out.push(ms);
            }
        }
        out
    }

    #[test]
    fn debounce_fires_a_quiet_period_after_the_last_event() {
        assert!(fire_times(&[], 1_000).is_empty());
        assert_eq!(fire_times(&[10], 1_000), [110]);
        assert_eq!(fire_times(&[10, 50, 90], 1_000), [190]);
        assert_eq!(fire_times(&[10, 300], 1_000), [110, 400]);
    }

    #[test]
    fn debounce_fires_at_four_periods_however_long_the_burst() {
        let every_50: Vec<u64> = (0..20).map(|i| i * 50).collect();
        // From 0: capped at 400 (the event at 400 still belongs to it); the next burst begins
        // at 450, capped at 850; the last begins at 900 and ends quiet at 1050.
        assert_eq!(fire_times(&every_50, 2_000), [400, 850, 1_050]);
        let mut d = Debounce::new(Duration::from_millis(100));
        assert_eq!(d.deadline(), None);
        let t = Instant::now();
        d.event(t);
        assert_eq!(d.deadline(), Some(t + Duration::from_millis(100)));
        assert!(!d.fire(t + Duration::from_millis(99)));
        assert!(d.fire(t + Duration::from_millis(100)));
        assert_eq!(d.deadline(), None, "closed once fired");
    }

    #[test]
    fn a_mark_500_confirmed_in_the_future_is_due_now_as_the_planner_says() {
        // The clock was stepped back an hour after bob's 500 was confirmed at `T`.
        let now = T - 3_600;
        let st = state();
        let want = desired(&[500]);
        let margin = 600;
        assert_eq!(next_renewal_at(&st, Some(&want), margin, now), Some(now));
        assert_eq!(next_renewal_at(&st, None, margin, now), Some(now));
        let wait = renewal_wait(now, None, Duration::from_secs(60), now);
        assert_eq!(wait, Duration::ZERO, "wake at once");
        assert_eq!(earliest_500_expiry(&st, now), Some(now), "no far expiry");
        let plan = plan::plan(
            &want,
            &st,
            now,
            &Policy {
                renew_margin_secs: margin,
                reassert: false,
            },
        );
        assert_eq!(plan.summary.renew, 1, "the planner agrees: due now");
        // A confirmation in the past keeps its real due time and expiry.
        let later = T + 10;
        assert_eq!(
            next_renewal_at(&st, Some(&want), margin, later),
            Some(T + MARK_500_LIFETIME_SECS - margin)
        );
        assert_eq!(
            earliest_500_expiry(&st, later),
            Some(T + MARK_500_LIFETIME_SECS)
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_wait(), s(1));
        let mut fatal = Backoff::new(s(60), s(600));
        let waits: Vec<u64> = (0..6).map(|_| fatal.next_wait().as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 600, 600]);
    }

    #[test]
    fn only_an_online_event_for_a_desired_member_or_one_with_unknown_marks_reconciles() {
        let want = desired(&[1000]);
        let cases = [
            (MemberEvent::Online, &["bob"][..], 0, Some(&want), true),
            (MemberEvent::Online, &["dave"][..], 0, Some(&want), false),
            (MemberEvent::Online, &["dave"][..], 2, Some(&want), true),
            (MemberEvent::Online, &["bob"][..], 0, None, false),
            (MemberEvent::Offline, &["bob"][..], 2, Some(&want), false),
        ];
        for (kind, accounts, unknown, d, expect) in cases {
            let e = event(kind, accounts, T);
            assert_eq!(
                callback_needs_reconcile(&e, unknown, d),
                expect,
                "{kind:?} {accounts:?} {unknown}"
            );
        }
    }

    #[test]
    fn callback_rounds_spend_a_quarter_of_the_call_budget() {
        let t = Instant::now();
        // 200 calls/s: callbacks get 50 calls/s.
        assert_eq!(next_callback_round(t, 50, 200), t + Duration::from_secs(1));
        assert_eq!(
            next_callback_round(t, 1, 200),
            t + Duration::from_millis(20)
        );
        assert_eq!(next_callback_round(t, 0, 200), t);
        // A tiny budget still lets one call a second through.
        assert_eq!(next_callback_round(t, 2, 1), t + Duration::from_secs(2));
    }
}
