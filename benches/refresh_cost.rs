//! Refresh cost: how many `get_members` calls a refresh makes, how long they take at the
//! service's 200 calls/s, and what share of that budget a daemon refreshing every 10 minutes
//! spends, for the example and for 1,000 groups x 10 marks x 1,000 members.
//!
//! Run: `cargo bench --bench refresh_cost`.
//!
//! 1. The example (`examples/marks`): measured. Every desired member online with its marks in the
//!    in-process emulator, then `refresh::read` through a client at 200 calls/s; prints the calls
//!    the emulator counted and the time taken.
//! 2. 1,000 groups x 10 marks x 1,000 members: computed with `refresh::read_calls` (one online
//!    listing per group plus one listing per mark, every page counted). The vendor does not
//!    document the page size of `get_members`, so it is shown for 100 (the emulator's default)
//!    and 1,000 (the whole window in one page); each mark is held by 1,000 members (the
//!    service's limit, the worst case).
//! 3. The classification at that scale, measured: `refresh::classify` over 1,000 groups x 1,000
//!    members, each member recorded and desired with one of 10 marks (1,000,000 marks), with
//!    every listing in memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marksync::clock::SystemClock;
use marksync::desired::{self, DesiredState};
use marksync::emulator::{Emulator, EmulatorConfig, GroupType};
use marksync::model::{Account, GroupId, Mark};
use marksync::refresh::{self, GroupFacts, Listing, LiveFacts};
use marksync::state::State;
use marksync::tim::client::{Client, ClientConfig};
use marksync::tim::usersig::SecretKey;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{ADMIN, APP, KEY};
const RATE: u32 = 200;
const EVERY: Duration = Duration::from_secs(600);

fn main() {
    let rt = common::runtime();
    rt.block_on(example());
    at_scale();
    classification();
}

/// Share of the 200 calls/s budget a refresh of `calls` every [`EVERY`] takes.
fn share(calls: u64) -> f64 {
    calls as f64 / (f64::from(RATE) * EVERY.as_secs_f64()) * 100.0
}

async fn example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/marks");
    let d = desired::load(&dir, desired::DEFAULT_MAX_ALIAS_PAIRS)
        .expect("the example's desired files load");
    let emu = Emulator::start(EmulatorConfig::new(APP, KEY, ADMIN))
        .await
        .expect("emulator");
    for (group, want) in &d.groups {
        emu.create_group(group.as_str(), GroupType::AVChatRoom)
            .expect("group");
        let accounts: Vec<&str> = want.members.keys().map(Account::as_str).collect();
        emu.set_online(group.as_str(), &accounts)
            .await
            .expect("online");
        for (account, marks) in &want.members {
            let marks: Vec<u32> = marks.iter().map(Mark::get).collect();
            emu.set_marks_as_other(group.as_str(), &[account.as_str()], &marks)
                .expect("marks");
        }
    }
    let client = Client::new(
        ClientConfig::new(
            emu.base_url(),
            APP,
            ADMIN,
            SecretKey::new(KEY).expect("key"),
        ),
        Arc::new(SystemClock),
    )
    .expect("client");
    let state = State::new(APP);
    let to_read = refresh::to_read(&d, &state);
    let start = Instant::now();
    let read = refresh::read(&client, &to_read, refresh::DEFAULT_PARALLEL_GROUPS)
        .await
        .expect("read");
    let took = start.elapsed();
    let adopted = refresh::classify(&d, &state, &read.facts, 0)
        .counts()
        .get(refresh::DriftKind::Adopted);
    println!(
        "example ({} groups, {} marks):",
        d.groups.len(),
        d.pair_count()
    );
    println!(
        "  {} get_members calls (emulator counted {}), {:.3} s measured at {RATE}/s \
         ({:.3} s of pacing); {adopted} marks adopted into an empty state",
        read.calls,
        emu.call_count(),
        took.as_secs_f64(),
        refresh::read_time(read.calls, RATE).as_secs_f64(),
    );
    println!(
        "  every 10 min: {:.4}% of the {RATE} calls/s budget",
        share(read.calls)
    );
}

fn at_scale() {
    println!("1,000 groups x 10 marks x 1,000 members (1,000 holders per mark), computed:");
    for page in [100usize, 1000] {
        let per_group = refresh::read_calls(1000, &[1000; 10], page);
        let calls = per_group * 1000;
        let secs = refresh::read_time(calls, RATE).as_secs_f64();
        println!(
            "  page size {page:>4}: {per_group} calls per group, {calls} calls, {secs:.0} s at \
             {RATE}/s; every 10 min: {:.1}% of the budget{}",
            share(calls),
            if secs > EVERY.as_secs_f64() {
                " (a round takes longer than the period)"
            } else {
                ""
            }
        );
    }
}

fn classification() {
    const GROUPS: usize = 1000;
    const MEMBERS: usize = 1000;
    let marks: Vec<Mark> = (0..10)
        .map(|i| Mark::new(1000 + i).expect("mark"))
        .collect();
    let mut d = DesiredState::default();
    let mut state = State::new(APP);
    let mut live = LiveFacts::default();
    let read_at = 1_764_000_000;
    let accounts: Vec<Account> = (0..MEMBERS)
        .map(|i| Account::new(&format!("member{i:04}")).expect("account"))
        .collect();
    for gi in 0..GROUPS {
        let group = GroupId::new(&format!("@TGS#group{gi:04}")).expect("group");
        let mut holders: BTreeMap<Mark, Vec<Account>> = BTreeMap::new();
        for (i, account) in accounts.iter().enumerate() {
            let mark = marks[i % marks.len()];
            d.groups
                .entry(group.clone())
                .or_default()
                .members
                .entry(account.clone())
                .or_default()
                .insert(mark);
            state.confirm(&group, account, [mark], read_at - 3600);
            // Every 50th member lost its mark.
            if i % 50 != 0 {
                holders.entry(mark).or_default().push(account.clone());
            }
        }
        let facts = GroupFacts {
            online: Listing::new(accounts.iter().cloned(), read_at),
            marks: holders
                .into_iter()
                .map(|(m, h)| (m, Listing::new(h, read_at)))
                .collect(),
        };
        live.groups.insert(group, facts);
    }
    let start = Instant::now();
    let c = refresh::classify(&d, &state, &live, read_at + 10);
    let took = start.elapsed();
    let counts = c.counts();
    println!(
        "classification of {} marks ({GROUPS} groups x {MEMBERS} members, 10 marks): {:.2} s \
         ({} lost, {} not checked: each online listing holds 1,000, the window)",
        d.pair_count(),
        took.as_secs_f64(),
        counts.get(refresh::DriftKind::Lost),
        counts.get(refresh::DriftKind::NotChecked),
    );
}
