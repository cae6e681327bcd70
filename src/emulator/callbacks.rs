//! Sending the service's callbacks (reference section 5) to an app server, signed the way the
//! service signs them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tim::callback;

/// The service waits this long for the app server; receivers must answer within 2 s, so this
/// leaves room for a slow test machine without hanging a control call.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// The `OptPlatform` the emulator reports: the events are caused through its REST-like
/// control API.
const OPT_PLATFORM: &str = "RESTAPI";

/// The callback command of member presence events in audio-video groups.
pub use crate::tim::callback::MEMBER_STATE_CHANGE;

/// What the receiving app server answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackReply {
    /// The HTTP status.
    pub status: u16,
    /// The response body as text.
    pub body: String,
}

/// Why a callback could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The URL is not an absolute http(s) URL.
    #[error("callback URL {0:?} is not an absolute http or https URL")]
    BadUrl(String),
    /// The URL's host is not loopback: the emulator is local test support and must not be a
    /// relay that posts to (and reads the replies of) any address it is asked to.
    #[error(
        "callback URL {0:?} is not on this machine: the emulator sends callbacks only to \
         localhost, 127.0.0.0/8 or [::1]"
    )]
    NotLoopback(String),
    /// The HTTP client could not be built (TLS backend initialisation failed).
    #[error("cannot build the HTTP client for callbacks: {0}")]
    Client(String),
    /// Connecting, sending or reading the reply failed, or it took longer than 5 s.
    #[error("callback delivery failed: {0}")]
    Send(String),
}

/// A callback to send.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing<'a> {
    pub url: &'a str,
    pub sdkappid: u64,
    pub token: Option<&'a str>,
    pub command: &'a str,
    pub body: serde_json::Value,
    /// Unix seconds for `RequestTime`: the real clock by default (receivers compare it with
    /// theirs), overridable to test a receiver's skew check.
    pub request_time: i64,
}

/// Builds the client used for callbacks; errors are kept to be reported on first use.
pub(crate) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(CALLBACK_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// Sends one callback and returns the receiver's reply.
pub(crate) async fn send(
    client: &Result<reqwest::Client, String>,
    out: Outgoing<'_>,
) -> Result<CallbackReply, CallbackError> {
    let client = client
        .as_ref()
        .map_err(|e| CallbackError::Client(e.clone()))?;
    let url = reqwest::Url::parse(out.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| CallbackError::BadUrl(out.url.to_owned()))?;
    if !url.host_str().is_some_and(super::http::is_loopback_host) {
        return Err(CallbackError::NotLoopback(out.url.to_owned()));
    }
    let mut body = out.body;
    if let Some(obj) = body.as_object_mut() {
        obj.entry("CallbackCommand")
            .or_insert_with(|| serde_json::Value::String(out.command.to_owned()));
    }
    let mut query: Vec<(&str, String)> = vec![
        ("SdkAppid", out.sdkappid.to_string()),
        ("CallbackCommand", out.command.to_owned()),
        ("contenttype", "json".to_owned()),
        ("ClientIP", "127.0.0.1".to_owned()),
        ("OptPlatform", OPT_PLATFORM.to_owned()),
    ];
    if let Some(token) = out.token {
        // Signed with the receiver's own implementation, so the two cannot drift apart.
        let request_time = out.request_time.to_string();
        query.push(("Sign", callback::sign(token, &request_time)));
        query.push(("RequestTime", request_time));
    }
    let resp = client
        .post(url)
        .query(&query)
        .json(&body)
        .send()
        .await
        .map_err(|e| CallbackError::Send(e.without_url().to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .map_err(|e| CallbackError::Send(e.without_url().to_string()))?;
    Ok(CallbackReply { status, body })
}
