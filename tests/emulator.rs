//! Black-box tests of the emulator: a real HTTP server on a loopback port, driven with reqwest
//! exactly as a client would, plus the in-process control accessors. Every wait is bounded.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use marksync::emulator::{Emulator, EmulatorConfig, Fault, FaultKind, GroupType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod common;
use common::{ADMIN, APP, KEY, within};

const G: &str = "@TGS#a6I4ZUUGO";
const MODIFY: &str = "v4/group_open_avchatroom_http_svc/modify_user_info";
const LIST: &str = "v4/group_open_avchatroom_http_svc/get_members";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// TLSSigAPIv2 steps 3-5 around a given `TLS.sig`.
fn pack_sig(identifier: &str, app: u64, time: i64, expire: i64, tls_sig: &str) -> String {
    let doc = json!({
        "TLS.ver": "2.0", "TLS.identifier": identifier, "TLS.sdkappid": app,
        "TLS.expire": expire, "TLS.time": time, "TLS.sig": tls_sig,
    });
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(doc.to_string().as_bytes()).unwrap();
    B64.encode(z.finish().unwrap())
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

/// TLSSigAPIv2 steps 1-2: the `TLS.sig` value.
fn tls_sig(identifier: &str, app: u64, key: &str, time: i64, expire: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(
        format!("TLS.identifier:{identifier}\nTLS.sdkappid:{app}\nTLS.time:{time}\nTLS.expire:{expire}\n")
            .as_bytes(),
    );
    B64.encode(mac.finalize().into_bytes())
}

fn make_sig(identifier: &str, app: u64, key: &str, time: i64, expire: i64) -> String {
    pack_sig(
        identifier,
        app,
        time,
        expire,
        &tls_sig(identifier, app, key, time, expire),
    )
}

fn config() -> EmulatorConfig {
    EmulatorConfig::new(APP, KEY, ADMIN)
}

/// An emulator plus a client that signs its calls as the admin.
struct Harness {
    emu: Emulator,
    http: reqwest::Client,
}

impl Harness {
    async fn start(cfg: EmulatorConfig) -> Harness {
        let emu = within(Emulator::start(cfg)).await.unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Harness { emu, http }
    }

    async fn with_group(cfg: EmulatorConfig, online: &[&str], offline: &[&str]) -> Harness {
        let h = Harness::start(cfg).await;
        h.emu.create_group(G, GroupType::AVChatRoom).unwrap();
        h.emu.set_online(G, online).await.unwrap();
        h.emu.set_offline(G, offline).await.unwrap();
        h
    }

    fn admin_sig(&self) -> String {
        make_sig(ADMIN, APP, KEY, self.emu.now(), 86_400)
    }

    /// POSTs a raw body with the given query; returns (HTTP status, JSON body).
    async fn raw(&self, path: &str, query: &[(&str, String)], body: &str) -> (u16, Value) {
        let resp = within(
            self.http
                .post(format!("{}/{path}", self.emu.base_url()))
                .query(query)
                .body(body.to_owned())
                .send(),
        )
        .await
        .unwrap();
        let status = resp.status().as_u16();
        let text = within(resp.text()).await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn query(&self, identifier: &str, sig: &str) -> Vec<(&'static str, String)> {
        vec![
            ("sdkappid", APP.to_string()),
            ("identifier", identifier.to_owned()),
            ("usersig", sig.to_owned()),
            ("random", rand::random::<u32>().to_string()),
            ("contenttype", "json".to_owned()),
        ]
    }

    /// A correctly signed call; returns the JSON body.
    async fn call(&self, path: &str, body: Value) -> Value {
        let (status, v) = self
            .raw(
                path,
                &self.query(ADMIN, &self.admin_sig()),
                &body.to_string(),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn set(&self, entries: &[(&str, &[u32])]) -> Value {
        self.modify(1, entries).await
    }

    async fn modify(&self, command: u8, entries: &[(&str, &[u32])]) -> Value {
        let list: Vec<Value> = entries
            .iter()
            .map(|(a, m)| json!({"Member_Account": a, "Marks": m}))
            .collect();
        self.call(
            MODIFY,
            json!({"GroupId": G, "CommandType": command, "MemberList": list}),
        )
        .await
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/emulator/{path}", self.emu.base_url()));
        if let Some(b) = body {
            req = req.json(&b);
        } else {
            // The control API takes JSON only, an empty body included.
            req = req.header("content-type", "application/json");
        }
        let resp = within(req.send()).await.unwrap();
        let status = resp.status().as_u16();
        (status, within(resp.json::<Value>()).await.unwrap())
    }
}

fn code(v: &Value) -> i64 {
    v["ErrorCode"].as_i64().unwrap_or(-1)
}

fn listed(v: &Value) -> String {
    v["MemberList"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|m| {
                    format!(
                        "{}:{}",
                        m["Member_Account"].as_str().unwrap_or("?"),
                        m["Marks"]
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn marks(pairs: &[(&str, &[u32])]) -> BTreeMap<String, Vec<u32>> {
    pairs
        .iter()
        .map(|(a, m)| (a.to_string(), m.to_vec()))
        .collect()
}

#[tokio::test]
async fn set_and_delete_round_trip_with_a_valid_sig() {
    let h = Harness::with_group(config(), &["teacher10", "student9"], &[]).await;
    let v = h
        .set(&[("teacher10", &[1000]), ("student9", &[1001, 1002])])
        .await;
    assert_eq!(
        (v["ActionStatus"].as_str(), code(&v)),
        (Some("OK"), 0),
        "{v}"
    );
    assert_eq!(v["CommandType"], 1);
    assert_eq!(listed(&v), "teacher10:[1000] student9:[1001,1002]");
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("student9", &[1001, 1002]), ("teacher10", &[1000])])
    );

    let v = h.modify(2, &[("student9", &[1001])]).await;
    assert_eq!((code(&v), v["CommandType"].as_i64()), (0, Some(2)), "{v}");
    assert_eq!(listed(&v), "student9:[1001]");
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("student9", &[1002]), ("teacher10", &[1000])])
    );
    within(h.emu.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_sig_carrying_the_published_vector_is_accepted() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    // The reference's vector was computed at time 1700000000 with a 24 h validity.
    h.emu.set_clock(1_700_000_100);
    assert_eq!(
        tls_sig(ADMIN, APP, KEY, 1_700_000_000, 86_400),
        "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60="
    );
    assert_eq!(
        tls_sig("xiaojun", APP, KEY, 1_700_000_000, 15_552_000),
        "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
    );
    let sig = pack_sig(
        ADMIN,
        APP,
        1_700_000_000,
        86_400,
        "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=",
    );
    let body = json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [1000]}]});
    let (_, v) = h
        .raw(MODIFY, &h.query(ADMIN, &sig), &body.to_string())
        .await;
    assert_eq!(code(&v), 0, "{v}");
    // A day later the same sig has expired.
    h.emu.advance_clock(86_400);
    let (_, v) = h
        .raw(MODIFY, &h.query(ADMIN, &sig), &body.to_string())
        .await;
    assert_eq!(code(&v), 70001, "{v}");
}

#[tokio::test]
async fn bad_credentials_get_the_documented_codes() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    let now = h.emu.now();
    let body = json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [1000]}]})
        .to_string();
    let check = |name: &'static str, query: Vec<(&'static str, String)>, want: i64| {
        let h = &h;
        let body = body.clone();
        async move {
            let (status, v) = h.raw(MODIFY, &query, &body).await;
            assert_eq!((status, code(&v)), (200, want), "{name}: {v}");
            assert_eq!(v["ActionStatus"], "FAIL", "{name}");
        }
    };
    check(
        "wrong key",
        h.query(ADMIN, &make_sig(ADMIN, APP, "not-the-key", now, 86_400)),
        70009,
    )
    .await;
    let mut tampered = tls_sig(ADMIN, APP, KEY, now - 100, 10);
    tampered = pack_sig(ADMIN, APP, now - 100, 86_400, &tampered);
    check("extended expiry", h.query(ADMIN, &tampered), 70009).await;
    check(
        "expired",
        h.query(ADMIN, &make_sig(ADMIN, APP, KEY, now - 100, 10)),
        70001,
    )
    .await;
    check(
        "sig for bob",
        h.query(ADMIN, &make_sig("bob", APP, KEY, now, 86_400)),
        70013,
    )
    .await;
    check(
        "sig for another app",
        h.query(ADMIN, &make_sig(ADMIN, APP + 1, KEY, now, 86_400)),
        70014,
    )
    .await;
    check(
        "not an admin",
        h.query("bob", &make_sig("bob", APP, KEY, now, 86_400)),
        60010,
    )
    .await;
    for garbage in ["garbage", "eJzLSM3JyQcABiwCFQ__", "*-_"] {
        check("garbage", h.query(ADMIN, garbage), 70003).await;
    }
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[0].1 = (APP + 1).to_string();
    check("unknown app", q, 70016).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[0].1 = "x".into();
    check("bad sdkappid", q, 60006).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q.remove(2);
    check("no usersig", q, 10001).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[3].1 = "4294967296".into();
    check("random too big", q, 10004).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[4].1 = "xml".into();
    check("contenttype", q, 10004).await;
    assert!(
        h.emu.marks_of(G).is_empty(),
        "no refused call changed anything"
    );
}

#[tokio::test]
async fn bad_bodies_and_groups_are_refused() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    h.emu
        .create_group("@TGS#public", GroupType::Public)
        .unwrap();
    h.emu
        .create_group("@TGS#gone", GroupType::AVChatRoom)
        .unwrap();
    h.emu.dissolve_group("@TGS#gone").unwrap();
    let q = h.query(ADMIN, &h.admin_sig());
    // The vendor's own sample has a trailing comma: not JSON.
    let seed = r#"{"GroupId": "@TGS#a6I4ZUUGO","CommandType": 1,"MemberList": [{"Member_Account": "teacher10","Marks": [1000]},]}"#;
    let entry = json!([{"Member_Account": "a", "Marks": [1000]}]);
    let cases: Vec<(&str, String, i64)> = vec![
        ("seed sample", seed.into(), 10011),
        ("empty", String::new(), 10011),
        ("array", "[]".into(), 10004),
        ("no GroupId", json!({"CommandType": 1, "MemberList": entry}).to_string(), 10004),
        ("no MemberList", json!({"GroupId": G, "CommandType": 1}).to_string(), 10004),
        ("no CommandType", json!({"GroupId": G, "MemberList": entry}).to_string(), 10004),
        ("CommandType 3", json!({"GroupId": G, "CommandType": 3, "MemberList": entry}).to_string(), 10003),
        ("CommandType str", json!({"GroupId": G, "CommandType": "1", "MemberList": entry}).to_string(), 10003),
        (
            "mark 999",
            json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [999]}]})
                .to_string(),
            10004,
        ),
        (
            "no Marks",
            json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a"}]}).to_string(),
            10004,
        ),
        ("empty GroupId", json!({"GroupId": "", "CommandType": 1, "MemberList": entry}).to_string(), 10015),
        ("unknown", json!({"GroupId": "@TGS#nope", "CommandType": 1, "MemberList": entry}).to_string(), 10010),
        ("dissolved", json!({"GroupId": "@TGS#gone", "CommandType": 1, "MemberList": entry}).to_string(), 10010),
        ("public", json!({"GroupId": "@TGS#public", "CommandType": 1, "MemberList": entry}).to_string(), 10007),
    ];
    for (name, body, want) in cases {
        let (status, v) = h.raw(MODIFY, &q, &body).await;
        assert_eq!((status, code(&v)), (200, want), "{name}: {v}");
        assert!(
            v["ErrorInfo"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: {v}"
        );
    }
    let (_, v) = h
        .raw(LIST, &q, &json!({"GroupId": "@TGS#gone"}).to_string())
        .await;
    assert_eq!(code(&v), 10010, "{v}");
    let (_, v) = h
        .raw(LIST, &q, &json!({"GroupId": G, "Mark": 7}).to_string())
        .await;
    assert_eq!(code(&v), 10004, "{v}");
}

#[tokio::test]
async fn offline_members_are_omitted_and_all_offline_fails_with_the_configured_code() {
    let cfg = EmulatorConfig {
        all_offline_error_code: 10019,
        ..config()
    };
    let h = Harness::with_group(cfg, &["on"], &["off"]).await;
    let v = h
        .set(&[("on", &[1000]), ("off", &[1000]), ("stranger", &[1000])])
        .await;
    assert_eq!((code(&v), listed(&v)), (0, "on:[1000]".into()), "{v}");
    let v = h.set(&[("off", &[1000]), ("stranger", &[1000])]).await;
    assert_eq!(
        (code(&v), v["ActionStatus"].as_str()),
        (10019, Some("FAIL")),
        "{v}"
    );
    assert_eq!(h.emu.marks_of(G), marks(&[("on", &[1000])]));

    // A delete is held to the same rule: nobody online in it, the whole call fails.
    let v = h
        .modify(2, &[("off", &[1000]), ("stranger", &[1000])])
        .await;
    assert_eq!(
        (code(&v), v["ActionStatus"].as_str()),
        (10019, Some("FAIL")),
        "{v}"
    );
    // With one online member in it, it succeeds and lists the offline one too.
    let v = h.modify(2, &[("on", &[1000]), ("off", &[1000])]).await;
    assert_eq!(
        (code(&v), listed(&v)),
        (0, "on:[1000] off:[1000]".into()),
        "{v}"
    );
    assert!(h.emu.marks_of(G).is_empty());
}

#[tokio::test]
async fn mark_500_is_settable_offline_keeps_the_member_online_and_expires_after_72h() {
    let h = Harness::with_group(config(), &["host"], &["guest"]).await;
    let v = h
        .set(&[("guest", &[500, 1000]), ("host", &[500, 1000])])
        .await;
    assert_eq!(listed(&v), "guest:[500] host:[500,1000]", "{v}");
    // With a live 500 the offline guest counts as online: other marks can be set now.
    let v = h.set(&[("guest", &[1000])]).await;
    assert_eq!(listed(&v), "guest:[1000]", "{v}");
    // Going offline drops everything but 500.
    h.emu.set_offline(G, &["host"]).await.unwrap();
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("guest", &[500, 1000]), ("host", &[500])])
    );

    h.emu.advance_clock(72 * 3600 - 5);
    assert_eq!(h.emu.marks_of(G).len(), 2);
    let v = h.set(&[("host", &[500])]).await; // renewal restarts the 72 h
    assert_eq!(code(&v), 0, "{v}");
    h.emu.advance_clock(10);
    assert_eq!(h.emu.marks_of(G), marks(&[("host", &[500])]));
    // The guest is offline with nothing left: it takes no ordinary mark.
    let v = h.set(&[("guest", &[1000])]).await;
    assert_eq!(code(&v), 10004, "{v}");
    // Leaving drops 500 too.
    h.emu.leave(G, &["host"]).await.unwrap();
    assert!(h.emu.marks_of(G).is_empty());
}

#[tokio::test]
async fn limits_500_per_call_10_marks_1000_members_per_mark() {
    let accounts: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let h = Harness::with_group(config(), &refs, &[]).await;

    let entries: Vec<(&str, &[u32])> = refs.iter().map(|a| (*a, &[1000u32][..])).collect();
    let v = h.set(&entries[..501]).await;
    assert_eq!(code(&v), 10004, "501 accounts in one call");
    assert!(h.emu.marks_of(G).is_empty());
    assert_eq!(code(&h.set(&entries[..500]).await), 0);
    assert_eq!(code(&h.set(&entries[500..1000]).await), 0);
    let v = h.set(&entries[1000..]).await;
    assert_eq!(code(&v), 10004, "{v}");
    assert!(
        v["ErrorInfo"].as_str().unwrap().contains("mark 1000"),
        "{v}"
    );
    assert_eq!(h.emu.marks_of(G).len(), 1000);

    let nine: Vec<u32> = (1001..1010).collect();
    assert_eq!(
        code(&h.set(&[("u0", &nine)]).await),
        0,
        "10 distinct marks are fine"
    );
    let v = h.set(&[("u1", &[1010])]).await;
    assert_eq!(code(&v), 10004, "{v}");
    assert!(
        v["ErrorInfo"].as_str().unwrap().contains("at most 10"),
        "{v}"
    );
    // Freeing a mark makes room again.
    assert_eq!(code(&h.modify(2, &[("u0", &[1009])]).await), 0);
    assert_eq!(code(&h.set(&[("u1", &[1010])]).await), 0);
}

#[tokio::test]
async fn the_rate_limit_refuses_calls_past_the_limit_with_60018() {
    let cfg = EmulatorConfig {
        max_calls_per_second: 20,
        ..config()
    };
    let h = Harness::with_group(cfg, &["a"], &[]).await;
    let start = Instant::now();
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(code(&h.call(LIST, json!({"GroupId": G})).await));
    }
    let ok = codes.iter().filter(|c| **c == 0).count();
    let limited = codes.iter().filter(|c| **c == 60018).count();
    assert_eq!(ok + limited, 30, "{codes:?}");
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(ok, 20, "{codes:?}");
    }
    assert!(limited >= 1, "{codes:?}");
    assert_eq!(h.emu.call_count(), 30);
    assert!(h.emu.max_calls_in_any_second() >= 21);
    assert_eq!(
        h.emu.stats(false).errors_by_code.get(&60018).copied(),
        Some(limited as u64)
    );
}

#[tokio::test]
async fn faults_inject_error_codes_http_statuses_latency_and_dropped_connections() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    let set_a = || h.set(&[("a", &[1000])]);

    h.emu
        .inject_fault(Fault {
            count: Some(1),
            ..Fault::always(FaultKind::ErrorCode { code: 10002 })
        })
        .unwrap();
    assert_eq!(code(&set_a().await), 10002);
    assert!(
        h.emu.marks_of(G).is_empty(),
        "a fault before the call changes nothing"
    );
    assert_eq!(code(&set_a().await), 0, "count 1: the next call passes");

    h.emu
        .inject_fault(Fault::always(FaultKind::HttpStatus { status: 502 }))
        .unwrap();
    let (status, _) = h.raw(MODIFY, &h.query(ADMIN, &h.admin_sig()), "{}").await;
    assert_eq!(status, 502);
    h.emu.clear_faults();

    h.emu
        .inject_fault(Fault {
            after: true,
            ..Fault::always(FaultKind::DropConnection)
        })
        .unwrap();
    let body = json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [1001]}]});
    let sent = within(
        h.http
            .post(format!("{}/{MODIFY}", h.emu.base_url()))
            .query(&h.query(ADMIN, &h.admin_sig()))
            .body(body.to_string())
            .send(),
    )
    .await;
    // hyper reports IncompleteMessage: the connection closed before any response byte.
    assert!(
        sent.as_ref().is_err_and(|e| !e.is_timeout()),
        "the connection must be dropped: {sent:?}"
    );
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("a", &[1000, 1001])]),
        "applied, answer lost"
    );
    h.emu.clear_faults();

    h.emu
        .inject_fault(Fault::always(FaultKind::Latency { ms: 300 }))
        .unwrap();
    let t = Instant::now();
    assert_eq!(code(&set_a().await), 0);
    assert!(t.elapsed() >= Duration::from_millis(300));
    h.emu.clear_faults();

    // Latency after: the call is applied at once and only the answer waits, so a client that
    // gives up (or is killed) in the meantime leaves a change it never saw confirmed.
    h.emu
        .inject_fault(Fault {
            after: true,
            ..Fault::always(FaultKind::Latency { ms: 5_000 })
        })
        .unwrap();
    let body = json!({"GroupId": G, "CommandType": 2, "MemberList": [{"Member_Account": "a", "Marks": [1001]}]});
    let gave_up = h
        .http
        .post(format!("{}/{MODIFY}", h.emu.base_url()))
        .query(&h.query(ADMIN, &h.admin_sig()))
        .body(body.to_string())
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the answer is held back: {gave_up:?}"
    );
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("a", &[1000])]),
        "applied before the answer"
    );
    h.emu.clear_faults();

    // Rate 0 never fires; the control API takes the same JSON shape.
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "error_code", "code": 60008, "rate": 0.0})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    for _ in 0..5 {
        assert_eq!(code(&set_a().await), 0);
    }
    let (status, _) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "error_code", "code": 1, "rate": 2})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "http_status", "status": 503, "path": "get_members"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(code(&set_a().await), 0, "path filter: modify is not hit");
    let (status, _) = h
        .raw(
            LIST,
            &h.query(ADMIN, &h.admin_sig()),
            &json!({"GroupId": G}).to_string(),
        )
        .await;
    assert_eq!(status, 503);
    let stats = h.emu.stats(true);
    let log = stats.log.unwrap();
    assert_eq!(log.last().map(|r| r.http_status), Some(503));
    assert!(
        log.iter().any(|r| r.http_status == 0),
        "the dropped call is logged"
    );
}

#[tokio::test]
async fn get_members_pages_and_filters_by_mark() {
    let cfg = EmulatorConfig {
        members_page_size: 3,
        ..config()
    };
    let h = Harness::with_group(cfg, &["m1", "m2", "m3", "m4", "m5", "m6", "m7"], &["off"]).await;
    h.set(&[("m2", &[1000]), ("m5", &[1000]), ("m7", &[600])])
        .await;
    let mut seen = Vec::new();
    let mut ts = 0;
    for _ in 0..10 {
        let v = h.call(LIST, json!({"GroupId": G, "Timestamp": ts})).await;
        assert_eq!(code(&v), 0, "{v}");
        for m in v["MemberList"].as_array().unwrap() {
            seen.push(m["Member_Account"].as_str().unwrap().to_owned());
            assert!(m["JoinTime"].as_i64().unwrap() > 0);
        }
        ts = v["NextTimestamp"].as_u64().unwrap();
        if ts == 0 {
            break;
        }
    }
    // Most recently joined first; m7 is hidden by mark 600, "off" is offline.
    assert_eq!(seen, ["m6", "m5", "m4", "m3", "m2", "m1"]);
    let v = h
        .call(LIST, json!({"GroupId": G, "Timestamp": 0, "Mark": 1000}))
        .await;
    let names: Vec<&str> = v["MemberList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Member_Account"].as_str().unwrap())
        .collect();
    assert_eq!(
        (names, v["NextTimestamp"].as_u64()),
        (vec!["m5", "m2"], Some(0))
    );
    let v = h.call(LIST, json!({"GroupId": G, "Mark": 600})).await;
    assert_eq!(v["MemberList"][0]["Member_Account"], "m7", "{v}");
}

#[tokio::test]
async fn a_short_page_fault_ends_a_listing_early_like_its_real_end() {
    let cfg = EmulatorConfig {
        members_page_size: 3,
        ..config()
    };
    let h = Harness::with_group(cfg, &["m1", "m2", "m3", "m4", "m5", "m6", "m7"], &[]).await;
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "short_page", "count": 1})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Writes are never hit.
    assert_eq!(code(&h.set(&[("m1", &[1000])]).await), 0);
    // The first page comes back with fewer than its 3 members and NextTimestamp 0: the
    // listing "ends" there, as the service's answer would if it ended.
    let v = h.call(LIST, json!({"GroupId": G, "Timestamp": 0})).await;
    assert_eq!(code(&v), 0, "{v}");
    assert!(v["MemberList"].as_array().unwrap().len() < 3, "{v}");
    assert_eq!(v["NextTimestamp"], 0, "{v}");
    // The count is used up: the next listing has its full first page and goes on.
    let v = h.call(LIST, json!({"GroupId": G, "Timestamp": 0})).await;
    assert_eq!(v["MemberList"].as_array().unwrap().len(), 3, "{v}");
    assert_ne!(v["NextTimestamp"], 0, "{v}");
}

/// A callback receiver: records every request's query and body, answers OK.
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(BTreeMap<String, String>, Value)>,
) {
    use axum::extract::Query;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::post(
            move |Query(q): Query<BTreeMap<String, String>>, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((q, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                    axum::Json(json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}))
                }
            },
        ),
    );
    let url = format!("http://{}/callback", common::serve_on_loopback(app).await);
    (url, rx)
}

#[tokio::test]
async fn callbacks_are_signed_like_the_service_signs_them() {
    let (url, mut rx) = receiver().await;
    let h = Harness::start(config()).await;
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "callbacks",
            Some(json!({
                "url": url, "token": "xxxxyyyy", "command": "Group.CallbackAfterMemberExit",
                "request_time": 1_669_872_112,
                "body": {"GroupId": G, "Type": "AVChatRoom", "ExitMemberList": [{"Member_Account": "a"}]},
            })),
        )
        .await;
    assert_eq!((status, v["status"].as_u64()), (200, Some(200)), "{v}");
    assert!(
        v["body"]
            .as_str()
            .unwrap()
            .contains("\"ActionStatus\":\"OK\""),
        "{v}"
    );
    let (q, body) = within(rx.recv()).await.unwrap();
    assert_eq!(
        q["Sign"],
        "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
    );
    assert_eq!(q["RequestTime"], "1669872112");
    assert_eq!(q["SdkAppid"], APP.to_string());
    assert_eq!(q["CallbackCommand"], "Group.CallbackAfterMemberExit");
    assert_eq!(
        (
            q["contenttype"].as_str(),
            q.contains_key("ClientIP"),
            q.contains_key("OptPlatform")
        ),
        ("json", true, true)
    );
    assert_eq!(body["CallbackCommand"], "Group.CallbackAfterMemberExit");

    // In process, RequestTime is the real now and Sign matches it.
    let reply = within(h.emu.send_callback(
        &url,
        Some("tok"),
        "Group.CallbackOnMemberStateChange",
        json!({}),
    ))
    .await;
    assert_eq!(reply.unwrap().status, 200);
    let (q, _) = within(rx.recv()).await.unwrap();
    let t: i64 = q["RequestTime"].parse().unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((real - t).abs() <= 5);
    assert_eq!(q["Sign"], hex::encode(Sha256::digest(format!("tok{t}"))));

    // Without a token: no Sign, no RequestTime.
    within(h.emu.send_callback(&url, None, "X.Y", json!({})))
        .await
        .unwrap();
    let (q, _) = within(rx.recv()).await.unwrap();
    assert!(!q.contains_key("Sign") && !q.contains_key("RequestTime"));
    // An unreachable URL is an error, not a hang or a panic.
    assert!(
        within(h.emu.send_callback("not a url", None, "X.Y", json!({})))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn presence_changes_send_member_state_callbacks() {
    let (url, mut rx) = receiver().await;
    let cfg = EmulatorConfig {
        callback_url: Some(url),
        callback_token: Some("xxxxyyyy".into()),
        ..config()
    };
    let h = Harness::start(cfg).await;
    let (status, _) = h
        .control(
            reqwest::Method::POST,
            "groups/create",
            Some(json!({"group_id": G})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "members",
            Some(json!({"group_id": G, "accounts": ["a", "b"], "state": "online"})),
        )
        .await;
    assert_eq!(
        (status, v["callbacks"][0]["status"].as_u64()),
        (200, Some(200)),
        "{v}"
    );
    let (q, body) = within(rx.recv()).await.unwrap();
    assert_eq!(q["CallbackCommand"], "Group.CallbackOnMemberStateChange");
    assert_eq!(
        q["Sign"],
        hex::encode(Sha256::digest(format!("xxxxyyyy{}", q["RequestTime"])))
    );
    assert_eq!(
        (body["EventType"].as_str(), body["EventCause"].as_str()),
        (Some("Online"), Some("Join"))
    );
    assert_eq!(
        body["MemberList"],
        json!([{"Member_Account": "a"}, {"Member_Account": "b"}])
    );

    h.emu.set_offline(G, &["a"]).await.unwrap();
    let (_, body) = within(rx.recv()).await.unwrap();
    assert_eq!(
        (body["EventType"].as_str(), body["EventCause"].as_str()),
        (Some("Offline"), Some("HeartbeatInterrupt"))
    );
    h.emu.leave(G, &["b"]).await.unwrap();
    let (_, body) = within(rx.recv()).await.unwrap();
    assert_eq!(
        (body["GroupId"].as_str(), body["EventCause"].as_str()),
        (Some(G), Some("Quit"))
    );
}

#[tokio::test]
async fn the_control_api_drives_groups_marks_clock_stats_and_reset() {
    let h = Harness::start(config()).await;
    let post = reqwest::Method::POST;
    let (s, _) = h
        .control(post.clone(), "groups/create", Some(json!({"group_id": G})))
        .await;
    assert_eq!(s, 200);
    let (s, _) = h
        .control(post.clone(), "groups/create", Some(json!({"group_id": G})))
        .await;
    assert_eq!(s, 409, "creating twice is refused");
    let (s, v) = h
        .control(
            post.clone(),
            "groups/create",
            Some(json!({"group_id": "x", "type": "Nope"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = h
        .control(
            post.clone(),
            "members",
            Some(json!({"group_id": "@TGS#none", "accounts": ["a"], "state": "online"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    h.control(
        post.clone(),
        "members",
        Some(json!({"group_id": G, "accounts": ["a"], "state": "online"})),
    )
    .await;
    h.set(&[("a", &[500, 1000])]).await;

    let (s, v) = h
        .control(
            reqwest::Method::GET,
            "marks?group_id=%40TGS%23a6I4ZUUGO",
            None,
        )
        .await;
    assert_eq!((s, v), (200, json!({"a": [500, 1000]})));
    let (_, v) = h
        .control(post.clone(), "marks", Some(json!({"group_id": G})))
        .await;
    assert_eq!(v, json!({"a": [500, 1000]}));
    let (s, _) = h
        .control(
            post.clone(),
            "marks",
            Some(json!({"group_id": "@TGS#none"})),
        )
        .await;
    assert_eq!(s, 404);
    let (_, v) = h.control(reqwest::Method::GET, "groups", None).await;
    assert_eq!(v[G]["members"]["a"]["state"], "online", "{v}");
    assert!(
        v[G]["members"]["a"]["mark_500_expires_at"]
            .as_i64()
            .is_some(),
        "{v}"
    );

    let (_, before) = h.control(reqwest::Method::GET, "clock", None).await;
    let (_, after) = h
        .control(
            post.clone(),
            "clock/advance",
            Some(json!({"seconds": 72 * 3600})),
        )
        .await;
    assert!(after["now"].as_i64().unwrap() - before["now"].as_i64().unwrap() >= 72 * 3600);
    let (_, v) = h
        .control(post.clone(), "marks", Some(json!({"group_id": G})))
        .await;
    assert_eq!(v, json!({"a": [1000]}), "500 ran out, a is still connected");

    let (_, v) = h.control(reqwest::Method::GET, "stats", None).await;
    assert_eq!(v["calls_total"], 1, "{v}");
    assert_eq!(v["calls_by_path"][MODIFY], 1, "{v}");
    assert!(v.get("log").is_none());
    let (_, v) = h
        .control(reqwest::Method::GET, "stats?log=true", None)
        .await;
    assert_eq!(v["log"].as_array().map(Vec::len), Some(1), "{v}");

    let (s, _) = h
        .control(
            post.clone(),
            "groups/dissolve",
            Some(json!({"group_id": G})),
        )
        .await;
    assert_eq!(s, 200);
    let v = h.set(&[("a", &[1000])]).await;
    assert_eq!(code(&v), 10010);
    let (s, _) = h.control(post.clone(), "reset", Some(json!({}))).await;
    assert_eq!(s, 200);
    assert_eq!(h.emu.call_count(), 0);
    assert!(h.emu.groups().is_empty());
    let (s, v) = h
        .control(post, "clock/advance", Some(json!({"secs": 1})))
        .await;
    assert_eq!(s, 400, "unknown fields are refused: {v}");
}

#[tokio::test]
async fn demo_mode_creates_groups_and_members_on_first_use() {
    let cfg = EmulatorConfig {
        auto_create_groups: true,
        members_online_by_default: true,
        ..config()
    };
    let h = Harness::start(cfg).await;
    let v = h.set(&[("anyone", &[1000])]).await;
    assert_eq!((code(&v), listed(&v)), (0, "anyone:[1000]".into()), "{v}");
    let v = h.call(LIST, json!({"GroupId": G})).await;
    assert_eq!(v["MemberList"][0]["Member_Account"], "anyone");
}

#[tokio::test]
async fn standalone_refuses_non_loopback_addresses() {
    let err = within(marksync::emulator::run_standalone(
        config(),
        "0.0.0.0:0".parse().unwrap(),
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn unknown_paths_and_methods_do_not_crash_it() {
    let h = Harness::start(config()).await;
    let (s, v) = h.raw("v4/nope/nothing", &[], "{}").await;
    assert_eq!((s, code(&v)), (404, 10003), "{v}");
    let resp = within(h.http.get(format!("{}/{MODIFY}", h.emu.base_url())).send())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let (s, v) = h.raw(MODIFY, &[("sdkappid", "%%%".into())], "\u{0}").await;
    assert_eq!((s, code(&v)), (200, 60006), "{v}");
    // A debug print of the config never shows the key.
    assert!(!format!("{:?}", config()).contains(KEY));
}

#[tokio::test]
async fn standalone_reports_a_busy_port() {
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = busy.local_addr().unwrap();
    let err = within(marksync::emulator::run_standalone(config(), addr))
        .await
        .unwrap_err();
    assert!(
        matches!(err, marksync::emulator::EmulatorError::Bind { .. }),
        "{err}"
    );
}

/// One raw HTTP/1.0 request to the emulator with exactly these headers; the status code.
fn raw_status(addr: std::net::SocketAddr, request_line: &str, headers: &str, body: &str) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{request_line} HTTP/1.0\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 17: a web page must not be able to drive the control API (no JSON content type, or a
/// DNS-rebinding host name), and `/emulator/callbacks` must not relay to other machines.
#[tokio::test]
async fn the_control_api_refuses_web_pages_and_posts_callbacks_only_to_loopback() {
    let h = Harness::start(config()).await;
    let addr = h.emu.addr();
    let port = addr.port();
    let post = |headers: String| {
        tokio::task::spawn_blocking(move || raw_status(addr, "POST /emulator/reset", &headers, ""))
    };
    let json = "Content-Type: application/json\r\n";
    // Content-Type: JSON only on POST (a form or text/plain POST needs no CORS preflight).
    for (ct, status) in [
        ("", 415),
        ("Content-Type: text/plain\r\n", 415),
        ("Content-Type: application/x-www-form-urlencoded\r\n", 415),
        ("Content-Type: multipart/form-data; boundary=x\r\n", 415),
        (json, 200),
        ("Content-Type: Application/JSON; charset=utf-8\r\n", 200),
    ] {
        let got = within(post(format!("Host: 127.0.0.1:{port}\r\n{ct}")))
            .await
            .unwrap();
        assert_eq!(got, status, "{ct:?}");
    }
    // Host: a loopback name or address only (a rebinding page sends its own name).
    for (host, status) in [
        (format!("localhost:{port}"), 200),
        (format!("LOCALHOST:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("127.3.4.5:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        ("localhost".to_owned(), 200),
        (format!("evil.example:{port}"), 421),
        (format!("localhost.evil.example:{port}"), 421),
        (format!("10.0.0.1:{port}"), 421),
        (format!("[::1]x:{port}"), 421),
        (String::new(), 421),
    ] {
        let header = if host.is_empty() {
            String::new()
        } else {
            format!("Host: {host}\r\n")
        };
        let got = within(post(format!("{header}{json}"))).await.unwrap();
        assert_eq!(got, status, "Host {host:?}");
        let get = tokio::task::spawn_blocking(move || {
            raw_status(addr, "GET /emulator/groups", &header, "")
        });
        assert_eq!(within(get).await.unwrap(), status, "GET, Host {host:?}");
    }
    // Callback targets: loopback URLs only; nothing is sent elsewhere.
    for url in [
        "http://10.1.2.3:9464/callback",
        "http://example.com/callback",
        "https://169.254.169.254/latest/meta-data",
        "http://127.0.0.1.nip.io/callback",
    ] {
        let (status, v) = h
            .control(
                reqwest::Method::POST,
                "callbacks",
                Some(json!({"url": url, "command": "Group.CallbackAfterNewMemberJoin"})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("not on this machine"),
            "{url}: {v}"
        );
    }
}

/// Issue 16: `marksync emulator` on a taken port fails with an error naming the address, and
/// never says "listening" first (an operator would read that as a running emulator).
#[test]
fn the_binary_on_a_taken_port_fails_clearly_and_never_says_listening() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = common::cli::marksync(dir.path(), &["emulator", "--listen", &addr]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot listen on {addr}: the port is in use")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("listening"), "{}", out.stderr);
}

/// Issue 16: `marksync emulator --help` lists every control route the emulator serves, and
/// each route it lists answers (neither the unknown-path 404 nor a 405).
#[tokio::test]
async fn emulator_help_lists_every_control_route_and_each_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let help = common::cli::marksync(dir.path(), &["emulator", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    let listed: Vec<(String, String)> = help
        .stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (method, path) = (words.next()?, words.next()?);
            path.starts_with("/emulator/")
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect();
    // Every route of the router, read from its source, is in the help.
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/emulator/http/control.rs"),
    )
    .unwrap();
    let router = &source[source.find("fn routes(").unwrap()..];
    let router = &router[..router.find("\n}\n").unwrap()];
    let mut routed = Vec::new();
    for chunk in router.split(".route(\"").skip(1) {
        let path = &chunk[..chunk.find('"').unwrap()];
        let handlers = &chunk[..chunk.find("))").map_or(chunk.len(), |i| i + 2)];
        for (call, method) in [("get(", "GET"), ("post(", "POST"), ("delete(", "DELETE")] {
            if handlers.contains(call) && path.starts_with("/emulator/") {
                routed.push((method.to_string(), path.to_string()));
            }
        }
    }
    assert!(routed.len() >= 15, "{routed:?}");
    for route in &routed {
        assert!(
            listed.contains(route),
            "{route:?} missing from:\n{}",
            help.stdout
        );
    }
    assert!(
        help.stdout.contains("marksync's own clock stays real"),
        "{}",
        help.stdout
    );
    // Each listed route is served (a bad body is a 4xx of the route itself, not 404/405).
    let h = Harness::start(config()).await;
    for (method, path) in &listed {
        let req = h
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", h.emu.base_url()),
            )
            .header("content-type", "application/json")
            .body("{}");
        let status = within(req.send()).await.unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path}: {status}");
    }
}

/// Issue 16: an emulator with a world file (`endpoint: embedded`) finds the world the last one
/// left; two at once on the same file never write an older view over a newer one.
#[tokio::test]
async fn a_world_file_carries_the_world_to_the_next_emulator_and_is_never_overwritten_stale() {
    let dir = tempfile::tempdir().unwrap();
    let file = marksync::emulator::world_file_beside(&dir.path().join("state.json"));
    let with_file = || {
        let mut cfg = config();
        cfg.world_file = Some(file.clone());
        cfg
    };
    let first = within(Emulator::start(with_file())).await.unwrap();
    let second = within(Emulator::start(with_file())).await.unwrap();
    first.create_group(G, GroupType::AVChatRoom).unwrap();
    within(first.set_online(G, &["ann"])).await.unwrap();
    first.set_marks_as_other(G, &["ann"], &[1000]).unwrap();
    // The second started before the first wrote: its view is older, so it must not write.
    second
        .create_group("@TGS#other", GroupType::AVChatRoom)
        .unwrap();
    within(first.shutdown()).await.unwrap();
    within(second.shutdown()).await.unwrap();

    let next = within(Emulator::start(with_file())).await.unwrap();
    assert_eq!(next.marks_of(G), marks(&[("ann", &[1000])]));
    assert!(!next.groups().contains_key("@TGS#other"));
    // Without a world file nothing is read.
    let plain = within(Emulator::start(config())).await.unwrap();
    assert!(plain.groups().is_empty());
}
