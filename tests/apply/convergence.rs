//! Convergence with the fewest calls, members who are offline or drop their marks, and the
//! service's limits.

use super::*;

#[tokio::test]
async fn first_apply_converges_and_records_what_the_service_confirmed() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "host", &[500, 1000]),
        ("@TGS#a", "teacher", &[1000, 1001]),
        ("@TGS#b", "viewer", &[600]),
    ]);
    env.applied(&want).await;
    env.assert_converged(&want);
    assert_eq!(env.emu.call_count(), 2, "one set call per group");
}

#[tokio::test]
async fn second_apply_sends_no_calls() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#a", "u2", &[1001])]);
    env.applied(&want).await;
    let calls = env.emu.call_count();
    let serial = env.state().serial;
    assert!(env.plan(false).await.is_empty());
    assert_eq!(env.apply_default().await, exit::OK);
    assert_eq!(
        env.emu.call_count(),
        calls,
        "a converged apply sends nothing"
    );
    assert_eq!(env.state().serial, serial, "and does not rewrite the state");
    env.assert_converged(&want);
}

#[tokio::test]
async fn an_edit_sends_exactly_the_lower_bound_of_calls_and_converges() {
    let env = Env::start().await;
    // Group a: 700 members with 1000 (two set calls). Group b: 3 members.
    let names: Vec<String> = (0..700).map(|i| format!("m{i:03}")).collect();
    let mut before = Marks::new();
    for n in &names {
        before
            .entry("@TGS#a".into())
            .or_default()
            .insert(n.clone(), vec![1000]);
    }
    before.extend(marks(&[
        ("@TGS#b", "x", &[1000, 1001]),
        ("@TGS#b", "y", &[1001]),
        ("@TGS#b", "z", &[1002]),
    ]));
    env.online_all(&before).await;
    env.online("@TGS#b", &["w"]).await;
    env.desire(&before);
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&before);

    // The edit: in a, 100 members lose 1000 and 600 members gain 1001 (clears: 100 members,
    // sets: 600 members -> 1 + 2 calls); in b, x loses 1001, w joins, y switches 1001 -> 1003.
    let mut after = before.clone();
    let a = after.get_mut("@TGS#a").unwrap();
    for (i, n) in names.iter().enumerate() {
        if i < 100 {
            a.remove(n);
        } else {
            a.insert(n.clone(), vec![1000, 1001]);
        }
    }
    after.get_mut("@TGS#b").unwrap().extend([
        ("x".to_string(), vec![1000]),
        ("w".to_string(), vec![1002]),
        ("y".to_string(), vec![1003]),
    ]);
    env.desire(&after);
    let plan = env.plan(false).await;
    let bound = lower_bound(&plan);
    assert_eq!(bound, 3 + 2);
    assert_eq!(plan.calls.len(), bound);
    let calls = env.emu.call_count();
    assert_eq!(env.apply_default().await, exit::OK);
    assert_eq!(env.emu.call_count() - calls, bound as u64);
    env.assert_converged(&after);
}

#[tokio::test]
async fn offline_members_stay_pending_and_are_set_once_online() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "on", &[1000]),
        ("@TGS#a", "off", &[1000, 1001]),
        // Every member of b is offline: the call itself fails (all-offline code 10004).
        ("@TGS#b", "off2", &[1000]),
    ]);
    env.online_all(&want).await;
    env.emu.set_offline("@TGS#a", &["off"]).await.unwrap();
    env.emu.set_offline("@TGS#b", &["off2"]).await.unwrap();
    env.desire(&want);

    assert_eq!(
        env.apply_default().await,
        exit::OK,
        "pending is not an error"
    );
    let only_on = marks(&[("@TGS#a", "on", &[1000])]);
    assert_eq!(env.live(), only_on);
    assert_eq!(env.confirmed(), only_on, "pending marks are not confirmed");
    assert!(env.state().intents.is_empty(), "nor left as intents");
    assert_eq!(env.plan(false).await.summary.set, 3, "still planned");

    env.emu.set_online("@TGS#a", &["off"]).await.unwrap();
    env.emu.set_online("@TGS#b", &["off2"]).await.unwrap();
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn marks_dropped_by_going_offline_come_back_with_reassert() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "u1", &[1000, 1001]),
        ("@TGS#a", "u2", &[1000]),
        ("@TGS#a", "host", &[500]),
    ]);
    env.applied(&want).await;
    env.assert_converged(&want);

    // u1 drops and comes back: the service cleared its marks, marksync cannot know.
    env.emu.set_offline("@TGS#a", &["u1"]).await.unwrap();
    env.emu.set_online("@TGS#a", &["u1"]).await.unwrap();
    // The host keeps 500 through a disconnection (that is what 500 is for).
    env.emu.set_offline("@TGS#a", &["host"]).await.unwrap();
    assert!(!env.live()["@TGS#a"].contains_key("u1"));
    assert!(
        env.plan(false).await.is_empty(),
        "a plain plan cannot see it"
    );

    let calls = env.emu.call_count();
    let opts = ApplyOptions {
        reassert: true,
        ..ApplyOptions::default()
    };
    assert_eq!(env.apply(opts.clone()).await, exit::OK);
    assert_eq!(env.emu.call_count() - calls, 1, "one call re-sends all");
    env.assert_converged(&want);

    // u2 is offline *during* a reassert: the response shows its mark is not there, so the
    // state must stop claiming it, and a plain apply puts it back once u2 is online again.
    env.emu.set_offline("@TGS#a", &["u2"]).await.unwrap();
    assert_eq!(env.apply(opts).await, exit::OK);
    assert!(
        !env.confirmed()["@TGS#a"].contains_key("u2"),
        "a mark the service just refused is not recorded as confirmed"
    );
    assert!(
        env.state().intents.keys().any(|g| g.as_str() == "@TGS#a"),
        "but kept as an intent, so it is cleared should it stop being desired"
    );
    env.emu.set_online("@TGS#a", &["u2"]).await.unwrap();
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn ten_marks_of_a_thousand_members_converge_and_clears_free_capacity_first() {
    let env = Env::start().await;
    let all: Vec<u32> = (1000..1010).collect();
    let names: Vec<String> = (0..1500).map(|i| format!("s{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.online("@TGS#big", &refs).await;
    // 1000 members x 10 marks: every mark at its 1000-member limit, the group at 10 marks.
    let mut want = Marks::new();
    let g = want.entry("@TGS#big".into()).or_default();
    for n in &names[..1000] {
        g.insert(n.clone(), all.clone());
    }
    env.desire(&want);
    let opts = ApplyOptions {
        json: true, // one line per call instead of 10,000 plan lines
        ..ApplyOptions::default()
    };
    assert_eq!(env.plan(false).await.calls.len(), 2, ">500 members: split");
    assert_eq!(env.apply(opts.clone()).await, exit::OK);
    env.assert_converged(&want);

    // Move 1009 from the first 400 members to 400 new ones, and replace 1008 by 1010 for
    // everyone. Only clears-before-sets fits: 1400 members on 1009 or 11 marks would be refused.
    let g = want.get_mut("@TGS#big").unwrap();
    for (i, n) in names.iter().enumerate() {
        let mut m: Vec<u32> = (1000..1008).collect();
        m.push(1010);
        if i < 400 {
            g.insert(n.clone(), m);
        } else if i < 1000 {
            m.push(1009);
            m.sort_unstable();
            g.insert(n.clone(), m);
        } else if i < 1400 {
            g.insert(n.clone(), vec![1009]);
        }
    }
    env.desire(&want);
    let plan = env.plan(false).await;
    assert_eq!(plan.calls.len(), lower_bound(&plan));
    let opts = ApplyOptions {
        allow_mass_clear: false,
        ..opts
    };
    assert_eq!(env.apply(opts).await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn desired_files_over_the_service_limits_are_refused_before_any_call() {
    let env = Env::start().await;
    let eleven: Vec<u32> = (1000..1011).collect();
    let mut want = Marks::new();
    want.entry("@TGS#a".into())
        .or_default()
        .insert("u".into(), eleven);
    env.desire(&want);
    assert_eq!(env.apply_default().await, exit::ERROR);

    let mut want = Marks::new();
    let g = want.entry("@TGS#a".into()).or_default();
    for i in 0..1001 {
        g.insert(format!("u{i}"), vec![1000]);
    }
    env.desire(&want);
    assert_eq!(env.apply_default().await, exit::ERROR);
    assert_eq!(env.emu.call_count(), 0);
    assert!(!env.state_path().exists(), "no state written");
}
