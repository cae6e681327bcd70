//! The README and the pages under `docs/` stay navigable: every relative link reaches a file,
//! every `#anchor` a heading of it (GitHub's slugs), every guide is linked from the README, and
//! a newcomer finds the quick start's two commands at the top of the README.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README and every `docs/*.md`, sorted.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root().join("README.md"));
    pages
}

/// The lines outside fenced code blocks, numbered from 1: a `# comment` in a YAML or shell
/// block is no heading and `[x](y)` in a block is no link.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m && trimmed.trim_end() == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// The line with its inline code spans removed (a link inside backticks is text).
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// GitHub's anchor for a heading: the rendered text (code spans and link targets dropped, their
/// text kept), lower-cased, punctuation other than `-` and `_` dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a page offers; a repeated heading gets `-1`, `-2`... as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, line) in prose(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim());
        let mut anchor = base.clone();
        let mut n = 0;
        while out.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        out.insert(anchor);
    }
    out
}

/// Every inline link target `[text](target)` of a page, with its line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            let target = tail[..end].split_whitespace().next().unwrap_or("");
            out.push((number, target.to_string()));
            rest = &tail[end..];
        }
    }
    out
}

fn problems_of(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let shown = page.strip_prefix(root()).unwrap().display().to_string();
    let mut problems = Vec::new();
    for (line, target) in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            page.to_path_buf()
        } else {
            page.parent().unwrap().join(path)
        };
        if !file.exists() {
            problems.push(format!("{shown}:{line}: {target}: no such file"));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        if file.extension().is_none_or(|e| e != "md") {
            problems.push(format!(
                "{shown}:{line}: {target}: an anchor into a non-Markdown file"
            ));
            continue;
        }
        if !anchors(&std::fs::read_to_string(&file).unwrap()).contains(anchor) {
            problems.push(format!(
                "{shown}:{line}: {target}: no heading with the anchor #{anchor}"
            ));
        }
    }
    problems
}

#[test]
fn slugs_follow_githubs_rules() {
    for (heading, expected) in [
        ("Quick start", "quick-start"),
        (
            "Configuration (`marksync.yaml`)",
            "configuration-marksyncyaml",
        ),
        ("The daemon (`marksync run`)", "the-daemon-marksync-run"),
        ("What `apply` does", "what-apply-does"),
        (
            "Troubleshooting by error code",
            "troubleshooting-by-error-code",
        ),
        ("A [linked](x.md) word, and_more", "a-linked-word-and_more"),
    ] {
        assert_eq!(slug(heading), expected, "{heading}");
    }
    let text = "# A\n```yaml\n# not a heading\n```\n## A\n";
    assert_eq!(
        anchors(text),
        BTreeSet::from(["a".to_string(), "a-1".to_string()])
    );
}

#[test]
fn every_relative_link_reaches_an_existing_file_and_heading() {
    let problems: Vec<String> = pages().iter().flat_map(|p| problems_of(p)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_readme_links_every_guide_and_every_guide_has_a_title() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let linked: BTreeSet<String> = links(&readme).into_iter().map(|(_, t)| t).collect();
    for page in pages().iter().skip(1) {
        let name = format!("docs/{}", page.file_name().unwrap().to_str().unwrap());
        assert!(
            linked.contains(&name),
            "README.md does not link {name}: add it to the Guides list"
        );
        let text = std::fs::read_to_string(page).unwrap();
        assert!(text.starts_with("# "), "{name} does not start with a title");
    }
}

#[test]
fn the_readme_shows_both_quick_start_commands_in_its_first_40_lines() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let top: Vec<&str> = readme.lines().take(40).map(str::trim).collect();
    assert!(
        top.contains(&"cargo run --release -- -c examples/marksync.yaml apply"),
        "the main job's command is not in the README's first 40 lines"
    );
    assert!(
        top.contains(&"cargo test"),
        "`cargo test` is not in the README's first 40 lines"
    );
}
