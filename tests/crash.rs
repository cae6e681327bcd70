//! The crash suite (issue 7, "Proof"): `kill -9` of `marksync apply` and `marksync run` at random
//! moments, with latency injected in a standalone emulator so that kills land while calls are in
//! flight, and the desired files changing between rounds (sets and clears; marks removed, then
//! desired again later; whole groups dropped and brought back). After the last kill, one clean
//! `apply` must leave the emulator holding exactly the desired marks (none stray, none missing),
//! `plan` must find nothing left to do, and every state file written along the way must parse.
//!
//! `cargo test` runs a short version (a few kills of each). The full run, as docs/reliability.md quotes
//! it:
//!
//! ```text
//! MARKSYNC_CRASH_ROUNDS=50 cargo test --release --test crash -- --nocapture
//! ```
//!
//! A second run kills `apply --refresh` with 20% of `get_members` pages cut short (an answer
//! that reads like the end of the listing) and ends with an `apply --refresh` under the same
//! fault: a refresh must never forget a mark it should clear (SPEC 10), so that one must leave
//! the service holding exactly the desired marks too.
//!
//! `MARKSYNC_CRASH_ROUNDS` is the number of kills of each program; `MARKSYNC_CRASH_SEED` replays
//! a run (the seed is printed first, and in the failure message); `MARKSYNC_CRASH_BIN` runs
//! another build of `marksync apply`/`run` (an older one, to compare) against the same rounds.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{APP, Marks, Proc, StandaloneEmulator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Kills of each program in plain `cargo test`.
const SHORT_ROUNDS: usize = 3;
const GROUPS: usize = 8;
const MEMBERS: usize = 24;
/// 500 included: it is set and cleared like the others (its renewal is not exercised here).
const PALETTE: [u32; 7] = [500, 1000, 1001, 1002, 1003, 1004, 1005];
/// The longest any one process may run before the suite calls it hung.
const PROCESS_LIMIT: Duration = Duration::from_secs(60);

/// Which program a round kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    Apply,
    Run,
    /// `apply --refresh`, with short pages injected.
    ApplyRefresh,
}

/// What the rounds saw, for the report.
#[derive(Debug, Default)]
struct Tally {
    /// Kills, by program.
    killed: BTreeMap<&'static str, usize>,
    /// Kills that found at least one call in flight at the emulator.
    mid_flight: BTreeMap<&'static str, usize>,
    /// Of those, kills whose calls in flight were already applied by the emulator, their
    /// answers held back (latency after the call): the service changed, the client never knew.
    applied_unanswered: BTreeMap<&'static str, usize>,
    /// `apply` rounds that finished before their kill moment (nothing to kill).
    finished_first: usize,
    /// State files (state, `.bak`, intents sidecar) read back after kills.
    states_parsed: usize,
    /// Calls a killed process left in flight that the emulator dropped with the connection.
    dropped: u64,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn seed() -> u64 {
    std::env::var("MARKSYNC_CRASH_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// The suite's world: a directory with config, key, desired file and state, and the emulator.
struct World {
    dir: tempfile::TempDir,
    emu: StandaloneEmulator,
    desired: Marks,
    rng: StdRng,
    seed: u64,
    tally: Tally,
    n: usize,
    /// Whether the state path is a symbolic link into `volume/` (checked after every kill).
    linked: bool,
    /// The state in the local S3 server (SeaweedFS) at this URL, instead of a file.
    s3: Option<(&'static common::s3::S3, String)>,
}

impl World {
    fn new(seed: u64) -> World {
        let emu = StandaloneEmulator::start();
        let dir = tempfile::tempdir().unwrap();
        let mut w = World {
            dir,
            emu,
            desired: Marks::new(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            tally: Tally::default(),
            n: 0,
            linked: false,
            s3: None,
        };
        // Start from a full roster, so the first rounds have clears to make.
        for g in 0..GROUPS {
            let group = w.desired.entry(group_id(g)).or_default();
            for m in 0..MEMBERS {
                let marks: Vec<u32> = PALETTE
                    .iter()
                    .copied()
                    .filter(|_| w.rng.random_bool(0.4))
                    .collect();
                if !marks.is_empty() {
                    group.insert(format!("m{m:02}"), marks);
                }
            }
        }
        w.write_config(200);
        w.write_desired();
        w
    }

    /// [`World::new`] with the state path a relative symbolic link, dangling until the first
    /// save, to `volume/marksync.json` (a state on a mounted volume).
    fn new_linked(seed: u64) -> World {
        let mut w = World::new(seed);
        std::fs::create_dir_all(w.path("state")).unwrap();
        std::fs::create_dir_all(w.path("volume")).unwrap();
        std::os::unix::fs::symlink("../volume/marksync.json", w.state_path()).unwrap();
        w.linked = true;
        w
    }

    /// [`World::new`] with the state in the local S3 server; `None` (skipped loudly; a failure
    /// in CI) when it cannot run here.
    fn new_in_s3(seed: u64) -> Option<World> {
        let s3 = common::s3::s3()?;
        let mut w = World::new(seed);
        w.s3 = Some((s3, s3.url("crash/marksync.json")));
        w.write_config(200);
        Some(w)
    }

    /// The link is still a link and nothing of the state's lives beside it.
    fn check_link(&self) {
        let link = self.state_path();
        assert!(
            std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
            "the state link became a file (seed {})",
            self.seed
        );
        let beside: Vec<_> = std::fs::read_dir(self.path("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, ["marksync.json"], "seed {}", self.seed);
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn state_path(&self) -> PathBuf {
        self.path("state/marksync.json")
    }

    fn write_config(&self, rate: u32) {
        let mut config = common::daemon::config(&self.emu.endpoint());
        config.insert("max_calls_per_second", rate.to_string());
        config.insert("debounce", "50ms".into());
        config.remove("http");
        if let Some((_, url)) = &self.s3 {
            config.insert("state", url.clone());
            config.insert("lock_ttl", "10s".into());
        }
        common::daemon::write_config(self.dir.path(), &config);
    }

    fn write_desired(&self) {
        common::write_atomic(&self.path("marks/all.yaml"), &common::yaml(&self.desired));
    }

    /// Changes the desired marks: every mark of every member flips with some probability (so a
    /// mark cleared in one round is often desired again a few rounds later), and now and then
    /// a whole group leaves the files or comes back.
    fn mutate(&mut self) {
        for g in 0..GROUPS {
            let id = group_id(g);
            if !self.desired.contains_key(&id) {
                if self.rng.random_bool(0.5) {
                    self.desired.insert(id.clone(), BTreeMap::new());
                } else {
                    continue;
                }
            } else if self.rng.random_bool(0.06) {
                self.desired.remove(&id);
                continue;
            }
            let group = self.desired.get_mut(&id).unwrap();
            for m in 0..MEMBERS {
                let account = format!("m{m:02}");
                let mut marks: Vec<u32> = group.get(&account).cloned().unwrap_or_default();
                for &mark in &PALETTE {
                    if self.rng.random_bool(0.15) {
                        match marks.binary_search(&mark) {
                            Ok(i) => {
                                marks.remove(i);
                            }
                            Err(i) => marks.insert(i, mark),
                        }
                    }
                }
                if marks.is_empty() {
                    group.remove(&account);
                } else {
                    group.insert(account, marks);
                }
            }
        }
        self.write_desired();
    }

    fn command(&self, args: &[&str]) -> Command {
        let bin = std::env::var_os("MARKSYNC_CRASH_BIN").unwrap_or_else(|| common::BIN.into());
        let mut c = Command::new(bin);
        c.arg("-c")
            .arg(self.path("marksync.yaml"))
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("MARKSYNC_CONFIG")
            .env_remove("MARKSYNC_LOG")
            .env_remove("NOTIFY_SOCKET");
        if let Some((s3, _)) = &self.s3 {
            s3.apply_env(&mut c);
        }
        c
    }

    fn spawn(&mut self, program: Program) -> Proc {
        self.n += 1;
        let mut args: Vec<&str> = match program {
            Program::Apply => vec!["apply", "--allow-mass-clear"],
            Program::Run => vec!["run", "--allow-mass-clear"],
            Program::ApplyRefresh => vec!["apply", "--refresh", "--allow-mass-clear"],
        };
        if self.s3.is_some() {
            // The killed holder's lease runs out after `lock_ttl`; the next one waits for it.
            args.extend(["--lock-timeout", "60s"]);
        }
        let args = &args[..];
        let log = self.path(&format!("logs/{:03}-{program:?}.log", self.n));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        Proc::spawn(&mut self.command(args), log)
    }

    /// Waits for a random moment: a random time below `max_ms`, or (two times in three) until
    /// the emulator has received a random number of calls up to `max_calls` more, plus a moment
    /// within `latency` (so the last of them is still in flight), never longer than `2 * max_ms`
    /// overall. Returns early when `proc` exits.
    fn random_moment(
        &mut self,
        proc: &mut Proc,
        max_ms: u64,
        latency: u64,
        base_calls: u64,
        max_calls: u64,
    ) {
        let start = Instant::now();
        let limit = start + Duration::from_millis(2 * max_ms);
        let deadline = if self.rng.random_bool(0.67) {
            let want = base_calls + self.rng.random_range(1..=max_calls.max(1));
            let extra = Duration::from_millis(self.rng.random_range(0..latency));
            while self.emu.calls() < want && Instant::now() < limit {
                if proc.exited().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (Instant::now() + extra).min(limit)
        } else {
            start + Duration::from_millis(self.rng.random_range(0..=max_ms))
        };
        while Instant::now() < deadline {
            if proc.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One round: a new desired state, a latency, a rate; the program started and killed.
    fn round(&mut self, program: Program) {
        let latency: u64 = self.rng.random_range(20..=400);
        let rate: u32 = [10, 50, 200][self.rng.random_range(0..3)];
        // Half the rounds delay the call before the emulator applies it (a kill loses the
        // call), half delay only the answer (a kill leaves a change the client never saw).
        let answer_only = self.rng.random_bool(0.5);
        self.emu.clear_faults();
        self.emu
            .inject(serde_json::json!({"kind": "latency", "ms": latency, "after": answer_only}));
        self.write_config(rate);
        self.mutate();
        let mut expected_calls = self.planned_calls().max(1);
        if program == Program::ApplyRefresh {
            self.short_pages_and_a_judged_listing();
            // The reads: per group the online listing and one per mark.
            expected_calls += (GROUPS * (1 + PALETTE.len())) as u64;
        }
        let base = self.emu.calls();
        let mut proc = self.spawn(program);
        let name = match program {
            Program::Apply => "apply",
            Program::Run => "run",
            Program::ApplyRefresh => "apply --refresh",
        };
        // Roughly how long the program needs: start-up, the rate limiter's spacing, latency.
        let span = 150 + latency * 2 + 1000 * expected_calls / u64::from(rate);
        match program {
            Program::Apply | Program::ApplyRefresh => {
                self.random_moment(&mut proc, span, latency, base, expected_calls)
            }
            Program::Run => {
                // The files change under the running daemon, then the kill comes.
                self.random_moment(&mut proc, span, latency, base, expected_calls);
                if let Some(status) = proc.exited() {
                    panic!("the daemon exited ({status}):\n{}", proc.stderr());
                }
                self.mutate();
                let base = self.emu.calls();
                // Roughly what the daemon sends for the change (the state on disk may lag a
                // little behind the daemon's).
                let calls = self.planned_calls().max(1);
                self.random_moment(&mut proc, span, latency, base, calls);
            }
        }
        if let Some(status) = proc.exited() {
            assert!(
                program != Program::Run && status.success(),
                "{name} ended on its own with {status} (seed {}):\n{}",
                self.seed,
                proc.stderr()
            );
            self.tally.finished_first += 1;
        } else {
            let in_flight = self.emu.in_flight();
            proc.kill9();
            self.unlock_dead_holder();
            *self.tally.killed.entry(name).or_default() += 1;
            if in_flight > 0 {
                *self.tally.mid_flight.entry(name).or_default() += 1;
                if answer_only {
                    *self.tally.applied_unanswered.entry(name).or_default() += 1;
                }
            }
        }
        self.check_state_files();
        // Calls the dead process left in flight land (or are dropped) before the next process
        // starts: two live processes' calls racing is not what a crash looks like.
        self.tally.dropped += self.emu.settle(Duration::from_millis(latency + 1000));
    }

    /// Runs `marksync ARGS` to the end (bounded); its exit status and stdout.
    fn run_to_end(&mut self, args: &[&str]) -> (std::process::ExitStatus, String) {
        self.n += 1;
        let log = self.path(&format!("logs/{:03}-{}.log", self.n, args[0]));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut proc = Proc::spawn(&mut self.command(args), log);
        let status = proc.wait_exit(PROCESS_LIMIT);
        assert!(
            status.code().is_some(),
            "marksync {args:?}: {status}\n{}",
            proc.stderr()
        );
        (status, proc.stdout())
    }

    /// How many calls `apply` would send now (`plan --json`).
    fn planned_calls(&mut self) -> u64 {
        let (status, out) = self.run_to_end(&["plan", "--json"]);
        assert!(status.success(), "plan --json: {status}");
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        plan["summary"]["calls"].as_u64().unwrap()
    }

    /// The state, its `.bak` and its intents sidecar all parse (a missing state before the
    /// first save is fine).
    fn check_state_files(&mut self) {
        if self.linked {
            self.check_link();
        }
        if self.s3.is_some() {
            // The store's journal, read as the next process reads it.
            self.stored_state();
            self.tally.states_parsed += 1;
            return;
        }
        // The file the state path stands for: its sidecars live beside it.
        let path = marksync::state::target(&self.state_path()).unwrap();
        if path.exists() || marksync::state::intents_path(&path).exists() {
            marksync::state::load(&path, APP).unwrap_or_else(|e| {
                panic!("state after a kill (seed {}): {e}", self.seed);
            });
            self.tally.states_parsed += 1;
        }
        let bak = marksync::state::backup_path(&path);
        if let Ok(bytes) = std::fs::read(&bak) {
            marksync::state::parse(&bak, &bytes).unwrap_or_else(|e| {
                panic!(".bak after a kill (seed {}): {e}", self.seed);
            });
            self.tally.states_parsed += 1;
        }
    }

    /// With the state in S3: removes the killed process's lock with `marksync state unlock ID`,
    /// as an operator does after a crash, so the next round need not wait out its lease.
    fn unlock_dead_holder(&mut self) {
        let Some((s3, url)) = &self.s3 else { return };
        let store = marksync::state::ObjectStore::open(
            url,
            &marksync::state::StoreSettings::default(),
            s3.env(),
        )
        .unwrap();
        let holder = common::runtime().block_on(async {
            use marksync::state::StateStore;
            store.holder().await.unwrap()
        });
        if let Some(holder) = holder {
            let (status, _) = self.run_to_end(&["state", "unlock", &holder.id]);
            assert!(status.success(), "state unlock (seed {})", self.seed);
        }
    }

    /// The state as stored (`state pull`, which reads a file or the object store's journal
    /// alike); a state that cannot be read fails the test.
    fn stored_state(&mut self) -> marksync::state::State {
        let (status, out) = self.run_to_end(&["state", "pull"]);
        assert!(
            status.success(),
            "state pull (seed {}): {status}",
            self.seed
        );
        marksync::state::parse(std::path::Path::new("pulled"), out.as_bytes())
            .unwrap_or_else(|e| panic!("the stored state after a kill (seed {}): {e}", self.seed))
    }

    /// 20% of `get_members` pages cut short, a listing that is fresh (the emulator's clock past
    /// its 40 s cache) and confirmations old enough to be judged on it (every recorded time moved
    /// 100 s back, intents kept): so each refresh judges every absence, and some listings lie.
    fn short_pages_and_a_judged_listing(&mut self) {
        self.emu
            .inject(serde_json::json!({"kind": "short_page", "rate": 0.2}));
        self.emu.control(
            "POST",
            "/emulator/clock/advance",
            Some(&serde_json::json!({"seconds": 41})),
        );
        let path = self.state_path();
        if !path.exists() {
            return;
        }
        let mut st = marksync::state::load(&path, APP).unwrap();
        for accounts in st.groups.values_mut() {
            for confirmed in accounts.values_mut() {
                let marks: Vec<_> = confirmed.iter().collect();
                for (mark, at) in marks {
                    confirmed.confirm(mark, at - 100);
                }
            }
        }
        marksync::state::save(&path, &mut st).unwrap();
    }

    /// A clean `apply --refresh` with no latency but short pages still cut.
    fn clean_refresh_apply(&mut self) {
        self.emu.clear_faults();
        self.write_config(200);
        self.short_pages_and_a_judged_listing();
        let mut proc = self.spawn(Program::ApplyRefresh);
        let status = proc.wait_exit(PROCESS_LIMIT);
        assert!(
            status.success(),
            "the clean apply --refresh failed (seed {}): {status}\n{}\n{}",
            self.seed,
            proc.stdout(),
            proc.stderr()
        );
        self.emu.clear_faults();
    }

    /// A clean `apply` with no fault; its output.
    fn clean_apply(&mut self) {
        self.emu.clear_faults();
        self.write_config(200);
        let mut proc = self.spawn(Program::Apply);
        let status = proc.wait_exit(PROCESS_LIMIT);
        assert!(
            status.success(),
            "the clean apply failed (seed {}): {status}\n{}\n{}",
            self.seed,
            proc.stdout(),
            proc.stderr()
        );
    }
}

fn group_id(g: usize) -> String {
    format!("@TGS#crash{g}")
}

fn count(m: &BTreeMap<&'static str, usize>, k: &str) -> usize {
    m.get(k).copied().unwrap_or(0)
}

#[test]
fn kill_9_apply_and_run_at_random_moments_then_one_clean_apply_leaves_exactly_the_desired_marks() {
    let rounds = env_usize("MARKSYNC_CRASH_ROUNDS").unwrap_or(SHORT_ROUNDS);
    let seed = seed();
    eprintln!(
        "crash suite: seed {seed} (MARKSYNC_CRASH_SEED={seed} replays it), {rounds} kills of apply and of run"
    );
    let started = Instant::now();
    let mut w = World::new(seed);
    let mut apply_kills = 0;
    let mut run_kills = 0;
    // Alternate the programs until each has been killed `rounds` times (an apply that finished
    // before its kill moment does not count as a kill).
    let mut attempts = 0;
    while apply_kills < rounds || run_kills < rounds {
        attempts += 1;
        assert!(
            attempts < rounds * 6 + 10,
            "too few kills landed (seed {seed})"
        );
        let program = if run_kills >= rounds || (apply_kills < rounds && attempts % 2 == 1) {
            Program::Apply
        } else {
            Program::Run
        };
        w.round(program);
        apply_kills = count(&w.tally.killed, "apply");
        run_kills = count(&w.tally.killed, "run");
    }
    finish(&mut w, started);
}

/// After the last kill: one clean apply, then nothing stray, nothing missing, nothing left to
/// plan and no intent left.
fn finish(w: &mut World, started: Instant) {
    let seed = w.seed;
    w.emu.settle(Duration::from_secs(3));
    w.clean_apply();

    let live = w.emu.marks();
    let (stray, missing) = common::diff(&live, &w.desired);
    let (plan_status, plan_out) = w.run_to_end(&["plan", "--detailed-exitcode"]);
    let desired_marks: usize = w
        .desired
        .values()
        .flat_map(|g| g.values())
        .map(Vec::len)
        .sum();
    eprintln!(
        "crash suite: seed {seed}: {} kills of apply ({} with calls in flight, {} of them applied but unanswered), \
         {} of run ({} with calls in flight, {} applied but unanswered), \
         {} applies finished before their kill, {} calls cut with their connection, {} state files parsed; after the clean apply: \
         {} desired marks, {} stray, {} missing; {:.0?}",
        count(&w.tally.killed, "apply"),
        count(&w.tally.mid_flight, "apply"),
        count(&w.tally.applied_unanswered, "apply"),
        count(&w.tally.killed, "run"),
        count(&w.tally.mid_flight, "run"),
        count(&w.tally.applied_unanswered, "run"),
        w.tally.finished_first,
        w.tally.dropped,
        w.tally.states_parsed,
        desired_marks,
        stray.len(),
        missing.len(),
        started.elapsed()
    );
    assert!(
        stray.is_empty() && missing.is_empty(),
        "seed {seed}: {} stray {:?}, {} missing {:?}",
        stray.len(),
        stray.iter().take(10).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(
        plan_status.code(),
        Some(0),
        "seed {seed}: plan after the clean apply:\n{plan_out}"
    );
    let st = w.stored_state();
    assert!(
        st.intents.is_empty(),
        "seed {seed}: intents left: {:?}",
        st.intents
    );
    if w.linked {
        w.check_link();
        let target = w.path("volume/marksync.json");
        let on_target = marksync::state::load(&target, APP).unwrap();
        assert_eq!(on_target, st, "seed {seed}: the target holds the state");
    }
}

#[test]
fn kill_9_apply_with_a_symlinked_state_keeps_the_link_and_leaves_exactly_the_desired_marks() {
    let rounds = env_usize("MARKSYNC_CRASH_ROUNDS").unwrap_or(SHORT_ROUNDS);
    let seed = seed();
    eprintln!(
        "crash suite, symlinked state: seed {seed} (MARKSYNC_CRASH_SEED={seed} replays it), {rounds} kills of apply"
    );
    let started = Instant::now();
    let mut w = World::new_linked(seed);
    let mut attempts = 0;
    while count(&w.tally.killed, "apply") < rounds {
        attempts += 1;
        assert!(
            attempts < rounds * 6 + 10,
            "too few kills landed (seed {seed})"
        );
        w.round(Program::Apply);
    }
    finish(&mut w, started);
}

#[test]
fn kill_9_apply_refresh_with_short_pages_then_one_refreshed_apply_leaves_exactly_the_desired_marks()
{
    let rounds = env_usize("MARKSYNC_CRASH_ROUNDS").unwrap_or(SHORT_ROUNDS);
    let seed = seed();
    eprintln!(
        "crash suite (short pages): seed {seed} (MARKSYNC_CRASH_SEED={seed} replays it), {rounds} kills of apply --refresh"
    );
    let mut w = World::new(seed);
    // The full roster applied and recorded first: later rounds have recorded marks to clear.
    w.clean_apply();
    let mut attempts = 0;
    while count(&w.tally.killed, "apply --refresh") < rounds {
        attempts += 1;
        assert!(
            attempts < rounds * 6 + 10,
            "too few kills landed (seed {seed})"
        );
        w.round(Program::ApplyRefresh);
    }
    w.emu.settle(Duration::from_secs(3));
    // Not a plain apply: one that refreshes, and reads short pages, must still clear every mark
    // no longer desired.
    w.clean_refresh_apply();
    let live = w.emu.marks();
    let (stray, missing) = common::diff(&live, &w.desired);
    eprintln!(
        "crash suite (short pages): seed {seed}: {} kills ({} with calls in flight), {} finished first; {} stray, {} missing",
        count(&w.tally.killed, "apply --refresh"),
        count(&w.tally.mid_flight, "apply --refresh"),
        w.tally.finished_first,
        stray.len(),
        missing.len(),
    );
    assert!(
        stray.is_empty() && missing.is_empty(),
        "seed {seed}: {} stray {:?}, {} missing {:?}",
        stray.len(),
        stray.iter().take(10).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    let (plan_status, plan_out) = w.run_to_end(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan_status.code(),
        Some(0),
        "seed {seed}: plan after the refreshed apply:\n{plan_out}"
    );
}

#[test]
fn kill_9_apply_and_run_with_the_state_in_s3_then_one_clean_apply_leaves_exactly_the_desired_marks()
{
    // Each kill leaves a lease the next process waits out (`lock_ttl`, 10 s at least): fewer
    // rounds by default than the file suite.
    let rounds = env_usize("MARKSYNC_CRASH_ROUNDS").unwrap_or(2);
    let seed = seed();
    let Some(mut w) = World::new_in_s3(seed) else {
        return;
    };
    eprintln!(
        "crash suite, state in S3: seed {seed} (MARKSYNC_CRASH_SEED={seed} replays it), {rounds} kills of apply and of run"
    );
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        let (apply_kills, run_kills) = (
            count(&w.tally.killed, "apply"),
            count(&w.tally.killed, "run"),
        );
        if apply_kills >= rounds && run_kills >= rounds {
            break;
        }
        attempts += 1;
        assert!(
            attempts < rounds * 6 + 10,
            "too few kills landed (seed {seed})"
        );
        let program = if run_kills >= rounds || (apply_kills < rounds && attempts % 2 == 1) {
            Program::Apply
        } else {
            Program::Run
        };
        w.round(program);
    }
    finish(&mut w, started);
    assert!(!w.path("state").exists(), "nothing of the state on disk");
}
