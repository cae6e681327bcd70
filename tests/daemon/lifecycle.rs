//! Startup, shutdown (SIGTERM, a second daemon on the same state) and SIGHUP's config reload.

use super::*;

#[test]
fn startup_reconciles_then_ready_and_sigterm_saves_state() {
    let env = Env::standalone();
    let (a, b) = example();
    env.desire("a.yaml", &a);
    env.desire("b.yaml", &b);
    let mut d = env.start();
    env.wait_live(&union(&[&a, &b]));
    assert_eq!(d.reconciles("startup"), 1.0);
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(
        d.metric("marksync_leader"),
        1.0,
        "the one daemon of its state acts"
    );
    // The startup line names where calls go: the URL, not the kind of endpoint.
    let log = d.proc.stderr();
    let url = env.config["endpoint"].clone();
    assert!(
        log.contains(&format!("endpoint {url} ")) && log.contains(&format!("endpoint={url} ")),
        "{log}"
    );

    d.proc.signal("TERM");
    let status = d.proc.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", d.proc.stderr());
    let state = env.state();
    assert_eq!(state["format_version"], 1);
    assert_eq!(state["sdkappid"], APP);
    assert!(state["groups"]["@TGS#1A"]["host"]["500"].is_i64());
    assert!(state["groups"]["@TGS#2B"]["bob"]["1002"].is_i64());
    assert!(
        state["intents"]
            .as_object()
            .is_none_or(serde_json::Map::is_empty)
    );
}

#[test]
fn a_second_daemon_on_the_same_state_exits_5_naming_the_first() {
    let env = Env::new();
    env.desire("a.yaml", &example().0);
    let first = env.start();
    let mut second = env.spawn();
    let status = second.proc.wait_exit(WAIT);
    assert_eq!(status.code(), Some(5), "{}", second.proc.stderr());
    let err = second.proc.stderr();
    assert!(
        err.contains(&format!("pid {}", first.proc.pid())),
        "names the holder: {err}"
    );
    assert_eq!(first.readyz(), 200, "the first keeps running");
}

#[test]
fn sigterm_during_a_slow_reconcile_stops_sending_and_exits_0_with_state_saved() {
    let env = Env::new();
    // One group, 1,200 members: three calls of one group, which run in order.
    let mut want = Marks::new();
    let members = want.entry("@TGS#BIG".into()).or_default();
    for i in 0..1200 {
        members.insert(format!("u{i:04}"), vec![1000 + i % 3]);
    }
    env.desire("big.yaml", &want);
    env.emu()
        .inject_fault(Fault::always(FaultKind::Latency { ms: 1500 }))
        .unwrap();
    let mut d = env.spawn();
    poll("the first call to arrive", WAIT, || {
        (env.calls() >= 1).then_some(())
    });
    d.wait_listening();
    assert_eq!(
        d.readyz(),
        503,
        "not ready before the first reconcile is over"
    );
    let t = Instant::now();
    d.proc.signal("TERM");
    let status = d.proc.wait_exit(WAIT);
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "{}", d.proc.stderr());
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    assert!(env.calls() < 3, "no new calls after SIGTERM");
    // The call in flight finished and its members are recorded.
    let state = env.state();
    let recorded = state["groups"]["@TGS#BIG"]
        .as_object()
        .map_or(0, |m| m.len());
    assert_eq!(recorded, 500, "the call in flight is recorded");
    assert_eq!(env.live()["@TGS#BIG"].len(), 500);
}

#[test]
fn sighup_refuses_a_bad_config_and_applies_a_good_one() {
    let (mut env, mut d, a, _) = running();
    std::fs::write(
        env.path("marksync.yaml"),
        format!("{}reassert_evry: 1s\n", env.config_text()),
    )
    .unwrap();
    d.proc.signal("HUP");
    d.wait_stderr("the new config is invalid; keeping the old one");
    assert!(d.proc.exited().is_none());
    let b2 = marks(&[("@TGS#2B", "erin", &[1008])]);
    env.desire("b.yaml", &b2);
    env.wait_live(&union(&[&a, &b2]));

    assert_eq!(d.reconciles("reassert"), 0.0);
    env.set("reassert_every", "1s");
    env.write_config();
    d.proc.signal("HUP");
    poll(
        "a reassert after the reload",
        Duration::from_secs(5),
        || (d.reconciles("reassert") >= 1.0).then_some(()),
    );
}
