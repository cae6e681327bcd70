//! Standby daemons (SPEC 11), as real processes against a real S3 server (SeaweedFS; the kill
//! also against Azure's emulator, Azurite) and the standalone emulator: two `marksync run` on one remote state. The second stands by (`/readyz`
//! 200 `standby`, `marksync_leader` 0, no call); after the active one is killed (SIGKILL), it
//! takes over within `lock_ttl` plus a round and applies what the files say.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, config, write_config};
use common::{StandaloneEmulator, marks, poll};

/// The longest a takeover may take here: `lock_ttl` (10 s) twice over, plus a round, on a busy
/// machine. Not a speed claim; the test reports the time it took.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(90);

fn setup(
    dir: &Path,
    emu: &StandaloneEmulator,
    url: &str,
    desired: &common::Marks,
) -> std::path::PathBuf {
    let mut c = config(&emu.endpoint());
    c.insert("state", url.to_string());
    c.insert("lock_ttl", "10s".into());
    c.insert(
        "notify",
        "[{url_env: MARKSYNC_TEST_HOOK, format: json, on: [takeover]}]".into(),
    );
    let path = write_config(dir, &c);
    common::write_atomic(&dir.join("marks/all.yaml"), &common::yaml(desired));
    path
}

/// Sends `d` an (unsigned) member-state callback: `account` came online in `group`. Returns
/// the status and body of the reply.
fn online(d: &Daemon, group: &str, account: &str) -> (u16, String) {
    let event = serde_json::json!({
        "CallbackCommand": "Group.CallbackOnMemberStateChange",
        "GroupId": group, "Type": "AVChatRoom", "EventType": "Online",
        "EventCause": "Join", "MemberList": [{"Member_Account": account}],
    });
    common::http(
        d.addr().unwrap(),
        "POST",
        &format!(
            "/callback?SdkAppid={}&CallbackCommand=Group.CallbackOnMemberStateChange&contenttype=json",
            common::APP
        ),
        Some(&event),
    )
    .unwrap()
}

/// `d`'s count of member-state callbacks with `outcome`.
fn callbacks(d: &Daemon, outcome: &str) -> Option<f64> {
    common::daemon::metric(
        &d.metrics(),
        &format!(
            "marksync_callbacks_total{{command=\"Group.CallbackOnMemberStateChange\",outcome=\"{outcome}\"}}"
        ),
    )
}

#[test]
fn a_standby_waits_without_calls_and_takes_over_when_the_active_daemon_is_killed() {
    let Some(s3) = common::s3::s3() else { return };
    takeover_after_a_kill(&s3.url("standby/state.json"), &|c| s3.apply_env(c));
}

/// The same with the state in Azure Blob Storage's emulator (`tests/common/azurite.rs`).
#[test]
fn az_a_standby_waits_without_calls_and_takes_over_when_the_active_daemon_is_killed() {
    let Some(az) = common::azurite::azurite() else {
        return;
    };
    takeover_after_a_kill(&az.url("standby/state.json"), &|c| az.apply_env(c));
}

/// Two daemons on the state at `url`, reached with what `store_env` sets; the active one is
/// killed and the standby takes over.
fn takeover_after_a_kill(url: &str, store_env: &dyn Fn(&mut std::process::Command)) {
    let emu = StandaloneEmulator::start();
    let first = marks(&[("@TGS#1A", "host", &[1000]), ("@TGS#1A", "ann", &[1001])]);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = setup(dir_a.path(), &emu, url, &first);
    let config_b = setup(dir_b.path(), &emu, url, &first);

    let hook = common::receiver::Receiver::answering(200, "");
    let env = |c: &mut std::process::Command| {
        store_env(c);
        c.env("MARKSYNC_TEST_HOOK", hook.url());
    };
    let mut a = Daemon::spawn(&config_a, dir_a.path().join("a.log"), env);
    a.wait_ready();
    poll(
        "the active daemon to apply",
        Duration::from_secs(30),
        || {
            common::diff(&emu.marks(), &first)
                .eq(&(vec![], vec![]))
                .then_some(())
        },
    );
    assert_eq!(a.metric("marksync_leader"), 1.0);

    let mut b = Daemon::spawn(&config_b, dir_b.path().join("b.log"), env);
    b.wait_ready();
    let (status, body) = b.get("/readyz");
    assert_eq!(status, 200);
    assert!(body.starts_with("standby: `run` (pid "), "{body}");
    assert!(body.contains(&format!("pid {}", a.proc.pid())), "{body}");
    assert_eq!(b.metric("marksync_leader"), 0.0);

    // The active daemon acts on a change; the standby sends nothing.
    let second = marks(&[("@TGS#1A", "host", &[1000]), ("@TGS#1A", "bob", &[1002])]);
    common::write_atomic(&dir_a.path().join("marks/all.yaml"), &common::yaml(&second));
    common::write_atomic(&dir_b.path().join("marks/all.yaml"), &common::yaml(&second));
    poll(
        "the active daemon to apply the change",
        Duration::from_secs(30),
        || {
            common::diff(&emu.marks(), &second)
                .eq(&(vec![], vec![]))
                .then_some(())
        },
    );
    assert_eq!(
        common::daemon::metric(&b.metrics(), "marksync_calls_total").unwrap_or(0.0),
        0.0,
        "a standby sends no call"
    );

    // A callback sent to the standby (as a load balancer may) reaches the active daemon.
    let (status, reply) = online(&b, "@TGS#1A", "bob");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        callbacks(&a, "accepted"),
        Some(1.0),
        "the active daemon took it"
    );
    assert_eq!(
        callbacks(&b, "forwarded"),
        Some(1.0),
        "the standby relayed it"
    );

    // The active daemon dies; the files change meanwhile; the standby takes over and applies.
    // Nothing is in flight at the kill, so every call after it is the new active daemon's, and
    // it sends only what the change needs: nothing again.
    a.wait_reconciles("callback", 1.0);
    emu.settle(Duration::from_secs(10));
    let calls_before = emu.calls();
    a.proc.kill9();
    let killed = Instant::now();
    let third = marks(&[("@TGS#1A", "host", &[1000]), ("@TGS#1A", "cy", &[1003])]);
    common::write_atomic(&dir_b.path().join("marks/all.yaml"), &common::yaml(&third));
    poll("the standby to take over", TAKEOVER_LIMIT, || {
        (b.metric("marksync_leader") == 1.0).then_some(())
    });
    let took_over = killed.elapsed();
    poll("the new active daemon to apply", TAKEOVER_LIMIT, || {
        common::diff(&emu.marks(), &third)
            .eq(&(vec![], vec![]))
            .then_some(())
    });
    let sent = b.metric("marksync_calls_total");
    assert_eq!(
        (emu.calls() - calls_before) as f64,
        sent,
        "the service saw the new active daemon's calls and no other"
    );
    assert!(
        (1.0..=2.0).contains(&sent),
        "setting cy and clearing bob takes one call each at most, nothing re-sent: {sent}"
    );
    eprintln!(
        "standby: took over {:.1?} after the kill, applied {:.1?} after it (lock_ttl 10s)",
        took_over,
        killed.elapsed()
    );
    let told = hook.wait_bodies(1, Duration::from_secs(30));
    assert_eq!(told[0]["event"], "takeover", "{told:?}");
    assert_eq!(hook.bodies().len(), 1, "told once: {:?}", hook.bodies());
    b.wait_ready();
    assert!(
        !b.get("/readyz").1.starts_with("standby"),
        "{}",
        b.get("/readyz").1
    );
    b.proc.signal("TERM");
    assert_eq!(b.proc.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// Three daemons; the active one is cut off from the store (its renewals hang): it stops
/// starting calls before its lease ends and exits 1, one of the two standbys takes over, the
/// other keeps standing by, and a change is applied once, by the new active daemon.
#[test]
fn a_daemon_cut_off_from_the_store_steps_down_and_one_of_two_standbys_takes_over() {
    let Some(s3) = common::s3::s3() else { return };
    let emu = StandaloneEmulator::start();
    let url = s3.url("standby3/state.json");
    let first = marks(&[("@TGS#3A", "host", &[1000])]);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let configs: Vec<_> = dirs
        .iter()
        .map(|d| setup(d.path(), &emu, &url, &first))
        .collect();
    let cut = s3.cuttable();
    let hook = common::receiver::Receiver::answering(200, "");
    let mut a = Daemon::spawn(&configs[0], dirs[0].path().join("a.log"), |c| {
        s3.apply_env(c);
        c.envs(cut.env(s3));
        c.env("MARKSYNC_TEST_HOOK", hook.url());
    });
    a.wait_ready();
    let plain = |c: &mut std::process::Command| {
        s3.apply_env(c);
        c.env("MARKSYNC_TEST_HOOK", hook.url());
    };
    let mut b = Daemon::spawn(&configs[1], dirs[1].path().join("b.log"), plain);
    let mut c = Daemon::spawn(&configs[2], dirs[2].path().join("c.log"), plain);
    b.wait_ready();
    c.wait_ready();
    assert_eq!(
        b.metric("marksync_leader") + c.metric("marksync_leader"),
        0.0
    );

    cut.cut();
    let cut_at = Instant::now();
    // The takeover does not wait for the cut-off daemon's exit: that one may spend a while on
    // its last save and its lock's release, both through the cut (each bounded by its timeout).
    poll("a standby to take over", TAKEOVER_LIMIT, || {
        (b.metric("marksync_leader") + c.metric("marksync_leader") == 1.0).then_some(())
    });
    let took_over = cut_at.elapsed();
    assert!(
        a.proc.stderr().contains("the state's lease"),
        "the cut-off daemon stopped calling: {}",
        a.proc.stderr()
    );
    let status = a.proc.wait_exit(Duration::from_secs(240));
    assert_eq!(status.code(), Some(1), "{}", a.proc.stderr());
    if a.proc.stderr().contains("has not stopped yet") {
        // The backstop ended it: something in its shutdown hung (once, the lease watcher held
        // the lock last; fixed). Not a failure of this test, which is about the takeover.
        eprintln!(
            "standby (network cut): the cut-off daemon needed the backstop to exit:\n{}",
            a.proc.stderr()
        );
    }
    let stepped_down = cut_at.elapsed();
    let (active, standby) = if b.metric("marksync_leader") == 1.0 {
        (&mut b, &mut c)
    } else {
        (&mut c, &mut b)
    };
    assert!(standby.get("/readyz").1.starts_with("standby: "));

    let second = marks(&[("@TGS#3A", "host", &[1000]), ("@TGS#3A", "dee", &[1004])]);
    for d in &dirs[1..] {
        common::write_atomic(&d.path().join("marks/all.yaml"), &common::yaml(&second));
    }
    poll("the new active daemon to apply", TAKEOVER_LIMIT, || {
        common::diff(&emu.marks(), &second)
            .eq(&(vec![], vec![]))
            .then_some(())
    });
    assert_eq!(
        common::daemon::metric(&standby.metrics(), "marksync_calls_total").unwrap_or(0.0),
        0.0,
        "the other standby sends nothing"
    );
    eprintln!(
        "standby (network cut): the cut-off daemon exited {stepped_down:.1?} after the cut, a standby took over {took_over:.1?} after it (lock_ttl 10s)"
    );
    active.proc.signal("TERM");
    standby.proc.signal("TERM");
    assert_eq!(
        active.proc.wait_exit(Duration::from_secs(30)).code(),
        Some(0)
    );
    assert_eq!(
        standby.proc.wait_exit(Duration::from_secs(30)).code(),
        Some(0)
    );
}

/// In a pod, `http.listen` binds all interfaces, which is no address a peer can use: the active
/// daemon is told the one its peers reach (`--advertise`, here from the environment as the
/// Kubernetes manifest sets it, without a port: the bound one), records it in the lock, and the
/// standby relays a callback there. A standby on all interfaces without it warns that nobody
/// could relay to it.
#[test]
fn a_standby_relays_callbacks_to_the_address_the_active_daemon_advertises() {
    let Some(s3) = common::s3::s3() else { return };
    let emu = StandaloneEmulator::start();
    let url = s3.url("advertise/state.json");
    let first = marks(&[("@TGS#AD", "host", &[1000])]);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wildcard = |dir: &Path| {
        let mut c = config(&emu.endpoint());
        c.insert("state", url.clone());
        c.insert("lock_ttl", "10s".into());
        c.insert(
            "http",
            "{ listen: 0.0.0.0:0, allow_unsigned_callbacks: true }".into(),
        );
        let path = write_config(dir, &c);
        common::write_atomic(&dir.join("marks/all.yaml"), &common::yaml(&first));
        path
    };
    let (config_a, config_b) = (wildcard(dir_a.path()), wildcard(dir_b.path()));
    let mut a = Daemon::spawn(&config_a, dir_a.path().join("a.log"), |c| {
        s3.apply_env(c);
        c.env("MARKSYNC_ADVERTISE", "127.0.0.1");
    });
    a.wait_ready();
    assert_eq!(a.metric("marksync_leader"), 1.0);
    assert!(
        !a.proc.stderr().contains("no --advertise"),
        "{}",
        a.proc.stderr()
    );
    let mut b = Daemon::spawn(&config_b, dir_b.path().join("b.log"), |c| {
        s3.apply_env(c);
        c.env_remove("MARKSYNC_ADVERTISE");
    });
    b.wait_ready();
    assert!(b.get("/readyz").1.starts_with("standby: "));
    b.wait_stderr("no --advertise address is set");

    let (status, reply) = online(&b, "@TGS#AD", "host");
    assert_eq!(status, 200, "relayed to the advertised address: {reply}");
    assert_eq!(
        callbacks(&a, "accepted"),
        Some(1.0),
        "the active daemon took it"
    );
    for d in [&a, &b] {
        d.proc.signal("TERM");
    }
    assert_eq!(a.proc.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(b.proc.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// `--advertise` where it means nothing, or with an address no peer can use, is refused at start
/// (exit 1, saying why), never ignored.
#[test]
fn an_advertised_address_that_cannot_work_is_refused_at_start() {
    let emu = StandaloneEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&emu.endpoint());
    let file_state = write_config(dir.path(), &c);
    let refused = |config: &Path, args: &[&str], env: Option<&str>, says: &str| {
        let mut cmd = common::cli::marksync_command();
        cmd.arg("-c").arg(config).arg("run").args(args);
        match env {
            Some(v) => cmd.env("MARKSYNC_ADVERTISE", v),
            None => cmd.env_remove("MARKSYNC_ADVERTISE"),
        };
        let out = common::cli::run_bounded(&mut cmd, "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} {env:?}: {stderr}");
    };
    refused(
        &file_state,
        &["--advertise", "0.0.0.0"],
        None,
        "wildcard address",
    );
    refused(
        &file_state,
        &[],
        Some("$(POD_IP)"),
        "is not HOST or HOST:PORT",
    );
    refused(&file_state, &["--advertise", "10.0.3.7:0"], None, "port 0");
    refused(
        &file_state,
        &[],
        Some("10.0.3.7"),
        "the state is a local file",
    );
    c.remove("http");
    c.insert("state", "s3://bucket/state.json".into());
    let no_listener = write_config(dir.path(), &c);
    refused(
        &no_listener,
        &["--advertise", "10.0.3.7"],
        None,
        "no `http.listen`",
    );
}

/// A standby's readiness follows its desired files as they change (git-sync swaps a checkout in
/// while it stands by): broken at start, it is not ready; fixed, it turns ready (a rolling update
/// waits for that); broken again, it says so. It still sends nothing.
#[test]
fn a_standby_follows_its_desired_files_while_it_waits() {
    let Some(s3) = common::s3::s3() else { return };
    let emu = StandaloneEmulator::start();
    let url = s3.url("standby-files/state.json");
    let first = marks(&[("@TGS#SF", "host", &[1000])]);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = setup(dir_a.path(), &emu, &url, &first);
    let config_b = setup(dir_b.path(), &emu, &url, &first);
    let hook = common::receiver::Receiver::answering(200, "");
    let env = |c: &mut std::process::Command| {
        s3.apply_env(c);
        c.env("MARKSYNC_TEST_HOOK", hook.url());
    };
    let mut a = Daemon::spawn(&config_a, dir_a.path().join("a.log"), env);
    a.wait_ready();
    let broken = dir_b.path().join("marks/all.yaml");
    common::write_atomic(&broken, "groups: [not a map\n");
    let mut b = Daemon::spawn(&config_b, dir_b.path().join("b.log"), env);
    b.wait_listening();
    let readyz = |d: &Daemon| d.get("/readyz");
    poll(
        "the standby to say it stands by",
        Duration::from_secs(30),
        || (readyz(&b).1.contains("standby")).then_some(()),
    );
    let (status, body) = readyz(&b);
    assert_ne!(status, 200, "broken files: not ready: {body}");
    assert!(body.contains("not ready to take over"), "{body}");
    assert!(
        body.contains("all.yaml at line 1"),
        "where, not what: {body}"
    );

    common::write_atomic(&broken, &common::yaml(&first));
    poll("the standby to turn ready", Duration::from_secs(30), || {
        (readyz(&b).0 == 200).then_some(())
    });
    assert!(readyz(&b).1.starts_with("standby: "), "{:?}", readyz(&b));

    common::write_atomic(&broken, "groups: [not a map\n");
    poll(
        "the standby to turn unready",
        Duration::from_secs(30),
        || (readyz(&b).0 != 200).then_some(()),
    );
    assert_eq!(
        common::daemon::metric(&b.metrics(), "marksync_calls_total").unwrap_or(0.0),
        0.0,
        "a standby sends no call"
    );
    for d in [&a, &b] {
        d.proc.signal("TERM");
    }
    assert_eq!(a.proc.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(b.proc.wait_exit(Duration::from_secs(30)).code(), Some(0));
}
