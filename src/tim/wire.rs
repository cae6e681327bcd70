//! The JSON bodies of the REST API, as `reference/tencent-im-api.md` sections 1, 3 and 4 give them.
//!
//! Architecture invariant: this is the only module that knows the service's field names. The client
//! and the emulator both speak through these types. Responses are parsed tolerantly: unknown fields
//! are ignored and missing optional fields default.

use serde::{Deserialize, Serialize};

/// The path of the mark API (the seed page's `modify_group_member_info` is a documentation error).
pub const MODIFY_USER_INFO: &str = "v4/group_open_avchatroom_http_svc/modify_user_info";
/// The path of the online member list API.
pub const GET_MEMBERS: &str = "v4/group_open_avchatroom_http_svc/get_members";

/// `CommandType` of `modify_user_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum CommandType {
    /// 1: set the listed marks.
    Set,
    /// 2: delete the listed marks.
    Delete,
}

impl TryFrom<u8> for CommandType {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(CommandType::Set),
            2 => Ok(CommandType::Delete),
            other => Err(format!(
                "CommandType {other} is neither 1 (set) nor 2 (delete)"
            )),
        }
    }
}

impl From<CommandType> for u8 {
    fn from(c: CommandType) -> u8 {
        match c {
            CommandType::Set => 1,
            CommandType::Delete => 2,
        }
    }
}

/// One member entry of a request or response: an account and its marks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMarks {
    /// The member's UserID.
    #[serde(rename = "Member_Account")]
    pub account: String,
    /// The marks to set or delete (request), or the marks that were set (response).
    #[serde(rename = "Marks", default)]
    pub marks: Vec<u32>,
}

/// Request body of `modify_user_info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModifyUserInfoRequest {
    /// The audio-video group.
    #[serde(rename = "GroupId")]
    pub group_id: String,
    /// Set or delete.
    #[serde(rename = "CommandType")]
    pub command_type: CommandType,
    /// At most 500 entries.
    #[serde(rename = "MemberList")]
    pub member_list: Vec<MemberMarks>,
}

/// The fields every response carries. `ActionStatus`/`ErrorCode` decide the outcome, not the
/// HTTP status alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// "OK" or "FAIL".
    #[serde(rename = "ActionStatus", default)]
    pub action_status: String,
    /// 0 on success.
    #[serde(rename = "ErrorCode", default)]
    pub error_code: i64,
    /// Human-readable detail from the service.
    #[serde(rename = "ErrorInfo", default)]
    pub error_info: String,
}

impl Status {
    /// A success status.
    pub fn ok() -> Self {
        Status {
            action_status: "OK".into(),
            error_code: 0,
            error_info: String::new(),
        }
    }

    /// A failure status with the given code and detail.
    pub fn fail(code: i64, info: impl Into<String>) -> Self {
        Status {
            action_status: "FAIL".into(),
            error_code: code,
            error_info: info.into(),
        }
    }

    /// Whether the service reported success.
    pub fn is_ok(&self) -> bool {
        self.error_code == 0 && self.action_status != "FAIL"
    }
}

/// The common fields as they arrived, each optional, so [`parse_status`] can tell a real
/// service answer from some other JSON (a proxy's error page, a wrong endpoint).
#[derive(Deserialize)]
struct RawStatus {
    /// "OK" or "FAIL", if present.
    #[serde(rename = "ActionStatus")]
    action_status: Option<String>,
    /// 0 on success, if present.
    #[serde(rename = "ErrorCode")]
    error_code: Option<i64>,
    /// The service's detail, if present.
    #[serde(rename = "ErrorInfo")]
    error_info: Option<String>,
}

/// Reads the outcome of any response body, ignoring every other field.
///
/// Unlike deserialising [`Status`] directly (whose fields default), this refuses a JSON body
/// that carries neither `ActionStatus` nor `ErrorCode`: such a body is not the service speaking,
/// and reading it as success would turn "unknown" into "nothing confirmed".
pub fn parse_status(body: &[u8]) -> Result<Status, String> {
    let raw: RawStatus = serde_json::from_slice(body)
        .map_err(|e| format!("response body is not the expected JSON: {e}"))?;
    if raw.action_status.is_none() && raw.error_code.is_none() {
        return Err("response body has neither ActionStatus nor ErrorCode".into());
    }
    Ok(Status {
        action_status: raw.action_status.unwrap_or_default(),
        error_code: raw.error_code.unwrap_or_default(),
        error_info: raw.error_info.unwrap_or_default(),
    })
}

/// Response body of `modify_user_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModifyUserInfoResponse {
    /// Outcome.
    #[serde(flatten)]
    pub status: Status,
    /// Echo of the command.
    #[serde(
        rename = "CommandType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub command_type: Option<u8>,
    /// The members whose marks were applied; offline members are silently left out.
    #[serde(rename = "MemberList", default)]
    pub member_list: Vec<MemberMarks>,
}

/// Request body of `get_members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMembersRequest {
    /// The audio-video group.
    #[serde(rename = "GroupId")]
    pub group_id: String,
    /// 0 first, then the previous response's `NextTimestamp`.
    #[serde(rename = "Timestamp", default)]
    pub timestamp: u64,
    /// Only members carrying this mark.
    #[serde(rename = "Mark", default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
}

/// One online member in a `get_members` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineMember {
    /// The member's UserID.
    #[serde(rename = "Member_Account")]
    pub account: String,
    /// When the member joined (unix seconds).
    #[serde(rename = "JoinTime", default)]
    pub join_time: i64,
}

/// Response body of `get_members`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMembersResponse {
    /// Outcome.
    #[serde(flatten)]
    pub status: Status,
    /// One page of online members.
    #[serde(rename = "MemberList", default)]
    pub member_list: Vec<OnlineMember>,
    /// 0 when this was the last page.
    #[serde(rename = "NextTimestamp", default)]
    pub next_timestamp: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_parsed_tolerantly() {
        let check = |body: &str, want: Result<(i64, bool), ()>| {
            let got = parse_status(body.as_bytes())
                .map(|s| (s.error_code, s.is_ok()))
                .map_err(|_| ());
            assert_eq!(got, want, "{body}");
        };
        check(
            r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#,
            Ok((0, true)),
        );
        check(
            r#"{"ActionStatus":"FAIL","ErrorCode":10010,"ErrorInfo":"x","ErrorDisplay":"y","RequestId":"z"}"#,
            Ok((10010, false)),
        );
        check(r#"{"ErrorCode":60018}"#, Ok((60018, false)));
        check(r#"{"ActionStatus":"FAIL"}"#, Ok((0, false)));
        check(r#"{"error":"proxy says no"}"#, Err(()));
        check("<html>502</html>", Err(()));
        check("", Err(()));
    }

    #[test]
    fn responses_ignore_unknown_fields() {
        let r: ModifyUserInfoResponse = serde_json::from_str(
            r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RequestId":"r","CommandType":1,
                "MemberList":[{"Member_Account":"a","Marks":[1000],"Extra":1}],"New":{"x":[]}}"#,
        )
        .unwrap();
        assert!(r.status.is_ok());
        assert_eq!(r.member_list[0].marks, vec![1000]);
    }
}
