//! Callbacks: the checks a request passes (token, signature, time window, app, size, JSON),
//! what becomes an event, and what is refused and counted.

use super::*;

#[test]
fn event_time_is_read_in_milliseconds_or_seconds_and_believed_only_near_receipt() {
    use callback::EventTime::{Number, Text};
    let check = |t: Option<callback::EventTime>, expect: UnixTime| {
        assert_eq!(event_at(t.as_ref(), NOW), expect, "{t:?}");
    };
    // The vendor's unit (ms), as a number or a string; seconds too.
    check(Some(Number((NOW - 30) * 1000 + 999)), NOW - 30);
    check(Some(Text(format!("{}", (NOW - 30) * 1000))), NOW - 30);
    check(Some(Number(NOW - 30)), NOW - 30);
    // Missing or unreadable: when it was received.
    check(None, NOW);
    check(Some(Text("soon".into())), NOW);
    // Implausible (a wrong clock or unit): when it was received.
    check(Some(Number(1)), NOW);
    check(
        Some(Number((NOW - EVENT_TIME_TOLERANCE_SECS - 1) * 1000)),
        NOW,
    );
    check(Some(Number(NOW + EVENT_TIME_TOLERANCE_SECS + 1)), NOW);
    // A little in the future (clock skew): never later than the receipt.
    check(Some(Number((NOW + 20) * 1000)), NOW);
}

#[tokio::test]
async fn a_callback_is_stamped_with_its_event_time_or_when_it_was_received() {
    let clock = Arc::new(ManualClock::new(NOW));
    let mut s = Server::start(Some(TOKEN), clock.clone(), 16).await;
    let mut body = online_body(&["alice"]);
    body["EventTime"] = json!((NOW - 40) * 1000);
    assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
    assert_eq!(s.event().await.at, NOW - 40);
    // Without EventTime: the time the listener received it, not when the daemon reads it.
    let body = online_body(&["alice"]);
    assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
    clock.advance(50);
    assert_eq!(s.event().await.at, NOW);
}

#[test]
fn debug_never_shows_the_token() {
    let (_tx, readiness) = watch::channel(Readiness::default());
    let (events, _rx) = mpsc::channel(1);
    let state = HttpState {
        token: Some("supersecrettoken".into()),
        ..HttpState::new(
            Arc::new(Metrics::new()),
            readiness,
            events,
            APP,
            Arc::new(SystemClock),
        )
    };
    let text = format!("{state:?}");
    assert!(
        !text.contains("supersecrettoken") && text.contains("***"),
        "{text}"
    );
}

#[tokio::test]
async fn a_signed_online_callback_becomes_an_event() {
    let mut s = Server::signed().await;
    let reply = s
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice", "bob"]))
        .await;
    assert_eq!(reply, (200, ok_reply()));
    assert_eq!(
        s.event().await,
        event("@TGS#aAAA", &["alice", "bob"], MemberEvent::Online)
    );
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"), "1");
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_stale_callbacks_are_refused() {
    let mut s = Server::signed().await;
    let body = online_body(&["alice"]).to_string();
    // No Sign at all.
    let unsigned = Server::query(MEMBER_STATE_CHANGE, APP, None);
    assert_fail(&s.post(&unsigned, body.clone()).await, 401);
    // RequestTime without Sign.
    let mut only_time = unsigned.clone();
    only_time.push(("RequestTime".into(), NOW.to_string()));
    assert_fail(&s.post(&only_time, body.clone()).await, 401);
    // Signed with another token.
    let wrong = Server::query(MEMBER_STATE_CHANGE, APP, Some(("other", NOW)));
    assert_fail(&s.post(&wrong, body.clone()).await, 401);
    // A right Sign for another RequestTime than the one sent.
    let mut replayed = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
    replayed.last_mut().unwrap().1 = (NOW + 1).to_string();
    assert_fail(&s.post(&replayed, body.clone()).await, 401);
    assert_eq!(
        s.callbacks_counted(MEMBER_STATE_CHANGE, "rejected_sign"),
        "4"
    );
    // Correctly signed, 61 s off either way; 60 s is still fine.
    for skew in [61, -61] {
        let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW + skew)));
        assert_fail(&s.post(&q, body.clone()).await, 401);
    }
    assert_eq!(
        s.callbacks_counted(MEMBER_STATE_CHANGE, "rejected_time"),
        "2"
    );
    s.assert_no_event();
    for skew in [60, -60] {
        let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW + skew)));
        assert_eq!(s.post(&q, body.clone()).await, (200, ok_reply()));
        s.event().await;
    }
}

#[tokio::test]
async fn the_request_time_window_follows_the_clock() {
    let clock = Arc::new(ManualClock::new(NOW));
    let mut s = Server::start(Some(TOKEN), clock.clone(), 16).await;
    let body = online_body(&["alice"]);
    assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
    s.event().await;
    clock.advance(61);
    assert_fail(&s.post_signed(MEMBER_STATE_CHANGE, &body).await, 401);
    s.assert_no_event();
}

#[tokio::test]
async fn another_sdkappid_is_refused() {
    let mut s = Server::signed().await;
    let body = online_body(&["alice"]).to_string();
    let q = Server::query(MEMBER_STATE_CHANGE, APP + 1, Some((TOKEN, NOW)));
    assert_fail(&s.post(&q, body.clone()).await, 403);
    let mut missing = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
    missing.remove(0);
    assert_fail(&s.post(&missing, body).await, 403);
    assert_eq!(
        s.callbacks_counted(MEMBER_STATE_CHANGE, "rejected_app"),
        "2"
    );
    s.assert_no_event();
}

#[tokio::test]
async fn without_a_token_unsigned_callbacks_are_accepted() {
    let mut s = Server::start(None, Arc::new(SystemClock), 16).await;
    let q = Server::query(MEMBER_STATE_CHANGE, APP, None);
    let reply = s.post(&q, online_body(&["alice"]).to_string()).await;
    assert_eq!(reply, (200, ok_reply()));
    assert_eq!(
        s.event_now().await,
        event("@TGS#aAAA", &["alice"], MemberEvent::Online)
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let mut s = Server::signed().await;
    let many: Vec<String> = (0..MAX_CALLBACK_BODY_BYTES / 20)
        .map(|i| format!("member{i:09}"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let body = online_body(&refs).to_string();
    assert!(body.len() > MAX_CALLBACK_BODY_BYTES);
    let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
    assert_fail(&s.post(&q, body.clone()).await, 413);
    // Without a Content-Length (chunked), the limit holds too.
    let path = format!(
        "/callback?SdkAppid={APP}&CallbackCommand={MEMBER_STATE_CHANGE}&contenttype=json&Sign={}&RequestTime={NOW}",
        callback::sign(TOKEN, &NOW.to_string())
    );
    let mut chunked = Vec::new();
    for chunk in body.as_bytes().chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let status_line = s.raw_post_chunked(&path, &chunked).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "too_large"), "2");
    s.assert_no_event();
    // Just under the limit is fine.
    assert_eq!(
        s.post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
            .await
            .0,
        200
    );
    s.event().await;
}

#[tokio::test]
async fn malformed_json_is_answered_with_an_error_and_the_server_lives_on() {
    let mut s = Server::signed().await;
    let q = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW)));
    for bad in [
        "{",
        "",
        "null",
        r#"{"GroupId": 5, "EventType": "Online"}"#,
        r#"{"EventType":"Online","MemberList":[{"Member_Account":"a"}]}"#,
        r#"{"GroupId":"g","EventType":"Online","MemberList":"a"}"#,
        "\u{feff}\u{0}garbage",
    ] {
        assert_fail(&s.post(&q, bad.to_owned()).await, 400);
    }
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "malformed"), "7");
    // A query that cannot be read at all.
    let resp = within(
        s.http
            .post(format!("{}/callback?SdkAppid=1&SdkAppid=2", s.base))
            .body("{}")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    s.assert_no_event();
    assert_eq!(s.get("/healthz").await.status().as_u16(), 200);
    let reply = s
        .post_signed(MEMBER_STATE_CHANGE, &online_body(&["alice"]))
        .await;
    assert_eq!(reply, (200, ok_reply()));
    s.event().await;
}

#[tokio::test]
async fn unknown_commands_and_event_types_are_ok_and_ignored() {
    let mut s = Server::signed().await;
    let reply = s
        .post_signed("Group.CallbackAfterSendMsg", &json!({"anything": [1, 2]}))
        .await;
    assert_eq!(reply, (200, ok_reply()));
    let q = Server::query("State.StateChange", APP, Some((TOKEN, NOW)));
    assert_eq!(s.post(&q, "not even json").await, (200, ok_reply()));
    let mut away = online_body(&["alice"]);
    away["EventType"] = json!("Away");
    assert_eq!(
        s.post_signed(MEMBER_STATE_CHANGE, &away).await,
        (200, ok_reply())
    );
    assert_eq!(s.callbacks_counted("other", "ignored"), "2");
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "ignored"), "1");
    s.assert_no_event();
}

#[tokio::test]
async fn invalid_accounts_are_skipped_and_invalid_groups_ignored() {
    let mut s = Server::signed().await;
    let long = "x".repeat(33);
    let body = online_body(&["alice", "", &long, "bob"]);
    assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &body).await.0, 200);
    assert_eq!(
        s.event().await,
        event("@TGS#aAAA", &["alice", "bob"], MemberEvent::Online)
    );
    let body = online_body(&["", &long]);
    assert_eq!(
        s.post_signed(MEMBER_STATE_CHANGE, &body).await,
        (200, ok_reply())
    );
    let mut no_group = online_body(&["alice"]);
    no_group["GroupId"] = json!("");
    assert_eq!(
        s.post_signed(MEMBER_STATE_CHANGE, &no_group).await,
        (200, ok_reply())
    );
    s.assert_no_event();
}

#[tokio::test]
async fn event_time_may_be_a_number_or_a_string() {
    let mut s = Server::signed().await;
    for time in [json!(1_669_872_112), json!("1669872112")] {
        let mut body = online_body(&["alice"]);
        body["EventTime"] = time;
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &body).await,
            (200, ok_reply())
        );
        s.event().await;
        let body = json!({
            "GroupId": "@TGS#b", "Type": "AVChatRoom", "ExitType": "Quit",
            "ExitMemberList": [{"Member_Account": "carol"}], "EventTime": body["EventTime"],
        });
        assert_eq!(s.post_signed(AFTER_MEMBER_EXIT, &body).await.0, 200);
        s.event().await;
    }
}

#[tokio::test]
async fn join_and_exit_map_to_online_and_offline() {
    let mut s = Server::signed().await;
    let join = json!({
        "CallbackCommand": AFTER_NEW_MEMBER_JOIN,
        "GroupId": "@TGS#b", "Type": "AVChatRoom", "JoinType": "Apply",
        "Operator_Account": "dave",
        "NewMemberList": [{"Member_Account": "dave"}, {"Member_Account": "erin"}],
        "EventTime": 1_669_872_112_000_i64,
    });
    assert_eq!(s.post_signed(AFTER_NEW_MEMBER_JOIN, &join).await.0, 200);
    assert_eq!(
        s.event().await,
        event("@TGS#b", &["dave", "erin"], MemberEvent::Online)
    );
    let exit = json!({
        "CallbackCommand": AFTER_MEMBER_EXIT,
        "GroupId": "@TGS#b", "Type": "AVChatRoom", "ExitType": "Kicked",
        "Operator_Account": "admin",
        "ExitMemberList": [{"Member_Account": "erin"}],
        "EventTime": "1669872112000",
    });
    assert_eq!(s.post_signed(AFTER_MEMBER_EXIT, &exit).await.0, 200);
    assert_eq!(
        s.event().await,
        event("@TGS#b", &["erin"], MemberEvent::Offline)
    );
    let mut offline = online_body(&["alice"]);
    offline["EventType"] = json!("Offline");
    offline
        .as_object_mut()
        .unwrap()
        .remove("EventCause")
        .unwrap();
    assert_eq!(s.post_signed(MEMBER_STATE_CHANGE, &offline).await.0, 200);
    assert_eq!(
        s.event().await,
        event("@TGS#aAAA", &["alice"], MemberEvent::Offline)
    );
}

#[tokio::test]
async fn a_full_queue_drops_the_event_but_still_answers_ok() {
    let mut s = Server::start(Some(TOKEN), Arc::new(ManualClock::new(NOW)), 1).await;
    let started = std::time::Instant::now();
    for who in ["alice", "bob", "carol"] {
        assert_eq!(
            s.post_signed(MEMBER_STATE_CHANGE, &online_body(&[who]))
                .await,
            (200, ok_reply())
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    s.event().await;
    s.assert_no_event();
    assert!(
        s.metrics
            .encode()
            .contains("marksync_callback_events_dropped_total 2\n")
    );
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"), "3");
    // With the receiver gone, callbacks are still answered.
    let Server { events, .. } = &mut s;
    events.close();
    assert_eq!(
        s.post_signed(MEMBER_STATE_CHANGE, &online_body(&["dave"]))
            .await,
        (200, ok_reply())
    );
}

#[tokio::test]
async fn the_emulator_sends_signed_callbacks_that_arrive_as_events() {
    // The emulator signs with the real clock, so the listener uses it too.
    let mut s = Server::start(Some("emu-token"), Arc::new(SystemClock), 16).await;
    let url = format!("{}/callback", s.base);
    let mut cfg = EmulatorConfig::new(APP, "secret", "admin");
    cfg.callback_url = Some(url.clone());
    cfg.callback_token = Some("emu-token".into());
    let emu = within(Emulator::start(cfg)).await.unwrap();

    // An explicit callback.
    let reply = within(emu.send_callback(
        &url,
        Some("emu-token"),
        AFTER_NEW_MEMBER_JOIN,
        json!({
            "GroupId": "@TGS#e2e", "Type": "AVChatRoom", "JoinType": "Apply",
            "NewMemberList": [{"Member_Account": "u1"}], "EventTime": 1,
        }),
    ))
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&reply.body).unwrap(),
        ok_reply()
    );
    assert_eq!(
        s.event_now().await,
        event("@TGS#e2e", &["u1"], MemberEvent::Online)
    );

    // The wrong token is refused.
    let reply = within(emu.send_callback(&url, Some("nope"), MEMBER_STATE_CHANGE, json!({})))
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    s.assert_no_event();

    // Presence changes in the emulator's world send member-state callbacks.
    emu.create_group("@TGS#live", GroupType::AVChatRoom)
        .unwrap();
    within(emu.set_online("@TGS#live", &["u2", "u3"]))
        .await
        .unwrap();
    assert_eq!(
        s.event_now().await,
        event("@TGS#live", &["u2", "u3"], MemberEvent::Online)
    );
    within(emu.set_offline("@TGS#live", &["u3"])).await.unwrap();
    assert_eq!(
        s.event_now().await,
        event("@TGS#live", &["u3"], MemberEvent::Offline)
    );
    within(emu.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_replayed_signed_callback_is_refused_and_counted() {
    let mut s = Server::signed().await;
    let body = online_body(&["alice"]);
    assert_eq!(
        s.post_signed_at(MEMBER_STATE_CHANGE, &body, NOW).await,
        (200, ok_reply())
    );
    s.event().await;
    for _ in 0..5 {
        let reply = s.post_signed_at(MEMBER_STATE_CHANGE, &body, NOW).await;
        assert_fail(&reply, 409);
        assert!(
            reply.1["ErrorInfo"].as_str().unwrap().contains("replay"),
            "{reply:?}"
        );
    }
    // Another body naming the same change (the Sign does not cover the body): a replay too.
    let mut altered = online_body(&["alice", "alice"]);
    altered["EventCause"] = json!("Something");
    assert_fail(
        &s.post_signed_at(MEMBER_STATE_CHANGE, &altered, NOW).await,
        409,
    );
    s.assert_no_event();
    // Same Sign and RequestTime, a new member: the service's callbacks of one second share
    // their Sign, so this is another callback; the change seen before is dropped from it.
    assert_eq!(
        s.post_signed_at(MEMBER_STATE_CHANGE, &online_body(&["alice", "bob"]), NOW)
            .await,
        (200, ok_reply())
    );
    assert_eq!(
        s.event().await,
        event("@TGS#aAAA", &["bob"], MemberEvent::Online)
    );
    let text = s.metrics.encode();
    assert!(
        text.contains("marksync_callback_refusals_total{reason=\"replayed\"} 6\n"),
        "{text}"
    );
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "replayed"), "6");
    assert_eq!(s.callbacks_counted(MEMBER_STATE_CHANGE, "accepted"), "2");
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let s = Server::signed().await;
    let body = online_body(&["alice"]).to_string();
    let unsigned = Server::query(MEMBER_STATE_CHANGE, APP, None);
    assert_fail(&s.post(&unsigned, body.clone()).await, 401);
    let other_app = Server::query(MEMBER_STATE_CHANGE, APP + 1, Some((TOKEN, NOW)));
    assert_fail(&s.post(&other_app, body.clone()).await, 403);
    let old = Server::query(MEMBER_STATE_CHANGE, APP, Some((TOKEN, NOW - 61)));
    assert_fail(&s.post(&old, body).await, 401);
    let text = s.metrics.encode();
    for (reason, n) in [
        ("rejected_sign", 1),
        ("rejected_app", 1),
        ("rejected_time", 1),
        ("replayed", 0),
        ("malformed", 0),
    ] {
        let line = format!("marksync_callback_refusals_total{{reason=\"{reason}\"}} {n}\n");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}
