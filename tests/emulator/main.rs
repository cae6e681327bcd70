//! Black-box tests of the emulator: a real HTTP server on a loopback port, driven with reqwest
//! exactly as a client would, plus the in-process control accessors. Every wait is bounded.
//!
//! This file holds the harness ([`Harness`]); the tests are in one file per concern beside it.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use marksync::emulator::{Emulator, EmulatorConfig, Fault, FaultKind, GroupType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[path = "../common/mod.rs"]
mod common;

mod callbacks;
mod control;
mod faults;
mod members;
mod requests;
mod standalone;

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
