//! The daemon's HTTP listener: `/callback`, `/healthz`, `/readyz`, `/metrics` over its
//! readiness and role, callbacks passed to the main loop as inputs.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Input;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::Error;
use crate::http::{CallbackEvent, HttpState, Readiness};
use crate::metrics::Metrics;

/// Serves callbacks, `/healthz`, `/readyz` and `/metrics` when the config asks for it; callbacks
/// become [`Input::Callback`]s on `sender`.
pub(super) async fn start_listener(
    config: &Config,
    metrics: &Arc<Metrics>,
    clock: &Arc<dyn Clock>,
    readiness_rx: tokio::sync::watch::Receiver<Readiness>,
    role_rx: tokio::sync::watch::Receiver<crate::http::forward::Role>,
    sender: &mpsc::Sender<Input>,
) -> Result<Option<crate::http::Listener>, Error> {
    let Some(http) = config.http.clone() else {
        return Ok(None);
    };
    let (events_tx, mut events_rx) = mpsc::channel::<CallbackEvent>(1024);
    let state = HttpState {
        role: role_rx,
        ..HttpState::new(
            metrics.clone(),
            readiness_rx,
            events_tx,
            config.sdkappid,
            clock.clone(),
        )
    };
    let listener = crate::http::start(&http, state).await?;
    let callbacks = sender.clone();
    tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            if callbacks.send(Input::Callback(event)).await.is_err() {
                break;
            }
        }
    });
    Ok(Some(listener))
}
