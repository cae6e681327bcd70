//! The emulator's control API (`/emulator/...`): groups, members, marks as another tool sets
//! them, faults, the clock, statistics, reset and callbacks. Every answer is JSON; a failure is a
//! 4xx with `{"error": ...}`.

use super::*;

/// The control API's routes, for the listener's router (which adds the guard every request
/// passes).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/emulator/groups", get(groups))
        .route("/emulator/groups/create", post(create_group))
        .route("/emulator/groups/dissolve", post(dissolve_group))
        .route("/emulator/members", post(set_members))
        .route("/emulator/marks", get(marks_by_query).post(marks_by_body))
        .route("/emulator/marks/set", post(set_marks_as_other))
        .route("/emulator/marks/clear", post(clear_marks_as_other))
        .route(
            "/emulator/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/emulator/faults/clear", post(clear_faults))
        .route("/emulator/clock", get(clock))
        .route("/emulator/clock/advance", post(advance_clock))
        .route("/emulator/clock/set", post(set_clock))
        .route("/emulator/stats", get(stats))
        .route("/emulator/reset", post(reset))
        .route("/emulator/callbacks", post(send_callback))
}

/// A control API failure: a 4xx status with `{"error": ...}`.
pub(super) struct ControlFail(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ControlFail {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

type ControlResult = Result<axum::Json<Value>, ControlFail>;

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlFail> {
    serde_json::from_slice(body).map_err(|e| {
        ControlFail(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

fn not_found(msg: String) -> ControlFail {
    ControlFail(StatusCode::NOT_FOUND, msg)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupReq {
    group_id: String,
    #[serde(default, rename = "type")]
    kind: GroupType,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRef {
    group_id: String,
}

async fn groups(State(shared): State<Arc<Shared>>) -> ControlResult {
    let now = shared.now();
    Ok(axum::Json(to_value(&shared.lock().world.view(None, now))))
}

async fn create_group(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let req: GroupReq = parse_body(&body)?;
    shared
        .lock()
        .world
        .create_group(&req.group_id, req.kind)
        .map_err(|e| ControlFail(StatusCode::CONFLICT, e))?;
    Ok(axum::Json(
        json!({ "group_id": req.group_id, "type": req.kind }),
    ))
}

async fn dissolve_group(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let req: GroupRef = parse_body(&body)?;
    shared
        .lock()
        .world
        .dissolve_group(&req.group_id)
        .map_err(not_found)?;
    Ok(axum::Json(
        json!({ "group_id": req.group_id, "dissolved": true }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersReq {
    group_id: String,
    accounts: Vec<String>,
    state: MemberState,
}

async fn set_members(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let req: MembersReq = parse_body(&body)?;
    let deliveries = shared
        .set_members(&req.group_id, &req.accounts, req.state)
        .await
        .map_err(|e| not_found(e.0))?;
    let callbacks: Vec<Value> = deliveries
        .into_iter()
        .map(|d| match d.result {
            Ok(reply) => json!({ "body": d.body, "status": reply.status, "reply": reply.body }),
            Err(e) => json!({ "body": d.body, "error": e.to_string() }),
        })
        .collect();
    Ok(axum::Json(json!({ "callbacks": callbacks })))
}

fn marks_json(shared: &Shared, group: &str) -> ControlResult {
    let now = shared.now();
    let mut inner = shared.lock();
    if inner.world.view(Some(group), now).is_empty() {
        return Err(not_found(format!("group {group} does not exist")));
    }
    Ok(axum::Json(to_value(&inner.world.marks_of(group, now))))
}

async fn marks_by_query(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<GroupRef>, QueryRejection>,
) -> ControlResult {
    let Query(req) = query.map_err(|e| ControlFail(StatusCode::BAD_REQUEST, e.body_text()))?;
    marks_json(&shared, &req.group_id)
}

async fn marks_by_body(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let req: GroupRef = parse_body(&body)?;
    marks_json(&shared, &req.group_id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtherToolReq {
    group_id: String,
    accounts: Vec<String>,
    marks: Vec<u32>,
}

fn modify_as_other(shared: &Shared, body: &[u8], set: bool) -> ControlResult {
    let req: OtherToolReq = parse_body(body)?;
    let accounts: Vec<&str> = req.accounts.iter().map(String::as_str).collect();
    let applied = shared
        .modify_as_other(&req.group_id, &accounts, &req.marks, set)
        .map_err(|e| ControlFail(StatusCode::CONFLICT, e.0))?;
    Ok(axum::Json(to_value(&applied)))
}

async fn set_marks_as_other(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    modify_as_other(&shared, &body, true)
}

async fn clear_marks_as_other(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    modify_as_other(&shared, &body, false)
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> ControlResult {
    Ok(axum::Json(to_value(&shared.lock().faults.list())))
}

async fn add_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let fault: Fault = parse_body(&body)?;
    fault
        .validate()
        .map_err(|e| ControlFail(StatusCode::BAD_REQUEST, e))?;
    let id = shared.lock().faults.add(fault);
    Ok(axum::Json(json!({ "id": id })))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> ControlResult {
    shared.lock().faults.clear();
    Ok(axum::Json(json!({ "cleared": true })))
}

fn clock_json(shared: &Shared) -> Value {
    let now = shared.now();
    json!({ "now": now, "offset": shared.lock().clock_offset })
}

async fn clock(State(shared): State<Arc<Shared>>) -> ControlResult {
    Ok(axum::Json(clock_json(&shared)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceReq {
    seconds: i64,
}

async fn advance_clock(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let req: AdvanceReq = parse_body(&body)?;
    shared.advance_clock(req.seconds);
    Ok(axum::Json(clock_json(&shared)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetClockReq {
    now: i64,
}

async fn set_clock(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let req: SetClockReq = parse_body(&body)?;
    shared.set_clock(req.now);
    Ok(axum::Json(clock_json(&shared)))
}

#[derive(Deserialize)]
struct StatsQuery {
    #[serde(default)]
    log: bool,
}

async fn stats(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> ControlResult {
    let with_log = query.map(|Query(q)| q.log).unwrap_or(false);
    Ok(axum::Json(to_value(&shared.lock().traffic.stats(with_log))))
}

async fn reset(State(shared): State<Arc<Shared>>) -> ControlResult {
    shared.reset();
    Ok(axum::Json(json!({ "reset": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackReq {
    url: String,
    #[serde(default)]
    token: Option<String>,
    command: String,
    #[serde(default)]
    body: Option<Value>,
    /// Overrides `RequestTime` (unix seconds) to test a receiver's clock-skew check.
    #[serde(default)]
    request_time: Option<i64>,
}

async fn send_callback(State(shared): State<Arc<Shared>>, body: Bytes) -> ControlResult {
    let req: CallbackReq = parse_body(&body)?;
    let body = req.body.unwrap_or_else(|| json!({}));
    match shared
        .send_callback(
            &req.url,
            req.token.as_deref(),
            &req.command,
            body,
            req.request_time,
        )
        .await
    {
        Ok(reply) => Ok(axum::Json(to_value(&reply))),
        Err(e @ (CallbackError::BadUrl(_) | CallbackError::NotLoopback(_))) => {
            Err(ControlFail(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Err(e) => Err(ControlFail(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}
