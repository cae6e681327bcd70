//! Apply-rate benchmark: how close `apply` gets to the service's 200 calls/s without ever
//! exceeding it, and how fast the client can go when nothing holds it back.
//!
//! Run: `cargo bench --bench apply_rate` (add `-- --calls N` to change the 2,000 calls).
//!
//! Each run applies N groups x 1 member (one `modify_user_info` call per group) through
//! `apply::execute` against the in-process emulator, and prints:
//! - the achieved rate, from the first to the last call's arrival at the emulator and over the
//!   whole apply (state saves included);
//! - the emulator's busiest one-second window (the service's limit is about this number) and any
//!   rate-limit answers (60018).
//!
//! Runs:
//! 1. `limit 200`: the production setting against an emulator enforcing 200/s. Targets: >= 195
//!    calls/s, never more than 200 in any one-second window, no 60018.
//! 2. `what-if 208`: the client told 208/s, which with its 1.05 margin spaces calls 5.048 ms
//!    apart, i.e. what a margin of 1.0096 at 200/s would do. Still against an enforcing emulator.
//! 3. `ceiling`: the limit lifted (client at the highest rate its config accepts, emulator not
//!    enforcing): the client's own ceiling on this machine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marksync::apply::{self, Settings};
use marksync::clock::{Clock, SystemClock};
use marksync::desired::{DesiredGroup, DesiredState};
use marksync::emulator::{Emulator, EmulatorConfig};
use marksync::model::{Account, GroupId, Mark, MarkSet};
use marksync::plan::{self, Policy};
use marksync::state::State;
use marksync::tim::client::{Client, ClientConfig};
use marksync::tim::usersig::SecretKey;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{ADMIN, APP, KEY};
/// The highest `max_calls_per_second` the client accepts: its limiter period (1.05 / rate s)
/// must be at least 1 ns.
const NO_LIMIT: u32 = 1_000_000_000;

fn main() {
    let calls = common::flag("--calls").unwrap_or(2000usize);
    let rt = common::runtime();
    rt.block_on(async {
        println!("{calls} calls (groups x 1 member) per run, 2 worker threads");
        run("limit 200", calls, 200, true).await;
        run("what-if 208", calls, 208, true).await;
        run("ceiling", calls, NO_LIMIT, false).await;
    });
}

async fn run(label: &str, calls: usize, client_rate: u32, enforce: bool) {
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    cfg.enforce_rate_limit = enforce;
    let emu = Emulator::start(cfg).await.expect("emulator");

    let mut desired = DesiredState::default();
    let marks: MarkSet = [Mark::new(1000).expect("mark")].into_iter().collect();
    for i in 0..calls {
        let mut group = DesiredGroup::default();
        group
            .members
            .insert(Account::new("u").expect("account"), marks.clone());
        desired.groups.insert(
            GroupId::new(&format!("@TGS#r{i:06}")).expect("group"),
            group,
        );
    }
    let mut state = State::new(APP);
    let plan = plan::plan(&desired, &state, SystemClock.now(), &Policy::default());
    assert_eq!(plan.calls.len(), calls);

    let mut cc = ClientConfig::new(
        emu.base_url(),
        APP,
        ADMIN,
        SecretKey::new(KEY).expect("key"),
    );
    cc.max_calls_per_second = client_rate;
    let client = Client::new(cc, Arc::new(SystemClock)).expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = marksync::state::FileStore::new(dir.path().join("state.json"));

    let start = Instant::now();
    let applied = tokio::time::timeout(
        Duration::from_secs(120),
        apply::execute(
            Arc::new(plan),
            &mut state,
            &store,
            &client,
            &SystemClock,
            &Settings::default(),
            |_| {},
        ),
    )
    .await
    .expect("apply finished within 120 s")
    .expect("state saved");
    let elapsed = start.elapsed();

    let stats = emu.stats(true);
    let log = stats.log.unwrap_or_default();
    let span_ms = match (log.first(), log.last()) {
        (Some(a), Some(b)) => (b.at_ms - a.at_ms).max(1),
        _ => 1,
    };
    let arrivals = log.len().saturating_sub(1) as f64 / (span_ms as f64 / 1000.0);
    let limited: u64 = [60007, 60011, 60018, 60019, 10006]
        .iter()
        .filter_map(|c| stats.errors_by_code.get(c))
        .sum();
    let by_code: BTreeMap<_, _> = stats.errors_by_code.iter().collect();
    println!(
        "{label:>12}: {:.1} calls/s between first and last arrival, {:.1} calls/s over the whole \
         apply ({:.2?}); busiest 1 s window at the emulator: {} calls; requests {} (plan {}), \
         rate-limit answers {limited}, error codes {by_code:?}, failed marks {}",
        arrivals,
        calls as f64 / elapsed.as_secs_f64(),
        elapsed,
        stats.max_calls_in_any_second,
        stats.calls_total,
        calls,
        applied.totals.failed,
    );
    let _ = emu.shutdown().await;
}
