//! Standby daemons (SPEC 11): `run` on several hosts with one remote state. The daemon that
//! holds the state's lock acts; the others wait here. A standby makes no round and sends no call:
//! it reads its desired files at start and whenever they change (so `/readyz` says whether they
//! load), answers `/readyz` with `standby`, relays callbacks to the active daemon (whose address is in the lock), keeps
//! systemd's watchdog fed, and tries for the lock again and again. The store's lock takes over a
//! holder only after seeing its lock unchanged for `lock_ttl` on this process's clock.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::systemd::{notify, watchdog_period};
use super::watch::FileWatch;
use super::{Daemon, Input, schedule};
use crate::config::Config;
use crate::desired::cache::{DesiredCache, Refresh};
use crate::engine;
use crate::error::Error;
use crate::http::Readiness;
use crate::http::forward::Role;
use crate::metrics::Metrics;
use crate::state::{self, LockHolder, StateError, StateStore, StoreLock};

/// What waiting for the lock came to.
pub(super) enum Lead {
    /// This daemon holds the lock: it acts. `took_over`: it stood by first, and took the lock
    /// over from a daemon that stopped renewing it.
    Taken {
        /// The lock.
        lock: Box<dyn StoreLock>,
        /// Whether it stood by first.
        took_over: bool,
    },
    /// A signal came while standing by: exit.
    Stopped,
}

/// What a standby watches and reports while it waits: its readiness and role (for the
/// listener), its desired files (through `files`, which it restarts when git-sync re-points the
/// path), and its inputs.
pub(super) struct Waiting<'a> {
    pub(super) readiness: &'a watch::Sender<Readiness>,
    pub(super) role: &'a watch::Sender<Role>,
    pub(super) files: &'a mut FileWatch,
    pub(super) sender: &'a mpsc::Sender<Input>,
    pub(super) inputs: &'a mut mpsc::Receiver<Input>,
}

/// Takes the state's lock, standing by while another daemon holds it. `address` is where peers
/// reach this daemon's listener (`--advertise`, else the bound address), recorded in the lock so
/// that a standby can relay callbacks here.
pub(super) async fn lead(
    config: &Config,
    lock_timeout: std::time::Duration,
    metrics: &Metrics,
    address: Option<String>,
    waiting: Waiting<'_>,
) -> Result<Lead, Error> {
    let Waiting {
        readiness,
        role,
        files,
        sender,
        inputs,
    } = waiting;
    let store = state::open(&config.state, config.state_store.as_ref())?;
    let mut request = engine::lock_request(config, "run", true, lock_timeout);
    request.address = address;
    let holder = match store.lock(&request).await {
        Ok(lock) => {
            return Ok(Lead::Taken {
                lock,
                took_over: false,
            });
        }
        Err(StateError::HeldBy { holder, .. }) => holder,
        Err(e) => return Err(e.into()),
    };
    metrics.set_leader(false);
    // A standby whose desired files do not load is not ready to take over: it reads them now
    // and again whenever they change (the daemon's incremental reader: only changed files are
    // parsed again), so that its readiness follows them (a rolling update waits for it). The
    // daemon reads them afresh when it takes over.
    // Files that could not be read (not parse: `EMFILE`, a rename in progress) are read again
    // on the daemon's backoff, since no file event may come to say they can be now.
    let mut desired = DesiredCache::new(config.desired.clone(), config.max_alias_pairs);
    let mut reread = schedule::Backoff::new(super::REREAD_FIRST, super::REREAD_MAX);
    // The problems, if the files do not load, and when to read them again, if they could not
    // be read.
    let mut read_desired = || {
        let problems = match desired.refresh() {
            Refresh::Broken(problems) => {
                tracing::error!("standby: the desired files do not load:\n{problems}");
                Some(problems.location_summary())
            }
            Refresh::Unchanged | Refresh::Changed(_) => None,
        };
        let again = if desired.last_unreadable {
            Some(tokio::time::Instant::now() + reread.next_wait())
        } else {
            reread.reset();
            None
        };
        (problems, again)
    };
    let (mut problems, mut reread_at) = read_desired();
    let mut active: Option<LockHolder> = None;
    let mut publish = |holder: &LockHolder, problems: &Option<String>| {
        let line = format!(
            "`{}` (pid {} on {}) is active",
            holder.command, holder.pid, holder.host
        );
        if active.as_ref().is_none_or(|a| a.id != holder.id) {
            tracing::info!("standby: {line}; taking over if its lease runs out");
            active = Some(holder.clone());
        }
        notify(&[sd_notify::NotifyState::Status(&format!("standby: {line}"))]);
        role.send_replace(Role::Standby {
            active: holder.address.clone(),
        });
        readiness.send_replace(Readiness {
            desired_ok: problems.is_none(),
            last_reconcile_ok: false,
            detail: match problems {
                None => String::new(),
                Some(at) => format!(
                    "standby ({line}), not ready to take over: desired files do not parse: {at} \
                     (every problem, with its source line, is in the log)"
                ),
            },
            standby: Some(line),
        });
    };
    publish(&holder, &problems);
    let mut holder = holder;
    notify(&[sd_notify::NotifyState::Ready]);
    // Each attempt waits long enough to see a dead holder's lock unchanged for `lock_ttl`.
    request.wait = config.lock_ttl * 2;
    let attempt = |store: Arc<dyn StateStore>, request: state::LockRequest| {
        tokio::spawn(async move { store.lock(&request).await })
    };
    let mut pending = attempt(store.clone(), request.clone());
    let mut watchdog = tokio::time::interval(watchdog_period());
    loop {
        tokio::select! {
            input = inputs.recv() => match input {
                Some(Input::Shutdown) | None => {
                    pending.abort();
                    tracing::info!("standby: shutting down");
                    return Ok(Lead::Stopped);
                }
                Some(Input::FilesChanged) => {
                    (problems, reread_at) = read_desired();
                    publish(&holder, &problems);
                    // git-sync re-pointed the desired path: watch the new checkout.
                    files.follow(&config.desired, config.debounce, sender);
                }
                // Reloads, timers and callbacks' rounds mean nothing to a standby: it reads the
                // config again when it takes over.
                Some(_) => {}
            },
            _ = watchdog.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
            () = super::sleep_until_opt(reread_at) => {
                (problems, reread_at) = read_desired();
                publish(&holder, &problems);
            }
            done = &mut pending => match done {
                Ok(Ok(held)) => {
                    tracing::warn!("standby: took over the state's lock; this daemon now acts");
                    return Ok(Lead::Taken { lock: held, took_over: true });
                }
                Ok(Err(StateError::HeldBy { holder: now, .. })) => {
                    holder = now;
                    publish(&holder, &problems);
                    pending = attempt(store.clone(), request.clone());
                }
                Ok(Err(e)) => {
                    tracing::warn!("standby: cannot read the state's lock: {e}; trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    pending = attempt(store.clone(), request.clone());
                }
                Err(e) => return Err(Error::io("standby", std::io::Error::other(e.to_string()))),
            },
        }
    }
}

/// Watches a remote state's lease while the daemon acts: when it was lost, or is about to end
/// without renewal (the store stopped answering), no call starts any more (the stop flag every
/// attempt checks), and the daemon shuts down with an error, so that its supervisor restarts it
/// as a standby and the daemon that took over acts alone. Returns the flag that says so.
pub(super) fn watch_the_lease(
    daemon: &Daemon,
    sender: &mpsc::Sender<Input>,
) -> Arc<std::sync::atomic::AtomicBool> {
    let Some(lock) = daemon
        .lock
        .as_ref()
        .filter(|l| l.lease_deadline().is_some())
    else {
        return Arc::new(std::sync::atomic::AtomicBool::new(false));
    };
    let margin = engine::lease_margin(&daemon.session.config);
    watch_lease(
        Arc::downgrade(lock),
        margin,
        daemon.stop.clone(),
        sender.clone(),
    )
}

/// [`watch_the_lease`]'s task. It holds the lock weakly, and never across an await: the daemon's
/// own reference must be the last, so that the lock is released (or let expire) by the daemon
/// while the runtime runs. Dropped last by this task, after the daemon let go of it at shutdown,
/// its release waited on a runtime that was shutting down, and the process never exited.
fn watch_lease(
    lock: std::sync::Weak<dyn StoreLock>,
    margin: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    sender: mpsc::Sender<Input>,
) -> Arc<std::sync::atomic::AtomicBool> {
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = lost.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (was_lost, ending) = {
                let Some(lock) = lock.upgrade() else { return };
                let ending = lock.lease_deadline().is_some_and(|d| {
                    d.saturating_duration_since(tokio::time::Instant::now()) < margin
                });
                (lock.lost(), ending)
            };
            if was_lost || ending {
                stop.store(true, Ordering::SeqCst);
                flag.store(true, Ordering::SeqCst);
                tracing::error!(
                    "the state's lease {}: no call starts any more; stopping so that a standby acts",
                    if was_lost {
                        "was lost"
                    } else {
                        "is about to end without renewal"
                    }
                );
                let _ = sender.send(Input::Shutdown).await;
                exit_if_stuck();
                return;
            }
        }
    });
    lost
}

/// How long a daemon that lost its lease may take to stop (its calls in flight, its last save
/// and its lock's release are each bounded, well within this).
const STEP_DOWN_LIMIT: Duration = Duration::from_secs(90);

/// A backstop for a daemon stepping down: it no longer acts, and its supervisor restarts it as a
/// standby only once it has exited; so if anything in its shutdown hangs, it exits anyway after
/// [`STEP_DOWN_LIMIT`], saying so.
fn exit_if_stuck() {
    std::thread::spawn(|| {
        std::thread::sleep(STEP_DOWN_LIMIT);
        tracing::error!(
            "this daemon lost the state's lease {} s ago and has not stopped yet; exiting now",
            STEP_DOWN_LIMIT.as_secs()
        );
        std::process::exit(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease that is about to end.
    #[derive(Debug)]
    struct Ending;

    impl StoreLock for Ending {
        fn lease_deadline(&self) -> Option<tokio::time::Instant> {
            Some(tokio::time::Instant::now())
        }
        fn lost(&self) -> bool {
            false
        }
    }

    /// The watcher tells the daemon to stop while its input queue is full (the send waits):
    /// meanwhile it must not hold the lock, or the daemon's drop of it at shutdown would not be
    /// the last, and the lock's release would run in this task as the runtime shuts down (the
    /// process then never exited).
    #[tokio::test]
    async fn the_lease_watcher_holds_no_lock_while_it_tells_the_daemon_to_stop() {
        let lock: Arc<dyn StoreLock> = Arc::new(Ending);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sender, inputs) = mpsc::channel(1);
        sender.try_send(Input::Reassert).unwrap();
        let lost = watch_lease(
            Arc::downgrade(&lock),
            Duration::from_secs(5),
            stop.clone(),
            sender,
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the watcher sees the lease ending");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lost.load(Ordering::SeqCst));
        assert_eq!(
            Arc::strong_count(&lock),
            1,
            "the daemon's reference is the only one while the watcher waits to send"
        );
        // Never drained nor dropped: the watcher's send stays pending, so it never reaches the
        // step-down backstop (which would end this test process).
        std::mem::forget(inputs);
    }
}
