//! A connection flood against the daemon's HTTP listener, and a real client measured during it:
//! `tests/listener.rs` runs it briefly, `benches/listener_flood.rs` longer.
//!
//! The listener is [`marksync::http::serve`] (the daemon's limits, the real routes, no callback
//! token, as allowed on loopback: the case in which a callback body is read) on `127.0.0.1`, on
//! a runtime of its own. The attacker connects from `127.0.0.2` (the whole `127.0.0.0/8` is
//! local) at a fixed rate; every other connection trickles a callback body one byte at a time,
//! the others send nothing. The real client, from `127.0.0.1`, sends callbacks and probes
//! (`/healthz`, `/readyz`) on new connections and `/healthz` on one kept-alive connection, each
//! with the deadline of its real counterpart (the service waits 2 s for a callback, a kubelet
//! probe 1 s), and counts what was answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use marksync::http::{HttpState, Readiness};

/// The attacker's (first) source address.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// How long the service waits for a callback's answer.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(2);
/// A kubelet probe's default timeout.
const PROBE_DEADLINE: Duration = Duration::from_secs(1);
/// The longest an attacker's connection is held open from its side (past the 5 s header
/// timeout, so that the listener is the one that ends them).
const HOSTILE_HOLD: Duration = Duration::from_secs(6);
/// A valid presence callback body.
const CALLBACK_BODY: &str = r#"{"CallbackCommand":"Group.CallbackOnMemberStateChange","GroupId":"@TGS#aFLOOD","Type":"AVChatRoom","EventType":"Online","EventCause":"Join","MemberList":[{"Member_Account":"u1"}]}"#;
const CALLBACK_PATH: &str = "/callback?SdkAppid=1400000000&CallbackCommand=Group.CallbackOnMemberStateChange&contenttype=json";

/// What one flood run does.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    /// Hostile connections opened per second.
    pub rate: u32,
    /// How many addresses the attacker uses, in turn: [`ATTACKER`] and the next ones.
    pub sources: u8,
    /// How long the flood lasts.
    pub duration: Duration,
    /// When the real client starts, after the flood began (so that it meets the flood at full
    /// strength); it stops when the flood does.
    pub warmup: Duration,
    /// The real client's pause between two requests of each kind.
    pub every: Duration,
}

/// Answered out of sent, for one kind of real request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered 200 with the right body within their deadline.
    pub answered: u64,
    /// The slowest answer.
    pub slowest: Duration,
    /// Unanswered: the connection was closed (or reset) without an answer.
    pub closed: u64,
    /// Unanswered: no answer within the deadline.
    pub timed_out: u64,
    /// Answered, but not 200 with the right body (a 503 "busy", say).
    pub wrong: u64,
}

/// Why a real request went unanswered.
#[derive(Clone, Copy, Debug)]
enum Miss {
    Closed,
    TimedOut,
    Wrong,
}

impl Tally {
    /// The share answered, 0..=1 (1 when nothing was sent).
    pub fn share(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            self.answered as f64 / self.sent as f64
        }
    }

    fn count(&mut self, outcome: Result<(), Miss>, took: Duration) {
        self.sent += 1;
        match outcome {
            Ok(()) => {
                self.answered += 1;
                self.slowest = self.slowest.max(took);
            }
            Err(Miss::Closed) => self.closed += 1,
            Err(Miss::TimedOut) => self.timed_out += 1,
            Err(Miss::Wrong) => self.wrong += 1,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} answered ({:.1}%), slowest {} ms; unanswered: {} closed, {} timed out, {} wrong",
            self.answered,
            self.sent,
            self.share() * 100.0,
            self.slowest.as_millis(),
            self.closed,
            self.timed_out,
            self.wrong
        )
    }
}

/// The figures of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodReport {
    /// The attacker's addresses.
    pub sources: u8,
    /// Hostile connections the attacker opened (connect succeeded).
    pub hostile: u64,
    /// Hostile connection attempts refused or timed out at connect.
    pub hostile_failed: u64,
    /// How long the flood actually lasted.
    pub elapsed: Duration,
    /// Callbacks on new connections.
    pub callbacks: Tally,
    /// `/healthz` and `/readyz` on new connections.
    pub probes: Tally,
    /// `/healthz` on one kept-alive connection (reconnecting after a failure).
    pub kept_alive: Tally,
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "hostile connections from {ATTACKER} ({} address(es)): {} in {:.1} s ({:.0}/s; {} failed to connect)",
            self.sources,
            self.hostile,
            secs,
            self.hostile as f64 / secs,
            self.hostile_failed
        )?;
        writeln!(f, "callbacks (new connections): {}", self.callbacks)?;
        writeln!(f, "probes (new connections):    {}", self.probes)?;
        write!(f, "kept-alive /healthz:         {}", self.kept_alive)
    }
}

/// Runs `flood` against a listener started for it, from blocking code; every wait is bounded.
/// Runs of one process take turns, so that their figures are their own.
pub fn run(flood: Flood) -> FloodReport {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, _ready, _events) = server_rt.block_on(start_listener());
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hostile = Arc::new(AtomicU64::new(0));
    let hostile_failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let attack = attack_rt.spawn(attack(addr, flood, hostile.clone(), hostile_failed.clone()));
    let client = client_rt.spawn(async move {
        tokio::time::sleep(flood.warmup).await;
        let until = started + flood.duration;
        let (callbacks, probes, kept_alive) = tokio::join!(
            tokio::spawn(fresh_requests(addr, flood.every, until, Kind::Callback)),
            tokio::spawn(fresh_requests(addr, flood.every, until, Kind::Probe)),
            tokio::spawn(kept_alive(addr, flood.every, until)),
        );
        (callbacks.unwrap(), probes.unwrap(), kept_alive.unwrap())
    });
    let (callbacks, probes, kept_alive) = client_rt.block_on(client).unwrap();
    attack_rt.block_on(attack).unwrap();
    let elapsed = started.elapsed();
    // Hostile connections still held are dropped with their runtime.
    attack_rt.shutdown_timeout(Duration::from_secs(1));
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server_rt.shutdown_timeout(Duration::from_secs(1));
    FloodReport {
        sources: flood.sources,
        hostile: hostile.load(Ordering::Relaxed),
        hostile_failed: hostile_failed.load(Ordering::Relaxed),
        elapsed,
        callbacks,
        probes,
        kept_alive,
    }
}

/// The daemon's listener on `127.0.0.1`, ready; returns its address, the readiness sender
/// and the event receiver (both must live as long as the run).
async fn start_listener() -> (
    SocketAddr,
    watch::Sender<Readiness>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ready, readiness) = watch::channel(Readiness {
        desired_ok: true,
        last_reconcile_ok: true,
        detail: String::new(),
        standby: None,
    });
    let (events, mut rx) = mpsc::channel(1024);
    let state = HttpState::new(
        Arc::new(marksync::metrics::Metrics::new()),
        readiness,
        events,
        super::APP,
        Arc::new(marksync::clock::SystemClock),
    );
    tokio::spawn(async move {
        if let Err(e) = marksync::http::serve(listener, state, std::future::pending()).await {
            panic!("the listener stopped: {e}");
        }
    });
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    (addr, ready, drain)
}

/// Opens `flood.rate` connections a second from `flood.sources` addresses for `flood.duration`;
/// each address alternates idle and slow connections.
async fn attack(addr: SocketAddr, flood: Flood, opened: Arc<AtomicU64>, failed: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / flood.rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + flood.duration;
    let mut held = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let (opened, failed) = (opened.clone(), failed.clone());
        let sources = u64::from(flood.sources.max(1));
        let from = u32::from(ATTACKER) + u32::try_from(n % sources).unwrap();
        let slow = (n / sources).is_multiple_of(2);
        held.spawn(async move {
            match hostile_connect(from.into(), addr).await {
                Some(s) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = tokio::time::timeout(HOSTILE_HOLD, hold(s, slow)).await;
                }
                None => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        while held.try_join_next().is_some() {}
    }
    held.abort_all();
}

async fn hostile_connect(from: Ipv4Addr, addr: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(addr))
        .await
        .ok()?
        .ok()
}

/// Holds a hostile connection until the listener closes it: idle, or trickling a callback body
/// one byte every 100 ms.
async fn hold(mut s: TcpStream, slow: bool) {
    if slow {
        let head = format!(
            "POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        );
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b" ").await.is_err() {
                return;
            }
        }
    } else {
        let mut buf = [0u8; 256];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// `POST /callback` with a presence body, answered by the JSON OK.
    Callback,
    /// `GET /healthz` and `GET /readyz` in turn.
    Probe,
}

/// One request of `kind` on a new connection every `every` until `until`.
async fn fresh_requests(addr: SocketAddr, every: Duration, until: Instant, kind: Kind) -> Tally {
    let mut tally = Tally::default();
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let (request, deadline, expect) = match kind {
            Kind::Callback => (
                format!(
                    "POST {CALLBACK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{CALLBACK_BODY}",
                    CALLBACK_BODY.len()
                ),
                CALLBACK_DEADLINE,
                r#""ActionStatus":"OK""#,
            ),
            Kind::Probe => {
                let (path, body) = if i.is_multiple_of(2) {
                    ("/healthz", "ok")
                } else {
                    ("/readyz", "ready")
                };
                (
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                    PROBE_DEADLINE,
                    body,
                )
            }
        };
        let t = Instant::now();
        let answer = tokio::time::timeout(deadline, async {
            let mut s = TcpStream::connect(addr).await.map_err(|_| Miss::Closed)?;
            s.write_all(request.as_bytes())
                .await
                .map_err(|_| Miss::Closed)?;
            let mut out = Vec::new();
            // A reset after the answer still leaves the answer read.
            let _ = s.read_to_end(&mut out).await;
            Ok(String::from_utf8_lossy(&out).into_owned())
        })
        .await
        .unwrap_or(Err(Miss::TimedOut));
        let outcome = answer.and_then(|answer| {
            if answer.is_empty() {
                return Err(Miss::Closed);
            }
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            if answer.starts_with("HTTP/1.1 200") && body.contains(expect) {
                Ok(())
            } else {
                Err(Miss::Wrong)
            }
        });
        tally.count(outcome, t.elapsed());
        tokio::time::sleep(every).await;
    }
    tally
}

/// `GET /healthz` every `every` on one kept-alive connection until `until`; a failed request
/// counts as unanswered and the next one opens a new connection.
async fn kept_alive(addr: SocketAddr, every: Duration, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < until {
        let t = Instant::now();
        let outcome = tokio::time::timeout(PROBE_DEADLINE, async {
            if conn.is_none() {
                conn = Some(TcpStream::connect(addr).await.map_err(|_| Miss::Closed)?);
            }
            let s = conn.as_mut().ok_or(Miss::Closed)?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .map_err(|_| Miss::Closed)?;
            match read_response(s).await {
                Some((200, body)) if body == "ok" => Ok(()),
                Some(_) => Err(Miss::Wrong),
                None => Err(Miss::Closed),
            }
        })
        .await
        .unwrap_or(Err(Miss::TimedOut));
        if outcome.is_err() {
            conn = None;
        }
        tally.count(outcome, t.elapsed());
        tokio::time::sleep(every).await;
    }
    tally
}

/// One HTTP/1.1 response with a `Content-Length`: its status and body; `None` when the
/// connection ends first.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    Some((status, body))
}
