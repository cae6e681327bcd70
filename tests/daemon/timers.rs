//! Timers: pending marks retried, reassert, and the mark 500 renewal.

use super::*;

#[test]
fn pending_marks_are_retried_when_the_member_comes_online() {
    let mut env = Env::with(|c| c.auto_create_groups = true);
    env.set("retry_pending_every", "1s");
    env.online("@TGS#P", &["alice"]);
    let want = marks(&[("@TGS#P", "alice", &[1000]), ("@TGS#P", "bob", &[1001])]);
    env.desire("p.yaml", &want);
    let d = env.start();
    env.wait_live(&marks(&[("@TGS#P", "alice", &[1000])]));
    assert_eq!(d.metric("marksync_pending_marks"), 1.0);
    env.online("@TGS#P", &["bob"]);
    env.wait_live_within(&want, Duration::from_secs(4));
    d.wait_reconciles("retry_pending", 1.0);
    poll("no pending marks", WAIT, || {
        (d.metric("marksync_pending_marks") == 0.0).then_some(())
    });
}

#[test]
fn reassert_resends_marks_dropped_behind_the_daemons_back() {
    let mut env = Env::new();
    env.set("reassert_every", "2s");
    let (a, b) = example();
    env.desire("a.yaml", &a);
    env.desire("b.yaml", &b);
    let d = env.start();
    let want = union(&[&a, &b]);
    env.wait_live(&want);
    // The emulator has no callback URL: the daemon is not told.
    env.offline("@TGS#2B", &["alice", "bob"]);
    env.online("@TGS#2B", &["alice", "bob"]);
    env.offline("@TGS#1A", &["teacher"]);
    env.online("@TGS#1A", &["teacher"]);
    assert_ne!(env.live(), want);
    env.wait_live_within(&want, Duration::from_secs(5));
    d.wait_reconciles("reassert", 1.0);
}

#[test]
fn the_renewal_timer_fires_when_the_earliest_mark_500_is_due() {
    let env = Env::new();
    env.online("@TGS#T", &["host"]);
    let want = marks(&[("@TGS#T", "host", &[500])]);
    env.desire("t.yaml", &want);
    // Due in ~2 s: 72 h - 12 h margin = 60 h after confirmation.
    let confirmed = unix_now() - (60 * HOUR - 2);
    env.write_state(&[("@TGS#T", "host", 500, confirmed)]);
    let t = Instant::now();
    let d = env.start();
    assert_eq!(env.calls(), 0, "not due at startup");
    // Unrelated file events keep waking the daemon meanwhile; none may push the renewal back.
    let noise = env.path("marks/noise.txt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noisy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::fs::write(&noise, i.to_string()).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(70));
            }
        })
    };
    poll("the renewal call", Duration::from_secs(6), || {
        (env.calls() >= 1).then_some(())
    });
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    noisy.join().unwrap();
    assert!(
        took >= Duration::from_millis(900),
        "renewed too early: {took:?}"
    );
    env.wait_live(&want);
    d.wait_reconciles("renewal", 1.0);
    env.settled(&d);
    assert_eq!(env.calls(), 1, "renewed once");
}
