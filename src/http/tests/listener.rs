//! The accept loop's limits: connection cap, eviction, header and lifetime timeouts.

use super::super::*;
use super::within;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Bounds every wait of these tests.
const BOUND: Duration = Duration::from_secs(10);

/// Tight limits so that the tests run in about a second.
fn limits(max_connections: usize) -> Limits {
    Limits {
        max_connections,
        max_per_peer: max_connections,
        reserved_for_probes: 0,
        header_read_timeout: Duration::from_millis(500),
        max_connection_age: Duration::from_secs(30),
        close_grace: Duration::from_millis(200),
    }
}

/// `/healthz`, and `/slow` whose handler takes `ms` milliseconds.
async fn start(limits: Limits) -> SocketAddr {
    let app = Router::new().route("/healthz", get(healthz)).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            "slow"
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with(listener, app, limits, std::future::pending()));
    addr
}

/// Sends a one-shot GET on a new connection; the whole answer, or `""` when the
/// connection was closed without one.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut out))
        .await
        .expect("answer or close within the bound");
    String::from_utf8_lossy(&out).into_owned()
}

async fn fetch(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    get_on(&mut s, path).await
}

/// How long until the peer closes `stream` (reads and discards whatever it sends).
async fn closed_after(stream: &mut TcpStream, start: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the connection is closed within the bound");
    start.elapsed()
}

#[test]
fn the_cap_is_a_quarter_of_the_descriptors_and_at_most_256() {
    assert_eq!(Limits::for_nofile(Some(64)).max_connections, 16);
    assert_eq!(Limits::for_nofile(Some(1024)).max_connections, 256);
    assert_eq!(Limits::for_nofile(Some(524_288)).max_connections, 256);
    assert_eq!(Limits::for_nofile(Some(2)).max_connections, 1);
    assert_eq!(Limits::for_nofile(None).max_connections, MAX_CONNECTIONS);
    let proc_limits = "Limit                     Soft Limit           Hard Limit           Units\n\
        Max processes             127339               127339               processes\n\
        Max open files            1024                 524288               files\n";
    assert_eq!(parse_nofile_soft(proc_limits), Some(1024));
    assert_eq!(
        parse_nofile_soft("Max open files  unlimited  unlimited  files\n"),
        None
    );
    assert!(
        nofile_soft_limit().is_some(),
        "/proc/self/limits is readable here"
    );
}

#[tokio::test]
async fn idle_connections_make_room_for_new_ones_and_time_out() {
    let addr = start(limits(4)).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Twenty idle connections against a cap of four: a new request still gets through,
    // at once, by evicting the oldest idle one.
    let t = Instant::now();
    let answer = fetch(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // And every idle connection is closed: evicted, or after the header read timeout.
    for s in &mut idle {
        let after = closed_after(s, opened).await;
        assert!(
            after < Duration::from_millis(2500),
            "closed after {after:?}"
        );
    }
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_once_idle_for_the_header_timeout() {
    let addr = start(limits(4)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(BOUND, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();
    let after = closed_after(&mut s, idle_since).await;
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_millis(2000),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_header_sent_byte_by_byte_is_cut_at_the_timeout() {
    let addr = start(limits(4)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let header =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in header {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if start.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    let after = if cut {
        start.elapsed()
    } else {
        closed_after(&mut s, start).await
    };
    assert!(
        after < Duration::from_millis(2000),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn busy_connections_are_not_evicted_and_an_extra_one_is_closed() {
    let addr = start(limits(2)).await;
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { fetch(addr, "/slow").await }))
        .collect();
    // Let both requests reach their handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let extra = fetch(addr, "/healthz").await;
    assert_eq!(extra, "", "no answer: closed at once");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    for h in slow {
        let answer = within(h).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("slow"), "{answer}");
    }
    // Slots come back once the busy connections end.
    let answer = fetch(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_requests_in_flight_finish() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut limits = limits(4);
    limits.close_grace = Duration::from_secs(2);
    let server = tokio::spawn(serve_with(listener, app, limits, async {
        let _ = stopped.await;
    }));
    let in_flight = tokio::spawn(async move { fetch(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let answer = within(in_flight).await.unwrap();
    assert!(answer.ends_with("slow"), "{answer}");
    within(server).await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
