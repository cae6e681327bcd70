//! The config file (`marksync.yaml`, SPEC section 2).
//!
//! The file is read into a position-carrying YAML tree and checked key by key, so every problem
//! (unknown key, wrong type, bad duration, missing required key) is reported at once with its
//! `path:line:column`. Relative paths resolve against the config file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::yaml::{Scalar, Value};

/// Where the service is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// One of the service's regions; the domain is looked up by the client.
    Region(String),
    /// An explicit base URL (https, or http to a loopback address).
    Url(String),
    /// The in-process emulator: demos and CI without a Tencent account.
    Embedded,
}

/// The regions the service runs in (reference section 1).
pub const REGIONS: &[&str] = &[
    "china",
    "singapore",
    "seoul",
    "tokyo",
    "frankfurt",
    "mumbai",
    "silicon-valley",
    "jakarta",
];

/// The mass-clear guard (SPEC section 5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guard {
    /// Refuse a plan clearing more than this fraction of the managed marks...
    pub max_clear_fraction: f64,
    /// ...when it also clears more than this many marks.
    pub min_clears: u64,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            max_clear_fraction: 0.25,
            min_clears: 10,
        }
    }
}

/// The daemon's optional HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http {
    /// Address for callbacks, `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// File holding the callback authentication token; when set, unsigned callbacks are refused.
    pub callback_token_file: Option<PathBuf>,
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
    /// The state file.
    pub state: PathBuf,
    /// The shared rate limit for all calls.
    pub max_calls_per_second: u32,
    /// Renew mark 500 this long before its 72 h run out.
    pub renew_margin: Duration,
    /// Re-send desired marks not yet confirmed this often (daemon).
    pub retry_pending_every: Duration,
    /// Re-send every desired mark this often (daemon).
    pub reassert_every: Duration,
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
}

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
    "debounce",
    "usersig_ttl",
    "guard",
    "http",
    "offline_error_codes",
];

/// Reads and checks the config file.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let bytes = std::fs::read(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "config file not found (pass -c FILE or set MARKSYNC_CONFIG)".to_string()
        } else {
            format!("cannot read config file: {e}")
        };
        Diagnostics(vec![Diagnostic::file_error(path, what)])
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Diagnostics(vec![Diagnostic::file_error(
            path,
            "the config file is not valid UTF-8",
        )])
    })?;
    parse(path, &text)
}

/// Checks config text. `path` locates the diagnostics and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
    let root: Spanned<Value> =
        match serde_saphyr::from_str_with_options(text, crate::yaml::options()) {
            Ok(v) => v,
            Err(e) => {
                let message = crate::yaml::message(&e);
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
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut get = std::collections::HashMap::new();
    for (key, value) in entries {
        if let Some((_, line)) = seen.iter().find(|(k, _)| *k == key.value) {
            c.err(
                &key.referenced,
                format!("duplicate key `{}` (first at line {line})", key.value),
            );
        } else if !KEYS.contains(&key.value.as_str()) {
            c.err(&key.referenced, unknown_key(&key.value, KEYS));
        } else {
            seen.push((key.value.clone(), key.referenced.line()));
            get.insert(key.value.clone(), value);
        }
    }
    let root_loc = root.referenced;
    let mut take = |k: &str| get.remove(k);

    let sdkappid = match take("sdkappid") {
        Some(v) => c.uint(&v, "sdkappid").filter(|&n| {
            n > 0 || {
                c.err(&v.referenced, "`sdkappid` must not be 0");
                false
            }
        }),
        None => {
            c.err(
                &root_loc,
                "missing required key `sdkappid` (your application's SDKAppID)",
            );
            None
        }
    };
    let identifier = match take("identifier") {
        Some(v) => c.string(&v, "identifier").filter(|s| {
            !s.is_empty() || {
                c.err(&v.referenced, "`identifier` must not be empty");
                false
            }
        }),
        None => {
            c.err(
                &root_loc,
                "missing required key `identifier` (an App admin account)",
            );
            None
        }
    };
    let secret_key_file = take("secret_key_file")
        .and_then(|v| c.string(&v, "secret_key_file"))
        .map(|s| base.join(s));
    let region = take("region").and_then(|v| {
        let s = c.string(&v, "region")?;
        if REGIONS.contains(&s.as_str()) {
            Some(s)
        } else {
            c.err(
                &v.referenced,
                format!(
                    "unknown region {s:?}; expected one of {}",
                    REGIONS.join(", ")
                ),
            );
            None
        }
    });
    let endpoint = match take("endpoint") {
        Some(v) => c.string(&v, "endpoint").and_then(|s| {
            if s == "embedded" {
                Some(Endpoint::Embedded)
            } else if s.starts_with("https://") || s.starts_with("http://") {
                // The UserSig rides in the query string: plain http only to this machine.
                match crate::tim::client::endpoint_url(
                    crate::tim::client::Region::default(),
                    Some(&s),
                ) {
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
        None => Some(Endpoint::Region(
            region.clone().unwrap_or_else(|| "china".into()),
        )),
    };
    let desired = match take("desired") {
        Some(v) => c.string(&v, "desired").map(|s| base.join(s)),
        None => {
            c.err(
                &root_loc,
                "missing required key `desired` (the directory or file of desired marks)",
            );
            None
        }
    };
    let state = match take("state") {
        Some(v) => c.string(&v, "state").map(|s| base.join(s)),
        None => Some(base.join("state/marksync.json")),
    };
    let max_calls_per_second = match take("max_calls_per_second") {
        Some(v) => c.uint(&v, "max_calls_per_second").and_then(|n| match u32::try_from(n) {
            Ok(n) if (1..=200).contains(&n) => Some(n),
            _ => {
                c.err(&v.referenced, format!("`max_calls_per_second` must be between 1 and 200 (the service's limit), found {n}"));
                None
            }
        }),
        None => Some(200),
    };
    let mut duration = |k: &str, default: Duration| match take(k) {
        Some(v) => c.duration(&v, k),
        None => Some(default),
    };
    let renew_margin = duration("renew_margin", Duration::from_secs(12 * 3600));
    let retry_pending_every = duration("retry_pending_every", Duration::from_secs(60));
    let reassert_every = duration("reassert_every", Duration::from_secs(30 * 60));
    let debounce = duration("debounce", Duration::from_millis(300));
    let usersig_ttl = duration("usersig_ttl", Duration::from_secs(7 * 86400));
    if let (Some(m), Some(v)) = (renew_margin, get_loc(&seen, "renew_margin"))
        && m >= Duration::from_secs(72 * 3600)
    {
        c.err_line(
            v,
            "`renew_margin` must be shorter than mark 500's 72 h lifetime",
        );
    }
    if let (Some(t), Some(v)) = (usersig_ttl, get_loc(&seen, "usersig_ttl"))
        && t < Duration::from_secs(3600)
    {
        c.err_line(
            v,
            "`usersig_ttl` must be at least 1h (the vendor advises 24h or more)",
        );
    }
    let guard = match take("guard") {
        Some(v) => c.guard(v),
        None => Some(Guard::default()),
    };
    let http = match take("http") {
        Some(v) => c.http(v, &base).map(Some),
        None => Some(None),
    };

    let offline_error_codes = match take("offline_error_codes") {
        Some(v) => match &v.value {
            Value::Seq(items) => {
                let codes: Vec<Option<u64>> = items
                    .iter()
                    .map(|i| c.uint(i, "offline_error_codes"))
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
        max_calls_per_second: max_calls_per_second.ok_or_else(missing)?,
        renew_margin: renew_margin.ok_or_else(missing)?,
        retry_pending_every: retry_pending_every.ok_or_else(missing)?,
        reassert_every: reassert_every.ok_or_else(missing)?,
        debounce: debounce.ok_or_else(missing)?,
        usersig_ttl: usersig_ttl.ok_or_else(missing)?,
        guard: guard.ok_or_else(missing)?,
        http: http.ok_or_else(missing)?,
        offline_error_codes: offline_error_codes.ok_or_else(missing)?,
    })
}

fn get_loc(seen: &[(String, u64)], key: &str) -> Option<u64> {
    seen.iter().find(|(k, _)| k == key).map(|(_, l)| *l)
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

    fn err_line(&mut self, line: u64, message: impl Into<String>) {
        self.errors
            .push(Diagnostic::at(self.path, self.text, line, 1, message));
    }

    fn uint(&mut self, v: &Spanned<Value>, key: &str) -> Option<u64> {
        match &v.value {
            Value::Scalar(Scalar::Int(n)) if *n >= 0 && *n <= i128::from(u64::MAX) => {
                Some(*n as u64)
            }
            Value::Scalar(Scalar::Str(s)) if s.trim().parse::<u64>().is_ok() => {
                self.err(
                    &v.referenced,
                    format!(
                        "`{key}` must be a number, found the string {s:?}; write it without quotes"
                    ),
                );
                None
            }
            other => {
                self.err(
                    &v.referenced,
                    format!(
                        "`{key}` must be a non-negative integer, found {}",
                        other.kind()
                    ),
                );
                None
            }
        }
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

    fn duration(&mut self, v: &Spanned<Value>, key: &str) -> Option<Duration> {
        if let Value::Scalar(Scalar::Int(n)) = &v.value {
            self.err(
                &v.referenced,
                format!("`{key}` needs a unit: write {n}s for seconds (durations look like 90s, 5m or 12h)"),
            );
            return None;
        }
        let s = self.string(v, key)?;
        match humantime::parse_duration(&s) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.err(&v.referenced, format!("`{key}` must be longer than zero"));
                None
            }
            Err(e) => {
                self.err(
                    &v.referenced,
                    format!("`{key}`: {s:?} is not a duration ({e}); write it like 90s, 5m or 12h"),
                );
                None
            }
        }
    }

    fn map(
        &mut self,
        v: Spanned<Value>,
        key: &str,
        known: &[&str],
    ) -> Option<Vec<(Spanned<String>, Spanned<Value>)>> {
        match v.value {
            Value::Map(entries) => {
                let mut out: Vec<(Spanned<String>, Spanned<Value>)> = Vec::new();
                for (k, val) in entries {
                    if out.iter().any(|(o, _)| o.value == k.value) {
                        self.err(
                            &k.referenced,
                            format!("duplicate key `{}` in `{key}`", k.value),
                        );
                    } else if !known.contains(&k.value.as_str()) {
                        self.err(&k.referenced, unknown_key(&k.value, known));
                    } else {
                        out.push((k, val));
                    }
                }
                Some(out)
            }
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
                    if (0.0..=1.0).contains(&f) {
                        guard.max_clear_fraction = f;
                    } else {
                        self.err(
                            &val.referenced,
                            "`guard.max_clear_fraction` must be between 0 and 1",
                        );
                    }
                }
            } else if let Some(n) = self.uint(&val, "guard.min_clears") {
                guard.min_clears = n;
            }
        }
        (self.errors.len() == before).then_some(guard)
    }

    fn http(&mut self, v: Spanned<Value>, base: &Path) -> Option<Http> {
        let at = v.referenced;
        let before = self.errors.len();
        let mut listen = None;
        let mut token = None;
        for (k, val) in self.map(v, "http", &["listen", "callback_token_file"])? {
            if k.value == "listen" {
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
            } else {
                token = self
                    .string(&val, "http.callback_token_file")
                    .map(|s| base.join(s));
            }
        }
        if listen.is_none() && self.errors.len() == before {
            self.err(&at, "`http` needs `listen` (such as 127.0.0.1:9464)");
        }
        (self.errors.len() == before).then_some(Http {
            listen: listen?,
            callback_token_file: token,
        })
    }
}

/// The config path: `-c FILE`, else `$MARKSYNC_CONFIG`, else `./marksync.yaml`. The caller
/// passes the environment in, so this stays testable.
pub fn resolve_path(flag: Option<PathBuf>, env: Option<String>) -> PathBuf {
    flag.or_else(|| env.filter(|s| !s.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("marksync.yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, String> {
        parse(Path::new("conf/marksync.yaml"), text).map_err(|d| d.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults_and_relative_paths() {
        let c =
            check("sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\n").unwrap();
        assert_eq!(c.sdkappid, 1_400_000_000);
        assert_eq!(c.desired, Path::new("conf/marks/"));
        assert_eq!(c.state, Path::new("conf/state/marksync.json"));
        assert_eq!(c.endpoint, Endpoint::Region("china".into()));
        assert_eq!(c.max_calls_per_second, 200);
        assert_eq!(c.renew_margin, Duration::from_secs(12 * 3600));
        assert_eq!(c.debounce, Duration::from_millis(300));
        assert_eq!(c.guard, Guard::default());
        assert_eq!(c.http, None);
    }

    #[test]
    fn full_config_reads_every_key() {
        let c = check(
            "sdkappid: 1\nidentifier: admin\nsecret_key_file: /etc/k\nregion: singapore\ndesired: /m\nstate: /s.json\n\
             max_calls_per_second: 50\nrenew_margin: 6h\nretry_pending_every: 30s\nreassert_every: 1h\ndebounce: 100ms\n\
             usersig_ttl: 2d\nguard: { max_clear_fraction: 0.5, min_clears: 3 }\nhttp: { listen: 127.0.0.1:9000, callback_token_file: t }\n",
        )
        .unwrap();
        assert_eq!(c.endpoint, Endpoint::Region("singapore".into()));
        assert_eq!(c.secret_key_file.as_deref(), Some(Path::new("/etc/k")));
        assert_eq!(
            c.guard,
            Guard {
                max_clear_fraction: 0.5,
                min_clears: 3
            }
        );
        let http = c.http.unwrap();
        assert_eq!(http.listen.port(), 9000);
        assert_eq!(
            http.callback_token_file.as_deref(),
            Some(Path::new("conf/t"))
        );
        assert_eq!(c.usersig_ttl, Duration::from_secs(2 * 86400));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = check("identifier: 5\nregoin: china\ndebounce: soon\nguard: { min_clears: -1 }\n")
            .unwrap_err();
        for want in [
            "conf/marksync.yaml:1:1: error: missing required key `sdkappid`",
            "conf/marksync.yaml:1:13: error: `identifier` must be a string, found an integer",
            "conf/marksync.yaml:2:1: error: unknown key `regoin`; did you mean `region`?",
            "conf/marksync.yaml:3:11: error: `debounce`: \"soon\" is not a duration",
            "`guard.min_clears` must be a non-negative integer",
            "missing required key `desired`",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn endpoint_forms() {
        let base = "sdkappid: 1\nidentifier: a\ndesired: m\n";
        assert_eq!(
            check(&format!("{base}endpoint: embedded\n"))
                .unwrap()
                .endpoint,
            Endpoint::Embedded
        );
        assert_eq!(
            check(&format!("{base}endpoint: https://x.example/\n"))
                .unwrap()
                .endpoint,
            Endpoint::Url("https://x.example".into())
        );
        assert!(check(&format!("{base}endpoint: ftp://x\n")).is_err());
        assert!(
            check(&format!("{base}region: mars\n"))
                .unwrap_err()
                .contains("unknown region \"mars\"")
        );
    }

    #[test]
    fn config_path_precedence() {
        assert_eq!(
            resolve_path(Some("a.yaml".into()), Some("b.yaml".into())),
            Path::new("a.yaml")
        );
        assert_eq!(
            resolve_path(None, Some("b.yaml".into())),
            Path::new("b.yaml")
        );
        assert_eq!(resolve_path(None, None), Path::new("marksync.yaml"));
    }
}
