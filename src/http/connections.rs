//! The listener's open connections: which new connection is let in, which open one is closed to
//! make room for it, and which request may enter a handler. The accept loop and the
//! connections' tasks share one [`Connections`]; it does no IO, and the accept loop never waits
//! on it (a connection let in in place of an evicted one waits in its own task for that one's
//! socket to close), so that a flood cannot slow accepting down until the backlog overflows.
//!
//! A flood of connections must not starve the real clients, so:
//! - each peer address (an IPv4 address, an IPv6 /64) holds at most
//!   [`Limits::max_per_peer`](super::Limits::max_per_peer) connections: a peer at its cap makes
//!   room among its own connections, never among anyone else's;
//! - when every place is taken, a new connection may replace one of its own peer's, or one of
//!   a peer holding more connections than its own: a flood spread over many addresses cannot
//!   push out a client that holds a few. The victim is a connection with no request in a
//!   handler that never completed a request, before an idle kept-alive one that did; within
//!   each kind, one of the peer holding the most connections, then the oldest;
//! - a request in a handler is never evicted, and requests other than probes (`GET`/`HEAD`
//!   `/healthz`, `/readyz`) fill at most `max_connections - reserved_for_probes` places at once:
//!   the rest stay evictable, so a probe or a new client always finds room. Half of that
//!   reserve may also take the request of a peer that has none in a handler, so that slow
//!   requests from a few busy addresses cannot shut a quiet client's callbacks out.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long admission waits for an evicted connection to close its socket.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Who a connection counts against for [`Connections`]' per-peer cap: an IPv4 address (an
/// IPv4-mapped IPv6 one too), or the /64 of an IPv6 address, which one host usually holds whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Peer(IpAddr);

impl Peer {
    /// The peer of a connection from `ip`.
    pub(super) fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Peer(IpAddr::V6(prefix.into()))
            }
            v4 => Peer(v4),
        }
    }
}

/// Why a new connection was not let in; it is closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its peer is at its cap and every one of the peer's connections has a request in a handler.
    PeerBusy,
    /// Every place is taken by a connection with a request in a handler, or too many new
    /// connections already wait for evicted ones to close.
    AllBusy,
    /// The connection it replaced did not close within [`EVICTION_WAIT`].
    EvictionTooSlow,
}

/// The open connections, by admission order.
pub(super) struct Connections {
    /// One permit per connection that may be open; a [`Slot`] holds one until its socket is
    /// closed, so open sockets never exceed the cap.
    permits: Arc<Semaphore>,
    /// Connections one peer may hold.
    max_per_peer: usize,
    /// Requests other than probes that may be in a handler at once.
    max_busy: usize,
    /// The same for the request of a peer that has none in a handler.
    max_busy_quiet: usize,
    /// Requests other than probes in a handler now (changed under the `open` lock).
    busy: AtomicUsize,
    /// New connections that may wait at once for an evicted one to close: open sockets never
    /// exceed the cap plus this.
    max_waiting: usize,
    /// New connections waiting now.
    waiting: AtomicUsize,
    /// The connections that may still be evicted, and how many each peer holds.
    open: Mutex<Open>,
    /// The next connection's id.
    next: AtomicU64,
}

/// [`Connections::open`].
#[derive(Default)]
struct Open {
    /// By id, which is admission order. An evicted connection leaves at once, before its
    /// socket is closed.
    conns: BTreeMap<u64, Arc<ConnState>>,
    /// Entries of `conns` per peer (no zero counts).
    per_peer: HashMap<Peer, usize>,
    /// Requests other than probes in a handler per peer (no zero counts).
    busy_per_peer: HashMap<Peer, usize>,
}

/// What [`Connections`] knows of one open connection.
pub(super) struct ConnState {
    /// Who it counts against.
    peer: Peer,
    /// Its requests in a handler now.
    busy: AtomicUsize,
    /// A request of it has been answered: a real client's kept-alive connection rather than a
    /// connection that only ever takes a place.
    served: AtomicBool,
    /// Notified when it must close at once to make room.
    pub(super) evict: Notify,
}

/// A connection let in by [`Connections::admit`]; [`Entry::slot`] gives it its place.
pub(super) struct Entry {
    /// The set.
    set: Arc<Connections>,
    /// Who it counts against.
    peer: Peer,
    /// Its place when one was free; else it waits for an evicted connection's.
    permit: Option<OwnedSemaphorePermit>,
    /// Held while it waits.
    _waiting: Option<Waiting>,
}

/// Counts an [`Entry`] in `Connections::waiting` until dropped.
struct Waiting(Arc<Connections>);

/// A connection's place in [`Connections`]; given back on drop, which must come after its
/// socket is closed.
pub(super) struct Slot {
    /// Its key in `Open::conns`.
    id: u64,
    /// Shared with the set and the connection's requests.
    pub(super) state: Arc<ConnState>,
    /// The set.
    set: Arc<Connections>,
    /// Given back on drop.
    _permit: OwnedSemaphorePermit,
}

/// Marks a connection busy while one of its requests is in a handler; marks it served when
/// dropped.
pub(super) struct Busy {
    /// The connection.
    conn: Arc<ConnState>,
    /// The set, when the request counts against [`Connections::max_busy`] (not a probe).
    counted: Option<Arc<Connections>>,
}

impl Connections {
    /// An empty set of at most `max` connections (at least 1), `max_per_peer` per peer (at
    /// least 1), of which `reserved_for_probes` (capped so that one request can still be
    /// served) are never filled by requests other than probes; an eighth of `max` (at least
    /// one) may wait at once for an evicted connection to close.
    pub(super) fn new(max: usize, max_per_peer: usize, reserved_for_probes: usize) -> Self {
        let max = max.max(1);
        Connections {
            permits: Arc::new(Semaphore::new(max)),
            max_per_peer: max_per_peer.max(1),
            max_busy: max.saturating_sub(reserved_for_probes).max(1),
            max_busy_quiet: max.saturating_sub(reserved_for_probes / 2).max(1),
            busy: AtomicUsize::new(0),
            max_waiting: (max / 8).max(1),
            waiting: AtomicUsize::new(0),
            open: Mutex::new(Open::default()),
            next: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets in a connection just accepted from `ip`, or not; never waits. A peer at its cap
    /// first makes room among its own connections (the evicted one keeps its permit until its
    /// socket is closed); when every place is taken, a [`victim`] is evicted and the new
    /// connection takes its place once its socket is closed ([`Entry::slot`]).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Entry, Refused> {
        let peer = Peer::of(ip);
        {
            let mut open = self.lock();
            if open.per_peer.get(&peer).copied().unwrap_or(0) >= self.max_per_peer
                && !open.evict(peer, true)
            {
                return Err(Refused::PeerBusy);
            }
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Entry {
                set: self.clone(),
                peer,
                permit: Some(permit),
                _waiting: None,
            });
        }
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_waiting).then_some(n + 1)
            })
            .map_err(|_| Refused::AllBusy)?;
        let waiting = Waiting(self.clone());
        if !self.lock().evict(peer, false) {
            return Err(Refused::AllBusy);
        }
        Ok(Entry {
            set: self.clone(),
            peer,
            permit: None,
            _waiting: Some(waiting),
        })
    }

    /// Lets a request of `conn` into its handler: always a probe, another request only while
    /// fewer than the set's `max_busy` are in one, or `max_busy_quiet` when its peer has none
    /// in one (`None`: answer it "busy" instead).
    pub(super) fn enter(self: &Arc<Self>, conn: &Arc<ConnState>, probe: bool) -> Option<Busy> {
        let counted = if probe {
            None
        } else {
            let mut open = self.lock();
            let limit = if open.busy_per_peer.contains_key(&conn.peer) {
                self.max_busy
            } else {
                self.max_busy_quiet
            };
            if self.busy.load(Ordering::Acquire) >= limit {
                return None;
            }
            self.busy.fetch_add(1, Ordering::AcqRel);
            *open.busy_per_peer.entry(conn.peer).or_insert(0) += 1;
            Some(self.clone())
        };
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Some(Busy {
            conn: conn.clone(),
            counted,
        })
    }
}

impl Entry {
    /// The connection's place: at once when one was free, else once the connection evicted for
    /// it has closed its socket (within [`EVICTION_WAIT`]).
    pub(super) async fn slot(self) -> Result<Slot, Refused> {
        let permit = match self.permit {
            Some(p) => p,
            None => tokio::time::timeout(EVICTION_WAIT, self.set.permits.clone().acquire_owned())
                .await
                .map_err(|_| Refused::EvictionTooSlow)?
                .map_err(|_| Refused::EvictionTooSlow)?,
        };
        let id = self.set.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            peer: self.peer,
            busy: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            evict: Notify::new(),
        });
        self.set.lock().insert(id, state.clone());
        Ok(Slot {
            id,
            state,
            set: self.set,
            _permit: permit,
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slot {
    /// [`Connections::enter`] for a request of this connection.
    pub(super) fn enter(&self, probe: bool) -> Option<Busy> {
        self.set.enter(&self.state, probe)
    }
}

impl Open {
    fn insert(&mut self, id: u64, c: Arc<ConnState>) {
        *self.per_peer.entry(c.peer).or_insert(0) += 1;
        self.conns.insert(id, c);
    }

    fn remove(&mut self, id: u64) -> Option<Arc<ConnState>> {
        let c = self.conns.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&c.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&c.peer);
            }
        }
        Some(c)
    }

    /// Tells the [`victim`] for a new connection of `newcomer` to close (among `newcomer`'s own
    /// connections only, when `only_own`); false when there is none.
    fn evict(&mut self, newcomer: Peer, only_own: bool) -> bool {
        let holds = self.per_peer.get(&newcomer).copied().unwrap_or(0);
        let candidates = self
            .conns
            .iter()
            .filter(|(_, c)| !only_own || c.peer == newcomer)
            .map(|(id, c)| Candidate {
                id: *id,
                busy: c.busy.load(Ordering::Acquire) > 0,
                served: c.served.load(Ordering::Acquire),
                own: c.peer == newcomer,
                held: self.per_peer.get(&c.peer).copied().unwrap_or(0),
            });
        let Some(id) = victim(candidates, holds) else {
            return false;
        };
        match self.remove(id) {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One connection as [`victim`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    /// Admission order.
    id: u64,
    /// A request of it is in a handler: never evicted.
    busy: bool,
    /// A request of it has been answered.
    served: bool,
    /// It is of the new connection's peer.
    own: bool,
    /// Connections its peer holds.
    held: usize,
}

/// Which connection to close to make room for a new one whose peer `holds` connections: one
/// with no request in a handler, of the new one's peer or of a peer holding more; among those,
/// one that never completed a request before one that did; then one of the peer holding the
/// most connections; then the oldest. `None` when there is none.
fn victim(candidates: impl IntoIterator<Item = Candidate>, holds: usize) -> Option<u64> {
    candidates
        .into_iter()
        .filter(|c| !c.busy && (c.own || c.held > holds))
        .min_by_key(|c| (c.served, std::cmp::Reverse(c.held), c.id))
        .map(|c| c.id)
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.set.lock().remove(self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.served.store(true, Ordering::Release);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
        if let Some(set) = &self.counted {
            let mut open = set.lock();
            set.busy.fetch_sub(1, Ordering::AcqRel);
            if let Some(n) = open.busy_per_peer.get_mut(&self.conn.peer) {
                *n -= 1;
                if *n == 0 {
                    open.busy_per_peer.remove(&self.conn.peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection of another peer than the new one's.
    fn c(id: u64, busy: bool, served: bool, held: usize) -> Candidate {
        Candidate {
            id,
            busy,
            served,
            own: false,
            held,
        }
    }

    /// For a new connection of a peer that holds nothing yet.
    fn victim(candidates: impl IntoIterator<Item = Candidate>) -> Option<u64> {
        super::victim(candidates, 0)
    }

    #[test]
    fn a_peer_replaces_its_own_or_those_of_a_peer_holding_more_never_a_smaller_one() {
        let client_kept_alive = c(1, false, true, 2);
        let client_probe = c(2, false, false, 2);
        let own = Candidate {
            own: true,
            ..c(3, false, false, 30)
        };
        let bigger = c(4, false, false, 31);
        // An attacker's address holding 30: its own oldest idle one, or a bigger address's,
        // never the client's.
        assert_eq!(
            super::victim([client_kept_alive, client_probe, own, bigger], 30),
            Some(4)
        );
        assert_eq!(
            super::victim([client_kept_alive, client_probe, own], 30),
            Some(3)
        );
        assert_eq!(super::victim([client_kept_alive, client_probe], 30), None);
        // The client (holding 2) may replace the attacker's.
        assert_eq!(
            super::victim([client_kept_alive, client_probe, c(3, false, true, 30)], 2),
            Some(3)
        );
    }

    #[test]
    fn the_victim_never_completed_a_request_before_a_kept_alive_one_did() {
        // The kept-alive connection is the oldest; the flood's newer idle ones go first.
        let conns = [
            c(1, false, true, 1),
            c(2, false, false, 1),
            c(3, false, false, 1),
        ];
        assert_eq!(victim(conns), Some(2));
        // Only kept-alive ones left: the oldest.
        assert_eq!(
            victim([c(4, false, true, 1), c(5, false, true, 1)]),
            Some(4)
        );
        // Busy ones never.
        assert_eq!(victim([c(1, true, false, 1), c(2, true, true, 1)]), None);
        assert_eq!(
            victim([c(1, true, false, 1), c(2, false, true, 1)]),
            Some(2)
        );
        assert_eq!(victim([]), None);
    }

    #[test]
    fn within_a_kind_the_peer_holding_the_most_goes_first() {
        let conns = [
            c(1, false, false, 1),
            c(2, false, false, 9),
            c(3, false, false, 9),
        ];
        assert_eq!(victim(conns), Some(2));
        // A never-served connection of a small peer still goes before a served one of a big one.
        assert_eq!(
            victim([c(1, false, true, 9), c(2, false, false, 1)]),
            Some(2)
        );
    }

    #[test]
    fn ipv6_peers_are_grouped_by_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Peer::of(a), Peer::of(b));
        assert_ne!(Peer::of(a), Peer::of(other));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(Peer::of(mapped), Peer::of("127.0.0.2".parse().unwrap()));
        assert_ne!(
            Peer::of("127.0.0.1".parse().unwrap()),
            Peer::of("127.0.0.2".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_peer_at_its_cap_makes_room_among_its_own_connections_only() {
        let set = Arc::new(Connections::new(8, 2, 0));
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let real = take(&set, client).await;
        let first = take(&set, attacker).await;
        let _second = take(&set, attacker).await;
        // The third of the attacker's evicts its own oldest, not the client's older connection.
        let _third = take(&set, attacker).await;
        assert!(
            futures_ready(first.state.evict.notified()),
            "the attacker's oldest is told to close"
        );
        assert!(!futures_ready(real.state.evict.notified()));
        // All of a peer's connections busy: its next one is refused, others still get in.
        let set = Arc::new(Connections::new(8, 1, 0));
        let busy = take(&set, attacker).await;
        let _in_handler = set.enter(&busy.state, false).unwrap();
        assert_eq!(
            set.admit(attacker).err(),
            Some(Refused::PeerBusy),
            "refused at once"
        );
        assert!(set.admit(client).is_ok());
    }

    #[tokio::test]
    async fn requests_other_than_probes_leave_the_reserved_places_free() {
        let set = Arc::new(Connections::new(4, 4, 1));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut slots = Vec::new();
        for _ in 0..4 {
            slots.push(take(&set, ip).await);
        }
        let held: Vec<_> = slots[..3]
            .iter()
            .map(|s| set.enter(&s.state, false).expect("within max_busy"))
            .collect();
        assert!(set.enter(&slots[3].state, false).is_none(), "answered busy");
        let probe = set
            .enter(&slots[3].state, true)
            .expect("a probe always enters");
        drop(probe);
        drop(held);
        assert!(set.enter(&slots[3].state, false).is_some(), "room again");
    }

    #[tokio::test]
    async fn a_connection_let_in_for_an_evicted_one_waits_for_its_socket_to_close() {
        let set = Arc::new(Connections::new(1, 1, 0));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let c: IpAddr = "127.0.0.4".parse().unwrap();
        let old = take(&set, a).await;
        let Ok(entry) = set.admit(b) else {
            panic!("an idle connection makes room")
        };
        assert!(futures_ready(old.state.evict.notified()), "told to close");
        // Another one while that one waits: refused, not queued (one waiting at most here).
        assert_eq!(set.admit(c).err(), Some(Refused::AllBusy));
        let waiting = tokio::spawn(entry.slot());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the evicted socket is still open");
        drop(old);
        let Ok(new) = waiting.await.unwrap() else {
            panic!("the place given back goes to the waiting connection")
        };
        assert_eq!(new.state.peer, Peer::of(b));
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_connection_that_does_not_close_leaves_the_new_one_out() {
        let set = Arc::new(Connections::new(1, 1, 0));
        let _stuck = take(&set, "127.0.0.2".parse().unwrap()).await;
        let Ok(entry) = set.admit("127.0.0.3".parse().unwrap()) else {
            panic!("let in")
        };
        assert_eq!(entry.slot().await.err(), Some(Refused::EvictionTooSlow));
        // Its wait is over: another may wait now (and nothing is left to evict).
        assert_eq!(
            set.admit("127.0.0.4".parse().unwrap()).err(),
            Some(Refused::AllBusy)
        );
    }

    #[tokio::test]
    async fn half_the_reserve_takes_the_request_of_a_peer_with_none_in_progress() {
        // 8 places, 4 reserved: 4 requests of a busy peer, 6 with quiet peers' ones.
        let set = Arc::new(Connections::new(8, 8, 4));
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        let mut slots = Vec::new();
        for _ in 0..5 {
            slots.push(take(&set, attacker).await);
        }
        let mut held: Vec<_> = slots[..4]
            .iter()
            .map(|s| set.enter(&s.state, false).expect("within max_busy"))
            .collect();
        assert!(
            set.enter(&slots[4].state, false).is_none(),
            "its peer is busy"
        );
        for i in 0..2 {
            let quiet = take(&set, format!("127.0.0.{}", 3 + i).parse().unwrap()).await;
            held.push(
                set.enter(&quiet.state, false)
                    .expect("a quiet peer's request"),
            );
            slots.push(quiet);
        }
        let quiet = take(&set, "127.0.0.9".parse().unwrap()).await;
        assert!(
            set.enter(&quiet.state, false).is_none(),
            "half the reserve is full"
        );
        assert!(
            set.enter(&quiet.state, true).is_some(),
            "a probe always enters"
        );
        // A quiet peer's second request at once is not a quiet peer's.
        drop(held.pop());
        let four = slots.last().unwrap();
        held.push(set.enter(&four.state, false).expect("quiet again"));
        assert!(
            set.enter(&four.state, false).is_none(),
            "its peer is busy now"
        );
    }

    /// A place for a connection from `ip`, which must be let in.
    async fn take(set: &Arc<Connections>, ip: IpAddr) -> Slot {
        let Ok(entry) = set.admit(ip) else {
            panic!("not let in")
        };
        let Ok(slot) = entry.slot().await else {
            panic!("no place")
        };
        slot
    }

    /// Whether `f` is ready at once (a `notify_one` stored a permit for it).
    fn futures_ready(f: impl std::future::Future<Output = ()>) -> bool {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        f.as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }
}
