//! Tests of the listener (routes, callback checks, connection limits), one file per concern,
//! and the test server they share.

use super::*;
use crate::clock::{ManualClock, SystemClock};
use crate::emulator::{Emulator, EmulatorConfig, GroupType};
use crate::tim::callback::{AFTER_MEMBER_EXIT, AFTER_NEW_MEMBER_JOIN, MEMBER_STATE_CHANGE};
use serde_json::{Value, json};
use tokio::sync::oneshot;

mod callbacks;
mod listener;
mod probes;
mod standby;

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
