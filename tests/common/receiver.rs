//! A webhook receiver on loopback (port 0) for the notification tests: it records every body
//! posted to it and answers from a script (a status and a body per request, then a default), or
//! never answers, as a hung webhook would. It runs on a runtime of its own, so blocking tests
//! and async tests use it alike.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

use super::poll;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status and body.
    Reply(u16, &'static str),
    /// No answer at all (the connection stays open until the client gives up).
    Hang,
}

#[derive(Default)]
struct Recorded {
    /// Answers still to give, in order; then `then`.
    script: Vec<Answer>,
    then: Option<Answer>,
    /// Every body received, in order.
    bodies: Vec<Vec<u8>>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
    _stop: std::sync::mpsc::Sender<()>,
}

impl Receiver {
    /// Starts a receiver that answers `script` in order, then `then` for every later request.
    pub fn start(script: Vec<Answer>, then: Answer) -> Receiver {
        let recorded = Arc::new(Mutex::new(Recorded {
            script: script.into_iter().rev().collect(),
            then: Some(then),
            bodies: Vec::new(),
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let shared = recorded.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/hook", post(receive))
                    .with_state(shared);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let server = tokio::spawn(async move { axum::serve(listener, app).await });
                // Stops when the `Receiver` (and so the sender) is dropped.
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                server.abort();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Receiver {
            addr,
            recorded,
            _stop: stop_tx,
        }
    }

    /// A receiver that always answers `status` with `body`.
    pub fn answering(status: u16, body: &'static str) -> Receiver {
        Receiver::start(Vec::new(), Answer::Reply(status, body))
    }

    /// The webhook URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every body received so far, parsed as JSON.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.recorded
            .lock()
            .unwrap()
            .bodies
            .iter()
            .map(|b| serde_json::from_slice(b).expect("a JSON body"))
            .collect()
    }

    /// Waits (at most `limit`) until `n` requests have arrived; returns the bodies.
    pub fn wait_bodies(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        poll(&format!("{n} webhook request(s)"), limit, || {
            let bodies = self.bodies();
            (bodies.len() >= n).then_some(bodies)
        })
    }
}

async fn receive(
    State(recorded): State<Arc<Mutex<Recorded>>>,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let answer = {
        let mut r = recorded.lock().unwrap();
        r.bodies.push(body.to_vec());
        match r.script.pop() {
            Some(a) => a,
            None => r.then.clone().unwrap(),
        }
    };
    match answer {
        Answer::Reply(status, text) => (StatusCode::from_u16(status).unwrap(), text),
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
