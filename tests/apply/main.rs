//! `apply` against the emulator: through the library (`cmd::apply_with`, or `apply::execute` with
//! a hand-built client where a test needs short timeouts), and as the real binary where a test
//! needs a process boundary (kill -9, two processes, stdout). Every wait is bounded.
//!
//! The one property most tests end with is [`Env::assert_converged`]: the emulator's live marks
//! equal the desired ones exactly (nothing missing, nothing stray), the state's confirmed marks
//! equal them too, and no intent is left over.
//!
//! This file holds the harness ([`Env`]); the tests are in one file per concern beside it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marksync::apply::{self, Applied};
use marksync::clock::SystemClock;
use marksync::cmd::{self, ApplyOptions};
use marksync::config::{self, Config};
use marksync::emulator::{Emulator, EmulatorConfig, Fault, FaultKind, GroupType};
use marksync::error::{Error, exit};
use marksync::outcome::Outcome;
use marksync::plan::{ChangeKind, Plan};
use marksync::state::{self, State};
use marksync::tim::client::{Client, ClientConfig};
use marksync::tim::usersig::SecretKey;
use serde_json::Value;

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod convergence;
mod faults;
mod safety;
mod truthful_state;

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
        on_call: impl FnMut(&Outcome),
    ) -> Result<Applied, state::StateError> {
        self.lock_plan_execute(client, settings, false, before, on_call)
            .await
    }

    /// Takes the lock, plans (re-sending every desired mark if `reassert`), runs `before`, and
    /// executes through `apply::execute`, showing each outcome to `on_call`.
    async fn lock_plan_execute(
        &self,
        client: &Client,
        settings: &apply::Settings,
        reassert: bool,
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
        let (mut st, plan) = common::plan_at(&self.config, reassert, cmd::wall_clock_now()).await;
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
        let mut outcomes = Vec::new();
        let applied = self
            .lock_plan_execute(
                client,
                &self.settings(),
                reassert,
                || {},
                |o| outcomes.push(clone_outcome(o)),
            )
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
