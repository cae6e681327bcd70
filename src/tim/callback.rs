//! The callbacks (webhooks) the service POSTs to the app's server, as
//! `reference/tencent-im-api.md` section 5 gives them: the query string, the `Sign` over the
//! callback token, the bodies of the member presence commands, and the reply.
//!
//! Architecture invariant: this is the only module that knows the callbacks' field names. The
//! daemon's listener (`crate::http`) receives through it and the emulator signs through it, so the
//! signature has one implementation. Bodies are parsed tolerantly: unknown fields are ignored and
//! `EventTime` is accepted as a number or a string.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Account, GroupId, UnixTime};

/// Presence changes in audio-video groups (top edition): `EventType` Online or Offline.
pub const MEMBER_STATE_CHANGE: &str = "Group.CallbackOnMemberStateChange";
/// Members joined a group: they are online.
pub const AFTER_NEW_MEMBER_JOIN: &str = "Group.CallbackAfterNewMemberJoin";
/// Members left a group (quit, kicked, or the group was dissolved): they are offline.
pub const AFTER_MEMBER_EXIT: &str = "Group.CallbackAfterMemberExit";

/// A `RequestTime` further than this many seconds from the receiver's clock is refused.
pub const MAX_REQUEST_TIME_SKEW_SECS: i64 = 60;

/// `Sign` = lowercase hex of SHA-256 over the token immediately followed by `RequestTime`
/// (plain concatenation, as the decimal text that travels in the query).
pub fn sign(token: &str, request_time: &str) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(request_time.as_bytes());
    hex::encode(h.finalize())
}

/// Whether `given` is the `Sign` of `request_time` under `token`.
///
/// The comparison takes the same time wherever the first difference is, so a caller cannot learn
/// the expected signature byte by byte. Case matters: the service sends lowercase hex.
pub fn verify_sign(token: &str, request_time: &str, given: &str) -> bool {
    constant_time_eq(sign(token, request_time).as_bytes(), given.as_bytes())
}

/// Equality of two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        // The length of a SHA-256 hex digest is public; nothing leaks by returning early.
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why a `RequestTime` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestTimeError {
    /// Not a decimal number of seconds.
    #[error("RequestTime {0:?} is not a number of Unix seconds")]
    NotANumber(String),
    /// Further than [`MAX_REQUEST_TIME_SKEW_SECS`] from now (a replay or a wrong clock).
    #[error("RequestTime is {skew} s away from this server's clock (at most {max} s allowed)")]
    Skewed {
        /// `RequestTime - now`, in seconds.
        skew: i64,
        /// The allowed distance.
        max: i64,
    },
}

/// Checks that `request_time` (the query's text) is within ±[`MAX_REQUEST_TIME_SKEW_SECS`] of
/// `now`; returns it as Unix seconds.
pub fn check_request_time(request_time: &str, now: UnixTime) -> Result<UnixTime, RequestTimeError> {
    let t: i64 = request_time
        .trim()
        .parse()
        .map_err(|_| RequestTimeError::NotANumber(request_time.to_owned()))?;
    let skew = t.saturating_sub(now);
    if skew.unsigned_abs() > MAX_REQUEST_TIME_SKEW_SECS.unsigned_abs() {
        return Err(RequestTimeError::Skewed {
            skew,
            max: MAX_REQUEST_TIME_SKEW_SECS,
        });
    }
    Ok(t)
}

/// The query string of every callback. Every field is optional here so that reading it never
/// fails; the receiver decides what a missing field means.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackQuery {
    /// The app the callback is for (decimal).
    #[serde(rename = "SdkAppid", default)]
    pub sdkappid: Option<String>,
    /// Which callback this is, e.g. [`MEMBER_STATE_CHANGE`].
    #[serde(rename = "CallbackCommand", default)]
    pub command: Option<String>,
    /// Always `json`.
    #[serde(rename = "contenttype", default)]
    pub content_type: Option<String>,
    /// The address of the client that caused the event.
    #[serde(rename = "ClientIP", default)]
    pub client_ip: Option<String>,
    /// The platform that caused the event (`RESTAPI`, `Web`, `Android`, ...).
    #[serde(rename = "OptPlatform", default)]
    pub opt_platform: Option<String>,
    /// Lowercase hex SHA-256 of token + `RequestTime`; present when callback authentication is on.
    #[serde(rename = "Sign", default)]
    pub sign: Option<String>,
    /// Unix seconds, decimal; present when callback authentication is on.
    #[serde(rename = "RequestTime", default)]
    pub request_time: Option<String>,
}

/// One entry of `MemberList`, `NewMemberList` or `ExitMemberList`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackMember {
    /// The member's UserID.
    #[serde(rename = "Member_Account")]
    pub account: String,
}

/// `EventTime`: documented as a number on some pages and as a string on others; both parse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EventTime {
    /// Sent as a JSON number.
    Number(i64),
    /// Sent as a JSON string.
    Text(String),
}

/// Read by hand, so that a wrong value says what `EventTime` takes (an untagged enum would say
/// "data did not match any variant").
impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'v> serde::de::Visitor<'v> for V {
            type Value = EventTime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`EventTime` as a number or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<EventTime, E> {
                Ok(EventTime::Number(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<EventTime, E> {
                i64::try_from(n)
                    .map(EventTime::Number)
                    .map_err(|_| E::custom(format!("`EventTime` {n} is out of range for a time")))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<EventTime, E> {
                Err(E::custom(format!(
                    "`EventTime` must be a whole number (a time), found {n}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<EventTime, E> {
                Ok(EventTime::Text(s.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<EventTime, E> {
                Err(E::custom(
                    "`EventTime` must be a number or a string, found a boolean",
                ))
            }
            fn visit_seq<A: serde::de::SeqAccess<'v>>(self, _: A) -> Result<EventTime, A::Error> {
                Err(serde::de::Error::custom(
                    "`EventTime` must be a number or a string, found a list",
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(self, _: A) -> Result<EventTime, A::Error> {
                Err(serde::de::Error::custom(
                    "`EventTime` must be a number or a string, found an object",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

impl EventTime {
    /// The value as a number, when it is one (a string holding digits counts). The unit is not
    /// documented consistently (seconds or milliseconds), so callers should only log it.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            EventTime::Number(n) => Some(*n),
            EventTime::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// Body of [`MEMBER_STATE_CHANGE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStateChangeBody {
    /// The audio-video group.
    #[serde(rename = "GroupId")]
    pub group_id: String,
    /// `Online` or `Offline` (kept as text: an unknown value is ignored, not an error).
    #[serde(rename = "EventType")]
    pub event_type: String,
    /// `Join`, `Quit`, `HeartbeatInterrupt` or `HeartbeatRecover`; missing in older payloads.
    #[serde(rename = "EventCause", default)]
    pub event_cause: Option<String>,
    /// The members whose presence changed.
    #[serde(rename = "MemberList", default)]
    pub members: Vec<CallbackMember>,
    /// When it happened, if sent.
    #[serde(rename = "EventTime", default)]
    pub event_time: Option<EventTime>,
}

/// Body of [`AFTER_NEW_MEMBER_JOIN`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMemberJoinBody {
    /// The group joined.
    #[serde(rename = "GroupId")]
    pub group_id: String,
    /// How they joined (`Apply`, `Invited`, ...), if sent.
    #[serde(rename = "JoinType", default)]
    pub join_type: Option<String>,
    /// The members who joined.
    #[serde(rename = "NewMemberList", default)]
    pub members: Vec<CallbackMember>,
    /// When it happened, if sent.
    #[serde(rename = "EventTime", default)]
    pub event_time: Option<EventTime>,
}

/// Body of [`AFTER_MEMBER_EXIT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberExitBody {
    /// The group left.
    #[serde(rename = "GroupId")]
    pub group_id: String,
    /// How they left (`Quit`, `Kicked`, ...), if sent.
    #[serde(rename = "ExitType", default)]
    pub exit_type: Option<String>,
    /// The members who left.
    #[serde(rename = "ExitMemberList", default)]
    pub members: Vec<CallbackMember>,
    /// When it happened, if sent.
    #[serde(rename = "EventTime", default)]
    pub event_time: Option<EventTime>,
}

/// Whether members came online or went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Online, or joined.
    Online,
    /// Offline, or left.
    Offline,
}

/// What a presence callback says, whichever command carried it. Accounts and group are the
/// service's text, not yet validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceChange {
    /// The group.
    pub group_id: String,
    /// Online or offline.
    pub presence: Presence,
    /// The members concerned, in the order sent.
    pub accounts: Vec<String>,
    /// `EventTime`, if sent (for logs).
    pub event_time: Option<EventTime>,
}

/// What a callback body amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A presence change.
    Presence(PresenceChange),
    /// A command this program does not act on, or an `EventType` it does not know: to be
    /// answered OK and ignored.
    Ignored,
}

/// Why a callback body could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {command} body: {detail}")]
pub struct MalformedBody {
    /// The command whose body it was.
    pub command: String,
    /// serde's description (position and what was expected; it never quotes the whole body).
    pub detail: String,
}

/// Reads the body of callback `command`. Unknown commands are [`Parsed::Ignored`] without looking
/// at the body; a known command with a body that is not its JSON is an error.
pub fn parse(command: &str, body: &[u8]) -> Result<Parsed, MalformedBody> {
    let malformed = |e: serde_json::Error| MalformedBody {
        command: command.to_owned(),
        detail: e.to_string(),
    };
    let change = match command {
        MEMBER_STATE_CHANGE => {
            let b: MemberStateChangeBody = serde_json::from_slice(body).map_err(malformed)?;
            let presence = match b.event_type.as_str() {
                "Online" => Presence::Online,
                "Offline" => Presence::Offline,
                _ => return Ok(Parsed::Ignored),
            };
            PresenceChange {
                group_id: b.group_id,
                presence,
                accounts: b.members.into_iter().map(|m| m.account).collect(),
                event_time: b.event_time,
            }
        }
        AFTER_NEW_MEMBER_JOIN => {
            let b: NewMemberJoinBody = serde_json::from_slice(body).map_err(malformed)?;
            PresenceChange {
                group_id: b.group_id,
                presence: Presence::Online,
                accounts: b.members.into_iter().map(|m| m.account).collect(),
                event_time: b.event_time,
            }
        }
        AFTER_MEMBER_EXIT => {
            let b: MemberExitBody = serde_json::from_slice(body).map_err(malformed)?;
            PresenceChange {
                group_id: b.group_id,
                presence: Presence::Offline,
                accounts: b.members.into_iter().map(|m| m.account).collect(),
                event_time: b.event_time,
            }
        }
        _ => return Ok(Parsed::Ignored),
    };
    Ok(Parsed::Presence(change))
}

/// The reply the service expects: `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`, or FAIL
/// with a nonzero code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackReplyBody {
    /// `OK` or `FAIL`.
    #[serde(rename = "ActionStatus")]
    pub action_status: String,
    /// Empty when OK.
    #[serde(rename = "ErrorInfo")]
    pub error_info: String,
    /// 0 when OK.
    #[serde(rename = "ErrorCode")]
    pub error_code: i64,
}

impl CallbackReplyBody {
    /// The success reply.
    pub fn ok() -> Self {
        CallbackReplyBody {
            action_status: "OK".into(),
            error_info: String::new(),
            error_code: 0,
        }
    }

    /// A failure reply (`ErrorCode` 1) saying why.
    pub fn fail(info: impl Into<String>) -> Self {
        CallbackReplyBody {
            action_status: "FAIL".into(),
            error_info: info.into(),
            error_code: 1,
        }
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
    /// When it happened (unix seconds), by `http::event_at`: the callback's `EventTime`, else the
    /// moment the listener received it. Stamped here, not when the daemon gets to the event
    /// (which may be after a long reconcile), so the daemon can tell an event older than a
    /// mark's confirmation from a newer one.
    pub at: UnixTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad `EventTime` names the field and what it takes, never serde's "untagged enum".
    #[test]
    fn a_bad_event_time_says_what_it_takes() {
        for (value, found) in [
            ("true", "found a boolean"),
            ("[1]", "found a list"),
            ("{}", "found an object"),
            ("1.5", "a whole number"),
        ] {
            let body = format!(
                r#"{{"GroupId":"g","EventType":"Online","MemberList":[{{"Member_Account":"a"}}],"EventTime":{value}}}"#
            );
            let e = parse(MEMBER_STATE_CHANGE, body.as_bytes()).unwrap_err();
            assert!(
                e.detail.contains("`EventTime`") && e.detail.contains(found),
                "{value}: {e}"
            );
            assert!(!e.detail.contains("untagged"), "{e}");
        }
    }

    #[test]
    fn sign_matches_the_doc_vector() {
        let expected = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";
        assert_eq!(sign("xxxxyyyy", "1669872112"), expected);
        assert!(verify_sign("xxxxyyyy", "1669872112", expected));
    }

    #[test]
    fn verify_refuses_any_other_sign() {
        let good = sign("tok", "100");
        assert!(!verify_sign("tok", "101", &good));
        assert!(!verify_sign("tok2", "100", &good));
        assert!(!verify_sign("tok", "100", &good.to_uppercase()));
        assert!(!verify_sign("tok", "100", &good[..63]));
        assert!(!verify_sign("tok", "100", ""));
        let mut flipped = good.clone().into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        assert!(!verify_sign(
            "tok",
            "100",
            std::str::from_utf8(&flipped).unwrap()
        ));
    }

    #[test]
    fn request_time_window_is_inclusive_60_seconds() {
        assert_eq!(check_request_time("1000", 1000), Ok(1000));
        assert_eq!(check_request_time("1060", 1000), Ok(1060));
        assert_eq!(check_request_time("940", 1000), Ok(940));
        assert!(matches!(
            check_request_time("1061", 1000),
            Err(RequestTimeError::Skewed { skew: 61, .. })
        ));
        assert!(matches!(
            check_request_time("939", 1000),
            Err(RequestTimeError::Skewed { skew: -61, .. })
        ));
        assert!(matches!(
            check_request_time("abc", 1000),
            Err(RequestTimeError::NotANumber(_))
        ));
        assert!(check_request_time("-9223372036854775808", i64::MAX).is_err());
    }

    #[test]
    fn event_time_as_number_or_string() {
        for body in [
            r#"{"GroupId":"g","EventType":"Online","MemberList":[{"Member_Account":"a"}],"EventTime":1669872112000}"#,
            r#"{"GroupId":"g","EventType":"Online","MemberList":[{"Member_Account":"a"}],"EventTime":"1669872112000"}"#,
        ] {
            let Parsed::Presence(p) = parse(MEMBER_STATE_CHANGE, body.as_bytes()).unwrap() else {
                panic!("ignored: {body}");
            };
            assert_eq!(p.event_time.unwrap().as_i64(), Some(1_669_872_112_000));
        }
    }

    #[test]
    fn the_three_commands_map_to_presence() {
        let cases = [
            (
                MEMBER_STATE_CHANGE,
                r#"{"CallbackCommand":"x","GroupId":"@TGS#1","Type":"AVChatRoom","EventType":"Offline","EventCause":"Quit","MemberList":[{"Member_Account":"a"},{"Member_Account":"b"}],"Extra":{"x":1}}"#,
                Presence::Offline,
            ),
            (
                AFTER_NEW_MEMBER_JOIN,
                r#"{"GroupId":"@TGS#1","Type":"AVChatRoom","JoinType":"Apply","Operator_Account":"a","NewMemberList":[{"Member_Account":"a"},{"Member_Account":"b"}],"EventTime":"1"}"#,
                Presence::Online,
            ),
            (
                AFTER_MEMBER_EXIT,
                r#"{"GroupId":"@TGS#1","Type":"AVChatRoom","ExitType":"Kicked","Operator_Account":"x","ExitMemberList":[{"Member_Account":"a"},{"Member_Account":"b"}],"EventTime":1}"#,
                Presence::Offline,
            ),
        ];
        for (command, body, presence) in cases {
            let parsed = parse(command, body.as_bytes()).unwrap();
            let Parsed::Presence(p) = parsed else {
                panic!("{command} ignored");
            };
            assert_eq!(p.group_id, "@TGS#1");
            assert_eq!(p.presence, presence, "{command}");
            assert_eq!(p.accounts, ["a", "b"]);
        }
    }

    #[test]
    fn unknown_commands_and_event_types_are_ignored_and_bad_bodies_are_errors() {
        assert_eq!(parse("Group.Other", b"not json"), Ok(Parsed::Ignored));
        assert_eq!(
            parse(
                MEMBER_STATE_CHANGE,
                br#"{"GroupId":"g","EventType":"Away","MemberList":[]}"#
            ),
            Ok(Parsed::Ignored)
        );
        let err = parse(MEMBER_STATE_CHANGE, b"{\"GroupId\":").unwrap_err();
        assert!(err.to_string().contains(MEMBER_STATE_CHANGE), "{err}");
        assert!(parse(AFTER_MEMBER_EXIT, br#"{"ExitMemberList":[]}"#).is_err());
        assert!(parse(AFTER_NEW_MEMBER_JOIN, br#"[1,2]"#).is_err());
    }

    #[test]
    fn replies_have_the_documented_shape() {
        assert_eq!(
            serde_json::to_string(&CallbackReplyBody::ok()).unwrap(),
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
        );
        let fail: serde_json::Value =
            serde_json::to_value(CallbackReplyBody::fail("bad Sign")).unwrap();
        assert_eq!(
            fail,
            serde_json::json!({"ActionStatus":"FAIL","ErrorInfo":"bad Sign","ErrorCode":1})
        );
    }
}
