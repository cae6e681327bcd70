//! The REST client: one shared HTTP connection pool, one shared rate limiter, UserSig renewal,
//! retries, and the mapping from the service's answers to [`CallError`].
//!
//! # How a call runs
//! 1. Wait for the shared rate limiter (FIFO among callers; see [`Client`] for the window bound).
//!    A caller's stop flag ([`Client::modify_user_info_unless`]) is looked at once the slot is
//!    granted (and while waiting for it): a stopped run sends nothing more, however many of its
//!    calls were queued at the limiter.
//! 2. POST the JSON body to `{base}/{path}?sdkappid=..&identifier=..&usersig=..&random=..&contenttype=json`
//!    with a UserSig from the cache, renewed when less than a quarter of its validity (at least
//!    an hour) remains.
//! 3. Decide the outcome from the body's `ErrorCode`/`ActionStatus` ([`codes::classify`]): retry
//!    with exponential backoff and jitter (transient and rate-limit failures, HTTP 5xx/429, network
//!    errors, timeouts), regenerate the UserSig and retry once (70001/70003), or return an error.
//!
//! Architecture invariant: the UserSig and the secret key never appear in an error, a `Debug`
//! rendering or a log line. Transport errors are rendered without their URL and then scrubbed.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::Clock;
use crate::model::{Account, GroupId, Mark, MarkSet, UnixTime};
use crate::tim::codes::{self, ErrorClass};
use crate::tim::endpoint::{EndpointError, validate_base_url};
use crate::tim::pace::Pacer;

mod listing;
pub use crate::tim::pace::WINDOW;
use crate::tim::usersig::{self, SecretKey};
use crate::tim::wire::{self, GetMembersRequest, GetMembersResponse};
use crate::tim::wire::{ModifyUserInfoRequest, ModifyUserInfoResponse};
pub use listing::{ListError, LiveGroup, LiveListing, MAX_LISTING_PAGES};

/// What a [`Client::modify_marks_unless`] call does to the marks it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkChange {
    /// Set them.
    Set,
    /// Delete them.
    Delete,
}

/// Everything the client needs to know; [`ClientConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Scheme, host and optional path prefix, e.g. `https://adminapisgp.im.qcloud.com` or the
    /// emulator's `http://127.0.0.1:PORT`; see [`endpoint_url`](crate::tim::endpoint::endpoint_url).
    pub base_url: String,
    /// The App's SDKAppID: every call names it, and the UserSig is bound to it.
    pub sdkappid: u64,
    /// The App admin account the calls are made as.
    pub identifier: String,
    /// Signs the UserSig. Opaque: it prints as `SecretKey(***)`.
    pub secret: SecretKey,
    /// Validity of each generated UserSig (default 7 days; the vendor advises at least 24 h).
    pub usersig_ttl: Duration,
    /// The shared limit on calls per second (the service allows 200 per SDKAppID).
    pub max_calls_per_second: u32,
    /// Upper bound on one HTTP exchange, connecting to reading the whole body.
    pub request_timeout: Duration,
    /// Upper bound on establishing a connection, so a black-holed address fails fast.
    pub connect_timeout: Duration,
    /// How many times one call is sent at most for transient failures (1 = no retries). A UserSig
    /// regeneration adds one more attempt on top.
    pub max_attempts: u32,
    /// The first backoff delay; later ones grow exponentially with random jitter.
    pub backoff_min: Duration,
    /// The largest backoff delay.
    pub backoff_max: Duration,
    /// How long a rate-limit answer slows the shared limiter down (see [`Client`]).
    pub slowdown_for: Duration,
    /// How long to pause after 70050 (signature failures and rate limit together); the vendor
    /// says a minute.
    pub sig_rate_limit_wait: Duration,
    /// Where calls go while `base_url` does not resolve or refuses connections (see
    /// [`backup_endpoint_url`](crate::tim::endpoint::backup_endpoint_url)); `None`: no failover.
    pub backup_url: Option<String>,
    /// How long calls stay on the backup before the main endpoint is tried again.
    pub failback_after: Duration,
}

impl ClientConfig {
    /// A config with production defaults for everything but the identity.
    pub fn new(
        base_url: impl Into<String>,
        sdkappid: u64,
        identifier: impl Into<String>,
        secret: SecretKey,
    ) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            sdkappid,
            identifier: identifier.into(),
            secret,
            usersig_ttl: Duration::from_secs(7 * 24 * 3600),
            max_calls_per_second: 200,
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 5,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(20),
            slowdown_for: Duration::from_secs(30),
            sig_rate_limit_wait: Duration::from_secs(60),
            backup_url: None,
            failback_after: Duration::from_secs(300),
        }
    }
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// The base URL breaks the https-or-loopback rule.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A numeric setting is out of range.
    #[error("invalid client setting: {0}")]
    Setting(&'static str),
    /// The TLS stack or HTTP client could not be initialised.
    #[error("cannot initialise the HTTP client: {0}")]
    Http(String),
}

/// Why a call failed. No variant ever carries the UserSig or the secret key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A configuration error (wrong key, SDKAppID, region, admin, edition, IP allow-list) that
    /// every later call would repeat: stop the run, and read nothing as "no marks there".
    #[error("fatal service error {code} ({}): {info}", codes::describe(*code))]
    Fatal {
        /// The service's `ErrorCode`.
        code: i64,
        /// The service's `ErrorInfo`.
        info: String,
    },
    /// The group does not exist, was dissolved, or its ID is invalid (10010, 10015).
    #[error("group is gone: service error {code} ({}): {info}", codes::describe(*code))]
    GroupGone {
        /// The service's `ErrorCode`.
        code: i64,
        /// The service's `ErrorInfo`.
        info: String,
    },
    /// The service refused this call with a code that is neither retryable nor fatal, including
    /// the undocumented "every account is offline" failure. Other calls may still succeed.
    #[error("service error {code} ({}): {info}", codes::describe(*code))]
    Rejected {
        /// The service's `ErrorCode`.
        code: i64,
        /// The service's `ErrorInfo`.
        info: String,
    },
    /// The service kept answering with a rate-limit code through every attempt.
    #[error("still rate limited after {attempts} attempt(s): service error {code}: {info}")]
    RateLimited {
        /// How many requests were sent.
        attempts: u32,
        /// The last `ErrorCode`.
        code: i64,
        /// The last `ErrorInfo`.
        info: String,
    },
    /// The service kept answering with a transient error code (10002, 60008) through every attempt.
    #[error("service kept failing after {attempts} attempt(s): service error {code} ({}): {info}", codes::describe(*code))]
    Unavailable {
        /// How many requests were sent.
        attempts: u32,
        /// The last `ErrorCode`.
        code: i64,
        /// The last `ErrorInfo`.
        info: String,
    },
    /// Network errors, timeouts, HTTP 5xx or 429 through every attempt.
    #[error("request failed after {attempts} attempt(s): {detail}")]
    Transport {
        /// How many requests were sent.
        attempts: u32,
        /// The last failure, with any URL removed.
        detail: String,
    },
    /// An HTTP status that no retry will fix (wrong endpoint path, a proxy refusing): a
    /// configuration error.
    #[error("HTTP status {status} from the endpoint; check endpoint/region")]
    Http {
        /// The HTTP status code.
        status: u16,
    },
    /// A 2xx answer whose body is not the service's JSON.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The request body could not be serialised (a bug).
    #[error("cannot encode the request: {0}")]
    InvalidRequest(String),
    /// Not sent: the caller's stop flag was set while the call waited for the rate limiter.
    /// Nothing reached the service.
    #[error("not sent: the run was stopped")]
    Stopped,
}

impl CallError {
    /// Why a retryable call is retried, in a few words (`HTTP 503 Service Unavailable`,
    /// `error code 70500`), for the progress line on a terminal.
    pub fn retry_reason(&self) -> String {
        match self {
            CallError::Transport { detail, .. } => detail.clone(),
            CallError::Unavailable { code, .. } => format!("error code {code}"),
            CallError::RateLimited { code, .. } => format!("the rate limit (error code {code})"),
            other => other.to_string(),
        }
    }

    /// A short stable label for metrics (`outcome` label of the calls counter).
    pub fn metric_label(&self) -> &'static str {
        match self {
            CallError::Fatal { .. } => "fatal",
            CallError::GroupGone { .. } => "group_gone",
            CallError::Rejected { .. } => "rejected",
            CallError::RateLimited { .. } => "rate_limited",
            CallError::Unavailable { .. } => "unavailable",
            CallError::Transport { .. } => "transport",
            CallError::Http { .. } => "http_status",
            CallError::InvalidResponse(_) => "invalid_response",
            CallError::InvalidRequest(_) => "invalid_request",
            CallError::Stopped => "stopped",
        }
    }

    /// Whether every later call would fail the same way, so the whole run should stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, CallError::Fatal { .. } | CallError::Http { .. })
    }

    /// The service's error code, when the service answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            CallError::Fatal { code, .. }
            | CallError::GroupGone { code, .. }
            | CallError::Rejected { code, .. }
            | CallError::RateLimited { code, .. }
            | CallError::Unavailable { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A snapshot of the client's counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Attempts that were retries after a transient failure or a UserSig regeneration.
    pub retries: u64,
    /// Rate-limit answers received (codes or HTTP 429).
    pub rate_limited: u64,
    /// UserSigs generated (the first one, renewals and forced regenerations).
    pub usersigs_generated: u64,
    /// The current slowdown: each call takes this many limiter slots (1 = full speed).
    pub slowdown_factor: u32,
}

/// The REST client. Cheap to clone: clones share one connection pool, one rate limiter and one
/// UserSig cache.
///
/// # Rate limiting
/// Every HTTP request (retries included) first takes a slot from one GCRA limiter with burst 2
/// and period `1 / max_calls_per_second` s, behind a FIFO gate: requests are spaced evenly, and
/// the burst of 2 makes up for timer wake-up delays so the achieved rate stays close to the
/// limit. The hard guarantee is a second check behind the same gate: the start times of the
/// last `max_calls_per_second` requests are kept, and a request never starts until the oldest of
/// them is [`WINDOW`] old. So no window of that length holds more than `max_calls_per_second`
/// starts, and no one-second window at the server does either as long as arrival times jitter by
/// less than the margin. Many calls may still be in flight at once: only the *start* of a
/// request is paced.
///
/// # Slowing down
/// A rate-limit answer sets a slowdown factor of 2 for `slowdown_for`; each further one during
/// that time (at most one per second counts) doubles it, up to 8, and restarts the period. While
/// the factor is `k`, every request takes `k` consecutive slots, so the request rate is at most
/// `max_calls_per_second / k`. When `slowdown_for` passes without a rate-limit answer, the
/// factor returns to 1.
#[derive(Clone)]
pub struct Client {
    /// Shared by all clones.
    inner: Arc<Inner>,
}

/// The state all clones share.
struct Inner {
    /// One reqwest client, so connections are reused.
    http: reqwest::Client,
    /// The settings.
    config: ClientConfig,
    /// Reads "now" for UserSig issue times and renewal.
    clock: Arc<dyn Clock>,
    /// The shared pace of request starts and the rate-limit slowdown.
    pacer: Pacer,
    /// The cached UserSig.
    sig: Mutex<Option<CachedSig>>,
    /// Counters behind [`Client::stats`].
    counters: Counters,
    /// The main and backup endpoint and which one is in use.
    endpoints: Endpoints,
}

/// A UserSig and when it was issued.
struct CachedSig {
    /// The sig itself.
    sig: String,
    /// Its `TLS.time`.
    issued_at: UnixTime,
}

/// Atomic counters; see [`ClientStats`].
#[derive(Default)]
struct Counters {
    /// See [`ClientStats::requests`].
    requests: AtomicU64,
    /// See [`ClientStats::retries`].
    retries: AtomicU64,
    /// See [`ClientStats::rate_limited`].
    rate_limited: AtomicU64,
    /// See [`ClientStats::usersigs_generated`].
    usersigs_generated: AtomicU64,
}

/// What one HTTP exchange came to, before retry decisions.
enum Exchange {
    /// The service reported success; the body is to be parsed as the response type.
    Success(Vec<u8>),
    /// The service answered with an error code.
    Code(i64, String),
    /// A retryable transport failure (network, timeout, 5xx, 408).
    Transient(String),
    /// HTTP 429.
    TooManyRequests,
    /// A non-retryable HTTP status.
    Status(u16),
    /// A 2xx body that is not the service's JSON.
    Invalid(String),
}

/// Takes a std mutex even if a panicking thread poisoned it: the data is still consistent
/// (every critical section here is a few plain assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// Builds a client. The base URL must pass the https-or-loopback rule of [`endpoint_url`](crate::tim::endpoint::endpoint_url).
    pub fn new(config: ClientConfig, clock: Arc<dyn Clock>) -> Result<Client, ClientBuildError> {
        let base_url = validate_base_url(&config.base_url)?;
        let rate = NonZeroU32::new(config.max_calls_per_second).ok_or(
            ClientBuildError::Setting("max_calls_per_second must be at least 1"),
        )?;
        if config.max_attempts == 0 {
            return Err(ClientBuildError::Setting("max_attempts must be at least 1"));
        }
        if config.usersig_ttl.as_secs() < 60 {
            return Err(ClientBuildError::Setting(
                "usersig_ttl must be at least 60 s",
            ));
        }
        let pacer = Pacer::new(rate, config.slowdown_for).ok_or(ClientBuildError::Setting(
            "max_calls_per_second is too large",
        ))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            // A redirect would carry the UserSig to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("marksync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError::Http(e.without_url().to_string()))?;
        let config = ClientConfig { base_url, ..config };
        let backup = config
            .backup_url
            .as_deref()
            .map(validate_base_url)
            .transpose()?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                config,
                clock,
                pacer,
                sig: Mutex::new(None),
                counters: Counters::default(),
                endpoints: Endpoints::new(backup),
            }),
        })
    }

    /// Sets or deletes member marks (`modify_user_info`).
    pub async fn modify_user_info(
        &self,
        req: &ModifyUserInfoRequest,
    ) -> Result<ModifyUserInfoResponse, CallError> {
        self.call(wire::MODIFY_USER_INFO, req, &|| false).await
    }

    /// [`Client::modify_user_info`], unless `stop` says so before the request leaves: it is
    /// asked while waiting for the rate limiter, once the slot is granted, and before every
    /// retry. Stopped before the first request: [`CallError::Stopped`] (nothing was sent).
    /// Stopped before a retry: the last failure, as if no retry were left (the earlier attempt
    /// may have been applied).
    pub async fn modify_user_info_unless(
        &self,
        req: &ModifyUserInfoRequest,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<ModifyUserInfoResponse, CallError> {
        self.call(wire::MODIFY_USER_INFO, req, stop).await
    }

    /// Sets or deletes marks of members of `group` ([`Client::modify_user_info_unless`]), in
    /// the model's terms: callers never see the wire format. Returns the members the answer
    /// lists, with their marks (for a set: the ones the service applied).
    pub async fn modify_marks_unless(
        &self,
        group: &GroupId,
        change: MarkChange,
        members: &[(Account, MarkSet)],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<(String, Vec<u32>)>, CallError> {
        let request = ModifyUserInfoRequest {
            group_id: group.as_str().to_string(),
            command_type: match change {
                MarkChange::Set => wire::CommandType::Set,
                MarkChange::Delete => wire::CommandType::Delete,
            },
            member_list: members
                .iter()
                .map(|(a, m)| wire::MemberMarks {
                    account: a.as_str().to_string(),
                    marks: m.iter().map(Mark::get).collect(),
                })
                .collect(),
        };
        let response = self.modify_user_info_unless(&request, stop).await?;
        Ok(response
            .member_list
            .into_iter()
            .map(|m| (m.account, m.marks))
            .collect())
    }

    /// Reads one page of online members (`get_members`).
    pub async fn get_members(
        &self,
        req: &GetMembersRequest,
    ) -> Result<GetMembersResponse, CallError> {
        self.call(wire::GET_MEMBERS, req, &|| false).await
    }

    /// A currently valid UserSig for the configured admin (the cached one unless it is due for
    /// renewal), for `marksync usersig`.
    pub fn usersig_now(&self) -> String {
        self.inner.usersig(false)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            usersigs_generated: c.usersigs_generated.load(Ordering::Relaxed),
            slowdown_factor: self.inner.pacer.factor(),
        }
    }

    /// Sends one request with the retry policy of the module docs and parses the answer.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        req: &Req,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Resp, CallError> {
        let inner = &*self.inner;
        let body = serde_json::to_vec(req).map_err(|e| CallError::InvalidRequest(e.to_string()))?;
        let max_retries =
            usize::try_from(inner.config.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(inner.config.backoff_min)
            .with_max_delay(inner.config.backoff_max)
            .with_max_times(max_retries)
            .with_jitter()
            .build();
        let mut attempts: u32 = 0;
        let mut regenerated = false;
        // The failure of an earlier attempt that may have been applied (retryable ones): what a
        // stop before the next attempt returns.
        let mut last_failure: Option<CallError> = None;
        loop {
            let Some(exchange) = inner.exchange(path, &body, stop).await else {
                return Err(last_failure.unwrap_or(CallError::Stopped));
            };
            if attempts > 0 {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            attempts += 1;
            // On a retryable failure: the error to return if no retry is left, and any minimum wait.
            let (give_up, min_wait) = match exchange {
                Exchange::Success(bytes) => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        CallError::InvalidResponse(inner.scrub(&format!("{path}: {e}")))
                    });
                }
                Exchange::Status(status) => return Err(CallError::Http { status }),
                Exchange::Invalid(detail) => {
                    return Err(CallError::InvalidResponse(
                        inner.scrub(&format!("{path}: {detail}")),
                    ));
                }
                Exchange::Transient(detail) => {
                    (CallError::Transport { attempts, detail }, Duration::ZERO)
                }
                Exchange::TooManyRequests => {
                    inner.slow_down();
                    let detail = "HTTP 429 Too Many Requests".to_owned();
                    (CallError::Transport { attempts, detail }, Duration::ZERO)
                }
                Exchange::Code(code, info) => {
                    let info = inner.scrub(&info);
                    match codes::classify(code) {
                        ErrorClass::Fatal => return Err(CallError::Fatal { code, info }),
                        ErrorClass::GroupGone => return Err(CallError::GroupGone { code, info }),
                        ErrorClass::Rejected => return Err(CallError::Rejected { code, info }),
                        ErrorClass::RegenerateSig if !regenerated => {
                            tracing::warn!(
                                code,
                                path,
                                "UserSig refused; regenerating it and retrying once"
                            );
                            regenerated = true;
                            inner.usersig(true);
                            continue;
                        }
                        // A fresh sig refused again: the clock or the key is wrong, not the sig.
                        ErrorClass::RegenerateSig => return Err(CallError::Fatal { code, info }),
                        ErrorClass::Retry => (
                            CallError::Unavailable {
                                attempts,
                                code,
                                info,
                            },
                            Duration::ZERO,
                        ),
                        ErrorClass::RateLimited => {
                            inner.slow_down();
                            (
                                CallError::RateLimited {
                                    attempts,
                                    code,
                                    info,
                                },
                                Duration::ZERO,
                            )
                        }
                        ErrorClass::SigAndRateLimit => {
                            inner.slow_down();
                            inner.usersig(true);
                            let wait = inner.config.sig_rate_limit_wait;
                            (
                                CallError::RateLimited {
                                    attempts,
                                    code,
                                    info,
                                },
                                wait,
                            )
                        }
                    }
                }
            };
            match backoff.next() {
                Some(_) if stop() => return Err(give_up),
                Some(delay) => {
                    let delay = delay.max(min_wait);
                    // Also drawn on a terminal by `progress` (reason, wait, attempt of max).
                    tracing::debug!(
                        path,
                        attempts,
                        max_attempts = inner.config.max_attempts,
                        wait_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        reason = %give_up.retry_reason(),
                        error = %give_up,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                    last_failure = Some(give_up);
                }
                None => return Err(give_up),
            }
        }
    }
}

impl Inner {
    /// One paced HTTP exchange, classified; `None` when `stop` was set before it was sent.
    async fn exchange(
        &self,
        path: &str,
        body: &[u8],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Option<Exchange> {
        if !self.pacer.acquire(stop).await {
            return None;
        }
        Some(self.send(path, body).await)
    }

    /// Sends one request (its limiter slot already taken) and classifies the answer.
    async fn send(&self, path: &str, body: &[u8]) -> Exchange {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let sig = self.usersig(false);
        let base = self.endpoints.current(&self.config);
        let url = format!("{base}/{path}");
        let random = rand::random::<u32>().to_string();
        let sdkappid = self.config.sdkappid.to_string();
        let query = [
            ("sdkappid", sdkappid.as_str()),
            ("identifier", self.config.identifier.as_str()),
            ("usersig", sig.as_str()),
            ("random", random.as_str()),
            ("contenttype", "json"),
        ];
        let sent = self
            .http
            .post(url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Exchange::Transient(self.send_failed(&base, e)),
        };
        let status = resp.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Exchange::TooManyRequests;
        }
        if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
            return Exchange::Transient(format!("HTTP {status}"));
        }
        if !status.is_success() {
            return Exchange::Status(status.as_u16());
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return Exchange::Transient(self.render(e)),
        };
        match wire::parse_status(&bytes) {
            Err(detail) => Exchange::Invalid(detail),
            Ok(s) if s.is_ok() => Exchange::Success(bytes),
            Ok(s) => Exchange::Code(s.error_code, s.error_info),
        }
    }

    /// Reacts to a rate-limit answer (see [`Client`]).
    fn slow_down(&self) {
        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        self.pacer.slow_down();
    }

    /// Renders a failed send, switching endpoints first when it could not connect (see
    /// [`Endpoints`]).
    fn send_failed(&self, base: &str, e: reqwest::Error) -> String {
        let connect = e.is_connect();
        let text = self.render(e);
        if connect {
            self.endpoints.connect_failed(&self.config, base, &text);
        }
        text
    }

    /// The cached UserSig, regenerated when `force` is set or when it is due: less than a quarter
    /// of its validity (or an hour, whichever is more) remains, or the clock went backwards.
    fn usersig(&self, force: bool) -> String {
        let now = self.clock.now();
        let ttl = i64::try_from(self.config.usersig_ttl.as_secs()).unwrap_or(i64::MAX);
        let margin = (ttl / 4).max(3600);
        let mut cached = lock(&self.sig);
        if let Some(c) = cached.as_ref()
            && !force
            && now >= c.issued_at
            && c.issued_at.saturating_add(ttl).saturating_sub(now) >= margin
        {
            return c.sig.clone();
        }
        let sig = usersig::generate(
            self.config.sdkappid,
            &self.config.secret,
            &self.config.identifier,
            self.config.usersig_ttl.as_secs(),
            now,
        );
        self.counters
            .usersigs_generated
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(issued_at = now, "generated a new UserSig");
        *cached = Some(CachedSig {
            sig: sig.clone(),
            issued_at: now,
        });
        sig
    }

    /// Renders a transport error without its URL, with its cause chain, scrubbed.
    fn render(&self, e: reqwest::Error) -> String {
        let timeout = e.is_timeout();
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        if timeout && !text.contains("timed out") {
            text.push_str(" (timed out)");
        }
        self.scrub(&text)
    }

    /// Removes anything secret from text that came from outside (the current and any cached
    /// UserSig, the secret key, any `usersig=` query parameter), as a last line of defence.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        if let Some(c) = lock(&self.sig).as_ref() {
            out = out.replace(&c.sig, "***");
        }
        out = out.replace(self.config.secret.expose(), "***");
        redact_usersig_param(&out)
    }
}

/// Replaces the value of every `usersig=` parameter with `***`.
fn redact_usersig_param(text: &str) -> String {
    const NEEDLE: &str = "usersig=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.to_ascii_lowercase().find(NEEDLE) {
        let value_start = i + NEEDLE.len();
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let after = &rest[value_start..];
        let end = after
            .find(|c: char| c == '&' || c == ')' || c == '"' || c.is_whitespace())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The main and backup endpoints and which one calls use.
///
/// A request whose connection cannot be made (the name does not resolve, the connection is
/// refused or times out) switches calls to the other endpoint, with a warning; the request itself
/// is retried by the usual backoff, now to the other endpoint. Calls go back to the main endpoint
/// `failback_after` after switching to the backup. Only connection failures switch: an answer of
/// any kind (an error code, HTTP 5xx) means the endpoint is reachable.
struct Endpoints {
    /// The validated backup base URL, if any.
    backup: Option<String>,
    /// Since when calls use the backup; `None`: the main endpoint.
    on_backup_since: Mutex<Option<Instant>>,
    /// How many times calls switched to the backup.
    failovers: AtomicU64,
}

/// A snapshot of the failover state, for metrics (`marksync_endpoint_failovers_total`) and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// How many times calls switched from the main endpoint to the backup.
    pub failovers: u64,
    /// Whether calls currently go to the backup.
    pub on_backup: bool,
    /// The base URL calls currently go to.
    pub active: String,
}

impl Endpoints {
    fn new(backup: Option<String>) -> Self {
        Endpoints {
            backup,
            on_backup_since: Mutex::new(None),
            failovers: AtomicU64::new(0),
        }
    }

    /// The base URL for the next request; back to the main one once `failback_after` passed.
    fn current(&self, config: &ClientConfig) -> String {
        let Some(backup) = &self.backup else {
            return config.base_url.clone();
        };
        let mut since = lock(&self.on_backup_since);
        match *since {
            Some(t) if t.elapsed() >= config.failback_after => {
                tracing::info!(
                    endpoint = %config.base_url,
                    "trying the main endpoint again after {:?} on the backup",
                    config.failback_after
                );
                *since = None;
                config.base_url.clone()
            }
            Some(_) => backup.clone(),
            None => config.base_url.clone(),
        }
    }

    /// A request to `base` could not connect: switch to the other endpoint, unless another
    /// request already did.
    fn connect_failed(&self, config: &ClientConfig, base: &str, reason: &str) {
        let Some(backup) = &self.backup else {
            return;
        };
        let mut since = lock(&self.on_backup_since);
        match *since {
            None if base == config.base_url => {
                *since = Some(Instant::now());
                self.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    endpoint = %config.base_url,
                    backup = %backup,
                    error = %reason,
                    "cannot connect to the main endpoint; calls go to the backup endpoint"
                );
            }
            Some(_) if base == backup.as_str() => {
                *since = None;
                tracing::warn!(
                    endpoint = %config.base_url,
                    backup = %backup,
                    error = %reason,
                    "cannot connect to the backup endpoint either; calls go to the main endpoint"
                );
            }
            _ => {}
        }
    }

    fn stats(&self, config: &ClientConfig) -> EndpointStats {
        let on_backup = lock(&self.on_backup_since).is_some() && self.backup.is_some();
        EndpointStats {
            failovers: self.failovers.load(Ordering::Relaxed),
            on_backup,
            active: match (&self.backup, on_backup) {
                (Some(b), true) => b.clone(),
                _ => config.base_url.clone(),
            },
        }
    }
}

impl Client {
    /// Which endpoint calls use and how often they failed over.
    pub fn endpoint_stats(&self) -> EndpointStats {
        self.inner.endpoints.stats(&self.inner.config)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner.config;
        f.debug_struct("Client")
            .field("base_url", &c.base_url)
            .field("sdkappid", &c.sdkappid)
            .field("identifier", &c.identifier)
            .field("max_calls_per_second", &c.max_calls_per_second)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
