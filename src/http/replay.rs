//! Replay protection for signed callbacks.
//!
//! The vendor's `Sign` covers the token and `RequestTime`, not the body: a captured signed
//! callback could be sent again for as long as its `RequestTime` is within the ±60 s window.
//! The listener therefore remembers every accepted `(Sign, RequestTime, body)` (the body as its
//! SHA-256) until its `RequestTime` leaves the window and refuses a repeat. The body is part of
//! the key because `RequestTime` is in seconds: the service's genuine callbacks of one second
//! share one `Sign`, and refusing all but the first would lose presence events. A replay with an
//! altered body is therefore not refused here; what it can cost is bounded by the daemon
//! (re-sends triggered by callbacks are coalesced per member and paced to a share of the rate).
//!
//! Memory is bounded: entries expire with the window, and at most [`MAX_REMEMBERED`] are kept;
//! when that many signed callbacks arrived within two minutes, new ones are refused (loudly,
//! counted) rather than forgetting one that could then be replayed.

use std::collections::BTreeSet;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::model::UnixTime;
use crate::tim::callback::MAX_REQUEST_TIME_SKEW_SECS;

/// At most this many accepted signatures are remembered at once: about 800 signed callbacks a
/// second, sustained over the two-minute window (the service sends far fewer), in a few MiB.
pub const MAX_REMEMBERED: usize = 100_000;

/// Why a signed callback is refused here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// This `(Sign, RequestTime, body)` was accepted before.
    Replayed,
    /// [`MAX_REMEMBERED`] signatures are still within their window.
    Full,
}

/// The accepted callbacks whose `RequestTime` is still within the window, ordered by time so
/// that expired ones are dropped from the front.
#[derive(Debug, Default)]
pub struct SeenSigns {
    /// `(RequestTime, Sign, SHA-256 of the body)`.
    seen: Mutex<BTreeSet<(i64, String, [u8; 32])>>,
}

impl SeenSigns {
    /// Records `(sign, request_time, body)` as accepted at `now`, or says why it must be
    /// refused. The caller has checked the signature and that `request_time` is within the
    /// window of `now`.
    pub fn remember(
        &self,
        sign: &str,
        request_time: i64,
        body: &[u8],
        now: UnixTime,
    ) -> Result<(), Refused> {
        let digest: [u8; 32] = Sha256::digest(body).into();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Anything older than the window can no longer pass the RequestTime check.
        let oldest_valid = now.saturating_sub(MAX_REQUEST_TIME_SKEW_SECS);
        while seen.first().is_some_and(|(t, _, _)| *t < oldest_valid) {
            seen.pop_first();
        }
        let key = (request_time, sign.to_owned(), digest);
        if seen.contains(&key) {
            return Err(Refused::Replayed);
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(Refused::Full);
        }
        seen.insert(key);
        Ok(())
    }

    /// How many signatures are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_refused_within_the_window_and_forgotten_after_it() {
        let seen = SeenSigns::default();
        let t = 1_700_000_000;
        assert_eq!(seen.remember("abc", t, b"{}", t), Ok(()));
        assert_eq!(
            seen.remember("abc", t, b"{}", t + 1),
            Err(Refused::Replayed)
        );
        assert_eq!(
            seen.remember("abc", t, b"{}", t + 60),
            Err(Refused::Replayed)
        );
        // Another time, sign or body is another callback (the service's callbacks of one
        // second share their Sign).
        assert_eq!(seen.remember("abc", t + 1, b"{}", t + 1), Ok(()));
        assert_eq!(seen.remember("abd", t, b"{}", t + 1), Ok(()));
        assert_eq!(seen.remember("abc", t, b"{ }", t + 1), Ok(()));
        assert_eq!(seen.len(), 4);
        // Past the window the entries expire (the RequestTime check refuses them anyway).
        assert_eq!(seen.remember("new", t + 62, b"{}", t + 62), Ok(()));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn memory_is_capped_without_forgetting_a_live_signature() {
        let seen = SeenSigns::default();
        let t = 1_700_000_000;
        for i in 0..MAX_REMEMBERED {
            seen.remember("s", t, i.to_string().as_bytes(), t).unwrap();
        }
        assert_eq!(seen.remember("s", t, b"one more", t), Err(Refused::Full));
        // The first one is still remembered: never evicted to make room.
        assert_eq!(seen.remember("s", t, b"0", t), Err(Refused::Replayed));
        // Once the window moves on, room comes back.
        assert_eq!(seen.remember("s", t + 61, b"later", t + 61), Ok(()));
        assert_eq!(seen.len(), 1);
    }
}
