//! The HTTP face of the emulator: the service routes, the control API, and a listener whose
//! connections a fault can cut.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use super::callbacks::CallbackError;
use super::traffic::{CallRecord, Fault, FaultKind};
use super::world::{GroupType, ListMembers, MemberState, Modify, Refusal};
use crate::model::{MAX_MEMBERS_PER_CALL, UnixTime};
use crate::tim::usersig::{self, SecretKey};
use crate::tim::wire::{
    GET_MEMBERS, GetMembersResponse, MODIFY_USER_INFO, ModifyUserInfoResponse, Status,
};

mod control;
use control::ControlFail;

/// Group IDs longer than this are refused with 10015 (the service's custom IDs are at most 48
/// bytes).
const MAX_GROUP_ID_BYTES: usize = 48;

pub(super) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(shared).into_make_service_with_connect_info::<ConnHandle>();
    axum::serve(CuttableListener(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The control API as `marksync emulator --help` lists it: method(s), path, what it does. A test
/// holds it to the routes of [`router`].
pub(crate) const CONTROL_ROUTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/emulator/groups",
        "every group: members, presence, marks",
    ),
    (
        "POST",
        "/emulator/groups/create",
        "{group_id, type?}: create a group (AVChatRoom by default)",
    ),
    (
        "POST",
        "/emulator/groups/dissolve",
        "{group_id}: dissolve it (calls then get 10010)",
    ),
    (
        "POST",
        "/emulator/members",
        "{group_id, accounts, state: online|offline|left}",
    ),
    (
        "GET",
        "/emulator/marks",
        "?group_id=G: the live marks of a group",
    ),
    ("POST", "/emulator/marks", "{group_id}: the same"),
    (
        "POST",
        "/emulator/marks/set",
        "{group_id, accounts, marks}: set marks as another tool would",
    ),
    (
        "POST",
        "/emulator/marks/clear",
        "{group_id, accounts, marks}: clear them the same way",
    ),
    ("GET", "/emulator/faults", "the fault rules"),
    (
        "POST",
        "/emulator/faults",
        "{kind, code|status|ms, rate, count, path, after}: add a fault",
    ),
    ("DELETE", "/emulator/faults", "remove every fault"),
    ("POST", "/emulator/faults/clear", "remove every fault"),
    ("GET", "/emulator/clock", "the emulator's virtual clock"),
    (
        "POST",
        "/emulator/clock/advance",
        "{seconds}: move the virtual clock (see below)",
    ),
    (
        "POST",
        "/emulator/clock/set",
        "{now}: set it (Unix seconds)",
    ),
    (
        "GET",
        "/emulator/stats",
        "calls counted (?log=true adds the call log)",
    ),
    (
        "POST",
        "/emulator/reset",
        "no groups, faults or statistics; clock offset 0",
    ),
    (
        "POST",
        "/emulator/callbacks",
        "{url, token?, command, body}: a signed callback to loopback",
    ),
];

fn router(shared: Arc<Shared>) -> Router {
    let control = control::routes().route_layer(axum::middleware::from_fn(control_guard));
    Router::new()
        .route(&format!("/{MODIFY_USER_INFO}"), post(modify_user_info))
        .route(&format!("/{GET_MEMBERS}"), post(get_members))
        .merge(control)
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            persist_after,
        ))
        .with_state(shared)
}

/// After every request, the world file (`endpoint: embedded`) gets what the request changed.
async fn persist_after(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    shared.persist();
    response
}

/// What every control API request must be, so that a web page cannot drive the emulator (a
/// DNS-rebinding page reaches loopback under its own host name; a cross-site POST without a
/// preflight carries a form or text content type): its `Host` is a loopback name or address
/// (421 otherwise), and a `POST` says `Content-Type: application/json` (415 otherwise).
async fn control_guard(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host) {
        return ControlFail(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "the control API answers only requests for a loopback host (localhost, 127.0.0.1, [::1]), not {:?}",
                crate::log_escape::Escaped(host).to_string()
            ),
        )
        .into_response();
    }
    if request.method() == axum::http::Method::POST {
        let json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return ControlFail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "control API POSTs must have Content-Type: application/json".into(),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether `host` (a `Host` header: name or address, optional port) is `localhost`, an address
/// in 127.0.0.0/8 or `[::1]`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) =>
            {
                inside
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A port number.
fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok()
}

// ---------------------------------------------------------------------------------------------
// A listener whose connections a handler can cut without answering.

/// Wraps the TCP listener so that every connection carries a kill switch.
struct CuttableListener(TcpListener);

/// A connection that fails every read and write once its switch is flipped, which makes hyper
/// drop it without sending a byte.
struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

/// The kill switch of the connection a request arrived on (axum connect info).
#[derive(Clone)]
struct ConnHandle(Arc<AtomicBool>);

impl ConnHandle {
    fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        ConnHandle(stream.io().cut.clone())
    }
}

impl axum::serve::Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let _ = inner.set_nodelay(true);
                    let cut = Arc::new(AtomicBool::new(false));
                    return (CuttableStream { inner, cut }, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut by an injected fault",
    )
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Service routes.

type QueryMap = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Which service API a call is for.
#[derive(Clone, Copy)]
enum Api {
    Modify,
    List,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Modify => MODIFY_USER_INFO,
            Api::List => GET_MEMBERS,
        }
    }
}

async fn modify_user_info(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    query: QueryMap,
    body: Bytes,
) -> Response {
    service_call(&shared, &conn, Api::Modify, query, &body).await
}

async fn get_members(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    query: QueryMap,
    body: Bytes,
) -> Response {
    service_call(&shared, &conn, Api::List, query, &body).await
}

/// What a service call answers, before it becomes an HTTP response.
enum Answer {
    Json(Value),
    Http(u16),
    Dropped,
}

impl Answer {
    fn refusal((code, info): Refusal) -> Answer {
        Answer::Json(to_value(&Status::fail(code, info)))
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn service_call(
    shared: &Shared,
    conn: &ConnHandle,
    api: Api,
    query: QueryMap,
    body: &[u8],
) -> Response {
    let arrival = Instant::now();
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let plan = {
        let mut inner = shared.lock();
        inner.traffic.arrive(api.path(), arrival);
        inner.faults.roll(api.path())
    };
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    let answer = match plan.failure {
        Some((FaultKind::ShortPage, _)) => {
            Answer::Json(cut_short(handle(shared, api, query, body)))
        }
        Some((kind, false)) => fault_answer(kind),
        Some((kind, true)) => {
            let _ = handle(shared, api, query, body);
            fault_answer(kind)
        }
        None => Answer::Json(handle(shared, api, query, body)),
    };
    if !plan.latency_after.is_zero() {
        tokio::time::sleep(plan.latency_after).await;
    }
    let (http_status, error_code, response) = match answer {
        Answer::Json(v) => {
            let code = v.get("ErrorCode").and_then(Value::as_i64);
            (200, code, axum::Json(v).into_response())
        }
        Answer::Http(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = format!("<html><body><h1>{status}</h1></body></html>");
            (status.as_u16(), None, (status, text).into_response())
        }
        Answer::Dropped => {
            // hyper fails to write this response on the cut connection and closes it.
            conn.cut();
            (0, None, StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    };
    tracing::debug!(path = api.path(), http_status, ?error_code, "service call");
    shared.lock().traffic.record(CallRecord {
        at_ms,
        path: api.path().to_owned(),
        http_status,
        error_code,
    });
    response
}

/// A `get_members` answer cut short: a random part of its page, and `NextTimestamp` 0 as if
/// the listing ended there. A refusal is left as it is.
fn cut_short(mut answer: Value) -> Value {
    if let Some(list) = answer.get_mut("MemberList").and_then(Value::as_array_mut)
        && !list.is_empty()
    {
        list.truncate(rand::random_range(0..list.len()));
    }
    if let Some(next) = answer.get_mut("NextTimestamp") {
        *next = Value::from(0);
    }
    answer
}

fn fault_answer(kind: FaultKind) -> Answer {
    match kind {
        FaultKind::ErrorCode { code } => {
            Answer::refusal((code, format!("injected fault: error {code}")))
        }
        FaultKind::HttpStatus { status } => Answer::Http(status),
        FaultKind::DropConnection => Answer::Dropped,
        // Handled where the call is answered; never a failure on its own.
        FaultKind::ShortPage => Answer::refusal((10002, "injected fault".to_owned())),
        // Latency is never a failure; answer normally if it ever ends up here.
        FaultKind::Latency { .. } => Answer::refusal((10002, "injected fault".to_owned())),
    }
}

/// Runs the checks and the operation; the JSON body of the answer.
fn handle(shared: &Shared, api: Api, query: QueryMap, body: &[u8]) -> Value {
    let now = shared.now();
    let result = authenticate(shared, query, now).and_then(|()| {
        let cfg = &shared.cfg;
        if cfg.enforce_rate_limit
            && !shared
                .lock()
                .traffic
                .admit(cfg.max_calls_per_second, Instant::now())
        {
            return Err((
                60018,
                format!(
                    "request rate limit exceeded: more than {} calls per second",
                    cfg.max_calls_per_second
                ),
            ));
        }
        let rules = cfg.rules();
        match api {
            Api::Modify => {
                let req = parse_modify(body)?;
                let list = shared.lock().world.modify(&req, &rules, now)?;
                Ok(to_value(&ModifyUserInfoResponse {
                    status: Status::ok(),
                    command_type: Some(if req.set { 1 } else { 2 }),
                    member_list: list,
                }))
            }
            Api::List => {
                let req = parse_list(body)?;
                let (members, next) = shared.lock().world.list(&req, &rules, now)?;
                Ok(to_value(&GetMembersResponse {
                    status: Status::ok(),
                    member_list: members,
                    next_timestamp: next,
                }))
            }
        }
    });
    match result {
        Ok(v) => v,
        Err(refusal) => to_value(&Status::fail(refusal.0, refusal.1)),
    }
}

fn authenticate(shared: &Shared, query: QueryMap, now: UnixTime) -> Result<(), Refusal> {
    let Ok(Query(q)) = query else {
        return Err((60006, "query string is not parsable".to_owned()));
    };
    let cfg = &shared.cfg;
    let app: u64 = q
        .get("sdkappid")
        .and_then(|s| s.parse().ok())
        .ok_or((60006, "sdkappid is missing or not a number".to_owned()))?;
    if app != cfg.sdkappid {
        return Err((70016, format!("SDKAppID {app} is unknown in this region")));
    }
    let identifier = q
        .get("identifier")
        .filter(|s| !s.is_empty())
        .ok_or((10001, "identifier is missing: not logged in".to_owned()))?;
    let usersig = q
        .get("usersig")
        .filter(|s| !s.is_empty())
        .ok_or((10001, "usersig is missing: not logged in".to_owned()))?;
    if q.get("random")
        .and_then(|s| s.parse::<u32>().ok())
        .is_none()
    {
        return Err((
            10004,
            "random must be an unsigned 32-bit integer".to_owned(),
        ));
    }
    if q.get("contenttype").map(String::as_str) != Some("json") {
        return Err((10004, "contenttype must be json".to_owned()));
    }
    let key = SecretKey::new(cfg.secret_key.as_str())
        .map_err(|_| (70016, "the emulator has no secret key".to_owned()))?;
    usersig::verify(usersig, app, &key, identifier, now).map_err(|e| (e.code(), e.to_string()))?;
    if *identifier != cfg.admin_identifier {
        return Err((
            60010,
            format!("identifier {identifier} is not an App admin"),
        ));
    }
    Ok(())
}

fn invalid(info: impl Into<String>) -> Refusal {
    (10004, info.into())
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refusal> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| (10011, format!("body is not valid JSON: {e}")))?;
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(invalid("body must be a JSON object")),
    }
}

fn parse_group_id(obj: &serde_json::Map<String, Value>) -> Result<String, Refusal> {
    let id = match obj.get("GroupId") {
        None => return Err(invalid("GroupId is missing")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("GroupId must be a string")),
    };
    if id.is_empty() || id.len() > MAX_GROUP_ID_BYTES || id.chars().any(char::is_control) {
        return Err((10015, format!("invalid group ID {id:?}")));
    }
    Ok(id.clone())
}

fn parse_mark(v: &Value) -> Result<u32, Refusal> {
    v.as_u64()
        .filter(|n| matches!(n, 500 | 600) || *n >= 1000)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(format!(
                "invalid mark {v}: a mark is 500, 600 or an integer >= 1000"
            ))
        })
}

fn parse_modify(body: &[u8]) -> Result<Modify, Refusal> {
    let obj = parse_object(body)?;
    let group_id = parse_group_id(&obj)?;
    let set = match obj.get("CommandType") {
        None => return Err(invalid("CommandType is missing")),
        Some(v) => match v.as_u64() {
            Some(1) => true,
            Some(2) => false,
            _ => {
                return Err((
                    10003,
                    format!("invalid CommandType {v}: 1 sets marks, 2 deletes them"),
                ));
            }
        },
    };
    let list = match obj.get("MemberList") {
        None => return Err(invalid("MemberList is missing")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("MemberList must be an array")),
    };
    if list.is_empty() {
        return Err(invalid("MemberList is empty"));
    }
    if list.len() > MAX_MEMBERS_PER_CALL {
        return Err(invalid(format!(
            "MemberList has {} accounts; at most {MAX_MEMBERS_PER_CALL} are allowed per call",
            list.len()
        )));
    }
    let mut entries = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let account = entry
            .get("Member_Account")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                invalid(format!(
                    "MemberList[{i}].Member_Account is missing or not a non-empty string"
                ))
            })?;
        let marks = entry
            .get("Marks")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid(format!("MemberList[{i}].Marks is missing or empty")))?;
        let marks = marks
            .iter()
            .map(parse_mark)
            .collect::<Result<Vec<u32>, _>>()?;
        entries.push((account.to_owned(), marks));
    }
    Ok(Modify {
        group_id,
        set,
        entries,
    })
}

fn parse_list(body: &[u8]) -> Result<ListMembers, Refusal> {
    let obj = parse_object(body)?;
    let group_id = parse_group_id(&obj)?;
    let cursor = match obj.get("Timestamp") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid("Timestamp must be a non-negative integer"))?,
    };
    let mark = match obj.get("Mark") {
        None | Some(Value::Null) => None,
        Some(v) if v.as_u64() == Some(0) => None,
        Some(v) => Some(parse_mark(v)?),
    };
    Ok(ListMembers {
        group_id,
        cursor,
        mark,
    })
}

async fn unknown_path() -> Response {
    let body = Status::fail(
        10003,
        "unknown API path: the emulator serves modify_user_info and get_members",
    );
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}
