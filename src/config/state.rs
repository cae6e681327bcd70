//! The `state` and `state_store` keys (SPEC 4, 11): where the state lives, and the settings of
//! an object store behind it.

use std::path::Path;

use serde_saphyr::Spanned;

use super::{Checker, Location};
use crate::state::{STATE_URL_SCHEMES, StoreSettings};
use crate::yaml::{Scalar, Value};

/// Why `gs://` is refused: Google Cloud Storage is not verified (docs/remote-state.md), and a
/// store whose conditional writes are unchecked could lose a state silently.
const GCS_NOT_SUPPORTED: &str = "gs:// (Google Cloud Storage) is not supported: marksync could \
    not verify that GCS refuses a conflicting write of the state as it must, and an unverified \
    store could let two writers overwrite each other's state unnoticed. Keep the state in s3:// \
    (Amazon S3 or an S3-compatible store), az:// (Azure Blob Storage) or a local file";

/// What a `state` value is: `Ok(None)` a path, `Ok(Some(url))` an object store's URL, `Err` why
/// it is neither (in the user's terms, with what to write instead).
fn state_location(s: &str) -> Result<Option<String>, String> {
    // A scheme as RFC 3986 has it: a letter, then letters, digits, `+`, `-`, `.`.
    let scheme_len = s
        .char_indices()
        .take_while(|&(i, ch)| {
            ch.is_ascii_alphabetic() || (i > 0 && (ch.is_ascii_digit() || "+-.".contains(ch)))
        })
        .count();
    let (scheme, rest) = s.split_at(scheme_len);
    let Some(after_colon) = rest.strip_prefix(':') else {
        return Ok(None);
    };
    let lower = scheme.to_ascii_lowercase();
    // Whatever follows (`gs:b/k` too, which as a path would make a folder `gs:`).
    if lower == "gs" {
        return Err(GCS_NOT_SUPPORTED.to_string());
    }
    let served = STATE_URL_SCHEMES.contains(&lower.as_str());
    let Some(url_rest) = after_colon.strip_prefix("//") else {
        // `s3:/b/k` or `s3:b/k`: a store's URL with a slash missing. Any other `x:/...` is as
        // likely a mistyped URL as a path; `./` says which.
        if served || after_colon.starts_with('/') {
            let hint = if served {
                format!(
                    "did you mean {lower}://{}? ",
                    after_colon.trim_start_matches('/')
                )
            } else {
                String::new()
            };
            return Err(format!(
                "looks like a URL with a slash missing; {hint}For a local path with a colon \
                 in it, write it as ./{s}"
            ));
        }
        return Ok(None);
    };
    if scheme.is_empty() {
        return Ok(None);
    }
    if served && scheme != lower {
        return Err(format!(
            "URL schemes are written in lower case: did you mean {lower}://{url_rest}?"
        ));
    }
    match lower.as_str() {
        "s3" | "az" => {
            let (bucket, key) = url_rest.split_once('/').unwrap_or((url_rest, ""));
            if bucket.is_empty() || key.is_empty() {
                let (word, upper) = if lower == "az" {
                    ("container", "CONTAINER")
                } else {
                    ("bucket", "BUCKET")
                };
                return Err(format!(
                    "a state URL needs a {word} and an object key: {lower}://{upper}/KEY, such as \
                     {lower}://my-{word}/marksync/state.json"
                ));
            }
            if lower == "az" && !is_container_name(bucket) {
                return Err(format!(
                    "`{bucket}` is not an Azure container name (3 to 63 lower-case letters, \
                     digits and single hyphens, starting and ending with a letter or digit)"
                ));
            }
            if key.ends_with('/') {
                return Err(format!(
                    "the object key ends with `/`, so it names a folder; name the state object, \
                     such as {lower}://{bucket}/{key}state.json"
                ));
            }
            Ok(Some(s.to_string()))
        }
        "file" => Err(format!(
            "a file URL; write the path itself: {}",
            if url_rest.starts_with('/') {
                url_rest.to_string()
            } else {
                url_rest
                    .split_once('/')
                    .map_or(url_rest, |(_, p)| p)
                    .to_string()
            }
        )),
        "http" | "https" => Err(
            "an http URL is not a state store; for an S3-compatible store (Tencent Cloud COS, \
             MinIO...) write state: s3://BUCKET/KEY and put the store's URL in \
             `state_store.endpoint`"
                .to_string(),
        ),
        _ => Err(format!(
            "unknown scheme `{scheme}://`; `state` is a local path or a URL of an object store \
             (s3://, az://)"
        )),
    }
}

/// Why `state_store.KEY` does not apply to a state URL of `scheme`, if it does not: a setting
/// that the store would ignore is refused, so no one believes it took effect.
fn not_for_scheme(key: &str, scheme: &str) -> Option<String> {
    match (scheme, key) {
        ("az", "region") => Some(
            "`state_store.region` applies to an s3:// state; an az:// state is located by its \
             `account` (and `endpoint`): remove `region`"
                .to_string(),
        ),
        ("s3", "account") => Some(
            "`state_store.account` is the Azure storage account of an az:// state; an s3:// \
             state names its bucket in the URL: remove `account`"
                .to_string(),
        ),
        _ => None,
    }
}

/// Azure's rule for a container name: 3 to 63 lower-case letters, digits and hyphens, a letter
/// or digit at each end, no two hyphens in a row.
fn is_container_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !name.contains("--")
}

impl Checker<'_> {
    /// The `state` value: a path, or the URL of an object store this build serves. A value with
    /// `SCHEME://` is a URL, never a path, and so is one that looks like a store's URL with a
    /// slash missing (`s3:/b/k`, `s3:b/k`): read as a path, it would quietly make a folder
    /// named `s3:` beside the config while the team believes the state is in the bucket. `./`
    /// before a path makes it a path whatever it holds.
    pub(super) fn state(&mut self, v: &Spanned<Value>, base: &Path) -> Option<Location> {
        let Value::Scalar(Scalar::Str(s)) = &v.value else {
            return self.path(v, "state", base).map(Location::File);
        };
        match state_location(s) {
            Ok(Some(url)) => Some(Location::Object(url)),
            Ok(None) => self.path(v, "state", base).map(Location::File),
            Err(message) => {
                self.err(&v.referenced, format!("`state` {s:?}: {message}"));
                None
            }
        }
    }

    /// `state_store: {endpoint, region, account, allow_http}`, for a state URL of `scheme`
    /// (`s3`, `az`; `None` when `state` did not parse).
    pub(super) fn state_store(
        &mut self,
        v: Spanned<Value>,
        scheme: Option<&str>,
    ) -> Option<StoreSettings> {
        let before = self.errors.len();
        let mut out = StoreSettings::default();
        let mut endpoint_at = v.referenced;
        let keys = ["endpoint", "region", "account", "allow_http"];
        for (k, val) in self.map(v, "state_store", &keys)? {
            if let Some(why) = scheme.and_then(|s| not_for_scheme(&k.value, s)) {
                self.err(&k.referenced, why);
                continue;
            }
            match k.value.as_str() {
                "endpoint" => {
                    endpoint_at = val.referenced;
                    let Some(s) = self.string(&val, "state_store.endpoint") else {
                        continue;
                    };
                    let host = s
                        .strip_prefix("https://")
                        .or_else(|| s.strip_prefix("http://"))
                        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
                    match host {
                        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => {
                            out.endpoint = Some(s)
                        }
                        _ => self.err(
                            &val.referenced,
                            format!(
                                "`state_store.endpoint` must be an https:// URL such as \
                                 https://cos.ap-singapore.myqcloud.com, found {s:?}"
                            ),
                        ),
                    }
                }
                "region" => {
                    if let Some(s) = self.string(&val, "state_store.region") {
                        if s.trim().is_empty() {
                            self.err(&val.referenced, "`state_store.region` must not be empty");
                        } else {
                            out.region = Some(s);
                        }
                    }
                }
                "account" => {
                    if let Some(s) = self.string(&val, "state_store.account") {
                        let fits = (3..=24).contains(&s.len())
                            && s.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                        if fits {
                            out.account = Some(s);
                        } else {
                            self.err(
                                &val.referenced,
                                format!(
                                    "`state_store.account` must be an Azure storage account \
                                     name (3 to 24 lower-case letters and digits, as in \
                                     https://NAME.blob.core.windows.net), found {s:?}"
                                ),
                            );
                        }
                    }
                }
                _ => match &val.value {
                    Value::Scalar(Scalar::Bool(b)) => out.allow_http = *b,
                    other => {
                        let message = format!(
                            "`state_store.allow_http` must be true or false, found {}",
                            other.kind()
                        );
                        self.err(&val.referenced, message);
                    }
                },
            }
        }
        if self.errors.len() == before
            && !out.allow_http
            && out
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        {
            self.err(
                &endpoint_at,
                "`state_store.endpoint` is plain http: the store's answers (the state) and the \
                 requests' signatures would cross the network unencrypted. Use https, or add \
                 `allow_http: true` for a store on this machine or a private network",
            );
        }
        (self.errors.len() == before).then_some(out)
    }
}
