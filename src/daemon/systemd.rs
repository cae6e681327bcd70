//! systemd's notify protocol: READY, STATUS, STOPPING, WATCHDOG and EXTEND_TIMEOUT_USEC. Outside
//! systemd (no `$NOTIFY_SOCKET`) every call is a no-op.

use std::time::Duration;

/// Half the systemd watchdog period, or an hour when there is no watchdog.
pub fn watchdog_period() -> Duration {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Duration::from_micros(usec / 2)
    } else {
        Duration::from_secs(3600)
    }
}

/// Sends `state` to systemd; a failure is logged at debug level only (systemd may be absent).
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify: {e}");
    }
}
