//! UserSig: the credential every REST call carries, derived from the App's secret key
//! (TLSSigAPIv2, HMAC-SHA256 variant; `reference/tencent-im-api.md` section 2).
//!
//! [`generate`] is what the client sends; [`verify`] is what the service does on receipt, and what
//! the emulator does too, so both sides share one implementation of the algorithm.
//!
//! Architecture invariant: the secret key only ever lives inside a [`SecretKey`], which cannot be
//! printed, displayed or serialised. Errors about it name where it came from, never what it is.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::model::UnixTime;

/// The MAC of TLSSigAPIv2.
type HmacSha256 = Hmac<Sha256>;

/// The environment variable that may carry the secret key (second in precedence).
pub const SECRET_KEY_ENV: &str = "MARKSYNC_SECRET_KEY";
/// The file name looked up in systemd's `$CREDENTIALS_DIRECTORY` (third in precedence).
pub const CREDENTIAL_NAME: &str = "secret-key";
/// Decoded data bigger than this is refused before inflating it, so a
/// hostile input cannot make the verifier allocate without bound (real ones are about 200 bytes).
const MAX_INFLATED_BYTES: u64 = 64 * 1024;

/// The App's secret key from the console, which signs every UserSig.
///
/// It is deliberately opaque: `Debug` prints `SecretKey(***)`, there is no `Display`, no
/// `Serialize`, and no public accessor, so it cannot reach a log line, an error or the state file
/// by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a key given by code (tests, the emulator), refusing an empty one (after trimming
    /// surrounding whitespace). Text from a user goes through [`SecretKey::parse`] instead, which
    /// also requires hex digits; [`SecretKey::from_sources`] does.
    pub fn new(key: impl Into<String>) -> Result<Self, SecretError> {
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.is_empty() {
            return Err(SecretError::Empty {
                source_name: "the given key".into(),
            });
        }
        Ok(SecretKey(trimmed.to_owned()))
    }

    /// Checks key text as a user supplied it: one line of hex digits, surrounding ASCII whitespace
    /// (a trailing newline) trimmed. Anything else (a byte-order mark, quotes, a `KEY=` prefix, a
    /// second line) is refused with the reason, because it would be hashed into a key the service
    /// does not know and fail only later, with 70009. `source_name` says where the text came from
    /// (`file /etc/marksync/secret.key`); no error carries any part of the text.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<SecretKey, SecretError> {
        let problem = |problem: KeyProblem| SecretError::Malformed {
            source_name: source_name.to_owned(),
            problem,
        };
        let text = crate::input::secret_line(bytes).map_err(|p| match p {
            crate::input::SecretTextProblem::Empty => SecretError::Empty {
                source_name: source_name.to_owned(),
            },
            p => problem(KeyProblem::Text(p)),
        })?;
        if let Some((name, _)) = text.split_once('=') {
            // `KEY=...` or `export KEY=...` pasted from a shell or an .env file.
            return Err(problem(KeyProblem::Assignment {
                looks_like_name: !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' '),
            }));
        }
        if text.starts_with("0x") || text.starts_with("0X") {
            return Err(problem(KeyProblem::HexPrefix));
        }
        if let Some((i, c)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(problem(KeyProblem::NotHex {
                position: i + 1,
                what: describe_non_hex(c),
            }));
        }
        Ok(SecretKey(text.to_owned()))
    }

    /// Loads the key from the first source that is configured, in this precedence:
    /// `secret_key_file` (the config's `secret_key_file`), then `env` (the value of
    /// `MARKSYNC_SECRET_KEY`, passed in so this stays testable), then
    /// `credentials_directory/secret-key` (systemd's `LoadCredential=`).
    ///
    /// Every source is checked by [`SecretKey::parse`]. A configured source that cannot be read
    /// is an error (the next source is not tried: the operator asked for that one). Files are
    /// read only if they are regular files of at most [`crate::input::MAX_SECRET_BYTES`]. A
    /// `secret_key_file` readable by others or a foreign group is used, with a warning logged. Errors name
    /// the file, never its content.
    pub fn from_sources(
        secret_key_file: Option<&Path>,
        env: Option<String>,
        credentials_directory: Option<&Path>,
    ) -> Result<SecretKey, SecretError> {
        if let Some(path) = secret_key_file {
            return Self::from_file(path);
        }
        if let Some(value) = env {
            return Self::parse(
                value.as_bytes(),
                &format!("environment variable {SECRET_KEY_ENV}"),
            );
        }
        if let Some(dir) = credentials_directory {
            // systemd owns the credential directory and its modes: no permission warning.
            return Self::from_file(&dir.join(CREDENTIAL_NAME));
        }
        Err(SecretError::Missing)
    }

    /// Reads (bounded, regular files only) and checks a key file.
    fn from_file(path: &Path) -> Result<SecretKey, SecretError> {
        let bytes =
            crate::input::read_regular(path, crate::input::MAX_SECRET_BYTES).map_err(|source| {
                SecretError::Read {
                    path: path.to_owned(),
                    source,
                }
            })?;
        Self::parse(&bytes, &format!("file {}", path.display())).map_err(|e| match e {
            SecretError::Malformed {
                problem: KeyProblem::Text(crate::input::SecretTextProblem::NotUtf8),
                ..
            } => SecretError::NotUtf8 {
                path: path.to_owned(),
            },
            e => e,
        })
    }

    /// Why this key is almost certainly mistyped, though it reads as hex: the console's keys are
    /// 64 lower-case hexadecimal digits, and the text itself is the HMAC key (`AB` and `ab` sign
    /// differently, and the service would answer 70009 later). Never quotes the key.
    pub fn shape_warning(&self) -> Option<String> {
        let digits = self.0.chars().count();
        let mut problems = Vec::new();
        if digits != 64 {
            problems.push(format!(
                "has {digits} hexadecimal digits, not the 64 the console shows (cut short, or pasted twice?)"
            ));
        }
        if self.0.chars().any(|c| c.is_ascii_uppercase()) {
            problems.push(
                "has upper-case letters, but the console shows it in lower case and the text itself is the key (A and a sign differently)"
                    .to_string(),
            );
        }
        (!problems.is_empty()).then(|| {
            format!(
                "the secret key {}: it is almost certainly mistyped; copy it again from the console",
                problems.join(", and ")
            )
        })
    }

    /// The key's bytes, for HMAC only. Crate-private so nothing outside can print it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Why the secret key could not be loaded. No variant carries any part of the key.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A key that reads as hex but is almost certainly mistyped ([`SecretKey::shape_warning`]),
    /// refused by `validate --strict`.
    #[error("{0} (an error with --strict)")]
    Mistyped(String),
    /// None of the three sources is configured.
    #[error(
        "no secret key: set secret_key_file in the config, or {SECRET_KEY_ENV}, \
         or provide the systemd credential {CREDENTIAL_NAME}"
    )]
    Missing,
    /// The configured file exists in the config but cannot be read (missing, permissions).
    #[error("cannot read the secret key file {}: {source}", path.display())]
    Read {
        /// The file that was tried.
        path: PathBuf,
        /// The OS error (it carries no file content).
        source: std::io::Error,
    },
    /// The file is not text; the key is an ASCII string from the console.
    #[error("the secret key file {} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file that was tried.
        path: PathBuf,
    },
    /// The source is configured but holds only whitespace.
    #[error("the secret key from {source_name} is empty")]
    Empty {
        /// Where it came from, e.g. `file /etc/marksync/secret.key`.
        source_name: String,
    },
    /// The text is not one line of hex digits.
    #[error(
        "the secret key from {source_name} {problem}; it must be only the hex digits of the key \
         the console shows"
    )]
    Malformed {
        /// Where it came from, e.g. `file /etc/marksync/secret.key`.
        source_name: String,
        /// What is wrong, without any part of the key.
        problem: KeyProblem,
    },
}

/// What is wrong with a secret key's text. Never carries a character that could be part of a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// Refused by the checks every one-line secret gets (BOM, second line, quotes...).
    #[error("{0}")]
    Text(crate::input::SecretTextProblem),
    /// `KEY=...`: an assignment pasted from a shell or an `.env` file.
    #[error("{}", if *looks_like_name { "starts with a `NAME=` prefix (write the key alone)" } else { "contains '='" })]
    Assignment {
        /// Whether what precedes `=` looks like a variable name.
        looks_like_name: bool,
    },
    /// `0x...`: the console shows the digits without a prefix.
    #[error("starts with 0x (write the digits without the prefix)")]
    HexPrefix,
    /// A character that is not a hex digit.
    #[error("is not hex: character {position} is {what}")]
    NotHex {
        /// 1-based, in characters.
        position: usize,
        /// A description that does not reveal a key character ("a letter other than a-f").
        what: String,
    },
}

/// Describes a character that is not a hex digit without printing it when it could be part of a
/// secret: punctuation and whitespace are shown (they explain the mistake), letters are not.
fn describe_non_hex(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        c if c.is_ascii_punctuation() => format!("'{c}'"),
        c if c.is_ascii_alphabetic() => "a letter other than a-f".into(),
        c if c.is_control() => "a control character".into(),
        c if c.is_whitespace() => "a non-ASCII space".into(),
        _ => "a non-ASCII character".into(),
    }
}

/// Logs a warning when the key file at `path` is loose: readable by anyone but its owner and
/// this process's group, or writable by anyone but its owner. Not for the
/// systemd credential directory (systemd sets its modes), nor for the embedded emulator's demo
/// key (it guards nothing).
pub fn warn_if_loose(path: &Path) {
    if let Some(mode) = loose_mode(path) {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:03o}"),
            "the secret key file is readable by others or by a group that is not this process's own, or writable by its group; restrict it with chmod 600 (or 0440 with marksync's own group)"
        );
    }
}

/// The permission bits of `path` when anyone but its owner and the process's own group may read
/// it, or anyone but its owner may write it.
pub(crate) fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    let own_gid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_gid_from_status(&status));
    is_loose(mode, meta.gid(), own_gid).then_some(mode)
}

/// Whether a file mode lets anyone but the owner at the file, except reading by `own_gid` (the
/// process's effective group) when the file has that group: a Kubernetes Secret mounted 0440
/// with `fsGroup` equal to `runAsGroup` is readable by the daemon's group only, and root-owned
/// files cannot be 0400 to a non-root daemon. Others' bits and group writes are always loose;
/// so is any group bit when the process's group is unknown.
fn is_loose(mode: u32, file_gid: u32, own_gid: Option<u32>) -> bool {
    let others = mode & 0o007 != 0;
    let group_write = mode & 0o020 != 0;
    let foreign_group_read = mode & 0o040 != 0 && own_gid != Some(file_gid);
    others || group_write || foreign_group_read
}

/// The effective group ID from `/proc/self/status` text (`Gid: real effective saved fs`).
fn effective_gid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Gid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The six fields of a UserSig, as [`verify`] decoded them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// `TLS.ver`: always "2.0" for this algorithm.
    pub ver: String,
    /// `TLS.identifier`: the account the sig was issued for.
    pub identifier: String,
    /// `TLS.sdkappid`: the App it was issued for.
    pub sdkappid: u64,
    /// `TLS.time`: when it was issued (Unix seconds).
    pub time: UnixTime,
    /// `TLS.expire`: seconds of validity after `time`.
    pub expire: u64,
    /// `TLS.sig`: standard base64 of the HMAC-SHA256 over the other fields.
    pub sig: String,
}

/// Why a UserSig was refused. Each variant is one of the service's public error codes, so the
/// emulator can answer exactly as the service would ([`SigError::code`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// Not base64, not zlib, not JSON, or a field is missing or has the wrong type (70003).
    #[error("UserSig is unparsable: {0}")]
    Unparsable(String),
    /// `now > time + expire` (70001).
    #[error("UserSig expired at {expired_at}")]
    Expired {
        /// `time + expire`, Unix seconds.
        expired_at: i128,
    },
    /// Issued for a different account than the request's `identifier` (70013).
    #[error("UserSig was issued for identifier {found:?}, not {expected:?}")]
    IdentifierMismatch {
        /// The request's identifier.
        expected: String,
        /// The sig's `TLS.identifier`.
        found: String,
    },
    /// Issued for a different App than the request's `sdkappid` (70014).
    #[error("UserSig was issued for SDKAppID {found}, not {expected}")]
    SdkAppIdMismatch {
        /// The request's sdkappid.
        expected: u64,
        /// The sig's `TLS.sdkappid`.
        found: u64,
    },
    /// The HMAC does not match: wrong secret key, or the sig was altered (70009).
    #[error("UserSig signature check failed")]
    SignatureMismatch,
}

impl SigError {
    /// The service's public error code for this failure (reference section 6).
    pub fn code(&self) -> i64 {
        match self {
            SigError::Unparsable(_) => 70003,
            SigError::Expired { .. } => 70001,
            SigError::IdentifierMismatch { .. } => 70013,
            SigError::SdkAppIdMismatch { .. } => 70014,
            SigError::SignatureMismatch => 70009,
        }
    }
}

/// The HMAC input of step 1, in the field order the algorithm fixes.
fn content(sdkappid: u64, identifier: &str, time: UnixTime, expire: u64) -> String {
    format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    )
}

/// A fresh HMAC-SHA256 keyed with the secret key.
fn mac(key: &SecretKey) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it panic-free.
    HmacSha256::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC-SHA256 accepts keys of any length"))
}

/// `TLS.sig` (step 2): standard base64 of HMAC-SHA256(key, content).
pub(crate) fn tls_sig(
    sdkappid: u64,
    key: &SecretKey,
    identifier: &str,
    time: UnixTime,
    expire: u64,
) -> String {
    let mut m = mac(key);
    m.update(content(sdkappid, identifier, time, expire).as_bytes());
    STANDARD.encode(m.finalize().into_bytes())
}

/// Generates a UserSig for `identifier`, valid for `expire_secs` seconds from `now`.
///
/// Deterministic for given inputs, so it is testable against pinned clocks.
pub fn generate(
    sdkappid: u64,
    key: &SecretKey,
    identifier: &str,
    expire_secs: u64,
    now: UnixTime,
) -> String {
    let doc = json!({
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire_secs,
        "TLS.time": now,
        "TLS.sig": tls_sig(sdkappid, key, identifier, now, expire_secs),
    });
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let compressed = z
        .write_all(doc.to_string().as_bytes())
        .and_then(|()| z.finish())
        .unwrap_or_default();
    url_safe(&STANDARD.encode(compressed))
}

/// Step 5: the service's own URL-safe alphabet.
fn url_safe(b64: &str) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

/// Undoes step 5.
fn undo_url_safe(sig: &str) -> String {
    sig.chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect()
}

/// Undoes steps 3 to 5: base64, inflate, JSON, the six fields.
fn decode(sig: &str) -> Result<Decoded, SigError> {
    let bad = |what: &str| SigError::Unparsable(what.to_owned());
    let compressed = STANDARD
        .decode(undo_url_safe(sig.trim()))
        .map_err(|_| bad("not base64"))?;
    let mut json = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|_| bad("not a zlib stream"))?;
    if json.len() as u64 > MAX_INFLATED_BYTES {
        return Err(bad("too large"));
    }
    let v: Value = serde_json::from_slice(&json).map_err(|_| bad("not JSON"))?;
    let string = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| SigError::Unparsable(format!("{name} missing or not a string")))
    };
    // Numbers are numbers in every official library; a numeric string is tolerated anyway.
    let number = |name: &str| match v.get(name) {
        Some(Value::Number(n)) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
        Some(Value::String(s)) => s.parse::<i128>().ok(),
        _ => None,
    };
    let bad_num = |name: &str| SigError::Unparsable(format!("{name} missing or not a number"));
    let ver = string("TLS.ver")?;
    let identifier = string("TLS.identifier")?;
    let sig_field = string("TLS.sig")?;
    let sdkappid = number("TLS.sdkappid")
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| bad_num("TLS.sdkappid"))?;
    let time = number("TLS.time")
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| bad_num("TLS.time"))?;
    let expire = number("TLS.expire")
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| bad_num("TLS.expire"))?;
    Ok(Decoded {
        ver,
        identifier,
        sdkappid,
        time,
        expire,
        sig: sig_field,
    })
}

/// Checks a UserSig the way the service does: decode, sdkappid, identifier, expiry, then the
/// HMAC (compared in constant time). Returns the decoded fields when it is valid.
pub fn verify(
    sig: &str,
    sdkappid: u64,
    key: &SecretKey,
    identifier: &str,
    now: UnixTime,
) -> Result<Decoded, SigError> {
    let d = decode(sig)?;
    if d.sdkappid != sdkappid {
        return Err(SigError::SdkAppIdMismatch {
            expected: sdkappid,
            found: d.sdkappid,
        });
    }
    if d.identifier != identifier {
        return Err(SigError::IdentifierMismatch {
            expected: identifier.to_owned(),
            found: d.identifier,
        });
    }
    let expired_at = i128::from(d.time) + i128::from(d.expire);
    if i128::from(now) > expired_at {
        return Err(SigError::Expired { expired_at });
    }
    let claimed = STANDARD
        .decode(&d.sig)
        .map_err(|_| SigError::Unparsable("TLS.sig is not base64".into()))?;
    let mut m = mac(key);
    m.update(content(d.sdkappid, &d.identifier, d.time, d.expire).as_bytes());
    m.verify_slice(&claimed)
        .map_err(|_| SigError::SignatureMismatch)?;
    Ok(d)
}

#[cfg(test)]
mod tests;
