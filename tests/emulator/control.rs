//! The control API: what it drives, demo mode, who may drive it, and the routes `--help` lists.

use super::*;

#[tokio::test]
async fn the_control_api_drives_groups_marks_clock_stats_and_reset() {
    let h = Harness::start(config()).await;
    let post = reqwest::Method::POST;
    let (s, _) = h
        .control(post.clone(), "groups/create", Some(json!({"group_id": G})))
        .await;
    assert_eq!(s, 200);
    let (s, _) = h
        .control(post.clone(), "groups/create", Some(json!({"group_id": G})))
        .await;
    assert_eq!(s, 409, "creating twice is refused");
    let (s, v) = h
        .control(
            post.clone(),
            "groups/create",
            Some(json!({"group_id": "x", "type": "Nope"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = h
        .control(
            post.clone(),
            "members",
            Some(json!({"group_id": "@TGS#none", "accounts": ["a"], "state": "online"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    h.control(
        post.clone(),
        "members",
        Some(json!({"group_id": G, "accounts": ["a"], "state": "online"})),
    )
    .await;
    h.set(&[("a", &[500, 1000])]).await;

    let (s, v) = h
        .control(
            reqwest::Method::GET,
            "marks?group_id=%40TGS%23a6I4ZUUGO",
            None,
        )
        .await;
    assert_eq!((s, v), (200, json!({"a": [500, 1000]})));
    let (_, v) = h
        .control(post.clone(), "marks", Some(json!({"group_id": G})))
        .await;
    assert_eq!(v, json!({"a": [500, 1000]}));
    let (s, _) = h
        .control(
            post.clone(),
            "marks",
            Some(json!({"group_id": "@TGS#none"})),
        )
        .await;
    assert_eq!(s, 404);
    let (_, v) = h.control(reqwest::Method::GET, "groups", None).await;
    assert_eq!(v[G]["members"]["a"]["state"], "online", "{v}");
    assert!(
        v[G]["members"]["a"]["mark_500_expires_at"]
            .as_i64()
            .is_some(),
        "{v}"
    );

    let (_, before) = h.control(reqwest::Method::GET, "clock", None).await;
    let (_, after) = h
        .control(
            post.clone(),
            "clock/advance",
            Some(json!({"seconds": 72 * 3600})),
        )
        .await;
    assert!(after["now"].as_i64().unwrap() - before["now"].as_i64().unwrap() >= 72 * 3600);
    let (_, v) = h
        .control(post.clone(), "marks", Some(json!({"group_id": G})))
        .await;
    assert_eq!(v, json!({"a": [1000]}), "500 ran out, a is still connected");

    let (_, v) = h.control(reqwest::Method::GET, "stats", None).await;
    assert_eq!(v["calls_total"], 1, "{v}");
    assert_eq!(v["calls_by_path"][MODIFY], 1, "{v}");
    assert!(v.get("log").is_none());
    let (_, v) = h
        .control(reqwest::Method::GET, "stats?log=true", None)
        .await;
    assert_eq!(v["log"].as_array().map(Vec::len), Some(1), "{v}");

    let (s, _) = h
        .control(
            post.clone(),
            "groups/dissolve",
            Some(json!({"group_id": G})),
        )
        .await;
    assert_eq!(s, 200);
    let v = h.set(&[("a", &[1000])]).await;
    assert_eq!(code(&v), 10010);
    let (s, _) = h.control(post.clone(), "reset", Some(json!({}))).await;
    assert_eq!(s, 200);
    assert_eq!(h.emu.call_count(), 0);
    assert!(h.emu.groups().is_empty());
    let (s, v) = h
        .control(post, "clock/advance", Some(json!({"secs": 1})))
        .await;
    assert_eq!(s, 400, "unknown fields are refused: {v}");
}

#[tokio::test]
async fn demo_mode_creates_groups_and_members_on_first_use() {
    let cfg = EmulatorConfig {
        auto_create_groups: true,
        members_online_by_default: true,
        ..config()
    };
    let h = Harness::start(cfg).await;
    let v = h.set(&[("anyone", &[1000])]).await;
    assert_eq!((code(&v), listed(&v)), (0, "anyone:[1000]".into()), "{v}");
    let v = h.call(LIST, json!({"GroupId": G})).await;
    assert_eq!(v["MemberList"][0]["Member_Account"], "anyone");
}

/// One raw HTTP/1.0 request to the emulator with exactly these headers; the status code.
fn raw_status(addr: std::net::SocketAddr, request_line: &str, headers: &str, body: &str) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{request_line} HTTP/1.0\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 17: a web page must not be able to drive the control API (no JSON content type, or a
/// DNS-rebinding host name), and `/emulator/callbacks` must not relay to other machines.
#[tokio::test]
async fn the_control_api_refuses_web_pages_and_posts_callbacks_only_to_loopback() {
    let h = Harness::start(config()).await;
    let addr = h.emu.addr();
    let port = addr.port();
    let post = |headers: String| {
        tokio::task::spawn_blocking(move || raw_status(addr, "POST /emulator/reset", &headers, ""))
    };
    let json = "Content-Type: application/json\r\n";
    // Content-Type: JSON only on POST (a form or text/plain POST needs no CORS preflight).
    for (ct, status) in [
        ("", 415),
        ("Content-Type: text/plain\r\n", 415),
        ("Content-Type: application/x-www-form-urlencoded\r\n", 415),
        ("Content-Type: multipart/form-data; boundary=x\r\n", 415),
        (json, 200),
        ("Content-Type: Application/JSON; charset=utf-8\r\n", 200),
    ] {
        let got = within(post(format!("Host: 127.0.0.1:{port}\r\n{ct}")))
            .await
            .unwrap();
        assert_eq!(got, status, "{ct:?}");
    }
    // Host: a loopback name or address only (a rebinding page sends its own name).
    for (host, status) in [
        (format!("localhost:{port}"), 200),
        (format!("LOCALHOST:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("127.3.4.5:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        ("localhost".to_owned(), 200),
        (format!("evil.example:{port}"), 421),
        (format!("localhost.evil.example:{port}"), 421),
        (format!("10.0.0.1:{port}"), 421),
        (format!("[::1]x:{port}"), 421),
        (String::new(), 421),
    ] {
        let header = if host.is_empty() {
            String::new()
        } else {
            format!("Host: {host}\r\n")
        };
        let got = within(post(format!("{header}{json}"))).await.unwrap();
        assert_eq!(got, status, "Host {host:?}");
        let get = tokio::task::spawn_blocking(move || {
            raw_status(addr, "GET /emulator/groups", &header, "")
        });
        assert_eq!(within(get).await.unwrap(), status, "GET, Host {host:?}");
    }
    // Callback targets: loopback URLs only; nothing is sent elsewhere.
    for url in [
        "http://10.1.2.3:9464/callback",
        "http://example.com/callback",
        "https://169.254.169.254/latest/meta-data",
        "http://127.0.0.1.nip.io/callback",
    ] {
        let (status, v) = h
            .control(
                reqwest::Method::POST,
                "callbacks",
                Some(json!({"url": url, "command": "Group.CallbackAfterNewMemberJoin"})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("not on this machine"),
            "{url}: {v}"
        );
    }
}

/// Issue 16: `marksync emulator --help` lists every control route the emulator serves, and
/// each route it lists answers (neither the unknown-path 404 nor a 405).
#[tokio::test]
async fn emulator_help_lists_every_control_route_and_each_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let help = common::cli::marksync(dir.path(), &["emulator", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    let listed: Vec<(String, String)> = help
        .stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (method, path) = (words.next()?, words.next()?);
            path.starts_with("/emulator/")
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect();
    // Every route of the router, read from its source, is in the help.
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/emulator/http/control.rs"),
    )
    .unwrap();
    let router = &source[source.find("fn routes(").unwrap()..];
    let router = &router[..router.find("\n}\n").unwrap()];
    let mut routed = Vec::new();
    for chunk in router.split(".route(\"").skip(1) {
        let path = &chunk[..chunk.find('"').unwrap()];
        let handlers = &chunk[..chunk.find("))").map_or(chunk.len(), |i| i + 2)];
        for (call, method) in [("get(", "GET"), ("post(", "POST"), ("delete(", "DELETE")] {
            if handlers.contains(call) && path.starts_with("/emulator/") {
                routed.push((method.to_string(), path.to_string()));
            }
        }
    }
    assert!(routed.len() >= 15, "{routed:?}");
    for route in &routed {
        assert!(
            listed.contains(route),
            "{route:?} missing from:\n{}",
            help.stdout
        );
    }
    assert!(
        help.stdout.contains("marksync's own clock stays real"),
        "{}",
        help.stdout
    );
    // Each listed route is served (a bad body is a 4xx of the route itself, not 404/405).
    let h = Harness::start(config()).await;
    for (method, path) in &listed {
        let req = h
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", h.emu.base_url()),
            )
            .header("content-type", "application/json")
            .body("{}");
        let status = within(req.send()).await.unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path}: {status}");
    }
}
