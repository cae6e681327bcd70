//! Callbacks against the running daemon: presence drops and re-sends marks, signatures are
//! checked, and callbacks are ordered against edits and confirmations.

use super::*;

#[test]
fn callbacks_drop_marks_offline_and_resend_them_online() {
    // The emulator sends no callbacks by itself here (it would need the daemon's address before
    // the daemon binds one): the test sends, signed with the token, the member-state callbacks
    // it would send for each change, once the daemon has said where it listens.
    let mut env = Env::new();
    env.write("callback.token", "s3cret-token\n");
    env.set(
        "http",
        "{ listen: 127.0.0.1:0, callback_token_file: callback.token }",
    );
    let token = Some("s3cret-token");
    let want = marks(&[
        ("@TGS#CB", "bob", &[1001, 1002]),
        ("@TGS#CB", "host", &[500, 1000]),
    ]);
    env.desire("cb.yaml", &want);
    let d = env.start();
    env.wait_live(&want);
    let managed = d.metric("marksync_managed_marks");
    assert_eq!(managed, 4.0);

    env.offline("@TGS#CB", &["bob", "host"]);
    env.wait_live(&marks(&[("@TGS#CB", "host", &[500])]));
    signed_presence(&env, &d, token, "@TGS#CB", &["bob", "host"], false, None);
    poll("the daemon to forget the dropped marks", WAIT, || {
        (d.metric("marksync_managed_marks") == 1.0).then_some(())
    });
    poll("the state file to forget them", WAIT, || {
        let s = env.state();
        (s["groups"]["@TGS#CB"].get("bob").is_none()
            && s["groups"]["@TGS#CB"]["host"].get("1000").is_none())
        .then_some(())
    });

    let calls = env.calls();
    env.online("@TGS#CB", &["bob", "host"]);
    signed_presence(&env, &d, token, "@TGS#CB", &["bob", "host"], true, None);
    env.wait_live_within(&want, Duration::from_secs(3));
    // One callback for both members: one set call (two if the daemon split them).
    let sent = env.calls() - calls;
    assert!(
        (1..=2).contains(&sent),
        "{sent} set calls for two members coming back"
    );
    d.wait_reconciles("callback", 1.0);
}

/// Issue 14: the callback signature, against the running daemon (the unit tests check the
/// listener alone). Unsigned, wrongly signed, stale and other-app callbacks that would make the
/// daemon forget bob's mark are refused and change nothing; a correctly signed one for carol,
/// sent after them, is acted on (events are handled in order, so once carol is forgotten the
/// refused ones would have shown).
#[test]
fn the_running_daemon_refuses_forged_and_stale_callbacks_and_accepts_signed_ones() {
    use sha2::{Digest, Sha256};
    const G: &str = "@TGS#SIG";
    const TOKEN: &str = "s3cret-token";
    let mut env = Env::new();
    env.write("callback.token", &format!("{TOKEN}\n"));
    env.set(
        "http",
        "{ listen: 127.0.0.1:0, callback_token_file: callback.token }",
    );
    let want = marks(&[(G, "bob", &[1001]), (G, "carol", &[1002])]);
    env.desire("sig.yaml", &want);
    let d = env.start();
    env.wait_live(&want);
    assert_eq!(d.metric("marksync_managed_marks"), 2.0);
    let calls = env.calls();
    let addr = d.addr().unwrap();
    let command = marksync::emulator::MEMBER_STATE_CHANGE;
    // SHA-256 of token + RequestTime, in lower-case hex (reference section 5).
    let sign = |token: &str, time: i64| hex::encode(Sha256::digest(format!("{token}{time}")));
    let offline = |who: &str| {
        serde_json::json!({
            "CallbackCommand": command, "GroupId": G, "Type": "AVChatRoom",
            "EventType": "Offline", "EventCause": "HeartbeatInterrupt",
            "MemberList": [{"Member_Account": who}],
        })
    };
    let post = |app: u64, signed: Option<(String, i64)>, who: &str| -> (u16, String) {
        let mut path = format!(
            "/callback?SdkAppid={app}&CallbackCommand={command}&contenttype=json\
             &ClientIP=127.0.0.1&OptPlatform=RESTAPI"
        );
        if let Some((sign, time)) = signed {
            path.push_str(&format!("&Sign={sign}&RequestTime={time}"));
        }
        common::http(addr, "POST", &path, Some(&offline(who))).unwrap()
    };

    let now = unix_now();
    let refused = [
        ("unsigned", post(APP, None, "bob"), 401),
        (
            "signed with another token",
            post(APP, Some((sign("other-token", now), now)), "bob"),
            401,
        ),
        (
            "a right Sign for another RequestTime",
            post(APP, Some((sign(TOKEN, now), now + 1)), "bob"),
            401,
        ),
        (
            "RequestTime 5 minutes old",
            post(APP, Some((sign(TOKEN, now - 300), now - 300)), "bob"),
            401,
        ),
        (
            "another SdkAppid",
            post(APP + 1, Some((sign(TOKEN, now), now)), "bob"),
            403,
        ),
    ];
    for (what, (status, body), want_status) in &refused {
        assert_eq!(status, want_status, "{what}: {body}");
    }
    let counted = |outcome: &str| {
        metric(
            &d.metrics(),
            &format!("marksync_callbacks_total{{command=\"{command}\",outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(counted("rejected_sign"), 3.0);
    assert_eq!(counted("rejected_time"), 1.0);
    assert_eq!(counted("rejected_app"), 1.0);
    assert_eq!(counted("accepted"), 0.0);

    let (status, body) = post(APP, Some((sign(TOKEN, now), now)), "carol");
    assert_eq!(status, 200, "{body}");
    poll("the daemon to forget carol's mark", WAIT, || {
        let s = env.state();
        (s["groups"][G].get("carol").is_none()).then_some(())
    });
    assert_eq!(counted("accepted"), 1.0);
    let state = env.state();
    assert!(state["groups"][G]["bob"]["1001"].is_i64(), "bob untouched");
    assert_eq!(d.metric("marksync_managed_marks"), 1.0, "bob's mark only");
    assert_eq!(env.calls(), calls, "an offline callback sends nothing");
    assert_eq!(env.live(), want, "the service was not touched");
}

/// A daemon running over `want` with the emulator matching it; its listener takes callbacks
/// without a token (sent by [`presence`]).
fn with_callbacks(want: &Marks) -> (Env, Daemon) {
    let env = Env::new();
    env.desire("cb.yaml", want);
    let d = env.start();
    env.wait_live(want);
    (env, d)
}

/// Sends an unsigned member-state callback for `accounts` of `group`, with `event_time` (ms) if
/// given.
fn presence(
    env: &Env,
    d: &Daemon,
    group: &str,
    accounts: &[&str],
    online: bool,
    event_time: Option<i64>,
) {
    signed_presence(env, d, None, group, accounts, online, event_time);
}

/// [`presence`] signed with `token`, as the service (and the emulator) send it.
fn signed_presence(
    env: &Env,
    d: &Daemon,
    token: Option<&str>,
    group: &str,
    accounts: &[&str],
    online: bool,
    event_time: Option<i64>,
) {
    let members: Vec<Value> = accounts
        .iter()
        .map(|a| serde_json::json!({"Member_Account": a}))
        .collect();
    let mut body = serde_json::json!({
        "GroupId": group, "Type": "AVChatRoom",
        "EventType": if online { "Online" } else { "Offline" },
        "EventCause": if online { "HeartbeatRecover" } else { "HeartbeatInterrupt" },
        "MemberList": members,
    });
    if let Some(t) = event_time {
        body["EventTime"] = Value::from(t);
    }
    let url = format!(
        "http://{}/callback",
        d.addr().expect("the daemon's listener")
    );
    let reply = env
        .block_on(env.emu().send_callback(
            &url,
            token,
            marksync::emulator::MEMBER_STATE_CHANGE,
            body,
        ))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn an_online_callback_and_an_edit_removing_a_mark_in_one_round_clear_it() {
    // The stray: a callback forgot bob's confirmed marks while, in the same round, the
    // desired files stopped wanting one of them: neither confirmed nor intended, it was never
    // cleared, and `plan` said "No changes".
    let want = marks(&[
        ("@TGS#CB", "bob", &[1001, 1002]),
        ("@TGS#CB", "carol", &[1000]),
    ]);
    let (env, d) = with_callbacks(&want);
    env.emu()
        .inject_fault(Fault::always(FaultKind::Latency { ms: 2000 }))
        .unwrap();
    let calls = env.calls();
    // A reconcile in flight, so that what follows is absorbed in one round after it.
    let mut next = want.clone();
    next.get_mut("@TGS#CB")
        .unwrap()
        .insert("dave".into(), vec![1003]);
    env.desire("cb.yaml", &next);
    poll("the reconcile's call", WAIT, || {
        (env.calls() > calls).then_some(())
    });
    presence(&env, &d, "@TGS#CB", &["bob"], true, None);
    next.get_mut("@TGS#CB")
        .unwrap()
        .insert("bob".into(), vec![1002]);
    env.desire("cb.yaml", &next);
    env.emu().clear_faults();
    env.wait_live(&next);
    d.wait_reconciles("files", 2.0);
    let state = env.state();
    assert!(state["groups"]["@TGS#CB"]["bob"].get("1001").is_none());
    assert!(
        state["intents"]
            .as_object()
            .is_none_or(serde_json::Map::is_empty),
        "{state}"
    );
}

#[test]
fn a_callback_older_than_the_confirmation_changes_nothing() {
    let want = marks(&[("@TGS#CB", "bob", &[1001, 1002])]);
    let (env, d) = with_callbacks(&want);
    let calls = env.calls();
    let old_ms = (unix_now() - 120) * 1000;
    presence(&env, &d, "@TGS#CB", &["bob"], false, Some(old_ms));
    presence(&env, &d, "@TGS#CB", &["bob"], true, Some(old_ms));
    d.wait_reconciles("callback", 1.0);
    assert_eq!(d.metric("marksync_managed_marks"), 2.0, "still confirmed");
    assert_eq!(env.calls(), calls, "nothing re-sent");

    // A recent Offline (no EventTime: stamped on receipt) makes them unknown, not absent; the
    // next Online sets them again.
    presence(&env, &d, "@TGS#CB", &["bob"], false, None);
    poll("the marks to become unknown", WAIT, || {
        (d.metric("marksync_managed_marks") == 0.0).then_some(())
    });
    poll("the state to record them as intents", WAIT, || {
        let s = env.state();
        (s["intents"]["@TGS#CB"]["bob"] == serde_json::json!([1001, 1002])).then_some(())
    });
    presence(&env, &d, "@TGS#CB", &["bob"], true, None);
    poll("bob's marks to be confirmed again", WAIT, || {
        (d.metric("marksync_managed_marks") == 2.0).then_some(())
    });
    assert_eq!(env.live(), want);
}
