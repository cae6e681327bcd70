//! A standby daemon's callbacks go to the active one (SPEC 11).
//!
//! The service sends each callback once and never retries it, and a load balancer in front of
//! several daemons may pick a standby. The standby checks the callback as the active daemon
//! would (app, signature, time, size), so it never relays what the active one would refuse, then
//! sends the same query and body to the active daemon's address (from the lock) and answers
//! with its reply. The active daemon checks it again and acts on it: one code path for events.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;

/// How long a forwarded callback may take: the service wants its answer within 2 s
/// (reference section 5), and the standby has spent some of that already.
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);

/// The header a standby adds to a callback it relays. A daemon that receives a relayed
/// callback while standing by refuses it instead of relaying it again: the recorded address of
/// the active daemon reached a standby (two daemons advertising one address, or a dead pod's IP
/// given to another replica), and relaying on would loop until the time runs out.
pub const RELAYED_HEADER: &str = "x-marksync-relayed";

/// Where callbacks go: this daemon acts on them, or relays them to the active one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// This daemon acts on callbacks.
    #[default]
    Active,
    /// This daemon is a standby; `active` is the active daemon's callback address (`host:port`)
    /// as its lock says, `None` while no daemon holds the lock or it takes no callbacks.
    Standby {
        /// The active daemon's callback address.
        active: Option<String>,
    },
}

/// Why a callback could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No active daemon takes callbacks now.
    #[error("this daemon is a standby and no active daemon takes callbacks now")]
    NoActive,
    /// The active daemon's address is a wildcard (`0.0.0.0`, `::`): from here it would be this
    /// daemon itself.
    #[error(
        "the active daemon listens on {address}, which its peers cannot reach as written; set each daemon's http.listen to an address the others can reach"
    )]
    Wildcard {
        /// The recorded address.
        address: String,
    },
    /// This standby was sent a callback that another standby relayed: the address recorded
    /// for the active daemon reaches a standby.
    #[error(
        "a standby relayed this callback to this daemon, which is a standby too: the active daemon's recorded address reaches a standby; give each daemon its own --advertise address (or http.listen)"
    )]
    Loop,
    /// The active daemon did not answer in time, or refused the connection.
    #[error("the active daemon at {address} did not answer: {detail}")]
    Unreachable {
        /// Its address.
        address: String,
        /// What went wrong, in the user's terms.
        detail: String,
    },
}

/// Sends a callback's `query` string and `body` to the active daemon at `address` and returns
/// its status and body.
pub async fn forward(
    client: &reqwest::Client,
    address: &str,
    query: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), ForwardError> {
    let unreachable = |detail: String| ForwardError::Unreachable {
        address: address.to_owned(),
        detail,
    };
    if address
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
    {
        return Err(ForwardError::Wildcard {
            address: address.to_owned(),
        });
    }
    let url = format!("http://{address}/callback?{query}");
    let reply = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(RELAYED_HEADER, "1")
        .body(body)
        .timeout(FORWARD_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            unreachable(if e.is_timeout() {
                format!("no answer within {} ms", FORWARD_TIMEOUT.as_millis())
            } else {
                "connection failed".to_owned()
            })
        })?;
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = reply
        .bytes()
        .await
        .map_err(|_| unreachable("the reply was cut off".to_owned()))?;
    Ok((status, bytes))
}

/// The client a standby relays callbacks with: plain HTTP to a peer, no proxy from the
/// environment (a relay through a corporate proxy would leave the cluster), no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FORWARD_TIMEOUT)
        .build()
        .unwrap_or_default()
}
