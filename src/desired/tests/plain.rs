//! The fast line reader of the plain layout ([`crate::desired::fast`]) against the full reader:
//! generated files must read the same both ways, and tricky inputs must make it give up.

use super::*;

/// Both readers on `doc` as a whole file; panics if they disagree where the fast path answered.
/// Returns whether the fast path answered.
fn compare(doc: &str) -> bool {
    let path = Path::new(PATH);
    let full = parse_text(path, doc, doc, 0, false, CAP);
    match fast::parse(path, doc, 0) {
        None => false,
        Some((file, declared)) => {
            assert_eq!(Ok(file), full.0, "fast and full readers differ on:\n{doc}");
            assert_eq!(declared, full.1, "declared keys differ on:\n{doc}");
            true
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Where the fast path answers, it answers like the full reader; on clean plain-layout files
    /// it always answers.
    #[test]
    fn fast_path_reads_like_the_full_reader(file in gen_file()) {
        let doc = file.render();
        let answered = compare(&doc);
        if file.is_clean() {
            prop_assert!(answered, "the fast path gave up on a clean file:\n{}", doc);
        }
        // The same file saved with CRLF line ends reads the same way.
        let crlf = doc.replace('\n', "\r\n");
        let answered = compare(&crlf);
        if file.is_clean() {
            prop_assert!(answered, "the fast path gave up on a clean CRLF file:\n{:?}", crlf);
        }
    }
}

/// Inputs that the fast path must leave to the full reader.
const FALLBACKS: &[(&str, &str)] = &[
    // Nulls: a group or section with nothing under it is an error, never "empty".
    (
        "group without sections",
        "groups:\n  g:\n  h:\n    members:\n      a: [1000]\n",
    ),
    (
        "empty sections",
        "groups:\n  g:\n    members:\n    marks:\n",
    ),
    ("group at the end", "groups:\n  g:"),
    ("members at the end", "groups:\n  g:\n    members:"),
    (
        "null account",
        "groups:\n  g:\n    marks:\n      1000: [null]\n",
    ),
    (
        "Null account",
        "groups:\n  g:\n    marks:\n      1000: [a, Null]\n",
    ),
    (
        "leading zero mark",
        "groups:\n  g:\n    members:\n      a: [01000]\n",
    ),
    (
        "underscored mark",
        "groups:\n  g:\n    members:\n      a: [1_000]\n",
    ),
    ("mark 999", "groups:\n  g:\n    members:\n      a: [999]\n"),
    (
        "mark too large",
        "groups:\n  g:\n    members:\n      a: [4294967296]\n",
    ),
    (
        "mark key with leading zero",
        "groups:\n  g:\n    marks:\n      01000: [a]\n",
    ),
    (
        "trailing comment",
        "groups:\n  g:\n    members:\n      a: [1000] # why\n",
    ),
    (
        "trailing comment on key",
        "groups:\n  g: # why\n    members:\n      a: [1000]\n",
    ),
    (
        "trailing comment on groups",
        "groups: # all\n  g:\n    members:\n      a: [1000]\n",
    ),
    (
        "tab indentation",
        "groups:\n  g:\n    members:\n\ta: [1000]\n",
    ),
    (
        "tab in list",
        "groups:\n  g:\n    members:\n      a: [1000,\t500]\n",
    ),
    (
        "tab in comment",
        "groups:\n  # a\tb\n  g:\n    members:\n      a: [1000]\n",
    ),
    (
        "anchor",
        "groups:\n  g:\n    members:\n      a: &m [1000]\n      b: *m\n",
    ),
    (
        "tag",
        "groups:\n  g:\n    members:\n      a: !!seq [1000]\n",
    ),
    (
        "members twice",
        "groups:\n  g:\n    members:\n      a: [1000]\n    members:\n      b: [1000]\n",
    ),
    (
        "marks twice",
        "groups:\n  g:\n    marks:\n      1000: [a]\n    marks:\n      1001: [b]\n",
    ),
    (
        "duplicate account",
        "groups:\n  g:\n    members:\n      a: [1000]\n      a: [1001]\n",
    ),
    (
        "duplicate mark key",
        "groups:\n  g:\n    marks:\n      1000: [a]\n      1000: [b]\n",
    ),
    (
        "account twice under a mark",
        "groups:\n  g:\n    marks:\n      1000: [a, a]\n",
    ),
    (
        "mark twice for an account",
        "groups:\n  g:\n    members:\n      a: [1000, 1000]\n",
    ),
    (
        "duplicate group",
        "groups:\n  g:\n    members:\n      a: [1000]\n  \"g\":\n    members:\n      b: [1000]\n",
    ),
    ("CR alone", "groups:\r  g:\n    members:\n      a: [1000]\n"),
    (
        "CR inside a line",
        "groups:\n  g:\n    members:\n      a: [10\r00]\r\n",
    ),
    (
        "backslash in key",
        "groups:\n  \"g\\u0041\":\n    members:\n      a: [1000]\n",
    ),
    (
        "quote in single-quoted key",
        "groups:\n  'it''s':\n    members:\n      a: [1000]\n",
    ),
    (
        "empty key",
        "groups:\n  \"\":\n    members:\n      a: [1000]\n",
    ),
    (
        "flow mapping groups",
        "groups: {g: {members: {a: [1000]}}}\n",
    ),
    (
        "flow mapping group with a comment",
        "groups:\n  g: {members: {a: [1000]}} # x\n",
    ),
    (
        "block list",
        "groups:\n  g:\n    members:\n      a:\n        - 1000\n",
    ),
    (
        "multi-line flow list",
        "groups:\n  g:\n    members:\n      a: [1000,\n        1001]\n",
    ),
    (
        "trailing comma",
        "groups:\n  g:\n    members:\n      a: [1000,]\n",
    ),
    (
        "no space after colon",
        "groups:\n  g:\n    members:\n      a:[1000]\n",
    ),
    (
        "space before colon",
        "groups:\n  \"g\" :\n    members:\n      a: [1000]\n",
    ),
    (
        "unknown section",
        "groups:\n  g:\n    memebrs:\n      a: [1000]\n",
    ),
    (
        "unknown top-level key",
        "groups:\n  g:\n    members:\n      a: [1000]\nother: 1\n",
    ),
    (
        "document marker",
        "---\ngroups:\n  g:\n    members:\n      a: [1000]\n",
    ),
    (
        "document end",
        "groups:\n  g:\n    members:\n      a: [1000]\n...\n",
    ),
    (
        "directive",
        "%YAML 1.2\n---\ngroups:\n  g:\n    members:\n      a: [1000]\n",
    ),
    ("no groups key", "# nothing\n"),
    (
        "plain key with indicator",
        "groups:\n  @TGS#x:\n    members:\n      a: [1000]\n",
    ),
    (
        "uneven group indentation",
        "groups:\n  g:\n    members:\n      a: [1000]\n   h:\n    members:\n      b: [1000]\n",
    ),
    (
        "uneven entry indentation",
        "groups:\n  g:\n    members:\n      a: [1000]\n       b: [1000]\n",
    ),
    (
        "entries without a section",
        "groups:\n  g:\n    a: [1000]\n",
    ),
    ("group value on the key line", "groups:\n  g: ~\n"),
    ("scalar section", "groups:\n  g:\n    members: a\n"),
    ("empty flow section", "groups:\n  g:\n    members: {}\n"),
    (
        "account too long",
        "groups:\n  g:\n    members:\n      abcdefghijklmnopqrstuvwxyz0123456: [1000]\n",
    ),
    (
        "quoted account",
        "groups:\n  g:\n    members:\n      \"a\": [1000]\n",
    ),
    (
        "quoted mark",
        "groups:\n  g:\n    members:\n      a: [\"1000\"]\n",
    ),
    (
        "control character in key",
        "groups:\n  \"g\u{1}\":\n    members:\n      a: [1000]\n",
    ),
    (
        "byte order mark in comment",
        "groups:\n  # \u{feff}\n  g:\n    members:\n      a: [1000]\n",
    ),
    ("null groups", "groups:\n"),
    ("null groups with comments", "groups:\n# nothing yet\n"),
    (
        "non-ASCII group ID",
        "groups:\n  \"群组 #1: a\":\n    members:\n      a: [1000]\n",
    ),
    (
        "group ID over 48 bytes",
        "groups:\n  abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvw:\n    members:\n      a: [1000]\n",
    ),
    (
        "null account key",
        "groups:\n  g:\n    members:\n      null: [1000]\n",
    ),
    ("merge key", "groups:\n  g:\n    <<: *t\n"),
    (
        "merge key as account",
        "groups:\n  g:\n    members:\n      <<: [1000]\n",
    ),
    (
        "dot first account",
        "groups:\n  g:\n    members:\n      .inf: [1000]\n",
    ),
    (
        "at sign first account",
        "groups:\n  g:\n    marks:\n      1000: [@a]\n",
    ),
    (
        "content after groups: {}",
        "groups: {}\n  g:\n    members:\n      a: [1000]\n",
    ),
    (
        "eleven marks",
        "groups:\n  g:\n    members:\n      a: [500, 600, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007]\n    marks:\n      1008: []\n",
    ),
];

#[test]
fn the_fast_path_leaves_tricky_inputs_to_the_full_reader() {
    for (what, doc) in FALLBACKS {
        assert!(
            fast::parse(Path::new(PATH), doc, 0).is_none(),
            "{what}: the fast path answered on:\n{doc}"
        );
    }
}

/// Inputs the fast path reads (and reads like the full reader).
const ACCEPTED: &[(&str, &str)] = &[
    (
        "spec example",
        "groups:\n  \"@TGS#a6I4ZUUGO\":\n    members:\n      teacher10: [1000]\n      host: [500, 1000]\n    marks:\n      1001: [student9, student10]\n",
    ),
    ("empty flow groups", "# none\ngroups: {}\n\n# at all\n"),
    (
        "empty lists",
        "groups:\n  g:\n    members:\n      a: []\n    marks:\n      1000: [ ]\n",
    ),
    (
        "union of sections",
        "groups:\n  g:\n    marks:\n      1001: [a, b]\n      1000: [a]\n    members:\n      a: [1002]\n      c: [500]\n",
    ),
    (
        "ten marks",
        "groups:\n  g:\n    members:\n      a: [500, 600, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007]\n    marks:\n      1007: [b]\n",
    ),
    (
        "comments everywhere",
        "# head\ngroups:\n# col 0\n  'g 1':\n        # deep\n    members:\n #\n      a: [1000]\n\n      b: [1001]\n# tail",
    ),
    (
        "wide indentation",
        "groups:\n    g:\n            members:\n                 a:   [ 1000 ,500 ]   \n",
    ),
    (
        "unusual accounts, with the full reader's warnings",
        "groups:\n  g:\n    marks:\n      1001: [név, a.b@c]\n    members:\n      +8613800138000: [1000]\n      név: [500]\n  h:\n    members:\n      név: [1000]\n",
    ),
    (
        "keys YAML would resolve, read as written",
        "groups:\n  1000:\n    members:\n      007: [1000]\n      0x1F: [1000]\n      y: [1000]\n      no: [1000]\n      on: [1000]\n      1e3: [1000]\n      1_000: [1000]\n      0o17: [1000]\n    marks:\n      1001: [yes, off, 8613800138000, 12345]\n",
    ),
];

#[test]
fn the_fast_path_reads_plain_files_like_the_full_reader() {
    for (what, doc) in ACCEPTED {
        assert!(compare(doc), "{what}: the fast path gave up on:\n{doc}");
    }
}

/// A group of `members` members, each with the marks `marks_of(i)`.
fn big_group(out: &mut String, key: &str, members: usize, marks_of: impl Fn(usize) -> String) {
    let _ = writeln!(out, "  \"{key}\":\n    members:");
    for m in 0..members {
        let _ = writeln!(out, "      user{m:05}: [{}]", marks_of(m));
    }
}

#[test]
fn the_fast_path_keeps_the_members_per_mark_limit() {
    let mut at_limit = String::from("groups:\n");
    big_group(&mut at_limit, "g", 1000, |_| "1000".into());
    assert!(compare(&at_limit));
    let mut over = String::from("groups:\n");
    big_group(&mut over, "g", 1001, |_| "1000".into());
    assert!(fast::parse(Path::new(PATH), &over, 0).is_none());
    // The limit counts the union: 1000 in `members` plus one more in `marks`.
    let mut union = at_limit.clone();
    union.push_str("    marks:\n      1000: [extra]\n");
    assert!(fast::parse(Path::new(PATH), &union, 0).is_none());
}

/// A file over the split threshold, read with and without the fast path: chunks, line numbers
/// and group origins must come out the same, also when one chunk must fall back.
#[test]
fn split_files_read_the_same_with_and_without_the_fast_path() {
    let path = Path::new(PATH);
    let mut doc = String::from("# header\ngroups:\n");
    for g in 0..45 {
        let _ = writeln!(doc, "  # group {g}");
        big_group(&mut doc, &format!("@TGS#g{g:03}"), 1000, |m| {
            format!("{}, 500", 1000 + m % 9)
        });
    }
    assert!(doc.len() > SPLIT.threshold);
    let clean = parse_file_with(path, doc.as_bytes(), false, SPLIT, CAP).expect("valid");
    assert_eq!(
        parse_file_with(path, doc.as_bytes(), true, SPLIT, CAP),
        Ok(clean.clone())
    );
    assert_eq!(clean.groups.len(), 45);

    // One unconventional account (a warning) in the middle: the same warning either way.
    let warned = doc.replacen("user00500: [1005, 500]", "usér: [1005, 500]", 1);
    assert!(warned != doc, "the replaced line is missing");
    let full = parse_file_with(path, warned.as_bytes(), false, SPLIT, CAP).expect("valid");
    assert_eq!(full.warnings.len(), 1);
    assert_eq!(
        parse_file_with(path, warned.as_bytes(), true, SPLIT, CAP),
        Ok(full)
    );

    // A group repeated in a later chunk: the same errors either way.
    let repeated = format!("{doc}  \"@TGS#g000\":\n    members:\n      a: [1000]\n");
    let full = parse_file_with(path, repeated.as_bytes(), false, SPLIT, CAP);
    assert!(full.is_err());
    assert_eq!(
        parse_file_with(path, repeated.as_bytes(), true, SPLIT, CAP),
        full
    );
}

#[test]
fn an_empty_result_is_still_a_file() {
    // `groups: {}` declares no groups; the fast path says so instead of giving up.
    let parsed = fast::parse(Path::new(PATH), "groups: {}\n", 0).expect("fast");
    assert_eq!(parsed.0, DesiredFile::default());
}
