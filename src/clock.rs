//! Where "now" comes from for the code that is allowed to read a clock.
//!
//! The pure core (planning) never reads a clock: it receives `now` as a parameter. The parts that
//! must know the time on their own (the API client deciding when its UserSig needs renewing, the
//! daemon's timers) take an `Arc<dyn Clock>`, so tests can drive time instead of waiting for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::UnixTime;

/// A source of wall-clock time in whole Unix seconds.
///
/// `Send + Sync + 'static` so one clock can be shared by every task of the process behind an `Arc`.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch, now.
    fn now(&self) -> UnixTime;
}

/// The operating system's wall clock: what production uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // A clock set before 1970 is broken; report it as negative seconds rather than panic.
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that only moves when told to: for tests (including black-box tests in `tests/`, which
/// cannot see `#[cfg(test)]` items) and for anything that simulates time.
#[derive(Debug, Default)]
pub struct ManualClock {
    /// The current time; atomic so a shared `Arc<ManualClock>` can be advanced while in use.
    now: AtomicI64,
}

impl ManualClock {
    /// A clock that reads `now` until it is changed.
    pub fn new(now: UnixTime) -> Self {
        ManualClock {
            now: AtomicI64::new(now),
        }
    }

    /// Sets the time (it may go backwards, to test how callers cope with a clock step).
    pub fn set(&self, now: UnixTime) {
        self.now.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        self.now.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2023() {
        assert!(SystemClock.now() > 1_700_000_000);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(100);
        assert_eq!(c.now(), 100);
        c.advance(5);
        assert_eq!(c.now(), 105);
        c.set(50);
        assert_eq!(c.now(), 50);
    }
}
