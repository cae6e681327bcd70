//! The daemon's HTTP listener under a connection flood, longer than `tests/listener.rs` runs it.
//! `cargo bench --bench listener_flood [-- --rate 1000 --secs 20 --sources 1 --every-ms 20]`
//!
//! A listener with the daemon's limits and routes (no callback token, so callback bodies are
//! read) on `127.0.0.1`; hostile connections at `--rate` a second from `--sources` addresses
//! starting at `127.0.0.2`, every other one trickling a callback body, the others idle; a real
//! client on `127.0.0.1` sends a callback and a probe on new connections and `/healthz` on one
//! kept-alive connection every `--every-ms`. Prints what share of each was answered. Runs the
//! flood from one address, then from eight, unless `--sources` says which.

use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

use common::flood::{Flood, run};

fn main() {
    let rate = common::flag("--rate").unwrap_or(1000);
    let secs = common::flag("--secs").unwrap_or(20);
    let every = Duration::from_millis(common::flag("--every-ms").unwrap_or(20));
    let sources: Vec<u8> = match common::flag("--sources") {
        Some(n) => vec![n],
        None => vec![1, 8],
    };
    for sources in sources {
        let report = run(Flood {
            rate,
            sources,
            duration: Duration::from_secs(secs),
            warmup: Duration::from_secs(1),
            every,
        });
        println!("{report}\n");
    }
}
