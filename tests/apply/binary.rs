//! The real binary: kill -9 mid-apply, two concurrent processes, and `--json` output.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_apply_then_apply_again_leaves_exactly_the_desired_marks() {
    let dir = tempfile::tempdir().unwrap();
    // The standalone emulator binds port 0 and reports its address.
    let emu = tokio::task::block_in_place(StandaloneEmulator::start);
    let config = write_config(dir.path(), &emu.endpoint());
    let cfg_path = config.path.clone();
    let blocking = |f: &dyn Fn(&StandaloneEmulator)| tokio::task::block_in_place(|| f(&emu));
    blocking(&|e| e.inject(serde_json::json!({"kind": "latency", "ms": 200})));

    write_desired(&config.desired, &many_groups(600, false));
    let mut apply = marksync(&cfg_path, &["-q", "apply"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("150 calls", async || {
        tokio::task::block_in_place(|| emu.calls()) >= 150
    })
    .await;
    apply.start_kill().unwrap(); // SIGKILL
    let status = within(apply.wait()).await.unwrap();
    assert!(!status.success(), "it was killed mid-way: {status:?}");

    let st = state::load(common::state_file(&config), APP).expect("the state survives kill -9");
    assert!(
        !st.intents.is_empty(),
        "killed before the end, so some intents are unresolved"
    );
    // Calls in flight at the kill may still land (their 200 ms latency is slept either way);
    // wait until each is answered or dropped before looking.
    blocking(&|e| {
        e.settle(Duration::from_secs(2));
        e.clear_faults();
    });

    // Half the groups are no longer desired: what the killed run set there must go.
    let want = many_groups(600, true);
    write_desired(&config.desired, &want);
    let out = run(marksync(&cfg_path, &["-q", "apply", "--allow-mass-clear"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let live = tokio::task::block_in_place(|| emu.marks());
    assert_eq!(live, want, "exactly the desired marks, no stray ones");
    let st = state::load(common::state_file(&config), APP).unwrap();
    assert!(st.intents.is_empty());
    assert_eq!(st.managed_count(), 600);
    let out = run(marksync(&cfg_path, &["plan", "--detailed-exitcode"])).await;
    assert_eq!(out.status.code(), Some(0), "nothing left to do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_apply_process_exits_5_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "embedded");
    let want = many_groups(500, false);
    write_desired(&config.desired, &want);
    let first = marksync(&config.path, &["-q", "apply"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id().unwrap();
    let lock = state::lock_path(common::state_file(&config));
    wait_until("the first apply's lock", async || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid.to_string())
    })
    .await;
    let second = run(marksync(&config.path, &["apply"])).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");

    let out = within(first.wait_with_output()).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = state::load(common::state_file(&config), APP).expect("intact and parseable");
    assert!(st.intents.is_empty());
    assert_eq!(st.managed_count(), 1000);
}

#[tokio::test]
async fn apply_json_prints_the_plan_then_one_line_per_call_then_the_summary() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "on", &[1000]),
        ("@TGS#a", "off", &[1000]),
        ("@TGS#b", "u", &[1001]),
    ]);
    env.online_all(&want).await;
    env.emu.set_offline("@TGS#a", &["off"]).await.unwrap();
    env.desire(&want);
    let out = run(marksync(&env.config.path, &["-q", "apply", "--json"])).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 1 + 2 + 1, "{text}");
    let plan = &lines[0];
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["summary"]["calls"], 2);
    assert_eq!(plan["calls"].as_array().unwrap().len(), 2);
    let mut outcomes: Vec<(String, String)> = lines[1..3]
        .iter()
        .map(|l| {
            assert_eq!(l["command"], "set");
            (
                l["group"].as_str().unwrap().into(),
                l["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("@TGS#a".into(), "partial".into()),
            ("@TGS#b".into(), "ok".into())
        ]
    );
    let a = lines[1..3].iter().find(|l| l["group"] == "@TGS#a").unwrap();
    assert_eq!(a["pending"][0]["account"], "off");
    assert_eq!(a["confirmed"][0]["account"], "on");
    let summary = &lines[3]["summary"];
    assert_eq!(summary["set"], 2);
    assert_eq!(summary["pending"], 1);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["calls"], 2);
}
