//! Faults: convergence under every kind of fault, fatal codes, refused calls, and groups that
//! disappear.

use super::*;

/// 20 groups x 30 members; every member gets 1000, even ones 1001. Then an edit clears 1001 and
/// sets 1002 on odd ones. Both converge under `fault` at rate 0.2 within a bounded number of
/// applies, with no stray mark left.
async fn converges_under(kind: FaultKind, after: bool) {
    let env = Env::start().await;
    let mut a = Marks::new();
    let mut b = Marks::new();
    for g in 0..20 {
        let group = format!("@TGS#f{g:02}");
        for u in 0..30 {
            let acc = format!("u{u:02}");
            let ma = if u % 2 == 0 {
                vec![1000, 1001]
            } else {
                vec![1000]
            };
            let mb = if u % 2 == 0 {
                vec![1000]
            } else {
                vec![1000, 1002]
            };
            a.entry(group.clone()).or_default().insert(acc.clone(), ma);
            b.entry(group.clone()).or_default().insert(acc, mb);
        }
    }
    env.online_all(&a).await;
    env.emu
        .inject_fault(Fault {
            rate: 0.2,
            after,
            ..Fault::always(kind.clone())
        })
        .unwrap();
    // Three attempts per call, so that some calls do fail after retries and need another apply.
    let client = env.fast_client(3);
    for want in [&a, &b] {
        env.desire(want);
        let mut applies = 0;
        while !env.plan(false).await.is_empty() {
            applies += 1;
            assert!(applies <= 6, "{kind:?}: not converged after 6 applies");
            let (applied, _) = env.execute(&client, false).await;
            assert!(applied.fatal.is_none(), "{kind:?}: {:?}", applied.fatal);
        }
    }
    env.emu.clear_faults();
    // A call the client gave up on may still land late: wait until each is answered (the
    // emulator logs a call when it answers it), or until longer than any injected latency,
    // after which one never answered was dropped with its connection. Then look.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let stats = env.emu.stats(true);
        if stats.log.map_or(0, |l| l.len()) as u64 >= stats.calls_total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.assert_converged(&b);
    assert!(
        client.stats().retries > 0,
        "{kind:?}: the fault fired and was retried"
    );
}

/// One test per fault: `name: kind, whether the fault strikes after the call was applied;`.
macro_rules! converges_under {
    ($($(#[doc = $doc:literal])* $name:ident: $kind:expr, $after:expr;)*) => {$(
        $(#[doc = $doc])*
        #[tokio::test]
        async fn $name() {
            converges_under($kind, $after).await;
        }
    )*};
}

converges_under! {
    converges_under_system_errors_10002: FaultKind::ErrorCode { code: 10002 }, false;
    converges_under_rate_limit_answers_60018: FaultKind::ErrorCode { code: 60018 }, false;
    converges_under_http_502: FaultKind::HttpStatus { status: 502 }, false;
    converges_under_http_502_after_the_call_was_applied: FaultKind::HttpStatus { status: 502 }, true;
    /// 1 s of latency against a 300 ms request timeout.
    converges_under_timeouts: FaultKind::Latency { ms: 1000 }, false;
    converges_under_dropped_connections_after_the_call_was_applied: FaultKind::DropConnection, true;
}

#[tokio::test]
async fn fatal_70009_stops_with_exit_1_and_changes_nothing() {
    let env = Env::start().await;
    let before = marks(&[
        ("@TGS#a", "u1", &[1000]),
        ("@TGS#a", "u2", &[1000, 1001]),
        ("@TGS#b", "u3", &[1002]),
    ]);
    env.online_all(&before).await;
    env.online("@TGS#b", &["u4"]).await;
    env.desire(&before);
    assert_eq!(env.apply_default().await, exit::OK);
    let state_before = env.state();

    let after = marks(&[("@TGS#a", "u2", &[1001]), ("@TGS#b", "u4", &[1003])]);
    env.desire(&after);
    env.emu
        .inject_fault(Fault::always(FaultKind::ErrorCode { code: 70009 }))
        .unwrap();
    let calls = env.emu.call_count();
    assert_eq!(env.apply_default().await, exit::ERROR);
    assert!(env.emu.call_count() > calls, "it did try");
    assert_eq!(env.live(), before, "nothing cleared, nothing set");
    let state_after = env.state();
    assert_eq!(state_after.groups, state_before.groups, "no state change");
    assert!(state_after.intents.is_empty(), "no intent left behind");

    env.emu.clear_faults();
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&after);
}

#[tokio::test]
async fn a_call_refused_after_retries_exits_4_and_keeps_what_succeeded() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#b", "u2", &[1001])]);
    env.online_and_desire(&want).await;
    // One call is refused with a code that is neither retryable, fatal nor "offline": that
    // call fails, the other group's call succeeds and is recorded.
    env.emu
        .inject_fault(Fault {
            count: Some(1),
            ..Fault::always(FaultKind::ErrorCode { code: 10019 })
        })
        .unwrap();
    assert_eq!(env.apply_default().await, exit::PARTIAL);
    let st = env.state();
    assert_eq!(st.managed_count(), 1, "the successful call is recorded");
    assert!(st.intents.is_empty(), "a refused call leaves no intent");
    assert_eq!(
        env.apply_default().await,
        exit::OK,
        "the next apply finishes the job"
    );
    env.assert_converged(&want);
}

#[tokio::test]
async fn a_dissolved_group_is_forgotten_and_the_rest_still_applies() {
    let env = Env::start().await;
    let before = marks(&[
        ("@TGS#gone", "u1", &[1000]),
        ("@TGS#gone", "u2", &[1001]),
        ("@TGS#stay", "u1", &[1000]),
    ]);
    env.online_all(&before).await;
    env.online("@TGS#stay", &["u2"]).await;
    env.desire(&before);
    assert_eq!(env.apply_default().await, exit::OK);

    env.emu.dissolve_group("@TGS#gone").unwrap();
    // gone: a clear then a set call; stay: a set call.
    let after = marks(&[
        ("@TGS#gone", "u1", &[1002]),
        ("@TGS#gone", "u2", &[1001]),
        ("@TGS#stay", "u1", &[1000]),
        ("@TGS#stay", "u2", &[1003]),
    ]);
    env.desire(&after);
    let client = env.fast_client(3);
    let (applied, outcomes) = env.execute(&client, false).await;
    assert!(applied.fatal.is_none() && !applied.partially_failed());
    assert_eq!(applied.totals.groups_gone, 1);
    assert!(matches!(outcomes[..], [_, _, _]), "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::GroupGone(_)))
            .count(),
        1
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Skipped(marksync::outcome::Skip::GroupGone))),
        "the group's second call is not sent"
    );
    let st = env.state();
    assert!(st.groups.keys().all(|g| g.as_str() != "@TGS#gone"));
    assert!(st.intents.is_empty());
    assert_eq!(env.live()["@TGS#stay"], after["@TGS#stay"]);

    // Once the group leaves the desired files too, there is nothing left to do.
    let mut rest = after.clone();
    rest.remove("@TGS#gone");
    env.desire(&rest);
    assert!(env.plan(false).await.is_empty());
    env.assert_converged(&rest);
}
