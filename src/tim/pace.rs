//! The pace of request starts: one GCRA limiter behind a FIFO gate, a start window that is the
//! hard guarantee, and the slowdown that rate-limit answers cause (see [`crate::tim::client::Client`]
//! for the whole rule).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The largest factor by which rate-limit answers slow the limiter down (1/8 of the rate).
const MAX_SLOWDOWN: u32 = 8;
/// No window this long holds more than `max_calls_per_second` request starts: one second plus a
/// margin for network jitter between here and the server.
pub const WINDOW: Duration = Duration::from_millis(1015);

/// Repeated rate-limit answers escalate the slowdown at most this often, so a burst of answers to
/// calls that were already in flight counts as one signal, not many.
const ESCALATE_EVERY: Duration = Duration::from_secs(1);

/// The shared pace of request starts.
pub(crate) struct Pacer {
    /// Even spacing at the limit (burst 2 makes up for timer wake-up delays).
    limiter: DefaultDirectRateLimiter,
    /// Makes waiting for the limiter first come, first served (and avoids thundering herds), and
    /// holds the start times of the last `cap` requests (the window guarantee).
    gate: tokio::sync::Mutex<VecDeque<Instant>>,
    /// `max_calls_per_second`: how many starts one [`WINDOW`] may hold.
    cap: usize,
    /// How long a rate-limit answer slows requests down.
    slowdown_for: Duration,
    /// The rate-limit slowdown.
    pace: Mutex<Pace>,
}

/// The slowdown state.
#[derive(Debug)]
struct Pace {
    /// Limiter slots per request.
    factor: u32,
    /// When the factor falls back to 1.
    until: Instant,
    /// When the factor last changed, to count a burst of answers once.
    changed: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pacer {
    /// A pacer for `rate` request starts per second; `None` when the rate is too large for the
    /// limiter's period.
    pub(crate) fn new(rate: NonZeroU32, slowdown_for: Duration) -> Option<Pacer> {
        // Even spacing at the limit; the start window is the guarantee (see the client's docs).
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.get()));
        let quota =
            Quota::with_period(period)?.allow_burst(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        let now = Instant::now();
        Some(Pacer {
            limiter: RateLimiter::direct(quota),
            gate: tokio::sync::Mutex::new(VecDeque::new()),
            cap: rate.get() as usize,
            slowdown_for,
            pace: Mutex::new(Pace {
                factor: 1,
                until: now,
                changed: now,
            }),
        })
    }

    /// Waits for this request's limiter slots (several while slowed down), first come first
    /// served. Returns false, without waiting further, once `stop` says so: asked when this
    /// caller's turn comes, between slots, and when the slot is granted, so a stopped run's
    /// queued calls leave the queue at once instead of each waiting out its slot.
    pub(crate) async fn acquire(&self, stop: &(dyn Fn() -> bool + Sync)) -> bool {
        let mut starts = self.gate.lock().await;
        for _ in 0..self.factor() {
            if stop() {
                return false;
            }
            self.limiter.until_ready().await;
        }
        let cap = self.cap;
        if starts.len() >= cap
            && let Some(&oldest) = starts.front()
        {
            tokio::time::sleep_until((oldest + WINDOW).into()).await;
            starts.pop_front();
        }
        if stop() {
            return false;
        }
        starts.push_back(Instant::now());
        true
    }

    /// The current slowdown factor, falling back to 1 once the slowdown period is over.
    pub(crate) fn factor(&self) -> u32 {
        let mut p = lock(&self.pace);
        if p.factor > 1 && Instant::now() >= p.until {
            tracing::info!("no rate-limit answers for a while; back to full speed");
            p.factor = 1;
        }
        p.factor
    }

    /// Reacts to a rate-limit answer.
    pub(crate) fn slow_down(&self) {
        let now = Instant::now();
        let mut p = lock(&self.pace);
        let active = now < p.until && p.factor > 1;
        let new_factor = if !active {
            2
        } else if now.duration_since(p.changed) >= ESCALATE_EVERY {
            (p.factor * 2).min(MAX_SLOWDOWN)
        } else {
            p.factor
        };
        if new_factor != p.factor {
            tracing::warn!(
                factor = new_factor,
                "rate limited by the service; slowing down"
            );
            p.factor = new_factor;
            p.changed = now;
        }
        p.until = now + self.slowdown_for;
    }
}
