//! Locking, the mass-clear guard and crash safety: a symlinked or locked state, the guard at its
//! edges, and intents left by a crash.

use super::*;

/// Whether `p` is a symbolic link (not followed).
fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[tokio::test]
async fn a_symlinked_state_is_written_through_and_tells_the_truth_after_the_link_is_recreated() {
    let env = Env::start().await;
    let link = env.state_path().to_path_buf();
    let state_dir = link.parent().unwrap().to_path_buf();
    let volume = state_dir.parent().unwrap().join("volume");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::create_dir_all(&volume).unwrap();
    let target = volume.join("marksync.json");
    // Dangling until the first save: a first run on a freshly mounted volume.
    std::os::unix::fs::symlink("../volume/marksync.json", &link).unwrap();

    let first = marks(&[("@TGS#a", "host", &[500, 1000]), ("@TGS#a", "t", &[1001])]);
    env.applied(&first).await;
    let second = marks(&[("@TGS#a", "host", &[500]), ("@TGS#a", "u", &[1002])]);
    env.applied(&second).await;
    env.assert_converged(&second);

    assert!(is_link(&link), "the state path stays a link");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&volume),
        ["marksync.json", "marksync.json.bak", "marksync.json.lock"],
        "the target, its .bak and its lock, side by side (intents folded)"
    );
    assert_eq!(names(&state_dir), ["marksync.json"], "only the link");
    let on_target = state::load(&target, APP).unwrap();
    assert_eq!(common::confirmed_marks(&on_target), second);
    let bak = state::backup_path(&target);
    let bak = state::parse(&bak, &std::fs::read(&bak).unwrap()).unwrap();
    assert_eq!(
        bak.serial + 1,
        on_target.serial,
        ".bak is the previous generation"
    );

    // A restart or remount recreates the link: the state still says what the service holds.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(env.live(), second);
    assert_eq!(
        env.confirmed(),
        second,
        "the state read through the new link"
    );
    assert!(env.plan(false).await.is_empty());
}

#[tokio::test]
async fn a_locked_state_exits_5_and_is_left_intact() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000])]);
    env.applied(&want).await;
    let bytes = std::fs::read(env.state_path()).unwrap();

    env.desire(&marks(&[("@TGS#a", "u1", &[1001])]));
    let held = state::lock(env.state_path()).unwrap();
    let calls = env.emu.call_count();
    match within(cmd::apply_with(
        &env.config,
        &ApplyOptions::default(),
        Arc::new(SystemClock),
    ))
    .await
    {
        Err(e) => {
            assert_eq!(e.exit_code(), exit::LOCKED);
            assert!(
                e.to_string().contains(&std::process::id().to_string()),
                "{e}"
            );
        }
        Ok(c) => panic!("expected the lock to be refused, got exit {c}"),
    }
    drop(held);
    assert_eq!(env.emu.call_count(), calls);
    assert_eq!(std::fs::read(env.state_path()).unwrap(), bytes);
}

#[tokio::test]
async fn the_mass_clear_guard_refuses_with_exit_3_and_sends_nothing() {
    let env = Env::start().await;
    let mut all = Marks::new();
    for i in 0..20 {
        all.entry("@TGS#a".into())
            .or_default()
            .insert(format!("u{i:02}"), vec![1000]);
    }
    env.online_all(&all).await;
    env.desire(&all);
    assert_eq!(env.apply_default().await, exit::OK);
    let serial = env.state().serial;

    // Keep 5 of 20: 15 clears, more than 25% and more than 10.
    let mut few = all.clone();
    few.get_mut("@TGS#a")
        .unwrap()
        .retain(|a, _| a.as_str() < "u05");
    env.desire(&few);
    let calls = env.emu.call_count();
    assert_eq!(env.apply_default().await, exit::MASS_CLEAR);
    assert_eq!(env.emu.call_count(), calls, "nothing sent");
    assert_eq!(env.state().serial, serial, "nothing written");
    assert_eq!(env.live(), all);

    let opts = ApplyOptions {
        allow_mass_clear: true,
        ..ApplyOptions::default()
    };
    assert_eq!(env.apply(opts).await, exit::OK);
    env.assert_converged(&few);
}

/// `n` members `u00`, `u01`, ... of `group`, each with mark 1000.
fn members_with_1000(group: &str, n: usize) -> Marks {
    let names: Vec<String> = (0..n).map(|i| format!("u{i:02}")).collect();
    let rows: Vec<(&str, &str, &[u32])> = names
        .iter()
        .map(|a| (group, a.as_str(), &[1000][..]))
        .collect();
    marks(&rows)
}

/// The guard at its edges, through `apply` (issue 14): a plan is refused only when it clears
/// more than `min_clears` *and* more than `max_clear_fraction` of the managed marks. Exactly at
/// either limit it goes through; one more clear is refused with nothing sent or written, and
/// `--allow-mass-clear` then lets it through.
#[tokio::test]
async fn the_mass_clear_guard_at_its_edges() {
    // (managed, clears, max_clear_fraction, min_clears, refused)
    let cases = [
        (20, 10, 0.25, 10, false), // 50%, but exactly min_clears
        (20, 11, 0.25, 10, true),  // one more than min_clears
        (48, 12, 0.25, 10, false), // exactly 25%, more than min_clears
        (48, 13, 0.25, 10, true),  // just over 25%
        (8, 2, 0.25, 1, false),    // exactly 25% with a low min_clears
        (8, 3, 0.25, 1, true),
        (10, 1, 0.1, 0, false), // exactly 10%, min_clears 0
        (10, 2, 0.1, 0, true),
        (4, 4, 1.0, 0, false), // a fraction of 1 lets everything through
    ];
    for (managed, clears, fraction, min_clears, refused) in cases {
        let what = format!("{clears} of {managed}, guard {fraction} / {min_clears}");
        let mut env = Env::start().await;
        env.config.guard.max_clear_fraction = fraction;
        env.config.guard.min_clears = min_clears;
        let all = members_with_1000("@TGS#e", managed);
        env.applied(&all).await;
        let serial = env.state().serial;
        let mut kept = all.clone();
        kept.values_mut()
            .for_each(|m| m.retain(|a, _| a.as_str() >= format!("u{clears:02}").as_str()));
        kept.retain(|_, m| !m.is_empty());
        env.desire(&kept);
        let calls = env.emu.call_count();
        if refused {
            assert_eq!(env.apply_default().await, exit::MASS_CLEAR, "{what}");
            assert_eq!(env.emu.call_count(), calls, "{what}: nothing sent");
            assert_eq!(env.state().serial, serial, "{what}: nothing written");
            assert_eq!(env.live(), all, "{what}");
            let opts = ApplyOptions {
                allow_mass_clear: true,
                ..ApplyOptions::default()
            };
            assert_eq!(
                env.apply(opts).await,
                exit::OK,
                "{what} with --allow-mass-clear"
            );
        } else {
            assert_eq!(env.apply_default().await, exit::OK, "{what}");
        }
        env.assert_converged(&kept);
    }
}

/// The refusal through the binary: exit 3, the message says what to do, nothing sent, the state
/// file byte for byte as it was; `--allow-mass-clear` then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_clear_refused_by_the_binary_sends_nothing() {
    let env = Env::start().await;
    let all = members_with_1000("@TGS#bin", 20);
    env.applied(&all).await;
    let bytes = std::fs::read(env.state_path()).unwrap();
    let few = marks(&[("@TGS#bin", "u19", &[1000])]);
    env.desire(&few);
    let calls = env.emu.call_count();
    let out = run(marksync(&env.config.path, &["apply"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::MASS_CLEAR)),
        "{stderr}"
    );
    assert!(
        stderr.contains("refusing to clear 19 of 20 managed marks")
            && stderr.contains("--allow-mass-clear"),
        "{stderr}"
    );
    assert_eq!(env.emu.call_count(), calls, "nothing sent");
    assert_eq!(
        std::fs::read(env.state_path()).unwrap(),
        bytes,
        "nothing written"
    );
    assert_eq!(env.live(), all);

    let out = run(marksync(&env.config.path, &["apply", "--allow-mass-clear"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    env.assert_converged(&few);
}

#[tokio::test]
async fn intents_left_by_a_crash_are_cleared_and_foreign_marks_are_not() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000])]);
    env.online("@TGS#a", &["u1", "u2", "u3"]).await;
    env.desire(&want);
    assert_eq!(env.apply_default().await, exit::OK);

    // The crash: an apply recorded intents (u2: 1001, u1: 1002), sent the call, and died before
    // folding the answer. Meanwhile the desired files dropped those marks. u3's 1003 was set by
    // someone else: marksync never set it and must never touch it.
    let client = env.fast_client(1);
    for (acc, mark) in [("u2", 1001), ("u1", 1002), ("u3", 1003)] {
        let req = marksync::tim::wire::ModifyUserInfoRequest {
            group_id: "@TGS#a".into(),
            command_type: marksync::tim::wire::CommandType::Set,
            member_list: vec![marksync::tim::wire::MemberMarks {
                account: acc.into(),
                marks: vec![mark],
            }],
        };
        client.modify_user_info(&req).await.unwrap();
    }
    let mut st = env.state();
    let g = marksync::model::GroupId::new("@TGS#a").unwrap();
    let mark = |n| marksync::model::Mark::new(n).unwrap();
    let acc = |s| marksync::model::Account::new(s).unwrap();
    st.intend(&g, &acc("u2"), [mark(1001)]);
    st.intend(&g, &acc("u1"), [mark(1002)]);
    state::save(env.state_path(), &mut st).unwrap();

    let plan = env.plan(false).await;
    assert_eq!(plan.summary.clear, 2);
    assert_eq!(env.apply_default().await, exit::OK);
    assert_eq!(
        env.live(),
        marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#a", "u3", &[1003])])
    );
    assert_eq!(env.confirmed(), want);
    assert!(env.state().intents.is_empty());
}
