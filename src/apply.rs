//! Runs a [`Plan`] through the client and folds confirmed results into the state (SPEC sections
//! 4 and 7). `marksync apply` and the daemon's reconcile both come through [`execute`].
//!
//! - Before any call, the marks about to be set AND cleared are recorded as intents (the
//!   `<state>.intents` sidecar, written atomically); when that record cannot be written, nothing
//!   is sent. A mark with an intent is unknown: after a crash, a signal or a failed save, the
//!   next plan sets it again if it is desired and clears it again if not, whatever the state's
//!   confirmation says. A confirmed answer resolves the intent; a refusal or a call not sent
//!   restores the intents that were there before.
//! - Groups run in parallel, the calls of one group in order (clears free capacity for sets);
//!   the client's shared rate limiter sets the pace.
//! - One task owns the state: results arrive over a channel, are folded in, and the state is
//!   saved at most once a second and at the end, never once per call. A save that fails stops
//!   the run like a fatal code (no new call; calls in flight finish and are folded), and the
//!   error is returned after one last save attempt.
//! - "No new call" (a fatal code, a failed save, the caller's stop flag) is checked when a call's
//!   rate-limiter slot is granted and before each retry, not only before it queues.
//! - A mark counts as set only when the response lists it for that member. A member missing from
//!   the response was offline: pending, not an error. So is a set call refused with one of the
//!   `offline_error_codes` (the service's undocumented "every account is offline" failure).
//!   A reasserted mark found offline loses its confirmation (the service dropped it).
//! - A clear refused with one of the `offline_error_codes` has nothing left to clear: an offline
//!   member (or one that left) has lost its marks, so they are forgotten and count as cleared.
//!   Mark 500 survives going offline, so it stays unknown (its intent is kept, counted pending)
//!   and the next apply clears it again.
//!
//! Architecture invariant: only confirmed results enter the confirmed part of the state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use crate::clock::Clock;
use crate::model::{Account, GroupId, Mark, MarkSet};
use crate::plan::{Call, Command, Plan};
use crate::state::{State, StateError, StateStore};
use crate::tim::client::{CallError, Client, MarkChange};

/// What [`execute`] reports, per call and in total: part of its signature, defined in
/// [`crate::outcome`] so that the renderer needs no executor.
use crate::outcome::{CallReport, Outcome, Skip, Totals};

/// How many groups have calls in flight at once. The rate limiter sets the pace; this only bounds
/// the number of waiting tasks and open requests.
const GROUPS_IN_FLIGHT: usize = 64;

/// The longest the state goes unsaved while results arrive.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How an apply ended, beyond the counts.
#[derive(Debug)]
pub struct Applied {
    /// The counts.
    pub totals: Totals,
    /// The fatal error that stopped the run, if any.
    pub fatal: Option<CallError>,
}

impl Applied {
    /// Whether some calls failed after retries (exit 4) without a fatal stop (exit 1).
    pub fn partially_failed(&self) -> bool {
        self.fatal.is_none() && self.totals.failed > 0
    }
}

/// Settings for [`execute`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Codes that, on a set call, mean "every account is offline": the members stay pending.
    pub offline_error_codes: Vec<i64>,
    /// Set from outside (the daemon's SIGTERM) to stop sending new calls; calls in flight
    /// finish and are recorded, the rest are reported as skipped. Only read here: a fatal code
    /// or a failed save stops this run through its own flag, never the caller's.
    pub stop: Arc<AtomicBool>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            offline_error_codes: vec![10004],
            stop: Arc::default(),
        }
    }
}

/// Executes `plan`, recording results into `state` and saving it to `store`.
/// `on_call` sees every call's outcome as it is folded in (for output and metrics).
pub async fn execute(
    plan: Arc<Plan>,
    state: &mut State,
    store: &dyn StateStore,
    client: &Client,
    clock: &dyn Clock,
    settings: &Settings,
    mut on_call: impl FnMut(CallReport<'_>),
) -> Result<Applied, StateError> {
    let mut applied = Applied {
        totals: Totals::default(),
        fatal: None,
    };
    if plan.calls.is_empty() {
        return Ok(applied);
    }
    // 1. Intents first, for sets and clears alike: a crash after this point leaves no
    // unaccounted mark.
    let fresh = record_intents(&plan, state);
    if let Err(e) = store.save_intents(state).await {
        // Nothing is sent: the state keeps what it had.
        for (call, added) in plan.calls.iter().zip(&fresh) {
            for (account, marks) in added {
                state.drop_intents(&call.group, account, marks.iter());
            }
        }
        return Err(e);
    }

    // 2. One task per group, calls of a group in order. `halt` is this run's own stop: a fatal
    // code or a failed save sets it; the caller's `stop` (a signal) is looked at beside it.
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Outcome, Duration)>();
    let halt = Arc::new(AtomicBool::new(false));
    let stop = settings.stop.clone();
    let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    let mut by_group: BTreeMap<&GroupId, Vec<usize>> = BTreeMap::new();
    for (i, call) in plan.calls.iter().enumerate() {
        by_group.entry(&call.group).or_default().push(i);
    }
    let offline_codes: Arc<[i64]> = settings.offline_error_codes.clone().into();
    let mut tasks = tokio::task::JoinSet::new();
    for (_, indices) in by_group {
        let (plan, client, tx, stop, halt, slots, offline_codes) = (
            plan.clone(),
            client.clone(),
            tx.clone(),
            stop.clone(),
            halt.clone(),
            slots.clone(),
            offline_codes.clone(),
        );
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let stopped = || halt.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst);
            // Why nothing more is sent, judged when it happens: the caller's stop wins, since
            // a signal is what the operator needs to hear about.
            let why = || {
                if stop.load(Ordering::SeqCst) {
                    Skip::Stopped
                } else {
                    Skip::Halted
                }
            };
            let mut gone = false;
            for i in indices {
                if gone || stopped() {
                    let skip = if gone { Skip::GroupGone } else { why() };
                    let _ = tx.send((i, Outcome::Skipped(skip), Duration::ZERO));
                    continue;
                }
                let started = Instant::now();
                let mut outcome = send(&client, &plan.calls[i], &offline_codes, &stopped).await;
                if matches!(outcome, Outcome::Skipped(Skip::Halted)) {
                    outcome = Outcome::Skipped(why());
                }
                let elapsed = started.elapsed();
                match &outcome {
                    Outcome::GroupGone(_) => gone = true,
                    Outcome::Failed(e) if e.is_fatal() => halt.store(true, Ordering::SeqCst),
                    _ => {}
                }
                let _ = tx.send((i, outcome, elapsed));
            }
        });
    }
    drop(tx);

    // 3. Fold results as they come; save in bulk. After a failed save, no new call starts; the
    // ones in flight are still folded, and the state is saved once more at the end.
    let mut last_save = Instant::now();
    let mut save_failed: Option<StateError> = None;
    while let Some((i, outcome, elapsed)) = rx.recv().await {
        let call = &plan.calls[i];
        fold(state, call, &fresh[i], &outcome, clock.now(), &mut applied);
        on_call(CallReport {
            call,
            outcome: &outcome,
            elapsed,
        });
        if save_failed.is_none() && last_save.elapsed() >= SAVE_EVERY {
            if let Err(e) = store.save(state).await {
                tracing::error!("cannot save state: {e}; no new call is sent");
                halt.store(true, Ordering::SeqCst);
                save_failed = Some(e);
            }
            last_save = Instant::now();
        }
    }
    while tasks.join_next().await.is_some() {}
    let saved = store.save(state).await;
    if let Some(e) = save_failed {
        return Err(e);
    }
    saved?;
    if applied.fatal.is_some() {
        applied.totals.failed += applied.totals.skipped;
    }
    Ok(applied)
}

/// Records every mark of every call as an intent (unknown until its answer is folded in).
/// Returns, per call, the intents it added (the marks that were not unknown already), in the
/// call's member order: the ones to drop again when it turns out nothing was applied.
fn record_intents(plan: &Plan, state: &mut State) -> Vec<Vec<(Account, MarkSet)>> {
    plan.calls
        .iter()
        .map(|call| {
            let mut added = Vec::new();
            for (account, marks) in &call.members {
                let before = state.intended(&call.group, account);
                let new: MarkSet = marks
                    .iter()
                    .filter(|&m| !before.is_some_and(|b| b.contains(m)))
                    .collect();
                if !new.is_empty() {
                    state.intend(&call.group, account, new.iter());
                    added.push((account.clone(), new));
                }
            }
            added
        })
        .collect()
}

/// The outcome of a clear refused because every account in it is offline (or gone): the
/// service has dropped their marks already, except mark 500, which outlives a disconnection and
/// stays pending (unknown).
fn clear_found_offline(call: &Call) -> Outcome {
    let mut confirmed = Vec::new();
    let mut pending = Vec::new();
    for (account, marks) in &call.members {
        let (keep, gone): (Vec<Mark>, Vec<Mark>) = marks.iter().partition(|m| m.expires());
        if !gone.is_empty() {
            confirmed.push((account.clone(), gone.into_iter().collect()));
        }
        if !keep.is_empty() {
            pending.push((account.clone(), keep.into_iter().collect()));
        }
    }
    Outcome::Done { confirmed, pending }
}

/// Sends one call and classifies the answer. A set call refused with one of `offline_codes` is
/// the service's "every account is offline": all its members are pending, as when the service
/// leaves offline members out of a successful answer.
async fn send(
    client: &Client,
    call: &Call,
    offline_codes: &[i64],
    stop: &(dyn Fn() -> bool + Sync),
) -> Outcome {
    let change = match call.command {
        Command::Set => MarkChange::Set,
        Command::Clear => MarkChange::Delete,
    };
    match client
        .modify_marks_unless(&call.group, change, &call.members, stop)
        .await
    {
        Ok(response) => match call.command {
            Command::Clear => Outcome::Done {
                confirmed: call.members.clone(),
                pending: Vec::new(),
            },
            Command::Set => {
                let listed: BTreeMap<&str, &[u32]> = response
                    .iter()
                    .map(|(account, marks)| (account.as_str(), marks.as_slice()))
                    .collect();
                let mut confirmed = Vec::new();
                let mut pending = Vec::new();
                for (account, marks) in &call.members {
                    let got = listed.get(account.as_str()).copied().unwrap_or_default();
                    let (yes, no): (Vec<Mark>, Vec<Mark>) =
                        marks.iter().partition(|m| got.contains(&m.get()));
                    if !yes.is_empty() {
                        confirmed.push((account.clone(), yes.into_iter().collect()));
                    }
                    if !no.is_empty() {
                        pending.push((account.clone(), no.into_iter().collect()));
                    }
                }
                Outcome::Done { confirmed, pending }
            }
        },
        Err(CallError::Rejected { code, .. }) if offline_codes.contains(&code) => {
            match call.command {
                Command::Set => Outcome::Done {
                    confirmed: Vec::new(),
                    pending: call.members.clone(),
                },
                Command::Clear => clear_found_offline(call),
            }
        }
        Err(CallError::Stopped) => Outcome::Skipped(Skip::Halted),
        Err(e @ CallError::GroupGone { .. }) => Outcome::GroupGone(e),
        Err(e) => Outcome::Failed(e),
    }
}

/// Folds one outcome into the state and the totals. `fresh` holds the intents this call added
/// (see [`execute`]): dropped again when nothing was applied, so that intents from before (an
/// earlier crash) stay.
fn fold(
    state: &mut State,
    call: &Call,
    fresh: &[(Account, MarkSet)],
    outcome: &Outcome,
    now: i64,
    applied: &mut Applied,
) {
    let t = &mut applied.totals;
    let marks_in =
        |members: &[(Account, MarkSet)]| members.iter().map(|(_, m)| m.len()).sum::<usize>();
    let undo_fresh = |state: &mut State| {
        for (account, marks) in fresh {
            state.drop_intents(&call.group, account, marks.iter());
        }
    };
    match outcome {
        Outcome::Done { confirmed, pending } => {
            t.calls += 1;
            match call.command {
                Command::Clear => {
                    for (account, marks) in confirmed {
                        state.forget(&call.group, account, marks.iter());
                        state.drop_intents(&call.group, account, marks.iter());
                        t.cleared += marks.len();
                    }
                    // Mark 500 of a member found offline: unknown, its intent stays.
                    for (_, marks) in pending {
                        t.pending += marks.len();
                    }
                }
                Command::Set => {
                    for (account, marks) in confirmed {
                        for m in marks.iter() {
                            let renewal = m.expires()
                                && state
                                    .confirmed(&call.group, account)
                                    .is_some_and(|c| c.get(m).is_some());
                            if renewal {
                                t.renewed += 1;
                            } else {
                                t.set += 1;
                            }
                        }
                        state.confirm(&call.group, account, marks.iter(), now);
                    }
                    for (account, marks) in pending {
                        not_applied(state, &call.group, account, marks);
                        t.pending += marks.len();
                    }
                }
            }
        }
        Outcome::GroupGone(e) => {
            t.calls += 1;
            t.groups_gone += 1;
            tracing::warn!(group = %call.group, error = %e, "group no longer exists; forgetting its recorded marks");
            state.forget_group(&call.group);
        }
        Outcome::Failed(e) => {
            t.calls += 1;
            t.failed += marks_in(&call.members);
            // A refusal by the service means nothing was applied: the intents are what they were
            // before. Anything else (transport, HTTP status, unreadable answer, retries used up)
            // may have applied the call, so its intents stay and the next plan settles them.
            if matches!(e, CallError::Rejected { .. } | CallError::Fatal { .. }) {
                undo_fresh(state);
            }
            if e.is_fatal() && applied.fatal.is_none() {
                applied.fatal = Some(e.clone());
            }
        }
        Outcome::Skipped(skip) => {
            // Counted as failed at the end only if a fatal error stopped the run; calls a
            // shutdown kept from starting are simply not done (the next run plans them again).
            if *skip != Skip::GroupGone {
                t.skipped += marks_in(&call.members);
            }
            undo_fresh(state);
        }
    }
}

/// Records marks a set call did not apply because their member was offline (or not a member).
///
/// A mark that was not confirmed simply stays pending: its intent is dropped (an offline member
/// holds no mark but 500, and one outside the group holds none), and the next plan sets it again
/// as it is still not confirmed. A mark the state holds as confirmed (a reassert, a renewal, or a
/// mark made unknown by an earlier crash) may be gone: an offline member loses every mark but
/// 500, and a member that left loses 500 too, so keeping the confirmation would hide it from
/// every later plan. It stays unknown instead (the intent is kept; a non-500 mark also loses its
/// confirmation): the next plan sets it again if it is still desired and clears it if not.
fn not_applied(state: &mut State, group: &GroupId, account: &Account, marks: &MarkSet) {
    for m in marks.iter() {
        let confirmed = state
            .confirmed(group, account)
            .is_some_and(|c| c.get(m).is_some());
        if !confirmed {
            state.drop_intents(group, account, [m]);
        } else if !m.expires() {
            state.forget(group, account, [m]);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The state never claims to know what the service holds when it cannot: after folding any
    //! mix of answers, every mark the state calls confirmed (and not unknown) is certainly on the
    //! service, and every mark it does not hold is certainly not, as far as marksync's own calls
    //! go. Unknown (an intent) is always allowed; answers that settle a mark must settle it.
    use super::*;
    use crate::desired::DesiredState;
    use crate::model::test_ids::g;
    use crate::plan::{Policy, plan};
    use proptest::prelude::*;

    const ACCOUNTS: [&str; 3] = ["u0", "u1", "u2"];
    const MARKS: [u64; 3] = [500, 1000, 1001];
    const NOW: i64 = 1_764_000_000;

    /// What the service may hold for one (account, mark), or what the state claims about it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Truth {
        Present,
        Absent,
        Either,
    }

    impl Truth {
        fn or(self, other: Truth) -> Truth {
            if self == other { self } else { Truth::Either }
        }
    }

    /// How the service answers one call.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        /// Applied and confirmed for every member.
        Applied,
        /// "Offline": members whose bit is set are left out of a set's answer; a clear is
        /// refused as a whole with the offline code.
        Offline(u8),
        /// Refused by the service: nothing applied.
        Refused,
        /// The answer was lost: applied or not.
        Lost,
        /// Not sent (a stop).
        NotSent,
        /// The group is gone.
        GroupGone,
    }

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            3 => Just(Answer::Applied),
            2 => any::<u8>().prop_map(Answer::Offline),
            1 => Just(Answer::Refused),
            2 => Just(Answer::Lost),
            1 => Just(Answer::NotSent),
            1 => Just(Answer::GroupGone),
        ]
    }

    fn belief(state: &State, a: &Account, m: Mark) -> Truth {
        if state.intended(&g("G"), a).is_some_and(|i| i.contains(m)) {
            Truth::Either
        } else if state
            .confirmed(&g("G"), a)
            .is_some_and(|c| c.get(m).is_some())
        {
            Truth::Present
        } else {
            Truth::Absent
        }
    }

    fn triples() -> impl Iterator<Item = (Account, Mark)> {
        ACCOUNTS.iter().flat_map(|a| {
            MARKS
                .iter()
                .map(move |&m| (Account::new(a).unwrap(), Mark::new(m).unwrap()))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn folding_any_answers_never_claims_more_than_the_service_can_hold(
            // Per (account, mark): desired, confirmed, confirmed long ago, intended.
            cells in proptest::collection::vec(any::<(bool, bool, bool, bool)>(), 9),
            reassert in any::<bool>(),
            answers in proptest::collection::vec(answer(), 4),
        ) {
            let mut desired = DesiredState::default();
            let mut state = State::new(1);
            for ((a, m), &(want, held, old, unknown)) in triples().zip(&cells) {
                if want {
                    desired.groups.entry(g("G")).or_default().members.entry(a.clone())
                        .or_default().insert(m);
                }
                if held {
                    let at = if old { NOW - 71 * 3600 } else { NOW - 60 };
                    state.confirm(&g("G"), &a, [m], at);
                }
                if unknown {
                    state.intend(&g("G"), &a, [m]);
                }
            }
            let policy = Policy { reassert, ..Policy::default() };
            let p = plan(&desired, &state, NOW, &policy);
            let mut truth: BTreeMap<(Account, Mark), Truth> =
                triples().map(|(a, m)| { let t = belief(&state, &a, m); ((a, m), t) }).collect();
            let before = truth.clone();

            let fresh = record_intents(&p, &mut state);
            let mut applied = Applied { totals: Totals::default(), fatal: None };
            let mut gone = false;
            // Marks the answer settles (their belief must be exact) and marks it leaves alone.
            let mut settled: Vec<(Account, Mark)> = Vec::new();
            let mut untouched: Vec<(Account, Mark)> = Vec::new();
            for (i, call) in p.calls.iter().enumerate() {
                let answer = if gone { None } else { Some(answers[i % answers.len()]) };
                let sets = call.command == Command::Set;
                let value = if sets { Truth::Present } else { Truth::Absent };
                let each = |f: &mut dyn FnMut(&Account, Mark)| {
                    for (a, marks) in &call.members {
                        for m in marks.iter() {
                            f(a, m);
                        }
                    }
                };
                let outcome = match answer {
                    None => {
                        each(&mut |a, m| untouched.push((a.clone(), m)));
                        Outcome::Skipped(Skip::GroupGone)
                    }
                    Some(Answer::Applied) => {
                        each(&mut |a, m| {
                            truth.insert((a.clone(), m), value);
                            settled.push((a.clone(), m));
                        });
                        Outcome::Done { confirmed: call.members.clone(), pending: Vec::new() }
                    }
                    Some(Answer::Offline(mask)) if sets => {
                        let (mut confirmed, mut pending) = (Vec::new(), Vec::new());
                        for (k, (a, marks)) in call.members.iter().enumerate() {
                            let away = mask & (1 << (k % 8)) != 0;
                            for m in marks.iter() {
                                // Away: an offline member holds no mark but 500 (and would
                                // have taken a 500), so a 500 left out means not a member.
                                let t = if away { Truth::Absent } else { Truth::Present };
                                truth.insert((a.clone(), m), t);
                                if !away {
                                    settled.push((a.clone(), m));
                                }
                            }
                            if away {
                                pending.push((a.clone(), marks.clone()));
                            } else {
                                confirmed.push((a.clone(), marks.clone()));
                            }
                        }
                        Outcome::Done { confirmed, pending }
                    }
                    Some(Answer::Offline(_)) => {
                        each(&mut |a, m| {
                            if !m.expires() {
                                truth.insert((a.clone(), m), Truth::Absent);
                                settled.push((a.clone(), m));
                            }
                        });
                        clear_found_offline(call)
                    }
                    Some(Answer::Refused) => {
                        each(&mut |a, m| untouched.push((a.clone(), m)));
                        Outcome::Failed(CallError::Rejected { code: 10019, info: String::new() })
                    }
                    Some(Answer::Lost) => {
                        each(&mut |a, m| {
                            let t = truth[&(a.clone(), m)].or(value);
                            truth.insert((a.clone(), m), t);
                        });
                        Outcome::Failed(CallError::Transport { attempts: 1, detail: String::new() })
                    }
                    Some(Answer::NotSent) => {
                        each(&mut |a, m| untouched.push((a.clone(), m)));
                        Outcome::Skipped(Skip::Halted)
                    }
                    Some(Answer::GroupGone) => {
                        gone = true;
                        for t in truth.values_mut() {
                            *t = Truth::Absent;
                        }
                        Outcome::GroupGone(CallError::GroupGone { code: 10010, info: String::new() })
                    }
                };
                fold(&mut state, call, &fresh[i], &outcome, NOW, &mut applied);
            }

            for ((a, m), t) in &truth {
                let b = belief(&state, a, *m);
                prop_assert!(
                    b == Truth::Either || b == *t,
                    "{a}/{m}: the state claims {b:?}, the service may be {t:?}; plan {:?}",
                    p.calls
                );
            }
            if !gone {
                for (a, m) in &settled {
                    prop_assert_eq!(belief(&state, a, *m), truth[&(a.clone(), *m)], "{}/{} settled", a, m);
                }
                for (a, m) in &untouched {
                    prop_assert_eq!(belief(&state, a, *m), before[&(a.clone(), *m)], "{}/{} untouched", a, m);
                }
            }
        }
    }
}
