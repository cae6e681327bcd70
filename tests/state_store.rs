//! One behaviour suite for both state stores behind the seam (SPEC 4, 11): the file store and
//! the object store, the latter against a real S3 server (SeaweedFS, `tests/common/s3.rs`) and
//! a real Azure Blob Storage API (Azurite, `tests/common/azurite.rs`). Each
//! behaviour is an async function over `&dyn StateStore` run once per store; what only one store
//! can do (conflicting writers, lock expiry, history) has tests of its own below.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{a, g, m, within};
use marksync::error::Error;
use marksync::state::{
    FileStore, LockRequest, ObjectStore, State, StateError, StateStore, StoreSettings,
};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;

const APP: u64 = common::APP;

/// A store of each kind, each for a fresh state; `None` for S3 where SeaweedFS is absent, for
/// Azure where Azurite is.
enum Kind {
    File,
    S3,
    Azure,
}

struct Fresh {
    store: Arc<dyn StateStore>,
    /// Opens a second store value for the same state (another process's view).
    again: Box<dyn Fn() -> Arc<dyn StateStore> + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
}

fn fresh(kind: Kind) -> Option<Fresh> {
    match kind {
        Kind::File => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.json");
            let p2 = path.clone();
            Some(Fresh {
                store: Arc::new(FileStore::new(&path)),
                again: Box::new(move || Arc::new(FileStore::new(&p2))),
                _dir: Some(dir),
            })
        }
        Kind::S3 => {
            let s3 = common::s3::s3()?;
            let url = s3.url("state.json");
            let open = move || -> Arc<dyn StateStore> { Arc::new(object_store(&url)) };
            Some(Fresh {
                store: open(),
                again: Box::new(open),
                _dir: None,
            })
        }
        Kind::Azure => {
            let az = common::azurite::azurite()?;
            let url = az.url("state.json");
            let open = move || -> Arc<dyn StateStore> { Arc::new(azure_store(&url)) };
            Some(Fresh {
                store: open(),
                again: Box::new(open),
                _dir: None,
            })
        }
    }
}

fn azure_store(url: &str) -> ObjectStore {
    let az = common::azurite::azurite().expect("Azurite");
    ObjectStore::open(url, &StoreSettings::default(), az.env()).unwrap()
}

fn object_store(url: &str) -> ObjectStore {
    let s3 = common::s3::s3().expect("the S3 server");
    ObjectStore::open(url, &StoreSettings::default(), s3.env()).unwrap()
}

/// A real object store under test: SeaweedFS's S3 API or Azurite.
#[derive(Clone, Copy)]
enum Remote {
    S3,
    Azure,
}

impl Remote {
    /// A fresh state URL in this store.
    fn url(self, name: &str) -> String {
        match self {
            Remote::S3 => common::s3::s3().expect("the S3 server").url(name),
            Remote::Azure => common::azurite::azurite().expect("Azurite").url(name),
        }
    }

    /// A store for `url`, configured from the standard environment as a user would.
    fn open(self, url: &str) -> ObjectStore {
        match self {
            Remote::S3 => object_store(url),
            Remote::Azure => azure_store(url),
        }
    }

    /// The raw bucket or container, to damage or inspect objects as an outsider would.
    fn raw(self) -> Arc<dyn object_store::ObjectStore> {
        match self {
            Remote::S3 => {
                let s3 = common::s3::s3().expect("the S3 server");
                Arc::new(
                    object_store::aws::AmazonS3Builder::new()
                        .with_bucket_name(common::s3::BUCKET)
                        .with_access_key_id(common::s3::ACCESS_KEY)
                        .with_secret_access_key(common::s3::SECRET_KEY)
                        .with_region("us-east-1")
                        .with_endpoint(&s3.endpoint)
                        .with_allow_http(true)
                        .build()
                        .unwrap(),
                )
            }
            Remote::Azure => common::azurite::azurite().expect("Azurite").container(),
        }
    }

    /// The object key of a state URL (`s3://BUCKET/KEY`, `az://CONTAINER/KEY`).
    fn key(self, url: &str) -> String {
        let (_, rest) = url.split_once("://").unwrap();
        rest.split_once('/').unwrap().1.to_string()
    }
}

/// Runs an object-store behaviour against SeaweedFS and against Azurite, each where present.
macro_rules! remote {
    ($s3:ident, $az:ident, $behaviour:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $s3() {
            if common::s3::s3().is_none() {
                return;
            }
            within($behaviour(Remote::S3)).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $az() {
            if common::azurite::azurite().is_none() {
                return;
            }
            within($behaviour(Remote::Azure)).await;
        }
    };
}

fn request(command: &str, wait: Duration, ttl: Duration) -> LockRequest {
    LockRequest {
        command: command.into(),
        wait,
        ttl,
        address: None,
    }
}

fn sample(members: usize) -> State {
    let mut s = State::new(APP);
    for i in 0..members {
        s.confirm(
            &g("@TGS#a"),
            &a(&format!("u{i}")),
            [m(1000), m(1001)],
            1_700_000_000,
        );
    }
    s
}

/// Runs `behaviour` against a fresh store of each kind.
macro_rules! both {
    ($file:ident, $s3:ident, $behaviour:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $file() {
            let f = fresh(Kind::File).unwrap();
            within($behaviour(&f)).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $s3() {
            let Some(f) = fresh(Kind::S3) else { return };
            within($behaviour(&f)).await;
        }
    };
}

both!(file_round_trip, s3_round_trip, round_trip);
async fn round_trip(f: &Fresh) {
    let first = f.store.load(APP).await.unwrap();
    assert_eq!(first, State::new(APP), "nothing stored is a first run");
    let mut st = sample(20);
    f.store.save(&mut st).await.unwrap();
    assert_eq!(st.serial, 1);
    st.confirm(&g("@TGS#b"), &a("x"), [m(1005)], 1_700_000_100);
    st.forget(&g("@TGS#a"), &a("u3"), [m(1000)]);
    f.store.save(&mut st).await.unwrap();
    assert_eq!(st.serial, 2);
    let other = (f.again)();
    assert_eq!(other.load(APP).await.unwrap(), st);
    // What `state pull` prints is a state file that reads back as the same state.
    let pulled = other.pull(None).await.unwrap();
    let back = marksync::state::parse(std::path::Path::new("pulled.json"), &pulled).unwrap();
    assert_eq!(back, st);
}

both!(file_intents, s3_intents, intents);
async fn intents(f: &Fresh) {
    let mut st = sample(5);
    f.store.save(&mut st).await.unwrap();
    st.intend(&g("@TGS#a"), &a("u1"), [m(1007)]);
    f.store.save_intents(&st).await.unwrap();
    let seen = (f.again)().load(APP).await.unwrap();
    assert_eq!(
        seen.intents, st.intents,
        "intents are read back before any save"
    );
    assert_eq!(
        seen.serial, 1,
        "recording intents does not change the serial"
    );
    st.confirm(&g("@TGS#a"), &a("u1"), [m(1007)], 1_700_000_200);
    f.store.save(&mut st).await.unwrap();
    let seen = (f.again)().load(APP).await.unwrap();
    assert!(
        seen.intents.is_empty(),
        "a save settles them: {:?}",
        seen.intents
    );
    assert_eq!(seen, st);
}

both!(file_lock_excludes, s3_lock_excludes, lock_excludes);
async fn lock_excludes(f: &Fresh) {
    let held = f
        .store
        .lock(&request("apply", Duration::ZERO, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(!held.lost());
    let other = (f.again)();
    let refused = other
        .lock(&request("import", Duration::ZERO, Duration::from_secs(10)))
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    assert_eq!(Error::State(refused).exit_code(), 5, "{text}");
    drop(held);
    let again = other
        .lock(&request("import", Duration::ZERO, Duration::from_secs(10)))
        .await;
    assert!(again.is_ok(), "released on drop: {:?}", again.err());
}

both!(file_other_app, s3_other_app, other_app);
async fn other_app(f: &Fresh) {
    let mut st = sample(1);
    f.store.save(&mut st).await.unwrap();
    let err = (f.again)().load(APP + 1).await.unwrap_err();
    assert!(matches!(err, StateError::OtherApp { .. }), "{err}");
}

// ---- the object store alone ----

remote!(
    s3_a_lost_race_is_a_conflict_naming_the_winner,
    az_a_lost_race_is_a_conflict_naming_the_winner,
    a_lost_race_is_a_conflict_naming_the_winner
);
async fn a_lost_race_is_a_conflict_naming_the_winner(r: Remote) {
    let url = r.url("state.json");
    let (one, two) = (r.open(&url), r.open(&url));
    let mut st = sample(3);
    one.save(&mut st).await.unwrap();
    let mut mine = one.load(APP).await.unwrap();
    let mut theirs = two.load(APP).await.unwrap();
    let _lock = two
        .lock(&request("run", Duration::ZERO, Duration::from_secs(30)))
        .await
        .unwrap();
    theirs.confirm(&g("@TGS#a"), &a("t"), [m(1000)], 1);
    two.save(&mut theirs).await.unwrap();
    mine.confirm(&g("@TGS#a"), &a("me"), [m(1000)], 1);
    let err = one.save(&mut mine).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StateError::Conflict { .. }), "{text}");
    assert!(
        text.contains("run (pid"),
        "names the winner's command: {text}"
    );
    assert_eq!(mine.serial, 1, "the serial of the refused save is not kept");
    // The winner's state stands.
    assert_eq!(r.open(&url).load(APP).await.unwrap(), theirs);
}

remote!(
    s3_a_corrupt_or_missing_entry_is_an_error_never_empty,
    az_a_corrupt_or_missing_entry_is_an_error_never_empty,
    a_corrupt_or_missing_entry_is_an_error_never_empty
);
async fn a_corrupt_or_missing_entry_is_an_error_never_empty(r: Remote) {
    let url = r.url("state.json");
    let store = r.open(&url);
    let mut st = sample(3);
    store.save(&mut st).await.unwrap();
    st.confirm(&g("@TGS#a"), &a("x"), [m(1000)], 1);
    store.save(&mut st).await.unwrap();
    st.confirm(&g("@TGS#a"), &a("y"), [m(1000)], 1);
    store.save(&mut st).await.unwrap();
    let raw = r.raw();
    let entry = |n: u64| ObjPath::from(format!("{}/journal/{n:020}.json", r.key(&url)));
    // A damaged delta.
    raw.put(&entry(1), b"{\"format_version\":1,".to_vec().into())
        .await
        .unwrap();
    let err = r.open(&url).load(APP).await.unwrap_err().to_string();
    assert!(
        err.contains("00000000000000000001.json") && err.contains("corrupt"),
        "{err}"
    );
    // A missing one in the middle.
    raw.delete(&entry(1)).await.unwrap();
    let err = r.open(&url).load(APP).await.unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
    // A snapshot with a member listed twice.
    let dup = format!(
        "{{\"format_version\":1,\"sdkappid\":{APP},\"serial\":1,\"groups\":{{\"@TGS#a\":{{\"u1\":{{\"1000\":1}},\"u1\":{{\"1000\":2}}}}}}}}"
    );
    raw.put(&entry(0), dup.into_bytes().into()).await.unwrap();
    raw.delete(&entry(2)).await.unwrap();
    let err = r.open(&url).load(APP).await.unwrap_err().to_string();
    assert!(err.contains("duplicate"), "{err}");
}

remote!(
    s3_bytes_per_save_grow_with_the_change_not_the_state,
    az_bytes_per_save_grow_with_the_change_not_the_state,
    bytes_per_save_grow_with_the_change_not_the_state
);
async fn bytes_per_save_grow_with_the_change_not_the_state(r: Remote) {
    let url = r.url("state.json");
    let store = r.open(&url);
    let mut st = sample(20_000);
    store.save(&mut st).await.unwrap();
    st.confirm(&g("@TGS#a"), &a("u7"), [m(1009)], 1_700_000_300);
    store.save(&mut st).await.unwrap();
    let raw = r.raw();
    let size = |n: u64| {
        let raw = raw.clone();
        let p = ObjPath::from(format!("{}/journal/{n:020}.json", r.key(&url)));
        async move { raw.head(&p).await.unwrap().size }
    };
    let (full, delta) = (size(0).await, size(1).await);
    assert!(full > 500_000, "the snapshot holds the whole state: {full}");
    assert!(delta < 400, "a one-member save writes {delta} bytes");
    assert_eq!(r.open(&url).load(APP).await.unwrap(), st);
}

remote!(
    s3_history_keeps_ten_snapshots_and_pulls_any_kept_serial,
    az_history_keeps_ten_snapshots_and_pulls_any_kept_serial,
    history_keeps_ten_snapshots_and_pulls_any_kept_serial
);
async fn history_keeps_ten_snapshots_and_pulls_any_kept_serial(r: Remote) {
    let url = r.url("state.json");
    let store = r.open(&url);
    let mut st = sample(2);
    let every = 64;
    for i in 0..(every * 11 + 3) {
        st.confirm(&g("@TGS#h"), &a("n"), [m(1000)], i as i64);
        store.save(&mut st).await.unwrap();
    }
    let kept = store.history().await.unwrap();
    let serials: Vec<u64> = kept.iter().map(|g| g.serial).collect();
    assert_eq!(serials.len(), 10, "{serials:?}");
    assert!(
        serials.windows(2).all(|w| w[0] > w[1]),
        "newest first: {serials:?}"
    );
    // The oldest kept snapshot, and a serial between two snapshots, replay exactly.
    for n in [*serials.last().unwrap(), serials[0] - 1, st.serial] {
        let bytes = store.pull(Some(n)).await.unwrap();
        let at = marksync::state::parse(std::path::Path::new("p.json"), &bytes).unwrap();
        assert_eq!(at.serial, n);
        assert_eq!(
            at.confirmed(&g("@TGS#h"), &a("n")).unwrap().get(m(1000)),
            Some(n as i64 - 1)
        );
    }
    let err = store.pull(Some(1)).await.unwrap_err().to_string();
    assert!(err.contains("not kept"), "{err}");
    assert_eq!(r.open(&url).load(APP).await.unwrap(), st);
}

remote!(
    s3_renewal_keeps_the_lease_and_never_touches_the_state,
    az_renewal_keeps_the_lease_and_never_touches_the_state,
    renewal_keeps_the_lease_and_never_touches_the_state
);
async fn renewal_keeps_the_lease_and_never_touches_the_state(r: Remote) {
    let url = r.url("state.json");
    let store = r.open(&url);
    let mut st = sample(2);
    store.save(&mut st).await.unwrap();
    let ttl = Duration::from_secs(1);
    let held = store
        .lock(&request("run", Duration::ZERO, ttl))
        .await
        .unwrap();
    let first = held.lease_deadline().unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert!(!held.lost());
    assert!(held.lease_deadline().unwrap() > first, "renewed");
    // A contender waiting 3 ttl never sees the renewed object unchanged for a ttl.
    let other = r.open(&url);
    let err = other
        .lock(&request("apply", ttl * 3, ttl))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::HeldBy { .. }), "{err}");
    assert_eq!(r.open(&url).load(APP).await.unwrap().serial, 1);
    assert_eq!(store.history().await.unwrap().len(), 1);
    // Another holder replacing the object: the lease is lost at the next renewal.
    r.raw()
        .put(
            &ObjPath::from(format!("{}.lock", r.key(&url))),
            b"{}".to_vec().into(),
        )
        .await
        .unwrap();
    common::wait_until("the lease to be lost", async || held.lost()).await;
}

remote!(
    s3_a_dead_holders_lock_is_taken_over_after_ttl_and_unlock_checks_the_id,
    az_a_dead_holders_lock_is_taken_over_after_ttl_and_unlock_checks_the_id,
    a_dead_holders_lock_is_taken_over_after_ttl_and_unlock_checks_the_id
);
async fn a_dead_holders_lock_is_taken_over_after_ttl_and_unlock_checks_the_id(r: Remote) {
    let url = r.url("state.json");
    let ttl = Duration::from_secs(1);
    let dead = r.open(&url);
    let held = dead
        .lock(&request("run", Duration::ZERO, ttl))
        .await
        .unwrap();
    let id = dead.holder().await.unwrap().unwrap().id;
    // A holder that stops renewing without releasing (killed): forget the lock value.
    std::mem::forget(held);
    let dead_task_gone = tokio::time::Instant::now();
    // It still renews from this process's runtime, so cut it off by replacing the
    // object with a copy that nobody renews.
    let raw = r.raw();
    let lock = ObjPath::from(format!("{}.lock", r.key(&url)));
    let body = raw.get(&lock).await.unwrap().bytes().await.unwrap();
    let mut holder: serde_json::Value = serde_json::from_slice(&body).unwrap();
    holder["expires"] = serde_json::json!(1);
    raw.put(&lock, holder.to_string().into_bytes().into())
        .await
        .unwrap();
    let next = r.open(&url);
    let unlock_err = next.unlock("not-the-id").await.unwrap_err().to_string();
    assert!(unlock_err.contains(&id), "names the real id: {unlock_err}");
    // Expired by the holder's clock: even without --lock-timeout, taken over after one
    // ttl of seeing it unchanged.
    let took = next
        .lock(&request("apply", Duration::ZERO, ttl))
        .await
        .unwrap();
    assert!(
        dead_task_gone.elapsed() >= ttl,
        "{:?}",
        dead_task_gone.elapsed()
    );
    assert_eq!(next.holder().await.unwrap().unwrap().command, "apply");
    drop(took);
    assert_eq!(next.holder().await.unwrap(), None, "released on drop");
    // unlock removes a lock by its id.
    let third = r.open(&url);
    let _held = third
        .lock(&request("run", Duration::ZERO, Duration::from_secs(30)))
        .await
        .unwrap();
    let id = third.holder().await.unwrap().unwrap().id;
    r.open(&url).unlock(&id).await.unwrap();
    assert_eq!(third.holder().await.unwrap(), None);
}

both!(file_push_pull, s3_push_pull, push_pull);
/// `state pull` then `state push` moves a state; push refuses unsettled intents, a serial not
/// higher than the current one (unless forced), and waits on no one when another holds the lock.
async fn push_pull(f: &Fresh) {
    use marksync::cmd::state_remote::push_in;
    let file = std::path::Path::new("moved.json");
    let req = request("state push", Duration::ZERO, Duration::from_secs(10));
    let mut st = sample(4);
    f.store.save(&mut st).await.unwrap();
    f.store.save(&mut st).await.unwrap();
    let pulled = f.store.pull(None).await.unwrap();
    // The same serial: refused, and --force replaces.
    let err = push_in(f.store.as_ref(), file, &pulled, APP, &req, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not higher") && err.contains("--force"),
        "{err}"
    );
    let serial = push_in(f.store.as_ref(), file, &pulled, APP, &req, true)
        .await
        .unwrap();
    assert_eq!(serial, 3);
    // A newer state with a change goes in as it is.
    let mut newer = marksync::state::parse(file, &pulled).unwrap();
    newer.serial = 10;
    newer.confirm(&g("@TGS#p"), &a("q"), [m(1000)], 5);
    let bytes = serde_json::to_vec(&newer).unwrap();
    assert_eq!(
        push_in(f.store.as_ref(), file, &bytes, APP, &req, false)
            .await
            .unwrap(),
        11
    );
    let seen = (f.again)().load(APP).await.unwrap();
    newer.serial = 11;
    assert_eq!(seen, newer);
    // Unsettled intents: refused before anything else.
    newer.serial = 20;
    newer.intend(&g("@TGS#p"), &a("q"), [m(1001)]);
    let bytes = serde_json::to_vec(&newer).unwrap();
    let err = push_in(f.store.as_ref(), file, &bytes, APP, &req, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsettled intents"), "{err}");
    // Another holder: exit 5, naming it.
    newer.intents.clear();
    let bytes = serde_json::to_vec(&newer).unwrap();
    let _held = (f.again)()
        .lock(&request("run", Duration::ZERO, Duration::from_secs(10)))
        .await
        .unwrap();
    let err = push_in(f.store.as_ref(), file, &bytes, APP, &req, false)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    assert_eq!((f.again)().load(APP).await.unwrap().serial, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_store_that_ignores_conditional_writes_is_refused_on_first_use() {
    let Some(s3) = common::s3::s3() else { return };
    within(async {
        let url = format!(
            "s3://{}/t{}/state.json",
            common::s3::OPEN_BUCKET,
            std::process::id()
        );
        let env = vec![
            (
                "AWS_ENDPOINT_URL".to_string(),
                format!("http://{}", s3.forgetful_addr),
            ),
            ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
            ("AWS_SKIP_SIGNATURE".to_string(), "true".to_string()),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ];
        let store = ObjectStore::open(&url, &StoreSettings::default(), env.clone()).unwrap();
        let mut st = sample(1);
        let err = store.save(&mut st).await.unwrap_err().to_string();
        assert!(err.contains("ignores conditional writes"), "{err}");
        let err = store
            .lock(&request("apply", Duration::ZERO, Duration::from_secs(10)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ignores conditional writes"), "{err}");
        // The same bucket through the plain relay honours them: it is the headers, not the bucket.
        let env: Vec<_> = env
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "AWS_ENDPOINT_URL" => (k, s3.endpoint.clone()),
                _ => (k, v),
            })
            .collect();
        let honest = ObjectStore::open(&url, &StoreSettings::default(), env).unwrap();
        honest.save(&mut st).await.unwrap();
    })
    .await;
}

remote!(
    s3_intents_that_fall_on_a_snapshot_keep_the_saved_state_and_serial,
    az_intents_that_fall_on_a_snapshot_keep_the_saved_state_and_serial,
    intents_that_fall_on_a_snapshot_keep_the_saved_state_and_serial
);
async fn intents_that_fall_on_a_snapshot_keep_the_saved_state_and_serial(r: Remote) {
    let url = r.url("state.json");
    let store = r.open(&url);
    let mut st = sample(3);
    for _ in 0..64 {
        store.save(&mut st).await.unwrap();
    }
    // Entry 64 is a snapshot: it holds the saved state with the new intents, and an
    // unsaved confirmation in memory does not leak into it.
    let mut working = st.clone();
    working.confirm(&g("@TGS#a"), &a("unsaved"), [m(1000)], 1);
    working.intend(&g("@TGS#a"), &a("u1"), [m(1003)]);
    store.save_intents(&working).await.unwrap();
    let seen = r.open(&url).load(APP).await.unwrap();
    let mut expected = st.clone();
    expected.intents = working.intents.clone();
    assert_eq!(seen, expected);
    assert_eq!(store.history().await.unwrap()[0].serial, 64);
    working.drop_intents(&g("@TGS#a"), &a("u1"), [m(1003)]);
    store.save(&mut working).await.unwrap();
    assert_eq!(r.open(&url).load(APP).await.unwrap(), working);
}

#[test]
fn s3_credentials_never_reach_debug_or_errors() {
    let env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            "AKIDSECRETKEYID".to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "very-secret-value".to_string(),
        ),
        (
            "AWS_SESSION_TOKEN".to_string(),
            "session-token-value".to_string(),
        ),
    ];
    let store = ObjectStore::open("s3://b/k.json", &StoreSettings::default(), env).unwrap();
    let shown = format!("{store:?} {}", store.describe());
    for secret in [
        "AKIDSECRETKEYID",
        "very-secret-value",
        "session-token-value",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let err = ObjectStore::open("s3://bucket-only", &StoreSettings::default(), vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://BUCKET/KEY"), "{err}");
    let err = ObjectStore::open("ftp://b/k", &StoreSettings::default(), vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("ftp://") && err.contains("s3://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_holder_cut_off_from_the_store_loses_its_lease_by_the_deadline() {
    let Some(s3) = common::s3::s3() else { return };
    within(async {
        let url = s3.url("state.json");
        let relay = s3.cuttable();
        let store = ObjectStore::open(&url, &StoreSettings::default(), relay.env(s3)).unwrap();
        let ttl = Duration::from_secs(1);
        let held = store
            .lock(&request("run", Duration::ZERO, ttl))
            .await
            .unwrap();
        tokio::time::sleep(ttl).await;
        assert!(!held.lost(), "renewed while the store answers");
        relay.cut();
        let deadline = held.lease_deadline().unwrap();
        common::wait_until("the lease to be lost", async || held.lost()).await;
        let now = tokio::time::Instant::now();
        assert!(
            now <= deadline + ttl,
            "lost {:?} after the deadline",
            now - deadline
        );
        assert!(
            held.lease_deadline().unwrap() <= now,
            "no renewal went through"
        );
        // Another process (reaching the store) takes the lease over once it is unchanged for ttl.
        let other = object_store(&url);
        let took = other.lock(&request("run", ttl * 5, ttl)).await;
        assert!(took.is_ok(), "{:?}", took.err());
        drop(held);
        assert_eq!(other.holder().await.unwrap().unwrap().command, "run");
    })
    .await;
}

/// Through the binary (a file state until the config's `state:` takes a URL): `state pull`
/// prints a state file that `state push` takes back, refusing the same serial, and the exit
/// codes and messages of `history` and `unlock`.
#[test]
fn cli_state_pull_push_history_unlock() {
    use common::cli::{EMBEDDED_CONFIG, embedded_dir, marksync};
    let desired = "groups:\n  \"@TGS#2PHYS101\":\n    members:\n      ms_chen: [1000]\n";
    let dir = embedded_dir(EMBEDDED_CONFIG, desired);
    let d = dir.path();
    assert_eq!(marksync(d, &["-q", "apply"]).code, 0);
    let pulled = marksync(d, &["state", "pull"]);
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    let st =
        marksync::state::parse(std::path::Path::new("pulled"), pulled.stdout.as_bytes()).unwrap();
    assert_eq!(st.serial, 1);
    std::fs::write(d.join("moved.json"), &pulled.stdout).unwrap();
    let same = marksync(d, &["state", "push", "moved.json"]);
    assert_eq!(same.code, 1);
    assert!(same.stderr.contains("not higher"), "{}", same.stderr);
    let forced = marksync(d, &["state", "push", "--force", "moved.json"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(forced.stdout.contains("now serial 2"), "{}", forced.stdout);
    let history = marksync(d, &["state", "history", "--json"]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert!(
        history.stdout.contains("\"generations\":[]"),
        "{}",
        history.stdout
    );
    let unlock = marksync(d, &["state", "unlock", "0123"]);
    assert_eq!(unlock.code, 1);
    assert!(
        unlock.stderr.contains("nothing to unlock"),
        "{}",
        unlock.stderr
    );
    let bad = marksync(d, &["state", "push", "--lock-timeout", "5", "moved.json"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("with a unit"), "{}", bad.stderr);
}

remote!(
    s3_a_retried_write_that_had_landed_is_not_a_conflict,
    az_a_retried_write_that_had_landed_is_not_a_conflict,
    a_retried_write_that_had_landed_is_not_a_conflict
);
/// A write whose answer was lost (the store kept it; a retry then finds the object there) is the
/// same write, not another writer: the identical object is taken as written.
async fn a_retried_write_that_had_landed_is_not_a_conflict(r: Remote) {
    use marksync::state::object::journal;
    let url = r.url("state.json");
    let store = r.open(&url);
    let mut st = sample(3);
    store.save(&mut st).await.unwrap();
    let before = st.clone();
    st.confirm(&g("@TGS#a"), &a("late"), [m(1000)], 7);
    let mut next = st.clone();
    next.serial += 1;
    // What the save is about to write at entry 1, already there.
    let body = serde_json::to_vec(&journal::delta(&before, &next)).unwrap();
    let entry = ObjPath::from(format!("{}/journal/{:020}.json", r.key(&url), 1));
    r.raw().put(&entry, body.into()).await.unwrap();
    store.save(&mut st).await.unwrap();
    assert_eq!(st.serial, 2);
    assert_eq!(r.open(&url).load(APP).await.unwrap(), st);
}

// ---- Azure Blob Storage (Azurite) ----

/// Runs `behaviour` against a fresh `az://` store.
macro_rules! azure {
    ($az:ident, $behaviour:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $az() {
            let Some(f) = fresh(Kind::Azure) else { return };
            within($behaviour(&f)).await;
        }
    };
}

azure!(az_round_trip, round_trip);
azure!(az_intents, intents);
azure!(az_lock_excludes, lock_excludes);
azure!(az_other_app, other_app);
azure!(az_push_pull, push_pull);

/// Through the binary, configured as a user would: `state: az://...`, the account and its
/// endpoint in `state_store:`, the key in the standard `AZURE_STORAGE_ACCOUNT_KEY`. `apply`
/// records in the container, `state pull` prints it, a second `apply` has nothing to do, and
/// nothing is written beside the config.
#[test]
fn az_cli_apply_pull_apply_through_the_binary() {
    use common::cli::{EMBEDDED_CONFIG, embedded_dir, marksync_command, run_bounded};
    let Some(az) = common::azurite::azurite() else {
        return;
    };
    let url = az.url("marksync/state.json");
    let config = EMBEDDED_CONFIG.replace(
        "state: state.json",
        &format!(
            "state: {url}\nstate_store:\n  endpoint: {}\n  account: {}\n  allow_http: true",
            az.endpoint,
            common::azurite::ACCOUNT
        ),
    );
    let desired =
        "groups:\n  \"@TGS#2PHYS101\":\n    members:\n      ms_chen: [1000]\n      host: [500]\n";
    let dir = embedded_dir(&config, desired);
    let run = |args: &[&str]| {
        let mut cmd = marksync_command();
        az.apply_env(&mut cmd);
        cmd.env_remove("AZURE_STORAGE_ENDPOINT")
            .env_remove("AZURE_STORAGE_ACCOUNT_NAME")
            .env_remove("AZURE_ALLOW_HTTP");
        let out = run_bounded(cmd.args(args).current_dir(dir.path()), "");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = run(&["apply"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Apply complete: 2 set"), "{out}");
    let (code, pulled, err) = run(&["state", "pull"]);
    assert_eq!(code, Some(0), "{err}");
    let st = marksync::state::parse(std::path::Path::new("pulled"), pulled.as_bytes()).unwrap();
    assert_eq!(st.serial, 1);
    assert!(
        st.confirmed(&g("@TGS#2PHYS101"), &a("ms_chen"))
            .is_some_and(|marks| marks.get(m(1000)).is_some()),
        "{pulled}"
    );
    let (code, out, err) = run(&["apply"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("No changes"),
        "the second apply has nothing to do: {out}"
    );
    let (code, out, err) = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The journal is in the container, and nothing named after the URL is beside the config.
    let journal = ObjPath::from(format!("{}/journal", Remote::Azure.key(&url)));
    let listed = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(az.container().list_with_delimiter(Some(&journal)))
        .unwrap()
        .objects;
    assert!(!listed.is_empty());
    assert!(!dir.path().join("az:").exists());
}

/// Azure through a gateway that drops `If-None-Match` and `If-Match` (reached with a SAS, which
/// does not sign them) is refused on first use, for saves and for the lock; the same account
/// straight to the emulator is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn az_a_store_that_ignores_conditional_writes_is_refused_on_first_use() {
    let Some(az) = common::azurite::azurite() else {
        return;
    };
    within(async {
        let url = az.url("state.json");
        let env = |endpoint: String| {
            vec![
                (
                    "AZURE_STORAGE_ACCOUNT_NAME".to_string(),
                    common::azurite::ACCOUNT.to_string(),
                ),
                ("AZURE_STORAGE_SAS_KEY".to_string(), az.sas()),
                ("AZURE_STORAGE_ENDPOINT".to_string(), endpoint),
                ("AZURE_ALLOW_HTTP".to_string(), "true".to_string()),
            ]
        };
        let forgetful = env(az.forgetful());
        let store = ObjectStore::open(&url, &StoreSettings::default(), forgetful).unwrap();
        let mut st = sample(1);
        let err = store.save(&mut st).await.unwrap_err().to_string();
        assert!(err.contains("ignores conditional writes"), "{err}");
        let err = store
            .lock(&request("apply", Duration::ZERO, Duration::from_secs(10)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ignores conditional writes"), "{err}");
        let honest =
            ObjectStore::open(&url, &StoreSettings::default(), env(az.endpoint.clone())).unwrap();
        honest.save(&mut st).await.unwrap();
    })
    .await;
}

/// An `az://` state without a storage account says where to put one (not the client library's
/// wording), and the account key never reaches `Debug` or an error.
#[test]
fn az_a_missing_account_is_named_in_the_users_terms_and_the_key_is_never_shown() {
    let err = ObjectStore::open("az://marksync/k.json", &StoreSettings::default(), vec![])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("state_store.account") && err.contains("AZURE_STORAGE_ACCOUNT_NAME"),
        "{err}"
    );
    // The emulator switch reads its address from AZURITE_BLOB_STORAGE_URL and would ignore an
    // endpoint set beside it: refused, not ignored.
    let emulator = vec![("AZURE_STORAGE_USE_EMULATOR".to_string(), "true".to_string())];
    let settings = StoreSettings {
        endpoint: Some("https://acct.blob.core.windows.net".into()),
        ..Default::default()
    };
    let err = ObjectStore::open("az://marksync/k.json", &settings, emulator.clone())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("AZURE_STORAGE_USE_EMULATOR") && err.contains("AZURITE_BLOB_STORAGE_URL"),
        "{err}"
    );
    assert!(
        ObjectStore::open("az://marksync/k.json", &StoreSettings::default(), emulator).is_ok(),
        "the emulator needs no account"
    );
    let key = "c2VjcmV0LWF6dXJlLWFjY291bnQta2V5";
    let env = vec![
        ("AZURE_STORAGE_ACCOUNT_NAME".to_string(), "acct".to_string()),
        ("AZURE_STORAGE_ACCOUNT_KEY".to_string(), key.to_string()),
    ];
    let store = ObjectStore::open("az://marksync/k.json", &StoreSettings::default(), env).unwrap();
    let shown = format!("{store:?} {}", store.describe());
    assert!(!shown.contains(key), "{shown}");
}

/// The emulator's own switch, as an Azurite user sets it: `AZURE_STORAGE_USE_EMULATOR=true`
/// and `AZURITE_BLOB_STORAGE_URL`, no `state_store:` (the development account is implied).
#[test]
fn az_cli_apply_with_the_emulator_switch() {
    use common::cli::{EMBEDDED_CONFIG, embedded_dir, marksync_command, run_bounded};
    let Some(az) = common::azurite::azurite() else {
        return;
    };
    let url = az.url("switch/state.json");
    let config = EMBEDDED_CONFIG.replace("state: state.json", &format!("state: {url}"));
    let desired = "groups:\n  \"@TGS#2PHYS101\":\n    members:\n      ms_chen: [1000]\n";
    let dir = embedded_dir(&config, desired);
    let run = |args: &[&str]| {
        let mut cmd = marksync_command();
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AZURE")) {
            cmd.env_remove(k);
        }
        cmd.env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", format!("http://{}", az.addr));
        let out = run_bounded(cmd.args(args).current_dir(dir.path()), "");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = run(&["apply"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Apply complete: 1 set"), "{out}");
    let (code, out, err) = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The same journal, read with the account key and endpoint instead.
    let seen = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(azure_store(&url).load(APP))
        .unwrap();
    assert_eq!(seen.serial, 1);
}

/// A wrong account key is refused in the user's terms, naming Azure's settings (not AWS's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn az_a_wrong_key_is_access_denied_naming_azures_credentials() {
    let Some(az) = common::azurite::azurite() else {
        return;
    };
    within(async {
        let wrong = "d3Jvbmcta2V5LWZvci1kZXZzdG9yZWFjY291bnQxLXh4eHh4eA==";
        let env: Vec<_> = az
            .env()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "AZURE_STORAGE_ACCOUNT_KEY" => (k, wrong.to_string()),
                _ => (k, v),
            })
            .collect();
        let store =
            ObjectStore::open(&az.url("state.json"), &StoreSettings::default(), env).unwrap();
        let err = store.load(APP).await.unwrap_err().to_string();
        assert!(
            err.contains("access denied") && err.contains("AZURE_STORAGE_ACCOUNT_KEY"),
            "{err}"
        );
        assert!(!err.contains("AWS_"), "{err}");
        assert!(!err.contains(wrong), "{err}");
    })
    .await;
}

/// A container that does not exist (a typo) is an error saying so in the user's terms, never an
/// empty state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn az_a_missing_container_is_an_error_never_an_empty_state() {
    let Some(az) = common::azurite::azurite() else {
        return;
    };
    within(async {
        let store = ObjectStore::open(
            "az://no-such-container/state.json",
            &StoreSettings::default(),
            az.env(),
        )
        .unwrap();
        let err = store.load(APP).await.unwrap_err().to_string();
        let said = |err: &str| {
            err.contains("container no-such-container does not exist") && !err.contains("<?xml")
        };
        assert!(said(&err), "{err}");
        let mut st = sample(1);
        let err = store.save(&mut st).await.unwrap_err().to_string();
        assert!(said(&err), "{err}");
    })
    .await;
}

remote!(
    s3_a_holder_whose_lock_was_taken_writes_nothing_more,
    az_a_holder_whose_lock_was_taken_writes_nothing_more,
    a_holder_whose_lock_was_taken_writes_nothing_more
);
/// A holder that lost its lock (another process took it over: here after `state unlock`) may
/// still have a save to make, such as a daemon's last one at shutdown. Written, it would be a
/// write by a process that no longer holds the state: the new holder's next save would then
/// meet a stranger's entry and stop. The store refuses it, saying why, and the new holder saves
/// on as if the old one had never been there.
async fn a_holder_whose_lock_was_taken_writes_nothing_more(r: Remote) {
    let url = r.url("state.json");
    let ttl = Duration::from_secs(1);
    let old = r.open(&url);
    let mut st = sample(2);
    old.save(&mut st).await.unwrap();
    let held = old
        .lock(&request("run", Duration::ZERO, ttl))
        .await
        .unwrap();
    let id = old.holder().await.unwrap().unwrap().id;
    let new = r.open(&url);
    new.unlock(&id).await.unwrap();
    let _taken = new
        .lock(&request("run", Duration::ZERO, ttl))
        .await
        .unwrap();
    let mut theirs = new.load(APP).await.unwrap();
    // The old holder's next renewal (every ttl/3) finds the lock replaced.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !held.lost() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the old holder sees its lock lost");

    st.confirm(&g("@TGS#a"), &a("late"), [m(1009)], 1_700_000_400);
    let e = old.save(&mut st).await.unwrap_err().to_string();
    assert!(e.contains("lock"), "{e}");
    assert!(e.contains("nothing was written"), "{e}");
    let e = old.save_intents(&st).await.unwrap_err().to_string();
    assert!(e.contains("nothing was written"), "{e}");

    theirs.confirm(&g("@TGS#a"), &a("new"), [m(1008)], 1_700_000_500);
    new.save(&mut theirs).await.unwrap();
    assert_eq!(r.open(&url).load(APP).await.unwrap(), theirs);
    drop(held);
}
