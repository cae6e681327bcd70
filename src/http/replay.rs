//! Replay protection for signed callbacks.
//!
//! The vendor's `Sign` covers the token and `RequestTime`, not the body: a captured signed
//! callback could be sent again, with any body, for as long as its `RequestTime` is within the
//! ±60 s window. `RequestTime` is in seconds, so the service's genuine callbacks of one second
//! share one `Sign`: a signature cannot be used only once. What is used only once is each
//! presence change under it: the listener remembers, until the `RequestTime` leaves the window,
//! every (group, member, online or offline) accepted under each `(Sign, RequestTime)`, and
//! drops a repeat. A callback whose members were all seen under its signature is refused as a
//! replay. So 1,000 replays of one captured callback, whatever their bodies, cost at most one
//! re-send per member they name, once, instead of one per replay.
//!
//! Memory is bounded: entries expire with the window, each is 24 bytes (the time and a 128-bit
//! digest), and at most [`MAX_REMEMBERED`] are kept; when that many presence changes arrived
//! within two minutes, new ones are refused (loudly, counted) rather than forgetting one that
//! could then be replayed.

use std::collections::BTreeSet;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::model::UnixTime;
use crate::tim::callback::MAX_REQUEST_TIME_SKEW_SECS;

/// At most this many presence changes are remembered at once: about 2,000 a second sustained
/// over the two-minute window, in a few MiB.
pub const MAX_REMEMBERED: usize = 250_000;

/// Why a signed callback is refused here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every presence change it carries was accepted before under its signature.
    Replayed,
    /// [`MAX_REMEMBERED`] changes are still within their window.
    Full,
}

/// The presence changes accepted under each signature whose `RequestTime` is still within the
/// window, ordered by time so that expired ones are dropped from the front.
#[derive(Debug, Default)]
pub struct SeenSigns {
    /// `(RequestTime, first 16 bytes of SHA-256 over Sign, group, member, event)`.
    seen: Mutex<BTreeSet<(i64, [u8; 16])>>,
}

impl SeenSigns {
    /// Which of `members` (of `group`, going `online` or not) are new under `(sign,
    /// request_time)` at `now`, in order; the new ones are remembered. `Err(Replayed)` when none
    /// is new. The caller has checked the signature and that `request_time` is within the
    /// window of `now`.
    pub fn admit(
        &self,
        sign: &str,
        request_time: i64,
        now: UnixTime,
        group: &str,
        online: bool,
        members: &[&str],
    ) -> Result<Vec<bool>, Refused> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Anything older than the window can no longer pass the RequestTime check.
        let oldest_valid = now.saturating_sub(MAX_REQUEST_TIME_SKEW_SECS);
        while seen.first().is_some_and(|(t, _)| *t < oldest_valid) {
            seen.pop_first();
        }
        let mut fresh = BTreeSet::new();
        let new: Vec<bool> = members
            .iter()
            .map(|m| {
                let key = (request_time, digest(sign, group, m, online));
                !seen.contains(&key) && fresh.insert(key)
            })
            .collect();
        if fresh.is_empty() {
            return Err(Refused::Replayed);
        }
        if seen.len() + fresh.len() > MAX_REMEMBERED {
            return Err(Refused::Full);
        }
        seen.append(&mut fresh);
        Ok(new)
    }

    /// How many presence changes are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key of one presence change under one signature (fields separated by a byte no field
/// holds).
fn digest(sign: &str, group: &str, member: &str, online: bool) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in [sign, group, member] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.update([u8::from(online)]);
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000;

    #[test]
    fn a_change_is_accepted_once_per_signature_within_the_window() {
        let seen = SeenSigns::default();
        assert_eq!(
            seen.admit("s", T, T, "g", true, &["a", "b"]),
            Ok(vec![true, true])
        );
        // A replay naming the same members, whatever else its body says: refused.
        assert_eq!(
            seen.admit("s", T, T + 1, "g", true, &["b", "a"]),
            Err(Refused::Replayed)
        );
        assert_eq!(
            seen.admit("s", T, T + 60, "g", true, &["a"]),
            Err(Refused::Replayed)
        );
        // New members under the same signature pass, the seen ones are filtered out.
        assert_eq!(
            seen.admit("s", T, T + 1, "g", true, &["a", "c", "c"]),
            Ok(vec![false, true, false])
        );
        // Another event, group, time or signature is another change (the service's callbacks
        // of one second share their Sign).
        assert_eq!(
            seen.admit("s", T, T + 1, "g", false, &["a"]),
            Ok(vec![true])
        );
        assert_eq!(seen.admit("s", T, T + 1, "h", true, &["a"]), Ok(vec![true]));
        assert_eq!(
            seen.admit("s", T + 1, T + 1, "g", true, &["a"]),
            Ok(vec![true])
        );
        assert_eq!(seen.admit("t", T, T + 1, "g", true, &["a"]), Ok(vec![true]));
        assert_eq!(seen.len(), 7);
        // Past the window the entries expire (the RequestTime check refuses them anyway).
        assert_eq!(
            seen.admit("s", T + 62, T + 62, "g", true, &["a"]),
            Ok(vec![true])
        );
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn memory_is_capped_without_forgetting_a_live_change() {
        let seen = SeenSigns::default();
        let members: Vec<String> = (0..MAX_REMEMBERED).map(|i| i.to_string()).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        seen.admit("s", T, T, "g", true, &members).unwrap();
        assert_eq!(
            seen.admit("s", T, T, "g", true, &["one more"]),
            Err(Refused::Full)
        );
        // The first one is still remembered: never evicted to make room.
        assert_eq!(
            seen.admit("s", T, T, "g", true, &["0"]),
            Err(Refused::Replayed)
        );
        // Once the window moves on, room comes back.
        assert_eq!(
            seen.admit("s", T + 61, T + 61, "g", true, &["later"]),
            Ok(vec![true])
        );
        assert_eq!(seen.len(), 1);
    }
}
