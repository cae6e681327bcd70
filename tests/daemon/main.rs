//! `marksync run` as a real process: real files, real signals, a real HTTP listener, against an
//! emulator (in this process through `Emulator::start`, or a standalone `marksync emulator`).
//!
//! Every wait is a bounded poll for a condition (up to [`WAIT`]); where a test shows that
//! something does *not* happen, it first waits for an event that comes after it
//! ([`Env::settled`]: the daemon has read one more file), never for a fixed time. Child
//! processes are killed when their guard drops, so a failing test leaves nothing running. Every
//! listener binds port 0 and reports the address it got.
//!
//! This file holds the harness ([`Env`]); the tests are in one file per concern beside it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod broken;
mod callbacks;
mod lifecycle;
mod probes;
mod timers;
mod watching;

use common::daemon::{Daemon, WAIT, metric};
use common::{APP, KEY, Marks, POLL, marks, poll, union, unix_now, yaml};

use marksync::emulator::{Emulator, EmulatorConfig, Fault, FaultKind, GroupType};
use serde_json::Value;

const HOUR: i64 = 3600;

/// Where a test's emulator runs.
enum Emu {
    /// In this process: direct access to marks, calls, faults and presence.
    InProcess {
        emu: Option<Emulator>,
        rt: tokio::runtime::Runtime,
    },
    /// `marksync emulator --listen 127.0.0.1:0`.
    Standalone { emu: common::StandaloneEmulator },
}

/// A temp directory with a config, a secret key, desired files and a state; an emulator; the
/// daemon under test.
struct Env {
    dir: tempfile::TempDir,
    emu: Emu,
    /// Top-level config keys (value as YAML text), written by [`Env::write_config`].
    config: BTreeMap<&'static str, String>,
}

impl Env {
    /// An in-process emulator that creates groups and members on first use (as `--demo` does).
    fn new() -> Env {
        Env::in_process(common::demo_emulator_config())
    }

    /// An in-process emulator configured by `f` (from a bare config).
    fn with(f: impl FnOnce(&mut EmulatorConfig)) -> Env {
        let mut cfg = EmulatorConfig::new(APP, KEY, common::ADMIN);
        f(&mut cfg);
        Env::in_process(cfg)
    }

    fn in_process(cfg: EmulatorConfig) -> Env {
        let rt = common::runtime();
        let emu = rt.block_on(Emulator::start(cfg)).unwrap();
        let endpoint = emu.base_url();
        Env::setup(Emu::InProcess { emu: Some(emu), rt }, &endpoint)
    }

    /// A standalone `marksync emulator --demo` process, on a port the OS chose.
    fn standalone() -> Env {
        let emu = common::StandaloneEmulator::start();
        let endpoint = emu.endpoint();
        Env::setup(Emu::Standalone { emu }, &endpoint)
    }

    fn setup(emu: Emu, endpoint: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        common::daemon::write_secret(dir.path());
        Env {
            dir,
            emu,
            config: common::daemon::config(endpoint),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn state_path(&self) -> PathBuf {
        let rel = &self.config["state"];
        self.path(rel)
    }

    fn set(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.config.insert(key, value.into());
        self
    }

    fn config_text(&self) -> String {
        common::daemon::config_text(&self.config)
    }

    fn write_config(&self) {
        common::daemon::write_config(self.root(), &self.config);
    }

    /// The configured debounce (`NNNms`).
    fn debounce(&self) -> Duration {
        let ms = self.config["debounce"]
            .strip_suffix("ms")
            .expect("debounce in ms");
        Duration::from_millis(ms.parse().unwrap())
    }

    /// Writes a file (creating its directory) under the temp directory.
    fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Writes a desired file `marks/<rel>`.
    fn desire(&self, rel: &str, want: &Marks) {
        self.write(&format!("marks/{rel}"), &yaml(want));
    }

    /// Writes a state file by hand: `(group, account, mark, confirmed at)`.
    fn write_state(&self, rows: &[(&str, &str, u32, i64)]) {
        let mut groups = serde_json::Map::new();
        for (g, a, m, at) in rows {
            let g = groups
                .entry(g.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            let a = g
                .as_object_mut()
                .unwrap()
                .entry(a.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            a.as_object_mut()
                .unwrap()
                .insert(m.to_string(), Value::from(*at));
        }
        let state = serde_json::json!({
            "format_version": 1, "sdkappid": APP, "serial": 1, "groups": groups, "intents": {}
        });
        let p = self.state_path();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_string(&state).unwrap()).unwrap();
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.state_path()).expect("state file exists");
        serde_json::from_str(&text).expect("state file parses")
    }

    /// Starts `marksync run` without waiting for anything.
    fn spawn(&self) -> Daemon {
        self.write_config();
        let n = std::fs::read_dir(self.root())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("daemon"))
            })
            .count();
        Daemon::spawn(
            &self.path("marksync.yaml"),
            self.path(&format!("daemon{n}.log")),
            |_| {},
        )
    }

    /// Starts `marksync run` and waits until `/readyz` answers 200.
    fn start(&self) -> Daemon {
        let mut d = self.spawn();
        d.wait_ready();
        d
    }

    fn emu(&self) -> &Emulator {
        match &self.emu {
            Emu::InProcess { emu, .. } => emu.as_ref().unwrap(),
            Emu::Standalone { .. } => panic!("this test needs the in-process emulator"),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.emu {
            Emu::InProcess { rt, .. } => rt.block_on(async {
                tokio::time::timeout(WAIT, f)
                    .await
                    .expect("emulator control call timed out")
            }),
            Emu::Standalone { .. } => panic!("this test needs the in-process emulator"),
        }
    }

    fn emu_addr(&self) -> SocketAddr {
        match &self.emu {
            Emu::InProcess { emu, .. } => emu.as_ref().unwrap().addr(),
            Emu::Standalone { emu } => emu.addr,
        }
    }

    fn online(&self, group: &str, accounts: &[&str]) {
        let _ = self.emu().create_group(group, GroupType::AVChatRoom);
        self.block_on(self.emu().set_online(group, accounts))
            .unwrap();
    }

    fn offline(&self, group: &str, accounts: &[&str]) {
        self.block_on(self.emu().set_offline(group, accounts))
            .unwrap();
    }

    /// The emulator's live marks (through its control API, so it works for both kinds).
    fn live(&self) -> Marks {
        common::live_marks(self.emu_addr())
    }

    /// Service calls the emulator received.
    fn calls(&self) -> u64 {
        common::calls_total(self.emu_addr())
    }

    /// Waits until the emulator's live marks equal `want`.
    fn wait_live(&self, want: &Marks) {
        self.wait_live_within(want, WAIT);
    }

    fn wait_live_within(&self, want: &Marks, limit: Duration) {
        let start = Instant::now();
        loop {
            let live = self.live();
            if &live == want {
                return;
            }
            if start.elapsed() > limit {
                assert_eq!(&live, want, "emulator marks after {limit:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Shows that the daemon has handled every file event before this call, by an event rather
    /// than by waiting a fixed time: writes one more desired file and waits until the daemon
    /// has read it. File events are handled in order, so whatever the earlier ones caused
    /// happened before that (or in the same round). With good files the new file declares no
    /// group (`groups: {}`, the desired state stays the same) and the wait ends when its reload
    /// is logged and the round after it recorded: one more `files` reconcile, no call. With
    /// broken files it is broken too, the wait ends when its error is logged, and it is removed.
    fn settled(&self, d: &Daemon) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "zz-settled-{}.yaml",
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        if d.metric("marksync_desired_ok") == 0.0 {
            self.write(&format!("marks/{name}"), "groups: [\n");
            d.wait_stderr(&name);
            // Gone again, so that fixing the test's own broken file makes the files good.
            std::fs::remove_file(self.path(&format!("marks/{name}"))).unwrap();
            return;
        }
        let reloads = || d.proc.stderr().matches("desired files reloaded").count();
        let (seen, rounds) = (reloads(), d.metric("marksync_reconciles_total"));
        self.write(&format!("marks/{name}"), "groups: {}\n");
        poll(&format!("the daemon to read {name}"), WAIT, || {
            (reloads() > seen && d.metric("marksync_reconciles_total") > rounds).then_some(())
        });
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Emu::InProcess { emu, rt } = &mut self.emu
            && let Some(emu) = emu.take()
        {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), emu.shutdown()).await
            });
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stages everything in `repo` and commits it as `message`.
fn commit_all(repo: &Path, message: &str) {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
}

/// A git repository `rel` (branch `main`) whose `marks/` holds [`example`] in one commit;
/// returns its path and the example.
fn repo_with_example(env: &Env, rel: &str, message: &str) -> (PathBuf, Marks, Marks) {
    let repo = env.path(rel);
    let (a, b) = example();
    env.write(&format!("{rel}/marks/a.yaml"), &yaml(&a));
    env.write(&format!("{rel}/marks/b.yaml"), &yaml(&b));
    git(&repo, &["init", "-q", "-b", "main"]);
    commit_all(&repo, message);
    (repo, a, b)
}

fn example() -> (Marks, Marks) {
    let a = marks(&[
        ("@TGS#1A", "teacher", &[1000]),
        ("@TGS#1A", "host", &[500, 1000]),
        ("@TGS#1A", "student1", &[1001]),
    ]);
    let b = marks(&[("@TGS#2B", "alice", &[1002]), ("@TGS#2B", "bob", &[1002])]);
    (a, b)
}

/// Starts a daemon over `a.yaml` and `b.yaml` and waits until the emulator matches.
fn running() -> (Env, Daemon, Marks, Marks) {
    running_with(|_| {})
}

/// [`running`], with the config first adjusted by `f`.
fn running_with(f: impl FnOnce(&mut Env)) -> (Env, Daemon, Marks, Marks) {
    let mut env = Env::new();
    f(&mut env);
    let (a, b) = example();
    env.desire("a.yaml", &a);
    env.desire("b.yaml", &b);
    let d = env.start();
    env.wait_live(&union(&[&a, &b]));
    (env, d, a, b)
}
