//! The CI recipes (`examples/ci/`) run, step by step and in order, against the emulator
//! (`endpoint: embedded`). Every `marksync` command the recipes contain is one this file runs:
//! the recipes are read as YAML, their shell steps scanned for `marksync SUBCOMMAND ...`, and
//! the set compared with the tested one, so a recipe cannot gain an untested step silently.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::cli::embedded_dir;

const CONFIG: &str = "sdkappid: 1400000000
identifier: administrator
secret_key_file: demo-secret.key
endpoint: embedded
desired: marks/
state: state/marksync.json
guard: { min_clears: 2 }
";

const DESIRED: &str = "# yaml-language-server: $schema=../schema/desired.schema.json
groups:
  \"@TGS#2PHYS101\":
    members:
      ms_chen: [1000]
    marks:
      1002: [student01, student02]
";

const RECIPES: &[&str] = &[
    "examples/ci/github-actions.yml",
    "examples/ci/github-actions-daemon.yml",
    "examples/ci/gitlab-ci.yml",
];

/// The marksync commands of the recipes, as [`recipe_commands`] normalises them (expressions
/// and shell variables that only add flags, such as the reviewed override, are dropped). Each
/// is run below, with and without the flags those variables add.
const TESTED: &[&str] = &[
    "marksync validate",
    "marksync plan --detailed-exitcode --markdown",
    "marksync plan --refresh --detailed-exitcode",
    "marksync plan --out plan.bin",
    "marksync apply --lock-timeout 10m plan.bin",
];

const SUBCOMMANDS: &[&str] = &["validate", "plan", "apply", "import", "state", "run"];

/// Every shell line of a recipe: GitHub's `run:` values, GitLab's `script:` and
/// `before_script:` entries, wherever they sit.
fn shell_lines(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("run", serde_json::Value::String(s)) => {
                        out.extend(s.lines().map(str::to_owned))
                    }
                    ("script" | "before_script", serde_json::Value::Array(items)) => {
                        for item in items {
                            if let Some(s) = item.as_str() {
                                out.extend(s.lines().map(str::to_owned));
                            }
                        }
                    }
                    _ => shell_lines(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| shell_lines(v, out)),
        _ => {}
    }
}

/// `marksync SUBCOMMAND ...` invocations in `line`, cut at the first shell operator, with
/// `${{ ... }}` expressions and `$VARIABLE` words removed.
fn invocations(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let words: Vec<&str> = line.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let starts = *w == "marksync"
            && words
                .get(i + 1)
                .is_some_and(|next| SUBCOMMANDS.contains(next));
        if !starts {
            continue;
        }
        let mut cmd = vec!["marksync"];
        let mut in_expr = false;
        for w in &words[i + 1..] {
            // A GitHub expression may hold `&&` and `||` of its own: skipped whole.
            if in_expr {
                in_expr = !w.ends_with("}}");
                continue;
            }
            if w.starts_with("${{") {
                in_expr = !w.ends_with("}}");
                continue;
            }
            if matches!(*w, "||" | "&&" | ">" | ">>" | "|" | ";") || w.ends_with(';') {
                break;
            }
            if w.starts_with('$') {
                continue;
            }
            cmd.push(w);
        }
        found.push(cmd.join(" "));
    }
    found
}

fn recipe_commands(file: &str) -> BTreeSet<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(file)).unwrap();
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    let mut lines = Vec::new();
    shell_lines(&yaml, &mut lines);
    lines.iter().flat_map(|l| invocations(l)).collect()
}

#[test]
fn the_recipes_run_only_tested_commands() {
    let tested: BTreeSet<String> = TESTED.iter().map(|s| s.to_string()).collect();
    let mut all = BTreeSet::new();
    for file in RECIPES {
        let found = recipe_commands(file);
        assert!(
            found.contains("marksync plan --detailed-exitcode --markdown"),
            "{file}: no plan for the pull request comment: {found:?}"
        );
        let untested: Vec<_> = found.difference(&tested).collect();
        assert!(untested.is_empty(), "{file}: untested steps {untested:?}");
        all.extend(found);
    }
    assert_eq!(all, tested, "a tested step no recipe runs any more");
}

#[test]
fn the_commands_are_found_in_shell_lines() {
    assert_eq!(
        invocations(
            r#"code=0; marksync plan --detailed-exitcode --markdown $flag > plan.md || code=$?"#
        ),
        ["marksync plan --detailed-exitcode --markdown"]
    );
    assert_eq!(
        invocations(
            "run: marksync plan ${{ github.event_name == 'schedule' && '--refresh' || '' }} ${{ steps.override.outputs.flag }} --out plan.bin"
        ),
        ["marksync plan --out plan.bin"]
    );
    assert!(invocations("cargo install --root ~/.marksync marksync").is_empty());
}

/// Runs `marksync ARGS` in a recipe's checkout: against a state file, or with the state in
/// the local S3 server (the standard AWS environment set, as the recipes' jobs set it).
struct Checkout {
    dir: tempfile::TempDir,
    s3: Option<&'static common::s3::S3>,
}

impl Checkout {
    fn run(&self, args: &[&str]) -> common::cli::Output {
        let mut cmd = common::cli::marksync_command();
        if let Some(s3) = self.s3 {
            s3.apply_env(&mut cmd);
        }
        let out = common::cli::run_bounded(cmd.args(args).current_dir(self.dir.path()), "");
        common::cli::Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The state as stored (`state pull`: the same bytes for a file or an object store).
    fn state(&self) -> String {
        let pulled = self.run(&["state", "pull"]);
        assert_eq!(pulled.code, 0, "{}", pulled.stderr);
        pulled.stdout
    }
}

fn run_the_recipe_steps(c: &Checkout) {
    let run = |args: &[&str]| c.run(args);

    // Pull request: validate, then the plan for the comment (exit 2: changes).
    let validate = run(&["validate"]);
    assert_eq!(validate.code, 0, "{}", validate.stderr);
    let plan = run(&["plan", "--detailed-exitcode", "--markdown"]);
    assert_eq!(plan.code, 2, "changes: {}{}", plan.stdout, plan.stderr);
    assert_eq!(
        plan.stdout.matches("<!-- marksync-plan -->").count(),
        1,
        "one marker for the sticky comment: {}",
        plan.stdout
    );

    // Merge: plan into a file, apply exactly it.
    let out = run(&["plan", "--out", "plan.bin"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let apply = run(&["apply", "--lock-timeout", "10m", "plan.bin"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply
            .stdout
            .contains("Apply complete: 3 set, 0 cleared, 0 renewed"),
        "{}",
        apply.stdout
    );

    // The daily job right after: no drift, nothing to do.
    let drift = run(&["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(drift.code, 0, "{}{}", drift.stdout, drift.stderr);

    // A second apply of the same file is refused, and nothing is sent or recorded.
    let before = c.state();
    let replay = run(&["apply", "--lock-timeout", "10m", "plan.bin"]);
    assert_eq!(replay.code, 1, "{}{}", replay.stdout, replay.stderr);
    assert_eq!(c.state(), before, "the state is untouched");

    // A mass clear: the pull request's check fails (exit 3) until the reviewed override.
    std::fs::write(c.dir.path().join("marks/physics.yaml"), "groups: {}\n").unwrap();
    let refused = run(&["plan", "--detailed-exitcode", "--markdown"]);
    assert_eq!(refused.code, 3, "{}{}", refused.stdout, refused.stderr);
    let overridden = run(&[
        "plan",
        "--detailed-exitcode",
        "--markdown",
        "--allow-mass-clear",
    ]);
    assert_eq!(
        overridden.code, 2,
        "{}{}",
        overridden.stdout, overridden.stderr
    );
    assert!(
        overridden.stdout.contains("overridden"),
        "{}",
        overridden.stdout
    );

    // Without the override the merge applies nothing; with it, the saved plan carries it.
    let out = run(&["plan", "--out", "plan.bin"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let before = c.state();
    let apply = run(&["apply", "--lock-timeout", "10m", "plan.bin"]);
    assert_eq!(apply.code, 3, "{}{}", apply.stdout, apply.stderr);
    assert_eq!(c.state(), before, "nothing sent, nothing recorded");
    let out = run(&["plan", "--allow-mass-clear", "--out", "plan.bin"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let apply = run(&["apply", "--lock-timeout", "10m", "plan.bin"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(apply.stdout.contains("3 cleared"), "{}", apply.stdout);
}

#[test]
fn the_recipe_steps_run_in_order_against_the_emulator() {
    let c = Checkout {
        dir: embedded_dir(CONFIG, DESIRED),
        s3: None,
    };
    run_the_recipe_steps(&c);
}

#[test]
fn the_recipe_steps_run_in_order_with_the_state_in_the_local_s3_server() {
    let Some(s3) = common::s3::s3() else { return };
    let url = s3.url("marksync/state.json");
    let config = CONFIG.replace("state: state/marksync.json", &format!("state: {url}"));
    let c = Checkout {
        dir: embedded_dir(&config, DESIRED),
        s3: Some(s3),
    };
    run_the_recipe_steps(&c);
    // The state is in the store, not in a folder named `s3:` beside the config.
    assert!(!c.dir.path().join("s3:").exists());
    assert!(!c.dir.path().join("state").exists());
}

#[test]
fn the_pre_commit_hook_validates() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let hooks = std::fs::read_to_string(root.join(".pre-commit-hooks.yaml")).unwrap();
    assert!(hooks.contains("entry: marksync validate"));
}
