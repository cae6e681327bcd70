use std::collections::{HashMap, VecDeque};
use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::*;
use crate::clock::ManualClock;
use crate::tim::wire::{CommandType, MemberMarks};

const APP: u64 = 1_400_000_000;
const T0: UnixTime = 1_700_000_000;
const KEY: &str = "distinctive-secret-key-0123456789";

/// What the test server answers to one request.
#[derive(Clone)]
enum Reply {
    Json(Value),
    Http(u16),
    Sleep(Duration),
    Text(&'static str),
}

fn ok() -> Value {
    json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "CommandType": 1,
        "MemberList": [{"Member_Account": "alice", "Marks": [1000]}]})
}

fn fail(code: i64) -> Reply {
    Reply::Json(
        json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": format!("err {code}")}),
    )
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    path: String,
    query: HashMap<String, String>,
    body: Value,
}

/// A scripted server: answers from `replies` in order, then success.
struct Server {
    replies: Mutex<VecDeque<Reply>>,
    hits: Mutex<Vec<Hit>>,
    /// Advanced by 10 s on every request, to make time pass between attempts.
    clock: Option<Arc<ManualClock>>,
}

impl Server {
    fn hits(&self) -> Vec<Hit> {
        lock(&self.hits).clone()
    }
}

async fn handle(
    State(s): State<Arc<Server>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    lock(&s.hits).push(Hit {
        at,
        path: uri.path().to_owned(),
        query,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if let Some(c) = &s.clock {
        c.advance(10);
    }
    let reply = lock(&s.replies).pop_front().unwrap_or(Reply::Json(ok()));
    match reply {
        Reply::Json(v) => axum::Json(v).into_response(),
        Reply::Http(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Text(t) => t.into_response(),
        Reply::Sleep(d) => {
            tokio::time::sleep(d).await;
            axum::Json(ok()).into_response()
        }
    }
}

async fn serve(replies: Vec<Reply>, clock: Option<Arc<ManualClock>>) -> (String, Arc<Server>) {
    let server = Arc::new(Server {
        replies: Mutex::new(replies.into()),
        hits: Mutex::new(Vec::new()),
        clock,
    });
    let app = Router::new().fallback(handle).with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), server)
}

fn config(base: &str) -> ClientConfig {
    let mut c = ClientConfig::new(base, APP, "administrator", SecretKey::new(KEY).unwrap());
    c.max_calls_per_second = 1000;
    c.request_timeout = Duration::from_secs(5);
    c.backoff_min = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(20);
    c.slowdown_for = Duration::from_millis(500);
    c.sig_rate_limit_wait = Duration::from_millis(50);
    c
}

fn client(c: ClientConfig) -> Client {
    Client::new(c, Arc::new(ManualClock::new(T0))).unwrap()
}

fn modify() -> ModifyUserInfoRequest {
    ModifyUserInfoRequest {
        group_id: "@TGS#a1".into(),
        command_type: CommandType::Set,
        member_list: vec![MemberMarks {
            account: "alice".into(),
            marks: vec![1000],
        }],
    }
}

/// Every wait in these tests is bounded.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

/// Sends `n` calls at once through clones of `c`; every one must succeed.
async fn all_succeed_at_once(c: &Client, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let c = c.clone();
        set.spawn(async move { c.modify_user_info(&modify()).await });
    }
    bounded(async {
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn request_shape_and_retry_on_10002() {
    let (base, server) = serve(vec![fail(10002), fail(10002)], None).await;
    let c = client(config(&base));
    let resp = bounded(c.modify_user_info(&modify())).await.unwrap();
    assert_eq!(resp.member_list[0].account, "alice");
    let hits = server.hits();
    assert_eq!(hits.len(), 3);
    let stats = c.stats();
    assert_eq!((stats.requests, stats.retries), (3, 2));

    let h = &hits[0];
    assert_eq!(h.path, format!("/{}", wire::MODIFY_USER_INFO));
    assert_eq!(h.query["sdkappid"], APP.to_string());
    assert_eq!(h.query["identifier"], "administrator");
    assert_eq!(h.query["contenttype"], "json");
    h.query["random"].parse::<u32>().unwrap();
    let key = SecretKey::new(KEY).unwrap();
    usersig::verify(&h.query["usersig"], APP, &key, "administrator", T0).unwrap();
    assert_eq!(h.body, serde_json::to_value(modify()).unwrap());
    let randoms: std::collections::HashSet<_> = hits.iter().map(|h| &h.query["random"]).collect();
    assert_eq!(randoms.len(), 3, "a fresh random per request");
}

#[tokio::test]
async fn retries_5xx_and_429() {
    let (base, server) = serve(
        vec![Reply::Http(502), Reply::Http(503), Reply::Http(429)],
        None,
    )
    .await;
    let c = client(config(&base));
    bounded(c.modify_user_info(&modify())).await.unwrap();
    assert_eq!(server.hits().len(), 4);
    assert_eq!(
        c.stats().rate_limited,
        1,
        "429 counts as a rate-limit answer"
    );
}

#[tokio::test]
async fn a_stop_sends_nothing_more_not_even_a_retry() {
    let (base, server) = serve(vec![fail(10002); 3], None).await;
    let c = client(config(&base));
    // Set before the call: nothing leaves, and the caller learns that nothing did.
    let err = bounded(c.modify_user_info_unless(&modify(), &|| true))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Stopped);
    assert!(server.hits().is_empty());
    // Set after the first attempt failed: no retry; the failure is returned, since that
    // attempt may have been applied.
    let hits = || server.hits().len();
    let err = bounded(c.modify_user_info_unless(&modify(), &|| hits() >= 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Unavailable { code: 10002, .. }),
        "{err:?}"
    );
    assert_eq!(server.hits().len(), 1);
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let replies = vec![fail(10002); 10];
    let (base, server) = serve(replies, None).await;
    let mut cfg = config(&base);
    cfg.max_attempts = 3;
    let c = client(cfg);
    let err = bounded(c.modify_user_info(&modify())).await.unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Unavailable {
                attempts: 3,
                code: 10002,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.metric_label(), "unavailable");
    assert_eq!(server.hits().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_slow_down_then_recover() {
    let (base, server) = serve(vec![fail(60018), fail(60018)], None).await;
    let mut cfg = config(&base);
    cfg.max_calls_per_second = 50;
    cfg.slowdown_for = Duration::from_millis(1500);
    let c = client(cfg);
    bounded(c.modify_user_info(&modify())).await.unwrap();
    let stats = c.stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.slowdown_factor, 2);

    // While slowed down, 8 concurrent calls take two 21 ms slots each.
    all_succeed_at_once(&c, 8).await;
    let hits = server.hits();
    let burst = &hits[3..];
    assert_eq!(burst.len(), 8);
    let span = burst.last().unwrap().at - burst[0].at;
    assert!(
        span >= Duration::from_millis(250),
        "8 slowed calls took only {span:?}"
    );

    bounded(tokio::time::sleep(Duration::from_millis(1600))).await;
    assert_eq!(
        c.stats().slowdown_factor,
        1,
        "recovers when the rate-limit answers stop"
    );
}

#[tokio::test]
async fn fatal_and_final_codes_are_not_retried() {
    let cases = [
        (70009, "fatal"),
        (60006, "fatal"),
        (10001, "fatal"),
        (10007, "fatal"),
        (10059, "fatal"),
        (10010, "group_gone"),
        (10015, "group_gone"),
        (10004, "rejected"),
        (10019, "rejected"),
    ];
    for (code, label) in cases {
        let (base, server) = serve(vec![fail(code)], None).await;
        let c = client(config(&base));
        let err = bounded(c.modify_user_info(&modify())).await.unwrap_err();
        assert_eq!(err.metric_label(), label, "code {code}: {err}");
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.is_fatal(), label == "fatal");
        assert_eq!(server.hits().len(), 1, "code {code} must not be retried");
    }
}

#[tokio::test]
async fn expired_usersig_is_regenerated_once() {
    let clock = Arc::new(ManualClock::new(T0));
    let (base, server) = serve(vec![fail(70001)], Some(clock.clone())).await;
    let c = Client::new(config(&base), clock.clone()).unwrap();
    bounded(c.modify_user_info(&modify())).await.unwrap();
    let hits = server.hits();
    assert_eq!(hits.len(), 2);
    let (a, b) = (&hits[0].query["usersig"], &hits[1].query["usersig"]);
    assert_ne!(a, b, "the retry carries a fresh UserSig");
    let key = SecretKey::new(KEY).unwrap();
    let d = usersig::verify(b, APP, &key, "administrator", clock.now()).unwrap();
    assert_eq!(d.time, T0 + 10);
    assert_eq!(c.stats().usersigs_generated, 2);

    // Refused again with a fresh sig: the clock or key is wrong, so it is fatal.
    let (base, server) = serve(vec![fail(70003), fail(70003)], Some(clock.clone())).await;
    let c = Client::new(config(&base), clock).unwrap();
    let err = bounded(c.modify_user_info(&modify())).await.unwrap_err();
    assert!(
        matches!(err, CallError::Fatal { code: 70003, .. }),
        "{err:?}"
    );
    assert_eq!(server.hits().len(), 2);
}

#[tokio::test]
async fn sig_and_rate_limit_waits_then_retries() {
    let (base, server) = serve(vec![fail(70050)], None).await;
    let c = client(config(&base));
    let start = Instant::now();
    bounded(c.modify_user_info(&modify())).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(server.hits().len(), 2);
    assert_eq!(c.stats().slowdown_factor, 2);
}

#[tokio::test]
async fn unknown_response_fields_are_tolerated() {
    let modify_reply = json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
        "ErrorDisplay": "", "RequestId": "abc", "CommandType": 1, "Future": {"x": [1]},
        "MemberList": [{"Member_Account": "bob", "Marks": [1001, 500], "Extra": true}]});
    let members_reply = json!({"ActionStatus": "OK", "ErrorCode": 0, "RequestId": "r",
        "MemberList": [{"Member_Account": "bob", "JoinTime": 1, "NickName": "B", "Avatar": ""}],
        "NextTimestamp": 42});
    let (base, _server) = serve(
        vec![Reply::Json(modify_reply), Reply::Json(members_reply)],
        None,
    )
    .await;
    let c = client(config(&base));
    let r = bounded(c.modify_user_info(&modify())).await.unwrap();
    assert_eq!(r.member_list[0].marks, vec![1001, 500]);
    let req = GetMembersRequest {
        group_id: "@TGS#a1".into(),
        timestamp: 0,
        mark: Some(1001),
    };
    let r = bounded(c.get_members(&req)).await.unwrap();
    assert_eq!(
        (r.member_list[0].account.as_str(), r.next_timestamp),
        ("bob", 42)
    );
}

#[tokio::test]
async fn odd_http_answers() {
    let (base, server) = serve(vec![Reply::Http(404)], None).await;
    let err = bounded(client(config(&base)).modify_user_info(&modify()))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Http { status: 404 });
    assert!(err.is_fatal());
    assert_eq!(server.hits().len(), 1);

    for body in ["<html>proxy</html>", r#"{"message":"not the service"}"#] {
        let (base, server) = serve(vec![Reply::Text(body)], None).await;
        let err = bounded(client(config(&base)).modify_user_info(&modify()))
            .await
            .unwrap_err();
        assert_eq!(err.metric_label(), "invalid_response", "{body}: {err}");
        assert_eq!(server.hits().len(), 1);
    }
}

/// Asserts that nothing secret shows in an error's Display or Debug.
fn assert_clean(err: &CallError, sig: &str) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("usersig="), "{text}");
        assert!(!text.contains(sig), "{text}");
        assert!(!text.contains(KEY), "{text}");
    }
}

#[tokio::test]
async fn transport_errors_carry_no_secret() {
    // Connection refused: a port that was just free.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = config(&format!("http://127.0.0.1:{port}"));
    cfg.max_attempts = 2;
    let c = client(cfg);
    let err = bounded(c.modify_user_info(&modify())).await.unwrap_err();
    assert!(
        matches!(err, CallError::Transport { attempts: 2, .. }),
        "{err:?}"
    );
    assert_clean(&err, &c.usersig_now());

    // Timeout.
    let (base, _server) = serve(vec![Reply::Sleep(Duration::from_secs(5))], None).await;
    let mut cfg = config(&base);
    cfg.max_attempts = 1;
    cfg.request_timeout = Duration::from_millis(200);
    let c = client(cfg);
    let err = bounded(c.modify_user_info(&modify())).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_clean(&err, &c.usersig_now());

    // An ErrorInfo that echoes the sig is scrubbed too.
    let c2 = client(config("http://127.0.0.1:1"));
    let sig = c2.usersig_now();
    let echoed = format!("bad usersig={sig}&x=1 {sig} {KEY}");
    assert_eq!(c2.inner.scrub(&echoed), "bad usersig=***&x=1 *** ***");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_the_limit_in_any_second() {
    const LIMIT: usize = 20;
    let (base, server) = serve(vec![], None).await;
    let mut cfg = config(&base);
    cfg.max_calls_per_second = LIMIT as u32;
    let c = client(cfg);
    all_succeed_at_once(&c, 60).await;
    let mut at: Vec<Instant> = server.hits().iter().map(|h| h.at).collect();
    at.sort();
    assert_eq!(at.len(), 60);
    for (i, start) in at.iter().enumerate() {
        let in_window = at[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) <= Duration::from_secs(1))
            .count();
        assert!(
            in_window <= LIMIT,
            "{in_window} requests within 1 s from request {i}"
        );
    }
    // Not pathologically slow either: 60 at 20/s is about 3 s.
    let total = *at.last().unwrap() - at[0];
    assert!(total < Duration::from_secs(5), "took {total:?}");
}

#[test]
fn usersig_is_renewed_before_it_expires() {
    let clock = Arc::new(ManualClock::new(T0));
    let c = Client::new(config("http://127.0.0.1:1"), clock.clone()).unwrap();
    let first = c.usersig_now();
    // ttl 7 d: renewal once less than 42 h (a quarter) remains, i.e. after 126 h.
    clock.set(T0 + 126 * 3600);
    assert_eq!(c.usersig_now(), first);
    clock.set(T0 + 126 * 3600 + 1);
    let second = c.usersig_now();
    assert_ne!(second, first);
    clock.set(T0);
    assert_ne!(
        c.usersig_now(),
        second,
        "a clock that stepped back gets a fresh sig"
    );

    // ttl 2 h: the one-hour floor of the margin applies.
    let mut cfg = config("http://127.0.0.1:1");
    cfg.usersig_ttl = Duration::from_secs(2 * 3600);
    let clock = Arc::new(ManualClock::new(T0));
    let c = Client::new(cfg, clock.clone()).unwrap();
    let first = c.usersig_now();
    clock.set(T0 + 3600);
    assert_eq!(c.usersig_now(), first);
    clock.set(T0 + 3601);
    assert_ne!(c.usersig_now(), first);
    assert_eq!(c.stats().usersigs_generated, 2);
}

#[test]
fn client_build_checks_the_endpoint() {
    let err =
        Client::new(config("http://example.com"), Arc::new(ManualClock::new(T0))).unwrap_err();
    assert!(matches!(
        err,
        ClientBuildError::Endpoint(EndpointError::InsecureHttp { .. })
    ));
    let mut cfg = config("https://example.com");
    cfg.max_calls_per_second = 0;
    assert!(Client::new(cfg, Arc::new(ManualClock::new(T0))).is_err());
}

#[test]
fn usersig_parameter_redaction() {
    let cases = [
        ("GET /x?usersig=abc&random=1", "GET /x?usersig=***&random=1"),
        ("UserSig=abc def", "UserSig=*** def"),
        (
            "(url: http://h/?a=1&usersig=zz)",
            "(url: http://h/?a=1&usersig=***)",
        ),
        ("nothing here", "nothing here"),
        ("usersig=", "usersig=***"),
    ];
    for (input, want) in cases {
        assert_eq!(redact_usersig_param(input), want);
    }
}

#[test]
fn debug_output_has_no_secret() {
    let c = client(config("http://127.0.0.1:1"));
    let sig = c.usersig_now();
    let text = format!("{c:?} {:?}", config("http://127.0.0.1:1"));
    assert!(!text.contains(KEY) && !text.contains(&sig), "{text}");
    assert!(text.contains("SecretKey(***)"));
}
