//! Service requests: a round trip with a valid UserSig, the published vector, and the documented
//! codes for bad credentials, bodies and groups.

use super::*;

#[tokio::test]
async fn set_and_delete_round_trip_with_a_valid_sig() {
    let h = Harness::with_group(config(), &["teacher10", "student9"], &[]).await;
    let v = h
        .set(&[("teacher10", &[1000]), ("student9", &[1001, 1002])])
        .await;
    assert_eq!(
        (v["ActionStatus"].as_str(), code(&v)),
        (Some("OK"), 0),
        "{v}"
    );
    assert_eq!(v["CommandType"], 1);
    assert_eq!(listed(&v), "teacher10:[1000] student9:[1001,1002]");
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("student9", &[1001, 1002]), ("teacher10", &[1000])])
    );

    let v = h.modify(2, &[("student9", &[1001])]).await;
    assert_eq!((code(&v), v["CommandType"].as_i64()), (0, Some(2)), "{v}");
    assert_eq!(listed(&v), "student9:[1001]");
    assert_eq!(
        h.emu.marks_of(G),
        marks(&[("student9", &[1002]), ("teacher10", &[1000])])
    );
    within(h.emu.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_sig_carrying_the_published_vector_is_accepted() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    // The reference's vector was computed at time 1700000000 with a 24 h validity.
    h.emu.set_clock(1_700_000_100);
    assert_eq!(
        tls_sig(ADMIN, APP, KEY, 1_700_000_000, 86_400),
        "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60="
    );
    assert_eq!(
        tls_sig("xiaojun", APP, KEY, 1_700_000_000, 15_552_000),
        "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
    );
    let sig = pack_sig(
        ADMIN,
        APP,
        1_700_000_000,
        86_400,
        "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=",
    );
    let body = json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [1000]}]});
    let (_, v) = h
        .raw(MODIFY, &h.query(ADMIN, &sig), &body.to_string())
        .await;
    assert_eq!(code(&v), 0, "{v}");
    // A day later the same sig has expired.
    h.emu.advance_clock(86_400);
    let (_, v) = h
        .raw(MODIFY, &h.query(ADMIN, &sig), &body.to_string())
        .await;
    assert_eq!(code(&v), 70001, "{v}");
}

#[tokio::test]
async fn bad_credentials_get_the_documented_codes() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    let now = h.emu.now();
    let body = json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [1000]}]})
        .to_string();
    let check = |name: &'static str, query: Vec<(&'static str, String)>, want: i64| {
        let h = &h;
        let body = body.clone();
        async move {
            let (status, v) = h.raw(MODIFY, &query, &body).await;
            assert_eq!((status, code(&v)), (200, want), "{name}: {v}");
            assert_eq!(v["ActionStatus"], "FAIL", "{name}");
        }
    };
    check(
        "wrong key",
        h.query(ADMIN, &make_sig(ADMIN, APP, "not-the-key", now, 86_400)),
        70009,
    )
    .await;
    let mut tampered = tls_sig(ADMIN, APP, KEY, now - 100, 10);
    tampered = pack_sig(ADMIN, APP, now - 100, 86_400, &tampered);
    check("extended expiry", h.query(ADMIN, &tampered), 70009).await;
    check(
        "expired",
        h.query(ADMIN, &make_sig(ADMIN, APP, KEY, now - 100, 10)),
        70001,
    )
    .await;
    check(
        "sig for bob",
        h.query(ADMIN, &make_sig("bob", APP, KEY, now, 86_400)),
        70013,
    )
    .await;
    check(
        "sig for another app",
        h.query(ADMIN, &make_sig(ADMIN, APP + 1, KEY, now, 86_400)),
        70014,
    )
    .await;
    check(
        "not an admin",
        h.query("bob", &make_sig("bob", APP, KEY, now, 86_400)),
        60010,
    )
    .await;
    for garbage in ["garbage", "eJzLSM3JyQcABiwCFQ__", "*-_"] {
        check("garbage", h.query(ADMIN, garbage), 70003).await;
    }
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[0].1 = (APP + 1).to_string();
    check("unknown app", q, 70016).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[0].1 = "x".into();
    check("bad sdkappid", q, 60006).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q.remove(2);
    check("no usersig", q, 10001).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[3].1 = "4294967296".into();
    check("random too big", q, 10004).await;
    let mut q = h.query(ADMIN, &h.admin_sig());
    q[4].1 = "xml".into();
    check("contenttype", q, 10004).await;
    assert!(
        h.emu.marks_of(G).is_empty(),
        "no refused call changed anything"
    );
}

#[tokio::test]
async fn bad_bodies_and_groups_are_refused() {
    let h = Harness::with_group(config(), &["a"], &[]).await;
    h.emu
        .create_group("@TGS#public", GroupType::Public)
        .unwrap();
    h.emu
        .create_group("@TGS#gone", GroupType::AVChatRoom)
        .unwrap();
    h.emu.dissolve_group("@TGS#gone").unwrap();
    let q = h.query(ADMIN, &h.admin_sig());
    // The vendor's own sample has a trailing comma: not JSON.
    let seed = r#"{"GroupId": "@TGS#a6I4ZUUGO","CommandType": 1,"MemberList": [{"Member_Account": "teacher10","Marks": [1000]},]}"#;
    let entry = json!([{"Member_Account": "a", "Marks": [1000]}]);
    let cases: Vec<(&str, String, i64)> = vec![
        ("seed sample", seed.into(), 10011),
        ("empty", String::new(), 10011),
        ("array", "[]".into(), 10004),
        ("no GroupId", json!({"CommandType": 1, "MemberList": entry}).to_string(), 10004),
        ("no MemberList", json!({"GroupId": G, "CommandType": 1}).to_string(), 10004),
        ("no CommandType", json!({"GroupId": G, "MemberList": entry}).to_string(), 10004),
        ("CommandType 3", json!({"GroupId": G, "CommandType": 3, "MemberList": entry}).to_string(), 10003),
        ("CommandType str", json!({"GroupId": G, "CommandType": "1", "MemberList": entry}).to_string(), 10003),
        (
            "mark 999",
            json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a", "Marks": [999]}]})
                .to_string(),
            10004,
        ),
        (
            "no Marks",
            json!({"GroupId": G, "CommandType": 1, "MemberList": [{"Member_Account": "a"}]}).to_string(),
            10004,
        ),
        ("empty GroupId", json!({"GroupId": "", "CommandType": 1, "MemberList": entry}).to_string(), 10015),
        ("unknown", json!({"GroupId": "@TGS#nope", "CommandType": 1, "MemberList": entry}).to_string(), 10010),
        ("dissolved", json!({"GroupId": "@TGS#gone", "CommandType": 1, "MemberList": entry}).to_string(), 10010),
        ("public", json!({"GroupId": "@TGS#public", "CommandType": 1, "MemberList": entry}).to_string(), 10007),
    ];
    for (name, body, want) in cases {
        let (status, v) = h.raw(MODIFY, &q, &body).await;
        assert_eq!((status, code(&v)), (200, want), "{name}: {v}");
        assert!(
            v["ErrorInfo"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: {v}"
        );
    }
    let (_, v) = h
        .raw(LIST, &q, &json!({"GroupId": "@TGS#gone"}).to_string())
        .await;
    assert_eq!(code(&v), 10010, "{v}");
    let (_, v) = h
        .raw(LIST, &q, &json!({"GroupId": G, "Mark": 7}).to_string())
        .await;
    assert_eq!(code(&v), 10004, "{v}");
}
