//! The steps every command and the daemon share: load the config and the desired files, the
//! planning policy, compute the plan, read the secret key, connect to the service (or start the
//! embedded emulator), and the async runtime. `cmd` (one-shot commands) and `daemon` (`marksync
//! run`) both sit on top of this layer; it knows neither of them.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::apply;
use crate::clock::Clock;
use crate::config::{self, Config, Endpoint};
use crate::desired::{self, DesiredState};
use crate::diag::Diagnostic;
use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::Error;
use crate::model::UnixTime;
use crate::plan::{self, Plan, Policy};
use crate::refresh::{self, RefreshError, Refreshed};
use crate::state::{self, LockRequest, StateStore, StoreLock};
use crate::tim::client::{Client, ClientConfig};
use crate::tim::endpoint::{Region, backup_endpoint_url, endpoint_url};
use crate::tim::usersig::SecretKey;

/// Loads the config, reporting every problem.
pub fn load_config(path: &Path) -> Result<Config, Error> {
    config::load(path).map_err(Error::Config)
}

/// Loads the desired state and prints its warnings to stderr.
pub fn load_desired(config: &Config) -> Result<DesiredState, Error> {
    load_desired_from(&config.desired, config.max_alias_pairs)
}

/// [`load_desired`], showing `seen` the bytes of every file as read ([`desired::load_seeing`]).
pub fn load_desired_seeing(
    config: &Config,
    seen: &(dyn Fn(&Path, &[u8]) + Sync),
) -> Result<DesiredState, Error> {
    let desired = desired::load_seeing(&config.desired, config.max_alias_pairs, seen)
        .map_err(Error::Desired)?;
    print_warnings(&desired.warnings);
    Ok(desired)
}

/// [`load_desired`] of the directory or file `root`.
fn load_desired_from(root: &Path, max_alias_pairs: usize) -> Result<DesiredState, Error> {
    let desired = desired::load(root, max_alias_pairs).map_err(Error::Desired)?;
    print_warnings(&desired.warnings);
    Ok(desired)
}

fn print_warnings(warnings: &[Diagnostic]) {
    if warnings.is_empty() {
        return;
    }
    let mut err = anstream::stderr().lock();
    for w in warnings {
        let _ = writeln!(err, "{w}");
    }
}

/// The planning policy a config asks for.
pub fn policy(config: &Config, reassert: bool) -> Policy {
    Policy {
        renew_margin_secs: config.renew_margin.as_secs() as i64,
        reassert,
    }
}

/// One run of the engine, for a command or the daemon: it owns the config, the clock, the state
/// store and (once connected) the client, and offers what every caller does with them: lock,
/// load, refresh, plan, execute, save. `apply`, `import`, `plan` and the daemon's round are thin
/// callers; none of them knows where the state is kept.
pub struct Session {
    /// The config this session runs on (the daemon replaces it on reload, keeping `state`).
    pub config: Config,
    /// Where "now" comes from (tests drive it).
    clock: Arc<dyn Clock>,
    /// Where the state is kept.
    store: Arc<dyn StateStore>,
    /// The API client, made on first need: planning alone never connects.
    connection: Option<Connection>,
}

impl Session {
    /// A session on `config`'s state store; nothing is read and nothing connects yet.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Session, Error> {
        let store = state::open(&config.state, config.state_store.as_ref())?;
        Ok(Session {
            config,
            clock,
            store,
            connection: None,
        })
    }

    /// The state store (for messages: its description, the local files it owns).
    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Takes the state's one-writer lock for `command` (see [`lock_request`]).
    pub async fn lock(
        &self,
        command: &str,
        takes_callbacks: bool,
        wait: Duration,
    ) -> Result<Box<dyn StoreLock>, Error> {
        let request = lock_request(&self.config, command, takes_callbacks, wait);
        Ok(self.store.lock(&request).await?)
    }

    /// Reads the state.
    pub async fn load_state(&self) -> Result<state::State, Error> {
        Ok(self.store.load(self.config.sdkappid).await?)
    }

    /// Reads the desired files and the state, at the same time: they are independent reads of
    /// about the same size (a million marks each). A problem in the desired files is reported
    /// first.
    pub async fn load(&self) -> Result<(DesiredState, state::State), Error> {
        let (root, max_alias_pairs) = (self.config.desired.clone(), self.config.max_alias_pairs);
        let desired =
            tokio::task::spawn_blocking(move || load_desired_from(&root, max_alias_pairs));
        let state = self.store.load(self.config.sdkappid).await;
        let desired = desired
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok((desired, state?))
    }

    /// The plan from `desired` and `state` at `now`, with the config's policy.
    pub fn plan(
        &self,
        desired: &DesiredState,
        state: &state::State,
        now: UnixTime,
        reassert: bool,
    ) -> Plan {
        plan::plan(desired, state, now, &policy(&self.config, reassert))
    }

    /// The API client, connecting (or starting the embedded emulator) on first use.
    pub async fn client(&mut self) -> Result<&Client, Error> {
        let connection = match self.connection.take() {
            Some(c) => c,
            None => connect(&self.config, self.clock.clone()).await?,
        };
        Ok(&self.connection.insert(connection).client)
    }

    /// Builds the client again from the config (after a reload): the old one stays if the new
    /// one cannot be built.
    pub async fn reconnect(&mut self) -> Result<(), Error> {
        let connection = connect(&self.config, self.clock.clone()).await?;
        if let Some(old) = self.connection.replace(connection)
            && let Some(embedded) = old.embedded
        {
            let _ = embedded.shutdown().await;
        }
        Ok(())
    }

    /// Reads the live marks of what `desired` and `state` name and makes `state` (in memory)
    /// agree (SPEC section 10), unless `stop_requested` resolves first: then the reads are
    /// abandoned at once and `state` is as it was ([`until_stopped`] with no grace).
    pub async fn refresh<S>(
        &mut self,
        desired: &DesiredState,
        state: &mut state::State,
        stop_requested: impl Future<Output = S>,
        on_stop: impl FnOnce(&S),
    ) -> Result<Stopped<Result<Refreshed, RefreshError>, S>, Error> {
        let clock = self.clock.clone();
        let client = self.client().await?.clone();
        let reads = refresh::refresh(&client, desired, state, clock.as_ref());
        let stop = AtomicBool::new(false);
        Ok(until_stopped(reads, stop_requested, &stop, Duration::ZERO, on_stop).await)
    }

    /// Executes `plan` ([`apply::execute`]), saving to the store, until `stop_requested`
    /// resolves: then no new call starts and the calls in flight get [`SHUTDOWN_GRACE`] to
    /// finish. When they do not, the state is left to the caller to save (the cut calls' marks
    /// are still intents in it: the next run settles them).
    pub async fn execute<S>(
        &mut self,
        plan: Plan,
        state: &mut state::State,
        settings: &apply::Settings,
        on_call: impl FnMut(crate::outcome::CallReport<'_>),
        stop_requested: impl Future<Output = S>,
        on_stop: impl FnOnce(&S),
    ) -> Result<Stopped<Result<apply::Applied, state::StateError>, S>, Error> {
        let clock = self.clock.clone();
        let client = self.client().await?.clone();
        let work = apply::execute(
            Arc::new(plan),
            state,
            self.store.as_ref(),
            &client,
            clock.as_ref(),
            settings,
            on_call,
        );
        Ok(until_stopped(
            work,
            stop_requested,
            &settings.stop,
            SHUTDOWN_GRACE,
            on_stop,
        )
        .await)
    }

    /// Saves `state` to the store.
    pub async fn save(&self, state: &mut state::State) -> Result<(), state::StateError> {
        self.store.save(state).await
    }

    /// The client's failover count so far (none before connecting).
    pub fn failovers(&self) -> u64 {
        self.connection
            .as_ref()
            .map_or(0, |c| c.client.endpoint_stats().failovers)
    }

    /// Drops the client, and stops the embedded emulator if one runs: the session's calls are
    /// over.
    pub async fn disconnect(&mut self) {
        if let Some(embedded) = self.connection.take().and_then(|c| c.embedded) {
            let _ = embedded.shutdown().await;
        }
    }
}

/// What a command takes the state's lock for: `command` names it to whoever finds the lock
/// held; `takes_callbacks` puts this process's callback address in the lock (a daemon's), so a
/// standby can forward callbacks to it.
pub fn lock_request(
    config: &Config,
    command: &str,
    takes_callbacks: bool,
    wait: Duration,
) -> LockRequest {
    LockRequest {
        command: command.to_string(),
        wait,
        ttl: config.lock_ttl,
        address: config
            .http
            .as_ref()
            .filter(|_| takes_callbacks)
            .map(|h| h.listen.to_string()),
    }
}

/// The secret key from the file, `$MARKSYNC_SECRET_KEY` or `$CREDENTIALS_DIRECTORY/secret-key`.
pub fn secret_key(config: &Config) -> Result<SecretKey, Error> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    // A variable that is set but not UTF-8 is refused by the key's own checks (the replacement
    // character is not a hex digit), never skipped as if it were unset.
    let env = std::env::var_os(crate::tim::usersig::SECRET_KEY_ENV)
        .map(|v| v.to_string_lossy().into_owned());
    let key = SecretKey::from_sources(
        config.secret_key_file.as_deref(),
        env,
        credentials.as_deref(),
    )
    .map_err(Error::Secret)?;
    if let Some(path) = &config.secret_key_file
        && config.endpoint != Endpoint::Embedded
    {
        crate::tim::usersig::warn_if_loose(path);
    }
    // The embedded emulator's key guards nothing (its demo key is well formed anyway).
    if config.endpoint != Endpoint::Embedded
        && let Some(warning) = key.shape_warning()
    {
        tracing::warn!("{warning}");
    }
    Ok(key)
}

/// A client connected as the config says. With `endpoint: embedded` the emulator runs in this
/// process for as long as the returned [`Connection`] lives.
pub struct Connection {
    /// The API client.
    pub client: Client,
    /// The in-process emulator, when `endpoint: embedded`.
    pub embedded: Option<Emulator>,
}

/// Builds the client (and starts the embedded emulator when asked to).
pub async fn connect(config: &Config, clock: Arc<dyn Clock>) -> Result<Connection, Error> {
    let secret = secret_key(config)?;
    let (base_url, backup_url, embedded) = match &config.endpoint {
        Endpoint::Embedded => {
            let mut emu = EmulatorConfig::new(
                config.sdkappid,
                secret.expose().to_string(),
                config.identifier.clone(),
            );
            emu.auto_create_groups = true;
            emu.members_online_by_default = true;
            emu.max_calls_per_second = 200;
            // Each process starts its own emulator: its world is kept beside the state (or the
            // config, for a state in an object store), so the next command sees the marks this
            // one set.
            emu.world_file = Some(crate::emulator::world_file_beside(match &config.state {
                crate::state::Location::File(path) => path,
                crate::state::Location::Object(_) => &config.path,
            }));
            let emulator = Emulator::start(emu)
                .await
                .map_err(Error::EmbeddedEmulator)?;
            (emulator.base_url(), None, Some(emulator))
        }
        _ => {
            let (main, backup) = endpoint_urls(config)?;
            (main, backup, None)
        }
    };
    let mut cc = ClientConfig::new(base_url, config.sdkappid, config.identifier.clone(), secret);
    cc.usersig_ttl = config.usersig_ttl;
    cc.max_calls_per_second = config.max_calls_per_second;
    cc.backup_url = backup_url;
    // Under a remote state's lease, one attempt must fit between the last moment an attempt may
    // start and `lock_ttl/3` before the lease ends (SPEC 11): see `lease_margin`.
    if matches!(config.state, crate::state::Location::Object(_)) {
        cc.request_timeout = cc.request_timeout.min(config.lock_ttl / 6);
    }
    let client = Client::new(cc, clock).map_err(Error::Client)?;
    Ok(Connection { client, embedded })
}

/// How long before its lease ends a holder of a remote state's lock stops starting calls: the
/// `lock_ttl/3` that SPEC 11 keeps clear, plus one attempt (whose timeout is `lock_ttl/6` at
/// most), so the last attempt ends `lock_ttl/3` before the lease. Renewed every `lock_ttl/3`, a
/// healthy lease never comes this close (it keeps at least `2/3` of `lock_ttl`).
pub fn lease_margin(config: &Config) -> Duration {
    config.lock_ttl / 3 + config.lock_ttl / 6
}

/// How work that a stop request may cut short ended ([`until_stopped`]).
#[derive(Debug)]
pub struct Stopped<T, S> {
    /// The work's output; `None` when it was cut (the grace ran out, or there was none).
    pub output: Option<T>,
    /// The stop request, if one came.
    pub by: Option<S>,
}

/// Runs `work` until it ends, unless `stop_requested` resolves first: then `stop` is set (so the
/// work starts nothing new: no new call), `on_stop` is told, and the work gets `grace` more to
/// finish (calls in flight); with a zero grace it is abandoned at once (reads, which change
/// nothing until they all finished). The one shutdown rule of `apply`, `import`, `plan
/// --refresh` and the daemon.
pub async fn until_stopped<T, S>(
    work: impl Future<Output = T>,
    stop_requested: impl Future<Output = S>,
    stop: &AtomicBool,
    grace: Duration,
    on_stop: impl FnOnce(&S),
) -> Stopped<T, S> {
    tokio::pin!(work);
    let by = tokio::select! {
        output = &mut work => return Stopped { output: Some(output), by: None },
        by = stop_requested => by,
    };
    stop.store(true, Ordering::SeqCst);
    on_stop(&by);
    let output = if grace.is_zero() {
        None
    } else {
        tokio::time::timeout(grace, work).await.ok()
    };
    Stopped {
        output,
        by: Some(by),
    }
}

/// The main and backup base URLs of a config that calls the service (not `embedded`, which has
/// neither): a region's domain and its backup domain (or `backup_endpoint`); an explicit
/// `endpoint` and `backup_endpoint` if set, else no backup.
pub fn endpoint_urls(config: &Config) -> Result<(String, Option<String>), Error> {
    match &config.endpoint {
        Endpoint::Region(region) => Ok((
            endpoint_url(*region, None).map_err(Error::RegionEndpoint)?,
            backup_endpoint_url(*region, None, config.backup_endpoint.as_deref())
                .map_err(Error::RegionEndpoint)?,
        )),
        Endpoint::Url(url) => Ok((
            endpoint_url(Region::default(), Some(url)).map_err(Error::EndpointUrl)?,
            backup_endpoint_url(
                Region::default(),
                Some(url),
                config.backup_endpoint.as_deref(),
            )
            .map_err(Error::EndpointUrl)?,
        )),
        Endpoint::Embedded => Ok((String::new(), None)),
    }
}

/// A small multi-threaded runtime: the work is network-bound and the machine may be small.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))
}

/// How long calls in flight may take to finish after SIGTERM or SIGINT (`apply` and `run`).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    // tokio's paused clock: the durations are exact and nothing waits for real.

    /// Work that takes `ms` and says so.
    async fn work(ms: u64) -> &'static str {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        "done"
    }

    /// A stop request after `ms`.
    async fn stop_after(ms: u64) -> &'static str {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        "SIGTERM"
    }

    const GRACE: Duration = Duration::from_millis(300);

    #[tokio::test(start_paused = true)]
    async fn work_without_a_stop_request_runs_to_its_end() {
        let stop = AtomicBool::new(false);
        let never = std::future::pending::<&str>();
        let r = until_stopped(work(50), never, &stop, GRACE, |_| panic!("no stop")).await;
        assert_eq!((r.output, r.by), (Some("done"), None));
        assert!(!stop.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_request_sets_stop_and_the_work_in_flight_finishes_within_the_grace() {
        let stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        let r = until_stopped(work(150), stop_after(20), &stop, GRACE, |s| seen.push(*s)).await;
        assert_eq!(r.output, Some("done"), "finished within the grace");
        assert_eq!(r.by, Some("SIGTERM"));
        assert!(
            stop.load(Ordering::SeqCst),
            "no new calls after the request"
        );
        assert_eq!(seen, ["SIGTERM"]);
    }

    #[tokio::test(start_paused = true)]
    async fn work_still_running_when_the_grace_runs_out_is_cut() {
        let stop = AtomicBool::new(false);
        let started = tokio::time::Instant::now();
        let r = until_stopped(work(60_000), stop_after(20), &stop, GRACE, |_| {}).await;
        assert_eq!((r.output, r.by), (None, Some("SIGTERM")));
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(20) + GRACE,
            "cut exactly at the grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_grace_the_work_is_abandoned_at_once() {
        let stop = AtomicBool::new(false);
        let started = tokio::time::Instant::now();
        let r = until_stopped(work(60_000), stop_after(20), &stop, Duration::ZERO, |_| {}).await;
        assert_eq!((r.output, r.by), (None, Some("SIGTERM")));
        assert_eq!(started.elapsed(), Duration::from_millis(20));
    }

    fn urls(extra: &str) -> (String, Option<String>) {
        let text = format!("sdkappid: 1\nidentifier: a\ndesired: m\n{extra}");
        let config = config::parse(Path::new("marksync.yaml"), &text).unwrap();
        endpoint_urls(&config).unwrap()
    }

    #[test]
    fn a_region_fails_over_to_its_backup_domain_an_explicit_endpoint_only_when_told() {
        assert_eq!(
            urls("region: singapore\n"),
            (
                "https://adminapisgp.im.qcloud.com".into(),
                Some("https://adminapisgp.my-imcloud.com".into())
            )
        );
        assert_eq!(
            urls("region: singapore\nbackup_endpoint: https://b.example\n").1,
            Some("https://b.example".into())
        );
        assert_eq!(
            urls("endpoint: https://a.example\n"),
            ("https://a.example".into(), None)
        );
        assert_eq!(
            urls("endpoint: https://a.example\nbackup_endpoint: https://b.example\n").1,
            Some("https://b.example".into())
        );
    }
}
