//! What the emulator counts about service calls (totals, the busiest one-second window, a call
//! log), its rate limit, and the faults a test asked it to inject.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The sliding window of the rate limit and of the busiest-second statistic.
const WINDOW: Duration = Duration::from_secs(1);
/// The call log keeps this many most recent calls, so a long demo cannot grow it without bound.
const LOG_CAP: usize = 100_000;

/// What an injected fault does to a service call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer HTTP 200 with `ActionStatus` FAIL and this `ErrorCode` (10002, 60018, 70001, ...).
    ErrorCode {
        /// The error code to return.
        code: i64,
    },
    /// Answer with this HTTP status and a gateway-style text body, as a load balancer would.
    HttpStatus {
        /// The status, e.g. 502.
        status: u16,
    },
    /// Delay the call by this many milliseconds, then proceed (other faults may still apply).
    Latency {
        /// The delay.
        ms: u64,
    },
    /// Close the TCP connection without sending any response byte.
    DropConnection,
    /// `get_members` only: answer the page cut short (a random part of it, possibly none) with
    /// `NextTimestamp` 0, exactly as if the listing ended there. A client cannot tell it from
    /// the real end. Other calls are not hit.
    ShortPage,
}

fn one() -> f64 {
    1.0
}

/// A fault rule: what to inject, how often, how many times, on which calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// What to inject.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// The probability that a matching call is hit, 0 to 1; 1 makes the fault deterministic.
    #[serde(default = "one")]
    pub rate: f64,
    /// Stop after hitting this many calls; `None` = forever (until cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Only calls whose path ends with this (`modify_user_info`, `get_members`); `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Apply the call to the emulated state first, then fail the response: the "the change
    /// happened but the answer was lost" case that tests idempotent retries. For latency: apply
    /// the call at once and delay only the answer, so a client killed while it waits leaves a
    /// change on the service that it never saw confirmed.
    #[serde(default)]
    pub after: bool,
}

impl Fault {
    /// A fault hitting every service call until cleared.
    pub fn always(kind: FaultKind) -> Self {
        Fault {
            kind,
            rate: 1.0,
            count: None,
            path: None,
            after: false,
        }
    }

    /// Checks the values a JSON caller could get wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(format!("rate {} is not between 0 and 1", self.rate));
        }
        if let FaultKind::HttpStatus { status } = self.kind
            && !(100..=599).contains(&status)
        {
            return Err(format!("status {status} is not an HTTP status"));
        }
        Ok(())
    }
}

/// A fault rule and how often it fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultState {
    /// Identifies the rule in listings.
    pub id: u64,
    /// The rule.
    #[serde(flatten)]
    pub fault: Fault,
    /// How many calls it hit so far.
    pub hits: u64,
}

/// What the faults decided for one call.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    /// Total injected delay before the call is handled.
    pub latency: Duration,
    /// Total injected delay after the call is handled, before the answer is sent.
    pub latency_after: Duration,
    /// The failure to inject, and whether after applying the call.
    pub failure: Option<(FaultKind, bool)>,
}

/// The active fault rules.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<FaultState>,
    next_id: u64,
}

impl Faults {
    pub(crate) fn add(&mut self, fault: Fault) -> u64 {
        self.next_id += 1;
        self.rules.push(FaultState {
            id: self.next_id,
            fault,
            hits: 0,
        });
        self.next_id
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn list(&self) -> Vec<FaultState> {
        self.rules.clone()
    }

    /// Rolls every rule for a call to `path`. Latencies add up; the first failure that hits wins
    /// and later failure rules are not rolled (their counts are not consumed).
    pub(crate) fn roll(&mut self, path: &str) -> FaultPlan {
        let mut plan = FaultPlan::default();
        for rule in &mut self.rules {
            let f = &rule.fault;
            let is_latency = matches!(f.kind, FaultKind::Latency { .. });
            if plan.failure.is_some() && !is_latency {
                continue;
            }
            if f.path.as_deref().is_some_and(|p| !path.ends_with(p)) {
                continue;
            }
            if f.kind == FaultKind::ShortPage && !path.ends_with("get_members") {
                continue;
            }
            if f.count.is_some_and(|max| rule.hits >= max) {
                continue;
            }
            // random() is in [0, 1): rate 1 always hits, rate 0 never does.
            if rand::random::<f64>() >= f.rate {
                continue;
            }
            rule.hits += 1;
            match &f.kind {
                FaultKind::Latency { ms } => {
                    let delay = if f.after {
                        &mut plan.latency_after
                    } else {
                        &mut plan.latency
                    };
                    *delay = delay.saturating_add(Duration::from_millis(*ms));
                }
                other => plan.failure = Some((other.clone(), f.after)),
            }
        }
        plan
    }
}

/// One service call in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Real unix time of arrival, in milliseconds.
    pub at_ms: i64,
    /// The request path without the leading `/`.
    pub path: String,
    /// The HTTP status sent; 0 when the connection was dropped.
    pub http_status: u16,
    /// The body's `ErrorCode`, when a JSON body was sent.
    pub error_code: Option<i64>,
}

/// Call statistics as the control API reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Service calls received (every one, refused or not).
    pub calls_total: u64,
    /// Service calls received, by path.
    pub calls_by_path: BTreeMap<String, u64>,
    /// The most calls received in any one-second sliding window: what a client's rate limiter
    /// must keep at or below the service's limit.
    pub max_calls_in_any_second: u64,
    /// How many responses carried each non-zero `ErrorCode`.
    pub errors_by_code: BTreeMap<i64, u64>,
    /// The most recent calls, oldest first (only when asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<CallRecord>>,
}

/// Counters, windows and the log.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    stats: Stats,
    /// Arrivals in the last second, for the busiest-second statistic.
    arrivals: VecDeque<Instant>,
    /// Calls admitted by the rate limit in the last second.
    admitted: VecDeque<Instant>,
    log: VecDeque<CallRecord>,
}

fn trim(window: &mut VecDeque<Instant>, now: Instant) {
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        window.pop_front();
    }
}

impl Traffic {
    /// Counts an arriving call.
    pub(crate) fn arrive(&mut self, path: &str, now: Instant) {
        self.stats.calls_total += 1;
        *self.stats.calls_by_path.entry(path.to_owned()).or_insert(0) += 1;
        trim(&mut self.arrivals, now);
        self.arrivals.push_back(now);
        let in_window = self.arrivals.len() as u64;
        self.stats.max_calls_in_any_second = self.stats.max_calls_in_any_second.max(in_window);
    }

    /// Whether the call may proceed under a limit of `max` calls in any one-second window.
    /// Refused calls do not use up the budget, so a client that backs off recovers at once.
    pub(crate) fn admit(&mut self, max: u32, now: Instant) -> bool {
        trim(&mut self.admitted, now);
        if self.admitted.len() >= max as usize {
            return false;
        }
        self.admitted.push_back(now);
        true
    }

    /// Logs a finished call.
    pub(crate) fn record(&mut self, rec: CallRecord) {
        if let Some(code) = rec.error_code.filter(|c| *c != 0) {
            *self.stats.errors_by_code.entry(code).or_insert(0) += 1;
        }
        if self.log.len() >= LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(rec);
    }

    pub(crate) fn stats(&self, with_log: bool) -> Stats {
        let mut s = self.stats.clone();
        if with_log {
            s.log = Some(self.log.iter().cloned().collect());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_second_and_admission_use_a_sliding_window() {
        let mut t = Traffic::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut admitted = 0;
        for i in 0..6 {
            t.arrive("p", ms(i * 300));
            admitted += u32::from(t.admit(3, ms(i * 300)));
        }
        // Arrivals at 0, 300, 600, 900 fall in one second; 1200 pushes 0 out.
        assert_eq!(t.stats(false).max_calls_in_any_second, 4);
        assert_eq!(
            admitted, 5,
            "the call at 900 ms is refused, the one at 1200 is not"
        );
    }

    #[test]
    fn faults_honour_rate_count_and_path() {
        let mut f = Faults::default();
        f.add(Fault {
            count: Some(2),
            path: Some("get_members".into()),
            ..Fault::always(FaultKind::ErrorCode { code: 10002 })
        });
        f.add(Fault {
            rate: 0.0,
            ..Fault::always(FaultKind::DropConnection)
        });
        f.add(Fault::always(FaultKind::Latency { ms: 5 }));
        assert!(f.roll("v4/x/modify_user_info").failure.is_none());
        for _ in 0..2 {
            let p = f.roll("v4/x/get_members");
            assert_eq!(
                p.failure,
                Some((FaultKind::ErrorCode { code: 10002 }, false))
            );
            assert_eq!(p.latency, Duration::from_millis(5));
        }
        assert!(f.roll("v4/x/get_members").failure.is_none());
        assert_eq!(f.list()[0].hits, 2);
    }

    #[test]
    fn short_pages_hit_listings_only() {
        let mut f = Faults::default();
        f.add(Fault::always(FaultKind::ShortPage));
        assert!(f.roll("v4/x/modify_user_info").failure.is_none());
        assert_eq!(
            f.roll("v4/x/get_members").failure,
            Some((FaultKind::ShortPage, false))
        );
        assert_eq!(f.list()[0].hits, 1);
    }
}
