//! The daemon's log is an audit trail (issue 10): what it loaded at startup, one record per
//! call, one per member change at `-v`, and every record one line, a desired-file error with
//! its snippet included. A real `marksync run` against `endpoint: embedded` (loopback only),
//! every wait bounded, the process killed at the end.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Proc;
use common::cli::{marksync_command, write_embedded};

const WAIT: Duration = Duration::from_secs(20);

const CONFIG: &str = "sdkappid: 1400000000
identifier: administrator
secret_key_file: demo-secret.key
endpoint: embedded
desired: marks/
state: state.json
debounce: 50ms
";

const DESIRED: &str = "groups:
  \"@TGS#2PHYS101\":
    members:
      ms_chen: [1000]
    marks:
      1002: [student01, student02]
";

const BROKEN: &str = "groups:\n  \"@TGS#2CHEM\":\n    memebrs:\n      tom: [1000]\n";

fn setup(dir: &Path) {
    write_embedded(dir, CONFIG, DESIRED);
}

fn start(dir: &Path, format: &str) -> Proc {
    let mut cmd = marksync_command();
    cmd.args(["-v", "--log-format", format, "run"])
        .current_dir(dir);
    Proc::spawn(&mut cmd, dir.join("daemon.log"))
}

/// The log once it contains `part`, or a panic after WAIT.
fn wait_for(dir: &Path, part: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        if log.contains(part) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no `{part}` in the log within {WAIT:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_log_records_are_single_lines_an_auditor_can_follow() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    let _daemon = start(dir, "json");
    wait_for(dir, "Apply complete");
    std::fs::write(dir.join("marks/chemistry.yaml"), BROKEN).unwrap();
    let log = wait_for(dir, "do not parse");

    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON record ({e}): {l}"))
        })
        .collect();
    let fields = |r: &serde_json::Value| r["fields"].clone();
    let message = |r: &serde_json::Value| r["fields"]["message"].as_str().unwrap_or("").to_string();

    let loaded = records
        .iter()
        .find(|r| message(r).starts_with("desired files loaded"))
        .expect("startup says what was loaded");
    assert_eq!(
        message(loaded),
        "desired files loaded: 1 group, 3 marks from 1 file"
    );
    assert!(!log.contains("desired files changed"));
    let state = records
        .iter()
        .find(|r| message(r).starts_with("state loaded"))
        .expect("startup names the state");
    assert_eq!(fields(state)["serial"], 0);
    assert_eq!(fields(state)["endpoint"], "embedded");

    let call = records
        .iter()
        .find(|r| message(r) == "call")
        .expect("one record per call");
    let f = fields(call);
    assert_eq!(f["group"], "@TGS#2PHYS101");
    assert_eq!(f["command"], "set");
    assert_eq!(f["members"], 3);
    assert_eq!(f["outcome"], "ok");

    let changes: Vec<_> = records
        .iter()
        .filter(|r| message(r).starts_with("member marks"))
        .collect();
    assert_eq!(changes.len(), 3, "one record per member at -v");
    let chen = changes
        .iter()
        .find(|r| fields(r)["account"] == "ms_chen")
        .unwrap();
    assert_eq!(fields(chen)["before"], "none");
    assert_eq!(message(chen), "member marks none -> 1000");
    assert_eq!(fields(chen)["after"], "1000");

    let broken = records
        .iter()
        .find(|r| message(r).contains("do not parse"))
        .unwrap();
    let text = message(broken);
    assert!(text.contains("chemistry.yaml:3"), "the location: {text}");
    assert!(text.contains("memebrs"), "{text}");
    assert!(text.contains(" | "), "the snippet joined: {text}");
}

#[test]
fn text_log_keeps_a_desired_file_error_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    setup(dir);
    std::fs::write(dir.join("marks/chemistry.yaml"), BROKEN).unwrap();
    let _daemon = start(dir, "text");
    let log = wait_for(dir, "do not parse");
    let line = log.lines().find(|l| l.contains("do not parse")).unwrap();
    assert!(line.contains("chemistry.yaml:3"), "{line}");
    assert!(line.contains("memebrs"), "{line}");
    // Every line of the log is a record: it starts with a timestamp, never with a snippet.
    for l in log.lines() {
        assert!(
            l.starts_with(|c: char| c.is_ascii_digit()),
            "a line that is not a record: {l}"
        );
    }
}
