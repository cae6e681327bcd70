//! The one home of the helpers the tests and benches share, one file per concern:
//! `marks.rs` (marks tables, the model's IDs, desired states and files), `process.rs` (bounded
//! polling, a child process killed on drop, a tiny blocking HTTP client, addresses read from a
//! server's log, bench flags, `/proc`), `emulator.rs` (in-process and standalone emulators,
//! fake endpoints), `daemon.rs` (`marksync run` under test), `cli.rs` (one-shot runs against
//! `endpoint: embedded`) `flood.rs` (a connection flood against the listener, and a real
//! client measured during it) and `receiver.rs` (a webhook receiver for notifications), `s3.rs` and `azurite.rs` (real object
//! stores: SeaweedFS's S3 API and Azure's emulator). Every server a test talks to
//! binds port 0 itself and reports the address it got; nothing picks a port and hopes it stays
//! free.
//!
//! Include with `mod common;` (tests) or `#[path = "../tests/common/mod.rs"] mod common;`
//! (benches). Each test crate uses only some of these, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod azurite;
pub mod cli;
pub mod daemon;
pub mod flood;
pub mod receiver;
pub mod s3;
pub mod sts;

mod emulator;
mod marks;
mod process;

// Each test crate uses only some of these.
#[allow(unused_imports)]
pub use emulator::*;
#[allow(unused_imports)]
pub use marks::*;
#[allow(unused_imports)]
pub use process::*;

use std::time::Duration;

/// The application every helper speaks for.
pub const APP: u64 = 1_400_000_000;
/// The bundled example's secret key (`examples/demo-secret.key`).
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// The admin identifier.
pub const ADMIN: &str = "administrator";
/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_marksync");
/// How often [`poll`] looks.
pub const POLL: Duration = Duration::from_millis(20);

/// The state file of a config whose `state` is a path (every test config but the object
/// store's).
pub fn state_file(config: &marksync::config::Config) -> &std::path::Path {
    match &config.state {
        marksync::config::Location::File(path) => path,
        other => panic!("this test needs a state file, the config names {other:?}"),
    }
}

/// The state and the plan at `now`, loaded and planned through the engine session as `plan` and
/// `apply` do.
pub async fn plan_at(
    config: &marksync::config::Config,
    reassert: bool,
    now: marksync::model::UnixTime,
) -> (marksync::state::State, marksync::plan::Plan) {
    let clock = std::sync::Arc::new(marksync::clock::SystemClock);
    let session = marksync::engine::Session::open(config.clone(), clock).expect("store opens");
    let (desired, state) = session.load().await.expect("desired files and state load");
    let plan = session.plan(&desired, &state, now, reassert);
    (state, plan)
}
