//! `marksync man --dir DIR` (issue 16): one page per command, every flag of every command on
//! its page, every page it refers to generated with it, and the main page's ENVIRONMENT and
//! FILES sections. The real binary; each `--help` is the reference for its page.

mod common;

use std::collections::BTreeSet;

use common::cli::marksync;

/// The pages written to a fresh directory: (name without `.1`, text with roff's `\-` read as
/// `-`).
fn pages() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let out = marksync(dir.path(), &["man", "--dir", "pages"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut pages: Vec<_> = std::fs::read_dir(dir.path().join("pages"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let name = name.strip_suffix(".1").expect("section 1").to_owned();
            let text = std::fs::read_to_string(&path).unwrap().replace("\\-", "-");
            (name, text)
        })
        .collect();
    pages.sort();
    pages
}

/// The pages `text` refers to: each `NAME(1)`, roff fonts removed.
fn references(text: &str) -> BTreeSet<String> {
    let plain = text.replace("\\fB", "").replace("\\fR", "");
    plain
        .match_indices("(1)")
        .map(|(i, _)| {
            plain[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The flags `--help` lists for `args` (lines of the options lists: `  -c, --config <FILE>`).
fn flags(args: &[&str]) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = args.to_vec();
    all.push("--help");
    let out = marksync(dir.path(), &all);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .flat_map(|l| {
            l.split([' ', ',', '='])
                .filter(|w| w.starts_with('-') && w.len() > 1)
                // `-v, --verbose...`: a flag that may be repeated.
                .map(|w| w.trim_end_matches("...").to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.contains('<'))
        .collect()
}

#[test]
fn every_command_has_a_page_with_every_flag_and_every_reference_exists() {
    let pages = pages();
    let names: BTreeSet<String> = pages.iter().map(|(n, _)| n.clone()).collect();
    for expected in [
        "marksync",
        "marksync-validate",
        "marksync-plan",
        "marksync-apply",
        "marksync-run",
        "marksync-state",
        "marksync-state-show",
        "marksync-state-rm",
        "marksync-man",
    ] {
        assert!(names.contains(expected), "no page {expected}: {names:?}");
    }
    for (name, text) in &pages {
        assert!(text.contains(&format!(".TH {name} 1")), "{name}: the title");
        for r in references(text) {
            assert!(
                names.contains(&r),
                "{name} refers to {r}(1), which is not generated"
            );
        }
        if name != "marksync" {
            assert!(
                references(text).contains("marksync"),
                "{name} leads back to marksync(1)"
            );
        }
        let command: Vec<&str> = name.split('-').skip(1).collect();
        let flags = flags(&command);
        assert!(flags.contains("--help"), "{name}: {flags:?}");
        for flag in flags {
            // The option lists render as `\fB--json\fR`; a short flag as `\fB-c\fR`.
            assert!(
                text.contains(&format!("\\fB{flag}\\fR")),
                "{name} lacks {flag}:\n{text}"
            );
        }
    }
}

#[test]
fn the_main_page_has_environment_and_files() {
    let pages = pages();
    let main = &pages.iter().find(|(n, _)| n == "marksync").unwrap().1;
    let environment = main
        .split(".SH \"ENVIRONMENT\"")
        .nth(1)
        .expect("an ENVIRONMENT section");
    let environment = environment.split("\n.SH ").next().unwrap();
    for var in [
        "MARKSYNC_CONFIG",
        "MARKSYNC_SECRET_KEY",
        "MARKSYNC_LOG",
        "RUST_LOG",
        "NO_COLOR",
        "AWS_ACCESS_KEY_ID",
        "AWS_ENDPOINT_URL",
        "CREDENTIALS_DIRECTORY",
    ] {
        assert!(environment.contains(var), "{var}: {environment}");
    }
    let files = main.split(".SH \"FILES\"").nth(1).expect("a FILES section");
    let files = files.split("\n.SH ").next().unwrap();
    for file in ["marksync.yaml", ".bak", ".intents", ".lock"] {
        assert!(files.contains(file), "{file}: {files}");
    }
}
