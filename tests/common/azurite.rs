//! A real Azure Blob Storage API for the tests that claim `az://` behaviour (SPEC 11): Azurite,
//! Microsoft's official emulator (npm package `azurite`, pinned in `.ci/run`, which installs it
//! under `target/azurite`), one per test binary, with its well-known development account and a
//! container `marksync`; each test works under its own key prefix ([`Azurite::url`]).
//!
//! `azurite-blob` binds `127.0.0.1` port 0 and prints the address it got
//! ("successfully listens on http://127.0.0.1:PORT"); the test reads it from its log, so no port
//! is chosen and hoped free. It keeps its data in a temporary `--location`. It runs under a
//! shell that reads its stdin until end of file: when the test process ends, however it ends,
//! the pipe closes and the shell kills the emulator and removes its directory.
//!
//! When `azurite-blob` is missing, [`azurite`] returns `None` after a loud SKIPPED line; in CI it
//! panics instead (`require_tool`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hmac::Mac;

use super::{poll, require_tool};

/// The emulator's development account (fixed by Azurite and documented by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its well-known key (public: it is printed in Microsoft's documentation).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The container every test uses (under its own prefix).
pub const CONTAINER: &str = "marksync";

/// How long the emulator may take to start.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running `azurite-blob` on a loopback port it chose.
pub struct Azurite {
    /// The account's endpoint as a user configures it: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
    /// The emulator's address.
    pub addr: SocketAddr,
    /// Its directory (data, log).
    pub dir: PathBuf,
    /// Kept so the emulator lives as long as this value (the pipe closes when it goes).
    _child: Mutex<(Child, ChildStdin)>,
}

/// Runs the emulator, then waits for stdin to close and kills it.
const SCRIPT: &str = r#"
"$AZURITE" --blobHost 127.0.0.1 --blobPort 0 --location "$D/data" --skipApiVersionCheck \
  --disableTelemetry --silent </dev/null >"$D/azurite.log" 2>&1 &
a=$!
trap 'kill $a 2>/dev/null; wait $a 2>/dev/null; rm -rf "$D"' EXIT
read -r _ || true
"#;

/// `azurite-blob`: on `PATH`, or where `.ci/run` installs it (`target/azurite`).
fn program() -> String {
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/azurite/node_modules/.bin/azurite-blob");
    if installed.exists() {
        installed.display().to_string()
    } else {
        "azurite-blob".to_string()
    }
}

/// The shared emulator of this test binary, started on first use; `None` (after a loud SKIPPED
/// line) where `azurite-blob` is not installed, a panic in CI.
pub fn azurite() -> Option<&'static Azurite> {
    static SERVER: OnceLock<Option<Azurite>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let program = program();
            let why = "for the Azure Blob Storage tests (npm install --prefix target/azurite \
                       azurite, as .ci/run does)";
            if !require_tool(why, &program, &["--version"]) {
                return None;
            }
            Some(Azurite::start(&program))
        })
        .as_ref()
}

impl Azurite {
    fn start(program: &str) -> Azurite {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir_in(&base)
            .unwrap()
            .keep();
        let mut child = Command::new("sh")
            .args(["-c", SCRIPT])
            .env("AZURITE", program)
            .env("D", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("script.err")).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let log = dir.join("azurite.log");
        let addr: SocketAddr = poll(
            "Azurite to start (its log is azurite.log)",
            START_LIMIT,
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "Azurite exited ({status}) before it was ready (files in {}):\n{text}",
                        dir.display()
                    );
                }
                let (_, rest) = text.split_once("successfully listens on http://")?;
                rest.split_whitespace().next()?.parse().ok()
            },
        );
        let az = Azurite {
            endpoint: format!("http://{addr}/{ACCOUNT}"),
            addr,
            dir,
            _child: Mutex::new((child, stdin)),
        };
        az.create_container(CONTAINER);
        az
    }

    /// A fresh `az://marksync/PREFIX/name` no other test uses.
    pub fn url(&self, name: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("az://{CONTAINER}/t{}-{n}/{name}", std::process::id())
    }

    /// The standard Azure environment (what `object_store` reads, as a user sets it) that
    /// reaches this emulator with the development account.
    pub fn env(&self) -> Vec<(String, String)> {
        super::owned_env(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint.as_str()),
            ("AZURE_ALLOW_HTTP", "true"),
        ])
    }

    /// Sets [`Azurite::env`] on a command (and clears other `AZURE_` settings it may inherit).
    pub fn apply_env(&self, cmd: &mut Command) {
        super::replace_env(cmd, "AZURE", self.env());
    }

    /// The raw container, to damage or inspect objects as an outsider would.
    pub fn container(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(ACCOUNT)
                .with_access_key(ACCOUNT_KEY)
                .with_container_name(CONTAINER)
                .with_endpoint(self.endpoint.clone())
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }

    /// An account SAS token (query string) for the blob service, valid for a day: unlike the
    /// account key's signature, it does not cover the request's headers, so a relay may drop
    /// some ([`Azurite::forgetful`]).
    pub fn sas(&self) -> String {
        let (version, expiry) = ("2021-08-06", "2099-01-01T00:00:00Z");
        let (permissions, services, types, protocols) = ("rwdlac", "b", "sco", "https,http");
        let to_sign = format!(
            "{ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocols}\n{version}\n\n"
        );
        let signature = sign(&to_sign);
        let enc = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        format!(
            "sv={version}&ss={services}&srt={types}&sp={permissions}&se={}&spr={}&sig={}",
            enc(expiry),
            enc(protocols),
            enc(&signature)
        )
    }

    /// A relay to the emulator that renames `If-None-Match` and `If-Match` in requests (same
    /// length, so nothing else moves): a store that ignores conditional writes, as some
    /// gateways in front of a store do. Reach it with [`Azurite::sas`] (a shared-key signature
    /// covers those headers and would fail). Its endpoint, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn forgetful(&self) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/{ACCOUNT}", listener.local_addr().unwrap());
        let upstream = self.addr;
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                else {
                    continue;
                };
                forget_conditions(client, server);
            }
        });
        endpoint
    }

    /// Creates a container (Azure's "Create Container", signed with the account key; the
    /// object-store crate has no call for it).
    fn create_container(&self, name: &str) {
        let date = httpdate_now();
        let version = "2021-08-06";
        let path = format!("/{ACCOUNT}/{name}");
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}{path}\nrestype:container"
        );
        let signature = sign(&to_sign);
        let request = format!(
            "PUT {path}?restype=container HTTP/1.1\r\nHost: {}\r\nx-ms-date: {date}\r\n\
             x-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let status = answer.split_whitespace().nth(1).unwrap_or("");
        assert!(
            status == "201" || status == "409",
            "Azurite refused to create container {name}:\n{answer}"
        );
    }
}

/// The account key's HMAC-SHA256 of `to_sign`, in base64.
fn sign(to_sign: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&base64_decode(ACCOUNT_KEY)).unwrap();
    mac.update(to_sign.as_bytes());
    base64_encode(&mac.finalize().into_bytes())
}

/// Copies both ways between a client and the emulator, renaming the conditional headers of
/// requests; when either side ends, both connections are shut.
fn forget_conditions(client: TcpStream, server: TcpStream) {
    let shut = |a: &TcpStream, b: &TcpStream| {
        let (a, b) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        move || {
            let _ = a.shutdown(std::net::Shutdown::Both);
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
    };
    let (end, end2) = (shut(&client, &server), shut(&client, &server));
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut from_server, mut to_client) = (server, client);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from_client.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &mut buf[..n];
            rename(chunk, b"if-none-match:", b"x-ignored-hdr:");
            rename(chunk, b"if-match:", b"x-ignore:");
            if to_server.write_all(chunk).is_err() {
                break;
            }
        }
        end();
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        end2();
    });
}

/// Replaces every `from` in `buf` (any case) by `to`, of the same length.
fn rename(buf: &mut [u8], from: &[u8], to: &[u8]) {
    let mut i = 0;
    while i + from.len() <= buf.len() {
        if buf[i..i + from.len()].eq_ignore_ascii_case(from) {
            buf[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

/// The current time as HTTP has it (`Thu, 04 Dec 2026 03:53:25 GMT`).
fn httpdate_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
