use proptest::prelude::*;

use super::*;
use crate::desired::DesiredState;
use crate::model::test_ids::{a, g, m};
use crate::plan::{self, Policy};
use crate::state::State;

const NOW: UnixTime = 1_764_000_000;
const DAY: i64 = 24 * 3600;
const APP: u64 = 1_400_000_000;

/// A plan with a clear, a set and a renewal in one group.
fn sample_plan() -> Plan {
    let mut desired = DesiredState::default();
    let group = desired.groups.entry(g("@TGS#a")).or_default();
    group
        .members
        .insert(a("teacher10"), [m(1000)].into_iter().collect());
    group
        .members
        .insert(a("host"), [m(500)].into_iter().collect());
    let mut state = State::new(APP);
    state.confirm(&g("@TGS#a"), &a("student9"), [m(1001)], NOW - 3600);
    state.confirm(&g("@TGS#a"), &a("host"), [m(500)], NOW - 61 * 3600);
    plan::plan(&desired, &state, NOW, &Policy::default())
}

fn provenance() -> Provenance {
    Provenance {
        created_at: NOW,
        sdkappid: APP,
        state_serial: 7,
        desired_digest: digest_files([("a.yaml", b"groups: {}\n".as_slice())]),
        reassert: false,
    }
}

fn sample() -> SavedPlan {
    SavedPlan::new(&sample_plan(), provenance(), None)
}

fn check(saved: &SavedPlan) -> Result<(), Stale> {
    let p = provenance();
    saved.check(APP, p.state_serial, &p.desired_digest, None, NOW + 60, DAY)
}

#[test]
fn a_fresh_plan_for_the_same_app_state_and_files_passes() {
    assert_eq!(check(&sample()), Ok(()));
}

#[test]
fn another_app_is_refused_first() {
    let p = provenance();
    let err = sample()
        .check(APP + 1, 99, "sha256:other", None, NOW, DAY)
        .unwrap_err();
    assert_eq!(
        err,
        Stale::OtherApp {
            planned: APP,
            current: APP + 1
        }
    );
    assert!(err.to_string().contains("marksync plan --out FILE"));
    let _ = p;
}

#[test]
fn a_changed_state_serial_is_refused_as_applied_or_changed() {
    let p = provenance();
    let err = sample()
        .check(APP, 8, &p.desired_digest, None, NOW, DAY)
        .unwrap_err();
    assert_eq!(
        err,
        Stale::StateChanged {
            planned: 7,
            current: 8
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("the state was saved since the plan was made: its serial moved from 7 to 8"),
        "{text}"
    );
    assert!(text.contains("marksync plan --out FILE"), "{text}");
}

#[test]
fn a_plan_recorded_as_last_applied_is_refused_as_already_applied() {
    let saved = sample();
    let p = provenance();
    let err = saved
        .check(APP, 8, &p.desired_digest, Some(&saved.plan_id), NOW, DAY)
        .unwrap_err();
    assert_eq!(err, Stale::AlreadyApplied);
    // Another plan's ID does not make this one "applied".
    let err = saved
        .check(APP, 8, &p.desired_digest, Some("0000"), NOW, DAY)
        .unwrap_err();
    assert!(matches!(err, Stale::StateChanged { .. }));
}

#[test]
fn changed_desired_files_are_refused() {
    let err = sample()
        .check(APP, 7, "sha256:different", None, NOW, DAY)
        .unwrap_err();
    assert_eq!(err, Stale::DesiredChanged);
    assert!(err.to_string().contains("desired files changed"));
}

#[test]
fn a_plan_older_than_the_max_age_is_refused_and_one_at_the_limit_is_not() {
    let p = provenance();
    let saved = sample();
    assert_eq!(
        saved.check(APP, 7, &p.desired_digest, None, NOW + DAY, DAY),
        Ok(())
    );
    let err = saved
        .check(APP, 7, &p.desired_digest, None, NOW + DAY + 1, DAY)
        .unwrap_err();
    assert_eq!(
        err,
        Stale::TooOld {
            age_secs: DAY + 1,
            max_age_secs: DAY
        }
    );
    assert!(
        err.to_string().contains("saved_plan_max_age (24h)"),
        "{err}"
    );
}

#[test]
fn a_plan_from_the_future_is_refused() {
    let p = provenance();
    let err = sample()
        .check(APP, 7, &p.desired_digest, None, NOW - 600, DAY)
        .unwrap_err();
    assert_eq!(err, Stale::FromTheFuture { ahead_secs: 600 });
}

#[test]
fn the_file_round_trips_to_the_same_plan() {
    let plan = sample_plan();
    let saved = SavedPlan::new(&plan, provenance(), None);
    let back = SavedPlan::from_bytes(Path::new("p.json"), &saved.to_bytes()).unwrap();
    assert_eq!(back, saved);
    assert_eq!(back.to_plan(), plan);
    assert!(!back.refresh);
    assert_eq!(back.refreshed_changes(), None);
}

#[test]
fn refresh_changes_are_kept() {
    let changes = StateChanges {
        forget: vec![(g("@TGS#a"), a("x"), m(1001))],
        adopt: vec![(g("@TGS#a"), a("y"), m(1000), NOW - 5)],
    };
    let saved = SavedPlan::new(&sample_plan(), provenance(), Some(&changes));
    let back = SavedPlan::from_bytes(Path::new("p.json"), &saved.to_bytes()).unwrap();
    assert!(back.refresh);
    assert_eq!(back.refreshed_changes(), Some(changes));
}

#[test]
fn the_file_holds_the_documented_fields_and_no_secret() {
    let saved = sample();
    let value: serde_json::Value = serde_json::from_slice(&saved.to_bytes()).unwrap();
    for field in [
        "format_version",
        "marksync_version",
        "created_at",
        "sdkappid",
        "state_serial",
        "desired_digest",
        "refresh",
        "refreshed",
        "calls",
        "changes",
        "summary",
        "managed",
        "plan_id",
    ] {
        assert!(value.get(field).is_some(), "missing {field}");
    }
    assert_eq!(value["format_version"], 1);
    assert_eq!(value["calls"][0]["command"], "clear");
    assert_eq!(value["summary"]["renew"], 1);
    let text = String::from_utf8(saved.to_bytes()).unwrap();
    for secret in ["usersig", "secret", "token", "key"] {
        assert!(!text.to_lowercase().contains(secret), "{secret} in {text}");
    }
}

#[test]
fn another_format_version_is_refused_as_such() {
    let mut value: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
    value["format_version"] = 2.into();
    let err = SavedPlan::from_bytes(Path::new("p.json"), value.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(err, SavedPlanError::Version { found: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("format version 2"));
}

#[test]
fn a_file_without_a_version_or_with_unknown_fields_is_corrupt() {
    let err = SavedPlan::from_bytes(Path::new("p.json"), b"{}").unwrap_err();
    assert!(err.to_string().contains("no format_version"), "{err}");
    let mut value: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
    value["secret_key"] = "x".into();
    let err = SavedPlan::from_bytes(Path::new("p.json"), value.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, SavedPlanError::Corrupt { .. }), "{err}");
    let err = SavedPlan::from_bytes(Path::new("p.json"), b"not json").unwrap_err();
    assert!(matches!(err, SavedPlanError::Corrupt { .. }), "{err}");
}

#[test]
fn an_invalid_mark_in_the_file_is_refused() {
    let text = String::from_utf8(sample().to_bytes()).unwrap();
    let bad = text.replacen("1001", "999", 1);
    let err = SavedPlan::from_bytes(Path::new("p.json"), bad.as_bytes()).unwrap_err();
    assert!(matches!(err, SavedPlanError::Corrupt { .. }), "{err}");
}

#[test]
fn a_hand_edited_plan_is_refused() {
    let mut value: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
    // Push the creation time forward to dodge the age check: the ID no longer matches.
    value["created_at"] = (NOW + DAY).into();
    let err = SavedPlan::from_bytes(Path::new("p.json"), value.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, SavedPlanError::Tampered { .. }), "{err}");
    assert!(
        err.to_string().contains("marksync plan --out FILE"),
        "{err}"
    );
}

#[test]
fn write_then_read_round_trips_and_replaces_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, "old").unwrap();
    let saved = sample();
    saved.write(&path).unwrap();
    assert_eq!(SavedPlan::read(&path).unwrap(), saved);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn reading_refuses_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = SavedPlan::read(dir.path()).unwrap_err();
    assert!(matches!(err, SavedPlanError::Read { .. }), "{err}");
    let err = SavedPlan::read(&dir.path().join("missing.json")).unwrap_err();
    assert!(matches!(err, SavedPlanError::Read { .. }), "{err}");
}

#[test]
fn the_digest_changes_when_a_file_is_edited_added_removed_or_renamed() {
    let base = [("a.yaml", b"x".as_slice()), ("b/c.yaml", b"y".as_slice())];
    let d = digest_files(base);
    // Order of discovery does not matter.
    assert_eq!(d, digest_files([base[1], base[0]]));
    assert_ne!(d, digest_files([("a.yaml", b"x!".as_slice()), base[1]]));
    assert_ne!(d, digest_files([base[0]]));
    assert_ne!(
        d,
        digest_files([base[0], base[1], ("d.yaml", b"".as_slice())])
    );
    assert_ne!(d, digest_files([("z.yaml", b"x".as_slice()), base[1]]));
    // Moving bytes between the path and the content is a different input.
    assert_ne!(
        digest_files([("ab", b"c".as_slice())]),
        digest_files([("a", b"bc".as_slice())])
    );
}

#[test]
fn the_desired_digest_reads_the_tree_relative_to_its_root() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    for dir in [one.path(), two.path()] {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.yaml"), "groups: {}\n").unwrap();
        std::fs::write(dir.join("sub/b.yml"), "groups: {}\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not desired").unwrap();
    }
    let d1 = desired_digest(one.path()).unwrap();
    assert_eq!(d1, desired_digest(two.path()).unwrap());
    assert_eq!(
        d1,
        digest_files([
            ("a.yaml", b"groups: {}\n".as_slice()),
            ("sub/b.yml", b"groups: {}\n".as_slice())
        ])
    );
    // A file that is not a desired file does not count; one that is does.
    std::fs::write(two.path().join("notes.txt"), "edited").unwrap();
    assert_eq!(d1, desired_digest(two.path()).unwrap());
    std::fs::write(two.path().join("sub/c.json"), "{\"groups\": {}}").unwrap();
    assert_ne!(d1, desired_digest(two.path()).unwrap());
    assert!(desired_digest(&one.path().join("missing")).is_err());
}

/// The sample's file text with `edit` applied to its JSON value and the plan ID recomputed
/// with the production function, as someone editing the file by hand would.
fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<SavedPlan, SavedPlanError> {
    let mut value: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
    edit(&mut value);
    let mut saved: SavedPlan = serde_json::from_value(value).unwrap();
    saved.plan_id = saved.content_id();
    SavedPlan::from_bytes(Path::new("p.json"), &saved.to_bytes())
}

fn refused_as_corrupt(text: &str, needle: &str) {
    let err = SavedPlan::from_bytes(Path::new("p.json"), text.as_bytes()).unwrap_err();
    assert!(matches!(err, SavedPlanError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(needle), "{err}");
}

#[test]
fn a_changes_entry_listed_twice_is_refused_not_silently_dropped() {
    let text = String::from_utf8(sample().to_bytes()).unwrap();
    // A first "@TGS#a" entry that a map would silently replace with the second: the content
    // (and so the plan ID) is the original's, and the reviewer saw two entries.
    let doubled = text.replacen("\"changes\": {", "\"changes\": {\n    \"@TGS#a\": [],", 1);
    assert_ne!(doubled, text);
    refused_as_corrupt(&doubled, "the key \"@TGS#a\" appears twice in changes");
}

#[test]
fn a_field_listed_twice_at_any_level_is_refused_with_its_place_and_line() {
    let text = String::from_utf8(sample().to_bytes()).unwrap();
    let top = text.replacen(
        "\"refresh\": false,",
        "\"refresh\": false,\n  \"refresh\": false,",
        1,
    );
    refused_as_corrupt(&top, "the key \"refresh\" appears twice in the top level");
    refused_as_corrupt(&top, "line 9, column");
    let nested = text.replacen(
        "\"account\": \"student9\",",
        "\"account\": \"student9\",\n          \"account\": \"student9\",",
        1,
    );
    assert_ne!(nested, text);
    refused_as_corrupt(&nested, "appears twice in calls[0].members[0]");
    let summary = text.replacen("\"set\": 1,", "\"set\": 1,\n    \"set\": 1,", 1);
    assert_ne!(summary, text);
    refused_as_corrupt(&summary, "appears twice in summary");
}

#[test]
fn a_member_listed_twice_in_one_call_or_in_two_calls_is_refused() {
    let err = edited(|v| {
        let member = v["calls"][0]["members"][0].clone();
        v["calls"][0]["members"]
            .as_array_mut()
            .unwrap()
            .push(member);
    })
    .unwrap_err();
    assert!(matches!(err, SavedPlanError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("call 1 lists student9 again"),
        "{err}"
    );
    let err = edited(|v| {
        let call = v["calls"][0].clone();
        v["calls"].as_array_mut().unwrap().push(call);
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("call 3 lists student9 again"),
        "{err}"
    );
    // The same member in a set and a clear call of one group is no duplicate.
    let ok = edited(|v| {
        let mut call = v["calls"][0].clone();
        call["command"] = "set".into();
        v["calls"].as_array_mut().unwrap().push(call);
    });
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn a_mark_listed_twice_for_a_member_is_refused() {
    let err =
        edited(|v| v["calls"][0]["members"][0]["marks"] = serde_json::json!([1001])).map(|_| ());
    assert!(err.is_ok());
    let text = String::from_utf8(sample().to_bytes()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut doubled = value.clone();
    doubled["calls"][0]["members"][0]["marks"] = serde_json::json!([1001, 1001]);
    refused_as_corrupt(&doubled.to_string(), "mark 1001 is listed twice");
    let mut unsorted = value;
    unsorted["calls"][1]["members"][0]["marks"] = serde_json::json!([1000, 500]);
    refused_as_corrupt(&unsorted.to_string(), "not in ascending order");
}

#[test]
fn verify_accepts_the_plan_it_was_made_from() {
    assert_eq!(sample().verify(&sample_plan()), Ok(()));
}

/// `verify`'s refusal of `saved` against the sample plan, as text.
fn not_as_planned(saved: &SavedPlan) -> String {
    match saved.verify(&sample_plan()) {
        Err(e @ Stale::NotAsPlanned { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(
                    "\nWhat to do: run `marksync plan --out FILE` again, review the new plan"
                ),
                "{text}"
            );
            text
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn verify_refuses_each_hand_edit_naming_the_first_call_that_differs() {
    // A changed mark.
    let saved =
        edited(|v| v["calls"][0]["members"][0]["marks"] = serde_json::json!([1002])).unwrap();
    let text = not_as_planned(&saved);
    assert!(
        text.contains("call 1 (clear @TGS#a, 1 member): the file has student9 [1002] where planning again gives student9 [1001]"),
        "{text}"
    );
    // `set` turned into `clear`.
    let saved = edited(|v| v["calls"][1]["command"] = "clear".into()).unwrap();
    let text = not_as_planned(&saved);
    assert!(text.contains("the file's call 2 (clear @TGS#a"), "{text}");
    // A call to a group nothing declares.
    let saved = edited(|v| {
        let mut call = v["calls"][1].clone();
        call["group"] = "@TGS#other".into();
        v["calls"].as_array_mut().unwrap().push(call);
    })
    .unwrap();
    let text = not_as_planned(&saved);
    assert!(
        text.contains("the file's call 3 (set @TGS#other, 2 members) is not planned again"),
        "{text}"
    );
    // An added member.
    let saved = edited(|v| {
        v["calls"][1]["members"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"account": "zed", "marks": [1000]}));
    })
    .unwrap();
    let text = not_as_planned(&saved);
    assert!(
        text.contains("the file has zed [1000] where planning again gives no member"),
        "{text}"
    );
    // A removed call.
    let saved = edited(|v| {
        v["calls"].as_array_mut().unwrap().remove(0);
    })
    .unwrap();
    not_as_planned(&saved);
    let saved = edited(|v| {
        v["calls"].as_array_mut().unwrap().pop();
    })
    .unwrap();
    let text = not_as_planned(&saved);
    assert!(
        text.contains(
            "planning again gives a call 2 (set @TGS#a, 2 members) the file does not have"
        ),
        "{text}"
    );
    // The calls kept, the changes the reviewer reads edited.
    let saved = edited(|v| {
        v["changes"]["@TGS#a"].as_array_mut().unwrap().pop();
    })
    .unwrap();
    let text = not_as_planned(&saved);
    assert!(text.contains("the list of changes does not"), "{text}");
    let saved = edited(|v| v["managed"] = 1000.into()).unwrap();
    assert!(not_as_planned(&saved).contains("managed"));
}

/// The desired files and state of the refresh-change tests: teacher10 should hold 1000 (not
/// recorded), student9 holds 1001 (recorded, not desired: cleared).
fn refresh_world() -> (DesiredState, State) {
    let mut desired = DesiredState::default();
    desired
        .groups
        .entry(g("@TGS#a"))
        .or_default()
        .members
        .insert(a("teacher10"), [m(1000)].into_iter().collect());
    let mut state = State::new(APP);
    state.confirm(&g("@TGS#a"), &a("student9"), [m(1001)], NOW - 3600);
    (desired, state)
}

/// A plan saved with `changes` as its refresh changes, as `plan --refresh --out` (or someone
/// who edited `refreshed` and recomputed the calls and the ID) would save it; and `check` run
/// as `apply FILE` runs it.
fn saved_with_refresh(changes: StateChanges) -> (SavedPlan, Result<(), Stale>) {
    let (desired, mut state) = refresh_world();
    let without = plan::plan(&desired, &state, NOW, &Policy::default());
    changes.apply(&mut state);
    let with = plan::plan(&desired, &state, NOW, &Policy::default());
    let saved = SavedPlan::new(&with, provenance(), Some(&changes));
    // The calls are what planning from the changed state gives: `verify` cannot see the edit.
    assert_eq!(saved.verify(&with), Ok(()));
    let checked = saved.check_refresh_changes(&desired, &without, &with);
    (saved, checked)
}

#[test]
fn refresh_changes_a_refresh_can_make_pass() {
    // Adopting a live desired mark (a set less) and forgetting a lost desired one (a set more).
    let (_, checked) = saved_with_refresh(StateChanges {
        forget: vec![],
        adopt: vec![(g("@TGS#a"), a("teacher10"), m(1000), NOW - 5)],
    });
    assert_eq!(checked, Ok(()));
}

#[test]
fn edited_refresh_changes_that_drop_a_clear_or_adopt_an_undeclared_mark_are_refused() {
    // Forgetting a recorded mark nobody desires removes its clear: it would stay on the
    // service, unrecorded, for good.
    let (_, checked) = saved_with_refresh(StateChanges {
        forget: vec![(g("@TGS#a"), a("student9"), m(1001))],
        adopt: vec![],
    });
    let text = checked.unwrap_err().to_string();
    assert!(
        text.contains("drop the clear of mark 1001 of student9 in @TGS#a"),
        "{text}"
    );
    assert!(
        text.contains("run `marksync plan --out FILE` again"),
        "{text}"
    );
    let (_, checked) = saved_with_refresh(StateChanges {
        forget: vec![],
        adopt: vec![(g("@TGS#a"), a("mallory"), m(1000), NOW - 5)],
    });
    let text = checked.unwrap_err().to_string();
    assert!(
        text.contains("adopt mark 1000 of mallory in @TGS#a, which no desired file declares"),
        "{text}"
    );
}

/// Every place in a JSON value that a single edit can change: (path, is an object key).
fn leaves(v: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                path.push(k.clone());
                leaves(child, path, out);
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(i.to_string());
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn at<'v>(v: &'v mut serde_json::Value, path: &[String]) -> &'v mut serde_json::Value {
    path.iter().fold(v, |v, k| match v {
        serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

proptest! {
    /// A single edit anywhere in the file, with the plan ID recomputed, either leaves the plan
    /// exactly as planned (the edit changed nothing that is executed, shown or counted) or is
    /// refused: by the reader, or by `verify`. Never a different plan that passes.
    #[test]
    fn any_single_edit_with_a_recomputed_id_is_harmless_or_refused(
        pick in any::<proptest::sample::Index>(),
        replacement in prop_oneof![
            Just(serde_json::json!(1000)),
            Just(serde_json::json!(1001)),
            Just(serde_json::json!(500)),
            Just(serde_json::json!(0)),
            Just(serde_json::json!("set")),
            Just(serde_json::json!("clear")),
            Just(serde_json::json!("renew")),
            Just(serde_json::json!("@TGS#b")),
            Just(serde_json::json!("host")),
            Just(serde_json::json!("mallory")),
            Just(serde_json::json!(NOW - 61 * 3600)),
            Just(serde_json::json!(null)),
        ],
    ) {
        let original: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        let mut paths = Vec::new();
        leaves(&original, &mut Vec::new(), &mut paths);
        let path = pick.get(&paths).clone();
        prop_assume!(path.last().map(String::as_str) != Some("plan_id"));
        let mut value = original.clone();
        *at(&mut value, &path) = replacement;
        let Ok(mut saved) = serde_json::from_value::<SavedPlan>(value) else {
            return Ok(()); // not even a saved plan's shape: the reader refuses it
        };
        saved.plan_id = saved.content_id();
        let Ok(read) = SavedPlan::from_bytes(Path::new("p.json"), &saved.to_bytes()) else {
            return Ok(());
        };
        if read.verify(&sample_plan()).is_ok() {
            prop_assert_eq!(read.to_plan(), sample_plan(), "edited at {:?}", path);
        }
    }
}

proptest! {
    /// Whatever the plan's inputs, the file reads back to the same plan, and it passes its own
    /// check with the values it was made with.
    #[test]
    fn any_plan_round_trips_and_passes_its_own_check(
        rows in proptest::collection::vec(
            (0..3usize, 0..6usize, proptest::sample::select(vec![500u64, 600, 1000, 1001, 1002]), any::<bool>()),
            0..40,
        ),
        serial in 0..1000u64,
        age in 0..DAY,
    ) {
        let groups = ["@TGS#a", "@TGS#b", "room 1"];
        let mut desired = DesiredState::default();
        let mut state = State::new(APP);
        for (gi, ai, mark, in_state) in rows {
            let (group, account, mark) = (g(groups[gi]), a(&format!("u{ai}")), m(mark));
            if in_state {
                state.confirm(&group, &account, [mark], NOW - 70 * 3600);
            } else {
                desired.groups.entry(group).or_default().members.entry(account).or_default().insert(mark);
            }
        }
        let plan = plan::plan(&desired, &state, NOW, &Policy::default());
        let provenance = Provenance { state_serial: serial, ..provenance() };
        let digest = provenance.desired_digest.clone();
        let saved = SavedPlan::new(&plan, provenance, None);
        let back = SavedPlan::from_bytes(Path::new("p.json"), &saved.to_bytes()).unwrap();
        prop_assert_eq!(back.to_plan(), plan);
        prop_assert_eq!(back.check(APP, serial, &digest, None, NOW + age, DAY), Ok(()));
        prop_assert!(back.check(APP, serial + 1, &digest, None, NOW + age, DAY).is_err());
    }
}
