//! UserSig verification the way the service does it (reference section 2, "Verification").
//!
//! Temporary: this is replaced by `tim::usersig::verify` when the `usersig` branch is merged. It
//! lives here, private to the emulator, only so the two branches do not block each other; the
//! error codes and the order of the checks are the same as that function's.

use std::io::Read;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::UnixTime;

/// The largest inflated sig we accept. Real sigs are a few hundred bytes; the bound stops a
/// compression bomb in the query string from eating the emulator's memory.
const MAX_INFLATED_BYTES: u64 = 16 * 1024;

/// Standard alphabet, padding optional: some libraries strip the `=` before the `_` swap.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a UserSig was refused; each maps to the service's public error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigError {
    /// Not base64, not zlib, not JSON, or a `TLS.*` field missing or of the wrong type.
    #[error("UserSig is not parsable: {0}")]
    Unparsable(&'static str),
    /// `now > TLS.time + TLS.expire`.
    #[error("UserSig expired")]
    Expired,
    /// The sig was made for another identifier than the `identifier` query parameter.
    #[error("UserSig identifier does not match the request's identifier")]
    IdentifierMismatch,
    /// The sig was made for another SDKAppID than the `sdkappid` query parameter.
    #[error("UserSig SDKAppID does not match the request's sdkappid")]
    SdkAppIdMismatch,
    /// The HMAC does not match: wrong secret key (or a tampered sig).
    #[error("UserSig signature check failed")]
    HmacMismatch,
}

impl SigError {
    /// The service's public error code for this failure (reference section 6).
    pub(crate) fn code(&self) -> i64 {
        match self {
            SigError::Unparsable(_) => 70003,
            SigError::Expired => 70001,
            SigError::IdentifierMismatch => 70013,
            SigError::SdkAppIdMismatch => 70014,
            SigError::HmacMismatch => 70009,
        }
    }
}

/// The HMAC-SHA256 of the sig's content string: step 1 and 2 of the generation algorithm.
pub(crate) fn hmac_content(
    key: &str,
    identifier: &str,
    sdkappid: u64,
    time: i64,
    expire: i64,
) -> Hmac<Sha256> {
    // new_from_slice accepts keys of any length for HMAC; the error branch cannot be taken, but
    // an empty-key fallback keeps this total instead of panicking.
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(
        format!(
            "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
        )
        .as_bytes(),
    );
    mac
}

/// Verifies `sig` for (`sdkappid`, `identifier`) at virtual time `now`.
///
/// The checks run in the reference's order: parse, SDKAppID, identifier, expiry, HMAC. The HMAC
/// comparison is constant-time.
pub(crate) fn verify_usersig(
    sig: &str,
    sdkappid: u64,
    key: &str,
    identifier: &str,
    now: UnixTime,
) -> Result<(), SigError> {
    let b64: String = sig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            other => other,
        })
        .collect();
    let compressed = STANDARD_LENIENT
        .decode(b64.as_bytes())
        .map_err(|_| SigError::Unparsable("not base64"))?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(MAX_INFLATED_BYTES)
        .read_to_end(&mut json)
        .map_err(|_| SigError::Unparsable("not a zlib stream"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| SigError::Unparsable("not JSON"))?;

    let sig_app = int_field(&doc, "TLS.sdkappid")?;
    let sig_identifier = doc
        .get("TLS.identifier")
        .and_then(serde_json::Value::as_str)
        .ok_or(SigError::Unparsable("TLS.identifier missing"))?;
    let time = int_field(&doc, "TLS.time")?;
    let expire = int_field(&doc, "TLS.expire")?;
    let mac_b64 = doc
        .get("TLS.sig")
        .and_then(serde_json::Value::as_str)
        .ok_or(SigError::Unparsable("TLS.sig missing"))?;

    if u64::try_from(sig_app).ok() != Some(sdkappid) {
        return Err(SigError::SdkAppIdMismatch);
    }
    if sig_identifier != identifier {
        return Err(SigError::IdentifierMismatch);
    }
    if i128::from(now) > i128::from(time) + i128::from(expire) {
        return Err(SigError::Expired);
    }
    let mac_bytes = STANDARD_LENIENT
        .decode(mac_b64.as_bytes())
        .map_err(|_| SigError::HmacMismatch)?;
    hmac_content(key, sig_identifier, sdkappid, time, expire)
        .verify_slice(&mac_bytes)
        .map_err(|_| SigError::HmacMismatch)
}

/// A `TLS.*` integer field. The official libraries write numbers; a numeric string is tolerated
/// because older ones did.
fn int_field(doc: &serde_json::Value, name: &'static str) -> Result<i64, SigError> {
    match doc.get(name) {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or(SigError::Unparsable(name))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const APP: u64 = 1_400_000_000;

    /// Packs a sig JSON the way TLSSigAPIv2 does (steps 3-5), with `tls_sig` as given.
    fn pack(identifier: &str, app: u64, time: i64, expire: i64, tls_sig: &str) -> String {
        let doc = serde_json::json!({
            "TLS.ver": "2.0", "TLS.identifier": identifier, "TLS.sdkappid": app,
            "TLS.expire": expire, "TLS.time": time, "TLS.sig": tls_sig,
        });
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(doc.to_string().as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(z.finish().unwrap())
            .replace('+', "*")
            .replace('/', "-")
            .replace('=', "_")
    }

    fn make(identifier: &str, app: u64, key: &str, time: i64, expire: i64) -> String {
        let mac = hmac_content(key, identifier, app, time, expire)
            .finalize()
            .into_bytes();
        let tls_sig = base64::engine::general_purpose::STANDARD.encode(mac);
        pack(identifier, app, time, expire, &tls_sig)
    }

    #[test]
    fn content_hmac_matches_the_published_vectors() {
        for (id, expire, want) in [
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
        ] {
            let mac = hmac_content(KEY, id, APP, 1_700_000_000, expire)
                .finalize()
                .into_bytes();
            assert_eq!(
                base64::engine::general_purpose::STANDARD.encode(mac),
                want,
                "{id}"
            );
        }
    }

    #[test]
    fn a_sig_carrying_the_published_tls_sig_verifies() {
        let sig = pack(
            "administrator",
            APP,
            1_700_000_000,
            86_400,
            "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=",
        );
        assert_eq!(
            verify_usersig(&sig, APP, KEY, "administrator", 1_700_000_100),
            Ok(())
        );
    }

    #[test]
    fn each_failure_maps_to_its_code() {
        let t = 1_700_000_000;
        let good = make("admin", APP, KEY, t, 3600);
        let check = |sig: &str, app: u64, id: &str, now: i64| {
            verify_usersig(sig, app, KEY, id, now).map_err(|e| e.code())
        };
        assert_eq!(check(&good, APP, "admin", t + 3600), Ok(()));
        assert_eq!(check(&good, APP, "admin", t + 3601), Err(70001));
        assert_eq!(check(&good, APP, "other", t), Err(70013));
        assert_eq!(check(&good, APP + 1, "admin", t), Err(70014));
        assert_eq!(
            check(&make("admin", APP, "wrong", t, 3600), APP, "admin", t),
            Err(70009)
        );
        assert_eq!(
            check(&pack("admin", APP, t, 3600, "AAAA"), APP, "admin", t),
            Err(70009)
        );
        for garbage in ["", "!!!", "eJw_", "aGVsbG8_", &good[..good.len() / 2]] {
            assert_eq!(check(garbage, APP, "admin", t), Err(70003), "{garbage:?}");
        }
        // A zlib stream of something that is not a sig object.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"[1,2]").unwrap();
        let not_obj = base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap());
        assert_eq!(
            check(&not_obj.replace('=', "_"), APP, "admin", t),
            Err(70003)
        );
    }

    #[test]
    fn tampering_with_the_time_breaks_the_hmac() {
        let t = 1_700_000_000;
        let mac = hmac_content(KEY, "admin", APP, t, 60)
            .finalize()
            .into_bytes();
        let tls_sig = base64::engine::general_purpose::STANDARD.encode(mac);
        let extended = pack("admin", APP, t, 86_400, &tls_sig);
        assert_eq!(
            verify_usersig(&extended, APP, KEY, "admin", t + 100).map_err(|e| e.code()),
            Err(70009)
        );
    }
}
