//! A standby daemon's listener: what it relays to the active daemon, and its readiness.

use super::*;

/// The `host:port` a test server listens on.
fn address(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_standby_relays_a_checked_callback_to_the_active_daemon() {
    let mut active = Server::signed().await;
    let mut standby = Server::signed().await;
    standby.role.send_replace(forward::Role::Standby {
        active: Some(address(&active)),
    });
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
        .await;
    assert_eq!(reply, (200, ok_reply()), "the active daemon's answer");
    assert_eq!(
        active.event().await,
        event("@TGS#aAAA", &["alice"], MemberEvent::Online),
        "the active daemon acts on it"
    );
    standby.assert_no_event();
    assert_eq!(
        standby.callbacks_counted(MEMBER_STATE_CHANGE, "forwarded"),
        "1"
    );
    assert_eq!(
        active.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"),
        "1"
    );

    // Promoted: the same listener acts on callbacks itself.
    standby.role.send_replace(forward::Role::Active);
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["bob"]))
        .await;
    assert_eq!(reply, (200, ok_reply()));
    assert_eq!(
        standby.event().await,
        event("@TGS#aAAA", &["bob"], MemberEvent::Online)
    );
    active.assert_no_event();
}

#[tokio::test]
async fn a_standby_relays_nothing_the_active_daemon_would_refuse() {
    let mut active = Server::signed().await;
    let standby = Server::signed().await;
    standby.role.send_replace(forward::Role::Standby {
        active: Some(address(&active)),
    });
    let wrong = Server::query(MEMBER_STATE_CHANGE, APP, Some(("other", NOW)));
    let reply = standby
        .post(&wrong, online_body(&["alice"]).to_string())
        .await;
    assert_fail(&reply, 401);
    let other_app = Server::query(MEMBER_STATE_CHANGE, APP + 1, Some((TOKEN, NOW)));
    assert_fail(
        &standby
            .post(&other_app, online_body(&["alice"]).to_string())
            .await,
        403,
    );
    // Nothing reached the active daemon: its counters are untouched.
    active.assert_no_event();
    assert!(
        !active.metrics.encode().contains("outcome=\"accepted\"} 1"),
        "{}",
        active.metrics.encode()
    );
}

/// Points `standby` at `active` and sends it a signed callback, which it must refuse with 503
/// saying `says`.
async fn refused_relay(standby: &Server, active: Option<String>, says: &str) {
    standby.role.send_replace(forward::Role::Standby { active });
    let reply = standby
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
        .await;
    assert_fail(&reply, 503);
    assert!(
        reply.1["ErrorInfo"].as_str().unwrap().contains(says),
        "{says:?}: {reply:?}"
    );
}

#[tokio::test]
async fn a_standby_without_a_reachable_active_daemon_answers_503_and_counts_it() {
    let standby = Server::signed().await;
    refused_relay(&standby, None, "no active daemon").await;

    // An active daemon that accepts the connection and never answers: the relay gives up
    // (within FORWARD_TIMEOUT, under the service's 2 s) instead of hanging.
    let silent = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let silent_at = silent.local_addr().unwrap().to_string();
    refused_relay(&standby, Some(silent_at), "did not answer").await;
    assert_eq!(
        standby.callbacks_counted(MEMBER_STATE_CHANGE, "forward_failed"),
        "2"
    );

    // A wildcard address is never relayed to: from here it would be this standby itself.
    let port = address(&standby).rsplit(':').next().unwrap().to_owned();
    refused_relay(
        &standby,
        Some(format!("0.0.0.0:{port}")),
        "cannot reach as written",
    )
    .await;
    drop(silent);
}

#[tokio::test]
async fn a_standby_is_ready_while_its_desired_files_load_and_says_so() {
    let s = Server::signed().await;
    s.ready.send_replace(Readiness {
        desired_ok: true,
        last_reconcile_ok: false,
        detail: String::new(),
        standby: Some("`run` (pid 7 on host-a) is active".into()),
    });
    let r = s.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        within(r.text()).await.unwrap(),
        "standby: `run` (pid 7 on host-a) is active"
    );
    s.ready.send_replace(Readiness {
        desired_ok: false,
        last_reconcile_ok: false,
        detail: "marks/a.yaml:3:5: mark 1001 out of range".into(),
        standby: Some("`run` (pid 7 on host-a) is active".into()),
    });
    assert_eq!(s.get("/readyz").await.status().as_u16(), 503);
}

/// A standby's recorded active address can reach a standby: the same address advertised by two
/// daemons, or a dead active pod's IP given to a new replica. Relayed once, a callback is never
/// relayed again: the standby it reaches answers 503 at once, saying why, instead of passing it
/// on in a loop until the time runs out.
#[tokio::test]
async fn a_relayed_callback_that_reaches_a_standby_is_not_relayed_again() {
    let mut first = Server::signed().await;
    let mut second = Server::signed().await;
    // `second` points at itself; `first` relays to `second`. Each is refused where it
    // arrives relayed: counted there as a loop, not relayed on until a timeout.
    refused_relay(&second, Some(address(&second)), "reaches a standby").await;
    refused_relay(&first, Some(address(&second)), "reaches a standby").await;
    assert_eq!(
        second.callbacks_counted(MEMBER_STATE_CHANGE, "forward_loop"),
        "2",
        "the relayed copies were refused where they arrived"
    );
    first.assert_no_event();
    second.assert_no_event();
}
