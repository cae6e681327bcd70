//! The standalone emulator (`marksync emulator`): addresses, busy ports, and its world file.

use super::*;

#[tokio::test]
async fn standalone_refuses_non_loopback_addresses() {
    let err = within(marksync::emulator::run_standalone(
        config(),
        "0.0.0.0:0".parse().unwrap(),
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn unknown_paths_and_methods_do_not_crash_it() {
    let h = Harness::start(config()).await;
    let (s, v) = h.raw("v4/nope/nothing", &[], "{}").await;
    assert_eq!((s, code(&v)), (404, 10003), "{v}");
    let resp = within(h.http.get(format!("{}/{MODIFY}", h.emu.base_url())).send())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let (s, v) = h.raw(MODIFY, &[("sdkappid", "%%%".into())], "\u{0}").await;
    assert_eq!((s, code(&v)), (200, 60006), "{v}");
    // A debug print of the config never shows the key.
    assert!(!format!("{:?}", config()).contains(KEY));
}

#[tokio::test]
async fn standalone_reports_a_busy_port() {
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = busy.local_addr().unwrap();
    let err = within(marksync::emulator::run_standalone(config(), addr))
        .await
        .unwrap_err();
    assert!(
        matches!(err, marksync::emulator::EmulatorError::Bind { .. }),
        "{err}"
    );
}

/// Issue 16: `marksync emulator` on a taken port fails with an error naming the address, and
/// never says "listening" first (an operator would read that as a running emulator).
#[test]
fn the_binary_on_a_taken_port_fails_clearly_and_never_says_listening() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = common::cli::marksync(dir.path(), &["emulator", "--listen", &addr]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot listen on {addr}: the port is in use")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("listening"), "{}", out.stderr);
}

/// Issue 16: an emulator with a world file (`endpoint: embedded`) finds the world the last one
/// left; two at once on the same file never write an older view over a newer one.
#[tokio::test]
async fn a_world_file_carries_the_world_to_the_next_emulator_and_is_never_overwritten_stale() {
    let dir = tempfile::tempdir().unwrap();
    let file = marksync::emulator::world_file_beside(&dir.path().join("state.json"));
    let with_file = || {
        let mut cfg = config();
        cfg.world_file = Some(file.clone());
        cfg
    };
    let first = within(Emulator::start(with_file())).await.unwrap();
    let second = within(Emulator::start(with_file())).await.unwrap();
    first.create_group(G, GroupType::AVChatRoom).unwrap();
    within(first.set_online(G, &["ann"])).await.unwrap();
    first.set_marks_as_other(G, &["ann"], &[1000]).unwrap();
    // The second started before the first wrote: its view is older, so it must not write.
    second
        .create_group("@TGS#other", GroupType::AVChatRoom)
        .unwrap();
    within(first.shutdown()).await.unwrap();
    within(second.shutdown()).await.unwrap();

    let next = within(Emulator::start(with_file())).await.unwrap();
    assert_eq!(next.marks_of(G), marks(&[("ann", &[1000])]));
    assert!(!next.groups().contains_key("@TGS#other"));
    // Without a world file nothing is read.
    let plain = within(Emulator::start(config())).await.unwrap();
    assert!(plain.groups().is_empty());
}
