//! The daemon's HTTP listener (`http.listen`, SPEC section 8): the service's callbacks, health,
//! readiness and metrics.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok` while the process serves |
//! | `GET /readyz` | 200 `ready` when the desired files parse and the last reconcile was healthy, else 503 with [`Readiness::detail`] |
//! | `GET /metrics` | [`Metrics::encode`] (OpenMetrics text) as [`METRICS_CONTENT_TYPE`] |
//! | `POST /callback` | the service's callbacks (reference section 5) |
//!
//! `POST /callback` checks, in this order, answering with a `FAIL` body
//! (`{"ActionStatus":"FAIL","ErrorInfo":...,"ErrorCode":1}`) and the status in brackets:
//! 1. the query parses (400, `malformed`);
//! 2. `SdkAppid` is ours (403, `rejected_app`);
//! 3. when a token is configured: `Sign` and `RequestTime` are both present and `Sign` is right
//!    (401, `rejected_sign`; an unsigned request is refused), and `RequestTime` is within ±60 s
//!    of the clock (401, `rejected_time`);
//! 4. the body arrives within [`BODY_READ_TIMEOUT`] (408, `malformed`) and is at most
//!    [`MAX_CALLBACK_BODY_BYTES`] (413, `too_large`);
//! 5. the body is the command's JSON (400, `malformed`);
//! 6. a signed presence callback names at least one member change not accepted before under its
//!    `(Sign, RequestTime)` (409, `replayed`; see [`replay`]; 503, `replay_capacity`, when too
//!    many are remembered); the changes seen before are dropped from the event. Malformed bodies get HTTP 400 rather
//!    than 200 + FAIL so that they show in the service's and proxies' error statistics.
//!
//! The body is read only after the checks of the query, so an unauthenticated sender cannot make
//! the daemon buffer anything. Everything else is answered
//! `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}` at once: unknown commands and event
//! types are ignored, and a presence change becomes a [`CallbackEvent`] handed to the daemon with
//! `try_send`, never awaited, so the reply never waits for a reconcile. When the queue is full
//! the event is dropped with a warning and counted (the daemon's periodic retry of pending marks
//! and reassert catch up), and the reply is still OK: callbacks are not retried by the service.
//!
//! Refusals are counted by reason (`marksync_callback_refusals_total`) and logged at most once
//! per [`logging::REFUSAL_LOG_INTERVAL`] with the number not logged; every value from a request
//! that reaches a log line is [`Escaped`], so a request cannot forge a log line.
//! A listener serving unsigned callbacks beyond loopback (`allow_unsigned_callbacks`) says so on
//! `/readyz`, ready or not.
//!
//! This module knows nothing of the daemon: the daemon builds an [`HttpState`], runs [`serve`],
//! publishes [`Readiness`] on a watch channel and consumes [`CallbackEvent`]s.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::{Account, GroupId, UnixTime};
use crate::tim::callback::{self, CallbackQuery, CallbackReplyBody, Parsed, Presence};
pub use crate::tim::callback::{CallbackEvent, MemberEvent};

pub mod advertise;
pub mod forward;
pub mod logging;
pub mod replay;

use crate::log_escape::Escaped;

/// Callback bodies larger than this are refused with 413. A presence callback lists at most a
/// few hundred members of 32 bytes each, far below this.
pub const MAX_CALLBACK_BODY_BYTES: usize = 64 * 1024;

/// A callback body that has not fully arrived after this long is refused with 408, so that the
/// reply still comes within the service's 2 s.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_millis(1500);

/// The `Content-Type` of `GET /metrics`: the body is OpenMetrics text (it ends in `# EOF`, and
/// counters are typed `counter` without their `_total` suffix), which Prometheus parses only
/// when told so; served as plain Prometheus text it would misread those lines.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the daemon is ready to serve, as `GET /readyz` reports it. The daemon publishes it on
/// a `watch` channel; the default (nothing loaded yet) is not ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The desired files as last read parse.
    pub desired_ok: bool,
    /// The last reconcile ended healthy.
    pub last_reconcile_ok: bool,
    /// One line for humans saying why not ready (or the last outcome); the body of a 503.
    pub detail: String,
    /// A standby daemon (SPEC 11): ready while its desired files load, whatever `last_reconcile_ok`
    /// says (it makes no round); `/readyz` answers `standby` and this line.
    pub standby: Option<String>,
}

impl Readiness {
    /// Ready means both flags are set (a standby needs only its desired files).
    pub fn is_ready(&self) -> bool {
        self.desired_ok && (self.last_reconcile_ok || self.standby.is_some())
    }
}

/// How far a callback's `EventTime` may be from the listener's clock and still be believed. The
/// service sends callbacks as events happen and never retries them, so a time further off is a
/// wrong clock or a wrong unit, and the time of receipt is used instead.
pub const EVENT_TIME_TOLERANCE_SECS: i64 = 300;

/// `EventTime` values at or above this are milliseconds (the vendor's unit); below, seconds
/// (10^11 ms is in 1973, 10^11 s in the year 5138).
const EVENT_TIME_MILLIS_FROM: i64 = 100_000_000_000;

/// When a callback's event happened, in unix seconds: its `EventTime` (milliseconds, as the
/// vendor documents it, or seconds) when present and within [`EVENT_TIME_TOLERANCE_SECS`] of
/// `received`, never later than `received`; otherwise `received`, the time the listener got the
/// callback. Erring late is the safe side: a later event time makes more confirmed marks
/// "unknown" (re-sent), never fewer.
pub fn event_at(event_time: Option<&callback::EventTime>, received: UnixTime) -> UnixTime {
    let Some(raw) = event_time.and_then(callback::EventTime::as_i64) else {
        return received;
    };
    let secs = if raw >= EVENT_TIME_MILLIS_FROM {
        raw / 1000
    } else {
        raw
    };
    if secs.abs_diff(received) <= EVENT_TIME_TOLERANCE_SECS.unsigned_abs() {
        secs.min(received)
    } else {
        received
    }
}

/// What the listener needs from the daemon.
#[derive(Clone)]
pub struct HttpState {
    /// Encoded on `GET /metrics`; callbacks are counted in it.
    pub metrics: Arc<Metrics>,
    /// The daemon's current readiness, read on `GET /readyz`.
    pub readiness: watch::Receiver<Readiness>,
    /// Where verified presence changes go (`try_send`; never awaited).
    pub events: mpsc::Sender<CallbackEvent>,
    /// Our SDKAppID; callbacks for another are refused.
    pub sdkappid: u64,
    /// The callback token. When set, unsigned or wrongly signed callbacks are refused. Never
    /// logged (`Debug` prints `***`).
    pub token: Option<String>,
    /// "Now" for the `RequestTime` check.
    pub clock: Arc<dyn Clock>,
    /// The signed callbacks accepted within the window, to refuse a replay.
    pub replay: Arc<replay::SeenSigns>,
    /// When a refusal was last logged, so that a flood of refusals writes few lines.
    pub refusal_log: Arc<logging::RefusalLog>,
    /// Said on every `/readyz` answer: callbacks are served unsigned beyond loopback.
    pub unsigned_warning: Option<String>,
    /// Whether callbacks are acted on here or relayed to the active daemon (SPEC 11).
    pub role: watch::Receiver<forward::Role>,
    /// The client a standby relays callbacks with.
    pub relay: reqwest::Client,
}

impl HttpState {
    /// A listener's state with no callback token yet ([`start`] reads it), an empty replay
    /// memory and refusal log, and no unsigned-callback warning.
    pub fn new(
        metrics: Arc<Metrics>,
        readiness: watch::Receiver<Readiness>,
        events: mpsc::Sender<CallbackEvent>,
        sdkappid: u64,
        clock: Arc<dyn Clock>,
    ) -> HttpState {
        HttpState {
            metrics,
            readiness,
            events,
            sdkappid,
            token: None,
            clock,
            replay: Arc::default(),
            refusal_log: Arc::default(),
            unsigned_warning: None,
            role: watch::channel(forward::Role::Active).1,
            relay: forward::client(),
        }
    }
}

impl fmt::Debug for HttpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpState")
            .field("readiness", &*self.readiness.borrow())
            .field("sdkappid", &self.sdkappid)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// The listener's routes over `state`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/callback",
            post(callback).layer(DefaultBodyLimit::max(MAX_CALLBACK_BODY_BYTES)),
        )
        .with_state(Arc::new(state))
}

/// How many connections the listener serves at once, and how long it lets them live.
///
/// The listener shares the process's descriptors with the state, the desired files and the
/// calls to the API, so it never holds more than [`Limits::max_connections`]: a connection
/// accepted beyond that evicts one that has no request in a handler, or is closed at once when
/// every open connection is busy. Under a flood from other addresses the real clients keep
/// being served: one address holds at most [`Limits::max_per_peer`]; a connection that never
/// completed a request is evicted before an idle kept-alive one that did; a request in a
/// handler is never evicted, and [`Limits::reserved_for_probes`] places are never filled by
/// requests other than `/healthz` and `/readyz` (but for half of them, by a request of an
/// address with none in progress). The rules are in `connections.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// Connections one peer (an IPv4 address, an IPv6 /64) holds at once, at most: a peer at
    /// its cap makes room among its own connections, so a flood from one address cannot take
    /// the places of others.
    pub max_per_peer: usize,
    /// Places that requests other than probes never fill: while `max_connections` minus this
    /// are in a handler, another such request is answered 503 at once (unless its peer has
    /// none in a handler and fewer than `max_connections` minus half this are), so that a probe
    /// (or a new client) always finds a connection it may evict.
    pub reserved_for_probes: usize,
    /// A connection must deliver a complete request header within this, from its start or
    /// from the end of the previous response (an idle keep-alive connection too); else closed.
    pub header_read_timeout: Duration,
    /// After this, a connection is asked to close after its request in flight.
    pub max_connection_age: Duration,
    /// A connection asked to close (age, shutdown) is dropped this much later if still open.
    pub close_grace: Duration,
}

/// [`Limits::max_connections`] at most, whatever the descriptor limit.
pub const MAX_CONNECTIONS: usize = 256;
/// [`Limits::header_read_timeout`] of the daemon.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// [`Limits::max_connection_age`] of the daemon.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// [`Limits::close_grace`] of the daemon.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long the accept loop pauses after an error such as `EMFILE` before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl Limits {
    /// The daemon's limits for a process whose soft `RLIMIT_NOFILE` is `nofile` (`None`:
    /// unknown or unlimited): at most a quarter of the descriptors go to connections, so that
    /// three quarters stay in reserve for the state, the desired files and the API client; of
    /// those, a quarter to one peer, a quarter reserved for probes.
    pub fn for_nofile(nofile: Option<u64>) -> Limits {
        let max_connections = match nofile {
            Some(n) => usize::try_from(n / 4)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_CONNECTIONS),
            None => MAX_CONNECTIONS,
        };
        Limits {
            max_connections,
            max_per_peer: (max_connections / 4).max(1),
            reserved_for_probes: max_connections / 4,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connection_age: MAX_CONNECTION_AGE,
            close_grace: CLOSE_GRACE,
        }
    }

    /// [`Limits::for_nofile`] with this process's soft descriptor limit.
    pub fn for_this_process() -> Limits {
        Limits::for_nofile(nofile_soft_limit())
    }
}

/// The soft `RLIMIT_NOFILE` of this process, read from `/proc/self/limits` (no libc call);
/// `None` when unlimited or unreadable.
pub fn nofile_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_nofile_soft(&text)
}

/// The soft value of the `Max open files` line of a `/proc/PID/limits` text.
fn parse_nofile_soft(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Serves [`router`] on `listener` with [`Limits::for_this_process`] until `shutdown`
/// completes, then lets in-flight requests finish (for [`CLOSE_GRACE`] at most).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Limits::for_this_process();
    tracing::debug!(?limits, "HTTP listener limits");
    serve_with(listener, router(state), limits, shutdown).await
}

mod connections;
use connections::{Connections, Entry, Slot};

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then asks every
/// connection to close after its request in flight and waits [`Limits::close_grace`] at most.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Connections::new(
        limits.max_connections,
        limits.max_per_peer,
        limits.reserved_for_probes,
    ));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_error_logged: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE and the like: the connection stays in the backlog; pause so as
                // not to spin, and log once in a while rather than for every attempt.
                if last_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "HTTP listener cannot accept a connection");
                    last_error_logged = Some(std::time::Instant::now());
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let entry = match open.admit(peer.ip()) {
            Ok(entry) => entry,
            Err(refused) => {
                tracing::debug!(
                    max = limits.max_connections,
                    max_per_peer = limits.max_per_peer,
                    ?refused,
                    "HTTP connection closed at once: every connection it could replace is busy"
                );
                continue;
            }
        };
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            entry,
            limits,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    // Connections see the send (or the sender gone) and close after their request in flight.
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(limits.close_grace, stop_tx.closed()).await;
    Ok(())
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// One connection: HTTP/1 with the header read timeout, closed when evicted, asked to close
/// at its maximum age or at shutdown and dropped [`Limits::close_grace`] after that. A
/// connection let in in place of an evicted one first waits here for that one's socket to close;
/// the slot is given back only once the socket is closed, so that open sockets never exceed the
/// cap plus the few connections waiting so.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    entry: Entry,
    limits: Limits,
    stop: watch::Receiver<()>,
) {
    let slot = match entry.slot().await {
        Ok(slot) => slot,
        Err(refused) => {
            tracing::debug!(?refused, "HTTP connection closed at once");
            return;
        }
    };
    drive_connection(stream, app, &slot, limits, stop).await;
    drop(slot);
}

/// [`serve_connection`] until the connection ends; the socket is closed on return.
async fn drive_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    slot: &Slot,
    limits: Limits,
    mut stop: watch::Receiver<()>,
) {
    let service = hyper_util::service::TowerToHyperService::new(app);
    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
        use hyper::service::Service as _;
        let entered = slot.enter(is_probe(&req));
        let response = entered.is_some().then(|| service.call(req));
        async move {
            let Some(response) = response else {
                tracing::debug!("HTTP request answered 503: too many requests in progress");
                return Ok(too_busy());
            };
            let r = response.await;
            drop(entered);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut conn =
        std::pin::pin!(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
    let mut age = std::pin::pin!(tokio::time::sleep(limits.max_connection_age));
    let mut closing: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            () = slot.state.evict.notified() => {
                tracing::debug!("idle HTTP connection closed to make room for a new one");
                break;
            }
            () = &mut age, if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Box::pin(tokio::time::sleep(limits.close_grace)));
            }
            _ = stop.changed(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Box::pin(tokio::time::sleep(limits.close_grace)));
            }
            () = async { closing.as_mut().expect("guarded").await }, if closing.is_some() => break,
        }
    }
}

/// `GET` or `HEAD` of `/healthz` or `/readyz`: a probe, let into its handler whatever else is
/// in progress (see [`Limits::reserved_for_probes`]).
fn is_probe<B>(req: &hyper::Request<B>) -> bool {
    matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD)
        && matches!(req.uri().path(), "/healthz" | "/readyz")
}

/// The answer to a request that would take one of the places reserved for probes; the
/// connection is closed after it.
fn too_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONNECTION, "close"), (header::RETRY_AFTER, "1")],
        "busy: too many requests in progress\n",
    )
        .into_response()
}

/// `GET /healthz`: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when ready, else 503 with the detail; then the unsigned-callbacks
/// warning on a line of its own, if any.
async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let r = s.readiness.borrow().clone();
    let (status, mut body) = if let Some(line) = r.standby.as_ref().filter(|_| r.is_ready()) {
        (StatusCode::OK, format!("standby: {line}"))
    } else if r.is_ready() {
        (StatusCode::OK, "ready".to_owned())
    } else if r.detail.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r.detail)
    };
    if let Some(w) = &s.unsigned_warning {
        body.push_str("\nwarning: ");
        body.push_str(w);
    }
    (status, body).into_response()
}

/// `GET /metrics`: OpenMetrics text.
async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        s.metrics.encode(),
    )
        .into_response()
}

/// Relays a checked callback from this standby to the active daemon at `active`; a relay that
/// fails is a 503 with the reason (the service does not retry, so the warning and the metric are
/// the trace it leaves).
async fn relay(
    s: &HttpState,
    active: Option<String>,
    relayed: bool,
    raw_query: &str,
    body: Bytes,
) -> Result<Handled, Refusal> {
    let result = match active {
        _ if relayed => Err(forward::ForwardError::Loop),
        None => Err(forward::ForwardError::NoActive),
        Some(address) => forward::forward(&s.relay, &address, raw_query, body).await,
    };
    match result {
        Ok((status, body)) => Ok(Handled::Relayed(status, body)),
        Err(e) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            match e {
                forward::ForwardError::Loop => "forward_loop",
                _ => "forward_failed",
            },
            e.to_string(),
        )),
    }
}

/// A refused or failed callback: its status, metric outcome and `ErrorInfo`.
struct Refusal {
    /// The HTTP status of the reply.
    status: StatusCode,
    /// The `outcome` label of `marksync_callbacks_total`.
    outcome: &'static str,
    /// `ErrorInfo` of the reply and the log line (never the token or the expected Sign).
    info: String,
}

impl Refusal {
    /// A refusal.
    fn new(status: StatusCode, outcome: &'static str, info: impl Into<String>) -> Self {
        Refusal {
            status,
            outcome,
            info: info.into(),
        }
    }
}

/// `POST /callback`: see the module documentation for the checks and replies.
async fn callback(
    State(s): State<Arc<HttpState>>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    request: Request,
) -> Response {
    let command = match &query {
        Ok(Query(q)) => q.command.clone().unwrap_or_default(),
        Err(_) => String::new(),
    };
    let raw_query = request.uri().query().unwrap_or("").to_owned();
    let result = match query {
        Ok(Query(q)) => handle_callback(&s, &command, &q, &raw_query, request).await,
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("unreadable query string: {e}"),
        )),
    };
    match result {
        Ok(Handled::Done(outcome)) => {
            s.metrics.record_callback(&command, outcome);
            (StatusCode::OK, Json(CallbackReplyBody::ok())).into_response()
        }
        Ok(Handled::Relayed(status, body)) => {
            s.metrics.record_callback(&command, "forwarded");
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(r) => {
            s.metrics.record_callback(&command, r.outcome);
            s.metrics.record_callback_refusal(r.outcome);
            if let Some(suppressed) = s.refusal_log.admit(std::time::Instant::now()) {
                tracing::warn!(
                    command = %Escaped(&command),
                    status = r.status.as_u16(),
                    outcome = r.outcome,
                    not_logged = suppressed,
                    "callback refused: {}{}",
                    Escaped(&r.info),
                    if suppressed > 0 {
                        format!(
                            " ({suppressed} other refusals in the last {} s not logged; see marksync_callback_refusals_total)",
                            logging::REFUSAL_LOG_INTERVAL.as_secs()
                        )
                    } else {
                        String::new()
                    }
                );
            }
            (r.status, Json(CallbackReplyBody::fail(r.info))).into_response()
        }
    }
}

/// What became of a callback that was not refused.
enum Handled {
    /// Acted on here; the metric outcome of the OK reply.
    Done(&'static str),
    /// Relayed by a standby to the active daemon, which answered this.
    Relayed(StatusCode, Bytes),
}

/// Checks and acts on one callback (or, on a standby, relays it once checked).
async fn handle_callback(
    s: &HttpState,
    command: &str,
    q: &CallbackQuery,
    raw_query: &str,
    request: Request,
) -> Result<Handled, Refusal> {
    // When the callback arrived: the event's time when it carries none (see `event_at`).
    let received = s.clock.now();
    let app = q.sdkappid.as_deref().unwrap_or("");
    if app.trim().parse::<u64>() != Ok(s.sdkappid) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "rejected_app",
            format!("SdkAppid {app:?} is not this app's"),
        ));
    }
    // `(Sign, RequestTime, now)` of a signed callback, remembered once its body is read.
    let mut signed = None;
    if let Some(token) = &s.token {
        let (Some(sign), Some(time)) = (q.sign.as_deref(), q.request_time.as_deref()) else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "rejected_sign",
                "unsigned callback: Sign and RequestTime are required",
            ));
        };
        if !callback::verify_sign(token, time, sign) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "rejected_sign",
                "wrong Sign",
            ));
        }
        let now = s.clock.now();
        match callback::check_request_time(time, now) {
            Ok(t) => signed = Some((sign, t, now)),
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "rejected_time",
                    e.to_string(),
                ));
            }
        }
    }
    let relayed = request.headers().contains_key(forward::RELAYED_HEADER);
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, &()))
        .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)))) => {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body larger than {MAX_CALLBACK_BODY_BYTES} bytes"),
            ));
        }
        Ok(Err(e)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("cannot read the body: {e}"),
            ));
        }
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "malformed",
                format!(
                    "body not received within {} ms",
                    BODY_READ_TIMEOUT.as_millis()
                ),
            ));
        }
    };
    let standby = match &*s.role.borrow() {
        forward::Role::Active => None,
        forward::Role::Standby { active } => Some(active.clone()),
    };
    if let Some(active) = standby {
        return relay(s, active, relayed, raw_query, body).await;
    }
    let change = match callback::parse(command, &body) {
        Ok(Parsed::Presence(change)) => change,
        Ok(Parsed::Ignored) => {
            tracing::debug!(command, "callback ignored");
            return Ok(Handled::Done("ignored"));
        }
        Err(e) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                e.to_string(),
            ));
        }
    };
    let group = match GroupId::new(&change.group_id) {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(command, error = %Escaped(&e), "callback for an invalid group ignored");
            return Ok(Handled::Done("ignored"));
        }
    };
    let accounts: Vec<Account> = change
        .accounts
        .into_iter()
        .filter_map(|a| match Account::from_string(a) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::debug!(command, group = %group, error = %Escaped(&e), "invalid account in a callback skipped");
                None
            }
        })
        .collect();
    if accounts.is_empty() {
        tracing::debug!(command, group = %group, "callback without valid accounts ignored");
        return Ok(Handled::Done("ignored"));
    }
    // Each presence change once per signature: a replayed callback, whatever its body, adds
    // nothing (see `replay`).
    let accounts = match signed {
        None => accounts,
        Some((sign, request_time, now)) => {
            let names: Vec<&str> = accounts.iter().map(Account::as_str).collect();
            let online = change.presence == Presence::Online;
            match s
                .replay
                .admit(sign, request_time, now, group.as_str(), online, &names)
            {
                Ok(new) => accounts
                    .into_iter()
                    .zip(new)
                    .filter_map(|(a, n)| n.then_some(a))
                    .collect(),
                Err(replay::Refused::Replayed) => {
                    return Err(Refusal::new(
                        StatusCode::CONFLICT,
                        "replayed",
                        "every member change in this callback was accepted before under this \
                         Sign and RequestTime: a replay",
                    ));
                }
                Err(replay::Refused::Full) => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "replay_capacity",
                        format!(
                            "more than {} member changes within the RequestTime window",
                            replay::MAX_REMEMBERED
                        ),
                    ));
                }
            }
        }
    };
    let event = CallbackEvent {
        group,
        accounts,
        event: change.presence.into(),
        at: event_at(change.event_time.as_ref(), received),
    };
    tracing::debug!(
        command,
        group = %event.group,
        members = event.accounts.len(),
        event = ?event.event,
        event_time = ?change.event_time.as_ref().and_then(callback::EventTime::as_i64),
        "callback accepted"
    );
    match s.events.try_send(event) {
        Ok(()) => {}
        Err(TrySendError::Full(ev)) => {
            s.metrics.record_callback_event_dropped();
            tracing::warn!(
                group = %ev.group,
                members = ev.accounts.len(),
                "callback event dropped: the daemon's queue is full"
            );
        }
        Err(TrySendError::Closed(ev)) => {
            s.metrics.record_callback_event_dropped();
            tracing::warn!(
                group = %ev.group,
                members = ev.accounts.len(),
                "callback event dropped: the daemon is not taking events"
            );
        }
    }
    Ok(Handled::Done("accepted"))
}

/// A started listener.
#[derive(Debug)]
pub struct Listener {
    /// The address it is bound to (the port the OS chose for `listen: 127.0.0.1:0`).
    pub addr: std::net::SocketAddr,
    /// The accept loop; it runs until the process ends.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `http.listen` and serves [`router`] over `state` in a task of its own. The callback
/// token comes from `http.callback_token_file`, else the systemd credential `callback-token`
/// (`state.token` is replaced). Reports the bound address.
pub async fn start(http: &crate::config::Http, mut state: HttpState) -> Result<Listener, Error> {
    let token_file = http.callback_token_file.clone().or_else(|| {
        // An empty credential is the shipped units' default (`SetCredential=`): no token.
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| std::path::PathBuf::from(d).join("callback-token"))
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    });
    state.token = match &token_file {
        Some(path) => Some(crate::config::read_callback_token(path).map_err(Error::CallbackToken)?),
        None => None,
    };
    if let Some(path) = &http.callback_token_file
        && let Some(warning) = crate::config::callback_token_permission_warning(path)
    {
        tracing::warn!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind(http.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", http.listen), e))?;
    let addr = listener.local_addr().unwrap_or(http.listen);
    tracing::info!(listen = %addr, "http listener: /callback, /healthz, /readyz, /metrics");
    // `config` refuses this unless `allow_unsigned_callbacks` says it is meant.
    if state.token.is_none() && !addr.ip().is_loopback() {
        let warning = format!(
            "callbacks on {addr} are accepted without a signature (allow_unsigned_callbacks: \
             true): anyone who reaches this address can send them; set \
             http.callback_token_file"
        );
        tracing::warn!("{warning}");
        state.unsigned_warning = Some(warning);
    }
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, state, std::future::pending()).await {
            tracing::error!("http listener stopped: {e}");
        }
    });
    Ok(Listener { addr, task })
}

#[cfg(test)]
mod tests;
