//! Notifications where the team works (SPEC section 12): drift, failed applies, guard refusals,
//! broken desired files, takeovers and recoveries posted to chat webhooks (`notify:`).
//!
//! Each `notify:` entry has a bounded queue drained by a background task of its own, so a dead
//! webhook delays neither a reconcile nor the other webhooks: [`Notifier::condition`] and
//! [`Notifier::event`] only queue. A full queue drops its oldest message and counts it. Delivery
//! retries with backoff; a webhook that still fails is a warning that names the entry by index
//! and format (never the URL) and a metric. `apply` waits for its messages with
//! [`Notifier::flush`], bounded.
//!
//! The webhook URL is a secret: read once at start from `url_file` (refused when others may
//! read it) or `url_env`, held in a type whose `Debug` prints `***`, and never logged or put in
//! an error; the client follows no redirect.
//!
//! Architecture invariant: `body` and `conditions` are pure; only this file does I/O.

pub mod body;
pub mod conditions;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::config::notify::{Event, Format, NotifyEntry, UrlSource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::error::{Error, exit};
use crate::metrics::Metrics;
pub use body::Message;
use conditions::Conditions;

/// Messages one webhook may have waiting; past this the oldest is dropped (and counted).
pub const QUEUE_CAPACITY: usize = 32;
/// How long `apply` waits for its notifications before it exits (SPEC section 12).
pub const APPLY_FLUSH: Duration = Duration::from_secs(10);
/// How long the daemon waits for its last notifications when it stops.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// One attempt's limit (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of an answer read (vendors answer a few dozen).
const MAX_ANSWER_BYTES: usize = 16 << 10;

/// A webhook URL: whoever has it can post to the channel. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookUrl(***)")
    }
}

/// One `notify:` entry at run time.
#[derive(Debug)]
struct Target {
    /// Its place in `notify:` (0-based), which names it in warnings.
    index: usize,
    /// The config entry (format and events).
    entry: NotifyEntry,
    /// Where it posts.
    url: WebhookUrl,
    /// Bodies waiting, oldest first, with the event each carries (for metrics and warnings).
    queue: Mutex<VecDeque<(Event, Vec<u8>)>>,
    /// Wakes the worker when something is queued.
    wake: tokio::sync::Notify,
}

/// Sends notifications for one process. With no `notify:` entries every method does nothing.
#[derive(Debug)]
pub struct Notifier {
    /// The SDKAppID the messages name.
    app: u64,
    targets: Vec<Arc<Target>>,
    /// Which conditions are up (once per change).
    conditions: Mutex<Conditions>,
    metrics: Arc<Metrics>,
    /// Messages queued or being delivered, over all targets: what [`Notifier::flush`] waits on.
    pending: Arc<watch::Sender<usize>>,
    /// One per target; aborted when the notifier is dropped.
    workers: Vec<JoinHandle<()>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

impl Notifier {
    /// Reads every entry's URL and starts one delivery task per entry (call it inside the
    /// runtime). A URL that cannot be read or used is a config error at the entry's
    /// `file:line:column`.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Notifier, Error> {
        let urls = read_urls(config)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(ATTEMPT_TIMEOUT / 2)
            .user_agent(concat!("marksync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| {
                Error::io(
                    "cannot build the notification client",
                    std::io::Error::other("TLS setup failed"),
                )
            })?;
        let (pending, _) = watch::channel(0usize);
        let pending = Arc::new(pending);
        let mut targets = Vec::new();
        let mut workers = Vec::new();
        for (index, (entry, url)) in config.notify.iter().zip(urls).enumerate() {
            metrics.init_notify(
                entry.format.label(),
                &entry.on.iter().map(|e| e.label()).collect::<Vec<_>>(),
            );
            let target = Arc::new(Target {
                index,
                entry: entry.clone(),
                url,
                queue: Mutex::new(VecDeque::new()),
                wake: tokio::sync::Notify::new(),
            });
            workers.push(tokio::spawn(work(
                target.clone(),
                client.clone(),
                metrics.clone(),
                pending.clone(),
            )));
            targets.push(target);
        }
        Ok(Notifier {
            app: config.sdkappid,
            targets,
            conditions: Mutex::new(Conditions::default()),
            metrics,
            pending,
            workers,
        })
    }

    /// Checks that every entry's URL can be read and used (`validate`), without sending.
    pub fn check(config: &Config) -> Result<(), Error> {
        read_urls(config).map(drop)
    }

    /// Reports a condition (drift, apply_failed, guard_refused, desired_invalid) as it is now.
    /// A message goes out only when it starts (the condition's event) or clears (`recovered`,
    /// to the entries that take both `recovered` and the condition's event); reporting the same
    /// state again sends nothing. `details` is only used when a message goes out.
    pub fn condition(
        &self,
        event: Event,
        up: bool,
        summary: &str,
        details: impl FnOnce() -> String,
    ) {
        if self.targets.is_empty() {
            return;
        }
        let transition = {
            let mut c = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
            c.observe(event, up, summary)
        };
        if let Some(t) = transition {
            self.send(t.send, Some(t.condition), t.summary, details());
        }
    }

    /// Sends a one-off event (a takeover; `apply`'s results), whatever was sent before.
    pub fn event(&self, event: Event, summary: &str, details: &str) {
        self.send(event, None, summary.to_string(), details.to_string());
    }

    fn send(&self, event: Event, condition: Option<Event>, summary: String, details: String) {
        let message = Message {
            event,
            app: self.app,
            summary,
            details,
        };
        let mut queued = 0;
        for target in &self.targets {
            let wanted = target.entry.wants(event)
                && condition.is_none_or(|c| c == event || target.entry.wants(c));
            if wanted {
                self.enqueue(target, event, body::body(target.entry.format, &message));
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::info!(
                event = event.label(),
                webhooks = queued,
                "notifying {}: {}",
                event.label(),
                message.summary
            );
        }
    }

    fn enqueue(&self, target: &Target, event: Event, body: Vec<u8>) {
        let mut queue = target.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= QUEUE_CAPACITY
            && let Some((dropped, _)) = queue.pop_front()
        {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
            self.metrics
                .record_notify_dropped(target.entry.format.label());
            tracing::warn!(
                notify = target.index,
                format = target.entry.format.label(),
                event = dropped.label(),
                "notify[{}] ({}): queue full ({QUEUE_CAPACITY} waiting); dropped the oldest message ({})",
                target.index,
                target.entry.format.label(),
                dropped.label()
            );
        }
        self.pending.send_modify(|n| *n += 1);
        queue.push_back((event, body));
        drop(queue);
        target.wake.notify_one();
    }

    /// Waits until every queued message is delivered or given up on, or `within` has passed;
    /// returns whether everything was settled. Never fails: what is left is a warning.
    pub async fn flush(&self, within: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        let settled = tokio::time::timeout(within, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        if !settled {
            let left = *self.pending.borrow();
            tracing::warn!(
                left,
                "{left} notification(s) not delivered within {}s; going on without them",
                within.as_secs()
            );
        }
        settled
    }

    /// After `apply` (not a dry run): `apply_failed` for a partial or fatal failure,
    /// `guard_refused` for a refusal by the mass-clear guard, then waits up to [`APPLY_FLUSH`]
    /// for their delivery. The result (and so the exit code) is not changed.
    pub async fn after_apply(&self, result: &Result<u8, Error>) {
        if self.targets.is_empty() {
            return;
        }
        match result {
            Ok(code) if *code == exit::PARTIAL => self.event(
                Event::ApplyFailed,
                "apply incomplete: some calls failed after retries (exit 4); what succeeded is recorded, run apply again",
                "",
            ),
            Ok(_) => return,
            Err(Error::MassClear(refusal)) => self.event(
                Event::GuardRefused,
                "apply refused by the mass-clear guard (exit 3): nothing was sent",
                &refusal.to_string(),
            ),
            // Not failures of the apply: another process holds the state, or the operator said no.
            Err(Error::State(crate::state::StateError::Locked { .. }) | Error::Cancelled) => return,
            Err(e) => self.event(
                Event::ApplyFailed,
                &format!("apply failed (exit {})", e.exit_code()),
                &e.to_string(),
            ),
        }
        self.flush(APPLY_FLUSH).await;
    }
}

impl Notifier {
    /// After `plan --refresh` (the scheduled drift check where no daemon runs, SPEC section
    /// 12): `drift` when the refresh found drift that needs calls, then waits up to
    /// [`APPLY_FLUSH`] for its delivery.
    pub async fn after_refresh(&self, refreshed: &crate::refresh::Refreshed) {
        if self.targets.is_empty() || !refreshed.classified.needs_calls() {
            return;
        }
        self.event(
            Event::Drift,
            "a refresh found drift: marks the service lost or holds without the desired files; `marksync apply` repairs it",
            &drift_line(&refreshed.classified.counts()),
        );
        self.flush(APPLY_FLUSH).await;
    }
}

/// The drift counts, in one line.
pub fn drift_line(c: &crate::refresh::DriftCounts) -> String {
    c.iter()
        .map(|(kind, n)| format!("{n} {}", kind.as_str().replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Delivers `target`'s queue, oldest first, for as long as the notifier lives.
async fn work(
    target: Arc<Target>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    pending: Arc<watch::Sender<usize>>,
) {
    loop {
        let next = target
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some((event, body)) = next else {
            // `notify_one` stores a permit when nobody waits: a message queued between the
            // pop and this wait is not missed.
            target.wake.notified().await;
            continue;
        };
        deliver(&target, &client, &metrics, event, body).await;
        pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One message, with retries: 5 attempts, backoff from 1 s doubling to 30 s, with jitter.
async fn deliver(
    target: &Target,
    client: &reqwest::Client,
    metrics: &Metrics,
    event: Event,
    body: Vec<u8>,
) {
    let format = target.entry.format;
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(4)
        .with_jitter()
        .build();
    let mut attempts = 0;
    let failure = loop {
        attempts += 1;
        match post(client, &target.url, format, &body).await {
            Ok(()) => {
                metrics.record_notify(format.label(), event.label(), true);
                tracing::debug!(
                    notify = target.index,
                    format = format.label(),
                    event = event.label(),
                    attempts,
                    "notification delivered"
                );
                return;
            }
            Err(f) if f.retry => match delays.next() {
                Some(wait) => {
                    tracing::debug!(
                        notify = target.index,
                        format = format.label(),
                        "notification attempt {attempts} failed ({}); retrying in {wait:?}",
                        f.what
                    );
                    tokio::time::sleep(wait).await;
                }
                None => break f,
            },
            Err(f) => break f,
        }
    };
    metrics.record_notify(format.label(), event.label(), false);
    tracing::warn!(
        notify = target.index,
        format = format.label(),
        event = event.label(),
        attempts,
        "notify[{}] ({}): {} not delivered after {attempts} attempt(s): {}",
        target.index,
        format.label(),
        event.label(),
        failure.what
    );
}

/// One attempt: POST the body, read a bounded answer, judge it for the format.
async fn post(
    client: &reqwest::Client,
    url: &WebhookUrl,
    format: Format,
    body: &[u8],
) -> Result<(), body::Failure> {
    let sent = client
        .post(url.0.as_str())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body.to_vec())
        .send()
        .await;
    let mut response = sent.map_err(|e| body::Failure {
        retry: true,
        what: network_error(&e),
    })?;
    let status = response.status().as_u16();
    let mut answer = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER_BYTES.saturating_sub(answer.len());
                answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if answer.len() >= MAX_ANSWER_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(body::Failure {
                    retry: true,
                    what: format!("reading the answer: {}", network_error(&e)),
                });
            }
        }
    }
    body::judge(format, status, &answer, &url.0)
}

/// A network error in the user's terms, never with the URL (reqwest's own text includes it).
fn network_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect to the webhook's host".into()
    } else if e.is_redirect() {
        "the webhook redirected (redirects are not followed: check the URL)".into()
    } else {
        "the request failed before an answer came".into()
    }
}

/// Every entry's URL, in order; the first problem is an error at that entry.
fn read_urls(config: &Config) -> Result<Vec<WebhookUrl>, Error> {
    let mut urls = Vec::new();
    let mut problems = Vec::new();
    for (index, entry) in config.notify.iter().enumerate() {
        match read_url(entry) {
            Ok(url) => urls.push(url),
            Err(message) => {
                let (line, column) = entry.at;
                problems.push(Diagnostic {
                    line,
                    column,
                    ..Diagnostic::file_error(
                        &config.path,
                        format!("`notify[{index}]` ({}): {message}", entry.format.label()),
                    )
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(urls)
    } else {
        Err(Error::Config(Diagnostics(problems)))
    }
}

/// The URL of one entry, checked. The messages name the file or variable, never the URL.
fn read_url(entry: &NotifyEntry) -> Result<WebhookUrl, String> {
    let (text, from) = match &entry.url {
        UrlSource::File(path) => {
            let from = format!("the webhook URL file {}", path.display());
            if let Some(mode) = others_mode(path) {
                return Err(format!(
                    "{from} can be read by other users (mode {mode:03o}), and whoever has the URL can post to the channel; restrict it with chmod 600 (or 640 for a group of readers)"
                ));
            }
            let bytes = crate::input::read_regular(path, crate::input::MAX_TOKEN_BYTES)
                .map_err(|e| format!("cannot read {from}: {e}"))?;
            if let Some(mode) = crate::tim::usersig::loose_mode(path) {
                tracing::warn!(
                    "{from} is readable by its group (mode {mode:03o}); restrict it with chmod 600 unless the group is meant to read it"
                );
            }
            (bytes, from)
        }
        UrlSource::Env(name) => {
            let from = format!("environment variable {name}");
            let value = std::env::var_os(name).ok_or_else(|| {
                format!("{from} (`url_env`) is not set; set it to the webhook URL")
            })?;
            (value.into_encoded_bytes(), from)
        }
    };
    let line = crate::input::secret_line(&text).map_err(|p| format!("{from} {p}"))?;
    check_url(line).map_err(|why| format!("{from} does not hold a usable webhook URL: {why}"))?;
    Ok(WebhookUrl(line.to_string()))
}

/// The permission bits of `path` when users other than its owner and group may read or write it.
fn others_mode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o007 != 0).then_some(mode)
}

/// An `https://` URL, or `http://` to this machine (a local relay, tests): the message and the
/// key in the URL must not cross a network in clear. The reason never quotes the URL.
pub fn check_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text)
        .map_err(|_| "it is not a URL (expected https://...)".to_string())?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" => {
            let loopback = host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("plain http is only allowed to this machine (127.0.0.1, ::1, localhost); use https".into())
            }
        }
        _ => Err("it must start with https://".into()),
    }
}
