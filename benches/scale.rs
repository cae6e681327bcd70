//! Scale benchmark for `plan`: 1,000 groups x 1,000 members (1,000,000 member-mark pairs) with a
//! state file of the same size where 1% differs, in every layout a desired file is written in:
//! one big block-YAML file, 1,000 block-YAML files, one YAML flow file (a group per line), block
//! YAML with one flow mapping per group, one JSON file on one line (as scripts write it), the same
//! with one `\u00e9` escape, and one pretty-printed JSON file.
//!
//! Run: `cargo bench --bench scale` (add `-- --runs 5` for more runs, `-- --layout json-one-line`
//! for one layout: `block`, `many-files`, `flow`, `block-flow-groups`, `json-one-line`,
//! `json-escape`, `json-pretty`; `-- --empty-state` plans from an empty state). It prints, per
//! layout, the wall time and peak RSS of the real `marksync plan --json` process, and a per-phase
//! breakdown (load desired, load state, plan) measured in a child process of its own.
//!
//! The anchor, measured in the same run in a process of its own: serde_json parsing the same data
//! as JSON into typed maps. SPEC 3's goal: every layout plans in at most twice the anchor's time
//! and in at most 250 MB; each layout's line says how it compares.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

const GROUPS: usize = 1000;
const MEMBERS: usize = 1000;
const NOW: i64 = 1_764_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--phases") {
        phases(Path::new(&args[2]));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--anchor") {
        anchor(Path::new(&args[2]));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--run-plan") {
        // In a process of its own, so RUSAGE_CHILDREN is this one run's peak, not the maximum over
        // every run of the bench.
        let (elapsed, rss, len) = run_plan(Path::new(&args[2]));
        println!("{} {rss} {len}", elapsed.as_nanos());
        return;
    }
    let runs = common::flag("--runs").unwrap_or(3usize);
    let only: Option<String> = common::flag("--layout");
    let empty_state = std::env::args().any(|a| a == "--empty-state");
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let layouts: Vec<(&str, Layout)> = LAYOUTS
        .iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .copied()
        .collect();
    assert!(
        !layouts.is_empty(),
        "unknown --layout; try one of {LAYOUTS:?}"
    );
    let configs: Vec<(String, PathBuf)> = layouts
        .iter()
        .map(|(name, layout)| {
            (
                layout.describe(),
                setup(dir.path(), name, *layout, empty_state),
            )
        })
        .collect();
    println!(
        "generated {GROUPS} groups x {MEMBERS} members ({} pairs), {}, in {:.1?}",
        GROUPS * MEMBERS,
        if empty_state {
            "empty state"
        } else {
            "state with 1% differing"
        },
        t.elapsed()
    );
    // The anchor: the same data as one-line JSON, parsed by serde_json into typed maps.
    let anchor_file = dir.path().join("anchor.json");
    std::fs::write(&anchor_file, json_text(false, false)).expect("write");
    let mut anchor_times = Vec::new();
    let mut anchor_peak = 0;
    for _ in 0..runs {
        let out = Command::new(std::env::current_exe().expect("exe"))
            .arg("--anchor")
            .arg(&anchor_file)
            .output()
            .expect("anchor child");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<u64>().expect("number"));
        anchor_times.push(Duration::from_nanos(fields.next().expect("time")));
        anchor_peak = anchor_peak.max(fields.next().expect("rss"));
    }
    anchor_times.sort();
    let anchor_min = anchor_times[0];
    println!(
        "anchor, serde_json into typed maps (one-line JSON): min {anchor_min:.2?} over {runs} runs; peak RSS {} MB; goal: plan within {:.2?} and 250 MB",
        anchor_peak / 1024,
        anchor_min * 2
    );
    for (name, config) in &configs {
        let mut times = Vec::new();
        let mut peak = 0;
        let mut out_len = 0;
        for _ in 0..runs {
            let (elapsed, rss, len) = run_plan_isolated(config);
            times.push(elapsed);
            peak = peak.max(rss);
            out_len = len;
        }
        times.sort();
        let ratio = times[0].as_secs_f64() / anchor_min.as_secs_f64();
        let goal = if ratio <= 2.0 && peak <= 250 * 1024 {
            "within the goal"
        } else {
            "MISSES the goal"
        };
        println!(
            "plan, {name}: median {:.2?}, min {:.2?} over {runs} runs ({ratio:.2}x the anchor); peak RSS {} MB; JSON plan {} KB; {goal}",
            times[times.len() / 2],
            times[0],
            peak / 1024,
            out_len / 1024
        );
        let phases = Command::new(std::env::current_exe().expect("exe"))
            .arg("--phases")
            .arg(config)
            .output()
            .expect("phase child");
        print!("{}", String::from_utf8_lossy(&phases.stdout));
    }
}

/// How the desired files are written.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// One block-YAML file.
    Block,
    /// One block-YAML file per group.
    ManyFiles,
    /// One YAML flow file, a group per line, plain words.
    Flow,
    /// One block-YAML file whose groups are each one flow mapping on one line.
    BlockFlowGroups,
    /// One JSON file on one line.
    JsonOneLine,
    /// One JSON file on one line with one `\u00e9` escape (in the first account).
    JsonEscape,
    /// One JSON file, pretty-printed (every mark on a line of its own).
    JsonPretty,
}

const LAYOUTS: &[(&str, Layout)] = &[
    ("block", Layout::Block),
    ("many-files", Layout::ManyFiles),
    ("flow", Layout::Flow),
    ("block-flow-groups", Layout::BlockFlowGroups),
    ("json-one-line", Layout::JsonOneLine),
    ("json-escape", Layout::JsonEscape),
    ("json-pretty", Layout::JsonPretty),
];

impl Layout {
    fn describe(self) -> String {
        match self {
            Layout::Block => "one big block-YAML file",
            Layout::ManyFiles => "1,000 block-YAML files",
            Layout::Flow => "one YAML flow file",
            Layout::BlockFlowGroups => "block YAML, a flow mapping per group",
            Layout::JsonOneLine => "one-line JSON file",
            Layout::JsonEscape => "one-line JSON file with one \\u00e9",
            Layout::JsonPretty => "pretty JSON file",
        }
        .to_string()
    }
}

/// Writes the config, the desired files and the state for one layout; returns the config path.
fn setup(root: &Path, name: &str, layout: Layout, empty_state: bool) -> PathBuf {
    let base = root.join(name);
    let marks = base.join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    let mark = |m: usize| 1000 + m % 10;
    match layout {
        Layout::Block | Layout::ManyFiles => {
            let mut big = String::from("groups:\n");
            for g in 0..GROUPS {
                let mut text = String::new();
                let _ = writeln!(text, "  \"@TGS#bench{g:05}\":\n    members:");
                for m in 0..MEMBERS {
                    let _ = writeln!(text, "      user{g:04}x{m:04}: [{}]", mark(m));
                }
                if matches!(layout, Layout::Block) {
                    big.push_str(&text);
                } else {
                    std::fs::write(
                        marks.join(format!("group{g:04}.yaml")),
                        format!("groups:\n{text}"),
                    )
                    .expect("write");
                }
            }
            if matches!(layout, Layout::Block) {
                std::fs::write(marks.join("all.yaml"), big).expect("write");
            }
        }
        Layout::Flow => {
            let mut text = String::from("{groups: {\n");
            for g in 0..GROUPS {
                let _ = write!(text, "  \"@TGS#bench{g:05}\": {{members: {{");
                for m in 0..MEMBERS {
                    let sep = if m > 0 { ", " } else { "" };
                    let _ = write!(text, "{sep}user{g:04}x{m:04}: [{}]", mark(m));
                }
                text.push_str(if g + 1 < GROUPS { "}},\n" } else { "}}\n" });
            }
            text.push_str("}}\n");
            std::fs::write(marks.join("all.yaml"), text).expect("write");
        }
        Layout::BlockFlowGroups => {
            let mut text = String::from("groups:\n");
            for g in 0..GROUPS {
                let _ = write!(text, "  \"@TGS#bench{g:05}\": {{members: {{");
                for m in 0..MEMBERS {
                    let sep = if m > 0 { ", " } else { "" };
                    let _ = write!(text, "{sep}user{g:04}x{m:04}: [{}]", mark(m));
                }
                text.push_str("}}\n");
            }
            std::fs::write(marks.join("all.yaml"), text).expect("write");
        }
        Layout::JsonOneLine | Layout::JsonEscape | Layout::JsonPretty => {
            let text = json_text(
                matches!(layout, Layout::JsonPretty),
                matches!(layout, Layout::JsonEscape),
            );
            std::fs::write(marks.join("all.json"), text).expect("write");
        }
    }
    // The state: the same pairs, except that 1% of members hold another mark than desired.
    let mut state =
        String::from("{\"format_version\":1,\"sdkappid\":1400000000,\"serial\":1,\"groups\":{");
    for g in 0..if empty_state { 0 } else { GROUPS } {
        if g > 0 {
            state.push(',');
        }
        let _ = write!(state, "\"@TGS#bench{g:05}\":{{");
        for m in 0..MEMBERS {
            if m > 0 {
                state.push(',');
            }
            let mark = if m % 100 == 0 {
                1000 + (m + 1) % 10
            } else {
                1000 + m % 10
            };
            let _ = write!(state, "\"user{g:04}x{m:04}\":{{\"{mark}\":{NOW}}}");
        }
        state.push('}');
    }
    state.push_str("}}\n");
    std::fs::create_dir_all(base.join("state")).expect("mkdir");
    std::fs::write(base.join("state/marksync.json"), state).expect("write");
    let config = base.join("marksync.yaml");
    std::fs::write(
        &config,
        "sdkappid: 1400000000\nidentifier: administrator\nendpoint: embedded\ndesired: marks/\nstate: state/marksync.json\n",
    )
    .expect("write");
    config
}

/// The desired data as one JSON file: one line or pretty-printed, with or without one `\u00e9`
/// escape (appended to the first account).
fn json_text(pretty: bool, escape: bool) -> String {
    let mark = |m: usize| 1000 + m % 10;
    let mut groups = serde_json::Map::new();
    for g in 0..GROUPS {
        let mut members = serde_json::Map::new();
        for m in 0..MEMBERS {
            members.insert(format!("user{g:04}x{m:04}"), serde_json::json!([mark(m)]));
        }
        groups.insert(
            format!("@TGS#bench{g:05}"),
            serde_json::json!({ "members": members }),
        );
    }
    let doc = serde_json::json!({ "groups": groups });
    let text = if pretty {
        serde_json::to_string_pretty(&doc)
    } else {
        serde_json::to_string(&doc)
    }
    .expect("json");
    let text = if escape {
        text.replacen("\"user0000x0000\"", "\"user0000x0000\\u00e9\"", 1)
    } else {
        text
    };
    text + "\n"
}

/// The anchor, in a process of its own: reads `path` and parses it with serde_json into typed
/// maps; prints the time to read and parse it and the peak RSS in KB.
fn anchor(path: &Path) {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)] // read to be parsed, never looked at
    struct Group {
        #[serde(default)]
        members: std::collections::BTreeMap<String, Vec<u32>>,
        #[serde(default)]
        marks: std::collections::BTreeMap<String, Vec<String>>,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        groups: std::collections::BTreeMap<String, Group>,
    }
    let t = Instant::now();
    let text = std::fs::read_to_string(path).expect("read");
    let file: File = serde_json::from_str(&text).expect("anchor parse");
    let elapsed = t.elapsed();
    assert_eq!(file.groups.len(), GROUPS);
    println!("{} {}", elapsed.as_nanos(), peak_rss_kb());
}

/// Runs the real binary; returns wall time, the child's peak RSS in KB, and the output size.
fn run_plan(config: &Path) -> (Duration, u64, usize) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_marksync"))
        .args(["-q", "-c"])
        .arg(config)
        .args(["plan", "--json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run marksync");
    let elapsed = t.elapsed();
    assert!(out.status.success(), "marksync plan failed");
    (elapsed, children_max_rss_kb(), out.stdout.len())
}

/// [`run_plan`] in a child of its own (see `--run-plan`).
fn run_plan_isolated(config: &Path) -> (Duration, u64, usize) {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .arg("--run-plan")
        .arg(config)
        .output()
        .expect("run-plan child");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("number"));
    let mut next = || fields.next().expect("three fields");
    (Duration::from_nanos(next()), next(), next() as usize)
}

/// Peak RSS of the largest waited-for child, in KB.
fn children_max_rss_kb() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss as u64
    }
}

/// In a fresh process: time each phase and report this process's peak RSS.
fn phases(config_path: &Path) {
    let config = marksync::config::load(config_path).expect("config");
    let t = Instant::now();
    let desired =
        marksync::desired::load(&config.desired, config.max_alias_pairs).expect("desired");
    let load_desired = t.elapsed();
    let store = marksync::state::open(&config.state, config.state_store.as_ref()).expect("store");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let t = Instant::now();
    let state = runtime
        .block_on(store.load(config.sdkappid))
        .expect("state");
    let load_state = t.elapsed();
    let t = Instant::now();
    let plan = marksync::plan::plan(&desired, &state, NOW, &marksync::plan::Policy::default());
    let planning = t.elapsed();
    let t = Instant::now();
    let json = marksync::render::json_plan(&plan);
    let render = t.elapsed();
    println!(
        "  phases: load desired {load_desired:.2?}, load state {load_state:.2?}, plan {planning:.2?} \
         ({} calls, {} set, {} clear), render {render:.2?} ({} KB); peak RSS {} MB",
        plan.summary.calls,
        plan.summary.set,
        plan.summary.clear,
        json.len() / 1024,
        peak_rss_kb() / 1024
    );
}

/// This process's peak RSS (VmHWM) in KB.
fn peak_rss_kb() -> u64 {
    common::proc_status_kib("self", "VmHWM")
}
