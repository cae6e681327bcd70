//! The lock object of a state in an object store (SPEC 11): `KEY.lock`, created with
//! `If-None-Match`, holding its [`LockHolder`]; renewed with `If-Match` on its ETag by a
//! background task every `ttl/3` (renewal never touches the state or its serial); taken over
//! from a holder that stopped renewing only after this process saw the very same object (same
//! ETag) for `ttl` on its own monotonic clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore as Backend, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use tokio::time::Instant;

use super::super::StateError;
use super::super::store::{LockHolder, LockRequest, StoreLock};
use super::{store_error, unix_now};

/// The first pause between two looks at a held lock; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two looks at a held lock.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where the lock lives, and how to name it in messages.
#[derive(Clone)]
pub(super) struct Place {
    pub store: Arc<dyn Backend>,
    pub path: Path,
    /// The state's URL.
    pub state: String,
}

impl Place {
    fn remote(&self, what: &str, e: object_store::Error) -> StateError {
        store_error(&self.state, what, e)
    }

    /// The lock object's holder and ETag, if there is one.
    pub async fn read(&self) -> Result<Option<(LockHolder, Option<String>)>, StateError> {
        let got = match self.store.get(&self.path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.remote("cannot read its lock object", e)),
        };
        let e_tag = got.meta.e_tag.clone();
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.remote("cannot read its lock object", e))?;
        let holder = serde_json::from_slice(&bytes).map_err(|e| StateError::Unavailable {
            state: self.state.clone(),
            detail: format!(
                "its lock object {} is not a marksync lock ({e}); if no marksync holds it, remove it with `marksync state unlock`",
                self.path
            ),
        })?;
        Ok(Some((holder, e_tag)))
    }

    /// Writes `holder` as the lock object: created if `mode` is [`PutMode::Create`], replaced
    /// if its ETag is still the one given. `Ok(None)`: the condition failed.
    async fn write(
        &self,
        holder: &LockHolder,
        mode: PutMode,
    ) -> Result<Option<String>, StateError> {
        let body = serde_json::to_vec(holder).expect("a lock holder serializes");
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self.store.put_opts(&self.path, body.into(), opts).await {
            Ok(r) => match r.e_tag {
                Some(t) => Ok(Some(t)),
                None => Err(StateError::Unavailable {
                    state: self.state.clone(),
                    detail: "the store returned no ETag for the lock object, so the lock cannot be renewed safely".into(),
                }),
            },
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(self.remote("cannot write its lock object", e)),
        }
    }

    /// Removes the lock object if its ETag is `e_tag` (S3 has no conditional delete: read,
    /// compare, delete; a holder that replaced it in between has renewed within a few ms).
    pub async fn remove_if(
        &self,
        check: impl Fn(&LockHolder, Option<&str>) -> bool,
    ) -> Result<bool, StateError> {
        let Some((holder, tag)) = self.read().await? else {
            return Ok(false);
        };
        if !check(&holder, tag.as_deref()) {
            return Ok(false);
        }
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(self.remote("cannot remove its lock object", e)),
        }
    }
}

/// Takes the lock for `request` as `me` (its id, host, pid and command; times are set here).
pub(super) async fn acquire(
    place: &Place,
    request: &LockRequest,
    me: &LockHolder,
) -> Result<ObjectLock, StateError> {
    let ttl = request.ttl.max(Duration::from_secs(1));
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    // The lock object last seen, and since when (monotonic) it has been the same.
    let mut seen: Option<(Option<String>, Instant)> = None;
    loop {
        let mut holder = me.clone();
        holder.started = unix_now();
        holder.expires = Some(holder.started + ttl.as_secs() as i64);
        let at = Instant::now();
        if let Some(tag) = place.write(&holder, PutMode::Create).await? {
            return Ok(ObjectLock::start(place.clone(), holder, tag, ttl, at));
        }
        let Some((other, tag)) = place.read().await? else {
            // Released in between: try again, a bounded number of times.
            if started.elapsed() > request.wait + ttl {
                return Err(StateError::Unavailable {
                    state: place.state.clone(),
                    detail: format!(
                        "its lock object {} is refused as existing and yet not found; check the store",
                        place.path
                    ),
                });
            }
            tokio::time::sleep(FIRST_BACKOFF).await;
            continue;
        };
        let since = match &seen {
            Some((t, since)) if *t == tag => *since,
            _ => {
                let now = Instant::now();
                seen = Some((tag.clone(), now));
                now
            }
        };
        if since.elapsed() >= ttl {
            // Unchanged for a whole ttl on our clock: its holder stopped renewing.
            let at = Instant::now();
            let mode = PutMode::Update(UpdateVersion {
                e_tag: tag.clone(),
                version: None,
            });
            if let Some(new_tag) = place.write(&holder, mode).await? {
                tracing::warn!(
                    state = %place.state,
                    holder = %other.id,
                    host = %other.host,
                    pid = other.pid,
                    "took over a lock that was not renewed for {}",
                    humantime::format_duration(ttl)
                );
                return Ok(ObjectLock::start(place.clone(), holder, new_tag, ttl, at));
            }
            continue;
        }
        // A lease whose expiry has passed on the holder's clock is watched for a ttl before
        // giving up, even without --lock-timeout: a crashed run must not block the next one.
        let stale = other.expires.is_some_and(|e| e < unix_now());
        let wait = if stale {
            request.wait.max(ttl + FIRST_BACKOFF)
        } else {
            request.wait
        };
        let Some(left) = wait.checked_sub(started.elapsed()).filter(|l| !l.is_zero()) else {
            return Err(StateError::HeldBy {
                state: place.state.clone(),
                holder: Box::new(other),
            });
        };
        tokio::time::sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What the holder and its renewal task share.
struct Lease {
    lost: AtomicBool,
    /// The monotonic time the lease ends unless renewed: the start of the last successful
    /// write of the lock object, plus ttl.
    deadline: Mutex<Instant>,
    /// The lock object's ETag after the last successful write.
    e_tag: Mutex<String>,
}

/// What the store checks before each write: whether the lock this process took was lost (taken
/// over by another process, or expired without renewal). A lock released by dropping it fences
/// nothing: its holder is done.
#[derive(Clone, Default)]
pub(super) struct Fence(Option<std::sync::Weak<Lease>>);

impl Fence {
    /// Whether the lease behind it is lost or over.
    pub(super) fn lost(&self) -> bool {
        self.0
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .is_some_and(|lease| lease.over())
    }
}

impl Lease {
    /// Lost to another process, or past its deadline.
    fn over(&self) -> bool {
        self.lost.load(Ordering::SeqCst) || Instant::now() >= *self.deadline.lock().expect("lease")
    }
}

/// A held lock object. Dropping it stops the renewals and removes the object if it is still
/// this one.
pub struct ObjectLock {
    place: Place,
    holder: LockHolder,
    lease: Arc<Lease>,
    renewals: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ObjectLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLock")
            .field("state", &self.place.state)
            .field("id", &self.holder.id)
            .field("lost", &self.lost())
            .finish()
    }
}

impl ObjectLock {
    fn start(place: Place, holder: LockHolder, e_tag: String, ttl: Duration, at: Instant) -> Self {
        let lease = Arc::new(Lease {
            lost: AtomicBool::new(false),
            deadline: Mutex::new(at + ttl),
            e_tag: Mutex::new(e_tag),
        });
        let renewals = tokio::spawn(renew(place.clone(), holder.clone(), lease.clone(), ttl));
        ObjectLock {
            place,
            holder,
            lease,
            renewals,
        }
    }

    /// Who holds it: this process.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    /// The store's check before a write ([`Fence`]).
    pub(super) fn fence(&self) -> Fence {
        Fence(Some(Arc::downgrade(&self.lease)))
    }
}

/// Renews the lease every `ttl/3` with `If-Match` on its ETag until it is lost.
async fn renew(place: Place, mut holder: LockHolder, lease: Arc<Lease>, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let at = Instant::now();
        holder.expires = Some(unix_now() + ttl.as_secs() as i64);
        let tag = lease.e_tag.lock().expect("lease").clone();
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(tag),
            version: None,
        });
        let deadline = *lease.deadline.lock().expect("lease");
        let left = deadline.saturating_duration_since(at);
        match tokio::time::timeout(left, place.write(&holder, mode)).await {
            Ok(Ok(Some(new_tag))) => {
                *lease.e_tag.lock().expect("lease") = new_tag;
                *lease.deadline.lock().expect("lease") = at + ttl;
            }
            Ok(Ok(None)) => {
                tracing::error!(state = %place.state, id = %holder.id, "the state's lock was taken by another process: stopping");
                lease.lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(e)) if Instant::now() < deadline => {
                tracing::warn!(state = %place.state, "cannot renew the state's lock yet: {e}");
            }
            _ => {
                tracing::error!(state = %place.state, id = %holder.id, "the state's lock could not be renewed before it expired: stopping");
                lease.lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

impl StoreLock for ObjectLock {
    fn lease_deadline(&self) -> Option<Instant> {
        Some(*self.lease.deadline.lock().expect("lease"))
    }

    fn lost(&self) -> bool {
        self.lease.over()
    }
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        self.renewals.abort();
        // A lost or expired lease may be someone else's by now (and the store may not answer).
        if self.lost() {
            return;
        }
        let place = self.place.clone();
        let ours = self.lease.e_tag.lock().expect("lease").clone();
        let id = self.holder.id.clone();
        let release = async move {
            let check =
                |h: &LockHolder, tag: Option<&str>| h.id == id && tag == Some(ours.as_str());
            if let Err(e) = place.remove_if(check).await {
                tracing::warn!(state = %place.state, "cannot release the state's lock (it expires by itself): {e}");
            }
        };
        let release = tokio::time::timeout(Duration::from_secs(10), release);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                let _ = tokio::task::block_in_place(|| h.block_on(release));
            }
            // A single-threaded runtime cannot wait here: release in the background; if the
            // runtime ends first, the lease expires by itself after ttl.
            Ok(h) => {
                h.spawn(release);
            }
            Err(_) => {}
        }
    }
}
