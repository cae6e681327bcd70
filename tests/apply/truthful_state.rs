//! State that tells the truth (issue 7, SPEC section 4): a lost answer, a failed save or a stop
//! leaves every mark accounted for, unknown rather than wrongly confirmed.

use super::*;

#[tokio::test]
async fn a_clear_whose_answer_was_lost_is_unknown_and_the_mark_is_set_again_when_desired() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#a", "u2", &[1000])]);
    env.applied(&want).await;

    // The clear reaches the service, its answer is lost (as when apply is killed while it is in
    // flight): the mark is gone from the service, and the state must not still call it confirmed.
    env.desire(&marks(&[("@TGS#a", "u2", &[1000])]));
    env.emu
        .inject_fault(Fault {
            count: Some(1),
            after: true,
            ..Fault::always(FaultKind::DropConnection)
        })
        .unwrap();
    let (applied, _) = env.execute(&env.fast_client(1), false).await;
    assert_eq!(applied.totals.failed, 1);
    assert_eq!(env.live(), marks(&[("@TGS#a", "u2", &[1000])]));
    let st = env.state();
    assert!(
        !st.intents.is_empty(),
        "the clear in flight is recorded as an intent"
    );

    // Desired again: the mark is unknown, so it is set again (not "No changes").
    env.desire(&want);
    assert_eq!(
        env.plan(false).await.summary.set,
        1,
        "the unknown mark is planned"
    );
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn a_clears_only_plan_with_an_unwritable_state_directory_sends_nothing() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#b", "u2", &[1001])]);
    env.applied(&want).await;
    let state_before = std::fs::read(env.state_path()).unwrap();

    env.desire(&marks(&[("@TGS#b", "u2", &[1001])]));
    let calls = env.emu.call_count();
    // Root ignores file modes, so break the directory another way: a regular file where the
    // state directory was. No temporary file can be created next to the state.
    let dir = env.state_path().parent().unwrap().to_path_buf();
    let moved = dir.with_extension("moved");
    let result = env
        .execute_with(
            &env.fast_client(1),
            &env.settings(),
            || {
                std::fs::rename(&dir, &moved).unwrap();
                std::fs::write(&dir, "not a directory").unwrap();
            },
            |_| {},
        )
        .await;
    let err = result.expect_err("the intent record cannot be written");
    assert_eq!(err.metric_label(), "write", "{err}");
    assert_eq!(env.emu.call_count(), calls, "no call was sent");
    assert_eq!(env.live(), want);
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    assert_eq!(std::fs::read(env.state_path()).unwrap(), state_before);
}

#[tokio::test]
async fn a_state_save_failing_mid_apply_stops_new_calls_and_keeps_every_mark_accounted_for() {
    let env = Env::start().await;
    let want = many_groups(12, false);
    env.online_and_desire(&want).await;
    // 12 calls at 4 a second take 3 s; the first bulk save comes after 1 s and fails: a
    // non-empty directory where the state file goes (the intents sidecar beside it still works).
    // Each call takes 400 ms, so some are in flight when the save fails: they must finish and be
    // reported, not be cut off.
    env.emu
        .inject_fault(Fault::always(FaultKind::Latency { ms: 400 }))
        .unwrap();
    let client = env.paced_client(4);
    let state = env.state_path().to_path_buf();
    let mut reported = 0;
    let result = env
        .execute_with(
            &client,
            &env.settings(),
            || std::fs::create_dir_all(state.join("obstacle")).unwrap(),
            |o| {
                if !matches!(o, Outcome::Skipped(_)) {
                    reported += 1;
                }
            },
        )
        .await;
    let err = result.expect_err("the save failure is reported");
    assert_eq!(err.metric_label(), "write", "{err}");
    let sent = env.emu.call_count();
    assert!(
        (1..12).contains(&sent),
        "sending stopped after the save failed: {sent} of 12 calls sent"
    );
    assert_eq!(reported, sent, "every call sent finished and was folded");
    env.emu.clear_faults();
    // Every mark is still accounted for: what was sent is confirmed or intended.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let plan = env.plan(false).await;
    assert_eq!(plan.summary.set, 24, "every mark is planned again");
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn clearing_an_offline_member_forgets_the_marks_instead_of_failing_forever() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "off", &[1000, 1001]),
        ("@TGS#a", "left", &[500, 1000]),
        ("@TGS#a", "stays", &[1000]),
    ]);
    env.applied(&want).await;
    env.assert_converged(&want);

    // "off" goes offline (the service drops its marks); "left" leaves the group (drops all, 500
    // included). Both are then removed from the desired files. The service answers each clear
    // with "every account is offline".
    env.emu.set_offline("@TGS#a", &["off"]).await.unwrap();
    env.emu.leave("@TGS#a", &["left"]).await.unwrap();
    let now = marks(&[("@TGS#a", "stays", &[1000])]);
    env.desire(&now);
    let (applied, outcomes) = env.execute(&env.fast_client(1), false).await;
    assert!(
        outcomes.iter().all(|o| !matches!(o, Outcome::Failed(_))),
        "{outcomes:?}"
    );
    assert_eq!(applied.totals.failed, 0);
    assert_eq!(
        applied.totals.cleared, 3,
        "the dropped marks count as cleared"
    );
    assert_eq!(applied.totals.pending, 1, "mark 500 stays unknown");
    assert!(!applied.partially_failed());
    assert_eq!(env.live(), now);
    assert_eq!(
        env.confirmed(),
        marks(&[("@TGS#a", "left", &[500]), ("@TGS#a", "stays", &[1000])])
    );
    let plan = env.plan(false).await;
    assert_eq!(
        (plan.summary.set, plan.summary.clear),
        (0, 1),
        "only mark 500 is cleared again"
    );
    assert_eq!(
        env.apply_default().await,
        exit::OK,
        "and that is not a failure"
    );
}

#[tokio::test]
async fn an_unknown_mark_500_stays_unknown_when_its_set_finds_the_member_away() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "host", &[500])]);
    env.applied(&want).await;

    // A clear of that 500 was in flight when an earlier run died (its intent is on record), and
    // the host has left the group since, which drops every mark.
    let mut st = env.state();
    let g = marksync::model::GroupId::new("@TGS#a").unwrap();
    let host = marksync::model::Account::new("host").unwrap();
    st.intend(&g, &host, [marksync::model::Mark::ALWAYS_ONLINE]);
    state::save(env.state_path(), &mut st).unwrap();
    env.emu.leave("@TGS#a", &["host"]).await.unwrap();

    // Desired, unknown: set again; the service answers "all offline". The 500 is still unknown,
    // not "confirmed" as it was before the clear.
    assert_eq!(env.apply_default().await, exit::OK);
    assert!(
        env.state().intents.contains_key(&g),
        "the unknown 500 lost its intent"
    );

    // The host comes back: the 500 is set again, not left missing for up to 60 hours.
    env.online("@TGS#a", &["host"]).await;
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn a_reasserted_mark_500_that_finds_the_member_away_is_unknown_not_still_confirmed() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "host", &[500])]);
    env.applied(&want).await;

    // The host leaves (its 500 goes with it); a reassert finds it away.
    env.emu.leave("@TGS#a", &["host"]).await.unwrap();
    let reassert = ApplyOptions {
        reassert: true,
        ..ApplyOptions::default()
    };
    assert_eq!(env.apply(reassert).await, exit::OK);
    assert!(env.live().is_empty());

    // Back again: a plain apply sets the 500, rather than trusting the old confirmation.
    env.online("@TGS#a", &["host"]).await;
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

/// A real full disk, where the platform lets this test mount a small tmpfs in a private mount
/// namespace (`unshare -m`): the state directory has room for the lock and the intents record but
/// not for the state itself, so the final save of a clears-only apply fails with ENOSPC. The
/// clears were sent; the intents record makes their marks unknown, so setting them again is
/// planned, where the state alone still calls them confirmed ("No changes").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_on_the_final_save_leaves_the_sent_clears_unknown_not_confirmed() {
    if !common::require_tool(
        "for a private mount namespace with a small tmpfs (root)",
        "unshare",
        &["-m", "true"],
    ) {
        return;
    }
    let env = Env::start().await;
    let want = many_groups(400, false);
    env.applied(&want).await;
    let mut fewer = want.clone();
    let dropped: Vec<String> = fewer.keys().take(10).cloned().collect();
    for g in &dropped {
        fewer.remove(g);
    }
    env.desire(&fewer);

    let dir = env.config.path.parent().unwrap();
    let script = r#"
        set -e
        cd "$DIR"
        cp -a state state.keep
        mount -t tmpfs -o size=512k tmpfs state
        cp -a state.keep/. state/
        avail=$(df -B1 --output=avail state | tail -1)
        dd if=/dev/zero of=state/fill bs=4096 count=$(( (avail - 12288) / 4096 )) 2>/dev/null
        set +e
        "$BIN" -c marksync.yaml -q apply
        rc=$?
        mkdir out
        cp -a state/. out/
        rm -f out/fill
        exit $rc
    "#;
    let out = run({
        let mut c = tokio::process::Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c", script])
            .env("DIR", dir)
            .env("BIN", BIN)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    })
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(env.live(), fewer, "the clears were sent");

    // What the next run sees: the state (unchanged, still claiming the marks) and the record.
    let state = dir.join("out/marksync.json");
    let st = state::load(&state, APP).unwrap();
    let g = marksync::model::GroupId::new(&dropped[0]).unwrap();
    assert!(st.groups.contains_key(&g), "the old generation is intact");
    assert!(
        st.intents.contains_key(&g),
        "the clear is recorded as unknown"
    );
    env.desire(&want);
    let desired = marksync::desired::load(&env.config.desired, env.config.max_alias_pairs).unwrap();
    let p = marksync::plan::plan(
        &desired,
        &st,
        cmd::wall_clock_now(),
        &marksync::plan::Policy::default(),
    );
    assert_eq!(p.summary.set, 20, "the cleared marks are set again");
}

/// `n` groups with one call each, all refused with 70009 (or, with `signal`, stopped from
/// outside after the first answer), at 2 calls a second: returns the calls the emulator saw.
async fn calls_after_a_stop(signal: bool) -> (u64, Duration) {
    let env = Env::start().await;
    let want = many_groups(10, false);
    env.online_and_desire(&want).await;
    if !signal {
        env.emu
            .inject_fault(Fault::always(FaultKind::ErrorCode { code: 70009 }))
            .unwrap();
    }
    let client = env.paced_client(2);
    let settings = env.settings();
    let stop = settings.stop.clone();
    let calls = env.emu.call_count();
    let started = Instant::now();
    let applied = env
        .execute_with(
            &client,
            &settings,
            || {},
            |_| stop.store(true, std::sync::atomic::Ordering::SeqCst),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(applied.fatal.is_some(), !signal);
    let st = env.state();
    assert_eq!(env.live().len() as u64, st.managed_count() as u64 / 2);
    assert!(st.intents.is_empty(), "{:?}", st.intents);
    (env.emu.call_count() - calls, elapsed)
}

#[tokio::test]
async fn after_a_fatal_code_no_call_waiting_on_the_rate_limiter_is_sent() {
    let (sent, elapsed) = calls_after_a_stop(false).await;
    // One call in flight when the answer came, possibly a second already granted its slot.
    assert!(sent <= 2, "{sent} calls sent after 70009");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn after_a_stop_from_outside_no_call_waiting_on_the_rate_limiter_is_sent() {
    let (sent, elapsed) = calls_after_a_stop(true).await;
    assert!(sent <= 2, "{sent} calls sent after the stop");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}
