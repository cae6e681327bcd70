//! A real Azure Blob Storage API for the tests that claim `az://` behaviour (SPEC 11): Azurite,
//! Microsoft's official emulator (npm package `azurite`, pinned in `.ci/run`, which installs it
//! under `target/azurite`), one per test binary, with its well-known development account and a
//! container `marksync`; each test works under its own key prefix ([`Azurite::url`]).
//!
//! `azurite-blob` binds `127.0.0.1` port 0 and prints the address it got
//! ("successfully listens on http://127.0.0.1:PORT"); the test reads it from its log, so no port
//! is chosen and hoped free. It keeps its data in a temporary `--location`. It runs under a
//! shell that reads its stdin until end of file: when the test process ends, however it ends,
//! the pipe closes and the shell kills the emulator.
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
trap 'kill $a 2>/dev/null; wait $a 2>/dev/null' EXIT
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
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint.as_str()),
            ("AZURE_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Sets [`Azurite::env`] on a command (and clears other `AZURE_` settings it may inherit).
    pub fn apply_env(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AZURE")) {
            cmd.env_remove(k);
        }
        cmd.envs(self.env());
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

    /// Creates a container (Azure's "Create Container", signed with the account key; the
    /// object-store crate has no call for it).
    fn create_container(&self, name: &str) {
        let date = httpdate_now();
        let version = "2021-08-06";
        let path = format!("/{ACCOUNT}/{name}");
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}{path}\nrestype:container"
        );
        let key = base64_decode(ACCOUNT_KEY);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let signature = base64_encode(&mac.finalize().into_bytes());
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
