//! The one module that knows the webhooks' wire formats: the body each format expects, cut to
//! the vendor's size limit, and what each answer means (a vendor that answers HTTP 200 with an
//! error code in the body has not delivered). Pure: no I/O, no clock.

use serde_json::json;

use crate::config::notify::{Event, Format};

/// What a notification says, before it is shaped for a format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What happened.
    pub event: Event,
    /// The SDKAppID the message is about (one team may run several apps).
    pub app: u64,
    /// One line, in the user's terms.
    pub summary: String,
    /// More lines (counts, the first problems with their `file:line:column`); may be empty.
    pub details: String,
}

/// `details` beyond this many bytes are cut for every format (a desired-file report can run to
/// a hundred diagnostics; a chat message is not the place for all of them: the log has them).
pub const MAX_DETAILS_BYTES: usize = 8 << 10;

/// Slack: "For best results, limit the number of characters in the text field to 4,000
/// characters"; longer messages are split or, past 40,000 characters, truncated by Slack
/// (<https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks/>,
/// <https://api.slack.com/changelog/2018-04-truncating-really-long-messages>). Counted in bytes
/// here, which is never more characters than that.
pub const SLACK_TEXT_BYTES: usize = 4000;
/// WeCom group robot: `markdown.content` "最长不超过4096个字节，必须是utf8编码"
/// (<https://developer.work.weixin.qq.com/document/path/91770>).
pub const WECOM_CONTENT_BYTES: usize = 4096;
/// DingTalk custom robot: the message-type page documents no byte limit for `markdown.text`;
/// the robot is meant for summaries (20 messages a minute). Held to WeCom's 4096 bytes, which
/// DingTalk accepts (<https://open.dingtalk.com/document/orgapp/custom-robot-access>,
/// <https://open.dingtalk.com/document/development/robot-message-type>).
pub const DINGTALK_TEXT_BYTES: usize = 4096;
/// Feishu / Lark custom bot: "请求体大小不能超过 20 KB" (the whole request body)
/// (<https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>).
pub const FEISHU_BODY_BYTES: usize = 20 << 10;
/// `format: json` is for a receiver of one's own: the details cap alone bounds it.
const JSON_BODY_BYTES: usize = 64 << 10;

/// The request body for `format`, within the vendor's limit.
pub fn body(format: Format, m: &Message) -> Vec<u8> {
    let details = cut(&m.details, MAX_DETAILS_BYTES);
    let value = match format {
        // {"event", "app", "summary", "details"} (SPEC section 12).
        Format::Json => json!({
            "event": m.event.label(),
            "app": m.app,
            "summary": m.summary,
            "details": details,
        }),
        // Incoming webhook: {"text": ...} (blocks optional, not used). `&`, `<` and `>` are
        // Slack's control characters and must be escaped in text.
        Format::Slack => {
            let text = format!(
                "*marksync* (app {}) `{}`: {}{}",
                m.app,
                m.event.label(),
                slack_escape(&m.summary),
                if details.is_empty() {
                    String::new()
                } else {
                    format!("\n```\n{}\n```", slack_escape(&details))
                }
            );
            json!({ "text": cut(&text, SLACK_TEXT_BYTES) })
        }
        // Group robot: {"msgtype": "markdown", "markdown": {"content": ...}}.
        Format::Wecom => json!({
            "msgtype": "markdown",
            "markdown": { "content": cut(&markdown(m, &details), WECOM_CONTENT_BYTES) },
        }),
        // Custom robot: {"msgtype": "markdown", "markdown": {"title", "text"}}; the title is
        // what the notification preview shows.
        Format::Dingtalk => json!({
            "msgtype": "markdown",
            "markdown": {
                "title": format!("marksync: {}", m.event.label()),
                "text": cut(&markdown(m, &details), DINGTALK_TEXT_BYTES),
            },
        }),
        // Custom bot: {"msg_type": "text", "content": {"text": ...}}; the limit is on the body.
        Format::Feishu => {
            let text = plain(m, &details);
            let mut budget = FEISHU_BODY_BYTES;
            loop {
                let v = json!({ "msg_type": "text", "content": { "text": cut(&text, budget) } });
                let len = serde_json::to_vec(&v).map_or(0, |b| b.len());
                if len <= FEISHU_BODY_BYTES || budget == 0 {
                    break v;
                }
                budget = budget.saturating_sub(len - FEISHU_BODY_BYTES);
            }
        }
    };
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    if format == Format::Json && bytes.len() > JSON_BODY_BYTES {
        // Only a summary of tens of kilobytes gets here.
        let short = Message {
            summary: cut(&m.summary, 1024),
            ..m.clone()
        };
        return body(format, &short);
    }
    bytes
}

/// The markdown of WeCom and DingTalk: a bold headline, then the details quoted line by line.
fn markdown(m: &Message, details: &str) -> String {
    let mut out = format!(
        "**marksync** (app {}) `{}`\n{}",
        m.app,
        m.event.label(),
        m.summary
    );
    if !details.is_empty() {
        out.push('\n');
        for line in details.lines() {
            out.push_str("\n> ");
            out.push_str(line);
        }
    }
    out
}

/// Plain text (Feishu's text message).
fn plain(m: &Message, details: &str) -> String {
    let mut out = format!(
        "marksync (app {}) {}: {}",
        m.app,
        m.event.label(),
        m.summary
    );
    if !details.is_empty() {
        out.push_str("\n\n");
        out.push_str(details);
    }
    out
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` in at most `max` bytes, cut at a character boundary with a closing note of how much
/// was left out, so a cut message never reads as complete.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let note = |n: usize| format!("\n… ({n} more bytes cut; the log has everything)");
    // The note's length depends on the number, which depends on where the cut falls.
    let mut keep = max.saturating_sub(note(text.len()).len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = text[..keep].to_string();
    let tail = note(text.len() - keep);
    if out.len() + tail.len() <= max {
        out.push_str(&tail);
    }
    out
}

/// Why a delivery failed, in words that never contain the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Whether trying again may help (5xx, 429, a network error, a vendor's rate limit).
    pub retry: bool,
    /// What went wrong.
    pub what: String,
}

/// What an answer means for `format`: `Ok` when the vendor took the message. WeCom and DingTalk
/// answer `{"errcode": 0, "errmsg": "ok"}`, Feishu `{"code": 0, "msg": "success"}` (older
/// deployments `{"StatusCode": 0}`), each with HTTP 200 even when they refuse the message; Slack
/// answers `ok` with 200 and an error word with 4xx. `url` is only used to scrub the vendor's
/// message (a vendor could echo the key back).
pub fn judge(format: Format, status: u16, body: &[u8], url: &str) -> Result<(), Failure> {
    if !(200..300).contains(&status) {
        let retry = status == 429 || status >= 500;
        let hint = match status {
            300..=399 => " (redirects are not followed: check the URL)",
            401 | 403 | 404 | 410 => " (check the webhook URL and that the bot still exists)",
            _ => "",
        };
        let said = said(body, url);
        return Err(Failure {
            retry,
            what: format!("the webhook answered HTTP {status}{hint}{said}"),
        });
    }
    let (field, alt, rate_limited): (&str, Option<&str>, &[i64]) = match format {
        Format::Json | Format::Slack => return Ok(()),
        // 45009: the robot's rate limit (20 messages a minute).
        Format::Wecom => ("errcode", None, &[45009]),
        // 130101: "send too fast".
        Format::Dingtalk => ("errcode", None, &[130101]),
        // 11232: "frequency limited".
        Format::Feishu => ("code", Some("StatusCode"), &[11232]),
    };
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|v| {
        v.get(field)
            .or_else(|| alt.and_then(|a| v.get(a)))
            .and_then(serde_json::Value::as_i64)
    });
    match code {
        Some(0) => Ok(()),
        Some(code) => {
            let message = parsed
                .as_ref()
                .and_then(|v| {
                    ["errmsg", "msg", "StatusMessage"]
                        .iter()
                        .find_map(|k| v.get(*k).and_then(serde_json::Value::as_str))
                })
                .map(|m| format!(": {}", scrub(m, url)))
                .unwrap_or_default();
            Err(Failure {
                retry: rate_limited.contains(&code),
                what: format!("the webhook answered HTTP {status} with {field} {code}{message}"),
            })
        }
        None => Err(Failure {
            retry: false,
            what: format!(
                "the webhook answered HTTP {status} without the `{field}` that a {} robot always sends: is this the {} webhook URL?",
                format.label(),
                format.label()
            ),
        }),
    }
}

/// The start of an error body, for a message: `: "..."`, or nothing when empty.
fn said(body: &[u8], url: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let short: String = text.chars().take(200).collect();
    format!(": {:?}", scrub(&short, url))
}

/// `text` with the URL and every longer piece of it (path segments, query values: where keys
/// and tokens live) replaced by `***`.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, "***");
    let pieces = url
        .split(['/', '?', '&', '=', '#'])
        .filter(|p| p.len() >= 6 && !p.contains('.') && !p.contains(':'));
    for piece in pieces {
        out = out.replace(piece, "***");
    }
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}
