//! SIGINT and SIGTERM for the one-shot commands: the first stops the work, a second exits.

use std::io::Write;

use tokio::sync::watch;

use crate::error::{Error, exit};

/// The first signal on `interrupts` (at once if one already came); never, if the sender is gone.
pub(super) async fn first_signal(interrupts: &mut watch::Receiver<Option<Interrupt>>) -> Interrupt {
    loop {
        if let Some(signal) = *interrupts.borrow_and_update() {
            return signal;
        }
        if interrupts.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The signal that interrupted an `apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// SIGINT (Ctrl-C): exit 130.
    Int,
    /// SIGTERM: exit 143.
    Term,
}

impl Interrupt {
    /// The exit code: 128 + the signal number, as a shell reports a process killed by it.
    pub fn exit_code(self) -> u8 {
        match self {
            Interrupt::Int => exit::INTERRUPTED,
            Interrupt::Term => exit::TERMINATED,
        }
    }

    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
        }
    }
}

/// Takes the state's lock for `command` (none in a dry run), waiting up to `wait`
/// (`--lock-timeout`). A signal during the wait ends it: `Err(exit code)`, nothing read or sent.
pub(super) async fn lock_unless_dry(
    session: &crate::engine::Session,
    command: &str,
    dry_run: bool,
    wait: std::time::Duration,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
) -> Result<Result<Option<Box<dyn crate::state::StoreLock>>, u8>, Error> {
    if dry_run {
        return Ok(Ok(None));
    }
    tokio::select! {
        held = session.lock(command, false, wait) => Ok(Ok(Some(held?))),
        signal = first_signal(interrupts) => Ok(Err(interrupted_waiting(signal))),
    }
}

/// Says that `signal` ended a wait for the state's lock (nothing was read or sent) and returns
/// its exit code.
fn interrupted_waiting(signal: Interrupt) -> u8 {
    let _ = writeln!(
        anstream::stderr(),
        "{}: stopped while waiting for the state's lock; nothing was sent and the state was not changed",
        signal.name()
    );
    signal.exit_code()
}

/// Installs `apply`'s SIGINT/SIGTERM handlers: the first signal is published on the returned
/// channel (the apply stops sending and saves); a second one exits the process at once with the
/// signal's code. That is safe: every mark in flight is recorded in the intents sidecar before
/// its call is sent, so the next run settles it.
pub fn apply_signals() -> Result<watch::Receiver<Option<Interrupt>>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let signal_err = |e| Error::io("cannot install signal handlers", e);
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let got = tokio::select! {
                Some(()) = int.recv() => Interrupt::Int,
                Some(()) = term.recv() => Interrupt::Term,
                else => return,
            };
            if first {
                first = false;
                let _ = tx.send(Some(got));
            } else {
                let _ = writeln!(
                    anstream::stderr(),
                    "{}: stopping at once; calls in flight are recorded as intents, the next apply settles them",
                    got.name()
                );
                std::process::exit(i32::from(got.exit_code()));
            }
        }
    });
    Ok(rx)
}
