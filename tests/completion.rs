//! Dynamic shell completion (issue 16): `state show <TAB>` offers the groups the state records,
//! `state show GROUP <TAB>` their accounts, `state rm GROUP ACCOUNT <TAB>` the member's marks.
//! The candidate functions directly, then once through the binary with clap_complete's
//! environment protocol, as the bash script that `COMPLETE=bash marksync` prints calls it.

mod common;

use std::ffi::OsString;
use std::path::Path;

use marksync::completion::{self, Context};

const CONFIG: &str =
    "sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\nstate: state/marks.json\n";
const STATE: &str = r#"{"format_version":1,"sdkappid":1400000000,"serial":3,"groups":{
  "@TGS#abc":{"alice":{"1000":1700000000,"1001":1700000000},"bob":{"500":1700000000}},
  "@TGS#xyz":{"carol":{"1000":1700000000}}},
  "intents":{"@TGS#abc":{"dave":[1002]}}}"#;

/// A directory with the config (as `conf/marksync.yaml`, so the state path is relative to it)
/// and the state.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf/state")).unwrap();
    std::fs::write(dir.path().join("conf/marksync.yaml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("conf/state/marks.json"), STATE).unwrap();
    dir
}

fn context(dir: &Path, line: &str) -> Context {
    let config = dir.join("conf/marksync.yaml");
    let line = line.replace("CONFIG", config.to_str().unwrap());
    let words: Vec<OsString> = line.split(' ').map(OsString::from).collect();
    Context::from_words(&words, words.len() - 1, None)
}

fn values(candidates: Vec<clap_complete::engine::CompletionCandidate>) -> Vec<String> {
    candidates
        .iter()
        .map(|c| c.get_value().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn groups_accounts_and_marks_come_from_the_state() {
    let dir = setup();
    let dir = dir.path();
    let c = context(dir, "marksync -c CONFIG state show ");
    assert_eq!(values(completion::groups(&c, "")), ["@TGS#abc", "@TGS#xyz"]);
    assert_eq!(values(completion::groups(&c, "@TGS#x")), ["@TGS#xyz"]);
    let help: Vec<String> = completion::groups(&c, "")
        .iter()
        .map(|c| c.get_help().unwrap().to_string())
        .collect();
    assert_eq!(help, ["3 members", "1 member"]);

    let c = context(dir, "marksync state show @TGS#abc --config CONFIG ");
    // dave's mark is an intent (sent, answer not seen): still a member the state records.
    assert_eq!(
        values(completion::accounts(&c, "")),
        ["alice", "bob", "dave"]
    );
    assert_eq!(values(completion::accounts(&c, "b")), ["bob"]);

    let c = context(dir, "marksync --config=CONFIG state rm @TGS#abc alice ");
    assert_eq!(values(completion::marks(&c, "")), ["1000", "1001"]);

    // A group the state does not record, or no state at all: nothing, and no error.
    let c = context(dir, "marksync -c CONFIG state show @TGS#none ");
    assert!(completion::accounts(&c, "").is_empty());
    let c = context(dir, "marksync -c /nonexistent/marksync.yaml state show ");
    assert!(completion::groups(&c, "").is_empty());
}

/// Runs the binary as the bash completion function does: `COMPLETE=bash`, the index of the
/// word being completed, the words after `--`. Returns the candidates (one per line: the
/// function's `$'\013'` separator is only used when `_CLAP_IFS` says so).
fn complete_bash(dir: &Path, words: &[&str]) -> Vec<String> {
    let mut cmd = common::cli::marksync_command();
    cmd.current_dir(dir.join("conf"))
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_COMPLETE_COMP_TYPE", "9")
        .env("_CLAP_COMPLETE_SPACE", "true")
        .env("_CLAP_IFS", "\n")
        .arg("--")
        .args(words);
    let out = common::cli::run_bounded(&mut cmd, "");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_binary_completes_group_ids_and_accounts_through_complete_env() {
    let dir = setup();
    let dir = dir.path();
    // The config from the working directory, as `marksync state show` itself finds it.
    let groups = complete_bash(dir, &["marksync", "state", "show", ""]);
    assert!(
        groups.starts_with(&["@TGS#abc".into(), "@TGS#xyz".into()]),
        "{groups:?}"
    );
    let accounts = complete_bash(dir, &["marksync", "state", "show", "@TGS#abc", "a"]);
    assert_eq!(accounts, ["alice"]);

    // The registration script a user sources calls the binary back.
    let mut cmd = common::cli::marksync_command();
    cmd.env("COMPLETE", "bash");
    let out = common::cli::run_bounded(&mut cmd, "");
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("complete -o nospace"), "{script}");
    assert!(script.contains("COMPLETE=\"bash\""), "{script}");
}
