//! What the listener logs about requests it did not choose: values taken from a request are
//! escaped ([`crate::log_escape::Escaped`]), and refusals are logged at most once per
//! [`REFUSAL_LOG_INTERVAL`] with a count of the ones not logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals are logged at most once per this interval; the others are counted and the count is
/// logged with the next one.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When the last refusal was logged and how many were not logged since.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// `(last logged, refusals not logged since)`.
    inner: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    /// Whether a refusal at `now` is logged: `Some(n)` with the `n` refusals not logged since
    /// the last logged one, or `None` (counted, not logged) within [`REFUSAL_LOG_INTERVAL`] of it.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *inner;
        match last {
            Some(t) if now.saturating_duration_since(*t) < REFUSAL_LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_count_of_the_others() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        for i in 1..1000 {
            assert_eq!(log.admit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.admit(t0 + REFUSAL_LOG_INTERVAL), Some(999));
        assert_eq!(log.admit(t0 + REFUSAL_LOG_INTERVAL), None);
        assert_eq!(log.admit(t0 + 3 * REFUSAL_LOG_INTERVAL), Some(1));
    }
}
