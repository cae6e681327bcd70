//! The files a command reads: a missing, corrupt or foreign state (and its backup), broken or
//! missing desired files, and where the config is found.

use super::*;

#[test]
fn missing_state_is_a_first_run_that_plans_everything() {
    Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .arg("plan")
        .run()
        .status(0)
        .stderr("")
        .stdout(
            "group @TGS#a6I4ZUUGO  (marks/class.yaml:2)
  + host         -> 500, 1000
  + teacher10    -> 1000

Plan: 3 to set, 0 to clear, 0 to renew in 1 group, 1 API call.
",
        );
}

#[test]
fn corrupt_state_is_an_error_and_nothing_is_planned() {
    let test = Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .file(
            "state.json",
            "{\"format_version\":1,\"sdkappid\":1400000000,\"groups\":{",
        );
    let out = test.arg("plan").run();
    out.status(1)
        .stdout("")
        .stderr_contains("state file state.json is corrupt (")
        .stderr_contains("it was not used");
}

#[test]
fn state_of_another_application_is_refused() {
    Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .state(1_400_000_001, "{}")
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "state file state.json belongs to sdkappid 1400000001, but the config says 1400000000; \
             refusing to mix two applications' state\n",
        );
}

#[test]
fn broken_desired_file_plans_nothing_not_clears() {
    let t = unix_now();
    Test::new()
        .config(CONFIG)
        .file(
            "marks/class.yaml",
            "groups:\n  \"@TGS#a6I4ZUUGO\":\n    members: [\n",
        )
        .state(APP, &format!(r#"{{"{GROUP}":{{"host":{{"1000":{t}}}}}}}"#))
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr_contains("marks/class.yaml:3:14: error:");
}

#[test]
fn missing_desired_directory_is_an_error() {
    Test::new()
        .config(CONFIG)
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr("marks/: error: the desired path does not exist (a missing directory is an error, never \"no groups\")\n");
}

#[test]
fn config_comes_from_marksync_config_and_paths_are_relative_to_it() {
    let test = Test::new()
        .file("conf/app.yaml", CONFIG)
        .file("conf/marks/class.yaml", DESIRED)
        .env("MARKSYNC_CONFIG", "conf/app.yaml")
        .arg("plan");
    test.run().status(0).stderr("").stdout(
        "group @TGS#a6I4ZUUGO  (marks/class.yaml:2)
  + host         -> 500, 1000
  + teacher10    -> 1000

Plan: 3 to set, 0 to clear, 0 to renew in 1 group, 1 API call.
",
    );
    // -c wins over the environment.
    Test::new()
        .file("conf/app.yaml", CONFIG)
        .file("conf/marks/class.yaml", DESIRED)
        .env("MARKSYNC_CONFIG", "nowhere.yaml")
        .args(&["-c", "conf/app.yaml", "validate"])
        .run()
        .status(0)
        .stdout("OK: 1 group with 2 members and 3 marks in 1 file.\n");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    Test::new().arg("plan").run().status(1).stdout("").stderr(
        "marksync.yaml: error: config file not found (pass -c FILE or set MARKSYNC_CONFIG)\n",
    );
    Test::new()
        .args(&["-c", "elsewhere.yaml", "validate"])
        .run()
        .status(1)
        .stderr(
            "elsewhere.yaml: error: config file not found (pass -c FILE or set MARKSYNC_CONFIG)\n",
        );
}

#[test]
fn state_missing_but_backup_present_is_an_error_not_a_first_run() {
    Test::new()
        .config(CONFIG)
        .file("marks/class.yaml", DESIRED)
        .file("state.json.bak", "{}")
        .arg("plan")
        .run()
        .status(1)
        .stdout("")
        .stderr(
            "state file state.json is missing but state.json.bak exists; restore it \
             (cp state.json.bak state.json) rather than starting from nothing\n",
        );
}
