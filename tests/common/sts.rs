//! A stand-in for AWS STS on loopback, over HTTPS, for the web identity tests (SPEC 11: credentials
//! from the crate's standard chain, web identity / OIDC tokens included).
//!
//! It answers `AssumeRoleWithWebIdentity` as the STS API reference documents it: the documented
//! response XML with temporary credentials (the S3 server's identity, a session token, an
//! expiry), or `403` with the documented `ErrorResponse` (`AccessDenied`) when the role or the
//! token is not the expected one. It binds `127.0.0.1:0` and reports the address it got. Its
//! certificate is made at start by a CA of its own, written as PEM to [`Sts::ca_file`]: a client
//! trusts it through `SSL_CERT_FILE`, the standard setting for a private (corporate) CA, so the
//! client under test takes its ordinary path (the crate refuses a plain-http STS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the STS expects and what it hands out.
pub struct Role {
    /// The only `RoleArn` it accepts.
    pub arn: String,
    /// The `WebIdentityToken` it accepts (the token file's content); [`Sts::accept`] changes it.
    pub token: String,
    /// How long the credentials it hands out are valid.
    pub ttl: Duration,
    /// The temporary credentials it answers with: access key, secret key, session token.
    pub credentials: (String, String, String),
}

/// A running fake STS.
pub struct Sts {
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The CA certificate (PEM) that signed the server's certificate: give it as `SSL_CERT_FILE`.
    pub ca_file: PathBuf,
    counts: Arc<Counts>,
    /// The tokens it accepts now.
    accepted: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// What the STS has seen.
#[derive(Default)]
struct Counts {
    /// Requests answered with credentials.
    granted: AtomicUsize,
    /// Requests refused (wrong action, role or token).
    refused: AtomicUsize,
    /// Requests answered with credentials, by token.
    granted_for: Mutex<std::collections::BTreeMap<String, usize>>,
    /// What each request asked for, for a failing test's message (never the token itself).
    log: Mutex<Vec<String>>,
}

impl Sts {
    /// Starts the STS for `role`.
    pub fn start(role: Role) -> Sts {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "marksync test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let tls = Arc::new(tls);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let accepted = Arc::new(Mutex::new(vec![role.token.clone()]));
        let role = Arc::new(role);
        let (c, a) = (counts.clone(), accepted.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let (tls, role, c, a) = (tls.clone(), role.clone(), c.clone(), a.clone());
                std::thread::spawn(move || serve(tcp, tls, &role, &a, &c));
            }
        });
        Sts {
            endpoint: format!("https://{addr}"),
            ca_file,
            counts,
            accepted,
            _dir: dir,
        }
    }

    /// Requests answered with credentials so far.
    pub fn granted(&self) -> usize {
        self.counts.granted.load(Ordering::SeqCst)
    }

    /// Requests answered with credentials for `token` so far.
    pub fn granted_for(&self, token: &str) -> usize {
        let map = self.counts.granted_for.lock().unwrap();
        map.get(token).copied().unwrap_or(0)
    }

    /// From now on, accepts exactly `tokens` (as an identity provider does while it rotates a
    /// token: the old and the new one for a while, then the new one).
    pub fn accept(&self, tokens: &[&str]) {
        *self.accepted.lock().unwrap() = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// Requests refused so far.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }

    /// One line per request: the action, the role and whether the token matched.
    pub fn log(&self) -> Vec<String> {
        self.counts.log.lock().unwrap().clone()
    }
}

/// Serves one connection: one request, one answer, then the connection closes. A client that
/// does not trust the certificate ends the handshake; nothing is counted then.
fn serve(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    role: &Role,
    accepted: &Mutex<Vec<String>>,
    counts: &Counts,
) {
    let limit = Some(Duration::from_secs(10));
    tcp.set_read_timeout(limit).unwrap();
    tcp.set_write_timeout(limit).unwrap();
    let conn = rustls::ServerConnection::new(tls).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let Some((target, body)) = read_request(&mut stream) else {
        return;
    };
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params: Vec<(String, String)> = [query, body.as_str()]
        .iter()
        .flat_map(|part| part.split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let action = get("Action").unwrap_or("");
    let arn = get("RoleArn").unwrap_or("");
    let token = get("WebIdentityToken").unwrap_or("");
    let token_ok = accepted.lock().unwrap().iter().any(|t| t == token);
    counts.log.lock().unwrap().push(format!(
        "Action={action} RoleArn={arn} token {}",
        if token_ok { "matches" } else { "differs" }
    ));
    let (status, xml) = if action == "AssumeRoleWithWebIdentity" && arn == role.arn && token_ok {
        counts.granted.fetch_add(1, Ordering::SeqCst);
        *counts
            .granted_for
            .lock()
            .unwrap()
            .entry(token.to_string())
            .or_default() += 1;
        (
            "200 OK",
            granted(role, get("RoleSessionName").unwrap_or("")),
        )
    } else {
        counts.refused.fetch_add(1, Ordering::SeqCst);
        ("403 Forbidden", ACCESS_DENIED.to_string())
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    );
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// Reads one HTTP/1.1 request: its target (path and query) and its body.
fn read_request(stream: &mut impl Read) -> Option<(String, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((target, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The documented `AssumeRoleWithWebIdentity` answer, credentials valid for the role's `ttl`.
fn granted(role: &Role, session: &str) -> String {
    let (key, secret, token) = &role.credentials;
    let expires = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + role.ttl);
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:marksync:marksync</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>{arn}/{session}</Arn>
      <AssumedRoleId>AROATEST:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expires}</Expiration>
      <AccessKeyId>{key}</AccessKeyId>
    </Credentials>
    <Provider>oidc.test.invalid</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
        arn = role.arn,
    )
}

/// The documented error answer for a token or role STS does not accept.
const ACCESS_DENIED: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>AccessDenied</Code>
    <Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>
  </Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#;
