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
        text.contains("already applied, or the state changed"),
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
