//! Where the service is reached: its regions (reference section 1), their main and backup
//! domains, and the https-or-loopback rule every base URL passes.
//!
//! Architecture invariant: the one place that knows region names and domains; no I/O.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the service lives: the eight regions of reference section 1.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Region {
    /// `console.tim.qq.com` (the default, as in the vendor's docs).
    #[default]
    China,
    /// `adminapisgp.im.qcloud.com`.
    Singapore,
    /// `adminapikr.im.qcloud.com`.
    Seoul,
    /// `adminapijpn.im.qcloud.com`.
    Tokyo,
    /// `adminapiger.im.qcloud.com`.
    Frankfurt,
    /// `adminapiind.im.qcloud.com`.
    Mumbai,
    /// `adminapiusa.im.qcloud.com`.
    SiliconValley,
    /// `adminapiidn.im.qcloud.com`.
    Jakarta,
}

impl Region {
    /// Every region, for help texts and tests.
    pub const ALL: [Region; 8] = [
        Region::China,
        Region::Singapore,
        Region::Seoul,
        Region::Tokyo,
        Region::Frankfurt,
        Region::Mumbai,
        Region::SiliconValley,
        Region::Jakarta,
    ];

    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Region::China => "china",
            Region::Singapore => "singapore",
            Region::Seoul => "seoul",
            Region::Tokyo => "tokyo",
            Region::Frankfurt => "frankfurt",
            Region::Mumbai => "mumbai",
            Region::SiliconValley => "silicon-valley",
            Region::Jakarta => "jakarta",
        }
    }

    /// The REST API's domain in this region.
    pub fn domain(self) -> &'static str {
        match self {
            Region::China => "console.tim.qq.com",
            Region::Singapore => "adminapisgp.im.qcloud.com",
            Region::Seoul => "adminapikr.im.qcloud.com",
            Region::Tokyo => "adminapijpn.im.qcloud.com",
            Region::Frankfurt => "adminapiger.im.qcloud.com",
            Region::Mumbai => "adminapiind.im.qcloud.com",
            Region::SiliconValley => "adminapiusa.im.qcloud.com",
            Region::Jakarta => "adminapiidn.im.qcloud.com",
        }
    }

    /// The vendor's backup domain for when DNS of the main one fails (set it as `endpoint`).
    pub fn backup_domain(self) -> &'static str {
        match self {
            Region::China => "adminapi.my-imcloud.com",
            Region::Singapore => "adminapisgp.my-imcloud.com",
            Region::Seoul => "adminapikr.my-imcloud.com",
            Region::Tokyo => "adminapijpn.my-imcloud.com",
            Region::Frankfurt => "adminapiger.my-imcloud.com",
            Region::Mumbai => "adminapiind.my-imcloud.com",
            Region::SiliconValley => "adminapiusa.my-imcloud.com",
            Region::Jakarta => "adminapiidn.my-imcloud.com",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Debug-printed as its config name (`"singapore"`), as the config corpus records it.
impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.name(), f)
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Region::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Region::ALL.iter().map(|r| r.name()).collect();
                format!("unknown region {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// Why an endpoint cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL at all.
    #[error("endpoint {endpoint:?} is not a valid URL: {reason}")]
    Invalid {
        /// What was given.
        endpoint: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Plain http to a host that is not loopback would send the UserSig in clear text.
    #[error(
        "endpoint host {host:?}: plain http is only allowed to a loopback address \
         (127.0.0.0/8, ::1, localhost); use https"
    )]
    InsecureHttp {
        /// The offending host.
        host: String,
    },
    /// A scheme other than https or http.
    #[error("endpoint scheme {scheme:?} is not supported; use https")]
    Scheme {
        /// The offending scheme.
        scheme: String,
    },
    /// Credentials, a query or a fragment: the client builds its own query, and credentials in a
    /// URL end up in logs. (The URL itself is not echoed, since it may hold a password.)
    #[error("endpoint host {host:?}: the URL must not carry credentials, a query or a fragment")]
    Extras {
        /// The host, for orientation.
        host: String,
    },
}

/// The base URL for a region, or the validated `endpoint` override, without a trailing slash.
///
/// https is required, except http to a loopback address (the emulator, a local test server),
/// because the UserSig rides in the query string.
pub fn endpoint_url(
    region: Region,
    endpoint_override: Option<&str>,
) -> Result<String, EndpointError> {
    match endpoint_override {
        None => Ok(format!("https://{}", region.domain())),
        Some(e) => validate_base_url(e),
    }
}

/// Checks a base URL against the https-or-loopback rule and normalises it.
pub(crate) fn validate_base_url(endpoint: &str) -> Result<String, EndpointError> {
    let url = reqwest::Url::parse(endpoint.trim()).map_err(|e| EndpointError::Invalid {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })?;
    let host = url.host_str().unwrap_or_default().to_owned();
    if host.is_empty() {
        return Err(EndpointError::Invalid {
            endpoint: endpoint.to_owned(),
            reason: "no host".into(),
        });
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(EndpointError::Extras { host });
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(EndpointError::InsecureHttp { host }),
        other => {
            return Err(EndpointError::Scheme {
                scheme: other.to_owned(),
            });
        }
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// 127.0.0.0/8, ::1 (as the URL spells it, in brackets), or `localhost`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

/// The backup base URL for a region (reference section 1), or the validated `backup_endpoint`:
/// with no `endpoint` override the region's backup domain (or `backup_endpoint` when set); with
/// an explicit `endpoint`, only `backup_endpoint`, and none without it.
pub fn backup_endpoint_url(
    region: Region,
    endpoint_override: Option<&str>,
    backup_override: Option<&str>,
) -> Result<Option<String>, EndpointError> {
    match (endpoint_override, backup_override) {
        (_, Some(b)) => validate_base_url(b).map(Some),
        (None, None) => Ok(Some(format!("https://{}", region.backup_domain()))),
        (Some(_), None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let check = |e: Option<&str>, want: Result<&str, &str>| {
            let got = endpoint_url(Region::Singapore, e);
            match (got, want) {
                (Ok(u), Ok(w)) => assert_eq!(u, w, "{e:?}"),
                (Err(err), Err(w)) => assert!(err.to_string().contains(w), "{e:?}: {err}"),
                (got, want) => panic!("{e:?}: got {got:?}, want {want:?}"),
            }
        };
        check(None, Ok("https://adminapisgp.im.qcloud.com"));
        check(
            Some("https://adminapisgp.my-imcloud.com/"),
            Ok("https://adminapisgp.my-imcloud.com"),
        );
        check(
            Some("https://proxy.example/tim/"),
            Ok("https://proxy.example/tim"),
        );
        check(Some("http://127.0.0.1:8080"), Ok("http://127.0.0.1:8080"));
        check(Some("http://127.8.9.10:1"), Ok("http://127.8.9.10:1"));
        check(Some("http://[::1]:9000"), Ok("http://[::1]:9000"));
        check(Some("http://localhost:9000"), Ok("http://localhost:9000"));
        check(Some("http://LOCALHOST:9000"), Ok("http://localhost:9000"));
        check(Some("http://example.com"), Err("plain http"));
        check(Some("http://10.0.0.1"), Err("plain http"));
        check(Some("http://[::2]"), Err("plain http"));
        check(Some("http://127.0.0.1.nip.io"), Err("plain http"));
        check(Some("ftp://127.0.0.1"), Err("scheme"));
        check(Some("https://user:pw@example.com"), Err("credentials"));
        check(Some("https://example.com/?usersig=x"), Err("query"));
        check(Some("not a url"), Err("not a valid URL"));
        let e = endpoint_url(Region::China, Some("https://user:hunter2@example.com")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn regions() {
        for r in Region::ALL {
            assert_eq!(r.name().parse::<Region>(), Ok(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.name()));
            assert!(r.domain().ends_with(".im.qcloud.com") || r == Region::China);
            assert!(r.backup_domain().ends_with(".my-imcloud.com"));
        }
        assert_eq!(Region::default().domain(), "console.tim.qq.com");
        assert!(
            "mars"
                .parse::<Region>()
                .unwrap_err()
                .contains("silicon-valley")
        );
    }
}
