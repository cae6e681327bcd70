//! ARCHITECTURE.md's layers hold where they were once broken: a module never names one it must
//! not know (`crate::x` in code, a `use crate::{x, ..}` group, or a doc link). Reading the
//! sources is cheap and catches the import the day it is written, not at the next review.

use std::path::{Path, PathBuf};

/// One rule: the sources under `from` (a file, or a folder read recursively) never name
/// `crate::{to}`.
struct Rule {
    from: &'static [&'static str],
    to: &'static str,
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        from: &["src/render.rs", "src/render"],
        to: "apply",
        why: "render shows what happened to calls; those types live in `outcome`, below both",
    },
    Rule {
        from: &["src/saved_plan.rs", "src/saved_plan"],
        to: "render",
        why: "a saved plan needs no output shape; ages are formatted in `model`",
    },
    Rule {
        from: &["src/state"],
        to: "config",
        why: "state owns its location and store settings; config parses into them",
    },
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file at `rel` (a file, or a folder read recursively), sorted.
fn sources(rel: &str) -> Vec<PathBuf> {
    let path = root().join(rel);
    if path.is_file() {
        return vec![path];
    }
    let mut out = Vec::new();
    let mut dirs = vec![path];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The modules `text` names right after `crate::`, with the 1-based line and column of each
/// `crate::`: `crate::a::b` gives `a`, `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(text: &str) -> Vec<(String, usize, usize)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(at) = line[from..].find("crate::") {
            let start = from + at;
            from = start + "crate::".len();
            // `marksync_crate::` or `foocrate::` are other paths.
            let before = line[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &line[from..];
            let names: Vec<String> = match rest.strip_prefix('{') {
                // One level of grouping, the way rustfmt writes `use` lines.
                Some(group) => {
                    let group = group.split('}').next().unwrap_or("");
                    group
                        .split(',')
                        .map(|part| ident(part.trim_start()))
                        .collect()
                }
                None => vec![ident(rest)],
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                out.push((name, i + 1, start + 1));
            }
        }
    }
    out
}

#[test]
fn the_scanner_finds_plain_grouped_and_documented_paths() {
    let found = |text: &str| -> Vec<String> {
        crate_paths(text)
            .into_iter()
            .map(|(name, ..)| name)
            .collect()
    };
    assert_eq!(found("use crate::apply::Totals;"), ["apply"]);
    assert_eq!(
        found("use crate::{model, apply::Skip};"),
        ["model", "apply"]
    );
    assert_eq!(found("/// See [`crate::apply::execute`]."), ["apply"]);
    assert_eq!(found("fn f(t: &crate::apply::Totals) {}"), ["apply"]);
    assert_eq!(
        found("use crate::applyx; use other_crate::apply;"),
        ["applyx"]
    );
    assert_eq!(
        crate_paths("a\n  x = crate::render::age(1);"),
        [("render".to_string(), 2, 7)]
    );
}

#[test]
fn no_module_names_a_module_above_it() {
    let mut broken = Vec::new();
    for rule in RULES {
        let files: Vec<PathBuf> = rule.from.iter().flat_map(|f| sources(f)).collect();
        // A renamed folder must not turn the rule into one that checks nothing.
        assert!(
            !files.is_empty(),
            "no sources at {:?}: update this rule to the new layout",
            rule.from
        );
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (name, line, column) in crate_paths(&text) {
                if name == rule.to {
                    broken.push(format!(
                        "{}:{line}:{column}: names `crate::{}`: {}",
                        file.strip_prefix(root()).unwrap_or(&file).display(),
                        rule.to,
                        rule.why
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports that run the wrong way (ARCHITECTURE.md, Layers):\n{}",
        broken.join("\n")
    );
}
