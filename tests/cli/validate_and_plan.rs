//! `validate` and `plan`: every error reported, the plan's text and JSON, exit codes, colour,
//! the mass-clear warning, and durations out of range.

use super::*;

#[test]
fn validate_accepts_the_example() {
    Test::new()
        .arg("-c")
        .arg(examples().join("marksync.yaml").to_str().unwrap())
        .arg("validate")
        .run()
        .status(0)
        .stdout("OK: 2 groups with 13 members and 15 marks in 2 files.\n")
        .stderr("");
}

#[test]
fn validate_reports_every_error_in_every_file() {
    Test::new()
        .config(CONFIG)
        .file(
            "marks/a.yaml",
            "groups:\n  \"@TGS#a\":\n    memebrs:\n      alice: [1000]\n    members:\n      bob: [999]\n",
        )
        .file("marks/b.yaml", "groups:\n  \"@TGS#b\":\n    members: [1, 2]\n")
        .file("marks/ok.yaml", "groups:\n  \"@TGS#c\":\n    marks:\n      1000: [carol]\n")
        .arg("validate")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "marks/a.yaml:3:5: error: unknown key `memebrs`; expected `members` or `marks`
 3 |     memebrs:
   |     ^
marks/a.yaml:6:13: error: mark 999 is not allowed: a mark is an integer >= 1000, or the special 500 or 600
 6 |       bob: [999]
   |             ^
marks/b.yaml:3:14: error: `members` must be a mapping of account to its marks (such as `host: [500, 1000]`), found a list
 3 |     members: [1, 2]
   |              ^
",
        );
}

#[test]
fn validate_reports_config_errors() {
    Test::new()
        .config("sdkappid: \"1400000000\"\nidentifier: administrator\ndesired: marks/\nregoin: tokyo\n")
        .arg("validate")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "marksync.yaml:1:11: error: `sdkappid` must be a number, found the string \"1400000000\"; write it without quotes
 1 | sdkappid: \"1400000000\"
   |           ^
marksync.yaml:4:1: error: unknown key `regoin`; did you mean `region`?
 4 | regoin: tokyo
   | ^
",
        );
}

#[test]
fn plan_prints_set_clear_and_renew() {
    spec_example()
        .arg("plan")
        .run()
        .status(0)
        .stderr("")
        .stdout(
            "group @TGS#a6I4ZUUGO  (marks/class.yaml:2)
  - student9   1001       ->
  ~ host       500, 1000  -> 500, 1000   renew 500 (confirmed 61h ago)
  + teacher10             -> 1000

Plan: 1 to set, 1 to clear, 1 to renew in 1 group, 2 API calls.
",
        );
}

#[test]
fn plan_json_is_the_documented_contract() {
    spec_example()
        .args(&["plan", "--json"])
        .run()
        .status(0)
        .stderr("")
        .stdout(concat!(
            r#"{"format_version":1,"summary":{"set":1,"clear":1,"renew":1,"groups":1,"calls":2},"#,
            r#""calls":[{"group":"@TGS#a6I4ZUUGO","command":"clear","members":[{"account":"student9","marks":[1001]}]},"#,
            r#"{"group":"@TGS#a6I4ZUUGO","command":"set","members":[{"account":"host","marks":[500]},{"account":"teacher10","marks":[1000]}]}],"#,
            r#""guard":{"refuses":false,"clears":1,"managed":3,"max_clear_fraction":0.25,"min_clears":10,"overridden":false,"verdict":"passes"}}"#,
            "\n"
        ));
}

#[test]
fn plan_without_changes_says_so() {
    in_sync()
        .arg("plan")
        .run()
        .status(0)
        .stdout("No changes. Marks match the recorded state.\n\
             (The state records what marksync last applied; `--refresh` compares with the service.)\n")
        .stderr("");
}

#[test]
fn detailed_exitcode_is_2_with_changes_and_0_without() {
    spec_example()
        .args(&["plan", "--detailed-exitcode"])
        .run()
        .status(2);
    in_sync()
        .args(&["plan", "--detailed-exitcode"])
        .run()
        .status(0)
        .stdout("No changes. Marks match the recorded state.\n\
             (The state records what marksync last applied; `--refresh` compares with the service.)\n");
    spec_example()
        .args(&["plan", "--json", "--detailed-exitcode"])
        .run()
        .status(2);
}

#[test]
fn without_detailed_exitcode_changes_exit_0() {
    spec_example().arg("plan").run().status(0);
    in_sync().arg("plan").run().status(0);
}

#[test]
fn piped_and_no_color_output_has_no_escapes_but_clicolor_force_does() {
    let piped = spec_example().arg("plan").run();
    assert!(!piped.stdout.contains('\x1b'), "{:?}", piped.stdout);
    let no_color = spec_example().arg("plan").env("NO_COLOR", "1").run();
    assert!(!no_color.stdout.contains('\x1b'), "{:?}", no_color.stdout);
    assert_eq!(no_color.stdout, piped.stdout);
    let forced = spec_example().arg("plan").env("CLICOLOR_FORCE", "1").run();
    assert!(forced.stdout.contains('\x1b'), "{:?}", forced.stdout);
    let json = spec_example()
        .args(&["plan", "--json"])
        .env("CLICOLOR_FORCE", "1")
        .run();
    assert!(
        !json.stdout.contains('\x1b'),
        "JSON is never coloured: {:?}",
        json.stdout
    );
}

#[test]
fn plan_warns_when_apply_would_refuse_a_mass_clear() {
    // 12 managed marks in a group that is gone from the desired files: all would be cleared,
    // more than min_clears (10) and more than 25% of what is managed.
    let t = unix_now();
    let accounts: Vec<String> = (0..12)
        .map(|i| format!(r#""student{i:02}":{{"1001":{t}}}"#))
        .collect();
    let test = Test::new()
        .config(CONFIG)
        .file(
            "marks/other.yaml",
            "groups:\n  \"@TGS#other\":\n    marks:\n      1000: [teacher]\n",
        )
        .state(
            APP,
            &format!(r#"{{"@TGS#gone":{{{}}}}}"#, accounts.join(",")),
        );
    let out = test.arg("plan").run();
    out.status(0).stderr(
        "warning: apply would refuse this plan: refusing to clear 12 of 12 managed marks \
         (more than 10 and more than 25%); if that is really what you want, run again with \
         --allow-mass-clear\n",
    );
    assert!(
        out.stdout
            .ends_with("Plan: 1 to set, 12 to clear, 0 to renew in 2 groups, 2 API calls.\n"),
        "{}",
        out.stdout
    );
    let under = Test::new()
        .config(CONFIG)
        .file("marks/other.yaml", "groups: {}\n")
        .state(
            APP,
            &format!(r#"{{"@TGS#gone":{{{}}}}}"#, accounts[..10].join(",")),
        )
        .arg("plan")
        .run();
    under.status(0).stderr("");
}

/// Issue 7: `reassert_every: 500000000000y` passed `validate` (then `run` panicked), `30ms`
/// (for 30m) flooded the API. `validate` now reports both with the range and a hint.
#[test]
fn validate_refuses_out_of_range_durations_with_the_range() {
    Test::new()
        .config(&format!(
            "{CONFIG}reassert_every: 500000000000y\ndebounce: 500000000000y\n"
        ))
        .arg("validate")
        .run()
        .status(1)
        .stderr_contains("marksync.yaml:5:17: error: `reassert_every` must be between 1m and 7d, found 500000000000y")
        .stderr_contains("marksync.yaml:6:11: error: `debounce` must be between 10ms and 1m, found 500000000000y");
    Test::new()
        .config(&format!("{CONFIG}reassert_every: 30ms\n"))
        .arg("validate")
        .run()
        .status(1)
        .stderr_contains(
            "`reassert_every` must be between 1m and 7d, found 30ms; did you mean 30m?",
        );
}
