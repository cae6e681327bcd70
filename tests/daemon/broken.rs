//! Broken desired files: the last good state is kept (mark 500 still renewed), and a mass clear
//! is refused.

use super::*;

#[test]
fn a_parse_error_keeps_the_last_good_state_until_fixed() {
    let (env, d, a, b) = running();
    let calls = env.calls();
    env.write(
        "marks/a.yaml",
        "groups:\n  \"@TGS#1A\":\n    memebrs:\n      teacher: [1000]\n",
    );
    d.wait_stderr("a.yaml:3:5");
    poll("/readyz to answer 503", WAIT, || {
        (d.readyz() == 503).then_some(())
    });
    assert!(d.metric("marksync_desired_errors") > 0.0);
    // Deleting another file while one is broken clears nothing either.
    std::fs::remove_file(env.path("marks/b.yaml")).unwrap();
    env.settled(&d);
    assert_eq!(env.calls(), calls, "nothing sent while broken");
    assert_eq!(env.live(), union(&[&a, &b]));
    assert_eq!(d.readyz(), 503);

    let a2 = marks(&[("@TGS#1A", "teacher", &[1000, 1003])]);
    env.desire("a.yaml", &a2);
    env.wait_live(&a2);
    poll("/readyz to answer 200", WAIT, || {
        (d.readyz() == 200).then_some(())
    });
    assert_eq!(d.metric("marksync_desired_errors"), 0.0);
}

#[test]
fn mark_500_is_renewed_while_the_desired_files_are_broken() {
    let env = Env::new();
    env.online("@TGS#R", &["host", "guest"]);
    let old = unix_now() - 61 * HOUR;
    env.write_state(&[
        ("@TGS#R", "host", 500, old),
        ("@TGS#R", "host", 1000, old),
        ("@TGS#R", "guest", 1001, old),
    ]);
    env.write("marks/r.yaml", "groups:\n  \"@TGS#R\":\n    members: [\n");
    let mut d = env.spawn();
    d.wait_listening();
    poll("the renewal call", WAIT, || {
        (env.calls() >= 1).then_some(())
    });
    env.settled(&d);
    assert_eq!(env.calls(), 1, "the renewal and nothing else");
    assert_eq!(
        env.emu().marks_of("@TGS#R"),
        [("host".into(), vec![500])].into()
    );
    let expires = env.emu().groups()["@TGS#R"].members["host"]
        .mark_500_expires_at
        .unwrap();
    assert!((expires - (env.emu().now() + 72 * HOUR)).abs() < 60);
    assert_eq!(d.readyz(), 503);
    let state = env.state();
    let renewed = state["groups"]["@TGS#R"]["host"]["500"].as_i64().unwrap();
    assert!(renewed > old + 60 * HOUR, "the renewal is recorded");
    assert_eq!(
        state["groups"]["@TGS#R"]["guest"]["1001"], old,
        "nothing else"
    );
}

/// Issue 14: the daemon's round checks the mass-clear guard. A desired file that drops 30 of
/// 31 marks sends no clear; mark 500 is still renewed when due; the refusal is reported in the
/// log, in `/readyz` and as a `refused` reconcile.
#[test]
fn a_mass_clear_is_refused_while_mark_500_is_still_renewed() {
    const G: &str = "@TGS#GUARD";
    let env = Env::new();
    let members: Vec<String> = (1..=30).map(|i| format!("m{i:02}")).collect();
    let member_refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let mut everyone = member_refs.clone();
    everyone.push("host");
    env.online(G, &everyone);
    // The service holds the 31 marks, set by another tool; the state records them.
    env.emu().set_marks_as_other(G, &["host"], &[500]).unwrap();
    env.emu()
        .set_marks_as_other(G, &member_refs, &[1000])
        .unwrap();
    let seeded = env.emu().groups()[G].members["host"]
        .mark_500_expires_at
        .unwrap();
    // A renewal moves the expiry past the seeded one.
    env.emu().advance_clock(HOUR);
    let now = unix_now();
    // Mark 500 falls due (72 h - 12 h margin) 8 s from now.
    let mut rows = vec![(G, "host", 500, now - (60 * HOUR - 8))];
    rows.extend(member_refs.iter().map(|m| (G, *m, 1000, now)));
    env.write_state(&rows);
    let mut spec = vec![(G, "host", &[500][..])];
    spec.extend(member_refs.iter().map(|m| (G, *m, &[1000][..])));
    let all = marks(&spec);
    env.desire("g.yaml", &all);
    let d = env.start();
    let calls = env.calls();

    // 30 of the 31 marks leave the desired files.
    let host_only = marks(&[(G, "host", &[500])]);
    env.desire("g.yaml", &host_only);
    let refused = r#"marksync_reconciles_total{trigger="files",outcome="refused"}"#;
    poll("a refused reconcile after the change", WAIT, || {
        (d.metric(refused) >= 1.0).then_some(())
    });
    d.wait_stderr("refusing to clear 30 of 31 managed marks");
    let (status, body) = d.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refused"), "{body}");

    // Mark 500 is renewed when due, and the round that renewed it is recorded in the state.
    let renewed = poll("mark 500's renewal to be recorded", 2 * WAIT, || {
        let at = env.state()["groups"][G]["host"]["500"].as_i64()?;
        (at > now).then_some(at)
    });
    assert!(renewed >= now, "{renewed}");
    let expires = env.emu().groups()[G].members["host"]
        .mark_500_expires_at
        .unwrap();
    assert!(expires > seeded, "the service renewed mark 500");
    // That round is over: exactly one call (the renewal) since the change, and no clear.
    assert_eq!(env.calls(), calls + 1, "the renewal and nothing else");
    assert_eq!(env.live(), all, "no mark was cleared");
    let state = env.state();
    for m in &members {
        assert!(state["groups"][G][m]["1000"].is_i64(), "{m} still recorded");
    }
    assert_eq!(d.readyz(), 503, "still refused after the renewal");
}
