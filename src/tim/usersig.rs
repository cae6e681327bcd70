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

/// Logs a warning when the key file at `path` is loose ([`loose_mode`]). Not for the
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
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APP: u64 = 1_400_000_000;
    const T0: UnixTime = 1_700_000_000;

    fn key() -> SecretKey {
        SecretKey::new(KEY).unwrap()
    }

    #[test]
    fn published_vectors() {
        // (identifier, expire, TLS.sig) from reference section 2.
        let cases = [
            (
                "xiaojun",
                15_552_000,
                "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=",
            ),
            (
                "administrator",
                86_400,
                "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=",
            ),
        ];
        for (identifier, expire, want) in cases {
            assert_eq!(tls_sig(APP, &key(), identifier, T0, expire), want);
            let sig = generate(APP, &key(), identifier, expire, T0);
            let d = verify(&sig, APP, &key(), identifier, T0).unwrap();
            assert_eq!(d.sig, want);
        }
    }

    #[test]
    fn generated_sig_decodes_by_hand() {
        let sig = generate(APP, &key(), "administrator", 86_400, T0);
        assert!(
            sig.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*-_".contains(c)),
            "only the service's URL-safe alphabet: {sig}"
        );
        let b64: String = sig
            .chars()
            .map(|c| match c {
                '*' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect();
        let z = STANDARD.decode(b64).unwrap();
        // RFC 1950: CMF byte says deflate with a 32K window, and the header checksum holds.
        assert_eq!(z[0], 0x78);
        assert_eq!((u16::from(z[0]) * 256 + u16::from(z[1])) % 31, 0);
        let mut json = String::new();
        ZlibDecoder::new(z.as_slice())
            .read_to_string(&mut json)
            .unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 6);
        assert_eq!(v["TLS.ver"], Value::String("2.0".into()));
        assert_eq!(v["TLS.identifier"], Value::String("administrator".into()));
        assert!(v["TLS.sdkappid"].is_u64());
        assert_eq!(v["TLS.sdkappid"].as_u64(), Some(APP));
        assert!(v["TLS.expire"].is_u64());
        assert_eq!(v["TLS.expire"].as_u64(), Some(86_400));
        assert!(v["TLS.time"].is_i64());
        assert_eq!(v["TLS.time"].as_i64(), Some(T0));
        assert_eq!(
            v["TLS.sig"],
            Value::String("yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=".into())
        );
    }

    #[test]
    fn round_trip() {
        let sig = generate(APP, &key(), "admin", 3600, T0);
        let d = verify(&sig, APP, &key(), "admin", T0 + 10).unwrap();
        assert_eq!(
            d,
            Decoded {
                ver: "2.0".into(),
                identifier: "admin".into(),
                sdkappid: APP,
                time: T0,
                expire: 3600,
                sig: tls_sig(APP, &key(), "admin", T0, 3600),
            }
        );
    }

    /// Builds a sig from an arbitrary JSON document, to test what verify does with odd content.
    fn encode_doc(doc: &Value) -> String {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(doc.to_string().as_bytes()).unwrap();
        url_safe(&STANDARD.encode(z.finish().unwrap()))
    }

    #[test]
    fn refusals_map_to_service_codes() {
        let good = generate(APP, &key(), "admin", 3600, T0);
        let other_key = SecretKey::new("another-key").unwrap();
        let forged_time = {
            // Same HMAC, but TLS.time pushed forward to extend validity: must fail the HMAC.
            let d = verify(&good, APP, &key(), "admin", T0).unwrap();
            encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin",
                "TLS.sdkappid": APP, "TLS.expire": 3600, "TLS.time": T0 + 100, "TLS.sig": d.sig}))
        };
        let k0 = key();
        let cases: Vec<(&str, String, u64, &SecretKey, &str, UnixTime, i64)> = vec![
            ("expired", good.clone(), APP, &k0, "admin", T0 + 3601, 70001),
            (
                "last valid second",
                good.clone(),
                APP,
                &k0,
                "admin",
                T0 + 3600,
                0,
            ),
            (
                "wrong identifier",
                good.clone(),
                APP,
                &k0,
                "root",
                T0,
                70013,
            ),
            (
                "wrong sdkappid",
                good.clone(),
                APP + 1,
                &k0,
                "admin",
                T0,
                70014,
            ),
            (
                "wrong key",
                good.clone(),
                APP,
                &other_key,
                "admin",
                T0,
                70009,
            ),
            ("forged time", forged_time, APP, &k0, "admin", T0, 70009),
            (
                "garbage",
                "%%%not a sig%%%".into(),
                APP,
                &k0,
                "admin",
                T0,
                70003,
            ),
            ("empty", String::new(), APP, &k0, "admin", T0, 70003),
            (
                "base64 but not zlib",
                "aGVsbG8_".into(),
                APP,
                &k0,
                "admin",
                T0,
                70003,
            ),
            (
                "zlib but not JSON",
                {
                    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
                    z.write_all(b"not json").unwrap();
                    url_safe(&STANDARD.encode(z.finish().unwrap()))
                },
                APP,
                &k0,
                "admin",
                T0,
                70003,
            ),
            (
                "missing field",
                encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin"})),
                APP,
                &k0,
                "admin",
                T0,
                70003,
            ),
            (
                "sdkappid of the wrong type",
                encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin",
                    "TLS.sdkappid": true, "TLS.expire": 1, "TLS.time": 1, "TLS.sig": "x"})),
                APP,
                &k0,
                "admin",
                T0,
                70003,
            ),
        ];
        for (name, sig, app, k, ident, now, want) in cases {
            let got = verify(&sig, app, k, ident, now).map_or_else(|e| e.code(), |_| 0);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn tampered_sig_is_refused() {
        let good = generate(APP, &key(), "admin", 3600, T0);
        // Flip one character in the middle: the result is either undecodable or fails the HMAC.
        let mut chars: Vec<char> = good.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        let err = verify(&tampered, APP, &key(), "admin", T0).unwrap_err();
        assert!(
            matches!(err.code(), 70003 | 70009),
            "tampered sig gave {err:?}"
        );
    }

    #[test]
    fn numeric_strings_are_tolerated() {
        let sig = tls_sig(APP, &key(), "admin", T0, 60);
        let s = encode_doc(&json!({"TLS.ver": "2.0", "TLS.identifier": "admin",
            "TLS.sdkappid": APP.to_string(), "TLS.expire": "60", "TLS.time": T0.to_string(),
            "TLS.sig": sig}));
        verify(&s, APP, &key(), "admin", T0).unwrap();
    }

    /// The key's text is the HMAC key: anything but 64 lower-case hex digits is almost certainly
    /// a copy mistake, warned about without quoting the key.
    #[test]
    fn a_key_that_is_not_64_lower_case_hex_digits_is_warned_about() {
        assert_eq!(key().shape_warning(), None);
        let short = SecretKey::parse(&KEY.as_bytes()[..63], "test").unwrap();
        let warning = short.shape_warning().expect("63 digits");
        assert!(warning.contains("has 63 hexadecimal digits"), "{warning}");
        let double = SecretKey::parse(format!("{KEY}{KEY}").as_bytes(), "test").unwrap();
        assert!(double.shape_warning().unwrap().contains("128 hexadecimal"));
        let upper = SecretKey::parse(KEY.to_uppercase().as_bytes(), "test").unwrap();
        let warning = upper.shape_warning().expect("upper case");
        assert!(warning.contains("upper-case letters"), "{warning}");
        assert!(!warning.contains("hexadecimal digits, not"), "{warning}");
        for w in [short, double, upper]
            .iter()
            .filter_map(SecretKey::shape_warning)
        {
            assert!(
                !w.contains(&KEY[..8]) && !w.contains(&KEY[..8].to_uppercase()),
                "{w}"
            );
        }
    }

    #[test]
    fn secret_key_never_prints() {
        let k = key();
        assert_eq!(format!("{k:?}"), "SecretKey(***)");
        assert_eq!(format!("{:#?}", Some(&k)), "Some(\n    SecretKey(***),\n)");
    }

    #[test]
    fn secret_sources_precedence_and_trimming() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret.key");
        std::fs::write(&file, "aaaa\n").unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("secret-key"), "  cccc \r\n").unwrap();

        let load = |f: Option<&Path>, e: Option<&str>, c: Option<&Path>| {
            SecretKey::from_sources(f, e.map(str::to_owned), c)
        };
        let all = load(Some(&file), Some("bbbb"), Some(&creds)).unwrap();
        assert_eq!(all.expose(), "aaaa");
        let env = load(None, Some("bbbb\n"), Some(&creds)).unwrap();
        assert_eq!(env.expose(), "bbbb");
        let cred = load(None, None, Some(&creds)).unwrap();
        assert_eq!(cred.expose(), "cccc");
        assert!(matches!(load(None, None, None), Err(SecretError::Missing)));
    }

    #[test]
    fn secret_source_errors_name_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, " \n").unwrap();
        let e = SecretKey::from_sources(Some(&empty), None, None).unwrap_err();
        assert!(matches!(e, SecretError::Empty { .. }));
        assert!(e.to_string().contains("empty.key"), "{e}");

        let missing = dir.path().join("missing.key");
        let e = SecretKey::from_sources(Some(&missing), Some("abcd".into()), None).unwrap_err();
        assert!(
            matches!(e, SecretError::Read { .. }),
            "a named file is not skipped"
        );
        assert!(e.to_string().contains("missing.key"), "{e}");

        let binary = dir.path().join("binary.key");
        std::fs::write(&binary, [0xff, 0xfe, b'h', b'u', b'n', b't', b'e', b'r']).unwrap();
        let e = SecretKey::from_sources(Some(&binary), None, None).unwrap_err();
        assert!(e.to_string().contains("binary.key"), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter"), "{e:?}");

        let e = SecretKey::from_sources(None, Some("\n".into()), None).unwrap_err();
        assert!(e.to_string().contains(SECRET_KEY_ENV), "{e}");

        let creds = dir.path().join("nocreds");
        let e = SecretKey::from_sources(None, None, Some(&creds)).unwrap_err();
        assert!(e.to_string().contains("secret-key"), "{e}");
        assert!(SecretKey::new("  ").is_err());
    }

    /// Issue 7, "the secret key": each way a pasted key goes wrong is refused with its reason,
    /// from every source, and no message carries any part of the key.
    #[test]
    fn secret_key_refuses_bom_quotes_prefix_second_line_and_non_hex_without_printing_it() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"\xEF\xBB\xBF5bd2850fff",
                "starts with a UTF-8 byte-order mark",
            ),
            (b"\"5bd2850fff\"\n", "is wrapped in quotes"),
            (b"'5bd2850fff'", "is wrapped in quotes"),
            (b"KEY=5bd2850fff\n", "starts with a `NAME=` prefix"),
            (
                b"export SECRET_KEY=5bd2850fff",
                "starts with a `NAME=` prefix",
            ),
            (b"5bd2850fff\n5bd2850fff\n", "contains a second line"),
            (b"5bd2850fff # prod", "is not hex: character 11 is a space"),
            (
                b"5bd2850fffKz",
                "is not hex: character 11 is a letter other than a-f",
            ),
            (
                b"5bd2850fff\xC2\xA0",
                "is not hex: character 11 is a non-ASCII space",
            ),
            (b"5bd2-850fff", "is not hex: character 5 is '-'"),
            (b"0x5bd2850fff", "starts with 0x"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        for (text, reason) in cases {
            let file = dir.path().join("k");
            std::fs::write(&file, text).unwrap();
            std::fs::write(creds.join(CREDENTIAL_NAME), text).unwrap();
            let from_file = SecretKey::from_sources(Some(&file), None, None);
            let from_creds = SecretKey::from_sources(None, None, Some(&creds));
            let env = String::from_utf8(text.to_vec()).unwrap();
            let from_env = SecretKey::from_sources(None, Some(env), None);
            for (source, result) in [
                ("k", from_file),
                ("secret-key", from_creds),
                (SECRET_KEY_ENV, from_env),
            ] {
                let e = result.unwrap_err();
                let shown = format!("{e} {e:?}");
                assert!(shown.contains(reason), "{text:?}: {shown}");
                assert!(shown.contains(source), "{text:?}: {shown}");
                for secret in ["5bd2", "850f", "Kz"] {
                    assert!(!shown.contains(secret), "{text:?} leaked: {shown}");
                }
            }
        }
    }

    #[test]
    fn secret_key_accepts_hex_with_a_trailing_newline_and_keeps_the_vectors() {
        let k = SecretKey::parse(format!("{KEY}\n").as_bytes(), "test").unwrap();
        assert_eq!(k, key());
        let k = SecretKey::parse(format!("  {}\r\n", KEY.to_uppercase()).as_bytes(), "t").unwrap();
        assert_eq!(
            k.expose(),
            KEY.to_uppercase(),
            "case is kept: it is hashed as written"
        );
        // Reference section 2's vectors, with the key read the way users supply it.
        let pasted = SecretKey::parse(format!("{KEY}\n").as_bytes(), "t").unwrap();
        let sig = tls_sig(APP, &pasted, "xiaojun", T0, 15_552_000);
        assert_eq!(sig, "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=");
    }

    #[test]
    fn secret_key_file_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = SecretKey::from_sources(Some(Path::new("/dev/zero")), None, None).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let big = dir.path().join("big.key");
        std::fs::write(&big, "a".repeat(1 << 20)).unwrap();
        let e = SecretKey::from_sources(Some(&big), None, None).unwrap_err();
        assert!(e.to_string().contains("larger than the limit"), "{e}");
    }

    #[test]
    fn key_file_permission_warning_is_for_others_group_writes_and_foreign_groups() {
        let own = Some(10001);
        // (mode, the file's group, loose)
        let cases = [
            (0o600, 10001, false),
            (0o400, 0, false),
            // The Kubernetes Secret mount: root-owned, group fsGroup = the process's group.
            (0o440, 10001, false),
            (0o640, 10001, false),
            (0o440, 100, true),
            (0o640, 100, true),
            (0o660, 10001, true),
            (0o604, 10001, true),
            (0o644, 10001, true),
            (0o444, 10001, true),
        ];
        for (mode, gid, loose) in cases {
            assert_eq!(is_loose(mode, gid, own), loose, "{mode:o} gid {gid}");
        }
        // When the process's group cannot be told, any group bit is loose.
        assert!(is_loose(0o440, 10001, None));
        assert_eq!(
            effective_gid_from_status("Name:\tx\nGid:\t5\t10001\t10001\t10001\n"),
            Some(10001)
        );
        assert_eq!(effective_gid_from_status("Name:\tx\n"), None);
    }
}
