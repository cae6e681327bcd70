//! Saved plans (issue 14): a hand-edited plan whose ID was recomputed with marksync's own
//! function is refused with nothing sent and the state unchanged; a renewal falling due between
//! `plan --out` and `apply FILE` is no reason to refuse; `plan --out` writes only new or regular
//! files that marksync does not read.
//!
//! The tamper tests run the real binary against a standalone emulator (its call counter and
//! live marks seen from outside); the renewal test drives the clock through the library. Every
//! run is bounded.

use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;
use std::sync::Arc;

use marksync::clock::{Clock, ManualClock};
use marksync::cmd::{self, ApplyOptions};
use marksync::config;
use marksync::emulator::{Emulator, EmulatorConfig};
use marksync::saved_plan::{Provenance, SavedCommand, SavedMember, SavedPlan, desired_digest};
use marksync::state;
use serde_json::Value;

mod common;
use common::cli::{EMBEDDED_CONFIG, Output, embedded_dir, marksync};
use common::{ADMIN, APP, KEY, Marks, StandaloneEmulator, marks, yaml};

const GROUP: &str = "@TGS#2PHYS101";

/// What was applied first.
fn before() -> Marks {
    marks(&[
        (GROUP, "ana", &[1000]),
        (GROUP, "ben", &[1001]),
        (GROUP, "cai", &[1002]),
    ])
}

/// What the reviewed plan goes to: one clear (cai), sets for ben and dan.
fn after() -> Marks {
    marks(&[
        (GROUP, "ana", &[1000]),
        (GROUP, "ben", &[1001, 1003]),
        (GROUP, "dan", &[1002]),
    ])
}

/// A directory whose config calls the standalone emulator `emu`.
fn emulator_dir(emu: &StandaloneEmulator, desired: &Marks) -> tempfile::TempDir {
    let config = EMBEDDED_CONFIG.replace(
        "endpoint: embedded",
        &format!("endpoint: {}", emu.endpoint()),
    );
    embedded_dir(&config, &yaml(desired))
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_default()
}

fn ok(out: &Output) {
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// `saved` edited by `edit`, its plan ID recomputed with the production function (what anyone
/// editing the file by hand can do), written to `path`.
fn tamper(saved: &SavedPlan, path: &Path, edit: impl FnOnce(&mut SavedPlan)) {
    let mut edited = saved.clone();
    edit(&mut edited);
    assert_ne!(&edited, saved, "the edit changes the file");
    edited.plan_id = edited.content_id();
    edited.write(path).unwrap();
}

/// One hand edit of a saved plan.
type Edit = Box<dyn FnOnce(&mut SavedPlan)>;

/// Applies `file` and checks that it was refused (exit 1, saying what differs and what to do)
/// with no call sent, the live marks and the state unchanged.
fn assert_refused(emu: &StandaloneEmulator, dir: &Path, file: &str, what_differs: &str) {
    let (calls, live, state) = (emu.calls(), emu.marks(), read(dir, "state.json"));
    let out = marksync(dir, &["apply", file]);
    assert_eq!(out.code, 1, "{file}: {}{}", out.stdout, out.stderr);
    for needle in [
        "is not what planning again from the state and the desired files gives",
        what_differs,
        "\nWhat to do: run `marksync plan --out FILE` again, review the new plan",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{file}: {needle}: {}",
            out.stderr
        );
    }
    assert_eq!(emu.calls(), calls, "{file}: no call sent");
    assert_eq!(emu.marks(), live, "{file}: the service unchanged");
    assert_eq!(
        read(dir, "state.json"),
        state,
        "{file}: the state unchanged"
    );
}

#[test]
fn a_hand_edited_plan_with_its_id_recomputed_is_refused_with_nothing_sent() {
    let emu = StandaloneEmulator::start();
    let dir = emulator_dir(&emu, &before());
    let dir = dir.path();
    ok(&marksync(dir, &["apply"]));
    assert_eq!(emu.marks(), before());
    std::fs::write(dir.join("marks/physics.yaml"), yaml(&after())).unwrap();
    ok(&marksync(dir, &["plan", "--out", "plan.json"]));
    let saved = SavedPlan::read(&dir.join("plan.json")).unwrap();
    assert_eq!(saved.calls.len(), 2, "{saved:?}");
    assert_eq!(saved.calls[0].command, SavedCommand::Clear);

    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "changed-mark.json",
            Box::new(|p| p.calls[1].members[0].marks = [common::m(1004)].into_iter().collect()),
            "call 2 (set @TGS#2PHYS101, 2 members): the file has ben [1004] where planning again gives ben [1003]",
        ),
        (
            "set-to-clear.json",
            Box::new(|p| p.calls[1].command = SavedCommand::Clear),
            "the file's call 2 (clear @TGS#2PHYS101, 2 members) is call 2 (set @TGS#2PHYS101, 2 members)",
        ),
        (
            "undeclared-group.json",
            Box::new(|p| {
                let mut call = p.calls[0].clone();
                call.group = common::g("@TGS#nobody");
                call.members = vec![SavedMember {
                    account: common::a("eve"),
                    marks: [common::m(1000)].into_iter().collect(),
                }];
                p.calls.push(call);
            }),
            "the file's call 3 (clear @TGS#nobody, 1 member) is not planned again",
        ),
        (
            "added-member.json",
            Box::new(|p| {
                p.calls[1].members.push(SavedMember {
                    account: common::a("zed"),
                    marks: [common::m(1000)].into_iter().collect(),
                })
            }),
            "the file has zed [1000] where planning again gives no member",
        ),
        (
            "removed-call.json",
            Box::new(|p| {
                p.calls.remove(0);
            }),
            "call 1 (set @TGS#2PHYS101, 2 members) is call 1 (clear @TGS#2PHYS101, 1 member)",
        ),
    ];
    for (file, edit, what_differs) in cases {
        tamper(&saved, &dir.join(file), edit);
        assert_refused(&emu, dir, file, what_differs);
    }

    // The reviewed file itself still applies, and does exactly what it says.
    let calls = emu.calls();
    ok(&marksync(dir, &["apply", "plan.json"]));
    assert_eq!(emu.calls(), calls + 2);
    assert_eq!(emu.marks(), after());
}

/// Every value in the file: JSON paths to its leaves.
fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => map.iter().for_each(|(k, c)| {
            path.push(k.clone());
            leaves(c, path, out);
            path.pop();
        }),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, c)| {
            path.push(i.to_string());
            leaves(c, path, out);
            path.pop();
        }),
        _ => out.push(path.clone()),
    }
}

fn at<'v>(v: &'v mut Value, path: &[String]) -> &'v mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

/// The crash suite's idea for tampering: random single edits of what is executed, shown or
/// counted, each with its ID recomputed, applied by the real binary. Each one is either refused
/// (nothing sent, state and service unchanged) or, if it changed nothing that matters, does
/// exactly what the reviewed plan does. `MARKSYNC_TAMPER_ROUNDS` and `MARKSYNC_SEED` vary it.
#[test]
fn random_single_edits_with_recomputed_ids_never_change_the_state_or_the_service() {
    let rounds: usize = common::flag("MARKSYNC_TAMPER_ROUNDS").unwrap_or(12);
    let mut seed: u64 = common::flag("MARKSYNC_SEED").unwrap_or(0x5eed_0014);
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n
    };
    let emu = StandaloneEmulator::start();
    let dir = emulator_dir(&emu, &before());
    let dir = dir.path();
    ok(&marksync(dir, &["apply"]));
    std::fs::write(dir.join("marks/physics.yaml"), yaml(&after())).unwrap();
    ok(&marksync(dir, &["plan", "--out", "plan.json"]));
    let original: Value = serde_json::from_str(&read(dir, "plan.json")).unwrap();
    let mut paths = Vec::new();
    leaves(&original, &mut Vec::new(), &mut paths);
    paths.retain(|p| {
        ["calls", "changes", "summary", "managed", "reassert"].contains(&p[0].as_str())
    });
    let values = [
        serde_json::json!(1000),
        serde_json::json!(1003),
        serde_json::json!(1004),
        serde_json::json!(500),
        serde_json::json!("set"),
        serde_json::json!("clear"),
        serde_json::json!("renew"),
        serde_json::json!("@TGS#nobody"),
        serde_json::json!("cai"),
        serde_json::json!("eve"),
        serde_json::json!(0),
        serde_json::json!(3),
    ];
    let mut refused = 0;
    for round in 0..rounds {
        let path = &paths[next(paths.len())];
        let mut value = original.clone();
        *at(&mut value, path) = values[next(values.len())].clone();
        let Ok(mut edited) = serde_json::from_value::<SavedPlan>(value) else {
            continue; // not a saved plan's shape at all
        };
        edited.plan_id = edited.content_id();
        let file = format!("edit-{round}.json");
        edited.write(&dir.join(&file)).unwrap();
        let (calls, state) = (emu.calls(), read(dir, "state.json"));
        let out = marksync(dir, &["apply", &file]);
        if out.code == 0 {
            // Accepted: it must have done exactly what the reviewed plan does.
            assert_eq!(emu.marks(), after(), "edit at {path:?}: {}", out.stdout);
            assert_eq!(emu.calls(), calls + 2, "edit at {path:?}");
            return;
        }
        assert_eq!(
            out.code, 1,
            "edit at {path:?}: {}{}",
            out.stdout, out.stderr
        );
        assert_eq!(emu.calls(), calls, "edit at {path:?}: nothing sent");
        assert_eq!(emu.marks(), before(), "edit at {path:?}");
        assert_eq!(read(dir, "state.json"), state, "edit at {path:?}");
        refused += 1;
    }
    assert!(refused > 0, "no edit was tried");
}

/// A plan made with `--refresh` carries what the refresh found; `apply FILE` plans again from
/// the state with those changes and accepts it: the re-planning is no reason to refuse a real
/// refreshed plan.
#[test]
fn a_refreshed_saved_plan_is_applied_as_planned() {
    let emu = StandaloneEmulator::start();
    let dir = emulator_dir(&emu, &before());
    let dir = dir.path();
    ok(&marksync(dir, &["apply"]));
    // Confirmed an hour ago (a refresh does not judge marks confirmed in the last 40 s).
    let path = dir.join("state.json");
    let mut st = state::load(&path, APP).unwrap();
    let recorded: Vec<_> = st.groups[&common::g(GROUP)]
        .iter()
        .map(|(a, c)| (a.clone(), c.marks()))
        .collect();
    for (account, marks) in recorded {
        st.confirm(
            &common::g(GROUP),
            &account,
            marks.iter(),
            common::unix_now() - 3600,
        );
    }
    state::save(&path, &mut st).unwrap();
    // Another tool clears ana's mark; the listing shows it once its cache has expired.
    emu.control(
        "POST",
        "/emulator/marks/clear",
        Some(&serde_json::json!({"group_id": GROUP, "accounts": ["ana"], "marks": [1000]})),
    );
    emu.control(
        "POST",
        "/emulator/clock/advance",
        Some(&serde_json::json!({"seconds": 41})),
    );
    ok(&marksync(dir, &["plan", "--refresh", "--out", "plan.json"]));
    let saved = SavedPlan::read(&dir.join("plan.json")).unwrap();
    let refreshed = saved.refreshed.clone().unwrap();
    assert_eq!(refreshed.forget.len(), 1, "{refreshed:?}");
    assert_eq!(saved.calls.len(), 1, "{saved:?}");
    let out = marksync(dir, &["apply", "plan.json"]);
    ok(&out);
    assert_eq!(emu.marks(), before(), "{}", out.stdout);
}

#[tokio::test]
async fn a_renewal_falling_due_between_plan_and_apply_is_no_reason_to_refuse() {
    let mut cfg = EmulatorConfig::new(APP, KEY, ADMIN);
    cfg.auto_create_groups = true;
    cfg.members_online_by_default = true;
    let emu = Emulator::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("secret.key"), format!("{KEY}\n")).unwrap();
    std::fs::create_dir_all(dir.join("marks")).unwrap();
    let text = format!(
        "sdkappid: {APP}\nidentifier: {ADMIN}\nsecret_key_file: secret.key\nendpoint: {}\n\
         desired: marks/\nstate: state.json\nrenew_margin: 12h\n",
        emu.base_url()
    );
    let config = config::parse(&dir.join("marksync.yaml"), &text).unwrap();
    let write = |m: &Marks| std::fs::write(dir.join("marks/a.yaml"), yaml(m)).unwrap();
    let t0 = 1_764_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    // The emulator's virtual clock (UserSig expiry, mark 500) moves with the test's.
    emu.set_clock(t0);
    write(&marks(&[(GROUP, "host", &[500])]));
    let code = cmd::apply_with(&config, &ApplyOptions::default(), clock.clone()).await;
    assert_eq!(code.unwrap(), 0);

    // Planned 10 s before mark 500 is due (72 h - 12 h after it was confirmed)...
    write(&marks(&[
        (GROUP, "host", &[500]),
        (GROUP, "guest", &[1000]),
    ]));
    clock.set(t0 + 60 * 3600 - 10);
    emu.set_clock(t0 + 60 * 3600 - 10);
    let now = clock.now();
    let (st, plan) = common::plan_at(&config, false, now).await;
    assert_eq!(plan.summary.renew, 0);
    let provenance = Provenance {
        created_at: now,
        sdkappid: APP,
        state_serial: st.serial,
        desired_digest: desired_digest(&config.desired).unwrap(),
        reassert: false,
    };
    let path = dir.join("plan.json");
    SavedPlan::new(&plan, provenance, None)
        .write(&path)
        .unwrap();

    // ... applied 20 s later, when it is due: the saved plan is applied as reviewed.
    clock.advance(20);
    emu.advance_clock(20);
    let calls = emu.call_count();
    let opts = ApplyOptions {
        saved: Some(path),
        ..ApplyOptions::default()
    };
    let code = cmd::apply_with(&config, &opts, clock.clone()).await;
    assert_eq!(code.unwrap(), 0);
    assert_eq!(
        emu.call_count(),
        calls + 1,
        "the saved set, not the renewal"
    );
    let st = state::load(common::state_file(&config), APP).unwrap();
    assert!(
        st.confirmed(&common::g(GROUP), &common::a("guest"))
            .is_some(),
        "the saved call was applied"
    );
    // The renewal is the next plan's business.
    let (_, next) = common::plan_at(&config, false, clock.now()).await;
    assert_eq!(next.summary.renew, 1);
}

// ---------------------------------------------------------------------------------------------
// `plan --out PATH`

/// `plan --out target` in `dir`: refused with exit 1 and a message naming `why`.
fn refused_out(dir: &Path, target: &str, why: &str) {
    let out = marksync(dir, &["plan", "--out", target]);
    assert_eq!(out.code, 1, "{target}: {}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("refusing to write the saved plan to {target}")),
        "{target}: {}",
        out.stderr
    );
    assert!(out.stderr.contains(why), "{target}: {why}: {}", out.stderr);
}

#[test]
fn plan_out_refuses_devices_fifos_directories_links_and_the_files_marksync_reads() {
    let dir = embedded_dir(EMBEDDED_CONFIG, &yaml(&before()));
    let dir = dir.path();
    ok(&marksync(dir, &["apply"]));
    ok(&marksync(dir, &["state", "rm", GROUP, "ana"])); // a second save: state.json.bak
    let fifo = dir.join("plan.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir(dir.join("plans")).unwrap();
    std::fs::write(dir.join("elsewhere.json"), "keep me").unwrap();
    std::os::unix::fs::symlink(dir.join("elsewhere.json"), dir.join("link.json")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.json"), dir.join("dangling.json")).unwrap();
    std::os::unix::fs::symlink(dir.join("marks"), dir.join("marks-link")).unwrap();
    let files = [
        "marksync.yaml",
        "demo-secret.key",
        "state.json",
        "state.json.bak",
        "marks/physics.yaml",
        "elsewhere.json",
    ];
    let contents: Vec<String> = files.iter().map(|f| read(dir, f)).collect();

    refused_out(
        dir,
        "plan.fifo",
        "it is a FIFO (named pipe), not a regular file",
    );
    refused_out(dir, "/dev/null", "it is a character device");
    refused_out(dir, "plans", "it is a directory");
    refused_out(dir, "link.json", "a symbolic link");
    refused_out(dir, "dangling.json", "a symbolic link");
    refused_out(dir, "marksync.yaml", "it is the config file");
    refused_out(dir, "demo-secret.key", "it is the secret key file");
    refused_out(dir, "state.json", "it is the state file");
    refused_out(dir, "state.json.bak", "it is the state backup");
    refused_out(dir, "state.json.intents", "it is the state intents sidecar");
    refused_out(dir, "state.json.lock", "it is the state lock");
    refused_out(dir, "marks/physics.yaml", "inside the desired files");
    refused_out(dir, "marks/new-plan.json", "inside the desired files");
    refused_out(dir, "marks-link/physics.yaml", "inside the desired files");

    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device(),
        "/dev/null is still a device"
    );
    assert!(dir.join("plans").is_dir());
    assert!(
        std::fs::symlink_metadata(dir.join("link.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!dir.join("gone.json").exists());
    assert!(!dir.join("marks/new-plan.json").exists());
    for (f, before) in files.iter().zip(&contents) {
        assert_eq!(&read(dir, f), before, "{f} unchanged");
    }
    // Nothing half-written was left behind either.
    let stray: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("marksync-plan"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn plan_out_writes_a_new_file_and_replaces_a_regular_one() {
    let dir = embedded_dir(EMBEDDED_CONFIG, &yaml(&before()));
    let dir = dir.path();
    ok(&marksync(dir, &["plan", "--out", "new.json"]));
    assert!(SavedPlan::read(&dir.join("new.json")).is_ok());
    std::fs::write(dir.join("old.json"), "an old plan").unwrap();
    ok(&marksync(dir, &["plan", "--out", "old.json"]));
    assert!(SavedPlan::read(&dir.join("old.json")).is_ok());
}

// ---------------------------------------------------------------------------------------------
// The mass-clear guard before merge (issue 16, SPEC 12)

/// Twelve members with a mark each, applied; then the desired file keeps one: eleven clears of
/// twelve managed marks, more than the default guard's 10 and 25%.
fn mass_clear_dir(emu: &StandaloneEmulator) -> tempfile::TempDir {
    let rows: Vec<(String, u32)> = (0..12).map(|i| (format!("s{i:02}"), 1000)).collect();
    let all: Vec<(&str, &str, &[u32])> = rows
        .iter()
        .map(|(a, _)| (GROUP, a.as_str(), &[1000u32][..]))
        .collect();
    let dir = emulator_dir(emu, &marks(&all));
    ok(&marksync(dir.path(), &["apply"]));
    std::fs::write(
        dir.path().join("marks/physics.yaml"),
        yaml(&marks(&[(GROUP, "s00", &[1000])])),
    )
    .unwrap();
    dir
}

#[test]
fn plan_shows_the_guard_refusal_before_merge_and_the_reviewed_override_goes_through_apply_file() {
    let emu = StandaloneEmulator::start();
    let dir = mass_clear_dir(&emu);
    let dir = dir.path();
    let live = emu.marks();

    // The pull request: exit 3, the verdict in JSON and in the comment.
    let out = marksync(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let out = marksync(dir, &["plan", "--json", "--detailed-exitcode"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json["guard"],
        serde_json::json!({"refuses": true, "clears": 11, "managed": 12,
            "max_clear_fraction": 0.25, "min_clears": 10, "overridden": false,
            "verdict": "refuses"})
    );
    let out = marksync(dir, &["plan", "--markdown", "--detailed-exitcode"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("<!-- marksync-plan -->\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("**Mass-clear guard: would refuse.**"),
        "{}",
        out.stdout
    );
    // One format at a time: a usage error (exit 1), never a mixed output.
    let out = marksync(dir, &["plan", "--markdown", "--json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);

    // The reviewed override: exit 2, `overridden`, recorded in the saved plan.
    let out = marksync(
        dir,
        &[
            "plan",
            "--json",
            "--detailed-exitcode",
            "--allow-mass-clear",
            "--out",
            "reviewed.json",
        ],
    );
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["guard"]["verdict"], "overridden");
    assert_eq!(json["guard"]["refuses"], false);
    assert_eq!(json["guard"]["overridden"], true);
    assert!(
        out.stderr.contains("reviewed.json records the override"),
        "{}",
        out.stderr
    );
    assert!(
        SavedPlan::read(&dir.join("reviewed.json"))
            .unwrap()
            .allow_mass_clear
    );
    ok(&marksync(dir, &["plan", "--out", "plain.json"]));
    let plain = read(dir, "plain.json");
    assert!(!plain.contains("allow_mass_clear"), "{plain}");

    // A plan saved without the override is refused at apply, nothing sent.
    let calls = emu.calls();
    let out = marksync(dir, &["apply", "plain.json"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("--allow-mass-clear"), "{}", out.stderr);
    // The override written into that file by hand is an edit like any other: refused.
    let edited = plain.replacen(
        "\"reassert\"",
        "\"allow_mass_clear\": true,\n  \"reassert\"",
        1,
    );
    let edited = if edited == plain {
        plain.replacen(
            "\"refreshed\"",
            "\"allow_mass_clear\": true,\n  \"refreshed\"",
            1,
        )
    } else {
        edited
    };
    assert_ne!(edited, plain);
    std::fs::write(dir.join("edited.json"), edited).unwrap();
    let out = marksync(dir, &["apply", "edited.json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("was modified after it was written"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.calls(), calls, "nothing sent");
    assert_eq!(emu.marks(), live, "the service unchanged");

    // The reviewed plan is applied: the override is honoured for that plan.
    let out = marksync(dir, &["apply", "reviewed.json"]);
    ok(&out);
    assert!(
        out.stderr
            .contains("reviewed.json carries the reviewed override of the mass-clear guard"),
        "{}",
        out.stderr
    );
    assert_eq!(
        emu.marks(),
        marks(&[(GROUP, "s00", &[1000])]),
        "{}",
        out.stdout
    );
}

/// The plan section of a human output: from the first group heading to the summary line.
fn plan_section(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("group "))
        .unwrap_or_else(|| panic!("no plan in:\n{stdout}"));
    let end = lines
        .iter()
        .position(|l| l.starts_with("Plan: "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    lines[start..=end].join("\n")
}

/// Issue 16, "one rendering": `plan --refresh --out`, `apply --dry-run FILE` and `apply FILE`
/// show the same plan, member for member (a refreshed plan's forgotten marks are not shown as
/// still held by one of them).
#[test]
fn plan_apply_dry_run_file_and_apply_file_render_the_same_plan() {
    let emu = StandaloneEmulator::start();
    let dir = emulator_dir(&emu, &before());
    let dir = dir.path();
    ok(&marksync(dir, &["apply"]));
    // Confirmed an hour ago (a refresh does not judge marks confirmed in the last 40 s).
    let path = dir.join("state.json");
    let mut st = state::load(&path, APP).unwrap();
    let recorded: Vec<_> = st.groups[&common::g(GROUP)]
        .iter()
        .map(|(a, c)| (a.clone(), c.marks()))
        .collect();
    for (account, marks) in recorded {
        st.confirm(
            &common::g(GROUP),
            &account,
            marks.iter(),
            common::unix_now() - 3600,
        );
    }
    state::save(&path, &mut st).unwrap();
    std::fs::write(dir.join("marks/physics.yaml"), yaml(&after())).unwrap();
    // Drift of both kinds that forget a recorded mark: another tool clears ana's (lost), ben
    // goes offline (offline).
    emu.control(
        "POST",
        "/emulator/marks/clear",
        Some(&serde_json::json!({"group_id": GROUP, "accounts": ["ana"], "marks": [1000]})),
    );
    emu.control(
        "POST",
        "/emulator/members",
        Some(&serde_json::json!({"group_id": GROUP, "accounts": ["ben"], "state": "offline"})),
    );
    emu.control(
        "POST",
        "/emulator/clock/advance",
        Some(&serde_json::json!({"seconds": 41})),
    );
    let planned = marksync(dir, &["plan", "--refresh", "--out", "plan.json"]);
    ok(&planned);
    let planned = plan_section(&planned.stdout);
    assert!(planned.contains("+ ana"), "{planned}");
    assert!(planned.contains("+ ben"), "{planned}");
    let dry = marksync(dir, &["apply", "--dry-run", "plan.json"]);
    ok(&dry);
    assert_eq!(plan_section(&dry.stdout), planned, "apply --dry-run FILE");
    let applied = marksync(dir, &["apply", "plan.json"]);
    ok(&applied);
    assert_eq!(plan_section(&applied.stdout), planned, "apply FILE");
}
