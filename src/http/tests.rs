//! Tests of the listener: routes, callback checks, connection limits.

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
    /// Makes this listener a standby (or active again).
    role: watch::Sender<forward::Role>,
    http: reqwest::Client,
    /// Signed calls made so far: the next one is signed this many seconds before `NOW`.
    signed_calls: std::sync::atomic::AtomicI64,
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
        let (role, role_rx) = watch::channel(forward::Role::Active);
        let state = HttpState {
            token: token.map(str::to_owned),
            role: role_rx,
            ..HttpState::new(metrics.clone(), readiness, tx, APP, clock)
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
            role,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            signed_calls: Default::default(),
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

    /// Posts `body` for `command`, correctly signed at a `RequestTime` within the window of
    /// `NOW` that no earlier call used (each is a new callback, never a replay).
    async fn post_signed(&self, command: &str, body: &Value) -> (u16, Value) {
        let age = self
            .signed_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(age < 60, "more signed calls than seconds in the window");
        self.post_signed_at(command, body, NOW - age).await
    }

    /// Posts `body` for `command`, correctly signed at `time`.
    async fn post_signed_at(&self, command: &str, body: &Value, time: i64) -> (u16, Value) {
        self.post(
            &Self::query(command, APP, Some((TOKEN, time))),
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
fn debug_never_shows_the_token() {
    let (_tx, readiness) = watch::channel(Readiness::default());
    let (events, _rx) = mpsc::channel(1);
    let state = HttpState {
        token: Some("supersecrettoken".into()),
        ..HttpState::new(
            Arc::new(Metrics::new()),
            readiness,
            events,
            APP,
            Arc::new(SystemClock),
        )
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
    let started = std::time::Instant::now();
    for who in ["alice", "bob", "carol"] {
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &online_body(&[who]))
                .await,
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
        s.post_signed(MEMBER_STATE_CHANGE, &online_body(&["dave"]))
            .await,
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
        ..Readiness::default()
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
        ..Readiness::default()
    });
    assert_eq!(s.get("/readyz").await.status().as_u16(), 503);
    s.ready.send_replace(Readiness {
        desired_ok: true,
        last_reconcile_ok: true,
        detail: "ok".into(),
        ..Readiness::default()
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
    let state = HttpState::new(
        Arc::new(Metrics::new()),
        readiness,
        events,
        APP,
        Arc::new(SystemClock),
    );
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    let before = within(tokio::net::TcpStream::connect(addr)).await;
    assert!(before.is_ok(), "the server accepts before shutdown");
    drop(before);
    stop.send(()).unwrap();
    within(task).await.unwrap().unwrap();
    // The port no longer accepts: the listener went with the server.
    let after = within(tokio::net::TcpStream::connect(addr)).await;
    assert!(after.is_err(), "a connection was accepted after shutdown");
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

mod listener;

#[tokio::test]
async fn a_replayed_signed_callback_is_refused_and_counted() {
    let mut s = Server::signed().await;
    let body = online_body(&["alice"]);
    assert_eq!(
        s.post_signed_at(MEMBER_STATE_CHANGE, &body, NOW).await,
        (200, ok_reply())
    );
    s.event().await;
    for _ in 0..5 {
        let reply = s.post_signed_at(MEMBER_STATE_CHANGE, &body, NOW).await;
        assert_fail(&reply, 409);
        assert!(
            reply.1["ErrorInfo"].as_str().unwrap().contains("replay"),
            "{reply:?}"
        );
    }
    // Another body naming the same change (the Sign does not cover the body): a replay too.
    let mut altered = online_body(&["alice", "alice"]);
    altered["EventCause"] = json!("Something");
    assert_fail(
        &s.post_signed_at(MEMBER_STATE_CHANGE, &altered, NOW).await,
        409,
    );
    s.assert_no_event();
    // Same Sign and RequestTime, a new member: the service's callbacks of one second share
    // their Sign, so this is another callback; the change seen before is dropped from it.
    assert_eq!(
        s.post_signed_at(MEMBER_STATE_CHANGE, &online_body(&["alice", "bob"]), NOW)
            .await,
        (200, ok_reply())
    );
    assert_eq!(
        s.event().await,
        event("@TGS#aAAA", &["bob"], MemberEvent::Online)
    );
    let text = s.metrics.encode();
    assert!(
        text.contains("marksync_callback_refusals_total{reason=\"replayed\"} 6\n"),
        "{text}"
    );
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "replayed"), "6");
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"), "2");
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let s = Server::signed().await;
    let body = online_body(&["alice"]).to_string();
    let unsigned = Server::query(MEMBER_STATE_CHANGE, APP, None);
    assert_fail(&s.post(&unsigned, body.clone()).await, 401);
    let other_app = Server::query(MEMBER_STATE_CHANGE, APP + 1, Some((TOKEN, NOW)));
    assert_fail(&s.post(&other_app, body.clone()).await, 403);
    let old = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW - 61)));
    assert_fail(&s.post(&old, body).await, 401);
    let text = s.metrics.encode();
    for (reason, n) in [
        ("rejected_sign", 1),
        ("rejected_app", 1),
        ("rejected_time", 1),
        ("replayed", 0),
        ("malformed", 0),
    ] {
        let line = format!("marksync_callback_refusals_total{{reason=\"{reason}\"}} {n}\n");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn readyz_warns_when_unsigned_callbacks_are_served_beyond_loopback() {
    let (ready, readiness) = watch::channel(Readiness::default());
    let (events, _rx) = mpsc::channel(1);
    let state = HttpState::new(
        Arc::new(Metrics::new()),
        readiness,
        events,
        APP,
        Arc::new(SystemClock),
    );
    let http = crate::config::Http {
        listen: "0.0.0.0:0".parse().unwrap(),
        callback_token_file: None,
        allow_unsigned_callbacks: true,
    };
    let listener = within(start(&http, state)).await.unwrap();
    let url = format!("http://127.0.0.1:{}/readyz", listener.addr.port());
    let get = || async {
        let r = within(reqwest::get(&url)).await.unwrap();
        (r.status().as_u16(), within(r.text()).await.unwrap())
    };
    let (status, body) = get().await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("not ready\nwarning: callbacks on 0.0.0.0:"),
        "{body}"
    );
    assert!(body.contains("without a signature"), "{body}");
    ready.send_replace(Readiness {
        desired_ok: true,
        last_reconcile_ok: true,
        detail: "ok".into(),
        ..Readiness::default()
    });
    let (status, body) = get().await;
    assert_eq!(status, 200);
    assert!(body.starts_with("ready\nwarning: "), "{body}");
    listener.task.abort();
}

/// The `host:port` a test server listens on.
fn address(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_standby_relays_a_checked_callback_to_the_active_daemon() {
    let mut active = Server::signed().await;
    let mut standby = Server::signed().await;
    standby.role.send_replace(forward::Role::Standby {
        active: Some(address(&active)),
    });
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
        .await;
    assert_eq!(reply, (200, ok_reply()), "the active daemon's answer");
    assert_eq!(
        active.event().await,
        event("@TGS#aAAA", &["alice"], MemberEvent::Online),
        "the active daemon acts on it"
    );
    standby.assert_no_event();
    assert_eq!(
        standby.callbacks_counted(MEMBER_STATE_CHANGE, "forwarded"),
        "1"
    );
    assert_eq!(
        active.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"),
        "1"
    );

    // Promoted: the same listener acts on callbacks itself.
    standby.role.send_replace(forward::Role::Active);
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["bob"]))
        .await;
    assert_eq!(reply, (200, ok_reply()));
    assert_eq!(
        standby.event().await,
        event("@TGS#aAAA", &["bob"], MemberEvent::Online)
    );
    active.assert_no_event();
}

#[tokio::test]
async fn a_standby_relays_nothing_the_active_daemon_would_refuse() {
    let mut active = Server::signed().await;
    let standby = Server::signed().await;
    standby.role.send_replace(forward::Role::Standby {
        active: Some(address(&active)),
    });
    let wrong = Server::query(MEMBER_STATE_CHANGE, APP, Some(("other", NOW)));
    let reply = standby
        .post(&wrong, online_body(&["alice"]).to_string())
        .await;
    assert_fail(&reply, 401);
    let other_app = Server::query(MEMBER_STATE_CHANGE, APP + 1, Some((TOKEN, NOW)));
    assert_fail(
        &standby
            .post(&other_app, online_body(&["alice"]).to_string())
            .await,
        403,
    );
    // Nothing reached the active daemon: its counters are untouched.
    active.assert_no_event();
    assert!(
        !active.metrics.encode().contains("outcome=\"accepted\"} 1"),
        "{}",
        active.metrics.encode()
    );
}

#[tokio::test]
async fn a_standby_without_a_reachable_active_daemon_answers_503_and_counts_it() {
    let standby = Server::signed().await;
    standby
        .role
        .send_replace(forward::Role::Standby { active: None });
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
        .await;
    assert_fail(&reply, 503);
    assert!(
        reply.1["ErrorInfo"]
            .as_str()
            .unwrap()
            .contains("no active daemon"),
        "{reply:?}"
    );

    // An active daemon that accepts the connection and never answers: the relay gives up
    // (within FORWARD_TIMEOUT, under the service's 2 s) instead of hanging.
    let silent = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    standby.role.send_replace(forward::Role::Standby {
        active: Some(silent.local_addr().unwrap().to_string()),
    });
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
        .await;
    assert_fail(&reply, 503);
    assert!(
        reply.1["ErrorInfo"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{reply:?}"
    );
    assert_eq!(
        standby.callbacks_counted(MEMBER_STATE_CHANGE, "forward_failed"),
        "2"
    );

    // A wildcard address is never relayed to: from here it would be this standby itself.
    standby.role.send_replace(forward::Role::Standby {
        active: Some(format!(
            "0.0.0.0:{}",
            address(&standby).rsplit(':').next().unwrap()
        )),
    });
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
        .await;
    assert_fail(&reply, 503);
    assert!(
        reply.1["ErrorInfo"]
            .as_str()
            .unwrap()
            .contains("cannot reach as written"),
        "{reply:?}"
    );
    drop(silent);
}

#[tokio::test]
async fn a_standby_is_ready_while_its_desired_files_load_and_says_so() {
    let s = Server::signed().await;
    s.ready.send_replace(Readiness {
        desired_ok: true,
        last_reconcile_ok: false,
        detail: String::new(),
        standby: Some("`run` (pid 7 on host-a) is active".into()),
    });
    let r = s.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        within(r.text()).await.unwrap(),
        "standby: `run` (pid 7 on host-a) is active"
    );
    s.ready.send_replace(Readiness {
        desired_ok: false,
        last_reconcile_ok: false,
        detail: "marks/a.yaml:3:5: mark 1001 out of range".into(),
        standby: Some("`run` (pid 7 on host-a) is active".into()),
    });
    assert_eq!(s.get("/readyz").await.status().as_u16(), 503);
}

/// A standby's recorded active address can reach a standby: the same address advertised by two
/// daemons, or a dead active pod's IP given to a new replica. Relayed once, a callback is never
/// relayed again: the standby it reaches answers 503 at once, saying why, instead of passing it
/// on in a loop until the time runs out.
#[tokio::test]
async fn a_relayed_callback_that_reaches_a_standby_is_not_relayed_again() {
    let mut first = Server::signed().await;
    let mut second = Server::signed().await;
    // `second` points at itself; `first` relays to `second`.
    second.role.send_replace(forward::Role::Standby {
        active: Some(address(&second)),
    });
    first.role.send_replace(forward::Role::Standby {
        active: Some(address(&second)),
    });
    for s in [&first, &second] {
        let started = std::time::Instant::now();
        let reply = s
            .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
            .await;
        assert_eq!(reply.0, 503, "{reply:?}");
        assert!(
            started.elapsed() < forward::FORWARD_TIMEOUT,
            "answered at once, not at the relay's timeout"
        );
        assert!(
            reply.1["ErrorInfo"]
                .as_str()
                .unwrap()
                .contains("reaches a standby"),
            "{reply:?}"
        );
    }
    assert_eq!(
        second.callbacks_counted(MEMBER_STATE_CHANGE, "forward_loop"),
        "2",
        "the relayed copies were refused where they arrived"
    );
    first.assert_no_event();
    second.assert_no_event();
}
