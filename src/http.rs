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
//! 5. the body is the command's JSON (400, `malformed`). Malformed bodies get HTTP 400 rather
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
use crate::metrics::Metrics;
use crate::model::{Account, GroupId, UnixTime};
use crate::tim::callback::{self, CallbackQuery, CallbackReplyBody, Parsed, Presence};

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
}

impl Readiness {
    /// Ready means both flags are set.
    pub fn is_ready(&self) -> bool {
        self.desired_ok && self.last_reconcile_ok
    }
}

/// Whether the members of a [`CallbackEvent`] came online or went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberEvent {
    /// Online or joined: re-send the member's desired marks at once.
    Online,
    /// Offline or left: the service dropped their marks except 500.
    Offline,
}

impl From<Presence> for MemberEvent {
    fn from(p: Presence) -> Self {
        match p {
            Presence::Online => MemberEvent::Online,
            Presence::Offline => MemberEvent::Offline,
        }
    }
}

/// A verified presence callback, for the daemon. Accounts the service sent that are not valid
/// accounts are left out (logged at debug); a callback with none left yields no event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackEvent {
    /// The group.
    pub group: GroupId,
    /// The members concerned, in the order sent (never empty).
    pub accounts: Vec<Account>,
    /// Online or offline.
    pub event: MemberEvent,
    /// When it happened (unix seconds), by [`event_at`]: the callback's `EventTime`, else the
    /// moment the listener received it. Stamped here, not when the daemon gets to the event
    /// (which may be after a long reconcile), so the daemon can tell an event older than a
    /// mark's confirmation from a newer one.
    pub at: UnixTime,
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
/// accepted beyond that evicts the oldest connection that has no request in a handler (an idle
/// keep-alive connection, or one still sending its header), or is closed at once when every
/// open connection is busy. A flood of idle connections therefore cannot keep `/healthz` from
/// answering, nor starve the daemon of descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, at most.
    pub max_connections: usize,
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
    /// three quarters stay in reserve for the state, the desired files and the API client.
    pub fn for_nofile(nofile: Option<u64>) -> Limits {
        let max_connections = match nofile {
            Some(n) => usize::try_from(n / 4)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_CONNECTIONS),
            None => MAX_CONNECTIONS,
        };
        Limits {
            max_connections,
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

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then asks every
/// connection to close after its request in flight and waits [`Limits::close_grace`] at most.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Connections::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_error_logged: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
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
        let Some(slot) = open.admit().await else {
            tracing::debug!(
                max = limits.max_connections,
                "HTTP connection closed at once: every connection is busy"
            );
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            slot,
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
/// at its maximum age or at shutdown and dropped [`Limits::close_grace`] after that. The slot
/// is given back only once the socket is closed, so that open sockets never exceed the cap.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    slot: Slot,
    limits: Limits,
    stop: watch::Receiver<()>,
) {
    drive_connection(stream, app, &slot.state, limits, stop).await;
    drop(slot);
}

/// [`serve_connection`] until the connection ends; the socket is closed on return.
async fn drive_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    conn_state: &Arc<ConnState>,
    limits: Limits,
    mut stop: watch::Receiver<()>,
) {
    let busy_state = conn_state.clone();
    let service = hyper_util::service::TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        use hyper::service::Service as _;
        let busy = Busy::enter(&busy_state);
        let response = service.call(req);
        async move {
            let r = response.await;
            drop(busy);
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
            () = conn_state.evict.notified() => {
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

/// The open connections, oldest first, for eviction.
struct Connections {
    /// One permit per connection that may be open; a [`Slot`] holds one until its socket is
    /// closed.
    permits: Arc<tokio::sync::Semaphore>,
    /// By admission order.
    open: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<ConnState>>>,
    /// The next connection's id.
    next: std::sync::atomic::AtomicU64,
}

/// What the accept loop knows of one open connection.
#[derive(Default)]
struct ConnState {
    /// Requests of this connection in a handler now.
    busy: std::sync::atomic::AtomicUsize,
    /// Notified when the connection must close at once to make room.
    evict: tokio::sync::Notify,
}

/// A connection's place in [`Connections`]; given back on drop.
struct Slot {
    /// Its key in `Connections::open`.
    id: u64,
    /// Shared with the set.
    state: Arc<ConnState>,
    /// The set.
    set: Arc<Connections>,
    /// Given back on drop, after the socket is closed.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// How long admission waits for an evicted connection to close its socket.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

impl Connections {
    /// An empty set of at most `max` (at least 1) connections.
    fn new(max: usize) -> Self {
        Connections {
            permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            open: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A place for a connection just accepted: when every place is taken, the oldest
    /// connection with no request in a handler is evicted and its place taken once its socket
    /// is closed; `None` when every open connection is busy (or the evicted one did not close
    /// within [`EVICTION_WAIT`]): the new connection is then closed.
    async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !self.evict_oldest_idle() {
                    return None;
                }
                tokio::time::timeout(EVICTION_WAIT, self.permits.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, state.clone());
        Some(Slot {
            id,
            state,
            set: self.clone(),
            _permit: permit,
        })
    }

    /// Tells the oldest connection with no request in a handler to close; false when every
    /// open connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let victim = open
            .iter()
            .find(|(_, c)| c.busy.load(std::sync::atomic::Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.set.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.id);
    }
}

/// Marks a connection busy while one of its requests is in a handler.
struct Busy(Arc<ConnState>);

impl Busy {
    /// Counts a request in.
    fn enter(c: &Arc<ConnState>) -> Busy {
        c.busy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(c.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// `GET /healthz`: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when ready, else 503 with the detail.
async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let r = s.readiness.borrow().clone();
    if r.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        let detail = if r.detail.is_empty() {
            "not ready".to_owned()
        } else {
            r.detail
        };
        (StatusCode::SERVICE_UNAVAILABLE, detail).into_response()
    }
}

/// `GET /metrics`: OpenMetrics text.
async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        s.metrics.encode(),
    )
        .into_response()
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
    let result = match query {
        Ok(Query(q)) => handle_callback(&s, &command, &q, request).await,
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("unreadable query string: {e}"),
        )),
    };
    match result {
        Ok(outcome) => {
            s.metrics.record_callback(&command, outcome);
            (StatusCode::OK, Json(CallbackReplyBody::ok())).into_response()
        }
        Err(r) => {
            s.metrics.record_callback(&command, r.outcome);
            tracing::warn!(
                command = %command,
                status = r.status.as_u16(),
                outcome = r.outcome,
                "callback refused: {}",
                r.info
            );
            (r.status, Json(CallbackReplyBody::fail(r.info))).into_response()
        }
    }
}

/// Checks and acts on one callback; returns the metric outcome of an OK reply.
async fn handle_callback(
    s: &HttpState,
    command: &str,
    q: &CallbackQuery,
    request: Request,
) -> Result<&'static str, Refusal> {
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
        if let Err(e) = callback::check_request_time(time, s.clock.now()) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "rejected_time",
                e.to_string(),
            ));
        }
    }
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
    let change = match callback::parse(command, &body) {
        Ok(Parsed::Presence(change)) => change,
        Ok(Parsed::Ignored) => {
            tracing::debug!(command, "callback ignored");
            return Ok("ignored");
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
            tracing::debug!(command, error = %e, "callback for an invalid group ignored");
            return Ok("ignored");
        }
    };
    let accounts: Vec<Account> = change
        .accounts
        .into_iter()
        .filter_map(|a| match Account::from_string(a) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::debug!(command, group = %group, error = %e, "invalid account in a callback skipped");
                None
            }
        })
        .collect();
    if accounts.is_empty() {
        tracing::debug!(command, group = %group, "callback without valid accounts ignored");
        return Ok("ignored");
    }
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
    Ok("accepted")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use crate::emulator::{Emulator, EmulatorConfig, GroupType};
    use crate::tim::callback::{AFTER_MEMBER_EXIT, AFTER_NEW_MEMBER_JOIN, MEMBER_STATE_CHANGE};
    use serde_json::{Value, json};
    use tokio::sync::oneshot;

    const APP: u64 = 1_400_000_001;
    const TOKEN: &str = "xxxxyyyy";
    const NOW: i64 = 1_669_872_112;

    /// Bounds every wait of these tests.
    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("timed out")
    }

    /// A listener on a random loopback port with a manual clock (or the system clock).
    struct Server {
        base: String,
        events: mpsc::Receiver<CallbackEvent>,
        metrics: Arc<Metrics>,
        ready: watch::Sender<Readiness>,
        http: reqwest::Client,
        _stop: oneshot::Sender<()>,
    }

    impl Server {
        async fn start(token: Option<&str>, clock: Arc<dyn Clock>, queue: usize) -> Server {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let metrics = Arc::new(Metrics::new());
            let (ready, readiness) = watch::channel(Readiness::default());
            let (tx, events) = mpsc::channel(queue);
            let state = HttpState {
                metrics: metrics.clone(),
                readiness,
                events: tx,
                sdkappid: APP,
                token: token.map(str::to_owned),
                clock,
            };
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(serve(listener, state, async {
                let _ = stopped.await;
            }));
            Server {
                base,
                events,
                metrics,
                ready,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap(),
                _stop: stop,
            }
        }

        async fn signed() -> Server {
            Server::start(Some(TOKEN), Arc::new(ManualClock::new(NOW)), 16).await
        }

        /// The callback URL's query for `command`, signed at `time` when `sign` is given.
        fn query(command: &str, app: u64, signed: Option<(&str, i64)>) -> Vec<(String, String)> {
            let mut q = vec![
                ("SdkAppid".to_owned(), app.to_string()),
                ("CallbackCommand".to_owned(), command.to_owned()),
                ("contenttype".to_owned(), "json".to_owned()),
                ("ClientIP".to_owned(), "10.0.0.1".to_owned()),
                ("OptPlatform".to_owned(), "Web".to_owned()),
            ];
            if let Some((token, time)) = signed {
                let time = time.to_string();
                q.push(("Sign".to_owned(), callback::sign(token, &time)));
                q.push(("RequestTime".to_owned(), time));
            }
            q
        }

        async fn post(
            &self,
            query: &[(String, String)],
            body: impl Into<reqwest::Body>,
        ) -> (u16, Value) {
            let resp = within(
                self.http
                    .post(format!("{}/callback", self.base))
                    .query(query)
                    .header("content-type", "application/json")
                    .body(body)
                    .send(),
            )
            .await
            .unwrap();
            let status = resp.status().as_u16();
            let text = within(resp.text()).await.unwrap();
            let body = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("reply {status} {text:?} is not JSON: {e}"));
            (status, body)
        }

        /// Posts `body` for `command`, correctly signed at `NOW`.
        async fn post_signed(&self, command: &str, body: &Value) -> (u16, Value) {
            self.post(
                &Self::query(command, APP, Some((TOKEN, NOW))),
                body.to_string(),
            )
            .await
        }

        async fn get(&self, path: &str) -> reqwest::Response {
            within(self.http.get(format!("{}{path}", self.base)).send())
                .await
                .unwrap()
        }

        /// Sends a chunked POST (no Content-Length) by hand and returns the status line.
        async fn raw_post_chunked(&self, path: &str, chunked_body: &[u8]) -> String {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = self.base.trim_start_matches("http://");
            let mut conn = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            within(conn.write_all(head.as_bytes())).await.unwrap();
            // The server may answer and close before taking the whole body.
            let _ = within(conn.write_all(chunked_body)).await;
            let mut reply = Vec::new();
            let _ = within(conn.read_to_end(&mut reply)).await;
            String::from_utf8_lossy(&reply)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        }

        /// The next event, waiting at most 10 s.
        async fn event(&mut self) -> CallbackEvent {
            within(self.events.recv()).await.expect("channel closed")
        }

        /// The next event of a server on the system clock: its time must be when it was
        /// received (these callbacks carry no usable `EventTime`); returned with `at` = `NOW`.
        async fn event_now(&mut self) -> CallbackEvent {
            let mut e = self.event().await;
            let now = SystemClock.now();
            assert!((now - 5..=now).contains(&e.at), "stamped on receipt: {e:?}");
            e.at = NOW;
            e
        }

        fn assert_no_event(&mut self) {
            assert!(self.events.try_recv().is_err(), "unexpected event");
        }

        fn callbacks_counted(&self, command: &str, outcome: &str) -> String {
            let series =
                format!(r#"marksync_callbacks_total{{command="{command}",outcome="{outcome}"}} "#);
            let text = self.metrics.encode();
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no {series}in\n{text}"))
                .to_owned()
        }
    }

    fn ok_reply() -> Value {
        json!({"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0})
    }

    fn assert_fail(reply: &(u16, Value), status: u16) {
        assert_eq!(reply.0, status, "{reply:?}");
        assert_eq!(reply.1["ActionStatus"], "FAIL", "{reply:?}");
        assert_eq!(reply.1["ErrorCode"], 1, "{reply:?}");
        assert!(reply.1["ErrorInfo"].as_str().is_some_and(|s| !s.is_empty()));
    }

    fn online_body(accounts: &[&str]) -> Value {
        let members: Vec<Value> = accounts
            .iter()
            .map(|a| json!({"Member_Account": a}))
            .collect();
        json!({
            "CallbackCommand": MEMBER_STATE_CHANGE,
            "GroupId": "@TGS#aAAA",
            "Type": "AVChatRoom",
            "EventType": "Online",
            "EventCause": "Join",
            "MemberList": members,
        })
    }

    /// An event received at the test servers' manual clock's `NOW`, without an `EventTime`.
    fn event(group: &str, accounts: &[&str], event: MemberEvent) -> CallbackEvent {
        event_at_time(group, accounts, event, NOW)
    }

    fn event_at_time(
        group: &str,
        accounts: &[&str],
        event: MemberEvent,
        at: UnixTime,
    ) -> CallbackEvent {
        CallbackEvent {
            group: GroupId::new(group).unwrap(),
            accounts: accounts.iter().map(|a| Account::new(a).unwrap()).collect(),
            event,
            at,
        }
    }

    #[test]
    fn event_time_is_read_in_milliseconds_or_seconds_and_believed_only_near_receipt() {
        use callback::EventTime::{Number, Text};
        let check = |t: Option<callback::EventTime>, expect: UnixTime| {
            assert_eq!(event_at(t.as_ref(), NOW), expect, "{t:?}");
        };
        // The vendor's unit (ms), as a number or a string; seconds too.
        check(Some(Number((NOW - 30) * 1000 + 999)), NOW - 30);
        check(Some(Text(format!("{}", (NOW - 30) * 1000))), NOW - 30);
        check(Some(Number(NOW - 30)), NOW - 30);
        // Missing or unreadable: when it was received.
        check(None, NOW);
        check(Some(Text("soon".into())), NOW);
        // Implausible (a wrong clock or unit): when it was received.
        check(Some(Number(1)), NOW);
        check(
            Some(Number((NOW - EVENT_TIME_TOLERANCE_SECS - 1) * 1000)),
            NOW,
        );
        check(Some(Number(NOW + EVENT_TIME_TOLERANCE_SECS + 1)), NOW);
        // A little in the future (clock skew): never later than the receipt.
        check(Some(Number((NOW + 20) * 1000)), NOW);
    }

    #[tokio::test]
    async fn a_callback_is_stamped_with_its_event_time_or_when_it_was_received() {
        let clock = Arc::new(ManualClock::new(NOW));
        let mut s = Server::start(Some(TOKEN), clock.clone(), 16).await;
        let mut body = online_body(&["alice"]);
        body["EventTime"] = json!((NOW - 40) * 1000);
        assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
        assert_eq!(s.event().await.at, NOW - 40);
        // Without EventTime: the time the listener received it, not when the daemon reads it.
        let body = online_body(&["alice"]);
        assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
        clock.advance(50);
        assert_eq!(s.event().await.at, NOW);
    }

    #[test]
    fn sign_matches_the_doc_vector() {
        assert_eq!(
            callback::sign("xxxxyyyy", "1669872112"),
            "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let (_tx, readiness) = watch::channel(Readiness::default());
        let (events, _rx) = mpsc::channel(1);
        let state = HttpState {
            metrics: Arc::new(Metrics::new()),
            readiness,
            events,
            sdkappid: APP,
            token: Some("supersecrettoken".into()),
            clock: Arc::new(SystemClock),
        };
        let text = format!("{state:?}");
        assert!(
            !text.contains("supersecrettoken") && text.contains("***"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_signed_online_callback_becomes_an_event() {
        let mut s = Server::signed().await;
        let reply = s
            .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice", "bob"]))
            .await;
        assert_eq!(reply, (200, ok_reply()));
        assert_eq!(
            s.event().await,
            event("@TGS#aAAA", &["alice", "bob"], MemberEvent::Online)
        );
        assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"), "1");
    }

    #[tokio::test]
    async fn unsigned_wrongly_signed_and_stale_callbacks_are_refused() {
        let mut s = Server::signed().await;
        let body = online_body(&["alice"]).to_string();
        // No Sign at all.
        let unsigned = Server::query(MEMBER_STATE_CHANGE, APP, None);
        assert_fail(&s.post(&unsigned, body.clone()).await, 401);
        // RequestTime without Sign.
        let mut only_time = unsigned.clone();
        only_time.push(("RequestTime".into(), NOW.to_string()));
        assert_fail(&s.post(&only_time, body.clone()).await, 401);
        // Signed with another token.
        let wrong = Server::query(MEMBER_STATE_CHANGE, APP, Some(("other", NOW)));
        assert_fail(&s.post(&wrong, body.clone()).await, 401);
        // A right Sign for another RequestTime than the one sent.
        let mut replayed = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
        replayed.last_mut().unwrap().1 = (NOW + 1).to_string();
        assert_fail(&s.post(&replayed, body.clone()).await, 401);
        assert_eq!(
            s.callbacks_counted(MEMBER_STATE_CHANGE, "rejected_sign"),
            "4"
        );
        // Correctly signed, 61 s off either way; 60 s is still fine.
        for skew in [61, -61] {
            let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW + skew)));
            assert_fail(&s.post(&q, body.clone()).await, 401);
        }
        assert_eq!(
            s.callbacks_counted(MEMBER_STATE_CHANGE, "rejected_time"),
            "2"
        );
        s.assert_no_event();
        for skew in [60, -60] {
            let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW + skew)));
            assert_eq!(s.post(&q, body.clone()).await, (200, ok_reply()));
            s.event().await;
        }
    }

    #[tokio::test]
    async fn the_request_time_window_follows_the_clock() {
        let clock = Arc::new(ManualClock::new(NOW));
        let mut s = Server::start(Some(TOKEN), clock.clone(), 16).await;
        let body = online_body(&["alice"]);
        assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
        s.event().await;
        clock.advance(61);
        assert_fail(&s.post_signed(MEMBER_STATE_CHANGE, &body).await, 401);
        s.assert_no_event();
    }

    #[tokio::test]
    async fn another_sdkappid_is_refused() {
        let mut s = Server::signed().await;
        let body = online_body(&["alice"]).to_string();
        let q = Server::query(MEMBER_STATE_CHANGE, APP + 1, Some((TOKEN, NOW)));
        assert_fail(&s.post(&q, body.clone()).await, 403);
        let mut missing = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
        missing.remove(0);
        assert_fail(&s.post(&missing, body).await, 403);
        assert_eq!(
            s.callbacks_counted(MEMBER_STATE_CHANGE, "rejected_app"),
            "2"
        );
        s.assert_no_event();
    }

    #[tokio::test]
    async fn without_a_token_unsigned_callbacks_are_accepted() {
        let mut s = Server::start(None, Arc::new(SystemClock), 16).await;
        let q = Server::query(MEMBER_STATE_CHANGE, APP, None);
        let reply = s.post(&q, online_body(&["alice"]).to_string()).await;
        assert_eq!(reply, (200, ok_reply()));
        assert_eq!(
            s.event_now().await,
            event("@TGS#aAAA", &["alice"], MemberEvent::Online)
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let mut s = Server::signed().await;
        let many: Vec<String> = (0..MAX_CALLBACK_BODY_BYTES / 20)
            .map(|i| format!("member{i:09}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let body = online_body(&refs).to_string();
        assert!(body.len() > MAX_CALLBACK_BODY_BYTES);
        let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
        assert_fail(&s.post(&q, body.clone()).await, 413);
        // Without a Content-Length (chunked), the limit holds too.
        let path = format!(
            "/callback?SdkAppid={APP}&CallbackCommand={MEMBER_STATE_CHANGE}&contenttype=json&Sign={}&RequestTime={NOW}",
            callback::sign(TOKEN, &NOW.to_string())
        );
        let mut chunked = Vec::new();
        for chunk in body.as_bytes().chunks(8192) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let status_line = s.raw_post_chunked(&path, &chunked).await;
        assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
        assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "too_large"), "2");
        s.assert_no_event();
        // Just under the limit is fine.
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
                .await
                .0,
            200
        );
        s.event().await;
    }

    #[tokio::test]
    async fn malformed_json_is_answered_with_an_error_and_the_server_lives_on() {
        let mut s = Server::signed().await;
        let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
        for bad in [
            "{",
            "",
            "null",
            r#"{"GroupId": 5, "EventType": "Online"}"#,
            r#"{"EventType":"Online","MemberList":[{"Member_Account":"a"}]}"#,
            r#"{"GroupId":"g","EventType":"Online","MemberList":"a"}"#,
            "\u{feff}\u{0}garbage",
        ] {
            assert_fail(&s.post(&q, bad.to_owned()).await, 400);
        }
        assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "malformed"), "7");
        // A query that cannot be read at all.
        let resp = within(
            s.http
                .post(format!("{}/callback?SdkAppid=1&SdkAppid=2", s.base))
                .body("{}")
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        s.assert_no_event();
        assert_eq!(s.get("/healthz").await.status().as_u16(), 200);
        let reply = s
            .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
            .await;
        assert_eq!(reply, (200, ok_reply()));
        s.event().await;
    }

    #[tokio::test]
    async fn unknown_commands_and_event_types_are_ok_and_ignored() {
        let mut s = Server::signed().await;
        let reply = s
            .post_signed("Group.CallbackAfterSendMsg", &json!({"anything": [1, 2]}))
            .await;
        assert_eq!(reply, (200, ok_reply()));
        let q = Server::query("State.StateChange", APP, Some((TOKEN, NOW)));
        assert_eq!(s.post(&q, "not even json").await, (200, ok_reply()));
        let mut away = online_body(&["alice"]);
        away["EventType"] = json!("Away");
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &away).await,
            (200, ok_reply())
        );
        assert_eq!(s.callbacks_counted("other", "ignored"), "2");
        assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "ignored"), "1");
        s.assert_no_event();
    }

    #[tokio::test]
    async fn invalid_accounts_are_skipped_and_invalid_groups_ignored() {
        let mut s = Server::signed().await;
        let long = "x".repeat(33);
        let body = online_body(&["alice", "", &long, "bob"]);
        assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
        assert_eq!(
            s.event().await,
            event("@TGS#aAAA", &["alice", "bob"], MemberEvent::Online)
        );
        let body = online_body(&["", &long]);
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &body).await,
            (200, ok_reply())
        );
        let mut no_group = online_body(&["alice"]);
        no_group["GroupId"] = json!("");
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &no_group).await,
            (200, ok_reply())
        );
        s.assert_no_event();
    }

    #[tokio::test]
    async fn event_time_may_be_a_number_or_a_string() {
        let mut s = Server::signed().await;
        for time in [json!(1_669_872_112), json!("1669872112")] {
            let mut body = online_body(&["alice"]);
            body["EventTime"] = time;
            assert_eq!(
                s.post_signed(MEMBER_STATE_CHANGE, &body).await,
                (200, ok_reply())
            );
            s.event().await;
            let body = json!({
                "GroupId": "@TGS#b", "Type": "AVChatRoom", "ExitType": "Quit",
                "ExitMemberList": [{"Member_Account": "carol"}], "EventTime": body["EventTime"],
            });
            assert_eq!(s.post_signed(AFTER_MEMBER_EXIT, &body).await.0, 200);
            s.event().await;
        }
    }

    #[tokio::test]
    async fn join_and_exit_map_to_online_and_offline() {
        let mut s = Server::signed().await;
        let join = json!({
            "CallbackCommand": AFTER_NEW_MEMBER_JOIN,
            "GroupId": "@TGS#b", "Type": "AVChatRoom", "JoinType": "Apply",
            "Operator_Account": "dave",
            "NewMemberList": [{"Member_Account": "dave"}, {"Member_Account": "erin"}],
            "EventTime": 1_669_872_112_000_i64,
        });
        assert_eq!(s.post_signed(AFTER_NEW_MEMBER_JOIN, &join).await.0, 200);
        assert_eq!(
            s.event().await,
            event("@TGS#b", &["dave", "erin"], MemberEvent::Online)
        );
        let exit = json!({
            "CallbackCommand": AFTER_MEMBER_EXIT,
            "GroupId": "@TGS#b", "Type": "AVChatRoom", "ExitType": "Kicked",
            "Operator_Account": "admin",
            "ExitMemberList": [{"Member_Account": "erin"}],
            "EventTime": "1669872112000",
        });
        assert_eq!(s.post_signed(AFTER_MEMBER_EXIT, &exit).await.0, 200);
        assert_eq!(
            s.event().await,
            event("@TGS#b", &["erin"], MemberEvent::Offline)
        );
        let mut offline = online_body(&["alice"]);
        offline["EventType"] = json!("Offline");
        offline
            .as_object_mut()
            .unwrap()
            .remove("EventCause")
            .unwrap();
        assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &offline).await.0, 200);
        assert_eq!(
            s.event().await,
            event("@TGS#aAAA", &["alice"], MemberEvent::Offline)
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_event_but_still_answers_ok() {
        let mut s = Server::start(Some(TOKEN), Arc::new(ManualClock::new(NOW)), 1).await;
        let body = online_body(&["alice"]);
        let started = std::time::Instant::now();
        for _ in 0..3 {
            assert_eq!(
                s.post_signed(MEMBER_STATE_CHANGE, &body).await,
                (200, ok_reply())
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        s.event().await;
        s.assert_no_event();
        assert!(
            s.metrics
                .encode()
                .contains("marksync_callback_events_dropped_total 2\n")
        );
        assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"), "3");
        // With the receiver gone, callbacks are still answered.
        let Server { events, .. } = &mut s;
        events.close();
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &body).await,
            (200, ok_reply())
        );
    }

    #[tokio::test]
    async fn healthz_readyz_and_metrics() {
        let s = Server::signed().await;
        let r = s.get("/healthz").await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(within(r.text()).await.unwrap(), "ok");

        let r = s.get("/readyz").await;
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(within(r.text()).await.unwrap(), "not ready");
        s.ready.send_replace(Readiness {
            desired_ok: false,
            last_reconcile_ok: true,
            detail: "groups.yaml:3:5: mark 1001 out of range".into(),
        });
        let r = s.get("/readyz").await;
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(
            within(r.text()).await.unwrap(),
            "groups.yaml:3:5: mark 1001 out of range"
        );
        s.ready.send_replace(Readiness {
            desired_ok: true,
            last_reconcile_ok: false,
            detail: "last reconcile failed".into(),
        });
        assert_eq!(s.get("/readyz").await.status().as_u16(), 503);
        s.ready.send_replace(Readiness {
            desired_ok: true,
            last_reconcile_ok: true,
            detail: "ok".into(),
        });
        let r = s.get("/readyz").await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(within(r.text()).await.unwrap(), "ready");

        s.metrics
            .record_call("set", "ok", Duration::from_millis(20));
        s.metrics.record_reconcile("files", "partial");
        s.metrics.set_managed(42);
        s.metrics.set_desired_errors(0);
        let r = s.get("/metrics").await;
        assert_eq!(r.status().as_u16(), 200);
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(ct, METRICS_CONTENT_TYPE);
        assert!(
            ct.starts_with("application/openmetrics-text; version=1.0.0"),
            "{ct}"
        );
        let text = within(r.text()).await.unwrap();
        for line in [
            "marksync_calls_total{command=\"set\",outcome=\"ok\"} 1\n",
            "marksync_call_duration_seconds_count{command=\"set\"} 1\n",
            "marksync_reconciles_total{trigger=\"files\",outcome=\"partial\"} 1\n",
            "marksync_managed_marks 42\n",
            "marksync_desired_ok 1\n",
            "marksync_pending_marks 0\n",
            &format!(
                "marksync_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION"),
                crate::metrics::BUILD_COMMIT
            ),
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }

        assert_eq!(s.get("/nope").await.status().as_u16(), 404);
        assert_eq!(s.get("/callback").await.status().as_u16(), 405);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let (_ready, readiness) = watch::channel(Readiness::default());
        let (events, _rx) = mpsc::channel(1);
        let state = HttpState {
            metrics: Arc::new(Metrics::new()),
            readiness,
            events,
            sdkappid: APP,
            token: None,
            clock: Arc::new(SystemClock),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        stop.send(()).unwrap();
        within(task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_emulator_sends_signed_callbacks_that_arrive_as_events() {
        // The emulator signs with the real clock, so the listener uses it too.
        let mut s = Server::start(Some("emu-token"), Arc::new(SystemClock), 16).await;
        let url = format!("{}/callback", s.base);
        let mut cfg = EmulatorConfig::new(APP, "secret", "admin");
        cfg.callback_url = Some(url.clone());
        cfg.callback_token = Some("emu-token".into());
        let emu = within(Emulator::start(cfg)).await.unwrap();

        // An explicit callback.
        let reply = within(emu.send_callback(
            &url,
            Some("emu-token"),
            AFTER_NEW_MEMBER_JOIN,
            json!({
                "GroupId": "@TGS#e2e", "Type": "AVChatRoom", "JoinType": "Apply",
                "NewMemberList": [{"Member_Account": "u1"}], "EventTime": 1,
            }),
        ))
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&reply.body).unwrap(),
            ok_reply()
        );
        assert_eq!(
            s.event_now().await,
            event("@TGS#e2e", &["u1"], MemberEvent::Online)
        );

        // The wrong token is refused.
        let reply = within(emu.send_callback(&url, Some("nope"), MEMBER_STATE_CHANGE, json!({})))
            .await
            .unwrap();
        assert_eq!(reply.status, 401);
        s.assert_no_event();

        // Presence changes in the emulator's world send member-state callbacks.
        emu.create_group("@TGS#live", GroupType::AVChatRoom)
            .unwrap();
        within(emu.set_online("@TGS#live", &["u2", "u3"]))
            .await
            .unwrap();
        assert_eq!(
            s.event_now().await,
            event("@TGS#live", &["u2", "u3"], MemberEvent::Online)
        );
        within(emu.set_offline("@TGS#live", &["u3"])).await.unwrap();
        assert_eq!(
            s.event_now().await,
            event("@TGS#live", &["u3"], MemberEvent::Offline)
        );
        within(emu.shutdown()).await.unwrap();
    }
    mod listener {
        use super::super::*;
        use super::within;
        use std::net::SocketAddr;
        use std::time::Instant;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;
        use tokio::sync::oneshot;

        /// Bounds every wait of these tests.
        const BOUND: Duration = Duration::from_secs(10);

        /// Tight limits so that the tests run in about a second.
        fn limits(max_connections: usize) -> Limits {
            Limits {
                max_connections,
                header_read_timeout: Duration::from_millis(500),
                max_connection_age: Duration::from_secs(30),
                close_grace: Duration::from_millis(200),
            }
        }

        /// `/healthz`, and `/slow` whose handler takes `ms` milliseconds.
        async fn start(limits: Limits) -> SocketAddr {
            let app = Router::new().route("/healthz", get(healthz)).route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    "slow"
                }),
            );
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve_with(listener, app, limits, std::future::pending()));
            addr
        }

        /// Sends a one-shot GET on a new connection; the whole answer, or `""` when the
        /// connection was closed without one.
        async fn get_on(stream: &mut TcpStream, path: &str) -> String {
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut out))
                .await
                .expect("answer or close within the bound");
            String::from_utf8_lossy(&out).into_owned()
        }

        async fn fetch(addr: SocketAddr, path: &str) -> String {
            let mut s = TcpStream::connect(addr).await.unwrap();
            get_on(&mut s, path).await
        }

        /// How long until the peer closes `stream` (reads and discards whatever it sends).
        async fn closed_after(stream: &mut TcpStream, start: Instant) -> Duration {
            let mut buf = [0u8; 1024];
            tokio::time::timeout(BOUND, async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await
            .expect("the connection is closed within the bound");
            start.elapsed()
        }

        #[test]
        fn the_cap_is_a_quarter_of_the_descriptors_and_at_most_256() {
            assert_eq!(Limits::for_nofile(Some(64)).max_connections, 16);
            assert_eq!(Limits::for_nofile(Some(1024)).max_connections, 256);
            assert_eq!(Limits::for_nofile(Some(524_288)).max_connections, 256);
            assert_eq!(Limits::for_nofile(Some(2)).max_connections, 1);
            assert_eq!(Limits::for_nofile(None).max_connections, MAX_CONNECTIONS);
            let proc_limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                Max processes             127339               127339               processes\n\
                Max open files            1024                 524288               files\n";
            assert_eq!(parse_nofile_soft(proc_limits), Some(1024));
            assert_eq!(
                parse_nofile_soft("Max open files  unlimited  unlimited  files\n"),
                None
            );
            assert!(
                nofile_soft_limit().is_some(),
                "/proc/self/limits is readable here"
            );
        }

        #[tokio::test]
        async fn idle_connections_make_room_for_new_ones_and_time_out() {
            let addr = start(limits(4)).await;
            let opened = Instant::now();
            let mut idle = Vec::new();
            for _ in 0..20 {
                idle.push(TcpStream::connect(addr).await.unwrap());
            }
            // Twenty idle connections against a cap of four: a new request still gets through,
            // at once, by evicting the oldest idle one.
            let t = Instant::now();
            let answer = fetch(addr, "/healthz").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("ok"), "{answer}");
            assert!(
                t.elapsed() < Duration::from_millis(400),
                "{:?}",
                t.elapsed()
            );
            // And every idle connection is closed: evicted, or after the header read timeout.
            for s in &mut idle {
                let after = closed_after(s, opened).await;
                assert!(
                    after < Duration::from_millis(2500),
                    "closed after {after:?}"
                );
            }
        }

        #[tokio::test]
        async fn a_kept_alive_connection_is_closed_once_idle_for_the_header_timeout() {
            let addr = start(limits(4)).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(BOUND, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            let idle_since = Instant::now();
            let after = closed_after(&mut s, idle_since).await;
            assert!(
                after >= Duration::from_millis(400) && after < Duration::from_millis(2000),
                "closed after {after:?}"
            );
        }

        #[tokio::test]
        async fn a_header_sent_byte_by_byte_is_cut_at_the_timeout() {
            let addr = start(limits(4)).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            let start = Instant::now();
            let header =
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut cut = false;
            for b in header {
                if s.write_all(&[*b]).await.is_err() {
                    cut = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if start.elapsed() > Duration::from_millis(1500) {
                    break;
                }
            }
            let after = if cut {
                start.elapsed()
            } else {
                closed_after(&mut s, start).await
            };
            assert!(
                after < Duration::from_millis(2000),
                "closed after {after:?}"
            );
        }

        #[tokio::test]
        async fn busy_connections_are_not_evicted_and_an_extra_one_is_closed() {
            let addr = start(limits(2)).await;
            let slow: Vec<_> = (0..2)
                .map(|_| tokio::spawn(async move { fetch(addr, "/slow").await }))
                .collect();
            // Let both requests reach their handler.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = Instant::now();
            let extra = fetch(addr, "/healthz").await;
            assert_eq!(extra, "", "no answer: closed at once");
            assert!(
                t.elapsed() < Duration::from_millis(400),
                "{:?}",
                t.elapsed()
            );
            for h in slow {
                let answer = within(h).await.unwrap();
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                assert!(answer.ends_with("slow"), "{answer}");
            }
            // Slots come back once the busy connections end.
            let answer = fetch(addr, "/healthz").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }

        #[tokio::test]
        async fn shutdown_stops_accepting_and_lets_requests_in_flight_finish() {
            let app = Router::new().route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            );
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let mut limits = limits(4);
            limits.close_grace = Duration::from_secs(2);
            let server = tokio::spawn(serve_with(listener, app, limits, async {
                let _ = stopped.await;
            }));
            let in_flight = tokio::spawn(async move { fetch(addr, "/slow").await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.send(()).unwrap();
            let answer = within(in_flight).await.unwrap();
            assert!(answer.ends_with("slow"), "{answer}");
            within(server).await.unwrap().unwrap();
            assert!(
                TcpStream::connect(addr).await.is_err(),
                "no longer listening"
            );
        }
    }
}
