//! The `notify:` key (SPEC section 12): where notifications go, in which format, for which events.
//! Only the shapes and their checks live here (no I/O): the webhook URL is a secret read at start
//! by [`crate::notify`], never by the config reader, so it never sits in a `Config`.

use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::Checker;
use crate::yaml::{Scalar, Value};

/// Something worth telling the team about (SPEC section 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A refresh found drift that needs calls.
    Drift,
    /// An apply failed, partly (some calls failed after retries) or wholly (a fatal error).
    ApplyFailed,
    /// The mass-clear guard refused a plan.
    GuardRefused,
    /// A desired file stopped parsing (the daemon keeps the last good state).
    DesiredInvalid,
    /// A standby daemon took over the lease (SPEC section 11).
    Takeover,
    /// A condition above cleared.
    Recovered,
}

impl Event {
    /// Every event, in the order the README lists them.
    pub const ALL: [Event; 6] = [
        Event::Drift,
        Event::ApplyFailed,
        Event::GuardRefused,
        Event::DesiredInvalid,
        Event::Takeover,
        Event::Recovered,
    ];

    /// The name in the config, the `json` body and the metrics' `event` label.
    pub fn label(self) -> &'static str {
        match self {
            Event::Drift => "drift",
            Event::ApplyFailed => "apply_failed",
            Event::GuardRefused => "guard_refused",
            Event::DesiredInvalid => "desired_invalid",
            Event::Takeover => "takeover",
            Event::Recovered => "recovered",
        }
    }

    /// The event named `name`, if any.
    pub fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.label() == name)
    }
}

/// The body a webhook expects (`crate::notify::body` builds each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// `{"event", "app", "summary", "details"}`, for a receiver of one's own.
    Json,
    /// A Slack incoming webhook.
    Slack,
    /// A WeCom (WeChat Work) group robot.
    Wecom,
    /// A DingTalk custom robot.
    Dingtalk,
    /// A Feishu / Lark custom bot.
    Feishu,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 5] = [
        Format::Json,
        Format::Slack,
        Format::Wecom,
        Format::Dingtalk,
        Format::Feishu,
    ];

    /// The name in the config and the metrics' `format` label.
    pub fn label(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::Wecom => "wecom",
            Format::Dingtalk => "dingtalk",
            Format::Feishu => "feishu",
        }
    }

    /// The format named `name`, if any.
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.label() == name)
    }
}

/// Where the webhook URL (a secret: whoever has it can post to the channel) is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource {
    /// `url_file`: a file holding the URL on one line.
    File(PathBuf),
    /// `url_env`: an environment variable holding the URL.
    Env(String),
}

/// One entry of `notify:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyEntry {
    /// Where the URL is read from.
    pub url: UrlSource,
    /// The body the webhook expects.
    pub format: Format,
    /// The events sent to it (`on:`; every event when the key is absent).
    pub on: Vec<Event>,
    /// Where the entry is written (line, column), so a URL that cannot be read at start is
    /// reported at the entry, like any other config problem.
    pub at: (u64, u64),
}

impl NotifyEntry {
    /// Whether `event` goes to this entry.
    pub fn wants(&self, event: Event) -> bool {
        self.on.contains(&event)
    }
}

const ENTRY_KEYS: &[&str] = &["url_file", "url_env", "format", "on"];

impl Checker<'_> {
    /// `notify:`: a list of entries, each checked whole so every problem is reported at once.
    pub(super) fn notify(&mut self, v: Spanned<Value>, base: &Path) -> Option<Vec<NotifyEntry>> {
        let Value::Seq(items) = v.value else {
            let message = format!(
                "`notify` must be a list of webhooks such as [{{url_file: slack.url, format: slack, on: [drift]}}], found {}",
                v.value.kind()
            );
            self.err(&v.referenced, message);
            return None;
        };
        let before = self.errors.len();
        let entries: Vec<Option<NotifyEntry>> = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| self.notify_entry(i, item, base))
            .collect();
        if self.errors.len() != before {
            for d in &mut self.errors[before..] {
                // A URL written into the config (`url: https://...`) is a secret: the message
                // says where it belongs, and the line holding it is not echoed into a CI log.
                if d.source_line.as_deref().is_some_and(|l| l.contains("://")) {
                    d.source_line = None;
                    if d.message.starts_with("unknown key") {
                        d.message.push_str(
                            "; the webhook URL is a secret: put it in a file named by `url_file` (mode 600) or in an environment variable named by `url_env`, never in the config",
                        );
                    }
                }
            }
            return None;
        }
        entries.into_iter().collect()
    }

    fn notify_entry(
        &mut self,
        index: usize,
        item: Spanned<Value>,
        base: &Path,
    ) -> Option<NotifyEntry> {
        let at = item.referenced;
        let key = format!("notify[{index}]");
        let before = self.errors.len();
        // Each source is counted when its key is present, even with a bad value, so "both" and
        // "neither" are reported about what was written.
        let (mut file, mut env) = (None, None);
        let (mut has_file, mut has_env) = (false, false);
        let mut format = None;
        let mut has_format = false;
        let mut on = None;
        for (k, val) in self.map(item, &key, ENTRY_KEYS)? {
            match k.value.as_str() {
                "url_file" => {
                    has_file = true;
                    file = self.path(&val, &format!("{key}.url_file"), base);
                    if file
                        .as_ref()
                        .is_some_and(|f| f.to_string_lossy().contains("://"))
                    {
                        file = None;
                        self.err(
                            &val.referenced,
                            format!("`{key}.url_file` names a file holding the webhook URL, found a URL; write the URL into a file of mode 600 and name that file"),
                        );
                    }
                }
                "url_env" => {
                    has_env = true;
                    if let Some(name) = self.string(&val, &format!("{key}.url_env")) {
                        if is_env_name(&name) {
                            env = Some(name);
                        } else {
                            self.err(
                                &val.referenced,
                                format!(
                                    "`{key}.url_env` names an environment variable (letters, digits and _, not starting with a digit), found {}; the URL itself belongs in that variable or in a `url_file`",
                                    if name.contains("://") { "a URL".to_string() } else { format!("{name:?}") }
                                ),
                            );
                        }
                    }
                }
                "format" => {
                    has_format = true;
                    if let Some(name) = self.string(&val, &format!("{key}.format")) {
                        match Format::parse(&name) {
                            Some(f) => format = Some(f),
                            None => self.err(
                                &val.referenced,
                                format!(
                                    "`{key}.format`: unknown format {name:?}; known formats: {}",
                                    Format::ALL.map(Format::label).join(", ")
                                ),
                            ),
                        }
                    }
                }
                _ => on = self.notify_events(&val, &key),
            }
        }
        match (has_file, has_env) {
            (true, true) => self.err(
                &at,
                format!("`{key}` has both `url_file` and `url_env`; keep one (the URL is read from exactly one place)"),
            ),
            (false, false) => self.err(
                &at,
                format!("`{key}` needs `url_file` (a file holding the webhook URL) or `url_env` (an environment variable holding it)"),
            ),
            _ => {}
        }
        if !has_format {
            self.err(
                &at,
                format!(
                    "`{key}` needs `format`: one of {}",
                    Format::ALL.map(Format::label).join(", ")
                ),
            );
        }
        if self.errors.len() != before {
            return None;
        }
        let url = match (file, env) {
            (Some(path), None) => UrlSource::File(path),
            (None, Some(name)) => UrlSource::Env(name),
            _ => return None,
        };
        Some(NotifyEntry {
            url,
            format: format?,
            on: on.unwrap_or_else(|| Event::ALL.to_vec()),
            at: (at.line().max(1), at.column().max(1)),
        })
    }

    fn notify_events(&mut self, v: &Spanned<Value>, key: &str) -> Option<Vec<Event>> {
        let Value::Seq(items) = &v.value else {
            self.err(
                &v.referenced,
                format!(
                    "`{key}.on` must be a list of events such as [drift, apply_failed], found {}",
                    v.value.kind()
                ),
            );
            return None;
        };
        let mut events = Vec::new();
        let before = self.errors.len();
        for item in items {
            let name = match &item.value {
                Value::Scalar(Scalar::Str(s)) => s.as_str(),
                other => {
                    let message =
                        format!("`{key}.on` lists events by name, found {}", other.kind());
                    self.err(&item.referenced, message);
                    continue;
                }
            };
            match Event::parse(name) {
                Some(e) if !events.contains(&e) => events.push(e),
                Some(_) => self.err(&item.referenced, format!("`{key}.on` lists {name} twice")),
                None => self.err(
                    &item.referenced,
                    format!(
                        "`{key}.on`: unknown event {name:?}; known events: {}",
                        Event::ALL.map(Event::label).join(", ")
                    ),
                ),
            }
        }
        if events.is_empty() && self.errors.len() == before {
            self.err(
                &v.referenced,
                format!("`{key}.on` is empty: nothing would be sent; list events, or remove `on` to send every event"),
            );
        }
        (self.errors.len() == before).then(|| {
            events.sort();
            events
        })
    }
}

/// Whether `name` can be an environment variable's name (POSIX portable: `[A-Za-z_][A-Za-z0-9_]*`).
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
