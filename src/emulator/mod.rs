//! A local stand-in for the service's audio-video group mark API, for tests, demos and users' CI
//! (SPEC section 9). It speaks HTTP/1.1 on loopback and answers
//! `POST /v4/group_open_avchatroom_http_svc/modify_user_info` and `.../get_members` with the
//! documented behaviour, plus a control API under `/emulator/`.
//!
//! Start it in-process with [`Emulator::start`] (tests), on a listener you own with [`serve`], or
//! as `marksync emulator --listen 127.0.0.1:PORT` through [`run_standalone`].
//!
//! # What a service call goes through, in order
//! 1. Counted in the statistics (every call, refused or not).
//! 2. Injected faults are rolled: latency is slept; an error code, HTTP status or dropped
//!    connection replaces the answer (before the call is applied, or after it with `after`).
//! 3. Query: `sdkappid` missing or not a number: 60006. Another SDKAppID than the emulator's:
//!    70016 ("unknown in this region", which is what a wrong app or region looks like).
//!    `identifier` or `usersig` missing: 10001. `random` missing or not a u32, or `contenttype`
//!    not `json`: 10004.
//! 4. UserSig, verified with the real algorithm at virtual time, in the reference's order:
//!    unparsable 70003, sig for another SDKAppID 70014, for another identifier 70013, expired
//!    70001, HMAC mismatch 70009. Then an `identifier` that is not the configured admin: 60010.
//! 5. Rate limit (when enforced): more than `max_calls_per_second` admitted calls in the sliding
//!    second before this one: 60018. Refused calls do not use up the budget.
//! 6. Body: not JSON 10011; not an object, a field missing or of the wrong type, an empty or
//!    over-500 `MemberList`, an entry without marks, or an invalid mark: 10004; `CommandType`
//!    other than 1 or 2: 10003; `GroupId` empty, over 48 bytes or with control characters: 10015.
//! 7. Group: unknown or dissolved: 10010; not an AVChatRoom: 10007 (the API's "insufficient
//!    permission"; the vendor does not say which code a wrong group type gets).
//!
//! # Behaviour where the vendor is silent (choices, documented so tests can rely on them)
//! - **All accounts offline:** a set call in which no account had any mark applied (all offline
//!   or not members) fails with [`EmulatorConfig::all_offline_error_code`], default 10004. The
//!   vendor documents the failure but not its code, so it is configurable.
//! - **Mark 500 for offline members:** an offline member takes mark 500 (that is what it is for)
//!   and only mark 500: other marks in the same entry are left out of the response, as for any
//!   offline member, and the client sends them again later. Once the 500 is set the member counts
//!   as online, so the next set call gives it the other marks. Accounts that are not members of
//!   the group take nothing, not even 500.
//! - **Mark 500 and going offline:** going offline drops every mark except 500; a member with a
//!   live 500 still counts as online, so marks can be set again. When its 500 runs out (72 h of
//!   virtual time after it was last set; setting it again restarts them) a disconnected member
//!   loses all its marks, as if it went offline at that moment. No callback is sent for that.
//! - **Leaving the group** drops every mark, 500 included.
//! - **Delete** in which no account is an online member (every one offline or not a member)
//!   fails as a whole with [`EmulatorConfig::all_offline_error_code`], as a set call does: the
//!   reference says so of `modify_user_info` in general, without the code. Otherwise it succeeds,
//!   lists the offline members too (they have nothing left to delete) and leaves out accounts
//!   that are not members. A member holding a live 500 counts as online, so its 500 can be
//!   deleted while it is disconnected.
//! - **Limits:** the 10 distinct marks per group count every mark carried by at least one member,
//!   500 and 600 included; a set call that would exceed 10 distinct marks, or put more than 1000
//!   members on one mark, fails as a whole with 10004 and an `ErrorInfo` naming the limit and
//!   the numbers; nothing of it is applied. Setting a mark the member already has is not an
//!   addition.
//! - **Setting adds** marks, it does not replace the member's other marks.
//! - **`get_members`:** online members (connected, or holding a live 500), most recently joined
//!   first, capped at [`EmulatorConfig::online_list_cap`] (1000), then filtered: by `Mark` when
//!   given (a `Mark` of 0 means no filter), otherwise members with mark 600 are hidden. Pages of
//!   [`EmulatorConfig::members_page_size`]; `NextTimestamp` is an opaque cursor (a join
//!   sequence number), 0 on the last page. `NickName` and `Avatar` are not sent. The window is
//!   applied after the `Mark` filter (the vendor does not say which comes first).
//! - **`get_members` staleness:** answers come from a per-group snapshot of the online members
//!   and their marks, taken at the first listing and retaken once it is
//!   [`EmulatorConfig::members_cache_secs`] (40) seconds of *virtual* time old (or the clock was
//!   set back): a member who goes offline, or a mark set, shows only after the clock moves on.
//!   Advance the virtual clock by 40 s to see the current state; set it to 0 to turn this off.
//! - **Presence:** members join online; a member that comes back online keeps its join time.
//!   Account names are not validated: an account the control API never added is simply not a
//!   member.
//! - **Rate limit and clocks:** the limit is per emulator (one SDKAppID), over both APIs, on the
//!   real clock. The virtual clock ([`Emulator::advance_clock`]) drives UserSig expiry and mark
//!   500; a client whose own clock is real will therefore see 70001 once the virtual clock runs
//!   past its UserSig's validity. Callbacks carry the real time in `RequestTime`, because
//!   receivers compare it with their own clock.
//! - **Outside the two APIs:** an unknown path gets HTTP 404 with `ErrorCode` 10003, another
//!   method 405, a body over 2 MB 413 (axum's default limit).
//!
//! # Control API (JSON in and out; errors are 4xx with `{"error": "..."}`)
//! There is no authentication: the emulator refuses to listen on anything but loopback. So that
//! a web page cannot drive it, every control request must name a loopback `Host` (`localhost`,
//! 127.0.0.0/8, `[::1]`; else 421) and every control `POST` must say
//! `Content-Type: application/json`, an empty body included (else 415).
//! - `GET /emulator/groups` -> `{group_id: {"type", "dissolved", "members": {account: {"state",
//!   "marks", "mark_500_expires_at", "joined_at"}}}}`
//! - `POST /emulator/groups/create` `{"group_id", "type"?: "AVChatRoom"|"Public"|...}`;
//!   `POST /emulator/groups/dissolve` `{"group_id"}`
//! - `POST /emulator/members` `{"group_id", "accounts": [..], "state": "online"|"offline"|"left"}`
//!   -> `{"callbacks": [{"body", "status"?, "reply"?, "error"?}]}` (member-state callbacks sent
//!   to [`EmulatorConfig::callback_url`])
//! - `GET /emulator/marks?group_id=%40TGS%23...` or `POST /emulator/marks` `{"group_id"}` ->
//!   `{account: [marks]}` for members carrying any mark
//! - `POST /emulator/marks/set` and `POST /emulator/marks/clear` `{"group_id", "accounts": [..],
//!   "marks": [..]}`: set or delete marks "as another tool would" (the service's rules: online
//!   members only except 500, the limits; but no statistics, rate limit or faults) ->
//!   `{account: [marks]}` of the members it applied to, or 409 `{"error": "CODE: info"}`. Joining,
//!   leaving, going offline and coming back are `POST /emulator/members` above.
//! - `POST /emulator/faults` [`Fault`]: `{"kind": "error_code", "code"}` | `{"kind":
//!   "http_status", "status"}` | `{"kind": "latency", "ms"}` | `{"kind": "drop_connection"}` |
//!   `{"kind": "short_page"}` (`get_members` only: the page cut short, `NextTimestamp` 0, as if
//!   the listing ended there), plus
//!   `"rate"?` (0..1, default 1), `"count"?` (max hits), `"path"?` (`"modify_user_info"` or
//!   `"get_members"`), `"after"?` (apply the call, then fail the answer; with latency, apply the
//!   call at once and delay only the answer) -> `{"id"}`;
//!   `GET /emulator/faults` -> `[FaultState]` (each with `"id"` and `"hits"`);
//!   `DELETE /emulator/faults` or `POST /emulator/faults/clear`
//! - `GET /emulator/clock` -> `{"now", "offset"}`; `POST /emulator/clock/advance` `{"seconds"}`;
//!   `POST /emulator/clock/set` `{"now"}`
//! - `GET /emulator/stats[?log=true]` -> [`Stats`]
//! - `POST /emulator/reset`: groups, faults, statistics and clock back to the start
//! - `POST /emulator/callbacks` `{"url", "token"?, "command", "body", "request_time"?}` ->
//!   `{"status", "body"}` of the receiver, 400 `{"error"}` when `url` is not an http(s) URL on
//!   loopback (`localhost`, 127.0.0.0/8, `[::1]`), or 502 `{"error"}` when delivery failed

mod callbacks;
mod http;
mod traffic;
mod world;
mod world_file;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::model::UnixTime;

pub use callbacks::{CallbackError, CallbackReply, MEMBER_STATE_CHANGE};
pub use traffic::{CallRecord, Fault, FaultKind, FaultState, Stats};
pub use world::{GroupType, GroupView, MemberState, MemberView};
pub use world_file::path_beside as world_file_beside;

/// How the emulator behaves. [`EmulatorConfig::new`] gives the service's own limits; the demo
/// conveniences are off.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// The SDKAppID the emulated app has; calls for another one are refused with 70016.
    pub sdkappid: u64,
    /// The app's secret key, used to verify UserSigs. Never printed (`Debug` redacts it).
    pub secret_key: String,
    /// The App admin account; any other `identifier` is refused with 60010.
    pub admin_identifier: String,
    /// Unknown group IDs starting with `@TGS#` become AVChatRoom groups on first use, so a demo
    /// needs no setup. Off for tests that check 10010.
    pub auto_create_groups: bool,
    /// Unknown accounts are treated as online members (they join on first use), so a demo can
    /// set marks without a control call per member. Off for tests of offline behaviour.
    pub members_online_by_default: bool,
    /// The error code of a set call in which every account is offline or absent. The vendor
    /// documents the failure but not its code; 10004 ("invalid parameter") by default.
    pub all_offline_error_code: i64,
    /// The service's limit per SDKAppID (200); tests lower it to reach it quickly.
    pub max_calls_per_second: u32,
    /// Whether calls past `max_calls_per_second` are refused with 60018; statistics are kept
    /// either way.
    pub enforce_rate_limit: bool,
    /// `get_members` returns only this many most recently joined online members (1000 on the
    /// top edition, 30 on lower ones).
    pub online_list_cap: usize,
    /// How many members one `get_members` page holds; the vendor does not document it.
    pub members_page_size: usize,
    /// `get_members` answers from a snapshot of the online members refreshed at most this often
    /// (virtual seconds; the service's cache is "about 40 s"). 0 answers from the current state.
    pub members_cache_secs: i64,
    /// Where to send `Group.CallbackOnMemberStateChange` when the control API changes presence;
    /// `None` sends nothing.
    pub callback_url: Option<String>,
    /// The callback token: when set, callbacks carry `RequestTime` and `Sign`. Never printed.
    pub callback_token: Option<String>,
    /// Where the world (groups, members, marks) is kept between runs: read at start, written
    /// after every request and control call that changed it. `endpoint: embedded` sets it (a
    /// new emulator per process); `None` keeps the world in memory only.
    pub world_file: Option<std::path::PathBuf>,
}

impl EmulatorConfig {
    /// A configuration with the service's limits and the given app credentials.
    pub fn new(sdkappid: u64, secret_key: impl Into<String>, admin: impl Into<String>) -> Self {
        EmulatorConfig {
            sdkappid,
            secret_key: secret_key.into(),
            admin_identifier: admin.into(),
            auto_create_groups: false,
            members_online_by_default: false,
            all_offline_error_code: 10004,
            max_calls_per_second: 200,
            enforce_rate_limit: true,
            online_list_cap: 1000,
            members_page_size: 100,
            members_cache_secs: 40,
            callback_url: None,
            callback_token: None,
            world_file: None,
        }
    }

    fn rules(&self) -> world::Rules {
        world::Rules {
            auto_create_groups: self.auto_create_groups,
            members_online_by_default: self.members_online_by_default,
            all_offline_error_code: self.all_offline_error_code,
            online_list_cap: self.online_list_cap,
            page_size: self.members_page_size,
            listing_cache_secs: self.members_cache_secs,
        }
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("sdkappid", &self.sdkappid)
            .field("secret_key", &"<redacted>")
            .field("admin_identifier", &self.admin_identifier)
            .field("auto_create_groups", &self.auto_create_groups)
            .field("members_online_by_default", &self.members_online_by_default)
            .field("all_offline_error_code", &self.all_offline_error_code)
            .field("max_calls_per_second", &self.max_calls_per_second)
            .field("enforce_rate_limit", &self.enforce_rate_limit)
            .field("online_list_cap", &self.online_list_cap)
            .field("members_page_size", &self.members_page_size)
            .field("members_cache_secs", &self.members_cache_secs)
            .field("callback_url", &self.callback_url)
            .field(
                "callback_token",
                &self.callback_token.as_ref().map(|_| "<redacted>"),
            )
            .field("world_file", &self.world_file)
            .finish()
    }
}

/// Why the standalone emulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The control API has no authentication, so only loopback addresses are allowed.
    #[error(
        "refusing to listen on {0}: the emulator listens on loopback addresses only (127.0.0.1 or ::1)"
    )]
    NotLoopback(SocketAddr),
    /// Binding the listen address failed (in use, no permission).
    #[error("cannot listen on {addr}: {}", bind_problem(source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("emulator server failed: {0}")]
    Serve(#[source] io::Error),
}

/// Why a bind failed, in an operator's words.
fn bind_problem(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            "the port is in use (another emulator or program holds it); choose another with --listen".into()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges); choose another with --listen".into()
        }
        _ => e.to_string(),
    }
}

/// A refused control operation (unknown group, duplicate group).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ControlError(pub String);

/// A member-state callback sent because of a presence change.
#[derive(Debug)]
pub struct CallbackDelivery {
    /// The callback body that was sent.
    pub body: serde_json::Value,
    /// The receiver's reply, or why delivery failed.
    pub result: Result<CallbackReply, CallbackError>,
}

/// The world file as this process last read or wrote it.
#[derive(Default)]
struct Saved {
    /// The file's bytes then (empty: there was no file).
    on_disk: Vec<u8>,
    /// The world as rendered then: an unchanged world is not written again.
    world: Vec<u8>,
    /// Another process wrote the file meanwhile: this one no longer writes it (said once).
    conflict: bool,
}

/// Everything the emulator's handlers share.
struct Shared {
    cfg: EmulatorConfig,
    inner: Mutex<Inner>,
    /// With a world file: what was last read or written, held while writing, so that saves
    /// happen in the order of the snapshots they write.
    saved: Mutex<Saved>,
    /// For sending callbacks; an initialisation error is reported when a callback is sent.
    client: Result<reqwest::Client, String>,
}

/// The mutable part, behind one lock that is never held across an `.await`.
#[derive(Default)]
struct Inner {
    world: world::World,
    /// Virtual clock = real clock + this many seconds.
    clock_offset: i64,
    faults: traffic::Faults,
    traffic: traffic::Traffic,
}

fn real_now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Shared {
    fn new(cfg: EmulatorConfig) -> Self {
        Shared {
            cfg,
            inner: Mutex::new(Inner::default()),
            saved: Mutex::new(Saved::default()),
            client: callbacks::client(),
        }
    }

    /// A new emulator's shared part, its world read from the world file when there is one.
    fn load(cfg: EmulatorConfig) -> io::Result<Self> {
        let (world, on_disk) = match &cfg.world_file {
            Some(path) => world_file::load(path, cfg.sdkappid)?,
            None => (world::World::default(), Vec::new()),
        };
        let shared = Shared::new(cfg);
        let rendered = world_file::render(&world, shared.cfg.sdkappid);
        shared.lock().world = world;
        *shared.saved.lock().unwrap_or_else(|e| e.into_inner()) = Saved {
            on_disk,
            world: rendered,
            conflict: false,
        };
        Ok(shared)
    }

    /// Writes the world to the world file if it changed since the last write. A failure is
    /// logged as an error naming the file: the next run would not see this run's changes.
    fn persist(&self) {
        let Some(path) = &self.cfg.world_file else {
            return;
        };
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = world_file::render(&self.lock().world, self.cfg.sdkappid);
        if saved.conflict || saved.world == bytes {
            return;
        }
        // Another process with the same state (a daemon and a `plan --refresh`, both embedded)
        // wrote it since: writing this process's older view over it would lose that one's marks.
        if std::fs::read(path).unwrap_or_default() != saved.on_disk {
            saved.conflict = true;
            tracing::error!(
                "another marksync process changed the embedded emulator's world in {} while this \
                 one ran; this run's changes to it are not saved (run one process at a time \
                 against endpoint: embedded)",
                path.display()
            );
            return;
        }
        match world_file::save(path, &bytes) {
            Ok(()) => {
                saved.on_disk = bytes.clone();
                saved.world = bytes;
            }
            Err(e) => tracing::error!(
                "cannot save the embedded emulator's world to {}: {e}; the next run will not \
                 see the marks this one set",
                path.display()
            ),
        }
    }

    /// The lock, even if a thread panicked while holding it: the data stays consistent because
    /// every operation validates before it mutates.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> UnixTime {
        real_now().saturating_add(self.lock().clock_offset)
    }

    fn advance_clock(&self, secs: i64) -> UnixTime {
        let mut inner = self.lock();
        inner.clock_offset = inner.clock_offset.saturating_add(secs);
        real_now().saturating_add(inner.clock_offset)
    }

    fn set_clock(&self, now: UnixTime) -> UnixTime {
        let mut inner = self.lock();
        inner.clock_offset = now.saturating_sub(real_now());
        real_now().saturating_add(inner.clock_offset)
    }

    fn reset(&self) {
        let mut inner = self.lock();
        *inner = Inner::default();
    }

    async fn send_callback(
        &self,
        url: &str,
        token: Option<&str>,
        command: &str,
        body: serde_json::Value,
        request_time: Option<i64>,
    ) -> Result<CallbackReply, CallbackError> {
        let out = callbacks::Outgoing {
            url,
            sdkappid: self.cfg.sdkappid,
            token,
            command,
            body,
            request_time: request_time.unwrap_or_else(real_now),
        };
        callbacks::send(&self.client, out).await
    }

    /// A `modify_user_info` by some other tool: the service's rules, none of the traffic rules.
    fn modify_as_other(
        &self,
        group: &str,
        accounts: &[&str],
        marks: &[u32],
        set: bool,
    ) -> Result<BTreeMap<String, Vec<u32>>, ControlError> {
        let req = world::Modify {
            group_id: group.to_owned(),
            set,
            entries: accounts
                .iter()
                .map(|a| ((*a).to_owned(), marks.to_vec()))
                .collect(),
        };
        let now = self.now();
        let rules = self.cfg.rules();
        self.lock()
            .world
            .modify(&req, &rules, now)
            .map(|list| list.into_iter().map(|m| (m.account, m.marks)).collect())
            .map_err(|(code, info)| ControlError(format!("{code}: {info}")))
    }

    async fn set_members(
        &self,
        group: &str,
        accounts: &[String],
        state: MemberState,
    ) -> Result<Vec<CallbackDelivery>, ControlError> {
        let changes = {
            let now = self.now();
            self.lock()
                .world
                .set_members(group, accounts, state, now)
                .map_err(ControlError)?
        };
        let Some(url) = self.cfg.callback_url.as_deref() else {
            return Ok(Vec::new());
        };
        let events = [
            ("Online", "Join", &changes.joined),
            ("Online", "HeartbeatRecover", &changes.recovered),
            ("Offline", "HeartbeatInterrupt", &changes.interrupted),
            ("Offline", "Quit", &changes.quit),
        ];
        let mut out = Vec::new();
        for (event, cause, accounts) in events {
            if accounts.is_empty() {
                continue;
            }
            let members: Vec<serde_json::Value> = accounts
                .iter()
                .map(|a| serde_json::json!({ "Member_Account": a }))
                .collect();
            let body = serde_json::json!({
                "CallbackCommand": MEMBER_STATE_CHANGE,
                "GroupId": group,
                "Type": "AVChatRoom",
                "EventType": event,
                "EventCause": cause,
                "MemberList": members,
            });
            let token = self.cfg.callback_token.as_deref();
            let result = self
                .send_callback(url, token, MEMBER_STATE_CHANGE, body.clone(), None)
                .await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "member-state callback not delivered");
            }
            out.push(CallbackDelivery { body, result });
        }
        Ok(out)
    }
}

/// What `marksync emulator --help` says after its options: the control API's routes and what the
/// virtual clock moves.
pub fn control_help() -> String {
    let mut out = String::from(
        "Control API (loopback Host only; a POST needs Content-Type: application/json):\n",
    );
    for (method, path, what) in http::CONTROL_ROUTES {
        out.push_str(&format!("  {method:<6} {path:<26} {what}\n"));
    }
    out.push_str(
        "\nThe virtual clock (clock/advance, clock/set) is the emulator's only: it moves UserSig\n\
         expiry, mark 500's 72 h and the 40 s after which get_members retakes its snapshot.\n\
         marksync's own clock stays real: its renewals (renew_margin) and the 40 s in which a\n\
         refresh leaves a just-confirmed mark \"not checked\" do not move with it.",
    );
    out
}

/// Serves the emulator on `listener` until `shutdown` completes, then finishes in-flight calls.
pub async fn serve(
    cfg: EmulatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    http::serve(Arc::new(Shared::load(cfg)?), listener, shutdown).await
}

/// Runs the emulator on `listen` (loopback only) until Ctrl-C or SIGTERM: the body of
/// `marksync emulator`.
pub async fn run_standalone(cfg: EmulatorConfig, listen: SocketAddr) -> Result<(), EmulatorError> {
    if !listen.ip().is_loopback() {
        return Err(EmulatorError::NotLoopback(listen));
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(EmulatorError::Serve)?;
    tracing::info!(
        addr = %local,
        sdkappid = cfg.sdkappid,
        admin = %cfg.admin_identifier,
        "emulator listening; use endpoint http://{local}"
    );
    serve(cfg, listener, stop_signal())
        .await
        .map_err(EmulatorError::Serve)
}

/// Completes on Ctrl-C or (on Unix) SIGTERM. If a handler cannot be installed, that signal is
/// simply not waited for.
async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("emulator stopping");
}

/// A running in-process emulator on a random loopback port. Dropping it stops the server.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Emulator {
    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn start(cfg: EmulatorConfig) -> io::Result<Emulator> {
        let shared = Arc::new(Shared::load(cfg)?);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(shared.clone(), listener, async {
            // A dropped sender also means stop.
            let _ = stopped.await;
        }));
        Ok(Emulator {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the value for a client's `endpoint`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.cfg
    }

    /// Stops accepting calls, lets in-flight ones finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// The virtual clock: the real clock plus every advance.
    pub fn now(&self) -> UnixTime {
        self.shared.now()
    }

    /// Moves the virtual clock by `secs` (negative goes back); returns the new virtual now.
    pub fn advance_clock(&self, secs: i64) -> UnixTime {
        self.shared.advance_clock(secs)
    }

    /// Sets the virtual clock to `now` (it keeps ticking from there); returns it.
    pub fn set_clock(&self, now: UnixTime) -> UnixTime {
        self.shared.set_clock(now)
    }

    /// Creates a group (again, fresh, if it was dissolved).
    pub fn create_group(&self, group: &str, kind: GroupType) -> Result<(), ControlError> {
        let created = self.shared.lock().world.create_group(group, kind);
        self.shared.persist();
        created.map_err(ControlError)
    }

    /// Dissolves a group: calls for it then fail with 10010.
    pub fn dissolve_group(&self, group: &str) -> Result<(), ControlError> {
        let dissolved = self.shared.lock().world.dissolve_group(group);
        self.shared.persist();
        dissolved.map_err(ControlError)
    }

    /// Sets the presence of `accounts`, sending member-state callbacks when a callback URL is
    /// configured (awaited, so a test sees their effect when this returns).
    pub async fn set_members(
        &self,
        group: &str,
        accounts: &[&str],
        state: MemberState,
    ) -> Result<Vec<CallbackDelivery>, ControlError> {
        let accounts: Vec<String> = accounts.iter().map(|a| (*a).to_owned()).collect();
        let changes = self.shared.set_members(group, &accounts, state).await;
        self.shared.persist();
        changes
    }

    /// Joins `accounts` or brings them back online.
    pub async fn set_online(&self, group: &str, accounts: &[&str]) -> Result<(), ControlError> {
        self.set_members(group, accounts, MemberState::Online)
            .await
            .map(drop)
    }

    /// Disconnects `accounts`: they lose every mark but 500.
    pub async fn set_offline(&self, group: &str, accounts: &[&str]) -> Result<(), ControlError> {
        self.set_members(group, accounts, MemberState::Offline)
            .await
            .map(drop)
    }

    /// Removes `accounts` from the group: they lose every mark, 500 included.
    pub async fn leave(&self, group: &str, accounts: &[&str]) -> Result<(), ControlError> {
        self.set_members(group, accounts, MemberState::Left)
            .await
            .map(drop)
    }

    /// Sets `marks` on `accounts` "as another tool would": through the service's rules (online
    /// members only, except 500; the 10-mark and 1000-member limits), but not counted in the
    /// statistics, not rate limited and not subject to injected faults. Returns the members that
    /// took marks, or the service's refusal as `"code: info"`.
    pub fn set_marks_as_other(
        &self,
        group: &str,
        accounts: &[&str],
        marks: &[u32],
    ) -> Result<BTreeMap<String, Vec<u32>>, ControlError> {
        let set = self.shared.modify_as_other(group, accounts, marks, true);
        self.shared.persist();
        set
    }

    /// Deletes `marks` from `accounts` "as another tool would" (see
    /// [`Emulator::set_marks_as_other`]).
    pub fn clear_marks_as_other(
        &self,
        group: &str,
        accounts: &[&str],
        marks: &[u32],
    ) -> Result<BTreeMap<String, Vec<u32>>, ControlError> {
        let cleared = self.shared.modify_as_other(group, accounts, marks, false);
        self.shared.persist();
        cleared
    }

    /// Live marks of the members of `group` that carry any, at virtual now (unknown group:
    /// empty).
    pub fn marks_of(&self, group: &str) -> BTreeMap<String, Vec<u32>> {
        let now = self.now();
        self.shared.lock().world.marks_of(group, now)
    }

    /// Every group with its members, presence and marks, at virtual now.
    pub fn groups(&self) -> BTreeMap<String, GroupView> {
        let now = self.now();
        self.shared.lock().world.view(None, now)
    }

    /// Adds a fault rule; returns its id.
    pub fn inject_fault(&self, fault: Fault) -> Result<u64, ControlError> {
        fault.validate().map_err(ControlError)?;
        Ok(self.shared.lock().faults.add(fault))
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Statistics; `with_log` includes the call log.
    pub fn stats(&self, with_log: bool) -> Stats {
        self.shared.lock().traffic.stats(with_log)
    }

    /// Service calls received so far.
    pub fn call_count(&self) -> u64 {
        self.stats(false).calls_total
    }

    /// The most service calls received in any one-second window.
    pub fn max_calls_in_any_second(&self) -> u64 {
        self.stats(false).max_calls_in_any_second
    }

    /// Back to the start: no groups, faults or statistics, clock offset 0.
    pub fn reset(&self) {
        self.shared.reset();
        self.shared.persist();
    }

    /// Sends a callback to `url` signed with `token` (if any) at the real now, and returns the
    /// receiver's reply.
    pub async fn send_callback(
        &self,
        url: &str,
        token: Option<&str>,
        command: &str,
        body: serde_json::Value,
    ) -> Result<CallbackReply, CallbackError> {
        self.shared
            .send_callback(url, token, command, body, None)
            .await
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
