//! `marksync import`, `apply --refresh` and `plan --refresh` against the in-process emulator
//! (SPEC section 10): import records live marks the desired files declare without a single write
//! call; a refreshed apply heals a lost mark; `plan --refresh --detailed-exitcode` sees drift that
//! the plain plan cannot. Every wait is bounded; the emulator binds a loopback port the OS chose.

use std::path::Path;
use std::sync::Arc;

use marksync::clock::{ManualClock, SystemClock};
use marksync::cmd::{self, ApplyOptions, ImportOptions, PlanOptions};
use marksync::config::{self, Config};
use marksync::emulator::{Emulator, EmulatorConfig, Fault, FaultKind, GroupType};
use marksync::error::exit;
use marksync::state;

mod common;
use common::{ADMIN, APP, KEY, within};

const G: &str = "@TGS#import";

struct Env {
    dir: tempfile::TempDir,
    emu: Emulator,
    config: Config,
}

impl Env {
    async fn start(online: &[&str]) -> Env {
        Env::start_with(EmulatorConfig::new(APP, KEY, ADMIN), online).await
    }

    async fn start_with(cfg: EmulatorConfig, online: &[&str]) -> Env {
        let emu = within(Emulator::start(cfg)).await.unwrap();
        emu.create_group(G, GroupType::AVChatRoom).unwrap();
        within(emu.set_online(G, online)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.key"), format!("{KEY}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("marks")).unwrap();
        let text = format!(
            "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: secret.key\nendpoint: {}\n\
             desired: marks/\nstate: state/marksync.json\n",
            emu.base_url()
        );
        let path = dir.path().join("marksync.yaml");
        std::fs::write(&path, &text).unwrap();
        let config = config::parse(&path, &text).unwrap();
        Env { dir, emu, config }
    }

    /// `members`: `account: [marks]` lines of group G.
    fn desire(&self, members: &str) {
        std::fs::write(
            self.dir.path().join("marks/g.yaml"),
            format!("groups:\n  \"{G}\":\n    members:\n{members}"),
        )
        .unwrap();
    }

    /// The listing is a snapshot about 40 s old: move the emulator's clock past it.
    fn age_listing(&self) {
        self.emu.advance_clock(41);
    }

    fn writes(&self) -> u64 {
        self.emu
            .stats(false)
            .calls_by_path
            .iter()
            .filter(|(p, _)| p.contains("modify_user_info"))
            .map(|(_, n)| n)
            .sum()
    }

    async fn import(&self, dry_run: bool) -> u8 {
        let opts = ImportOptions {
            dry_run,
            verbose: true,
            ..ImportOptions::default()
        };
        within(cmd::import_with(&self.config, &opts, Arc::new(SystemClock)))
            .await
            .unwrap()
    }

    async fn apply(&self, refresh: bool) -> u8 {
        let opts = ApplyOptions {
            refresh,
            ..ApplyOptions::default()
        };
        within(cmd::apply_with(&self.config, &opts, Arc::new(SystemClock)))
            .await
            .unwrap()
    }

    /// An apply a minute ago: what it confirms is old enough for a refresh to judge (a mark
    /// confirmed within the listing's 40 s staleness is "not checked").
    async fn apply_a_minute_ago(&self) -> u8 {
        let clock = ManualClock::new(cmd::wall_clock_now() - 60);
        within(cmd::apply_with(
            &self.config,
            &ApplyOptions::default(),
            Arc::new(clock),
        ))
        .await
        .unwrap()
    }

    async fn plan_is_empty(&self) -> bool {
        let (_, plan) = common::plan_at(&self.config, false, cmd::wall_clock_now()).await;
        plan.is_empty()
    }

    fn recorded(&self) -> Vec<(String, u32)> {
        let st = state::load(self.state_path(), APP).unwrap();
        let mut out = Vec::new();
        for accounts in st.groups.values() {
            for (a, c) in accounts {
                for (m, _) in c.iter() {
                    out.push((a.as_str().to_string(), m.get()));
                }
            }
        }
        out.sort();
        out
    }

    fn state_path(&self) -> &Path {
        common::state_file(&self.config)
    }
}

fn pairs(rows: &[(&str, u32)]) -> Vec<(String, u32)> {
    rows.iter().map(|(a, m)| (a.to_string(), *m)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_an_empty_state_records_declared_live_marks_without_a_write() {
    let env = Env::start(&["alice", "bob", "carol"]).await;
    // Another tool set these; marksync has no state at all (a lost CI runner).
    env.emu.set_marks_as_other(G, &["alice"], &[1000]).unwrap();
    env.emu.set_marks_as_other(G, &["bob"], &[1001]).unwrap();
    env.emu.set_marks_as_other(G, &["carol"], &[1002]).unwrap();
    env.age_listing();
    env.desire("      alice: [1000]\n      bob: [1001]\n");

    // A dry run shows it and writes nothing.
    assert_eq!(env.import(true).await, exit::OK);
    assert!(!env.state_path().exists(), "a dry run writes no state");

    assert_eq!(env.import(false).await, exit::OK);
    assert_eq!(env.writes(), 0, "import never sends a write call");
    assert_eq!(env.recorded(), pairs(&[("alice", 1000), ("bob", 1001)]));
    assert!(env.plan_is_empty().await, "the next plan has nothing to do");
    // The undeclared mark is left alone on the service.
    assert_eq!(env.emu.marks_of(G).get("carol"), Some(&vec![1002]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_an_existing_state_adopts_the_missing_marks_and_keeps_the_rest() {
    let env = Env::start(&["alice", "bob", "carol"]).await;
    env.desire("      alice: [1000]\n");
    assert_eq!(env.apply(false).await, exit::OK);
    let writes = env.writes();
    // Marks set by an older tool, one of them now declared.
    env.emu.set_marks_as_other(G, &["bob"], &[1001]).unwrap();
    env.emu.set_marks_as_other(G, &["carol"], &[1002]).unwrap();
    env.age_listing();
    env.desire("      alice: [1000]\n      bob: [1001]\n");
    assert!(
        !env.plan_is_empty().await,
        "without import, the plan would set bob's mark again"
    );

    assert_eq!(env.import(false).await, exit::OK);
    assert_eq!(env.writes(), writes, "import never sends a write call");
    assert_eq!(env.recorded(), pairs(&[("alice", 1000), ("bob", 1001)]));
    assert!(env.plan_is_empty().await, "the next plan has nothing to do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_mark_500_of_unknown_age_is_renewed_by_the_next_apply() {
    let env = Env::start(&["host"]).await;
    env.emu.set_marks_as_other(G, &["host"], &[500]).unwrap();
    env.age_listing();
    env.desire("      host: [500]\n");
    assert_eq!(env.import(false).await, exit::OK);
    assert_eq!(env.writes(), 0);
    assert_eq!(env.recorded(), pairs(&[("host", 500)]));
    assert!(
        !env.plan_is_empty().await,
        "a mark 500 of unknown age is renewed at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refresh_heals_a_member_who_went_offline_and_came_back() {
    let env = Env::start(&["alice"]).await;
    env.desire("      alice: [1000]\n");
    assert_eq!(env.apply_a_minute_ago().await, exit::OK);
    // Offline drops the mark; back online, nobody told marksync.
    within(env.emu.set_offline(G, &["alice"])).await.unwrap();
    within(env.emu.set_online(G, &["alice"])).await.unwrap();
    env.age_listing();
    assert!(!env.emu.marks_of(G).contains_key("alice"));
    assert!(
        env.plan_is_empty().await,
        "the recorded state cannot see it"
    );

    // plan --refresh --detailed-exitcode sees it (run on a thread of its own: it has a runtime).
    let path = env.config.path.clone();
    let code = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            cmd::plan(
                &path,
                &PlanOptions {
                    detailed_exitcode: true,
                    refresh: true,
                    ..PlanOptions::default()
                },
            )
        })
        .join()
        .unwrap()
    });
    assert_eq!(within(code).await.unwrap().unwrap(), exit::CHANGES);

    assert_eq!(env.apply(true).await, exit::OK);
    assert_eq!(env.emu.marks_of(G).get("alice"), Some(&vec![1000]));
    assert!(env.plan_is_empty().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refresh_saves_a_refreshed_state_even_with_no_call() {
    let env = Env::start(&["alice", "bob"]).await;
    env.desire("      alice: [1000]\n");
    assert_eq!(env.apply(false).await, exit::OK);
    env.emu.set_marks_as_other(G, &["bob"], &[1001]).unwrap();
    env.age_listing();
    env.desire("      alice: [1000]\n      bob: [1001]\n");
    let writes = env.writes();
    assert_eq!(env.apply(true).await, exit::OK);
    assert_eq!(env.writes(), writes, "adopting takes no call");
    assert_eq!(env.recorded(), pairs(&[("alice", 1000), ("bob", 1001)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_members_refusal_is_an_error_naming_the_switch_and_writes_nothing() {
    let env = Env::start(&["alice"]).await;
    env.desire("      alice: [1000]\n");
    env.emu
        .inject_fault(marksync::emulator::Fault {
            path: Some("get_members".into()),
            ..marksync::emulator::Fault::always(marksync::emulator::FaultKind::ErrorCode {
                code: 10007,
            })
        })
        .unwrap();
    let err = within(cmd::import_with(
        &env.config,
        &ImportOptions::default(),
        Arc::new(SystemClock),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), exit::ERROR);
    let text = err.to_string();
    assert!(
        text.contains("list of online audio-video group members"),
        "{text}"
    );
    assert!(!env.state_path().exists(), "nothing recorded");
    let opts = ApplyOptions {
        refresh: true,
        ..ApplyOptions::default()
    };
    let err = within(cmd::apply_with(&env.config, &opts, Arc::new(SystemClock)))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), exit::ERROR);
    assert_eq!(env.writes(), 0, "no write after a failed refresh");
}

/// Runs the binary with `args` (bounded); returns (exit code, stdout, stderr).
async fn marksync(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = common::cli::marksync_command();
    cmd.arg("-c").arg(config).args(args);
    let out = tokio::task::spawn_blocking(move || common::cli::run_bounded(&mut cmd, ""))
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_refresh_shows_drift_in_text_and_json_and_the_plain_plan_hints_at_it() {
    let env = Env::start(&["alice", "bob"]).await;
    env.desire("      alice: [1000]\n");
    assert_eq!(env.apply_a_minute_ago().await, exit::OK);
    within(env.emu.set_offline(G, &["alice"])).await.unwrap();
    within(env.emu.set_online(G, &["alice"])).await.unwrap();
    // Another tool gives bob a mark this group manages (marks nobody here manages are not read).
    env.emu.set_marks_as_other(G, &["bob"], &[1000]).unwrap();
    env.age_listing();
    let config = env.config.path.clone();

    let (code, out, _) = marksync(&config, &["plan", "--detailed-exitcode"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("No changes") && out.contains("--refresh"),
        "{out}"
    );

    let (code, out, err) =
        marksync(&config, &["-v", "plan", "--refresh", "--detailed-exitcode"]).await;
    assert_eq!(code, 2, "{out}{err}");
    let drift_at = out.find("Drift: 2 marks to report").expect(&out);
    let call_at = out.find("+ alice").expect(&out);
    assert!(
        drift_at < call_at,
        "the drift comes before the calls:\n{out}"
    );
    assert!(out.contains("lost       alice  1000"), "{out}");
    assert!(out.contains("unmanaged  bob    1000"), "{out}");

    let (code, out, err) = marksync(&config, &["plan", "--refresh", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["summary"]["drift"]["lost"], 1);
    assert_eq!(v["summary"]["drift"]["unmanaged"], 1);
    assert_eq!(v["summary"]["set"], 1);
    let kinds: Vec<&str> = v["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["lost", "unmanaged"]);
    assert_eq!(
        env.writes(),
        1,
        "plan --refresh writes nothing (only the first apply did)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_cannot_be_read_is_a_warning_and_keeps_its_recorded_marks() {
    let env = Env::start(&["alice"]).await;
    env.desire("      alice: [1000]\n");
    assert_eq!(env.apply_a_minute_ago().await, exit::OK);
    // Every read of the group fails (after retries) with a server error.
    env.emu
        .inject_fault(marksync::emulator::Fault {
            path: Some("get_members".into()),
            ..marksync::emulator::Fault::always(marksync::emulator::FaultKind::HttpStatus {
                status: 500,
            })
        })
        .unwrap();
    env.age_listing();
    let config = env.config.path.clone();
    let (code, out, err) = marksync(&config, &["plan", "--refresh", "--detailed-exitcode"]).await;
    assert_eq!(code, 0, "not read is not absent: nothing to do\n{out}{err}");
    assert!(
        err.contains(&format!("warning: group {G} could not be read")),
        "{err}"
    );
    let (code, _, err) = marksync(&config, &["apply", "--refresh"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        env.recorded(),
        pairs(&[("alice", 1000)]),
        "kept as recorded"
    );
}

/// SPEC 10: a listing cut short (a page that ends early, which reads exactly like the real end)
/// never stops a clear. Ten rounds of `apply --refresh`, each changing which of 24 members hold
/// which of 4 marks, with 20% of `get_members` pages cut short: after every round the service
/// holds exactly the desired marks (no stray mark nobody manages, none missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refresh_with_short_pages_leaves_no_stray_mark() {
    const ROUNDS: i64 = 10;
    const MARKS: [u32; 4] = [1000, 1001, 1002, 1003];
    let names: Vec<String> = (0..24).map(|i| format!("m{i:02}")).collect();
    let online: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = EmulatorConfig {
        members_page_size: 4,
        ..EmulatorConfig::new(APP, KEY, ADMIN)
    };
    let env = Env::start_with(cfg, &online).await;
    env.emu
        .inject_fault(Fault {
            rate: 0.2,
            ..Fault::always(FaultKind::ShortPage)
        })
        .unwrap();
    // Each round's confirmations are 100 s older than the next round's listing, so that every
    // absence is judged (nothing is "not checked" for being recent).
    let base = cmd::wall_clock_now() - 100 * (ROUNDS + 1);
    let mut seed: u64 = 14;
    for round in 0..ROUNDS {
        let mut want: Vec<(String, u32)> = Vec::new();
        let mut text = String::new();
        for name in &names {
            let marks: Vec<u32> = MARKS
                .iter()
                .copied()
                .filter(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33).is_multiple_of(3)
                })
                .collect();
            if marks.is_empty() {
                continue;
            }
            let list: Vec<String> = marks.iter().map(u32::to_string).collect();
            text.push_str(&format!("      {name}: [{}]\n", list.join(", ")));
            want.extend(marks.iter().map(|m| (name.clone(), *m)));
        }
        if text.is_empty() {
            text.push_str("      m00: [1000]\n");
            want.push(("m00".into(), 1000));
        }
        env.desire(&text);
        env.age_listing();
        let clock = ManualClock::new(base + 100 * round);
        let opts = ApplyOptions {
            refresh: true,
            allow_mass_clear: true,
            ..ApplyOptions::default()
        };
        let code = within(cmd::apply_with(&env.config, &opts, Arc::new(clock)))
            .await
            .unwrap();
        assert_eq!(code, exit::OK, "round {round}");
        let mut live: Vec<(String, u32)> = env
            .emu
            .marks_of(G)
            .into_iter()
            .flat_map(|(a, ms)| ms.into_iter().map(move |m| (a.clone(), m)))
            .collect();
        live.sort();
        want.sort();
        let stray: Vec<_> = live.iter().filter(|x| !want.contains(x)).collect();
        let missing: Vec<_> = want.iter().filter(|x| !live.contains(x)).collect();
        assert!(
            stray.is_empty() && missing.is_empty(),
            "round {round}: stray {stray:?}, missing {missing:?}"
        );
    }
    let hits = env.emu.stats(false);
    assert!(
        hits.calls_by_path
            .iter()
            .any(|(p, n)| p.contains("get_members") && *n > 50),
        "the rounds read many pages: {hits:?}"
    );
}

/// SPEC 10: live holders whose names marksync cannot hold as an account (empty, a space inside,
/// over 32 bytes) are reported with their count, in text and JSON, by `plan --refresh` and
/// `import`; none is silently dropped, and none is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_holders_marksync_cannot_name_are_reported_with_their_count() {
    let long = "x".repeat(42);
    let odd = ["", "a b", long.as_str(), "tab\there"];
    let mut online = vec!["alice", "bob", "carol"];
    online.extend(odd);
    let env = Env::start(&online).await;
    env.desire("      alice: [1000]\n");
    assert_eq!(env.apply_a_minute_ago().await, exit::OK);
    // Another tool gives the mark this group manages to two nameable and four unnameable holders.
    let mut holders = vec!["bob", "carol"];
    holders.extend(odd);
    env.emu.set_marks_as_other(G, &holders, &[1000]).unwrap();
    env.age_listing();
    let config = env.config.path.clone();

    let (code, out, err) = marksync(&config, &["plan", "--refresh", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["summary"]["drift"]["unmanaged"], 2, "{v}");
    assert_eq!(v["summary"]["unnameable_holders"], 4, "{v}");
    let mut names: Vec<&str> = v["unnameable_holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no unnameable_holders: {v}"))
        .iter()
        .map(|h| {
            assert_eq!(
                (h["group"].as_str(), h["mark"].as_u64()),
                (Some(G), Some(1000))
            );
            h["holder"].as_str().unwrap()
        })
        .collect();
    names.sort();
    let mut want = odd.to_vec();
    want.sort();
    assert_eq!(names, want);

    let (code, out, err) = marksync(&config, &["-v", "plan", "--refresh"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 live holders with names marksync cannot hold as an account"),
        "{out}"
    );
    assert!(out.contains("\"a b\"") && out.contains("\"\""), "{out}");

    let (code, out, err) = marksync(&config, &["import", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 unmanaged left alone")
            && out.contains("4 live holders with names marksync cannot hold as an account"),
        "{out}"
    );
    assert_eq!(
        env.writes(),
        1,
        "nothing is touched (only the first apply wrote)"
    );
    let live = env.emu.marks_of(G);
    assert!(
        odd.iter().all(|h| live.get(*h) == Some(&vec![1000])),
        "{live:?}"
    );
}
