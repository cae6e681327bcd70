//! Kill -9 of a writer of a state in a real S3 store (SeaweedFS, `tests/common/s3.rs`) and in
//! Azure Blob Storage's emulator (Azurite, `tests/common/azurite.rs`) at random instants: the journal stays readable at every step (compactions included), nothing a save
//! reported done goes missing, and the next writer takes the dead one's lock over after ttl.
//!
//! The writer is this test binary run again as a child (`writer`, which does nothing unless
//! `MARKSYNC_OBJECT_CRASH_URL` is set): under the lock, it records an intent for member `i`,
//! confirms it, saves, prints `saved i serial`, and goes on. Rounds: `MARKSYNC_CRASH_ROUNDS`
//! (default 6). The kills of `apply` and `run` themselves with the state in the store come with
//! the engine's move onto the seam.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{a, g, m};
use marksync::state::{LockRequest, ObjectStore, StateStore, StoreSettings};
use rand::Rng;

const APP: u64 = common::APP;
const TTL: Duration = Duration::from_secs(1);

/// The child: saves one member after another until killed.
#[test]
fn writer() {
    let Ok(url) = std::env::var("MARKSYNC_OBJECT_CRASH_URL") else {
        return;
    };
    let rt = common::runtime();
    rt.block_on(async {
        let store = ObjectStore::open(&url, &StoreSettings::default(), std::env::vars()).unwrap();
        let request = LockRequest {
            command: "crash-writer".into(),
            wait: Duration::from_secs(30),
            ttl: TTL,
            address: None,
        };
        let _lock = store.lock(&request).await.unwrap();
        let mut st = store.load(APP).await.unwrap();
        let mut out = std::io::stdout().lock();
        let mut i = st.managed_count();
        loop {
            let (group, account) = (g("@TGS#crash"), a(&format!("m{i:06}")));
            st.intend(&group, &account, [m(1000)]);
            store.save_intents(&st).await.unwrap();
            st.confirm(&group, &account, [m(1000)], i as i64);
            store.save(&mut st).await.unwrap();
            writeln!(out, "saved {i} {}", st.serial).unwrap();
            out.flush().unwrap();
            i += 1;
        }
    });
}

#[test]
fn kill_9_of_a_writer_leaves_a_readable_journal_with_nothing_missing() {
    let Some(s3) = common::s3::s3() else { return };
    kill_9_rounds(&s3.url("crash.json"), &s3.env());
}

/// The same against Azure Blob Storage's emulator (`tests/common/azurite.rs`).
#[test]
fn az_kill_9_of_a_writer_leaves_a_readable_journal_with_nothing_missing() {
    let Some(az) = common::azurite::azurite() else {
        return;
    };
    kill_9_rounds(&az.url("crash.json"), &az.env());
}

/// Kills writers of the state at `url` (reached with the environment `env`) at random instants
/// and checks the journal after each.
fn kill_9_rounds(url: &str, env: &[(String, String)]) {
    let open = || ObjectStore::open(url, &StoreSettings::default(), env.to_vec()).unwrap();
    let rounds: usize = std::env::var("MARKSYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let rt = common::runtime();
    let mut rng = rand::rng();
    let mut last_serial = 0;
    let mut last_saved: Option<usize> = None;
    for round in 0..rounds {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "writer", "--nocapture", "--test-threads", "1"])
            .env("MARKSYNC_OBJECT_CRASH_URL", url);
        for (k, _) in
            std::env::vars().filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("AZURE"))
        {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().cloned());
        let mut child = common::Proc::spawn(&mut cmd, dir.path().join(format!("w{round}.log")));
        // Until it has saved at least once (taking a dead writer's lock over costs a ttl), then
        // a random while longer: a kill before, during or after a compaction.
        common::poll("the writer's first save", Duration::from_secs(60), || {
            assert!(
                child.exited().is_none(),
                "writer exited: {}",
                child.stderr()
            );
            child.stdout().contains("saved").then_some(())
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        child.kill9();
        let printed: Vec<(usize, u64)> = child
            .stdout()
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("saved ")?.split(' ');
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            })
            .collect();
        let &(saved, serial) = printed.last().unwrap();
        let st = rt
            .block_on(open().load(APP))
            .unwrap_or_else(|e| panic!("round {round}: the journal is not readable: {e}"));
        // Everything reported saved is there; at most the one save in flight beyond it.
        let held = st.managed_count();
        assert!(
            held == saved + 1 || held == saved + 2,
            "round {round}: {held} members held, {saved} was the last reported saved"
        );
        assert!(
            st.serial >= serial && st.serial > last_serial,
            "round {round}"
        );
        for i in 0..held {
            let c = st.confirmed(&g("@TGS#crash"), &a(&format!("m{i:06}")));
            assert!(c.is_some(), "round {round}: member {i} missing");
        }
        // The only intent left is the one of the member in flight, if any.
        let in_flight: usize = st.intents.values().map(|a| a.len()).sum();
        assert!(in_flight <= 1, "round {round}: {:?}", st.intents);
        assert!(last_saved.is_none_or(|l| saved >= l), "round {round}");
        last_serial = st.serial;
        last_saved = Some(saved);
    }
    // A writer killed between a snapshot and its compaction leaves 11 snapshots; the next
    // writer's first save compacts.
    let kept = rt.block_on(async {
        let store = open();
        let mut st = store.load(APP).await.unwrap();
        store.save(&mut st).await.unwrap();
        store.history().await.unwrap()
    });
    assert!(!kept.is_empty() && kept.len() <= 10, "{kept:?}");
    eprintln!(
        "{rounds} kills; {} saves in all; kept snapshots at serials {:?}",
        last_serial,
        kept.iter().map(|g| g.serial).collect::<Vec<_>>()
    );
}
