//! The daemon in this process, against the emulator in this process: what needs the whole loop
//! (files, the client, the state) but no signals or systemd (those stay in `tests/daemon.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Input, RunOptions, run};
use crate::clock::SystemClock;
use crate::emulator::{Emulator, EmulatorConfig};

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const ADMIN: &str = "administrator";

/// A temp directory with a config (debounce 100 ms, timers at an hour) and `marks/`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(endpoint: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.key"), format!("{KEY}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("marks")).unwrap();
        let config = format!(
            "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: secret.key\nendpoint: {endpoint}\n\
             desired: marks/\nstate: state/marksync.json\ndebounce: 100ms\n\
             retry_pending_every: 1h\nreassert_every: 1h\n"
        );
        std::fs::write(dir.path().join("marksync.yaml"), config).unwrap();
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts the daemon; returns its input channel and its task.
    fn start(
        &self,
    ) -> (
        mpsc::Sender<Input>,
        tokio::task::JoinHandle<Result<u8, crate::error::Error>>,
    ) {
        let (tx, rx) = mpsc::channel(64);
        let config = self.path("marksync.yaml");
        let sender = tx.clone();
        let task = tokio::spawn(async move {
            run(
                &config,
                RunOptions::default(),
                Arc::new(SystemClock),
                sender,
                rx,
            )
            .await
        });
        (tx, task)
    }

    fn state_text(&self) -> String {
        std::fs::read_to_string(self.path("state/marksync.json")).unwrap_or_default()
    }
}

fn group_file(group: &str, account: &str) -> String {
    format!("groups:\n  \"{group}\":\n    members:\n      {account}: [1000]\n")
}

/// Waits (at most `limit`) until `cond` holds.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

async fn stop(
    tx: mpsc::Sender<Input>,
    task: tokio::task::JoinHandle<Result<u8, crate::error::Error>>,
) {
    tx.send(Input::Shutdown).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the daemon stops")
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_file_that_could_not_be_read_is_read_again_without_a_file_event() {
    let setup = Setup::new("embedded");
    // `a.yaml` points at a file that is not there yet (a rename in progress); it appears later
    // outside the watched directory, so no event under `marks/` says so.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("a.yaml");
    std::os::unix::fs::symlink(&target, setup.path("marks/a.yaml")).unwrap();
    let (tx, task) = setup.start();
    // The startup read comes right after the lock. (Should the file appear before that read,
    // this test passes without testing anything; it can never fail for that reason.)
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .path("state/marksync.json.lock")
            .exists())
        .await,
        "the daemon started"
    );
    tokio::task::yield_now().await;
    std::fs::write(&target, group_file("@TGS#io", "alice")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || setup
            .state_text()
            .contains("@TGS#io"))
        .await,
        "the file was read again on its own and applied: {}",
        setup.state_text()
    );
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_fatal_code_no_call_is_sent_during_the_backoff() {
    // The emulator holds another key: every call is answered 70009 (bad signature), fatal.
    let emu = Emulator::start(EmulatorConfig::new(APP, OTHER_KEY, ADMIN))
        .await
        .unwrap();
    let setup = Setup::new(&emu.base_url());
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#f", "alice")).unwrap();
    let (tx, task) = setup.start();
    assert!(
        wait_until(Duration::from_secs(10), || emu.call_count() >= 1).await,
        "the startup reconcile called"
    );
    let after_startup = emu.call_count();
    // Triggers during the pause: none may send another badly signed call.
    tx.send(Input::Reassert).await.unwrap();
    tx.send(Input::RetryPending).await.unwrap();
    std::fs::write(setup.path("marks/a.yaml"), group_file("@TGS#f", "bob")).unwrap();
    let sent_more = wait_until(Duration::from_secs(2), || emu.call_count() > after_startup).await;
    assert!(
        !sent_more,
        "no call within the backoff: {} calls",
        emu.call_count()
    );
    stop(tx, task).await;
}
