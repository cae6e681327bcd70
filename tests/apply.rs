//! `apply` against the emulator: through the library (`cmd::apply_with`, or `apply::execute` with
//! a hand-built client where a test needs short timeouts), and as the real binary where a test
//! needs a process boundary (kill -9, two processes, stdout). Every wait is bounded.
//!
//! The one property most tests end with is [`Env::assert_converged`]: the emulator's live marks
//! equal the desired ones exactly (nothing missing, nothing stray), the state's confirmed marks
//! equal them too, and no intent is left over.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marksync::apply::{self, Applied, Outcome};
use marksync::clock::SystemClock;
use marksync::cmd::{self, ApplyOptions};
use marksync::config::{self, Config};
use marksync::emulator::{Emulator, EmulatorConfig, Fault, FaultKind, GroupType};
use marksync::error::{Error, exit};
use marksync::plan::{ChangeKind, Plan};
use marksync::state::{self, State};
use marksync::tim::client::{Client, ClientConfig};
use marksync::tim::usersig::SecretKey;
use serde_json::Value;

mod common;
use common::{ADMIN, APP, BIN, KEY, Marks, StandaloneEmulator, marks, wait_until, within};

/// The exit code an apply ended with, error or not.
fn code(r: Result<u8, Error>) -> u8 {
    r.unwrap_or_else(|e| e.exit_code())
}

/// `sum over groups of ceil(members to clear / 500) + ceil(members to set / 500)`, from the
/// plan's per-mark changes (not from its calls, which is what it checks).
fn lower_bound(plan: &Plan) -> usize {
    plan.changes
        .values()
        .map(|changes| {
            let mut clear = std::collections::BTreeSet::new();
            let mut set = std::collections::BTreeSet::new();
            for c in changes {
                match c.kind {
                    ChangeKind::Clear => clear.insert(&c.account),
                    _ => set.insert(&c.account),
                };
            }
            clear.len().div_ceil(500) + set.len().div_ceil(500)
        })
        .sum()
}

/// A temp directory with a config, a secret key, desired files and a state, and an emulator.
struct Env {
    /// Holds the config, key, desired files and state; removed on drop.
    _dir: tempfile::TempDir,
    emu: Emulator,
    config: Config,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(EmulatorConfig::new(APP, KEY, ADMIN)).await
    }

    async fn start_with(cfg: EmulatorConfig) -> Env {
        let emu = within(Emulator::start(cfg)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &emu.base_url());
        Env {
            _dir: dir,
            emu,
            config,
        }
    }

    fn state_path(&self) -> &Path {
        common::state_file(&self.config)
    }

    /// Brings every member of `want` online and makes `want` the desired files.
    async fn online_and_desire(&self, want: &Marks) {
        self.online_all(want).await;
        self.desire(want);
    }

    /// [`Env::online_and_desire`], then an apply that must succeed: the start of most tests.
    async fn applied(&self, want: &Marks) {
        self.online_and_desire(want).await;
        assert_eq!(self.apply_default().await, exit::OK);
    }

    /// Replaces the desired files with `want`.
    fn desire(&self, want: &Marks) {
        write_desired(&self.config.desired, want);
    }

    /// Creates the groups (if needed) and brings the accounts online in them.
    async fn online(&self, group: &str, accounts: &[&str]) {
        let _ = self.emu.create_group(group, GroupType::AVChatRoom);
        within(self.emu.set_online(group, accounts)).await.unwrap();
    }

    async fn online_all(&self, want: &Marks) {
        for (g, members) in want {
            let accounts: Vec<&str> = members.keys().map(String::as_str).collect();
            self.online(g, &accounts).await;
        }
    }

    async fn apply(&self, opts: ApplyOptions) -> u8 {
        code(within(cmd::apply_with(&self.config, &opts, Arc::new(SystemClock))).await)
    }

    async fn apply_default(&self) -> u8 {
        self.apply(ApplyOptions::default()).await
    }

    async fn plan(&self, reassert: bool) -> Plan {
        common::plan_at(&self.config, reassert, cmd::wall_clock_now())
            .await
            .1
    }

    fn state(&self) -> State {
        state::load(self.state_path(), APP).expect("state loads")
    }

    /// The state's confirmed marks.
    fn confirmed(&self) -> Marks {
        common::confirmed_marks(&self.state())
    }

    /// The emulator's live marks in every group (groups without marks left out).
    fn live(&self) -> Marks {
        self.emu
            .groups()
            .into_iter()
            .filter(|(_, view)| !view.dissolved)
            .map(|(g, view)| {
                let accounts: BTreeMap<String, Vec<u32>> = view
                    .members
                    .into_iter()
                    .filter(|(_, m)| !m.marks.is_empty())
                    .map(|(a, m)| (a, m.marks))
                    .collect();
                (g, accounts)
            })
            .filter(|(_, a)| !a.is_empty())
            .collect()
    }

    /// Live marks and confirmed marks both equal `want`; no intent is left.
    fn assert_converged(&self, want: &Marks) {
        assert_eq!(&self.live(), want, "emulator marks differ from desired");
        assert_eq!(&self.confirmed(), want, "state differs from desired");
        let st = self.state();
        assert!(st.intents.is_empty(), "intents left: {:?}", st.intents);
    }

    /// A client with short timeouts and fast backoff, for fault tests.
    fn fast_client(&self, max_attempts: u32) -> Client {
        let mut cc = ClientConfig::new(
            self.emu.base_url(),
            APP,
            ADMIN,
            SecretKey::new(KEY).unwrap(),
        );
        cc.request_timeout = Duration::from_millis(300);
        cc.connect_timeout = Duration::from_secs(1);
        cc.max_attempts = max_attempts;
        cc.backoff_min = Duration::from_millis(5);
        cc.backoff_max = Duration::from_millis(50);
        cc.slowdown_for = Duration::from_millis(300);
        Client::new(cc, Arc::new(SystemClock)).unwrap()
    }

    /// A [`Env::fast_client`] paced at `per_second` calls a second.
    fn paced_client(&self, per_second: u32) -> Client {
        let mut cc = ClientConfig::new(
            self.emu.base_url(),
            APP,
            ADMIN,
            SecretKey::new(KEY).unwrap(),
        );
        cc.max_calls_per_second = per_second;
        cc.max_attempts = 1;
        Client::new(cc, Arc::new(SystemClock)).unwrap()
    }

    /// One apply through `apply::execute` with `settings`; `before` runs after planning and
    /// before executing (to break the state directory). Returns the result and the outcomes.
    async fn execute_with(
        &self,
        client: &Client,
        settings: &apply::Settings,
        before: impl FnOnce(),
        mut on_call: impl FnMut(&Outcome),
    ) -> Result<Applied, state::StateError> {
        let store = state::open(&self.config.state, self.config.state_store.as_ref()).unwrap();
        let _lock = store
            .lock(&marksync::engine::lock_request(
                &self.config,
                "apply",
                false,
                std::time::Duration::ZERO,
            ))
            .await
            .unwrap();
        let (mut st, plan) = common::plan_at(&self.config, false, cmd::wall_clock_now()).await;
        before();
        within(apply::execute(
            Arc::new(plan),
            &mut st,
            store.as_ref(),
            client,
            &SystemClock,
            settings,
            |r| on_call(r.outcome),
        ))
        .await
    }

    fn settings(&self) -> apply::Settings {
        apply::Settings {
            offline_error_codes: self.config.offline_error_codes.clone(),
            ..apply::Settings::default()
        }
    }

    /// One apply through `apply::execute` (lock, plan, execute), collecting outcomes.
    async fn execute(&self, client: &Client, reassert: bool) -> (Applied, Vec<Outcome>) {
        let store = state::open(&self.config.state, self.config.state_store.as_ref()).unwrap();
        let _lock = store
            .lock(&marksync::engine::lock_request(
                &self.config,
                "apply",
                false,
                std::time::Duration::ZERO,
            ))
            .await
            .unwrap();
        let (mut st, plan) = common::plan_at(&self.config, reassert, cmd::wall_clock_now()).await;
        let settings = apply::Settings {
            offline_error_codes: self.config.offline_error_codes.clone(),
            ..apply::Settings::default()
        };
        let mut outcomes = Vec::new();
        let applied = within(apply::execute(
            Arc::new(plan),
            &mut st,
            store.as_ref(),
            client,
            &SystemClock,
            &settings,
            |r| outcomes.push(clone_outcome(r.outcome)),
        ))
        .await
        .unwrap();
        (applied, outcomes)
    }
}

/// Enough of an outcome to assert on (Outcome is not Clone).
fn clone_outcome(o: &Outcome) -> Outcome {
    match o {
        Outcome::Done { confirmed, pending } => Outcome::Done {
            confirmed: confirmed.clone(),
            pending: pending.clone(),
        },
        Outcome::GroupGone(e) => Outcome::GroupGone(e.clone()),
        Outcome::Failed(e) => Outcome::Failed(e.clone()),
        Outcome::Skipped(skip) => Outcome::Skipped(*skip),
    }
}

fn write_config(dir: &Path, endpoint: &str) -> Config {
    let path = common::daemon::write_config(dir, &common::daemon::config(endpoint));
    let text = std::fs::read_to_string(&path).unwrap();
    config::parse(&path, &text).expect("test config parses")
}

fn write_desired(dir: &Path, want: &Marks) {
    std::fs::write(dir.join("groups.yaml"), common::yaml(want)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Convergence and minimal calls

#[tokio::test]
async fn first_apply_converges_and_records_what_the_service_confirmed() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "host", &[500, 1000]),
        ("@TGS#a", "teacher", &[1000, 1001]),
        ("@TGS#b", "viewer", &[600]),
    ]);
    env.applied(&want).await;
    env.assert_converged(&want);
    assert_eq!(env.emu.call_count(), 2, "one set call per group");
}

#[tokio::test]
async fn second_apply_sends_no_calls() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#a", "u2", &[1001])]);
    env.applied(&want).await;
    let calls = env.emu.call_count();
    let serial = env.state().serial;
    assert!(env.plan(false).await.is_empty());
    assert_eq!(env.apply_default().await, exit::OK);
    assert_eq!(
        env.emu.call_count(),
        calls,
        "a converged apply sends nothing"
    );
    assert_eq!(env.state().serial, serial, "and does not rewrite the state");
    env.assert_converged(&want);
}

#[tokio::test]
async fn an_edit_sends_exactly_the_lower_bound_of_calls_and_converges() {
    let env = Env::start().await;
    // Group a: 700 members with 1000 (two set calls). Group b: 3 members.
    let names: Vec<String> = (0..700).map(|i| format!("m{i:03}")).collect();
    let mut before = Marks::new();
    for n in &names {
        before
            .entry("@TGS#a".into())
            .or_default()
            .insert(n.clone(), vec![1000]);
    }
    before.extend(marks(&[
        ("@TGS#b", "x", &[1000, 1001]),
        ("@TGS#b", "y", &[1001]),
        ("@TGS#b", "z", &[1002]),
    ]));
    env.online_all(&before).await;
    env.online("@TGS#b", &["w"]).await;
    env.desire(&before);
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&before);

    // The edit: in a, 100 members lose 1000 and 600 members gain 1001 (clears: 100 members,
    // sets: 600 members -> 1 + 2 calls); in b, x loses 1001, w joins, y switches 1001 -> 1003.
    let mut after = before.clone();
    let a = after.get_mut("@TGS#a").unwrap();
    for (i, n) in names.iter().enumerate() {
        if i < 100 {
            a.remove(n);
        } else {
            a.insert(n.clone(), vec![1000, 1001]);
        }
    }
    after.get_mut("@TGS#b").unwrap().extend([
        ("x".to_string(), vec![1000]),
        ("w".to_string(), vec![1002]),
        ("y".to_string(), vec![1003]),
    ]);
    env.desire(&after);
    let plan = env.plan(false).await;
    let bound = lower_bound(&plan);
    assert_eq!(bound, 3 + 2);
    assert_eq!(plan.calls.len(), bound);
    let calls = env.emu.call_count();
    assert_eq!(env.apply_default().await, exit::OK);
    assert_eq!(env.emu.call_count() - calls, bound as u64);
    env.assert_converged(&after);
}

// ---------------------------------------------------------------------------------------------
// Presence: offline members, marks dropped by the service

#[tokio::test]
async fn offline_members_stay_pending_and_are_set_once_online() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "on", &[1000]),
        ("@TGS#a", "off", &[1000, 1001]),
        // Every member of b is offline: the call itself fails (all-offline code 10004).
        ("@TGS#b", "off2", &[1000]),
    ]);
    env.online_all(&want).await;
    env.emu.set_offline("@TGS#a", &["off"]).await.unwrap();
    env.emu.set_offline("@TGS#b", &["off2"]).await.unwrap();
    env.desire(&want);

    assert_eq!(
        env.apply_default().await,
        exit::OK,
        "pending is not an error"
    );
    let only_on = marks(&[("@TGS#a", "on", &[1000])]);
    assert_eq!(env.live(), only_on);
    assert_eq!(env.confirmed(), only_on, "pending marks are not confirmed");
    assert!(env.state().intents.is_empty(), "nor left as intents");
    assert_eq!(env.plan(false).await.summary.set, 3, "still planned");

    env.emu.set_online("@TGS#a", &["off"]).await.unwrap();
    env.emu.set_online("@TGS#b", &["off2"]).await.unwrap();
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn marks_dropped_by_going_offline_come_back_with_reassert() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "u1", &[1000, 1001]),
        ("@TGS#a", "u2", &[1000]),
        ("@TGS#a", "host", &[500]),
    ]);
    env.applied(&want).await;
    env.assert_converged(&want);

    // u1 drops and comes back: the service cleared its marks, marksync cannot know.
    env.emu.set_offline("@TGS#a", &["u1"]).await.unwrap();
    env.emu.set_online("@TGS#a", &["u1"]).await.unwrap();
    // The host keeps 500 through a disconnection (that is what 500 is for).
    env.emu.set_offline("@TGS#a", &["host"]).await.unwrap();
    assert!(!env.live()["@TGS#a"].contains_key("u1"));
    assert!(
        env.plan(false).await.is_empty(),
        "a plain plan cannot see it"
    );

    let calls = env.emu.call_count();
    let opts = ApplyOptions {
        reassert: true,
        ..ApplyOptions::default()
    };
    assert_eq!(env.apply(opts.clone()).await, exit::OK);
    assert_eq!(env.emu.call_count() - calls, 1, "one call re-sends all");
    env.assert_converged(&want);

    // u2 is offline *during* a reassert: the response shows its mark is not there, so the
    // state must stop claiming it, and a plain apply puts it back once u2 is online again.
    env.emu.set_offline("@TGS#a", &["u2"]).await.unwrap();
    assert_eq!(env.apply(opts).await, exit::OK);
    assert!(
        !env.confirmed()["@TGS#a"].contains_key("u2"),
        "a mark the service just refused is not recorded as confirmed"
    );
    assert!(
        env.state().intents.keys().any(|g| g.as_str() == "@TGS#a"),
        "but kept as an intent, so it is cleared should it stop being desired"
    );
    env.emu.set_online("@TGS#a", &["u2"]).await.unwrap();
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

// ---------------------------------------------------------------------------------------------
// The service's limits

#[tokio::test]
async fn ten_marks_of_a_thousand_members_converge_and_clears_free_capacity_first() {
    let env = Env::start().await;
    let all: Vec<u32> = (1000..1010).collect();
    let names: Vec<String> = (0..1500).map(|i| format!("s{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.online("@TGS#big", &refs).await;
    // 1000 members x 10 marks: every mark at its 1000-member limit, the group at 10 marks.
    let mut want = Marks::new();
    let g = want.entry("@TGS#big".into()).or_default();
    for n in &names[..1000] {
        g.insert(n.clone(), all.clone());
    }
    env.desire(&want);
    let opts = ApplyOptions {
        json: true, // one line per call instead of 10,000 plan lines
        ..ApplyOptions::default()
    };
    assert_eq!(env.plan(false).await.calls.len(), 2, ">500 members: split");
    assert_eq!(env.apply(opts.clone()).await, exit::OK);
    env.assert_converged(&want);

    // Move 1009 from the first 400 members to 400 new ones, and replace 1008 by 1010 for
    // everyone. Only clears-before-sets fits: 1400 members on 1009 or 11 marks would be refused.
    let g = want.get_mut("@TGS#big").unwrap();
    for (i, n) in names.iter().enumerate() {
        let mut m: Vec<u32> = (1000..1008).collect();
        m.push(1010);
        if i < 400 {
            g.insert(n.clone(), m);
        } else if i < 1000 {
            m.push(1009);
            m.sort_unstable();
            g.insert(n.clone(), m);
        } else if i < 1400 {
            g.insert(n.clone(), vec![1009]);
        }
    }
    env.desire(&want);
    let plan = env.plan(false).await;
    assert_eq!(plan.calls.len(), lower_bound(&plan));
    let opts = ApplyOptions {
        allow_mass_clear: false,
        ..opts
    };
    assert_eq!(env.apply(opts).await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn desired_files_over_the_service_limits_are_refused_before_any_call() {
    let env = Env::start().await;
    let eleven: Vec<u32> = (1000..1011).collect();
    let mut want = Marks::new();
    want.entry("@TGS#a".into())
        .or_default()
        .insert("u".into(), eleven);
    env.desire(&want);
    assert_eq!(env.apply_default().await, exit::ERROR);

    let mut want = Marks::new();
    let g = want.entry("@TGS#a".into()).or_default();
    for i in 0..1001 {
        g.insert(format!("u{i}"), vec![1000]);
    }
    env.desire(&want);
    assert_eq!(env.apply_default().await, exit::ERROR);
    assert_eq!(env.emu.call_count(), 0);
    assert!(!env.state_path().exists(), "no state written");
}

// ---------------------------------------------------------------------------------------------
// Faults

/// 20 groups x 30 members; every member gets 1000, even ones 1001. Then an edit clears 1001 and
/// sets 1002 on odd ones. Both converge under `fault` at rate 0.2 within a bounded number of
/// applies, with no stray mark left.
async fn converges_under(kind: FaultKind, after: bool) {
    let env = Env::start().await;
    let mut a = Marks::new();
    let mut b = Marks::new();
    for g in 0..20 {
        let group = format!("@TGS#f{g:02}");
        for u in 0..30 {
            let acc = format!("u{u:02}");
            let ma = if u % 2 == 0 {
                vec![1000, 1001]
            } else {
                vec![1000]
            };
            let mb = if u % 2 == 0 {
                vec![1000]
            } else {
                vec![1000, 1002]
            };
            a.entry(group.clone()).or_default().insert(acc.clone(), ma);
            b.entry(group.clone()).or_default().insert(acc, mb);
        }
    }
    env.online_all(&a).await;
    env.emu
        .inject_fault(Fault {
            rate: 0.2,
            after,
            ..Fault::always(kind.clone())
        })
        .unwrap();
    // Three attempts per call, so that some calls do fail after retries and need another apply.
    let client = env.fast_client(3);
    for want in [&a, &b] {
        env.desire(want);
        let mut applies = 0;
        while !env.plan(false).await.is_empty() {
            applies += 1;
            assert!(applies <= 6, "{kind:?}: not converged after 6 applies");
            let (applied, _) = env.execute(&client, false).await;
            assert!(applied.fatal.is_none(), "{kind:?}: {:?}", applied.fatal);
        }
    }
    env.emu.clear_faults();
    // A call the client gave up on may still land late: wait until each is answered (the
    // emulator logs a call when it answers it), or until longer than any injected latency,
    // after which one never answered was dropped with its connection. Then look.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let stats = env.emu.stats(true);
        if stats.log.map_or(0, |l| l.len()) as u64 >= stats.calls_total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.assert_converged(&b);
    assert!(
        client.stats().retries > 0,
        "{kind:?}: the fault fired and was retried"
    );
}

/// One test per fault: `name: kind, whether the fault strikes after the call was applied;`.
macro_rules! converges_under {
    ($($(#[doc = $doc:literal])* $name:ident: $kind:expr, $after:expr;)*) => {$(
        $(#[doc = $doc])*
        #[tokio::test]
        async fn $name() {
            converges_under($kind, $after).await;
        }
    )*};
}

converges_under! {
    converges_under_system_errors_10002: FaultKind::ErrorCode { code: 10002 }, false;
    converges_under_rate_limit_answers_60018: FaultKind::ErrorCode { code: 60018 }, false;
    converges_under_http_502: FaultKind::HttpStatus { status: 502 }, false;
    converges_under_http_502_after_the_call_was_applied: FaultKind::HttpStatus { status: 502 }, true;
    /// 1 s of latency against a 300 ms request timeout.
    converges_under_timeouts: FaultKind::Latency { ms: 1000 }, false;
    converges_under_dropped_connections_after_the_call_was_applied: FaultKind::DropConnection, true;
}

#[tokio::test]
async fn fatal_70009_stops_with_exit_1_and_changes_nothing() {
    let env = Env::start().await;
    let before = marks(&[
        ("@TGS#a", "u1", &[1000]),
        ("@TGS#a", "u2", &[1000, 1001]),
        ("@TGS#b", "u3", &[1002]),
    ]);
    env.online_all(&before).await;
    env.online("@TGS#b", &["u4"]).await;
    env.desire(&before);
    assert_eq!(env.apply_default().await, exit::OK);
    let state_before = env.state();

    let after = marks(&[("@TGS#a", "u2", &[1001]), ("@TGS#b", "u4", &[1003])]);
    env.desire(&after);
    env.emu
        .inject_fault(Fault::always(FaultKind::ErrorCode { code: 70009 }))
        .unwrap();
    let calls = env.emu.call_count();
    assert_eq!(env.apply_default().await, exit::ERROR);
    assert!(env.emu.call_count() > calls, "it did try");
    assert_eq!(env.live(), before, "nothing cleared, nothing set");
    let state_after = env.state();
    assert_eq!(state_after.groups, state_before.groups, "no state change");
    assert!(state_after.intents.is_empty(), "no intent left behind");

    env.emu.clear_faults();
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&after);
}

#[tokio::test]
async fn a_call_refused_after_retries_exits_4_and_keeps_what_succeeded() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#b", "u2", &[1001])]);
    env.online_and_desire(&want).await;
    // One call is refused with a code that is neither retryable, fatal nor "offline": that
    // call fails, the other group's call succeeds and is recorded.
    env.emu
        .inject_fault(Fault {
            count: Some(1),
            ..Fault::always(FaultKind::ErrorCode { code: 10019 })
        })
        .unwrap();
    assert_eq!(env.apply_default().await, exit::PARTIAL);
    let st = env.state();
    assert_eq!(st.managed_count(), 1, "the successful call is recorded");
    assert!(st.intents.is_empty(), "a refused call leaves no intent");
    assert_eq!(
        env.apply_default().await,
        exit::OK,
        "the next apply finishes the job"
    );
    env.assert_converged(&want);
}

// ---------------------------------------------------------------------------------------------
// Groups that disappear

#[tokio::test]
async fn a_dissolved_group_is_forgotten_and_the_rest_still_applies() {
    let env = Env::start().await;
    let before = marks(&[
        ("@TGS#gone", "u1", &[1000]),
        ("@TGS#gone", "u2", &[1001]),
        ("@TGS#stay", "u1", &[1000]),
    ]);
    env.online_all(&before).await;
    env.online("@TGS#stay", &["u2"]).await;
    env.desire(&before);
    assert_eq!(env.apply_default().await, exit::OK);

    env.emu.dissolve_group("@TGS#gone").unwrap();
    // gone: a clear then a set call; stay: a set call.
    let after = marks(&[
        ("@TGS#gone", "u1", &[1002]),
        ("@TGS#gone", "u2", &[1001]),
        ("@TGS#stay", "u1", &[1000]),
        ("@TGS#stay", "u2", &[1003]),
    ]);
    env.desire(&after);
    let client = env.fast_client(3);
    let (applied, outcomes) = env.execute(&client, false).await;
    assert!(applied.fatal.is_none() && !applied.partially_failed());
    assert_eq!(applied.totals.groups_gone, 1);
    assert!(matches!(outcomes[..], [_, _, _]), "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::GroupGone(_)))
            .count(),
        1
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Skipped(marksync::apply::Skip::GroupGone))),
        "the group's second call is not sent"
    );
    let st = env.state();
    assert!(st.groups.keys().all(|g| g.as_str() != "@TGS#gone"));
    assert!(st.intents.is_empty());
    assert_eq!(env.live()["@TGS#stay"], after["@TGS#stay"]);

    // Once the group leaves the desired files too, there is nothing left to do.
    let mut rest = after.clone();
    rest.remove("@TGS#gone");
    env.desire(&rest);
    assert!(env.plan(false).await.is_empty());
    env.assert_converged(&rest);
}

// ---------------------------------------------------------------------------------------------
// Locking, the guard, crash safety

/// Whether `p` is a symbolic link (not followed).
fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[tokio::test]
async fn a_symlinked_state_is_written_through_and_tells_the_truth_after_the_link_is_recreated() {
    let env = Env::start().await;
    let link = env.state_path().to_path_buf();
    let state_dir = link.parent().unwrap().to_path_buf();
    let volume = state_dir.parent().unwrap().join("volume");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::create_dir_all(&volume).unwrap();
    let target = volume.join("marksync.json");
    // Dangling until the first save: a first run on a freshly mounted volume.
    std::os::unix::fs::symlink("../volume/marksync.json", &link).unwrap();

    let first = marks(&[("@TGS#a", "host", &[500, 1000]), ("@TGS#a", "t", &[1001])]);
    env.applied(&first).await;
    let second = marks(&[("@TGS#a", "host", &[500]), ("@TGS#a", "u", &[1002])]);
    env.applied(&second).await;
    env.assert_converged(&second);

    assert!(is_link(&link), "the state path stays a link");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&volume),
        ["marksync.json", "marksync.json.bak", "marksync.json.lock"],
        "the target, its .bak and its lock, side by side (intents folded)"
    );
    assert_eq!(names(&state_dir), ["marksync.json"], "only the link");
    let on_target = state::load(&target, APP).unwrap();
    assert_eq!(common::confirmed_marks(&on_target), second);
    let bak = state::backup_path(&target);
    let bak = state::parse(&bak, &std::fs::read(&bak).unwrap()).unwrap();
    assert_eq!(
        bak.serial + 1,
        on_target.serial,
        ".bak is the previous generation"
    );

    // A restart or remount recreates the link: the state still says what the service holds.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(env.live(), second);
    assert_eq!(
        env.confirmed(),
        second,
        "the state read through the new link"
    );
    assert!(env.plan(false).await.is_empty());
}

#[tokio::test]
async fn a_locked_state_exits_5_and_is_left_intact() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000])]);
    env.applied(&want).await;
    let bytes = std::fs::read(env.state_path()).unwrap();

    env.desire(&marks(&[("@TGS#a", "u1", &[1001])]));
    let held = state::lock(env.state_path()).unwrap();
    let calls = env.emu.call_count();
    match within(cmd::apply_with(
        &env.config,
        &ApplyOptions::default(),
        Arc::new(SystemClock),
    ))
    .await
    {
        Err(e) => {
            assert_eq!(e.exit_code(), exit::LOCKED);
            assert!(
                e.to_string().contains(&std::process::id().to_string()),
                "{e}"
            );
        }
        Ok(c) => panic!("expected the lock to be refused, got exit {c}"),
    }
    drop(held);
    assert_eq!(env.emu.call_count(), calls);
    assert_eq!(std::fs::read(env.state_path()).unwrap(), bytes);
}

#[tokio::test]
async fn the_mass_clear_guard_refuses_with_exit_3_and_sends_nothing() {
    let env = Env::start().await;
    let mut all = Marks::new();
    for i in 0..20 {
        all.entry("@TGS#a".into())
            .or_default()
            .insert(format!("u{i:02}"), vec![1000]);
    }
    env.online_all(&all).await;
    env.desire(&all);
    assert_eq!(env.apply_default().await, exit::OK);
    let serial = env.state().serial;

    // Keep 5 of 20: 15 clears, more than 25% and more than 10.
    let mut few = all.clone();
    few.get_mut("@TGS#a")
        .unwrap()
        .retain(|a, _| a.as_str() < "u05");
    env.desire(&few);
    let calls = env.emu.call_count();
    assert_eq!(env.apply_default().await, exit::MASS_CLEAR);
    assert_eq!(env.emu.call_count(), calls, "nothing sent");
    assert_eq!(env.state().serial, serial, "nothing written");
    assert_eq!(env.live(), all);

    let opts = ApplyOptions {
        allow_mass_clear: true,
        ..ApplyOptions::default()
    };
    assert_eq!(env.apply(opts).await, exit::OK);
    env.assert_converged(&few);
}

/// `n` members `u00`, `u01`, ... of `group`, each with mark 1000.
fn members_with_1000(group: &str, n: usize) -> Marks {
    let names: Vec<String> = (0..n).map(|i| format!("u{i:02}")).collect();
    let rows: Vec<(&str, &str, &[u32])> = names
        .iter()
        .map(|a| (group, a.as_str(), &[1000][..]))
        .collect();
    marks(&rows)
}

/// The guard at its edges, through `apply` (issue 14): a plan is refused only when it clears
/// more than `min_clears` *and* more than `max_clear_fraction` of the managed marks. Exactly at
/// either limit it goes through; one more clear is refused with nothing sent or written, and
/// `--allow-mass-clear` then lets it through.
#[tokio::test]
async fn the_mass_clear_guard_at_its_edges() {
    // (managed, clears, max_clear_fraction, min_clears, refused)
    let cases = [
        (20, 10, 0.25, 10, false), // 50%, but exactly min_clears
        (20, 11, 0.25, 10, true),  // one more than min_clears
        (48, 12, 0.25, 10, false), // exactly 25%, more than min_clears
        (48, 13, 0.25, 10, true),  // just over 25%
        (8, 2, 0.25, 1, false),    // exactly 25% with a low min_clears
        (8, 3, 0.25, 1, true),
        (10, 1, 0.1, 0, false), // exactly 10%, min_clears 0
        (10, 2, 0.1, 0, true),
        (4, 4, 1.0, 0, false), // a fraction of 1 lets everything through
    ];
    for (managed, clears, fraction, min_clears, refused) in cases {
        let what = format!("{clears} of {managed}, guard {fraction} / {min_clears}");
        let mut env = Env::start().await;
        env.config.guard.max_clear_fraction = fraction;
        env.config.guard.min_clears = min_clears;
        let all = members_with_1000("@TGS#e", managed);
        env.applied(&all).await;
        let serial = env.state().serial;
        let mut kept = all.clone();
        kept.values_mut()
            .for_each(|m| m.retain(|a, _| a.as_str() >= format!("u{clears:02}").as_str()));
        kept.retain(|_, m| !m.is_empty());
        env.desire(&kept);
        let calls = env.emu.call_count();
        if refused {
            assert_eq!(env.apply_default().await, exit::MASS_CLEAR, "{what}");
            assert_eq!(env.emu.call_count(), calls, "{what}: nothing sent");
            assert_eq!(env.state().serial, serial, "{what}: nothing written");
            assert_eq!(env.live(), all, "{what}");
            let opts = ApplyOptions {
                allow_mass_clear: true,
                ..ApplyOptions::default()
            };
            assert_eq!(
                env.apply(opts).await,
                exit::OK,
                "{what} with --allow-mass-clear"
            );
        } else {
            assert_eq!(env.apply_default().await, exit::OK, "{what}");
        }
        env.assert_converged(&kept);
    }
}

/// The refusal through the binary: exit 3, the message says what to do, nothing sent, the state
/// file byte for byte as it was; `--allow-mass-clear` then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_clear_refused_by_the_binary_sends_nothing() {
    let env = Env::start().await;
    let all = members_with_1000("@TGS#bin", 20);
    env.applied(&all).await;
    let bytes = std::fs::read(env.state_path()).unwrap();
    let few = marks(&[("@TGS#bin", "u19", &[1000])]);
    env.desire(&few);
    let calls = env.emu.call_count();
    let out = run(marksync(&env.config.path, &["apply"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::MASS_CLEAR)),
        "{stderr}"
    );
    assert!(
        stderr.contains("refusing to clear 19 of 20 managed marks")
            && stderr.contains("--allow-mass-clear"),
        "{stderr}"
    );
    assert_eq!(env.emu.call_count(), calls, "nothing sent");
    assert_eq!(
        std::fs::read(env.state_path()).unwrap(),
        bytes,
        "nothing written"
    );
    assert_eq!(env.live(), all);

    let out = run(marksync(&env.config.path, &["apply", "--allow-mass-clear"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    env.assert_converged(&few);
}

#[tokio::test]
async fn intents_left_by_a_crash_are_cleared_and_foreign_marks_are_not() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000])]);
    env.online("@TGS#a", &["u1", "u2", "u3"]).await;
    env.desire(&want);
    assert_eq!(env.apply_default().await, exit::OK);

    // The crash: an apply recorded intents (u2: 1001, u1: 1002), sent the call, and died before
    // folding the answer. Meanwhile the desired files dropped those marks. u3's 1003 was set by
    // someone else: marksync never set it and must never touch it.
    let client = env.fast_client(1);
    for (acc, mark) in [("u2", 1001), ("u1", 1002), ("u3", 1003)] {
        let req = marksync::tim::wire::ModifyUserInfoRequest {
            group_id: "@TGS#a".into(),
            command_type: marksync::tim::wire::CommandType::Set,
            member_list: vec![marksync::tim::wire::MemberMarks {
                account: acc.into(),
                marks: vec![mark],
            }],
        };
        client.modify_user_info(&req).await.unwrap();
    }
    let mut st = env.state();
    let g = marksync::model::GroupId::new("@TGS#a").unwrap();
    let mark = |n| marksync::model::Mark::new(n).unwrap();
    let acc = |s| marksync::model::Account::new(s).unwrap();
    st.intend(&g, &acc("u2"), [mark(1001)]);
    st.intend(&g, &acc("u1"), [mark(1002)]);
    state::save(env.state_path(), &mut st).unwrap();

    let plan = env.plan(false).await;
    assert_eq!(plan.summary.clear, 2);
    assert_eq!(env.apply_default().await, exit::OK);
    assert_eq!(
        env.live(),
        marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#a", "u3", &[1003])])
    );
    assert_eq!(env.confirmed(), want);
    assert!(env.state().intents.is_empty());
}

// ---------------------------------------------------------------------------------------------
// State that tells the truth (issue 7, SPEC section 4)

#[tokio::test]
async fn a_clear_whose_answer_was_lost_is_unknown_and_the_mark_is_set_again_when_desired() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#a", "u2", &[1000])]);
    env.applied(&want).await;

    // The clear reaches the service, its answer is lost (as when apply is killed while it is in
    // flight): the mark is gone from the service, and the state must not still call it confirmed.
    env.desire(&marks(&[("@TGS#a", "u2", &[1000])]));
    env.emu
        .inject_fault(Fault {
            count: Some(1),
            after: true,
            ..Fault::always(FaultKind::DropConnection)
        })
        .unwrap();
    let (applied, _) = env.execute(&env.fast_client(1), false).await;
    assert_eq!(applied.totals.failed, 1);
    assert_eq!(env.live(), marks(&[("@TGS#a", "u2", &[1000])]));
    let st = env.state();
    assert!(
        !st.intents.is_empty(),
        "the clear in flight is recorded as an intent"
    );

    // Desired again: the mark is unknown, so it is set again (not "No changes").
    env.desire(&want);
    assert_eq!(
        env.plan(false).await.summary.set,
        1,
        "the unknown mark is planned"
    );
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn a_clears_only_plan_with_an_unwritable_state_directory_sends_nothing() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "u1", &[1000]), ("@TGS#b", "u2", &[1001])]);
    env.applied(&want).await;
    let state_before = std::fs::read(env.state_path()).unwrap();

    env.desire(&marks(&[("@TGS#b", "u2", &[1001])]));
    let calls = env.emu.call_count();
    // Root ignores file modes, so break the directory another way: a regular file where the
    // state directory was. No temporary file can be created next to the state.
    let dir = env.state_path().parent().unwrap().to_path_buf();
    let moved = dir.with_extension("moved");
    let result = env
        .execute_with(
            &env.fast_client(1),
            &env.settings(),
            || {
                std::fs::rename(&dir, &moved).unwrap();
                std::fs::write(&dir, "not a directory").unwrap();
            },
            |_| {},
        )
        .await;
    let err = result.expect_err("the intent record cannot be written");
    assert_eq!(err.metric_label(), "write", "{err}");
    assert_eq!(env.emu.call_count(), calls, "no call was sent");
    assert_eq!(env.live(), want);
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    assert_eq!(std::fs::read(env.state_path()).unwrap(), state_before);
}

#[tokio::test]
async fn a_state_save_failing_mid_apply_stops_new_calls_and_keeps_every_mark_accounted_for() {
    let env = Env::start().await;
    let want = many_groups(12, false);
    env.online_and_desire(&want).await;
    // 12 calls at 4 a second take 3 s; the first bulk save comes after 1 s and fails: a
    // non-empty directory where the state file goes (the intents sidecar beside it still works).
    // Each call takes 400 ms, so some are in flight when the save fails: they must finish and be
    // reported, not be cut off.
    env.emu
        .inject_fault(Fault::always(FaultKind::Latency { ms: 400 }))
        .unwrap();
    let client = env.paced_client(4);
    let state = env.state_path().to_path_buf();
    let mut reported = 0;
    let result = env
        .execute_with(
            &client,
            &env.settings(),
            || std::fs::create_dir_all(state.join("obstacle")).unwrap(),
            |o| {
                if !matches!(o, Outcome::Skipped(_)) {
                    reported += 1;
                }
            },
        )
        .await;
    let err = result.expect_err("the save failure is reported");
    assert_eq!(err.metric_label(), "write", "{err}");
    let sent = env.emu.call_count();
    assert!(
        (1..12).contains(&sent),
        "sending stopped after the save failed: {sent} of 12 calls sent"
    );
    assert_eq!(reported, sent, "every call sent finished and was folded");
    env.emu.clear_faults();
    // Every mark is still accounted for: what was sent is confirmed or intended.
    std::fs::remove_dir_all(env.state_path()).unwrap();
    let plan = env.plan(false).await;
    assert_eq!(plan.summary.set, 24, "every mark is planned again");
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn clearing_an_offline_member_forgets_the_marks_instead_of_failing_forever() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "off", &[1000, 1001]),
        ("@TGS#a", "left", &[500, 1000]),
        ("@TGS#a", "stays", &[1000]),
    ]);
    env.applied(&want).await;
    env.assert_converged(&want);

    // "off" goes offline (the service drops its marks); "left" leaves the group (drops all, 500
    // included). Both are then removed from the desired files. The service answers each clear
    // with "every account is offline".
    env.emu.set_offline("@TGS#a", &["off"]).await.unwrap();
    env.emu.leave("@TGS#a", &["left"]).await.unwrap();
    let now = marks(&[("@TGS#a", "stays", &[1000])]);
    env.desire(&now);
    let (applied, outcomes) = env.execute(&env.fast_client(1), false).await;
    assert!(
        outcomes.iter().all(|o| !matches!(o, Outcome::Failed(_))),
        "{outcomes:?}"
    );
    assert_eq!(applied.totals.failed, 0);
    assert_eq!(
        applied.totals.cleared, 3,
        "the dropped marks count as cleared"
    );
    assert_eq!(applied.totals.pending, 1, "mark 500 stays unknown");
    assert!(!applied.partially_failed());
    assert_eq!(env.live(), now);
    assert_eq!(
        env.confirmed(),
        marks(&[("@TGS#a", "left", &[500]), ("@TGS#a", "stays", &[1000])])
    );
    let plan = env.plan(false).await;
    assert_eq!(
        (plan.summary.set, plan.summary.clear),
        (0, 1),
        "only mark 500 is cleared again"
    );
    assert_eq!(
        env.apply_default().await,
        exit::OK,
        "and that is not a failure"
    );
}

#[tokio::test]
async fn an_unknown_mark_500_stays_unknown_when_its_set_finds_the_member_away() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "host", &[500])]);
    env.applied(&want).await;

    // A clear of that 500 was in flight when an earlier run died (its intent is on record), and
    // the host has left the group since, which drops every mark.
    let mut st = env.state();
    let g = marksync::model::GroupId::new("@TGS#a").unwrap();
    let host = marksync::model::Account::new("host").unwrap();
    st.intend(&g, &host, [marksync::model::Mark::ALWAYS_ONLINE]);
    state::save(env.state_path(), &mut st).unwrap();
    env.emu.leave("@TGS#a", &["host"]).await.unwrap();

    // Desired, unknown: set again; the service answers "all offline". The 500 is still unknown,
    // not "confirmed" as it was before the clear.
    assert_eq!(env.apply_default().await, exit::OK);
    assert!(
        env.state().intents.contains_key(&g),
        "the unknown 500 lost its intent"
    );

    // The host comes back: the 500 is set again, not left missing for up to 60 hours.
    env.online("@TGS#a", &["host"]).await;
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

#[tokio::test]
async fn a_reasserted_mark_500_that_finds_the_member_away_is_unknown_not_still_confirmed() {
    let env = Env::start().await;
    let want = marks(&[("@TGS#a", "host", &[500])]);
    env.applied(&want).await;

    // The host leaves (its 500 goes with it); a reassert finds it away.
    env.emu.leave("@TGS#a", &["host"]).await.unwrap();
    let reassert = ApplyOptions {
        reassert: true,
        ..ApplyOptions::default()
    };
    assert_eq!(env.apply(reassert).await, exit::OK);
    assert!(env.live().is_empty());

    // Back again: a plain apply sets the 500, rather than trusting the old confirmation.
    env.online("@TGS#a", &["host"]).await;
    assert_eq!(env.apply_default().await, exit::OK);
    env.assert_converged(&want);
}

/// A real full disk, where the platform lets this test mount a small tmpfs in a private mount
/// namespace (`unshare -m`): the state directory has room for the lock and the intents record but
/// not for the state itself, so the final save of a clears-only apply fails with ENOSPC. The
/// clears were sent; the intents record makes their marks unknown, so setting them again is
/// planned, where the state alone still calls them confirmed ("No changes").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_on_the_final_save_leaves_the_sent_clears_unknown_not_confirmed() {
    if !common::require_tool(
        "for a private mount namespace with a small tmpfs (root)",
        "unshare",
        &["-m", "true"],
    ) {
        return;
    }
    let env = Env::start().await;
    let want = many_groups(400, false);
    env.applied(&want).await;
    let mut fewer = want.clone();
    let dropped: Vec<String> = fewer.keys().take(10).cloned().collect();
    for g in &dropped {
        fewer.remove(g);
    }
    env.desire(&fewer);

    let dir = env.config.path.parent().unwrap();
    let script = r#"
        set -e
        cd "$DIR"
        cp -a state state.keep
        mount -t tmpfs -o size=512k tmpfs state
        cp -a state.keep/. state/
        avail=$(df -B1 --output=avail state | tail -1)
        dd if=/dev/zero of=state/fill bs=4096 count=$(( (avail - 12288) / 4096 )) 2>/dev/null
        set +e
        "$BIN" -c marksync.yaml -q apply
        rc=$?
        mkdir out
        cp -a state/. out/
        rm -f out/fill
        exit $rc
    "#;
    let out = run({
        let mut c = tokio::process::Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c", script])
            .env("DIR", dir)
            .env("BIN", BIN)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    })
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(env.live(), fewer, "the clears were sent");

    // What the next run sees: the state (unchanged, still claiming the marks) and the record.
    let state = dir.join("out/marksync.json");
    let st = state::load(&state, APP).unwrap();
    let g = marksync::model::GroupId::new(&dropped[0]).unwrap();
    assert!(st.groups.contains_key(&g), "the old generation is intact");
    assert!(
        st.intents.contains_key(&g),
        "the clear is recorded as unknown"
    );
    env.desire(&want);
    let desired = marksync::desired::load(&env.config.desired, env.config.max_alias_pairs).unwrap();
    let p = marksync::plan::plan(
        &desired,
        &st,
        cmd::wall_clock_now(),
        &marksync::plan::Policy::default(),
    );
    assert_eq!(p.summary.set, 20, "the cleared marks are set again");
}

/// `n` groups with one call each, all refused with 70009 (or, with `signal`, stopped from
/// outside after the first answer), at 2 calls a second: returns the calls the emulator saw.
async fn calls_after_a_stop(signal: bool) -> (u64, Duration) {
    let env = Env::start().await;
    let want = many_groups(10, false);
    env.online_and_desire(&want).await;
    if !signal {
        env.emu
            .inject_fault(Fault::always(FaultKind::ErrorCode { code: 70009 }))
            .unwrap();
    }
    let client = env.paced_client(2);
    let settings = env.settings();
    let stop = settings.stop.clone();
    let calls = env.emu.call_count();
    let started = Instant::now();
    let applied = env
        .execute_with(
            &client,
            &settings,
            || {},
            |_| stop.store(true, std::sync::atomic::Ordering::SeqCst),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(applied.fatal.is_some(), !signal);
    let st = env.state();
    assert_eq!(env.live().len() as u64, st.managed_count() as u64 / 2);
    assert!(st.intents.is_empty(), "{:?}", st.intents);
    (env.emu.call_count() - calls, elapsed)
}

#[tokio::test]
async fn after_a_fatal_code_no_call_waiting_on_the_rate_limiter_is_sent() {
    let (sent, elapsed) = calls_after_a_stop(false).await;
    // One call in flight when the answer came, possibly a second already granted its slot.
    assert!(sent <= 2, "{sent} calls sent after 70009");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn after_a_stop_from_outside_no_call_waiting_on_the_rate_limiter_is_sent() {
    let (sent, elapsed) = calls_after_a_stop(true).await;
    assert!(sent <= 2, "{sent} calls sent after the stop");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

// ---------------------------------------------------------------------------------------------
// The real binary

fn marksync(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = common::cli::marksync_command();
    c.arg("-c").arg(config).args(args).stdin(Stdio::null());
    let mut c = tokio::process::Command::from(c);
    c.kill_on_drop(true);
    c
}

async fn run(mut c: tokio::process::Command) -> std::process::Output {
    within(c.output()).await.unwrap()
}

/// `n` groups with one member each (one call per group), every odd one dropped by `even_only`.
fn many_groups(n: usize, even_only: bool) -> Marks {
    common::groups_of_one("@TGS#k", (0..n).filter(|i| !even_only || i % 2 == 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_apply_then_apply_again_leaves_exactly_the_desired_marks() {
    let dir = tempfile::tempdir().unwrap();
    // The standalone emulator binds port 0 and reports its address.
    let emu = tokio::task::block_in_place(StandaloneEmulator::start);
    let config = write_config(dir.path(), &emu.endpoint());
    let cfg_path = config.path.clone();
    let blocking = |f: &dyn Fn(&StandaloneEmulator)| tokio::task::block_in_place(|| f(&emu));
    blocking(&|e| e.inject(serde_json::json!({"kind": "latency", "ms": 200})));

    write_desired(&config.desired, &many_groups(600, false));
    let mut apply = marksync(&cfg_path, &["-q", "apply"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("150 calls", async || {
        tokio::task::block_in_place(|| emu.calls()) >= 150
    })
    .await;
    apply.start_kill().unwrap(); // SIGKILL
    let status = within(apply.wait()).await.unwrap();
    assert!(!status.success(), "it was killed mid-way: {status:?}");

    let st = state::load(common::state_file(&config), APP).expect("the state survives kill -9");
    assert!(
        !st.intents.is_empty(),
        "killed before the end, so some intents are unresolved"
    );
    // Calls in flight at the kill may still land (their 200 ms latency is slept either way);
    // wait until each is answered or dropped before looking.
    blocking(&|e| {
        e.settle(Duration::from_secs(2));
        e.clear_faults();
    });

    // Half the groups are no longer desired: what the killed run set there must go.
    let want = many_groups(600, true);
    write_desired(&config.desired, &want);
    let out = run(marksync(&cfg_path, &["-q", "apply", "--allow-mass-clear"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let live = tokio::task::block_in_place(|| emu.marks());
    assert_eq!(live, want, "exactly the desired marks, no stray ones");
    let st = state::load(common::state_file(&config), APP).unwrap();
    assert!(st.intents.is_empty());
    assert_eq!(st.managed_count(), 600);
    let out = run(marksync(&cfg_path, &["plan", "--detailed-exitcode"])).await;
    assert_eq!(out.status.code(), Some(0), "nothing left to do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_apply_process_exits_5_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "embedded");
    let want = many_groups(500, false);
    write_desired(&config.desired, &want);
    let first = marksync(&config.path, &["-q", "apply"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id().unwrap();
    let lock = state::lock_path(common::state_file(&config));
    wait_until("the first apply's lock", async || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid.to_string())
    })
    .await;
    let second = run(marksync(&config.path, &["apply"])).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");

    let out = within(first.wait_with_output()).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = state::load(common::state_file(&config), APP).expect("intact and parseable");
    assert!(st.intents.is_empty());
    assert_eq!(st.managed_count(), 1000);
}

#[tokio::test]
async fn apply_json_prints_the_plan_then_one_line_per_call_then_the_summary() {
    let env = Env::start().await;
    let want = marks(&[
        ("@TGS#a", "on", &[1000]),
        ("@TGS#a", "off", &[1000]),
        ("@TGS#b", "u", &[1001]),
    ]);
    env.online_all(&want).await;
    env.emu.set_offline("@TGS#a", &["off"]).await.unwrap();
    env.desire(&want);
    let out = run(marksync(&env.config.path, &["-q", "apply", "--json"])).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 1 + 2 + 1, "{text}");
    let plan = &lines[0];
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["summary"]["calls"], 2);
    assert_eq!(plan["calls"].as_array().unwrap().len(), 2);
    let mut outcomes: Vec<(String, String)> = lines[1..3]
        .iter()
        .map(|l| {
            assert_eq!(l["command"], "set");
            (
                l["group"].as_str().unwrap().into(),
                l["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("@TGS#a".into(), "partial".into()),
            ("@TGS#b".into(), "ok".into())
        ]
    );
    let a = lines[1..3].iter().find(|l| l["group"] == "@TGS#a").unwrap();
    assert_eq!(a["pending"][0]["account"], "off");
    assert_eq!(a["confirmed"][0]["account"], "on");
    let summary = &lines[3]["summary"];
    assert_eq!(summary["set"], 2);
    assert_eq!(summary["pending"], 1);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["calls"], 2);
}
