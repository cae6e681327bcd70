//! Progress for long work on a terminal (issue 16): `import --dry-run` against a slow service
//! (every read answered HTTP 503 three times, so the client retries for several seconds) shows
//! its reads and each retry with its wait on a terminal, and nothing of it on a pipe (CI logs),
//! where the result is the same. The terminal is a pseudo-terminal from `script`.

mod common;

use std::path::Path;

use common::cli::{Output, marksync, run_program};

const DESIRED: &str = "groups:\n  \"@TGS#SLOW\":\n    members:\n      alice: [1000]\n";

/// A directory whose config points at `endpoint`, declaring one group.
fn setup(endpoint: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret.key");
    std::fs::write(&key, format!("{}\n", common::KEY)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::create_dir(dir.path().join("marks")).unwrap();
    std::fs::write(dir.path().join("marks/a.yaml"), DESIRED).unwrap();
    std::fs::write(
        dir.path().join("marksync.yaml"),
        format!(
            "sdkappid: {}\nidentifier: {}\nsecret_key_file: secret.key\nendpoint: {endpoint}\ndesired: marks/\nstate: state.json\n",
            common::APP,
            common::ADMIN
        ),
    )
    .unwrap();
    dir
}

/// Three 503s for the next reads: the client waits about 0.5 s, 1 s and 2 s (plus jitter)
/// between its attempts, so the import takes several seconds.
fn slow_reads(emu: &common::StandaloneEmulator) {
    emu.clear_faults();
    emu.inject(serde_json::json!({
        "kind": "http_status", "status": 503, "count": 3, "path": "get_members"
    }));
}

fn on_a_terminal(dir: &Path, args: &str) -> Option<Output> {
    if !common::require_tool("for a pseudo-terminal", "script", &["--version"]) {
        return None;
    }
    let command = format!("'{}' {args}", env!("CARGO_BIN_EXE_marksync"));
    Some(run_program(
        dir,
        "script",
        &["-qec", &command, "/dev/null"],
        "",
    ))
}

#[test]
fn slow_reads_show_progress_and_retries_on_a_terminal_and_nothing_on_a_pipe() {
    let emu = common::StandaloneEmulator::start();
    let dir = setup(&emu.endpoint());
    let dir = dir.path();

    slow_reads(&emu);
    let Some(tty) = on_a_terminal(dir, "import --dry-run") else {
        return;
    };
    assert_eq!(tty.code, 0, "{}{}", tty.stdout, tty.stderr);
    // `script` merges the terminal's output into its stdout.
    let screen = tty.stdout;
    // The third wait is 2 s or more (jitter): at least that one is shown, rounded.
    // The bar redraws its line with `\r` and an erase-line sequence; the retry is a line of
    // its own printed above it.
    let retry = screen
        .split(['\r', '\n'])
        .map(|l| l.trim_start_matches("\x1b[2K"))
        .find_map(|l| {
            l.find("(attempt 3/5)")
                .map(|end| &l[..end + "(attempt 3/5)".len()])
        })
        .unwrap_or_else(|| panic!("no third retry: {screen}"));
    let wait = retry
        .strip_prefix("retrying after HTTP 503 Service Unavailable in ")
        .and_then(|r| r.strip_suffix("s (attempt 3/5)"))
        .unwrap_or_else(|| panic!("{retry:?}"));
    assert!(
        wait.parse::<u64>().is_ok_and(|w| w >= 2),
        "whole seconds: {retry:?}"
    );
    assert!(screen.contains("reading the live marks"), "{screen}");
    assert!(screen.contains("/1 groups"), "{screen}");
    assert!(screen.contains("Import (dry run)"), "{screen}");

    slow_reads(&emu);
    let piped = marksync(dir, &["import", "--dry-run"]);
    assert_eq!(piped.code, 0, "{}{}", piped.stdout, piped.stderr);
    for line in ["retrying after", "reading the live marks", "groups"] {
        assert!(!piped.stderr.contains(line), "{line}: {}", piped.stderr);
    }
    assert!(
        piped.stdout.contains("Import (dry run)"),
        "{}",
        piped.stdout
    );
}
