//! The address a daemon's peers reach its listener at (`run --advertise`, SPEC 11).
//!
//! A daemon on a remote state records where its callbacks go in the state's lock; a standby
//! relays the callbacks it is sent there. The bound address is right when the listener binds
//! one interface, and useless when it binds all of them (`0.0.0.0:9464` is, from a peer, the
//! peer itself): in a Kubernetes pod or behind NAT, the daemon is told the address its peers
//! use, such as the pod IP from the downward API. A host without a port takes the bound port.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Where peers reach this daemon: an IP address or a DNS name, with or without a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertise {
    host: Host,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Why an `--advertise` value cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    /// Nothing given.
    #[error(
        "the address is empty: give HOST or HOST:PORT, such as 10.0.3.7 or node-a.internal:9464"
    )]
    Empty,
    /// A wildcard (`0.0.0.0`, `::`) is every interface of the peer itself.
    #[error(
        "{0} is a wildcard address: a peer would reach itself; give this host's address as the others reach it"
    )]
    Wildcard(String),
    /// Port 0 is no port a peer can connect to.
    #[error(
        "{0}: port 0 cannot be reached; give the port the listener is reached at, or none to use the bound port"
    )]
    PortZero(String),
    /// Not an IP address, nor a DNS name (letters, digits, `-` and `.`), with an optional port.
    #[error(
        "{0:?} is not HOST or HOST:PORT (an IP address or a DNS name, and a port from 1 to 65535)"
    )]
    Malformed(String),
}

impl FromStr for Advertise {
    type Err = AdvertiseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AdvertiseError::Empty);
        }
        let malformed = || AdvertiseError::Malformed(s.to_owned());
        let (host, port) = if let Ok(a) = s.parse::<SocketAddr>() {
            (Host::Ip(a.ip()), Some(a.port()))
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            (Host::Ip(ip), None)
        } else if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            (Host::Ip(inner.parse().map_err(|_| malformed())?), None)
        } else {
            let (name, port) = match s.rsplit_once(':') {
                Some((name, port)) => (name, Some(port.parse::<u16>().map_err(|_| malformed())?)),
                None => (s, None),
            };
            if !is_dns_name(name) {
                return Err(malformed());
            }
            (Host::Name(name.to_ascii_lowercase()), port)
        };
        if let Host::Ip(ip) = host
            && ip.is_unspecified()
        {
            return Err(AdvertiseError::Wildcard(s.to_owned()));
        }
        if port == Some(0) {
            return Err(AdvertiseError::PortZero(s.to_owned()));
        }
        Ok(Advertise { host, port })
    }
}

/// A host name as DNS has it (RFC 1123): dot-separated labels of 1 to 63 letters, digits and
/// hyphens, not starting or ending with a hyphen, 253 characters at most, and not all digits
/// (that would be a malformed IP address).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && !name.chars().all(|c| c.is_ascii_digit() || c == '.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Advertise {
    /// The `host:port` peers connect to, the bound port where none was given.
    pub fn address(&self, bound: SocketAddr) -> String {
        let port = self.port.unwrap_or(bound.port());
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, port).to_string(),
            Host::Name(name) => format!("{name}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> SocketAddr {
        "0.0.0.0:9464".parse().unwrap()
    }

    fn address(s: &str) -> Result<String, AdvertiseError> {
        s.parse::<Advertise>().map(|a| a.address(bound()))
    }

    #[test]
    fn a_host_without_a_port_takes_the_bound_port() {
        assert_eq!(address("10.0.3.7").unwrap(), "10.0.3.7:9464");
        assert_eq!(address("fd00::7").unwrap(), "[fd00::7]:9464");
        assert_eq!(address("[fd00::7]").unwrap(), "[fd00::7]:9464");
        assert_eq!(address("Node-A.internal").unwrap(), "node-a.internal:9464");
        assert_eq!(
            address("node-a.internal.").unwrap(),
            "node-a.internal.:9464"
        );
    }

    #[test]
    fn a_port_given_is_kept() {
        assert_eq!(address("10.0.3.7:80").unwrap(), "10.0.3.7:80");
        assert_eq!(address("[fd00::7]:80").unwrap(), "[fd00::7]:80");
        assert_eq!(
            address("marksync-0.marksync:8080").unwrap(),
            "marksync-0.marksync:8080"
        );
        assert_eq!(address(" 10.0.3.7:80\n").unwrap(), "10.0.3.7:80");
    }

    #[test]
    fn what_a_peer_cannot_reach_is_refused() {
        for wildcard in ["0.0.0.0", "0.0.0.0:9464", "::", "[::]:9464", "[::]"] {
            assert!(
                matches!(address(wildcard), Err(AdvertiseError::Wildcard(_))),
                "{wildcard}"
            );
        }
        for zero in ["10.0.3.7:0", "host:0", "[fd00::7]:0"] {
            assert!(
                matches!(address(zero), Err(AdvertiseError::PortZero(_))),
                "{zero}"
            );
        }
        assert_eq!(address("  "), Err(AdvertiseError::Empty));
        for bad in [
            "http://10.0.3.7:9464",
            "10.0.3.7:9464/callback",
            "10.0.3.7:65536",
            "10.0.3.7:port",
            "300.1.2.3",
            "1.2.3",
            "-node",
            "node-",
            "no_underscores",
            "a..b",
            "${POD_IP}:9464",
            "$(POD_IP)",
            "[fd00::7",
            ":9464",
        ] {
            assert!(
                matches!(address(bad), Err(AdvertiseError::Malformed(_))),
                "{bad}"
            );
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(matches!(address(&long), Err(AdvertiseError::Malformed(_))));
    }
}
