//! The state in an object store (SPEC 11): `s3://BUCKET/KEY` (Amazon S3 and S3-compatible
//! stores; verified against SeaweedFS) and `az://CONTAINER/KEY` (Azure Blob Storage; verified
//! against Azurite). `gs://` is refused by the config: it is not verified.
//!
//! Layout under `KEY`:
//! - `KEY/journal/{n:020}.json`: the journal ([`journal`]): every [`journal::SNAPSHOT_EVERY`]th
//!   entry a snapshot (a whole state file), the others deltas and intents records, so the bytes a
//!   save writes grow with the change, not with the state. Every entry is created with
//!   `If-None-Match: *` at the next number: of two writers, one wins and the other fails with
//!   [`StateError::Conflict`] naming the winner (from the winner's object's metadata).
//! - `KEY.lock`: the lock object ([`lock`]).
//!
//! A load reads the newest snapshot and the entries after it, in order; an entry missing in
//! between, or one that does not parse, is an error, never "empty". Compaction deletes only
//! entries older than the oldest of the [`journal::KEEP_SNAPSHOTS`] newest snapshots, oldest
//! first, after the newest snapshot is written, so a crash at any step leaves a readable journal.
//! On first use the store is checked to honour conditional writes; one that ignores them is
//! refused.

mod credentials;
pub mod journal;
pub mod lock;

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore as Backend, ObjectStoreExt, PutMode,
    PutOptions, RetryConfig, UpdateVersion,
};

use super::store::{Generation, LockHolder, LockRequest, StateStore, StoreFuture, StoreLock};
use super::{FORMAT_VERSION, State, StateError};
use crate::model::UnixTime;

use journal::{Entry, is_snapshot};

/// The URL schemes of the object stores a state can be kept in (SPEC 11): the ones
/// [`ObjectStore::open`] serves, and all that the config takes in `state:`.
pub const STATE_URL_SCHEMES: [&str; 2] = ["s3", "az"];

/// `state_store: {endpoint, region, account, allow_http}`: where the object store of an `s3://`
/// or `az://` state is reached, overriding `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`
/// (S3) and `AZURE_STORAGE_ENDPOINT`, `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_ALLOW_HTTP` (Azure)
/// (SPEC 11). A key that does not apply to the state's store is an error, never ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSettings {
    /// An S3-compatible endpoint URL (Tencent Cloud COS, MinIO, SeaweedFS...), or an Azure
    /// storage account's blob endpoint (a private endpoint, a sovereign cloud, Azurite).
    pub endpoint: Option<String>,
    /// The S3 store's region.
    pub region: Option<String>,
    /// The Azure storage account that holds an `az://` state's container.
    pub account: Option<String>,
    /// Allow a plain-http endpoint (a store on this machine or a private network).
    pub allow_http: bool,
}

/// The metadata key naming the writer of a journal entry (`x-amz-meta-marksyncwriter` on S3,
/// `x-ms-meta-marksyncwriter` on Azure). Letters only: Azure refuses a name that is not a C#
/// identifier (a `-`), and proxies in front of S3-compatible stores may drop a header with `_`.
const WRITER_META: &str = "marksyncwriter";
/// The metadata key holding a journal entry's serial (letters only, as [`WRITER_META`]).
const SERIAL_META: &str = "marksyncserial";

/// A state in an object store. Credentials stay inside the client; `Debug` shows the URL only.
pub struct ObjectStore {
    url: String,
    store: Arc<dyn Backend>,
    /// `KEY/journal/`.
    journal: Path,
    lock: lock::Place,
    /// Who writes through this store, as entries' metadata and the lock object name it.
    me: std::sync::Mutex<LockHolder>,
    /// The journal as this process last read or wrote it.
    tail: tokio::sync::Mutex<Tail>,
    /// Set once the store was seen to honour conditional writes.
    checked: tokio::sync::OnceCell<()>,
    /// The lock this process took through this store: once it is lost, nothing is written.
    fence: std::sync::Mutex<lock::Fence>,
}

/// The newest entry this process knows of, and the state after it.
#[derive(Default)]
struct Tail {
    seq: Option<u64>,
    state: Option<State>,
    /// Whether this process compacted since it started writing.
    compacted: bool,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("url", &self.url)
            .finish()
    }
}

/// An object-store failure, phrased for the user: `state URL: WHAT (the store said: ...)`.
pub(crate) fn store_error(state: &str, what: &str, e: object_store::Error) -> StateError {
    if let object_store::Error::Generic { source, .. } = &e
        && let Some(phrased) = source.downcast_ref::<credentials::CredentialsError>()
    {
        return StateError::Unavailable {
            state: state.to_string(),
            detail: format!("{what}: {phrased}"),
        };
    }
    if let Some(rest) = state.strip_prefix("az://")
        && says(&e, &["ContainerNotFound"])
    {
        let container = rest.split('/').next().unwrap_or(rest);
        return StateError::Unavailable {
            state: state.to_string(),
            detail: format!(
                "{what}: the container {container} does not exist in this storage account; \
                 create it (az storage container create --name {container}) or correct the URL"
            ),
        };
    }
    if state.starts_with("az://") && refused_credentials(&e) {
        return StateError::Unavailable {
            state: state.to_string(),
            detail: format!(
                "{what} (the store said: access denied: check the credentials \
                 (AZURE_STORAGE_ACCOUNT_KEY, a SAS, a service principal, workload or managed \
                 identity), the account name and the role on the container)"
            ),
        };
    }
    let said = match &e {
        object_store::Error::NotFound { .. } => "not found".to_string(),
        object_store::Error::Generic { source, .. } => source.to_string(),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => "access denied: check the credentials \
             (AWS_ACCESS_KEY_ID, a web identity token, an instance role) and the bucket policy"
            .to_string(),
        other => other.to_string(),
    };
    StateError::Unavailable {
        state: state.to_string(),
        detail: format!("{what} (the store said: {said})"),
    }
}

/// Whether the store refused the request's credentials (HTTP 401 or 403). The crate types this
/// for object reads and writes but not for a listing, whose refusal comes as a generic error
/// that carries the status only in its text (pinned: object_store 0.13).
fn refused_credentials(e: &object_store::Error) -> bool {
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return true;
    }
    says(e, &["status code: 403", "status code: 401"])
}

/// Whether the text of `e` or of one of its causes holds one of `needles`.
fn says(e: &object_store::Error, needles: &[&str]) -> bool {
    let said = credentials::error_chain(e);
    needles.iter().any(|n| said.contains(n))
}

/// The variables of `env` whose names start with `prefix` that the crate knows, as its config
/// keys. An empty variable is unset, as the vendors' own tools take it: CI maps an undefined
/// secret to "", and an empty key must not hide a web identity token or a managed identity.
fn settings_from<K: std::str::FromStr>(
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
) -> impl Iterator<Item = (K, String)> {
    env.into_iter().filter_map(move |(k, v)| {
        let key = (k.starts_with(prefix) && !v.is_empty())
            .then(|| k.to_ascii_lowercase().parse().ok())??;
        Some((key, v))
    })
}

/// Whether a yes-or-no setting says yes, in the words the crate itself takes for yes.
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on" | "y"
    )
}

/// The current time as unix seconds.
pub(crate) fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// This host's name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// How long one request may take, retries included: well under a lease's third.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

impl ObjectStore {
    /// The store for `url` (`s3://BUCKET/KEY`, `az://CONTAINER/KEY`), with
    /// settings from `env` (the process's environment: `AWS_*` for S3, `AZURE_*` for Azure)
    /// overridden by `settings`.
    /// Credentials come from the crate's standard chain: static keys, a session token, a web
    /// identity token (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`), container and
    /// instance roles. Nothing is contacted yet.
    pub fn open(
        url: &str,
        settings: &StoreSettings,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StateError> {
        let bad = |detail: String| StateError::Unavailable {
            state: url.to_string(),
            detail,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not a URL".into()))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let key = key.trim_matches('/');
        if bucket.is_empty() || key.is_empty() {
            return Err(bad(format!(
                "name the bucket and the state's key: {scheme}://BUCKET/KEY"
            )));
        }
        let client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(Duration::from_secs(5));
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: REQUEST_TIMEOUT,
            ..Default::default()
        };
        let built: Result<Arc<dyn Backend>, object_store::Error> = match scheme {
            "s3" => {
                let mut b = object_store::aws::AmazonS3Builder::new();
                for (key, v) in settings_from(env, "AWS_") {
                    b = b.with_config(key, v);
                }
                b = b.with_url(url);
                if let Some(e) = &settings.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &settings.region {
                    b = b.with_region(r);
                }
                let mut client = client;
                if settings.allow_http {
                    client = client.with_allow_http(true);
                } else if let Some(h) =
                    b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Client(
                        object_store::ClientConfigKey::AllowHttp,
                    ))
                {
                    client = client.with_allow_http(truthy(&h));
                }
                let b = b.with_client_options(client).with_retry(retry);
                match credentials::WebIdentity::of(&b) {
                    // The chain's own provider, its failures phrased for the user.
                    Some(exchange) => b.clone().build().and_then(|chain| {
                        b.with_credentials(exchange.wrap(chain.credentials().clone()))
                            .build()
                    }),
                    None => b.build(),
                }
                .map(|s| Arc::new(s) as Arc<dyn Backend>)
            }
            "az" => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::new();
                let env: Vec<(String, String)> = env.into_iter().collect();
                if let Some((_, v)) = env
                    .iter()
                    .find(|(k, v)| k == "MSI_ENDPOINT" && !v.is_empty())
                {
                    b = b.with_msi_endpoint(v);
                }
                for (key, v) in settings_from(env, "AZURE_") {
                    b = b.with_config(key, v);
                }
                b = b.with_url(url);
                if let Some(e) = &settings.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(a) = &settings.account {
                    b = b.with_account(a);
                }
                let emulator = b
                    .get_config_value(&AzureConfigKey::UseEmulator)
                    .is_some_and(|v| truthy(&v));
                if emulator && b.get_config_value(&AzureConfigKey::Endpoint).is_some() {
                    return Err(bad(
                        "AZURE_STORAGE_USE_EMULATOR takes the emulator's address from \
                         AZURITE_BLOB_STORAGE_URL and would ignore the endpoint set in \
                         `state_store.endpoint` or AZURE_STORAGE_ENDPOINT: use one or the other"
                            .into(),
                    ));
                }
                if b.get_config_value(&AzureConfigKey::AccountName).is_none() && !emulator {
                    return Err(bad(
                        "an az:// state needs the Azure storage account that holds the \
                         container: set `state_store.account` in the config, or \
                         AZURE_STORAGE_ACCOUNT_NAME"
                            .into(),
                    ));
                }
                let mut client = client;
                if settings.allow_http {
                    client = client.with_allow_http(true);
                } else if let Some(h) = b.get_config_value(&AzureConfigKey::Client(
                    object_store::ClientConfigKey::AllowHttp,
                )) {
                    client = client.with_allow_http(truthy(&h));
                }
                b.with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn Backend>)
            }
            other => {
                return Err(bad(format!(
                    "marksync does not serve {other}:// states; use s3://, az:// or a file path"
                )));
            }
        };
        let store = built.map_err(|e| store_error(url, "cannot set up the store client", e))?;
        let key = Path::from(key);
        let lock_path = Path::from(format!("{key}.lock"));
        Ok(ObjectStore {
            url: url.to_string(),
            journal: key.clone().join("journal"),
            lock: lock::Place {
                store: store.clone(),
                path: lock_path,
                state: url.to_string(),
            },
            store,
            me: std::sync::Mutex::new(LockHolder {
                id: new_lock_id(),
                host: host_name(),
                pid: std::process::id(),
                command: "marksync".into(),
                started: unix_now(),
                expires: None,
                address: None,
            }),
            tail: tokio::sync::Mutex::new(Tail::default()),
            checked: tokio::sync::OnceCell::new(),
            fence: std::sync::Mutex::default(),
        })
    }

    /// The configured URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn remote(&self, what: &str, e: object_store::Error) -> StateError {
        store_error(&self.url, what, e)
    }

    fn entry_path(&self, seq: u64) -> Path {
        self.journal.clone().join(journal::entry_name(seq))
    }

    /// The URL of entry `seq`, for messages.
    fn entry_url(&self, seq: u64) -> String {
        format!(
            "{}/journal/{}",
            self.url.trim_end_matches('/'),
            journal::entry_name(seq)
        )
    }

    /// How this process names itself in entries' metadata.
    fn writer(&self) -> String {
        let me = self.me.lock().expect("me");
        let text = format!(
            "{} (pid {} on {}, lock {})",
            me.command, me.pid, me.host, me.id
        );
        // Metadata travels in HTTP headers: visible ASCII only.
        text.chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// Checks once that the store refuses a second create of one object and a replace with a
    /// wrong ETag: a store that ignores the conditions would let two writers overwrite each
    /// other, silently.
    async fn check_conditional_writes(&self) -> Result<(), StateError> {
        self.checked
            .get_or_try_init(|| async {
                let probe = Path::from(format!(
                    "{}.probe-{}",
                    self.lock.path.as_ref().trim_end_matches(".lock"),
                    new_lock_id()
                ));
                let put = |mode: PutMode| {
                    let opts = PutOptions {
                        mode,
                        ..Default::default()
                    };
                    self.store.put_opts(&probe, b"probe".to_vec().into(), opts)
                };
                let refuse = |what: &str| StateError::Unavailable {
                    state: self.url.clone(),
                    detail: format!(
                        "this store ignores conditional writes ({what}), so two writers could overwrite each other's state unnoticed; marksync refuses to use it. Use a store that honours If-None-Match and If-Match (Amazon S3, Tencent COS, MinIO, SeaweedFS, Azure), or a local state file"
                    ),
                };
                let first = put(PutMode::Create)
                    .await
                    .map_err(|e| self.remote("cannot write a probe object", e))?;
                let second = put(PutMode::Create).await;
                let wrong = put(PutMode::Update(UpdateVersion {
                    e_tag: Some("\"marksync-not-an-etag\"".into()),
                    version: None,
                }))
                .await;
                let _ = self.store.delete(&probe).await;
                match second {
                    Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
                    Ok(_) => return Err(refuse("a second If-None-Match: * create of one object succeeded")),
                    Err(e) => return Err(self.remote("cannot check the store's conditional writes", e)),
                }
                match wrong {
                    Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {}
                    Ok(_) => return Err(refuse("a replace with If-Match on a wrong ETag succeeded")),
                    Err(e) => return Err(self.remote("cannot check the store's conditional writes", e)),
                }
                drop(first);
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The journal's entries: numbers and sizes, in order.
    async fn list(&self) -> Result<Vec<(u64, object_store::ObjectMeta)>, StateError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.journal))
            .await
            .map_err(|e| self.remote("cannot list its journal", e))?;
        let mut entries: Vec<_> = listed
            .objects
            .into_iter()
            .filter_map(|m| Some((journal::entry_seq(m.location.filename()?)?, m)))
            .collect();
        entries.sort_by_key(|e| e.0);
        Ok(entries)
    }

    /// Fetches entries `seqs`, up to 16 at a time; their bytes in the same order.
    async fn fetch_all(&self, seqs: &[u64]) -> Result<Vec<Vec<u8>>, StateError> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(16) {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, &seq) in chunk.iter().enumerate() {
                let (store, path) = (self.store.clone(), self.entry_path(seq));
                tasks.spawn(async move {
                    let got = match store.get(&path).await {
                        Ok(g) => g.bytes().await,
                        Err(e) => Err(e),
                    };
                    (i, seq, got)
                });
            }
            let mut got = vec![Vec::new(); chunk.len()];
            while let Some(done) = tasks.join_next().await {
                let (i, seq, bytes) = done.expect("a fetch task does not panic");
                let what = format!("cannot read {}", self.entry_url(seq));
                got[i] = bytes.map_err(|e| self.remote(&what, e))?.to_vec();
            }
            out.extend(got);
        }
        Ok(out)
    }

    async fn fetch(&self, seq: u64) -> Result<Vec<u8>, StateError> {
        let what = format!("cannot read {}", self.entry_url(seq));
        let got = self
            .store
            .get(&self.entry_path(seq))
            .await
            .map_err(|e| self.remote(&what, e))?;
        Ok(got
            .bytes()
            .await
            .map_err(|e| self.remote(&what, e))?
            .to_vec())
    }

    fn corrupt(&self, seq: u64, detail: impl std::fmt::Display) -> StateError {
        StateError::Unavailable {
            state: self.url.clone(),
            detail: format!(
                "journal entry {} is corrupt ({detail}); it was not used. `marksync state history` lists the kept snapshots, `marksync state pull --serial N` prints one",
                self.entry_url(seq)
            ),
        }
    }

    /// Reads the current state: the newest snapshot and the entries after it, in order.
    /// Nothing stored: `None`.
    async fn read(&self, sdkappid: Option<u64>) -> Result<Option<(u64, State)>, StateError> {
        let entries: Vec<u64> = self.list().await?.into_iter().map(|e| e.0).collect();
        let Some(&last) = entries.last() else {
            return Ok(None);
        };
        let Some(start) = entries.iter().rposition(|s| is_snapshot(*s)) else {
            return Err(self.corrupt(entries[0], "the journal holds no snapshot before it"));
        };
        let state = self.replay(&entries[start..], None).await?;
        if let Some(expected) = sdkappid
            && state.sdkappid != expected
        {
            return Err(StateError::OtherApp {
                path: self.url.clone().into(),
                found: state.sdkappid,
                expected,
            });
        }
        Ok(Some((last, state)))
    }

    /// The state after the snapshot `entries[0]` and the entries after it (stopping before the
    /// first whose serial passes `upto`). An entry missing in between is an error.
    async fn replay(&self, entries: &[u64], upto: Option<u64>) -> Result<State, StateError> {
        let base = entries[0];
        for (i, &seq) in entries.iter().enumerate().skip(1) {
            if seq != base + i as u64 {
                return Err(self.corrupt(
                    base + i as u64,
                    format!("it is missing, and entry {seq} follows"),
                ));
            }
        }
        // The deltas up to the next snapshot are fetched together (a store's round trip is tens
        // of milliseconds, and there may be 63 of them); a later snapshot, only on the way to
        // an older serial, is fetched when reached.
        let deltas = entries[1..]
            .iter()
            .position(|s| is_snapshot(*s))
            .map_or(entries.len(), |p| p + 1);
        let mut fetched = self.fetch_all(&entries[1..deltas]).await?.into_iter();
        let mut state = self.snapshot(base, &self.fetch(base).await?)?;
        for &seq in &entries[1..] {
            let bytes = match fetched.next() {
                Some(b) => b,
                None => self.fetch(seq).await?,
            };
            if is_snapshot(seq) {
                // Only when replaying to an older serial: the newest snapshot starts a load.
                let snapshot = self.snapshot(seq, &bytes)?;
                if upto.is_some_and(|n| snapshot.serial > n) {
                    break;
                }
                state = snapshot;
                continue;
            }
            let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| self.corrupt(seq, e))?;
            if entry.format_version != FORMAT_VERSION {
                return Err(StateError::Version {
                    path: self.entry_url(seq).into(),
                    found: entry.format_version,
                });
            }
            if entry.sdkappid != state.sdkappid {
                return Err(self.corrupt(
                    seq,
                    format!(
                        "sdkappid {} in a journal of {}",
                        entry.sdkappid, state.sdkappid
                    ),
                ));
            }
            if upto.is_some_and(|n| entry.serial > n) {
                break;
            }
            journal::apply(&mut state, entry);
        }
        Ok(state)
    }

    /// Parses the snapshot at entry `seq`.
    fn snapshot(&self, seq: u64, bytes: &[u8]) -> Result<State, StateError> {
        super::parse(std::path::Path::new(&self.entry_url(seq)), bytes).map_err(|e| match e {
            StateError::Corrupt { detail, .. } => self.corrupt(seq, detail),
            other => other,
        })
    }

    /// The kept snapshots, newest first: entry number, serial, and listing.
    async fn snapshots(&self) -> Result<Vec<(u64, u64, object_store::ObjectMeta)>, StateError> {
        let mut out = Vec::new();
        for (seq, meta) in self.list().await?.into_iter().rev() {
            if !is_snapshot(seq) {
                continue;
            }
            let opts = object_store::GetOptions {
                head: true,
                ..Default::default()
            };
            let head = self
                .store
                .get_opts(&meta.location, opts)
                .await
                .map_err(|e| self.remote(&format!("cannot read {}", self.entry_url(seq)), e))?;
            let serial = match head
                .attributes
                .get(&Attribute::Metadata(SERIAL_META.into()))
            {
                Some(s) => s
                    .parse()
                    .map_err(|e| self.corrupt(seq, format!("serial metadata: {e}")))?,
                None => {
                    let bytes = self.fetch(seq).await?;
                    self.snapshot(seq, &bytes)?.serial
                }
            };
            out.push((seq, serial, meta));
        }
        Ok(out)
    }

    /// The state at serial `n`, replayed from the newest kept snapshot at or before it.
    async fn at_serial(&self, n: u64) -> Result<State, StateError> {
        let snapshots = self.snapshots().await?;
        let not_kept = || StateError::Unavailable {
            state: self.url.clone(),
            detail: format!(
                "serial {n} is not kept; the kept snapshots have serials {} (`marksync state history`)",
                snapshots
                    .iter()
                    .map(|g| g.1.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let Some(&(base, _, _)) = snapshots.iter().find(|s| s.1 <= n) else {
            return Err(not_kept());
        };
        let entries: Vec<u64> = self
            .list()
            .await?
            .into_iter()
            .map(|e| e.0)
            .filter(|s| *s >= base)
            .collect();
        let state = self.replay(&entries, Some(n)).await?;
        if state.serial != n {
            return Err(not_kept());
        }
        Ok(state)
    }

    /// Creates entry `seq` with `body`. Another writer's entry there is a conflict naming it;
    /// the very same bytes there are this write, landed (a retry after an answer was lost).
    async fn create(&self, seq: u64, serial: u64, body: Vec<u8>) -> Result<(), StateError> {
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(WRITER_META.into()),
            self.writer().into(),
        );
        attributes.insert(
            Attribute::Metadata(SERIAL_META.into()),
            serial.to_string().into(),
        );
        attributes.insert(Attribute::ContentType, "application/json".into());
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..Default::default()
        };
        let payload = object_store::PutPayload::from(body);
        match self
            .store
            .put_opts(&self.entry_path(seq), payload.clone(), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => self.landed_or_conflict(seq, &payload).await,
            Err(e) => Err(self.remote(&format!("cannot write {}", self.entry_url(seq)), e)),
        }
    }

    /// Whether entry `seq` holds exactly `mine` (then `Ok`), else the conflict naming its writer
    /// as its metadata says.
    async fn landed_or_conflict(
        &self,
        seq: u64,
        mine: &object_store::PutPayload,
    ) -> Result<(), StateError> {
        let at = self.entry_url(seq);
        let writer = match self.store.get(&self.entry_path(seq)).await {
            Ok(got) => {
                let named = got
                    .attributes
                    .get(&Attribute::Metadata(WRITER_META.into()))
                    .map(|w| w.as_ref().to_string());
                if let Ok(theirs) = got.bytes().await
                    && theirs.len() == mine.content_length()
                    && mine.iter().flat_map(|b| b.iter()).eq(theirs.iter())
                {
                    return Ok(());
                }
                format!("{}, in {at}", named.as_deref().unwrap_or("unnamed"))
            }
            Err(_) => format!("unknown, in {at}"),
        };
        Err(StateError::Conflict {
            state: self.url.clone(),
            writer,
        })
    }

    /// The tail, read from the store if this process has not read it yet.
    async fn known_tail<'t>(
        &self,
        tail: &'t mut Tail,
        sdkappid: u64,
    ) -> Result<&'t mut Tail, StateError> {
        if tail.state.is_none() {
            let read = self.read(Some(sdkappid)).await?;
            tail.seq = read.as_ref().map(|r| r.0);
            tail.state = Some(read.map_or_else(|| State::new(sdkappid), |r| r.1));
        }
        Ok(tail)
    }

    /// Writes `next` as the next entry: the whole state at a snapshot's number (then compacts),
    /// else the entry `entry` gives. Returns the entry's number.
    async fn append(
        &self,
        tail: &Tail,
        next: &State,
        entry: impl FnOnce() -> Vec<u8>,
    ) -> Result<u64, StateError> {
        // A holder that lost its lock no longer holds the state: the process that took it over
        // writes now, and an entry from here would stop it at its next save.
        if self.fence.lock().expect("fence").lost() {
            return Err(StateError::Unavailable {
                state: self.url.clone(),
                detail: "this process's lock on the state was lost (taken over by another \
                         process, or expired without renewal); nothing was written"
                    .into(),
            });
        }
        let seq = tail.seq.map_or(0, |s| s + 1);
        let body = if is_snapshot(seq) {
            let mut b = serde_json::to_vec(next).expect("a state serializes");
            b.push(b'\n');
            b
        } else {
            entry()
        };
        self.create(seq, next.serial, body).await?;
        Ok(seq)
    }

    /// Compacts after a snapshot, and after this process's first write (a writer killed between
    /// its snapshot and the compaction left that to the next one).
    async fn after_write(&self, tail: &mut Tail, seq: u64) {
        if is_snapshot(seq) || !tail.compacted {
            self.compact(seq - seq % journal::SNAPSHOT_EVERY).await;
            tail.compacted = true;
        }
    }

    /// Deletes the entries older than the oldest kept snapshot, oldest first. A failure
    /// leaves garbage that the next compaction removes, never a gap.
    async fn compact(&self, newest: u64) {
        let Some(keep_from) =
            newest.checked_sub((journal::KEEP_SNAPSHOTS - 1) * journal::SNAPSHOT_EVERY)
        else {
            return;
        };
        let Ok(entries) = self.list().await else {
            return;
        };
        for (seq, meta) in entries.into_iter().filter(|e| e.0 < keep_from) {
            if let Err(e) = self.store.delete(&meta.location).await {
                tracing::warn!(state = %self.url, "cannot delete old journal entry {seq} (the next compaction retries): {e}");
                return;
            }
        }
    }

    /// Sets the command and address entries and the lock name.
    fn set_me(&self, request: &LockRequest) -> LockHolder {
        let mut me = self.me.lock().expect("me");
        me.command = request.command.clone();
        me.address = request.address.clone();
        me.clone()
    }
}

/// A journal entry's bytes.
fn to_json(entry: &Entry) -> Vec<u8> {
    serde_json::to_vec(entry).expect("an entry serializes")
}

/// A fresh lock id: 16 random hex digits.
fn new_lock_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl StateStore for ObjectStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn load(&self, sdkappid: u64) -> StoreFuture<'_, State> {
        Box::pin(async move {
            let mut tail = self.tail.lock().await;
            tail.state = None;
            let tail = self.known_tail(&mut tail, sdkappid).await?;
            Ok(tail.state.clone().expect("a known tail"))
        })
    }

    fn save<'a>(&'a self, state: &'a mut State) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.check_conditional_writes().await?;
            let mut tail = self.tail.lock().await;
            let tail = self.known_tail(&mut tail, state.sdkappid).await?;
            state.serial += 1;
            // The change since the last save: the entry to write (unless this number is a
            // snapshot's), and what brings the kept copy up to `state` without copying it.
            let change = journal::delta(tail.state.as_ref().expect("a known tail"), state);
            let written = self.append(tail, state, || to_json(&change)).await;
            let seq = match written {
                Ok(seq) => seq,
                Err(e) => {
                    state.serial -= 1;
                    return Err(e);
                }
            };
            journal::apply(tail.state.as_mut().expect("a known tail"), change);
            debug_assert!(
                tail.state.as_ref() == Some(&*state),
                "the kept copy follows"
            );
            tail.seq = Some(seq);
            self.after_write(tail, seq).await;
            Ok(())
        })
    }

    fn save_intents<'a>(&'a self, state: &'a State) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.check_conditional_writes().await?;
            let mut tail = self.tail.lock().await;
            let tail = self.known_tail(&mut tail, state.sdkappid).await?;
            // The confirmed marks and the serial stay as last saved: only a save changes them.
            // The new intents go into the kept state, and back out if the write fails.
            let mut kept = tail.state.take().expect("a known tail");
            let before = std::mem::replace(&mut kept.intents, state.intents.clone());
            let written = self
                .append(tail, &kept, || to_json(&journal::intents(&kept)))
                .await;
            if written.is_err() {
                kept.intents = before;
            }
            tail.state = Some(kept);
            let seq = written?;
            tail.seq = Some(seq);
            self.after_write(tail, seq).await;
            Ok(())
        })
    }

    fn lock<'a>(&'a self, request: &'a LockRequest) -> StoreFuture<'a, Box<dyn StoreLock>> {
        Box::pin(async move {
            self.check_conditional_writes().await?;
            let me = self.set_me(request);
            let held = lock::acquire(&self.lock, request, &me).await?;
            *self.fence.lock().expect("fence") = held.fence();
            Ok(Box::new(held) as Box<dyn StoreLock>)
        })
    }

    fn holder(&self) -> StoreFuture<'_, Option<LockHolder>> {
        Box::pin(async move { Ok(self.lock.read().await?.map(|h| h.0)) })
    }

    fn unlock<'a>(&'a self, lock_id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let Some((holder, _)) = self.lock.read().await? else {
                return Err(StateError::Unavailable {
                    state: self.url.clone(),
                    detail: format!("it is not locked (no lock {lock_id} to remove)"),
                });
            };
            if holder.id != lock_id {
                return Err(StateError::Unavailable {
                    state: self.url.clone(),
                    detail: format!(
                        "its lock is {} (held by {} pid {} on {}), not {lock_id}; nothing was removed",
                        holder.id, holder.command, holder.pid, holder.host
                    ),
                });
            }
            self.lock
                .remove_if(|h, _| h.id == lock_id)
                .await
                .map(|_| ())
        })
    }

    fn history(&self) -> StoreFuture<'_, Vec<Generation>> {
        Box::pin(async move {
            Ok(self
                .snapshots()
                .await?
                .into_iter()
                .map(|(_, serial, meta)| Generation {
                    serial,
                    written: Some(meta.last_modified.timestamp()),
                    bytes: meta.size,
                })
                .collect())
        })
    }

    fn pull(&self, serial: Option<u64>) -> StoreFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let state = match serial {
                None => self.read(None).await?.map(|r| r.1),
                Some(n) => Some(self.at_serial(n).await?),
            };
            let Some(state) = state else {
                return Err(StateError::Unavailable {
                    state: self.url.clone(),
                    detail: "nothing is stored there yet".into(),
                });
            };
            let mut b = serde_json::to_vec(&state).expect("a state serializes");
            b.push(b'\n');
            Ok(b)
        })
    }

    fn local_files(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::azure::AzureConfigKey;

    #[test]
    fn an_empty_variable_is_unset_for_every_store() {
        let env = || {
            [
                ("AZURE_STORAGE_ACCOUNT_NAME", ""),
                ("AZURE_STORAGE_ACCOUNT_KEY", "k"),
                ("AZURE_NOT_A_SETTING", "x"),
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_REGION", "ap-singapore"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        };
        let azure: Vec<(AzureConfigKey, String)> = settings_from(env(), "AZURE_").collect();
        assert_eq!(azure, [(AzureConfigKey::AccessKey, "k".to_string())]);
        let aws: Vec<(object_store::aws::AmazonS3ConfigKey, String)> =
            settings_from(env(), "AWS_").collect();
        assert_eq!(
            aws,
            [(
                object_store::aws::AmazonS3ConfigKey::Region,
                "ap-singapore".to_string()
            )]
        );
    }

    #[test]
    fn yes_is_what_the_crate_takes_for_yes() {
        for yes in ["true", "1", "yes", "on", "y", " TRUE "] {
            assert!(truthy(yes), "{yes}");
        }
        for no in ["false", "0", "no", "off", "n", "", "maybe"] {
            assert!(!truthy(no), "{no}");
        }
    }

    #[test]
    fn every_scheme_the_config_takes_is_served() {
        for scheme in STATE_URL_SCHEMES {
            let opened = ObjectStore::open(
                &format!("{scheme}://bucket/state.json"),
                &StoreSettings {
                    account: Some("acct".into()),
                    ..StoreSettings::default()
                },
                Vec::new(),
            );
            assert!(opened.is_ok(), "{scheme}: {opened:?}");
        }
    }
}
