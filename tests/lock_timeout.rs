//! `--lock-timeout` on a local state, through the binary: the command waits for the holder (and
//! says so), goes on once the lock is free, and a signal ends the wait with nothing sent.

mod common;

use std::time::Duration;

use common::Proc;
use common::cli::{EMBEDDED_CONFIG, embedded_dir, marksync_command};

const DESIRED: &str = "groups:\n  \"@TGS#2PHYS101\":\n    members:\n      ms_chen: [1000]\n";

fn waiting(dir: &std::path::Path, name: &str) -> Proc {
    let mut cmd = marksync_command();
    cmd.args(["apply", "--lock-timeout", "1m"]).current_dir(dir);
    let proc = Proc::spawn(&mut cmd, dir.join(name));
    common::poll(
        "apply to say it waits for the lock",
        Duration::from_secs(30),
        || {
            proc.stderr()
                .contains("waiting up to 1m for the state's lock, held by pid")
                .then_some(())
        },
    );
    proc
}

#[test]
fn apply_waits_for_the_lock_and_goes_on_once_it_is_free() {
    let dir = embedded_dir(EMBEDDED_CONFIG, DESIRED);
    let held = marksync::state::lock(&dir.path().join("state.json")).unwrap();
    let mut proc = waiting(dir.path(), "apply.log");
    drop(held);
    let status = proc.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", proc.stderr());
    assert!(
        proc.stdout().contains("Apply complete: 1 set"),
        "{}",
        proc.stdout()
    );
}

#[test]
fn a_signal_ends_the_wait_for_the_lock_with_nothing_sent() {
    let dir = embedded_dir(EMBEDDED_CONFIG, DESIRED);
    let _held = marksync::state::lock(&dir.path().join("state.json")).unwrap();
    let mut proc = waiting(dir.path(), "apply.log");
    proc.signal("TERM");
    let status = proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{}", proc.stderr());
    assert!(
        proc.stderr()
            .contains("stopped while waiting for the state's lock; nothing was sent"),
        "{}",
        proc.stderr()
    );
    assert!(!dir.path().join("state.json").exists(), "nothing recorded");
}
