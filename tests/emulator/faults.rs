//! Injected faults: error codes, HTTP statuses, latency and dropped connections.

use super::*;

#[tokio::test]
async fn faults_inject_error_codes_http_statuses_latency_and_dropped_connections() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    let set_a = || h.set(&[("a", &[1000])]);

    h.emu
        .inject_fault(Fault {
            count: Some(1),
            ..Fault::always(FaultKind::ErrorCode { code: 10002 })
        })
        .unwrap();
    assert_eq!(code(&set_a().await), 10002);
    assert!(
        h.emu.marks_of(G).is_empty(),
        "a fault before the call changes nothing"
    );
    assert_eq!(code(&set_a().await), 0, "count 1: the next call passes");

    h.emu
        .inject_fault(Fault::always(FaultKind::HttpStatus { status: 502 }))
        .unwrap();
    let (status, _) = h.raw(MODIFY, &h.query(ADMIN, &h.admin_sig()), "{}").await;
    assert_eq!(status, 502);
    h.emu.clear_faults();

    h.emu
        .inject_fault(Fault {
            after: true,
            ..Fault::always(FaultKind::DropConnection)
        })
        .unwrap();
    let body = json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [1001]}]});
    let sent = within(
        h.http
            .post(format!("{}/{MODIFY}", h.emu.base_url()))
            .query(&h.query(ADMIN, &h.admin_sig()))
            .body(body.to_string())
            .send(),
    )
    .await;
    // hyper reports IncompleteMessage: the connection closed before any response byte.
    assert!(
        sent.as_ref().is_err_and(|e| !e.is_timeout()),
        "the connection must be dropped: {sent:?}"
    );
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("a", &[1000, 1001])]),
        "applied, answer lost"
    );
    h.emu.clear_faults();

    h.emu
        .inject_fault(Fault::always(FaultKind::Latency { ms: 300 }))
        .unwrap();
    let t = Instant::now();
    assert_eq!(code(&set_a().await), 0);
    assert!(t.elapsed() >= Duration::from_millis(300));
    h.emu.clear_faults();

    // Latency after: the call is applied at once and only the answer waits, so a client that
    // gives up (or is killed) in the meantime leaves a change it never saw confirmed.
    h.emu
        .inject_fault(Fault {
            after: true,
            ..Fault::always(FaultKind::Latency { ms: 5_000 })
        })
        .unwrap();
    let body = json!({"GroupId": G, "CommandType": 2, "MemberList": [{"Member_Account": "a", "Marks": [1001]}]});
    let gave_up = h
        .http
        .post(format!("{}/{MODIFY}", h.emu.base_url()))
        .query(&h.query(ADMIN, &h.admin_sig()))
        .body(body.to_string())
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the answer is held back: {gave_up:?}"
    );
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("a", &[1000])]),
        "applied before the answer"
    );
    h.emu.clear_faults();

    // Rate 0 never fires; the control API takes the same JSON shape.
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "error_code", "code": 60008, "rate": 0.0})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    for _ in 0..5 {
        assert_eq!(code(&set_a().await), 0);
    }
    let (status, _) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "error_code", "code": 1, "rate": 2})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "http_status", "status": 503, "path": "get_members"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(code(&set_a().await), 0, "path filter: modify is not hit");
    let (status, _) = h
        .raw(
            LIST,
            &h.query(ADMIN, &h.admin_sig()),
            &json!({"GroupId": G}).to_string(),
        )
        .await;
    assert_eq!(status, 503);
    let stats = h.emu.stats(true);
    let log = stats.log.unwrap();
    assert_eq!(log.last().map(|r| r.http_status), Some(503));
    assert!(
        log.iter().any(|r| r.http_status == 0),
        "the dropped call is logged"
    );
}
