//! The config file (`marksync.yaml`, SPEC section 2).
//!
//! The file is read into a position-carrying YAML tree and checked key by key, so every problem
//! (unknown key, wrong type, bad duration, missing required key) is reported at once with its
//! `path:line:column`. Relative paths resolve against the config file's directory.
//!
//! Architecture invariant: this module and its checks do no I/O; reading the file is
//! [`fs`]'s job (`load` = read + [`parse_bytes`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::plan::Guard;
pub use crate::state::Location;
use crate::state::StoreSettings;
use crate::tim::endpoint::{Region, backup_endpoint_url, endpoint_url};
use crate::yaml::{Scalar, Value};

mod duration;
pub mod fs;
pub mod notify;
mod state;
pub use crate::state::STATE_URL_SCHEMES;
#[cfg(test)]
use duration::{short, unit_typo};
pub use fs::{callback_token_permission_warning, load, read_callback_token};

/// Where the service is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// One of the service's regions.
    Region(Region),
    /// An explicit base URL (https, or http to a loopback address).
    Url(String),
    /// The in-process emulator: demos and CI without a Tencent account.
    Embedded,
}

/// The daemon's optional HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http {
    /// Address for callbacks, `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// File holding the callback authentication token; when set, unsigned callbacks are refused.
    pub callback_token_file: Option<PathBuf>,
    /// `allow_unsigned_callbacks: true`: serve callbacks without a token on a non-loopback
    /// address, knowingly (warned at start and on `/readyz`). Without it such a config is refused:
    /// anyone who reaches the address could make the daemon spend the API budget.
    pub allow_unsigned_callbacks: bool,
}

impl Http {
    /// Callbacks are served unsigned to more than this machine: no token file and a listen
    /// address that is not loopback (only `allow_unsigned_callbacks` lets such a config load).
    pub fn unsigned_beyond_loopback(&self) -> bool {
        self.callback_token_file.is_none() && !self.listen.ip().is_loopback()
    }
}

/// A loaded, checked config. Paths are absolute or relative to the working directory.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// The application's SDKAppID.
    pub sdkappid: u64,
    /// The App admin account the API is called as.
    pub identifier: String,
    /// File holding the secret key (else `MARKSYNC_SECRET_KEY` or the systemd credential).
    pub secret_key_file: Option<PathBuf>,
    /// Where the service is reached.
    pub endpoint: Endpoint,
    /// The desired directory or file.
    pub desired: PathBuf,
    /// Where the state lives: a file, or an object in an object store (SPEC 4, 11).
    pub state: Location,
    /// How long a remote lock lasts without renewal (SPEC 11): a crashed holder's lock expires
    /// after this.
    pub lock_ttl: Duration,
    /// Settings of the object store behind an `s3://` state, when the environment's are not
    /// enough (`state_store:`).
    pub state_store: Option<StoreSettings>,
    /// The shared rate limit for all calls.
    pub max_calls_per_second: u32,
    /// Renew mark 500 this long before its 72 h run out.
    pub renew_margin: Duration,
    /// Re-send desired marks not yet confirmed this often (daemon).
    pub retry_pending_every: Duration,
    /// Re-send every desired mark this often (daemon).
    pub reassert_every: Duration,
    /// Read the live marks and repair drift this often (daemon, SPEC section 10); off when `None`.
    pub refresh_every: Option<Duration>,
    /// An explicit backup base URL (checked like `endpoint`): where calls fail over when the
    /// main endpoint does not resolve or refuses connections.
    pub backup_endpoint: Option<String>,
    /// Quiet time after a file event before reconciling (daemon).
    pub debounce: Duration,
    /// Validity of generated UserSigs.
    pub usersig_ttl: Duration,
    /// The mass-clear guard.
    pub guard: Guard,
    /// The daemon's HTTP listener, if any.
    pub http: Option<Http>,
    /// Error codes that, on a set call, mean "every account in the call is offline" (the vendor
    /// documents the failure but not its code): those members stay pending instead of failing.
    pub offline_error_codes: Vec<i64>,
    /// How old a saved plan (`plan --out`) may be when `apply FILE` applies it.
    pub saved_plan_max_age: Duration,
    /// The most (account, mark) pairs that aliases (`*name`, `<<`) may add across all desired
    /// files together, so that a small file cannot expand past the deployment's memory.
    pub max_alias_pairs: usize,
    /// Webhooks told about drift, failures and refusals (`notify:`, SPEC section 12).
    pub notify: Vec<notify::NotifyEntry>,
}

impl Config {
    /// Every bounded duration the config holds, with its key (`refresh_every` only when set):
    /// what the range checks and the tests of those checks walk, so a new key cannot be missed.
    pub fn bounded_durations(&self) -> Vec<(&'static str, Duration)> {
        let mut out = vec![
            ("debounce", self.debounce),
            ("retry_pending_every", self.retry_pending_every),
            ("reassert_every", self.reassert_every),
            ("usersig_ttl", self.usersig_ttl),
            ("renew_margin", self.renew_margin),
            ("saved_plan_max_age", self.saved_plan_max_age),
            ("lock_ttl", self.lock_ttl),
        ];
        out.extend(self.refresh_every.map(|d| ("refresh_every", d)));
        out
    }
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The allowed range of every duration key, inclusive (SPEC section 2), checked at load so that
/// `validate` reports a bad value with its position. The lower bounds keep a typo (`30ms` for
/// `30m`) from flooding the API or the machine; the upper bounds keep every timer far from
/// overflowing (the daemon adds these to `Instant::now()` and multiplies `debounce` by 4).
///
/// `renew_margin` is 10m..71h: mark 500 lasts 72 h, and a renewal must be confirmed before it
/// runs out. One call's retries take up to about 3 minutes (5 attempts, 15 s timeout, backoff up
/// to 20 s), a rate-limit block a minute more, and a daemon restart some seconds: 10 minutes
/// covers that with room to spare. At 71h a member's 500 is renewed every hour; closer to 72h it
/// would be renewed every few seconds, which is a flood, not a margin.
///
/// `refresh_every` (SPEC section 10) is optional: the daemon refreshes only when it is set.
pub const DURATION_BOUNDS: &[(&str, Duration, Duration)] = &[
    (
        "debounce",
        Duration::from_millis(10),
        Duration::from_secs(MINUTE),
    ),
    (
        "retry_pending_every",
        Duration::from_secs(5),
        Duration::from_secs(DAY),
    ),
    (
        "refresh_every",
        Duration::from_secs(10),
        Duration::from_secs(7 * DAY),
    ),
    (
        "reassert_every",
        Duration::from_secs(MINUTE),
        Duration::from_secs(7 * DAY),
    ),
    (
        "usersig_ttl",
        Duration::from_secs(HOUR),
        Duration::from_secs(180 * DAY),
    ),
    (
        "renew_margin",
        Duration::from_secs(10 * MINUTE),
        Duration::from_secs(71 * HOUR),
    ),
    (
        "saved_plan_max_age",
        Duration::from_secs(MINUTE),
        Duration::from_secs(30 * DAY),
    ),
    (
        "lock_ttl",
        Duration::from_secs(10),
        Duration::from_secs(10 * MINUTE),
    ),
];

/// The allowed range of the duration key `key`, if it is one.
pub fn duration_bounds(key: &str) -> Option<(Duration, Duration)> {
    DURATION_BOUNDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// How old a saved plan may be by default when `apply FILE` applies it (`saved_plan_max_age`).
pub const DEFAULT_SAVED_PLAN_MAX_AGE: Duration = Duration::from_secs(DAY);

/// The shortest period any timer may have against the local emulator.
pub const EMULATOR_MIN_PERIOD: Duration = Duration::from_secs(1);

/// The allowed range of `key` for a config calling `endpoint`. The lower bounds protect the
/// service (and its rate limit); against the emulator on this machine (`embedded`, or `http://`,
/// which is only allowed to a loopback address) tests and demos may use periods down to
/// [`EMULATOR_MIN_PERIOD`], so that a reassert can be watched in seconds. The upper bounds,
/// which keep timers from overflowing, hold everywhere.
pub fn duration_bounds_for(key: &str, endpoint: &Endpoint) -> Option<(Duration, Duration)> {
    let (lo, hi) = duration_bounds(key)?;
    let local = match endpoint {
        Endpoint::Embedded => true,
        Endpoint::Url(url) => url.starts_with("http://"),
        Endpoint::Region(_) => false,
    };
    Some(
        if local
            && ![
                "usersig_ttl",
                "renew_margin",
                "saved_plan_max_age",
                "lock_ttl",
            ]
            .contains(&key)
        {
            (lo.min(EMULATOR_MIN_PERIOD), hi)
        } else {
            (lo, hi)
        },
    )
}

/// The largest SDKAppID accepted: any that fits the `u64` the UserSig carries (the console's are
/// ten digits, such as 1400000000).
const MAX_SDKAPPID: i128 = u64::MAX as i128;
/// Error codes are 32-bit integers on the wire; 0 means success, so it cannot mean "offline".
const MAX_ERROR_CODE: i128 = i32::MAX as i128;

/// How deeply lists and mappings may nest in the config (it uses three levels).
const MAX_DEPTH: usize = 8;

const KEYS: &[&str] = &[
    "sdkappid",
    "identifier",
    "secret_key_file",
    "region",
    "endpoint",
    "desired",
    "state",
    "max_calls_per_second",
    "renew_margin",
    "retry_pending_every",
    "reassert_every",
    "refresh_every",
    "backup_endpoint",
    "debounce",
    "usersig_ttl",
    "guard",
    "http",
    "offline_error_codes",
    "saved_plan_max_age",
    "max_alias_pairs",
    "notify",
    "lock_ttl",
    "state_store",
];

/// Checks the bytes of a config file: UTF-8, then [`parse`].
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Config, Diagnostics> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Diagnostics(vec![Diagnostic::file_error(
            path,
            "the config file is not valid UTF-8",
        )])
    })?;
    parse(path, text)
}

/// Checks config text. `path` locates the diagnostics and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
    let mut options = crate::yaml::options();
    // `.nan` and `.inf` reach the checks below, which say what the key accepts (the parser's own
    // refusal stops at the first one and speaks of its "policy").
    options.non_finite_float_policy = serde_saphyr::options::NonFiniteFloatPolicy::PassThrough;
    // The config nests three levels (`http: { listen: ... }`). Deeper nesting is refused before
    // the recursive deserializer runs: at the shared limit of 64 levels, a debug build overflows
    // a 2 MiB thread stack (tokio's workers, where the daemon reloads the config).
    if let Some(budget) = options.budget.as_mut() {
        budget.max_depth = MAX_DEPTH;
    }
    let root: Spanned<Value> = match serde_saphyr::from_str_with_options(text, options) {
        Ok(v) => v,
        Err(e) => {
            let raw = crate::yaml::message(&e);
            let message = if raw.contains("budget breached: Depth")
                || raw.contains("recursion limit")
            {
                format!(
                    "the config is nested too deeply (at most {MAX_DEPTH} levels of lists and mappings)"
                )
            } else if raw
                .to_ascii_lowercase()
                .starts_with("multiple yaml documents")
            {
                "the config is one YAML document: found a second one (after a `---` line); merge them or remove the second".to_string()
            } else {
                crate::yaml::user_message(&e)
            };
            let d = match e.location() {
                Some(l) if l.line() > 0 => {
                    Diagnostic::at(path, text, l.line(), l.column(), message)
                }
                _ => Diagnostic::file_error(path, message),
            };
            return Err(Diagnostics(vec![d]));
        }
    };
    let mut c = Checker {
        path,
        text,
        errors: Vec::new(),
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let entries = match root.value {
        Value::Map(entries) => entries,
        Value::Scalar(Scalar::Null) => Vec::new(),
        other => {
            // Nothing else can be checked, and "missing key" errors would only be noise.
            c.err(
                &root.referenced,
                format!(
                    "the config must be a mapping of keys to values, found {}",
                    other.kind()
                ),
            );
            return Err(Diagnostics(c.errors));
        }
    };
    let mut get: std::collections::HashMap<String, Spanned<Value>> = c
        .known_entries(entries, KEYS, |k, line| {
            format!("duplicate key `{k}` (first at line {line})")
        })
        .into_iter()
        .map(|(k, v)| (k.value, v))
        .collect();
    let root_loc = root.referenced;
    let mut take = |k: &str| get.remove(k);

    let sdkappid = match take("sdkappid") {
        Some(v) => c
            .int_in(
                &v,
                "sdkappid",
                1,
                MAX_SDKAPPID,
                "a positive integer (your application's SDKAppID, such as 1400000000)",
            )
            .map(|n| n as u64),
        None => {
            c.err(
                &root_loc,
                "missing required key `sdkappid` (your application's SDKAppID)",
            );
            None
        }
    };
    let identifier = match take("identifier") {
        Some(v) => c.identifier(&v),
        None => {
            c.err(
                &root_loc,
                "missing required key `identifier` (an App admin account)",
            );
            None
        }
    };
    let secret_key_file =
        take("secret_key_file").and_then(|v| c.path(&v, "secret_key_file", &base));
    let region = take("region").and_then(|v| {
        let s = c.string(&v, "region")?;
        match s.parse::<Region>() {
            Ok(r) => Some(r),
            Err(e) => {
                c.err(&v.referenced, e);
                None
            }
        }
    });
    let endpoint = match take("endpoint") {
        Some(v) => c.string(&v, "endpoint").and_then(|s| {
            if s == "embedded" {
                Some(Endpoint::Embedded)
            } else if s.starts_with("https://") || s.starts_with("http://") {
                // The UserSig rides in the query string: plain http only to this machine.
                match endpoint_url(Region::default(), Some(&s)) {
                    Ok(url) => Some(Endpoint::Url(url)),
                    Err(e) => {
                        c.err(&v.referenced, format!("`endpoint`: {e}"));
                        None
                    }
                }
            } else {
                c.err(
                    &v.referenced,
                    format!("`endpoint` must be an https:// URL or `embedded`, found {s:?}"),
                );
                None
            }
        }),
        None => Some(Endpoint::Region(region.unwrap_or_default())),
    };
    let backup_endpoint = match take("backup_endpoint") {
        Some(v) => c.string(&v, "backup_endpoint").and_then(|s| {
            if s.starts_with("https://") || s.starts_with("http://") {
                match backup_endpoint_url(Region::default(), Some(&s), Some(&s)) {
                    Ok(url) => Some(url),
                    Err(e) => {
                        c.err(&v.referenced, format!("`backup_endpoint`: {e}"));
                        None
                    }
                }
            } else {
                c.err(
                    &v.referenced,
                    format!("`backup_endpoint` must be an https:// URL, found {s:?}"),
                );
                None
            }
        }),
        None => Some(None),
    };
    let desired = match take("desired") {
        Some(v) => c.path(&v, "desired", &base),
        None => {
            c.err(
                &root_loc,
                "missing required key `desired` (the directory or file of desired marks)",
            );
            None
        }
    };
    let state = match take("state") {
        Some(v) => c.state(&v, &base),
        None => Some(Location::File(base.join("state/marksync.json"))),
    };
    let state_store = match take("state_store") {
        Some(v) => {
            let at = v.referenced;
            let scheme = match &state {
                Some(Location::Object(url)) => url.split_once("://").map(|u| u.0),
                _ => None,
            };
            let settings = c.state_store(v, scheme);
            if matches!(state, Some(Location::File(_))) {
                c.err(
                    &at,
                    "`state_store` applies to a state in an object store (`state: s3://BUCKET/KEY`), \
                     but `state` is a local file: remove `state_store`, or set `state` to the URL",
                );
                None
            } else {
                settings.map(Some)
            }
        }
        None => Some(None),
    };
    let max_calls_per_second = match take("max_calls_per_second") {
        Some(v) => c
            .int_in(
                &v,
                "max_calls_per_second",
                1,
                200,
                "between 1 and 200 (the service's limit)",
            )
            .map(|n| n as u32),
        None => Some(200),
    };
    let max_alias_pairs = match take("max_alias_pairs") {
        Some(v) => c
            .int_in(
                &v,
                "max_alias_pairs",
                0,
                100_000_000,
                "between 0 (no alias may add a pair) and 100000000",
            )
            .map(|n| n as usize),
        None => Some(crate::desired::DEFAULT_MAX_ALIAS_PAIRS),
    };
    // Before any endpoint error, the bounds of the real service apply.
    let bounds_endpoint = endpoint.clone().unwrap_or(Endpoint::Region(Region::China));
    let mut duration = |k: &str, default: Duration| match take(k) {
        Some(v) => c.duration(&v, k, duration_bounds_for(k, &bounds_endpoint)),
        None => Some(default),
    };
    let renew_margin = duration("renew_margin", Duration::from_secs(12 * 3600));
    let retry_pending_every = duration("retry_pending_every", Duration::from_secs(60));
    let reassert_every = duration("reassert_every", Duration::from_secs(30 * 60));
    let debounce = duration("debounce", Duration::from_millis(300));
    let usersig_ttl = duration("usersig_ttl", Duration::from_secs(7 * 86400));
    let lock_ttl = duration("lock_ttl", Duration::from_secs(30));
    let saved_plan_max_age = duration("saved_plan_max_age", DEFAULT_SAVED_PLAN_MAX_AGE);
    // Optional: off when unset.
    let refresh_every = match take("refresh_every") {
        Some(v) => c
            .duration(
                &v,
                "refresh_every",
                duration_bounds_for("refresh_every", &bounds_endpoint),
            )
            .map(Some),
        None => Some(None),
    };
    let guard = match take("guard") {
        Some(v) => c.guard(v),
        None => Some(Guard::default()),
    };
    let notify = match take("notify") {
        Some(v) => c.notify(v, &base),
        None => Some(Vec::new()),
    };
    let http = match take("http") {
        Some(v) => c.http(v, &base).map(Some),
        None => Some(None),
    };

    let offline_error_codes = match take("offline_error_codes") {
        Some(v) => match &v.value {
            Value::Seq(items) => {
                let codes: Vec<Option<i128>> = items
                    .iter()
                    .map(|i| {
                        let n = c.int_in(
                            i,
                            "offline_error_codes",
                            1,
                            MAX_ERROR_CODE,
                            "an error code between 1 and 2147483647",
                        )?;
                        match crate::tim::codes::offline_conflict(n as i64) {
                            None => Some(n),
                            Some(meaning) => {
                                c.err(&i.referenced, format!(
                                    "`offline_error_codes` cannot list {n}: the service uses it for something else ({meaning}). \
                                     Listed here, that failure would read as \"every account is offline\": sets left pending and \
                                     clears taken as done. Remove it; only codes with no other meaning (such as the default 10004) belong here"
                                ));
                                None
                            }
                        }
                    })
                    .collect();
                codes
                    .into_iter()
                    .map(|n| n.map(|n| n as i64))
                    .collect::<Option<Vec<i64>>>()
            }
            other => {
                c.err(&v.referenced, format!("`offline_error_codes` must be a list of error codes such as [10004], found {}", other.kind()));
                None
            }
        },
        None => Some(vec![10004]),
    };

    if !c.errors.is_empty() {
        // Keys are checked in a fixed order, not the file's: report top to bottom.
        crate::diag::sort(&mut c.errors);
        return Err(Diagnostics(c.errors));
    }
    // Every field is Some when no error was recorded.
    let missing = || {
        Diagnostics(vec![Diagnostic::file_error(
            path,
            "internal error: config field missing",
        )])
    };
    Ok(Config {
        path: path.to_path_buf(),
        sdkappid: sdkappid.ok_or_else(missing)?,
        identifier: identifier.ok_or_else(missing)?,
        secret_key_file,
        endpoint: endpoint.ok_or_else(missing)?,
        desired: desired.ok_or_else(missing)?,
        state: state.ok_or_else(missing)?,
        lock_ttl: lock_ttl.ok_or_else(missing)?,
        state_store: state_store.ok_or_else(missing)?,
        max_calls_per_second: max_calls_per_second.ok_or_else(missing)?,
        renew_margin: renew_margin.ok_or_else(missing)?,
        retry_pending_every: retry_pending_every.ok_or_else(missing)?,
        reassert_every: reassert_every.ok_or_else(missing)?,
        refresh_every: refresh_every.ok_or_else(missing)?,
        backup_endpoint: backup_endpoint.ok_or_else(missing)?,
        debounce: debounce.ok_or_else(missing)?,
        usersig_ttl: usersig_ttl.ok_or_else(missing)?,
        guard: guard.ok_or_else(missing)?,
        http: http.ok_or_else(missing)?,
        offline_error_codes: offline_error_codes.ok_or_else(missing)?,
        saved_plan_max_age: saved_plan_max_age.ok_or_else(missing)?,
        max_alias_pairs: max_alias_pairs.ok_or_else(missing)?,
        notify: notify.ok_or_else(missing)?,
    })
}

fn unknown_key(key: &str, known: &[&str]) -> String {
    let close = known.iter().find(|k| strsim_close(key, k));
    match close {
        Some(k) => format!("unknown key `{key}`; did you mean `{k}`?"),
        None => format!("unknown key `{key}`; known keys: {}", known.join(", ")),
    }
}

/// Whether two keys differ by at most two single-character edits (typos such as `memebrs`).
fn strsim_close(a: &str, b: &str) -> bool {
    strsim::levenshtein(a, b) <= 2
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, at: &serde_saphyr::Location, message: impl Into<String>) {
        let line = at.line().max(1);
        self.errors.push(Diagnostic::at(
            self.path,
            self.text,
            line,
            at.column().max(1),
            message,
        ));
    }

    /// An integer in `lo..=hi`; `allowed` says what is accepted, in the user's terms.
    fn int_in(
        &mut self,
        v: &Spanned<Value>,
        key: &str,
        lo: i128,
        hi: i128,
        allowed: &str,
    ) -> Option<i128> {
        let message = match &v.value {
            Value::Scalar(Scalar::Int(n)) if (lo..=hi).contains(n) => return Some(*n),
            Value::Scalar(Scalar::Int(n)) => format!("`{key}` must be {allowed}, found {n}"),
            Value::Scalar(Scalar::Float(f)) => {
                let written = written(self.text, &v.referenced).unwrap_or_else(|| f.to_string());
                format!("`{key}` must be {allowed}, found {written}")
            }
            Value::Scalar(Scalar::Str(s)) if s.trim().parse::<i128>().is_ok() => {
                format!("`{key}` must be a number, found the string {s:?}; write it without quotes")
            }
            other => format!("`{key}` must be {allowed}, found {}", other.kind()),
        };
        self.err(&v.referenced, message);
        None
    }

    fn float(&mut self, v: &Spanned<Value>, key: &str) -> Option<f64> {
        match &v.value {
            Value::Scalar(Scalar::Int(n)) => Some(*n as f64),
            Value::Scalar(Scalar::Float(f)) => Some(*f),
            other => {
                self.err(
                    &v.referenced,
                    format!("`{key}` must be a number, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Spanned<Value>, key: &str) -> Option<String> {
        match &v.value {
            Value::Scalar(Scalar::Str(s)) => Some(s.clone()),
            other => {
                self.err(
                    &v.referenced,
                    format!("`{key}` must be a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A path, resolved against the config's directory.
    fn path(&mut self, v: &Spanned<Value>, key: &str, base: &Path) -> Option<PathBuf> {
        let Value::Scalar(Scalar::Str(s)) = &v.value else {
            let message = format!("`{key}` must be a path, found {}", v.value.kind());
            self.err(&v.referenced, message);
            return None;
        };
        if s.trim().is_empty() {
            self.err(&v.referenced, format!("`{key}` must not be empty"));
            return None;
        }
        Some(base.join(s))
    }

    /// The admin account: the service's account rules, and the text as written (YAML would read
    /// `007` as the number 7, and the service would be asked for another account).
    fn identifier(&mut self, v: &Spanned<Value>) -> Option<String> {
        let message = match &v.value {
            Value::Scalar(Scalar::Str(s)) => match crate::model::Account::new(s) {
                Ok(_) => return Some(s.clone()),
                // One account: "two accounts run together?" is advice for lists of accounts.
                Err(e) => match e.split_once("; two accounts run together?") {
                    Some((what, _)) => format!(
                        "`identifier` {}; the identifier is one account name: remove it",
                        what.strip_prefix("account ").unwrap_or(what)
                    ),
                    None => format!("`identifier`: {e}"),
                },
            },
            Value::Scalar(scalar @ (Scalar::Int(_) | Scalar::Float(_) | Scalar::Bool(_))) => {
                let written = written(self.text, &v.referenced).unwrap_or_else(|| scalar.text());
                let kind = if matches!(scalar, Scalar::Bool(_)) {
                    "a boolean"
                } else {
                    "a number"
                };
                format!(
                    "`identifier` must be an account name, but YAML reads {written} as {kind}; \
                     quote it: identifier: \"{written}\""
                )
            }
            other => format!(
                "`identifier` must be an account name, found {}",
                other.kind()
            ),
        };
        self.err(&v.referenced, message);
        None
    }

    /// The entries whose key is one of `known`, each once: an unknown key is reported with a
    /// suggestion, a repeated one with `duplicate(key, line of the first)`.
    fn known_entries(
        &mut self,
        entries: Vec<(Spanned<String>, Spanned<Value>)>,
        known: &[&str],
        duplicate: impl Fn(&str, u64) -> String,
    ) -> Vec<(Spanned<String>, Spanned<Value>)> {
        let mut out: Vec<(Spanned<String>, Spanned<Value>)> = Vec::new();
        for (k, val) in entries {
            if let Some((first, _)) = out.iter().find(|(o, _)| o.value == k.value) {
                let message = duplicate(&k.value, first.referenced.line());
                self.err(&k.referenced, message);
            } else if !known.contains(&k.value.as_str()) {
                self.err(&k.referenced, unknown_key(&k.value, known));
            } else {
                out.push((k, val));
            }
        }
        out
    }

    fn map(
        &mut self,
        v: Spanned<Value>,
        key: &str,
        known: &[&str],
    ) -> Option<Vec<(Spanned<String>, Spanned<Value>)>> {
        match v.value {
            Value::Map(entries) => Some(self.known_entries(entries, known, |k, _| {
                format!("duplicate key `{k}` in `{key}`")
            })),
            other => {
                self.err(
                    &v.referenced,
                    format!("`{key}` must be a mapping, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn guard(&mut self, v: Spanned<Value>) -> Option<Guard> {
        let mut guard = Guard::default();
        let before = self.errors.len();
        for (k, val) in self.map(v, "guard", &["max_clear_fraction", "min_clears"])? {
            if k.value == "max_clear_fraction" {
                if let Some(f) = self.float(&val, "guard.max_clear_fraction") {
                    // `contains` is false for NaN; infinities are outside the range.
                    if (0.0..=1.0).contains(&f) {
                        guard.max_clear_fraction = f;
                    } else {
                        let written =
                            written(self.text, &val.referenced).unwrap_or_else(|| f.to_string());
                        self.err(
                            &val.referenced,
                            format!("`guard.max_clear_fraction` must be a fraction between 0 and 1 (0.25 is a quarter), found {written}"),
                        );
                    }
                }
            } else if let Some(n) = self.int_in(
                &val,
                "guard.min_clears",
                0,
                i128::from(u64::MAX),
                "a whole number of marks, 0 or more",
            ) {
                guard.min_clears = n as u64;
            }
        }
        (self.errors.len() == before).then_some(guard)
    }

    fn http(&mut self, v: Spanned<Value>, base: &Path) -> Option<Http> {
        let at = v.referenced;
        let before = self.errors.len();
        let mut listen = None;
        let mut listen_at = at;
        let mut token = None;
        let mut allow_unsigned = false;
        let keys = ["listen", "callback_token_file", "allow_unsigned_callbacks"];
        for (k, val) in self.map(v, "http", &keys)? {
            if k.value == "listen" {
                listen_at = val.referenced;
                if let Some(s) = self.string(&val, "http.listen") {
                    match s.parse::<SocketAddr>() {
                        Ok(a) => listen = Some(a),
                        Err(_) => self.err(
                            &val.referenced,
                            format!(
                                "`http.listen`: {s:?} is not an address such as 127.0.0.1:9464"
                            ),
                        ),
                    }
                }
            } else if k.value == "allow_unsigned_callbacks" {
                match &val.value {
                    Value::Scalar(Scalar::Bool(b)) => allow_unsigned = *b,
                    other => {
                        let message = format!(
                            "`http.allow_unsigned_callbacks` must be true or false, found {}",
                            other.kind()
                        );
                        self.err(&val.referenced, message);
                    }
                }
            } else {
                token = self.path(&val, "http.callback_token_file", base);
            }
        }
        if listen.is_none() && self.errors.len() == before {
            self.err(&at, "`http` needs `listen` (such as 127.0.0.1:9464)");
        }
        let http = Http {
            listen: listen?,
            callback_token_file: token,
            allow_unsigned_callbacks: allow_unsigned,
        };
        if http.unsigned_beyond_loopback() && !allow_unsigned && self.errors.len() == before {
            self.err(
                &listen_at,
                format!(
                    "`http.listen`: {} is not a loopback address and no `http.callback_token_file` \
                     is set, so anyone who reaches it could send callbacks; set \
                     `callback_token_file` to a file holding the callback token configured in the \
                     console (under systemd: /run/credentials/UNIT/callback-token), or add \
                     `allow_unsigned_callbacks: true` to accept unsigned callbacks knowingly",
                    http.listen
                ),
            );
        }
        (self.errors.len() == before).then_some(http)
    }
}

/// A plain scalar as the user wrote it at `at`, for messages about YAML's number resolution
/// (`007`, not the `7` it resolved to). `None` when it cannot be found.
fn written(text: &str, at: &serde_saphyr::Location) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(at.line()).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(at.column()).ok()?.checked_sub(1)?;
    let rest: String = line.chars().skip(column).collect();
    let end = rest.find(" #").unwrap_or(rest.len());
    let rest = rest[..end].split([',', '}', ']']).next()?.trim();
    (!rest.is_empty() && rest.len() <= 64).then(|| rest.to_string())
}

/// The config path: `-c FILE`, else `$MARKSYNC_CONFIG`, else `./marksync.yaml`. The caller
/// passes the environment in, so this stays testable.
pub fn resolve_path(flag: Option<PathBuf>, env: Option<String>) -> PathBuf {
    flag.or_else(|| env.filter(|s| !s.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("marksync.yaml"))
}

#[cfg(test)]
mod tests;
