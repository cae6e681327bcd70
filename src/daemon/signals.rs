//! The daemon's signals: SIGHUP reloads, SIGTERM and SIGINT shut down. They arrive as [`Input`]s
//! on the loop's channel, like every other trigger.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::Input;
use crate::error::Error;

/// Installs the handlers; each signal is sent on `sender` until the loop is gone.
pub fn install(sender: mpsc::Sender<Input>) -> Result<(), Error> {
    let signal_err = |e| Error::io("cannot install signal handlers", e);
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = hup.recv() => Input::Reload,
                _ = term.recv() => Input::Shutdown,
                _ = int.recv() => Input::Shutdown,
            };
            if sender.send(input).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}
