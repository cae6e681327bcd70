//! Members and marks: presence, mark 500, the service's limits and rate limit, and listing.

use super::*;

#[tokio::test]
async fn offline_members_are_omitted_and_all_offline_fails_with_the_configured_code() {
    let cfg = EmulatorConfig {
        all_offline_error_code: 10019,
        ..config()
    };
    let h = Harness::with_group(cfg, &["on"], &["off"]).await;
    let v = h
        .set(&[("on", &[1000]), ("off", &[1000]), ("stranger", &[1000])])
        .await;
    assert_eq!((code(&v), listed(&v)), (0, "on:[1000]".into()), "{v}");
    let v = h.set(&[("off", &[1000]), ("stranger", &[1000])]).await;
    assert_eq!(
        (code(&v), v["ActionStatus"].as_str()),
        (10019, Some("FAIL")),
        "{v}"
    );
    assert_eq!(h.emu.marks_of(G), marks(&[("on", &[1000])]));

    // A delete is held to the same rule: nobody online in it, the whole call fails.
    let v = h
        .modify(2, &[("off", &[1000]), ("stranger", &[1000])])
        .await;
    assert_eq!(
        (code(&v), v["ActionStatus"].as_str()),
        (10019, Some("FAIL")),
        "{v}"
    );
    // With one online member in it, it succeeds and lists the offline one too.
    let v = h.modify(2, &[("on", &[1000]), ("off", &[1000])]).await;
    assert_eq!(
        (code(&v), listed(&v)),
        (0, "on:[1000] off:[1000]".into()),
        "{v}"
    );
    assert!(h.emu.marks_of(G).is_empty());
}

#[tokio::test]
async fn mark_500_is_settable_offline_keeps_the_member_online_and_expires_after_72h() {
    let h = Harness::with_group(config(), &["host"], &["guest"]).await;
    let v = h
        .set(&[("guest", &[500, 1000]), ("host", &[500, 1000])])
        .await;
    assert_eq!(listed(&v), "guest:[500] host:[500,1000]", "{v}");
    // With a live 500 the offline guest counts as online: other marks can be set now.
    let v = h.set(&[("guest", &[1000])]).await;
    assert_eq!(listed(&v), "guest:[1000]", "{v}");
    // Going offline drops everything but 500.
    h.emu.set_offline(G, &["host"]).await.unwrap();
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("guest", &[500, 1000]), ("host", &[500])])
    );

    h.emu.advance_clock(72 * 3600 - 5);
    assert_eq!(h.emu.marks_of(G).len(), 2);
    let v = h.set(&[("host", &[500])]).await; // renewal restarts the 72 h
    assert_eq!(code(&v), 0, "{v}");
    h.emu.advance_clock(10);
    assert_eq!(h.emu.marks_of(G), marks(&[("host", &[500])]));
    // The guest is offline with nothing left: it takes no ordinary mark.
    let v = h.set(&[("guest", &[1000])]).await;
    assert_eq!(code(&v), 10004, "{v}");
    // Leaving drops 500 too.
    h.emu.leave(G, &["host"]).await.unwrap();
    assert!(h.emu.marks_of(G).is_empty());
}

#[tokio::test]
async fn limits_500_per_call_10_marks_1000_members_per_mark() {
    let accounts: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let h = Harness::with_group(config(), &refs, &[]).await;

    let entries: Vec<(&str, &[u32])> = refs.iter().map(|a| (*a, &[1000u32][..])).collect();
    let v = h.set(&entries[..501]).await;
    assert_eq!(code(&v), 10004, "501 accounts in one call");
    assert!(h.emu.marks_of(G).is_empty());
    assert_eq!(code(&h.set(&entries[..500]).await), 0);
    assert_eq!(code(&h.set(&entries[500..1000]).await), 0);
    let v = h.set(&entries[1000..]).await;
    assert_eq!(code(&v), 10004, "{v}");
    assert!(
        v["ErrorInfo"].as_str().unwrap().contains("mark 1000"),
        "{v}"
    );
    assert_eq!(h.emu.marks_of(G).len(), 1000);

    let nine: Vec<u32> = (1001..1010).collect();
    assert_eq!(
        code(&h.set(&[("u0", &nine)]).await),
        0,
        "10 distinct marks are fine"
    );
    let v = h.set(&[("u1", &[1010])]).await;
    assert_eq!(code(&v), 10004, "{v}");
    assert!(
        v["ErrorInfo"].as_str().unwrap().contains("at most 10"),
        "{v}"
    );
    // Freeing a mark makes room again.
    assert_eq!(code(&h.modify(2, &[("u0", &[1009])]).await), 0);
    assert_eq!(code(&h.set(&[("u1", &[1010])]).await), 0);
}

#[tokio::test]
async fn the_rate_limit_refuses_calls_past_the_limit_with_60018() {
    let cfg = EmulatorConfig {
        max_calls_per_second: 20,
        ..config()
    };
    let h = Harness::with_group(cfg, &["a"], &[]).await;
    let start = Instant::now();
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(code(&h.call(LIST, json!({"GroupId": G})).await));
    }
    let ok = codes.iter().filter(|c| **c == 0).count();
    let limited = codes.iter().filter(|c| **c == 60018).count();
    assert_eq!(ok + limited, 30, "{codes:?}");
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(ok, 20, "{codes:?}");
    }
    assert!(limited >= 1, "{codes:?}");
    assert_eq!(h.emu.call_count(), 30);
    assert!(h.emu.max_calls_in_any_second() >= 21);
    assert_eq!(
        h.emu.stats(false).errors_by_code.get(&60018).copied(),
        Some(limited as u64)
    );
}

#[tokio::test]
async fn get_members_pages_and_filters_by_mark() {
    let cfg = EmulatorConfig {
        members_page_size: 3,
        ..config()
    };
    let h = Harness::with_group(cfg, &["m1", "m2", "m3", "m4", "m5", "m6", "m7"], &["off"]).await;
    h.set(&[("m2", &[1000]), ("m5", &[1000]), ("m7", &[600])])
        .await;
    let mut seen = Vec::new();
    let mut ts = 0;
    for _ in 0..10 {
        let v = h.call(LIST, json!({"GroupId": G, "Timestamp": ts})).await;
        assert_eq!(code(&v), 0, "{v}");
        for m in v["MemberList"].as_array().unwrap() {
            seen.push(m["Member_Account"].as_str().unwrap().to_owned());
            assert!(m["JoinTime"].as_i64().unwrap() > 0);
        }
        ts = v["NextTimestamp"].as_u64().unwrap();
        if ts == 0 {
            break;
        }
    }
    // Most recently joined first; m7 is hidden by mark 600, "off" is offline.
    assert_eq!(seen, ["m6", "m5", "m4", "m3", "m2", "m1"]);
    let v = h
        .call(LIST, json!({"GroupId": G, "Timestamp": 0, "Mark": 1000}))
        .await;
    let names: Vec<&str> = v["MemberList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Member_Account"].as_str().unwrap())
        .collect();
    assert_eq!(
        (names, v["NextTimestamp"].as_u64()),
        (vec!["m5", "m2"], Some(0))
    );
    let v = h.call(LIST, json!({"GroupId": G, "Mark": 600})).await;
    assert_eq!(v["MemberList"][0]["Member_Account"], "m7", "{v}");
}

#[tokio::test]
async fn a_short_page_fault_ends_a_listing_early_like_its_real_end() {
    let cfg = EmulatorConfig {
        members_page_size: 3,
        ..config()
    };
    let h = Harness::with_group(cfg, &["m1", "m2", "m3", "m4", "m5", "m6", "m7"], &[]).await;
    let (status, v) = h
        .control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"kind": "short_page", "count": 1})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Writes are never hit.
    assert_eq!(code(&h.set(&[("m1", &[1000])]).await), 0);
    // The first page comes back with fewer than its 3 members and NextTimestamp 0: the
    // listing "ends" there, as the service's answer would if it ended.
    let v = h.call(LIST, json!({"GroupId": G, "Timestamp": 0})).await;
    assert_eq!(code(&v), 0, "{v}");
    assert!(v["MemberList"].as_array().unwrap().len() < 3, "{v}");
    assert_eq!(v["NextTimestamp"], 0, "{v}");
    // The count is used up: the next listing has its full first page and goes on.
    let v = h.call(LIST, json!({"GroupId": G, "Timestamp": 0})).await;
    assert_eq!(v["MemberList"].as_array().unwrap().len(), 3, "{v}");
    assert_ne!(v["NextTimestamp"], 0, "{v}");
}
