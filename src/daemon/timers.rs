//! The daemon's periodic inputs and how a reload changes them.

use super::interval;
use super::systemd::watchdog_period;
use crate::config::Config;

/// The periodic inputs: retry pending, reassert, refresh, watchdog.
pub(super) struct Timers {
    pub(super) retry: tokio::time::Interval,
    pub(super) reassert: tokio::time::Interval,
    pub(super) refresh: Option<tokio::time::Interval>,
    pub(super) watchdog: tokio::time::Interval,
}

impl Timers {
    pub(super) fn new(config: &Config) -> Timers {
        Timers {
            retry: interval(config.retry_pending_every),
            reassert: interval(config.reassert_every),
            refresh: config.refresh_every.map(interval),
            watchdog: interval(watchdog_period()),
        }
    }

    /// Restarts the timers whose period a reload changed.
    pub(super) fn follow(&mut self, config: &Config) {
        if self.retry.period() != config.retry_pending_every {
            self.retry = interval(config.retry_pending_every);
        }
        if self.reassert.period() != config.reassert_every {
            self.reassert = interval(config.reassert_every);
        }
        if self.refresh.as_ref().map(|i| i.period()) != config.refresh_every {
            self.refresh = config.refresh_every.map(interval);
        }
    }
}
