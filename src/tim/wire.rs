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
