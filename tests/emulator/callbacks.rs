//! Callbacks the emulator sends: signed like the service's, and on presence changes.

use super::*;

/// A callback receiver: records every request's query and body, answers OK.
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(BTreeMap<String, String>, Value)>,
) {
    use axum::extract::Query;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::post(
            move |Query(q): Query<BTreeMap<String, String>>, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((q, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                    axum::Json(json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}))
                }
            },
        ),
    );
    let url = format!("http://{}/callback", common::serve_on_loopback(app).await);
    (url, rx)
}

#[tokio::test]
async fn callbacks_are_signed_like_the_service_signs_them() {
    let (url, mut rx) = receiver().await;
    let h = Harness::start(config()).await;
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "callbacks",
            Some(json!({
                "url": url, "token": "xxxxyyyy", "command": "Group.CallbackAfterMemberExit",
                "request_time": 1_669_872_112,
                "body": {"GroupId": G, "Type": "AVChatRoom", "ExitMemberList": [{"Member_Account": "a"}]},
            })),
        )
        .await;
    assert_eq!((status, v["status"].as_u64()), (200, Some(200)), "{v}");
    assert!(
        v["body"]
            .as_str()
            .unwrap()
            .contains("\"ActionStatus\":\"OK\""),
        "{v}"
    );
    let (q, body) = within(rx.recv()).await.unwrap();
    assert_eq!(
        q["Sign"],
        "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
    );
    assert_eq!(q["RequestTime"], "1669872112");
    assert_eq!(q["SdkAppid"], APP.to_string());
    assert_eq!(q["CallbackCommand"], "Group.CallbackAfterMemberExit");
    assert_eq!(
        (
            q["contenttype"].as_str(),
            q.contains_key("ClientIP"),
            q.contains_key("OptPlatform")
        ),
        ("json", true, true)
    );
    assert_eq!(body["CallbackCommand"], "Group.CallbackAfterMemberExit");

    // In process, RequestTime is the real now and Sign matches it.
    let reply = within(h.emu.send_callback(
        &url,
        Some("tok"),
        "Group.CallbackOnMemberStateChange",
        json!({}),
    ))
    .await;
    assert_eq!(reply.unwrap().status, 200);
    let (q, _) = within(rx.recv()).await.unwrap();
    let t: i64 = q["RequestTime"].parse().unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((real - t).abs() <= 5);
    assert_eq!(q["Sign"], hex::encode(Sha256::digest(format!("tok{t}"))));

    // Without a token: no Sign, no RequestTime.
    within(h.emu.send_callback(&url, None, "X.Y", json!({})))
        .await
        .unwrap();
    let (q, _) = within(rx.recv()).await.unwrap();
    assert!(!q.contains_key("Sign") && !q.contains_key("RequestTime"));
    // An unreachable URL is an error, not a hang or a panic.
    assert!(
        within(h.emu.send_callback("not a url", None, "X.Y", json!({})))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn presence_changes_send_member_state_callbacks() {
    let (url, mut rx) = receiver().await;
    let cfg = EmulatorConfig {
        callback_url: Some(url),
        callback_token: Some("xxxxyyyy".into()),
        ..config()
    };
    let h = Harness::start(cfg).await;
    let (status, _) = h
        .control(
            reqwest::Method::POST,
            "groups/create",
            Some(json!({"group_id": G})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "members",
            Some(json!({"group_id": G, "accounts": ["a", "b"], "state": "online"})),
        )
        .await;
    assert_eq!(
        (status, v["callbacks"][0]["status"].as_u64()),
        (200, Some(200)),
        "{v}"
    );
    let (q, body) = within(rx.recv()).await.unwrap();
    assert_eq!(q["CallbackCommand"], "Group.CallbackOnMemberStateChange");
    assert_eq!(
        q["Sign"],
        hex::encode(Sha256::digest(format!("xxxxyyyy{}", q["RequestTime"])))
    );
    assert_eq!(
        (body["EventType"].as_str(), body["EventCause"].as_str()),
        (Some("Online"), Some("Join"))
    );
    assert_eq!(
        body["MemberList"],
        json!([{"Member_Account": "a"}, {"Member_Account": "b"}])
    );

    h.emu.set_offline(G, &["a"]).await.unwrap();
    let (_, body) = within(rx.recv()).await.unwrap();
    assert_eq!(
        (body["EventType"].as_str(), body["EventCause"].as_str()),
        (Some("Offline"), Some("HeartbeatInterrupt"))
    );
    h.emu.leave(G, &["b"]).await.unwrap();
    let (_, body) = within(rx.recv()).await.unwrap();
    assert_eq!(
        (body["GroupId"].as_str(), body["EventCause"].as_str()),
        (Some(G), Some("Quit"))
    );
}
