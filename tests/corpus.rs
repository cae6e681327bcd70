//! The diagnostics corpus: every way a desired file or the config can be wrong, each with the exact
//! text marksync prints for it.
//!
//! Layout: `tests/corpus/desired/<case>.yaml` and `tests/corpus/config/<case>.yaml` are inputs;
//! `tests/corpus/fs/` has no inputs, because those cases need the file system (symlinks, FIFOs,
//! permissions, non-UTF-8 bytes, generated files) and are built in a temporary directory by
//! [`build`]. Next to each case is `<case>.expected`: what loading it reports, with paths printed
//! relative to the corpus directory (or the temporary directory).
//!
//! One helper, [`check`], runs a case and compares. To accept new output after a deliberate
//! change, run `MARKSYNC_BLESS=1 cargo test --test corpus` and review the diff in git.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use marksync::config::load as load_config;
use marksync::desired::load as load_desired;

macro_rules! cases {
    ($($kind:ident: [$($name:ident),* $(,)?]),* $(,)?) => {
        $(mod $kind {
            $(#[test]
            fn $name() {
                super::check(concat!(stringify!($kind), "/", stringify!($name)));
            })*
        })*
        /// Every case, so that a corpus file without a test (or a test without a file) is noticed.
        const CASES: &[&str] = &[$($(concat!(stringify!($kind), "/", stringify!($name)),)*)*];
    };
}

cases! {
    desired: [
        account_32_bytes_ok,
        account_33_bytes,
        account_empty,
        account_is_list,
        account_is_map_key_list,
        account_listed_twice_under_mark,
        account_non_ascii_warns,
        bad_marks,
        duplicate_account,
        duplicate_group,
        duplicate_mark,
        duplicate_section,
        eleven_marks,
        empty,
        good_members_and_marks,
        group_id_number_as_written,
        group_is_list,
        group_null,
        group_empty_ok,
        groups_is_list,
        malformed,
        mark_999,
        mark_fraction,
        mark_listed_twice,
        mark_negative,
        mark_string,
        mark_too_large,
        mark_zero,
        marks_is_string,
        marks_value_not_list,
        members_is_list,
        multiple_errors,
        tab_indentation,
        ten_marks_ok,
        top_level_list,
        unknown_key,
        unknown_top_level_key,
        // Keys and names are the text as written (issue 7, "Keys lose their text").
        keys_as_written,
        account_null,
        mark_spellings,
        mark_tagged,
        unknown_tag,
        tagged_str_ok,
        tags_on_names,
        merge_key_quoted,
        // "Separators inside an account"; group IDs follow the vendor's rule.
        account_separators,
        group_id_rules,
        // "No groups" by accident.
        groups_null,
        groups_tilde,
        document_marker_only,
        groups_empty_ok,
        // Merge keys and anchors.
        merge_two_members,
        merge_shadows_members,
        anchor_reused_150_times,
        alias_bomb,
        // Library wording; one document per file.
        deep_nesting,
        bad_indentation,
        unknown_escape,
        plain_at_sign,
        section_key_null,
        top_level_key_list,
        two_documents,
        trailing_empty_document_ok,
        // JSON desired files; output proportional to the input.
        json_ok,
        json_errors,
        json_one_line_error,
        many_errors,
        many_warnings,
        crlf_ok,
        // Issue 14: JSON through serde_json (nulls, duplicate keys, its errors, escapes).
        json_nulls,
        json_duplicate_keys,
        json_trailing_comma,
        json_escapes_ok,
        json_cut_off,
        json_null_file,
        // Issue 14: the parser's own wording, rewritten with what to do.
        flow_missing_comma,
        flow_colon_before_bracket,
        misplaced_bracket,
        content_after_document_end,
        brackets_too_deep,
        tab_in_indentation,
        lone_surrogate,
        bom_inside,
        empty_list_entry,
        control_character_in_account,
        mark_minus_zero,
        simple_key_without_colon,
        text_after_quote,
    ],
    config: [
        bad_duration,
        state_in_object_store_ok,
        state_url_and_store_mistakes,
        state_url_slash_missing,
        state_store_azure_ok,
        state_store_azure_mistakes,
        state_store_s3_with_an_azure_account,
        state_gs_not_supported,
        state_url_azure_container_names,
        bad_region,
        config_is_list,
        debounce_300s_typo,
        debounce_overflows,
        duplicate_key,
        duration_beyond_u64,
        duration_fraction_no_unit,
        duration_number,
        duration_zero,
        durations_all_out_of_range,
        durations_at_bounds_ok,
        empty,
        endpoint_ftp,
        endpoint_http_remote,
        good_full,
        good_minimal,
        guard_bad,
        guard_infinite,
        guard_not_finite,
        http_bad_listen,
        identifier_boolean,
        identifier_empty,
        identifier_hex_like,
        identifier_numeric,
        identifier_too_long,
        malformed,
        max_calls_0,
        max_calls_500,
        missing_sdkappid,
        multiple_errors,
        nested_junk,
        nested_too_deep,
        offline_error_codes_bad,
        offline_error_codes_other_meaning,
        offline_error_codes_u64_max,
        path_empty,
        reassert_every_30ms_typo,
        reassert_every_month_typo,
        reassert_every_overflows,
        refresh_and_backup_ok,
        refresh_every_too_short,
        renew_margin_72h,
        renew_margin_too_short,
        retry_pending_every_too_short,
        sdkappid_fraction,
        sdkappid_negative,
        sdkappid_string,
        sdkappid_too_large,
        sdkappid_zero,
        short_periods_emulator_floor,
        short_periods_emulator_ok,
        unknown_key,
        usersig_ttl_never_expires,
        // Issue 14: messages in the user's terms.
        two_documents,
        identifier_tab,
        duration_number_out_of_range,
        // Issue 16: notifications.
        notify_mistakes,
        notify_ok,
    ],
    fs: [
        comment_only_file,
        blank_file,
        extensions_any_case,
        dangling_symlink,
        directory_with_ignored_files,
        empty_file,
        fifo,
        group_in_two_files,
        group_in_two_files_and_other_errors,
        large_file_split,
        alias_pairs_across_files,
        alias_pairs_one_file,
        member_1000_ok,
        member_1001,
        missing_directory,
        empty_directory,
        non_utf8,
        single_file,
        symlink_loop_dir,
        symlink_loop_file,
        unreadable_file,
    ],
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Runs one case (`desired/<name>`, `config/<name>` or `fs/<name>`) and compares what it reports
/// with `<case>.expected`.
fn check(case: &str) {
    let (kind, name) = case.split_once('/').expect("case is kind/name");
    let dir = corpus().join(kind);
    let actual = match kind {
        "desired" => desired_report(
            &desired_input(&dir, name),
            &dir,
            marksync::desired::DEFAULT_MAX_ALIAS_PAIRS,
        ),
        "config" => config_report(&dir.join(format!("{name}.yaml")), &dir),
        // Root reads a mode-000 file anyway: the reader runs as nobody instead.
        "fs" if name == "unreadable_file" && running_as_root() => match unreadable_as_nobody() {
            Some(report) => report,
            None => return,
        },
        "fs" => {
            let tmp = tempfile::tempdir().expect("temporary directory");
            let target = build(name, tmp.path());
            let root = tmp.path().to_path_buf();
            // The alias cases run as under `max_alias_pairs: 1000` in the config, so that
            // their files stay small.
            let max_alias_pairs = if name.starts_with("alias_pairs") {
                1000
            } else {
                marksync::desired::DEFAULT_MAX_ALIAS_PAIRS
            };
            // Bounded: a FIFO named like a desired file must be refused, not read (which would
            // block forever), so a hang is a failure, not a stuck test run.
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(desired_report(&target, &root, max_alias_pairs));
            });
            rx.recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{case}: loading did not finish within 30 s"))
        }
        other => panic!("unknown case kind {other}"),
    };
    let expected_path = dir.join(format!("{name}.expected"));
    if std::env::var_os("MARKSYNC_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).expect("write .expected");
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run MARKSYNC_BLESS=1 cargo test --test corpus to create it",
            expected_path.display()
        )
    });
    if actual != expected {
        let diff = similar::TextDiff::from_lines(&expected, &actual);
        panic!(
            "{case}: output differs from {name}.expected (- expected, + actual):\n{}",
            diff.unified_diff().context_radius(3)
        );
    }
}

/// A desired case's input: `<name>.yaml`, or `<name>.json` for the JSON cases.
fn desired_input(dir: &Path, name: &str) -> PathBuf {
    let yaml = dir.join(format!("{name}.yaml"));
    if yaml.exists() {
        yaml
    } else {
        dir.join(format!("{name}.json"))
    }
}

/// What loading the desired path reports: every diagnostic, or the warnings and what was loaded.
fn desired_report(path: &Path, root: &Path, max_alias_pairs: usize) -> String {
    let out = match load_desired(path, max_alias_pairs) {
        Err(diags) => format!("{diags}\n"),
        Ok(state) => {
            let mut out = String::new();
            for w in &state.warnings {
                let _ = writeln!(out, "{w}");
            }
            let _ = writeln!(
                out,
                "ok: {} groups, {} marks",
                state.groups.len(),
                state.pair_count()
            );
            for (id, group) in &state.groups {
                let _ = writeln!(out, "group {id}");
                if group.members.len() > 20 {
                    let _ = writeln!(out, "  ({} members)", group.members.len());
                    continue;
                }
                for (account, marks) in &group.members {
                    let marks: Vec<String> = marks.iter().map(|m| m.to_string()).collect();
                    let _ = writeln!(out, "  {account}: {}", marks.join(" "));
                }
            }
            out
        }
    };
    relative(&out, root)
}

/// What loading the config reports: every diagnostic, or the config read (defaults filled in).
fn config_report(path: &Path, root: &Path) -> String {
    let out = match load_config(path) {
        Err(diags) => format!("{diags}\n"),
        Ok(c) => format!("ok: {c:#?}\n"),
    };
    relative(&out, root)
}

/// Paths printed relative to `root`, so expectations do not depend on where the checkout is.
fn relative(text: &str, root: &Path) -> String {
    let mut text = text.to_string();
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    for r in [canonical.as_path(), root] {
        text = text.replace(&format!("{}/", r.display()), "");
    }
    text
}

/// Builds an `fs/` case under `root` and returns the desired path to load.
fn build(name: &str, root: &Path) -> PathBuf {
    use std::os::unix::fs::symlink;
    let marks = root.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let write = |rel: &str, content: &[u8]| {
        let p = marks.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    let group = |id: &str, account: &str| {
        format!("groups:\n  \"{id}\":\n    members:\n      {account}: [1000]\n").into_bytes()
    };
    match name {
        "missing_directory" => std::fs::remove_dir(&marks).unwrap(),
        "empty_directory" => std::fs::write(marks.join("README.md"), "not a desired file").unwrap(),
        "symlink_loop_dir" => {
            write("a.yaml", &group("@TGS#a", "alice"));
            std::fs::create_dir(marks.join("sub")).unwrap();
            symlink("..", marks.join("sub/up")).unwrap();
        }
        "symlink_loop_file" => {
            symlink("b.yaml", marks.join("a.yaml")).unwrap();
            symlink("a.yaml", marks.join("b.yaml")).unwrap();
        }
        "dangling_symlink" => {
            write("a.yaml", &group("@TGS#a", "alice"));
            symlink("gone.yaml", marks.join("x.yaml")).unwrap();
        }
        "unreadable_file" => {
            use std::os::unix::fs::PermissionsExt;
            write("x.yaml", &group("@TGS#a", "alice"));
            let p = marks.join("x.yaml");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        "fifo" => {
            write("a.yaml", &group("@TGS#a", "alice"));
            let status = std::process::Command::new("mkfifo")
                .arg(marks.join("x.yaml"))
                .status()
                .expect("run mkfifo");
            assert!(status.success(), "mkfifo failed");
        }
        "group_in_two_files_and_other_errors" => {
            // Every problem in one pass: the conflicts are reported beside the files' own
            // errors, not after they are fixed.
            write("a.yaml", &group("@TGS#a", "alice"));
            write(
                "b.yaml",
                b"groups:\n  \"@TGS#a\":\n    marks:\n      1001: [bob]\n  \"@TGS#b\":\n    members:\n      carol: [999]\n",
            );
            write(
                "c.json",
                br#"{"groups": {"@TGS#b": {"members": {"dave": [1000]}}, "@TGS#c": null}}"#,
            );
        }
        "group_in_two_files" => {
            write("a.yaml", &group("@TGS#a", "alice"));
            write(
                "sub/b.yaml",
                b"# the same group again, by mistake\ngroups:\n  \"@TGS#b\": {}\n  \"@TGS#a\":\n    marks:\n      1001: [bob]\n",
            );
        }
        "non_utf8" => write(
            "x.yaml",
            b"groups:\n  \"@TGS#a\":\n    members:\n      caf\xe9: [1000]\n",
        ),
        "empty_file" => write("x.yaml", b""),
        "blank_file" => write("x.yaml", b"\n   \n\n"),
        "extensions_any_case" => {
            // Skipping any of these would clear its groups' marks.
            write("a.YAML", &group("@TGS#a", "alice"));
            write("b.Yml", &group("@TGS#b", "bob"));
            write(
                "c.json",
                br#"{"groups": {"@TGS#c": {"members": {"carol": [1000]}}}}"#,
            );
            write("d.JSON", br#"{"groups": {}}"#);
            write("e.yaml.bak", b"not: [valid");
        }
        "comment_only_file" => write("x.yaml", b"# nothing here yet\n\n   # still nothing\n"),
        "member_1000_ok" | "member_1001" => {
            let n = if name == "member_1001" { 1001 } else { 1000 };
            let mut text = String::from("groups:\n  \"@TGS#big\":\n    marks:\n      600: [mod]\n");
            text.push_str("      1001:\n");
            for i in 0..n {
                let _ = writeln!(text, "        - student{i:04}");
            }
            write("big.yaml", text.as_bytes());
        }
        "large_file_split" => {
            // Over 1 MiB, so the file is split at group boundaries and parsed in parallel: line
            // numbers must still be those of the whole file, and a group repeated across chunks
            // must still be found.
            let mut text = String::from("groups:\n");
            for g in 0..4500 {
                let _ = writeln!(text, "  \"@TGS#g{g:04}\":\n    members:");
                for m in 0..10 {
                    let mark = if g == 4000 && m == 3 { 999 } else { 1000 + m };
                    let _ = writeln!(text, "      user{m:02}: [{mark}]");
                }
            }
            text.push_str("  \"@TGS#g0001\":\n    marks:\n      1000: [late]\n");
            assert!(
                text.len() > 1 << 20,
                "the file must be large enough to be split"
            );
            write("big.yaml", text.as_bytes());
        }
        // Aliases multiply a roster: three files adding 400 pairs each go over a
        // `max_alias_pairs` of 1000 together (issue 14); one reusing its anchor 60 times alone.
        "alias_pairs_across_files" => {
            for name in ["a", "b", "c"] {
                write(&format!("{name}.yaml"), aliased_roster(name, 20).as_bytes());
            }
        }
        "alias_pairs_one_file" => write("a.yaml", aliased_roster("a", 60).as_bytes()),
        "directory_with_ignored_files" => {
            write("a.yml", &group("@TGS#a", "alice"));
            write("README.md", b"not yaml: [");
            write(".hidden.yaml", b"not: [valid");
            write(".git/config.yaml", b"not: [valid");
            write("sub/deeper/b.yaml", &group("@TGS#b", "bob"));
        }
        "single_file" => {
            write("only.yaml", &group("@TGS#a", "alice"));
            write("other.yaml", b"not: [valid");
            return marks.join("only.yaml");
        }
        other => panic!("no builder for fs case {other}"),
    }
    marks
}

/// Whether this process runs as root, from `/proc/self/status` (no libc needed).
/// `fs/unreadable_file` as root: the tree is built as usual (mode 000) and the real binary's
/// `validate` runs as nobody (`setpriv --reuid=65534 --regid=65534 --clear-groups`), for whom
/// the file really is unreadable. Returns its diagnostics, relative to the tree, to compare with
/// the same `.expected` file; `None` when skipped (no `setpriv`, outside CI).
fn unreadable_as_nobody() -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if !common::require_tool(
        "to read as an unprivileged user when the tests run as root",
        "setpriv",
        &["--reuid=65534", "--regid=65534", "--clear-groups", "true"],
    ) {
        return None;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = tmp.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    build("unreadable_file", root);
    std::fs::write(
        root.join("marksync.yaml"),
        "sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\nstate: state.json\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::BIN)
        .arg("validate")
        .current_dir(root)
        .env_remove("MARKSYNC_CONFIG")
        .env("NO_COLOR", "1");
    let out = common::cli::run_bounded(&mut cmd, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "validate as nobody: {stderr}");
    // The lines about the desired files, as the library reports them (the CLI adds a summary).
    let report: String = stderr
        .lines()
        .filter(|l| l.starts_with("marks/"))
        .map(|l| format!("{l}\n"))
        .collect();
    Some(relative(&report, root))
}

fn running_as_root() -> bool {
    common::proc_status("self", "Uid").is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn every_corpus_file_is_a_case() {
    let mut on_disk = Vec::new();
    for kind in ["desired", "config", "fs"] {
        for entry in std::fs::read_dir(corpus().join(kind)).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy();
            on_disk.push(format!("{kind}/{stem}"));
        }
    }
    on_disk.sort();
    on_disk.dedup();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "corpus files and cases! list differ");
    for case in CASES {
        let (kind, name) = case.split_once('/').unwrap();
        if kind == "desired" {
            assert!(
                desired_input(&corpus().join(kind), name).exists(),
                "{case}: no input file"
            );
        } else if kind != "fs" {
            assert!(
                corpus().join(kind).join(format!("{name}.yaml")).exists(),
                "{case}: no input file"
            );
        }
    }
}

/// A roster of 10 members with marks 1000 and 1001 (20 pairs written out) under an anchor,
/// reused by `groups` groups: each reuse adds 20 pairs through the alias.
fn aliased_roster(name: &str, groups: usize) -> String {
    let mut text = format!("groups:\n  \"@TGS#{name}0\":\n    members: &roster\n");
    for m in 0..10 {
        let _ = writeln!(text, "      user{m:04}: [1000, 1001]");
    }
    for g in 1..=groups {
        let _ = writeln!(text, "  \"@TGS#{name}{g}\":\n    members: *roster");
    }
    text
}
