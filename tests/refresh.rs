//! Refresh against the emulator (SPEC section 10): reading every page of `get_members` with and
//! without the `Mark` filter, faults that must never read as "absent", the 40 s staleness, the
//! drift kinds end to end, and the client's failover to a backup endpoint. Every wait is bounded;
//! every server is on loopback with a port the OS chose.

use std::sync::Arc;
use std::time::Duration;

use marksync::clock::{Clock, ManualClock};
use marksync::desired::DesiredState;
use marksync::emulator::{Emulator, EmulatorConfig, Fault, FaultKind, GroupType};
use marksync::plan::{Policy, plan};
use marksync::refresh::{self, DriftKind, RefreshError};
use marksync::state::State;
use marksync::tim::client::{CallError, Client, ClientConfig, ListError};
use marksync::tim::usersig::SecretKey;

mod common;
use common::{ADMIN, APP, KEY, a, g, m, within};

const G: &str = "@TGS#refresh";

/// Quick retries, so that fault tests end fast.
fn client_config(base: &str) -> ClientConfig {
    let mut c = ClientConfig::new(base, APP, ADMIN, SecretKey::new(KEY).unwrap());
    c.max_attempts = 3;
    c.backoff_min = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(20);
    c.request_timeout = Duration::from_secs(5);
    c
}

/// An emulator with group G and `online` members, and a client whose clock is the emulator's
/// virtual clock (so read times and the 40 s staleness agree).
async fn setup(cfg: EmulatorConfig, online: &[&str]) -> (Emulator, Client, Arc<ManualClock>) {
    let emu = within(Emulator::start(cfg)).await.unwrap();
    emu.create_group(G, GroupType::AVChatRoom).unwrap();
    emu.set_online(G, online).await.unwrap();
    let clock = Arc::new(ManualClock::new(emu.now()));
    let client = Client::new(client_config(&emu.base_url()), clock.clone()).unwrap();
    (emu, client, clock)
}

fn emulator_config() -> EmulatorConfig {
    EmulatorConfig::new(APP, KEY, ADMIN)
}

/// Moves both clocks on, past the emulator's listing cache.
fn advance(emu: &Emulator, clock: &ManualClock, secs: i64) {
    emu.advance_clock(secs);
    clock.set(emu.now());
}

fn desired(rows: &[(&str, &[u64])]) -> DesiredState {
    let mut d = DesiredState::default();
    for (acc, marks) in rows {
        common::desire(&mut d, g(G), a(acc), marks.iter().map(|&n| m(n)));
    }
    d
}

#[tokio::test]
async fn listing_follows_next_timestamp_through_every_page_and_filters_by_mark() {
    let cfg = EmulatorConfig {
        members_page_size: 3,
        ..emulator_config()
    };
    let names: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (emu, client, _) = setup(cfg, &names).await;
    emu.set_marks_as_other(G, &["m1", "m6"], &[1000]).unwrap();

    let all = within(client.list_members(G, None)).await.unwrap();
    assert_eq!(all.pages, 3, "8 members in pages of 3");
    assert_eq!(
        all.accounts,
        ["m7", "m6", "m5", "m4", "m3", "m2", "m1", "m0"]
    );
    let holders = within(client.list_members(G, Some(1000))).await.unwrap();
    assert_eq!(
        (holders.accounts, holders.pages),
        (vec!["m6".into(), "m1".into()], 1)
    );
    let none = within(client.list_members(G, Some(1001))).await.unwrap();
    assert!(none.accounts.is_empty());
    assert_eq!(emu.call_count(), 5, "one call per page");

    let live = within(client.read_live(G, &[1000, 1001])).await.unwrap();
    assert_eq!(live.calls(), 5);
}

#[tokio::test]
async fn the_window_marks_a_listing_full() {
    let cfg = EmulatorConfig {
        online_list_cap: 30,
        ..emulator_config()
    };
    let names: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_emu, client, clock) = setup(cfg, &names).await;
    let live = within(client.read_live(G, &[])).await.unwrap();
    assert_eq!(
        live.online.accounts.len(),
        30,
        "the 30 most recently joined"
    );
    assert_eq!(live.online.accounts[0], "m39");
    assert_eq!(live.online.read_at, clock.now());
}

#[tokio::test]
async fn a_failed_read_is_never_absent() {
    let (emu, client, clock) = setup(emulator_config(), &["u"]).await;
    let d = desired(&[("u", &[1000])]);
    let mut state = State::new(APP);
    state.confirm(&g(G), &a("u"), [m(1000)], clock.now() - 3600);
    let before = state.clone();

    // A transient fault that outlasts the retries: the group is unread, nothing is forgotten.
    emu.inject_fault(Fault {
        path: Some("get_members".into()),
        ..Fault::always(FaultKind::ErrorCode { code: 10002 })
    })
    .unwrap();
    let r = within(refresh::refresh(&client, &d, &mut state, clock.as_ref()))
        .await
        .unwrap();
    assert!(r.classified.drift.is_empty(), "{:?}", r.classified.drift);
    assert!(matches!(
        r.unread[&g(G)],
        ListError::Call {
            source: CallError::Unavailable { code: 10002, .. },
            ..
        }
    ));
    assert_eq!(state, before);

    // Dropped connections on the mark query only (the online listing succeeds): still unread.
    emu.clear_faults();
    emu.inject_fault(Fault {
        path: Some("get_members".into()),
        count: Some(3),
        ..Fault::always(FaultKind::DropConnection)
    })
    .unwrap();
    let first = within(client.list_members(G, None)).await.unwrap_err();
    assert_eq!(first.metric_label(), "transport");
    emu.clear_faults();
    emu.inject_fault(Fault {
        path: Some("get_members".into()),
        count: Some(1),
        ..Fault::always(FaultKind::HttpStatus { status: 502 })
    })
    .unwrap();
    // One 502, then answers: retried, and a real answer is classified (u holds no 1000: lost).
    let r = within(refresh::refresh(&client, &d, &mut state, clock.as_ref()))
        .await
        .unwrap();
    assert!(r.unread.is_empty());
    let kinds: Vec<_> = r.classified.drift.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, [DriftKind::Lost]);
}

#[tokio::test]
async fn no_permission_stops_the_refresh_and_names_the_console_switch() {
    for code in [10059, 10007] {
        let (emu, client, clock) = setup(emulator_config(), &["u"]).await;
        emu.inject_fault(Fault {
            path: Some("get_members".into()),
            ..Fault::always(FaultKind::ErrorCode { code })
        })
        .unwrap();
        let mut state = State::new(APP);
        state.confirm(&g(G), &a("u"), [m(1000)], clock.now() - 3600);
        let before = state.clone();
        let err = within(refresh::refresh(
            &client,
            &desired(&[("u", &[1000])]),
            &mut state,
            clock.as_ref(),
        ))
        .await
        .unwrap_err();
        assert!(err.is_no_permission(), "{err:?}");
        let RefreshError::Read(read) = &err;
        assert!(read.is_fatal());
        let text = err.to_string();
        assert!(
            text.contains("list of online audio-video group members") && text.contains(G),
            "{text}"
        );
        assert_eq!(state, before);
        assert_eq!(emu.call_count(), 1, "code {code} is not retried");
    }
}

#[tokio::test]
async fn drift_kinds_end_to_end_with_the_40s_staleness() {
    let (emu, client, clock) = setup(emulator_config(), &["lost", "off", "gone", "keep"]).await;
    // What an earlier apply set and recorded an hour ago.
    let long_ago = clock.now() - 3600;
    emu.set_marks_as_other(G, &["lost", "off", "keep"], &[1000])
        .unwrap();
    emu.set_marks_as_other(G, &["gone"], &[1001]).unwrap();
    let mut state = State::new(APP);
    for acc in ["lost", "off", "keep"] {
        state.confirm(&g(G), &a(acc), [m(1000)], long_ago);
    }
    state.confirm(&g(G), &a("gone"), [m(1001)], long_ago);
    // Desired: 1000 for lost, off and keep, 1001 for `adopt`, nothing for gone.
    let d = desired(&[
        ("lost", &[1000]),
        ("off", &[1000]),
        ("keep", &[1000]),
        ("adopt", &[1001, 500]),
    ]);
    // A first read takes the emulator's snapshot.
    let first = within(refresh::read(&client, &refresh::to_read(&d, &state), 4))
        .await
        .unwrap();
    assert_eq!(first.facts.groups.len(), 1);

    // Behind marksync's back: `lost` drops and comes back (loses 1000), `off` goes offline,
    // another tool clears `gone`'s 1001, gives `stranger` 1000 and `adopt` 1001 and 500.
    emu.set_offline(G, &["lost", "off"]).await.unwrap();
    emu.set_online(G, &["lost", "stranger", "adopt"])
        .await
        .unwrap();
    emu.clear_marks_as_other(G, &["gone"], &[1001]).unwrap();
    emu.set_marks_as_other(G, &["stranger"], &[1000]).unwrap();
    emu.set_marks_as_other(G, &["adopt"], &[1001, 500]).unwrap();

    // Within 40 s the service still answers from its snapshot: nothing drifted yet.
    advance(&emu, &clock, 20);
    let mut early = state.clone();
    let r = within(refresh::refresh(&client, &d, &mut early, clock.as_ref()))
        .await
        .unwrap();
    assert!(r.classified.drift.is_empty(), "{:?}", r.classified.drift);

    // Past it, the drift shows.
    advance(&emu, &clock, 21);
    let r = within(refresh::refresh(&client, &d, &mut state, clock.as_ref()))
        .await
        .unwrap();
    let drift: Vec<String> = r
        .classified
        .drift
        .iter()
        .map(|x| format!("{} {} {}", x.account, x.mark, x.kind.as_str()))
        .collect();
    assert_eq!(
        drift,
        [
            "adopt 500 adopted",
            "adopt 1001 adopted",
            "gone 1001 gone",
            "lost 1000 lost",
            "off 1000 offline",
            "stranger 1000 unmanaged",
        ]
    );
    assert_eq!(
        r.calls, 4,
        "online listing + marks 500, 1000, 1001, one page each"
    );
    assert!(r.classified.needs_calls());

    // The plan on the refreshed state: set lost's 1000 again, off's 1000 (pending: offline),
    // renew adopt's 500 of unknown age; clear gone's 1001 as without a refresh (absence from a
    // listing never removes a clear); nothing for stranger or adopt's 1001.
    let p = plan(&d, &state, clock.now(), &Policy::default());
    let calls: Vec<String> = p
        .calls
        .iter()
        .flat_map(|c| {
            c.members
                .iter()
                .map(move |(acc, ms)| format!("{} {acc} {ms}", c.command.as_str()))
        })
        .collect();
    assert_eq!(
        calls,
        [
            "clear gone 1001",
            "set adopt 500",
            "set lost 1000",
            "set off 1000"
        ]
    );
}

/// A loopback address that refuses connections: a socket bound to a port the OS chose and kept
/// bound, but never listening, so nobody else can take the port while the test runs.
fn refusing_address() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, format!("http://{addr}"))
}

#[tokio::test]
async fn calls_fail_over_to_the_backup_endpoint_and_come_back() {
    let (emu, _, clock) = setup(emulator_config(), &["u"]).await;
    let (_held, closed) = refusing_address();

    // No backup (an explicit endpoint without backup_endpoint): the call fails.
    let c = Client::new(client_config(&closed), clock.clone()).unwrap();
    let err = within(c.list_members(G, None)).await.unwrap_err();
    assert_eq!(err.metric_label(), "transport", "{err}");
    assert_eq!(c.endpoint_stats().failovers, 0);

    // With a backup: the first call switches and succeeds on the retry; the next go straight to
    // the backup.
    let mut cfg = client_config(&closed);
    cfg.backup_url = Some(emu.base_url());
    let c = Client::new(cfg.clone(), clock.clone()).unwrap();
    let listing = within(c.list_members(G, None)).await.unwrap();
    assert_eq!(listing.accounts, ["u"]);
    within(c.list_members(G, None)).await.unwrap();
    let stats = c.endpoint_stats();
    assert_eq!((stats.failovers, stats.on_backup), (1, true));
    assert_eq!(stats.active, emu.base_url());
    assert_eq!(emu.call_count(), 2, "nothing was lost on the way");

    // After failback_after the main endpoint is tried again (and here, failed over again). The
    // condition is time passing itself, so this test sleeps past it.
    cfg.failback_after = Duration::from_millis(100);
    let c = Client::new(cfg, clock.clone()).unwrap();
    within(c.list_members(G, None)).await.unwrap();
    assert!(c.endpoint_stats().on_backup);
    tokio::time::sleep(Duration::from_millis(150)).await;
    within(c.list_members(G, None)).await.unwrap();
    let stats = c.endpoint_stats();
    assert_eq!((stats.failovers, stats.on_backup), (2, true));
    assert_eq!(emu.call_count(), 4);
}

#[test]
fn backup_endpoints_follow_the_region_unless_an_endpoint_is_explicit() {
    use marksync::tim::endpoint::{Region, backup_endpoint_url};
    let check = |r, e, b, want: Result<Option<&str>, ()>| {
        let got = backup_endpoint_url(r, e, b).map_err(|_| ());
        assert_eq!(
            got.as_ref().map(Option::as_deref).map_err(|_| ()),
            want,
            "{r} {e:?} {b:?}"
        );
    };
    check(
        Region::China,
        None,
        None,
        Ok(Some("https://adminapi.my-imcloud.com")),
    );
    check(
        Region::Singapore,
        None,
        None,
        Ok(Some("https://adminapisgp.my-imcloud.com")),
    );
    check(
        Region::Jakarta,
        Some("https://proxy.example"),
        None,
        Ok(None),
    );
    check(
        Region::Jakarta,
        Some("https://proxy.example"),
        Some("https://proxy2.example/"),
        Ok(Some("https://proxy2.example")),
    );
    check(Region::China, None, Some("http://example.com"), Err(()));
    for r in Region::ALL {
        let url = backup_endpoint_url(r, None, None).unwrap().unwrap();
        assert_eq!(url, format!("https://{}", r.backup_domain()));
    }
}

#[tokio::test]
async fn other_tools_change_marks_over_the_control_api_and_500_keeps_a_member_listed() {
    let (emu, client, clock) = setup(emulator_config(), &["a", "b"]).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let req = http
            .post(format!("{}/emulator/{path}", emu.base_url()))
            .json(&body)
            .send();
        async move {
            let resp = within(req).await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = post(
        "marks/set",
        serde_json::json!({"group_id": G, "accounts": ["a", "b", "nobody"], "marks": [1000, 500]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"a": [1000, 500], "b": [1000, 500]})
    );
    let (status, _) = post(
        "marks/clear",
        serde_json::json!({"group_id": G, "accounts": ["b"], "marks": [1000]}),
    )
    .await;
    assert_eq!(status, 200);
    // The service's rules apply: eleven marks are refused with its code.
    let marks: Vec<u32> = (2000..2010).collect();
    let (status, body) = post(
        "marks/set",
        serde_json::json!({"group_id": G, "accounts": ["a"], "marks": marks}),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        body["error"].as_str().unwrap().starts_with("10004:"),
        "{body}"
    );
    assert_eq!(emu.call_count(), 0, "not counted as service calls");
    let marks = emu.marks_of(G);
    assert_eq!(
        (marks["a"].clone(), marks["b"].clone()),
        (vec![500, 1000], vec![500])
    );

    // Offline with a live 500: still listed (online listing and the 500 listing) until it runs
    // out; without one, gone from the listing.
    emu.set_offline(G, &["a"]).await.unwrap();
    emu.clear_marks_as_other(G, &["b"], &[500]).unwrap();
    emu.set_offline(G, &["b"]).await.unwrap();
    advance(&emu, &clock, 40);
    let live = within(client.read_live(G, &[500, 1000])).await.unwrap();
    assert_eq!(live.online.accounts, ["a"]);
    assert_eq!(live.marks[&500].accounts, ["a"]);
    assert!(
        live.marks[&1000].accounts.is_empty(),
        "1000 dropped offline"
    );
    advance(&emu, &clock, 72 * 3600);
    let live = within(client.read_live(G, &[500])).await.unwrap();
    assert!(live.online.accounts.is_empty() && live.marks[&500].accounts.is_empty());
}

/// A `get_members` server whose `NextTimestamp` never reaches 0: `next(request's Timestamp)`.
async fn endless(next: fn(u64) -> u64) -> String {
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| async move {
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let ts = req["Timestamp"].as_u64().unwrap_or(0);
        axum::Json(
            serde_json::json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
            "MemberList": [{"Member_Account": format!("m{ts}")}], "NextTimestamp": next(ts)}),
        )
    });
    format!("http://{}", common::serve_on_loopback(app).await)
}

#[tokio::test]
async fn a_listing_that_never_ends_is_an_error_not_a_short_list() {
    let clock = Arc::new(ManualClock::new(1_764_000_000));
    let mut cfg = client_config(&endless(|_| 7).await);
    cfg.max_calls_per_second = 100_000;
    let c = Client::new(cfg, clock.clone()).unwrap();
    let err = within(c.list_members(G, None)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ListError::Paging {
                pages: 2,
                cursor: 7,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_fatal(), "only this group is unread");

    let mut cfg = client_config(&endless(|ts| ts + 1).await);
    cfg.max_calls_per_second = 100_000;
    let c = Client::new(cfg, clock).unwrap();
    let err = within(c.list_members(G, Some(1000))).await.unwrap_err();
    assert!(
        matches!(err, ListError::Paging { pages, .. } if pages == marksync::tim::client::MAX_LISTING_PAGES),
        "{err:?}"
    );
}

#[tokio::test]
async fn with_both_endpoints_refusing_calls_alternate_and_fail_as_transport_errors() {
    let clock = Arc::new(ManualClock::new(1_764_000_000));
    let (_main_held, main) = refusing_address();
    let (_backup_held, backup) = refusing_address();
    let mut cfg = client_config(&main);
    cfg.backup_url = Some(backup.clone());
    cfg.max_attempts = 4;
    let c = Client::new(cfg, clock).unwrap();
    let err = within(c.list_members(G, None)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ListError::Call {
                source: CallError::Transport { attempts: 4, .. },
                ..
            }
        ),
        "{err:?}"
    );
    // Attempts go main, backup, main, backup; each refusal switches: two switches to the
    // backup, and the last refusal (the backup's) points the next call at the main endpoint.
    let stats = c.endpoint_stats();
    assert_eq!((stats.failovers, stats.on_backup), (2, false));
    assert_eq!(stats.active, main);
}
