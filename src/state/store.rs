//! The storage seam (SPEC 4, 11): everything outside `state` reaches the state's storage through
//! [`StateStore`], and nothing outside it knows whether that is a local file ([`super::file`]) or
//! an object store (section 11).
//!
//! The methods return boxed futures so the store can be a trait object (`Arc<dyn StateStore>`)
//! chosen at run time from the config's `state:` value; an object store's I/O is asynchronous.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use super::{State, StateError};
use crate::model::UnixTime;

/// What a store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>;

/// Where a state lives, as the config's `state:` value says. A value with a `SCHEME://` prefix is
/// a URL and never a path: an unknown scheme is an error, so `s3:/` can never become a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file (relative paths are resolved against the config file's directory).
    File(PathBuf),
    /// An object in an object store: `s3://BUCKET/KEY` (also `az://`).
    Object(String),
}

/// One state's storage. A store value is bound to one state: it remembers the version it last
/// read or wrote, and every write is conditional on it (a file store holds the flock instead).
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The path or URL, for messages.
    fn describe(&self) -> String;

    /// Reads the state (with its open intents). Nothing stored yet is a first run: an empty state
    /// for `sdkappid`. A state that cannot be read is an error, never "empty".
    fn load(&self, sdkappid: u64) -> StoreFuture<'_, State>;

    /// Writes `state` (bumping its serial) as the new current state. Atomic: a crash at any
    /// instant leaves the previous or the new state, readable. A write that loses a race with
    /// another writer fails with [`StateError::Conflict`] and is never retried blindly.
    fn save<'a>(&'a self, state: &'a mut State) -> StoreFuture<'a, ()>;

    /// Records `state`'s intents before the calls they announce are sent (SPEC 4).
    fn save_intents<'a>(&'a self, state: &'a State) -> StoreFuture<'a, ()>;

    /// Takes the one-writer lock (SPEC 4, 11), waiting up to `request.wait` for a holder to go.
    fn lock<'a>(&'a self, request: &'a LockRequest) -> StoreFuture<'a, Box<dyn StoreLock>>;

    /// Who holds the lock now, if anyone (for `state` commands, and a standby's forwarding).
    fn holder(&self) -> StoreFuture<'_, Option<LockHolder>>;

    /// Removes a stale lock by its id (`marksync state unlock LOCK_ID`).
    fn unlock<'a>(&'a self, lock_id: &'a str) -> StoreFuture<'a, ()>;

    /// The kept generations, newest first (`marksync state history`).
    fn history(&self) -> StoreFuture<'_, Vec<Generation>>;

    /// The bytes of the current state, or of the kept generation with `serial`
    /// (`marksync state pull [--serial N]`).
    fn pull(&self, serial: Option<u64>) -> StoreFuture<'_, Vec<u8>>;

    /// Local files that belong to this store (the state, its `.bak`, sidecars), which nothing
    /// else may write: `plan --out` refuses them. Empty for a remote store.
    fn local_files(&self) -> Vec<(&'static str, PathBuf)>;
}

/// What a lock is taken for.
#[derive(Debug, Clone)]
pub struct LockRequest {
    /// The command taking it (`apply`, `import`, `run`, `state rm`, `state push`).
    pub command: String,
    /// How long to wait for another holder (`--lock-timeout`); zero fails at once, naming it.
    pub wait: Duration,
    /// How long a lease lasts without renewal (`lock_ttl`; a file lock ignores it).
    pub ttl: Duration,
    /// Where this process takes callbacks (`http.listen`), so a standby can forward them.
    pub address: Option<String>,
}

/// Who holds a lock, as its lock object says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    /// The lock's id (for `state unlock`).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// The command that holds it.
    pub command: String,
    /// When it was taken.
    pub started: UnixTime,
    /// When it expires unless renewed (`None` for a file lock, which lives as long as its holder).
    pub expires: Option<UnixTime>,
    /// The holder's callback address, if it takes callbacks.
    pub address: Option<String>,
}

/// A held lock. Dropping it releases the lock.
pub trait StoreLock: Send + Sync + std::fmt::Debug {
    /// When the lease ends unless renewed, on this process's monotonic clock (`None`: never, as a
    /// file lock held by a live process). A daemon starts a call only if the call's deadline,
    /// retries included, ends `ttl/3` before this (SPEC 11).
    fn lease_deadline(&self) -> Option<tokio::time::Instant>;

    /// Whether the lease was lost (a renewal failed or found another holder): the holder must
    /// stop sending calls at once.
    fn lost(&self) -> bool;
}

/// One kept generation of a state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Generation {
    /// Its serial.
    pub serial: u64,
    /// When it was written, if the store knows.
    pub written: Option<UnixTime>,
    /// Its size in bytes.
    pub bytes: u64,
}
