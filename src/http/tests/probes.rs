//! `/healthz`, `/readyz` and `/metrics`, and shutdown.

use super::*;

#[tokio::test]
async fn healthz_readyz_and_metrics() {
    let s = Server::signed().await;
    let r = s.get("/healthz").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(within(r.text()).await.unwrap(), "ok");

    let r = s.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(within(r.text()).await.unwrap(), "not ready");
    s.ready.send_replace(Readiness {
        desired_ok: false,
        last_reconcile_ok: true,
        detail: "groups.yaml:3:5: mark 1001 out of range".into(),
        ..Readiness::default()
    });
    let r = s.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        within(r.text()).await.unwrap(),
        "groups.yaml:3:5: mark 1001 out of range"
    );
    s.ready.send_replace(Readiness {
        desired_ok: true,
        last_reconcile_ok: false,
        detail: "last reconcile failed".into(),
        ..Readiness::default()
    });
    assert_eq!(s.get("/readyz").await.status().as_u16(), 503);
    s.ready.send_replace(Readiness {
        desired_ok: true,
        last_reconcile_ok: true,
        detail: "ok".into(),
        ..Readiness::default()
    });
    let r = s.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(within(r.text()).await.unwrap(), "ready");

    s.metrics
        .record_call("set", "ok", Duration::from_millis(20));
    s.metrics.record_reconcile("files", "partial");
    s.metrics.set_managed(42);
    s.metrics.set_desired_errors(0);
    let r = s.get("/metrics").await;
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(ct, METRICS_CONTENT_TYPE);
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    let text = within(r.text()).await.unwrap();
    for line in [
        "marksync_calls_total{command=\"set\",outcome=\"ok\"} 1\n",
        "marksync_call_duration_seconds_count{command=\"set\"} 1\n",
        "marksync_reconciles_total{trigger=\"files\",outcome=\"partial\"} 1\n",
        "marksync_managed_marks 42\n",
        "marksync_desired_ok 1\n",
        "marksync_pending_marks 0\n",
        &format!(
            "marksync_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            crate::metrics::BUILD_COMMIT
        ),
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }

    assert_eq!(s.get("/nope").await.status().as_u16(), 404);
    assert_eq!(s.get("/callback").await.status().as_u16(), 405);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let (_ready, readiness) = watch::channel(Readiness::default());
    let (events, _rx) = mpsc::channel(1);
    let state = HttpState::new(
        Arc::new(Metrics::new()),
        readiness,
        events,
        APP,
        Arc::new(SystemClock),
    );
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    let before = within(tokio::net::TcpStream::connect(addr)).await;
    assert!(before.is_ok(), "the server accepts before shutdown");
    drop(before);
    stop.send(()).unwrap();
    within(task).await.unwrap().unwrap();
    // The port no longer accepts: the listener went with the server.
    let after = within(tokio::net::TcpStream::connect(addr)).await;
    assert!(after.is_err(), "a connection was accepted after shutdown");
}

#[tokio::test]
async fn readyz_warns_when_unsigned_callbacks_are_served_beyond_loopback() {
    let (ready, readiness) = watch::channel(Readiness::default());
    let (events, _rx) = mpsc::channel(1);
    let state = HttpState::new(
        Arc::new(Metrics::new()),
        readiness,
        events,
        APP,
        Arc::new(SystemClock),
    );
    let http = crate::config::Http {
        listen: "0.0.0.0:0".parse().unwrap(),
        callback_token_file: None,
        allow_unsigned_callbacks: true,
    };
    let listener = within(start(&http, state)).await.unwrap();
    let url = format!("http://127.0.0.1:{}/readyz", listener.addr.port());
    let get = || async {
        let r = within(reqwest::get(&url)).await.unwrap();
        (r.status().as_u16(), within(r.text()).await.unwrap())
    };
    let (status, body) = get().await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("not ready\nwarning: callbacks on 0.0.0.0:"),
        "{body}"
    );
    assert!(body.contains("without a signature"), "{body}");
    ready.send_replace(Readiness {
        desired_ok: true,
        last_reconcile_ok: true,
        detail: "ok".into(),
        ..Readiness::default()
    });
    let (status, body) = get().await;
    assert_eq!(status, 200);
    assert!(body.starts_with("ready\nwarning: "), "{body}");
    listener.task.abort();
}
