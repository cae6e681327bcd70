//! The fast path ([`super::fast`]) against the full reader: generated plain-layout files must read
//! the same both ways, and tricky inputs must make the fast path give up.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;

use super::{DesiredFile, SPLIT, Split, fast, parse_file_with, parse_text};

const PATH: &str = "desired/test.yaml";

/// The default `max_alias_pairs`.
const CAP: usize = super::DEFAULT_MAX_ALIAS_PAIRS;

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

// ---------------------------------------------------------------------------------------------
// Generated files.

/// Tokens the fast path accepts; `BAD_*` are tokens it must refuse (the full reader reports them,
/// or YAML reads them as something else than written).
const GOOD_ACCOUNTS: &[&str] = &[
    "teacher10",
    "host",
    "student9",
    "student10",
    "_x",
    "a-b",
    "A_1-",
    "Yess",
    "nulls",
    "o",
    "x1e3",
    "abcdefghijklmnopqrstuvwxyz012345",
    // Spellings YAML would resolve to numbers or booleans: both readers take them as written.
    "007",
    "0x1F",
    "0o17",
    "1_000",
    "1e3",
    "123",
    "y",
    "Yes",
    "no",
    "OFF",
    "on",
    "true",
    "8613800138000",
    "_",
    // Accepted with a warning (characters outside [a-zA-Z0-9_-]), by both readers alike.
    "név",
    "+8613800138000",
    "a.b@c",
    "张三",
];
const BAD_ACCOUNTS: &[&str] = &[
    "null",
    "NULL",
    "Null",
    ".inf",
    "~",
    "<<",
    "a\u{ff0c}b",
    "\u{200b}a",
    "abcdefghijklmnopqrstuvwxyz0123456",
    "'quoted'",
    "\"dq\"",
    "-a",
    "a b",
    "*alias",
    "&anchor a",
    "!!str x",
];
const GOOD_MARKS: &[&str] = &[
    "500",
    "600",
    "1000",
    "1001",
    "1002",
    "1003",
    "1004",
    "1005",
    "1006",
    "1007",
    "4294967295",
];
const BAD_MARKS: &[&str] = &[
    "999",
    "0",
    "01000",
    "1_000",
    "0x3E8",
    "+1000",
    "1000.0",
    "1e3",
    "4294967296",
    "99999999999",
    "\"1000\"",
    "x",
    "",
];
/// Quoted group keys, and whether they are valid group IDs (printable ASCII, at most 48 bytes,
/// no leading or trailing space).
const QUOTED_KEYS: &[(&str, bool)] = &[
    ("@TGS#a6I4ZUUGO", true),
    ("@TGS#bench00001", true),
    ("g 1", true),
    ("yes", true),
    ("null", true),
    ("1000", true),
    ("#x: y", true),
    ("a'b", true),
    ("[x]", true),
    ("é群组", false),
    (" g", false),
    ("g\u{3000}", false),
];
const GOOD_PLAIN_KEYS: &[&str] = &[
    "g1", "group_2", "Grp-3", "_g", "yes", "on", "1000", "007", "0x1F",
];
const BAD_PLAIN_KEYS: &[&str] = &["@TGS#x", "~", "null", "-g", "g 1", "<<", ".inf"];

#[derive(Clone, Debug)]
enum KeyStyle {
    Double,
    Single,
    Plain,
}

/// A token as written, and whether the fast path may accept it.
type Token = (String, bool);

/// A section entry: its key and its list items.
type Entry = (Token, Vec<Token>);

#[derive(Clone, Debug)]
struct GenGroup {
    key: Token,
    style: KeyStyle,
    /// `true`: `members`, `false`: `marks`; entries as (key, list items).
    sections: Vec<(bool, Vec<Entry>)>,
}

#[derive(Clone, Debug)]
pub(super) struct GenFile {
    groups: Vec<GenGroup>,
    indents: (usize, usize, usize),
    /// Consumed in turn to decide on comments, blank lines and spacing.
    noise: Vec<u8>,
}

/// A good token, or (in a dirty file, now and then) a bad one.
fn token(
    good: BoxedStrategy<String>,
    bad: &'static [&'static str],
    dirty: bool,
) -> BoxedStrategy<Token> {
    let good = good.prop_map(|t| (t, true));
    if dirty {
        prop_oneof![
            8 => good,
            1 => prop::sample::select(bad).prop_map(|t| (t.to_string(), false)),
        ]
        .boxed()
    } else {
        good.boxed()
    }
}

fn account(dirty: bool) -> BoxedStrategy<Token> {
    let good = prop_oneof![
        prop::sample::select(GOOD_ACCOUNTS).prop_map(str::to_string),
        "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,31}"
            .prop_filter("null is no account", |a| !a.eq_ignore_ascii_case("null")),
        // Numbers in every spelling YAML knows, as a roster generator may write them.
        (0u64..100_000, 0usize..6).prop_map(|(n, style)| match style {
            0 => format!("{n:05}"),
            1 => format!("0x{n:X}"),
            2 => format!("0o{n:o}"),
            3 => format!("{n}e3"),
            4 => format!("1_{n}"),
            _ => n.to_string(),
        }),
    ];
    token(good.boxed(), BAD_ACCOUNTS, dirty)
}

fn mark(dirty: bool) -> BoxedStrategy<Token> {
    token(
        prop::sample::select(GOOD_MARKS)
            .prop_map(str::to_string)
            .boxed(),
        BAD_MARKS,
        dirty,
    )
}

fn gen_group(dirty: bool) -> impl Strategy<Value = GenGroup> {
    let key = prop_oneof![
        (prop::sample::select(QUOTED_KEYS), any::<bool>()).prop_map(|((k, valid), double)| {
            let style = if double || k.contains('\'') {
                KeyStyle::Double
            } else {
                KeyStyle::Single
            };
            ((k.to_string(), valid), style)
        }),
        token(
            prop::sample::select(GOOD_PLAIN_KEYS)
                .prop_map(str::to_string)
                .boxed(),
            BAD_PLAIN_KEYS,
            dirty
        )
        .prop_map(|k| (k, KeyStyle::Plain)),
    ];
    let members = prop::collection::vec(
        (account(dirty), prop::collection::vec(mark(dirty), 0..4)),
        0..8,
    );
    let marks = prop::collection::vec(
        (mark(dirty), prop::collection::vec(account(dirty), 0..6)),
        0..4,
    );
    (
        key,
        prop::option::of(members),
        prop::option::of(marks),
        any::<bool>(),
    )
        .prop_map(|((key, style), members, marks, marks_first)| {
            let mut sections = Vec::new();
            if let Some(m) = members {
                sections.push((true, m));
            }
            if let Some(m) = marks {
                sections.push((false, m));
            }
            if marks_first {
                sections.reverse();
            }
            GenGroup {
                key,
                style,
                sections,
            }
        })
}

pub(super) fn gen_file() -> impl Strategy<Value = GenFile> {
    prop::bool::weighted(0.3).prop_flat_map(|dirty| {
        (
            prop::collection::vec(gen_group(dirty), 0..6),
            (1usize..5, 1usize..5, 1usize..5),
            prop::collection::vec(any::<u8>(), 1..64),
        )
            .prop_map(|(groups, (g, s, e), noise)| GenFile {
                groups,
                indents: (g, g + s, g + s + e),
                noise,
            })
    })
}

impl GenGroup {
    /// Whether the full reader would accept the group without a message.
    fn is_clean(&self) -> bool {
        // A group or section with nothing under it is null: an error.
        if !self.key.1
            || self.sections.is_empty()
            || self.sections.iter().any(|(_, e)| e.is_empty())
        {
            return false;
        }
        let mut marks = HashSet::new();
        for (members, entries) in &self.sections {
            let mut keys = HashSet::new();
            for (k, items) in entries {
                if !k.1 || !keys.insert(&k.0) {
                    return false;
                }
                let mut seen = HashSet::new();
                if !items.iter().all(|i| i.1 && seen.insert(&i.0)) {
                    return false;
                }
                if *members {
                    marks.extend(items.iter().map(|m| m.0.parse::<u64>().unwrap()));
                } else {
                    marks.insert(k.0.parse::<u64>().unwrap());
                }
            }
        }
        marks.len() <= 10
    }
}

impl GenFile {
    fn render(&self) -> String {
        let mut noise = self.noise.iter().cycle().copied();
        let mut next = move || noise.next().unwrap_or(0);
        let mut out = String::new();
        let extra = |out: &mut String, n: u8| match n % 8 {
            0 => out.push('\n'),
            1 => {
                let _ = writeln!(
                    out,
                    "{}# a comment: with [brackets], 'quotes' and é",
                    " ".repeat(usize::from(n % 7))
                );
            }
            2 => out.push_str("   \n"),
            3 => out.push_str("#\n"),
            _ => {}
        };
        extra(&mut out, next());
        out.push_str("groups:");
        if next() % 5 == 0 {
            out.push_str("  ");
        }
        out.push('\n');
        let (g, s, e) = self.indents;
        for group in &self.groups {
            extra(&mut out, next());
            let name = &group.key.0;
            let key = match group.style {
                KeyStyle::Double => format!("\"{name}\""),
                KeyStyle::Single => format!("'{name}'"),
                KeyStyle::Plain => name.clone(),
            };
            let _ = writeln!(out, "{}{key}:", " ".repeat(g));
            for (members, entries) in &group.sections {
                extra(&mut out, next());
                let name = if *members { "members" } else { "marks" };
                let _ = writeln!(out, "{}{name}:", " ".repeat(s));
                for ((k, _), items) in entries {
                    let items: Vec<&str> = items.iter().map(|i| i.0.as_str()).collect();
                    extra(&mut out, next());
                    let style = next();
                    let sep = if style & 1 == 0 { ", " } else { "," };
                    let pad = if style & 2 == 0 { "" } else { " " };
                    let colon = if style & 4 == 0 { " " } else { "   " };
                    let trail = if style & 8 == 0 { "" } else { "  " };
                    let _ = writeln!(
                        out,
                        "{}{k}:{colon}[{pad}{}{pad}]{trail}",
                        " ".repeat(e),
                        items.join(sep)
                    );
                }
            }
        }
        extra(&mut out, next());
        if next() % 4 == 0 {
            out.pop(); // no final newline
        }
        out
    }

    pub(super) fn is_clean(&self) -> bool {
        let mut names = HashSet::new();
        // `groups:` with nothing under it is null: an error, not "no groups".
        !self.groups.is_empty()
            && self
                .groups
                .iter()
                .all(|g| names.insert(g.key.0.clone()) && g.is_clean())
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

// ---------------------------------------------------------------------------------------------
// Hand-written cases.

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

// ---------------------------------------------------------------------------------------------
// The flow layout (one JSON or YAML flow mapping) against the full reader.

/// Both readers on a flow `doc`; panics if they disagree where the flow reader answered.
fn compare_flow(doc: &str) -> bool {
    let path = Path::new(PATH);
    let full = parse_text(path, doc, doc, 0, false, CAP);
    match fast::parse_flow(path, doc) {
        None => false,
        Some((file, declared)) => {
            assert_eq!(Ok(file), full.0, "flow and full readers differ on:\n{doc}");
            assert_eq!(declared, full.1, "declared keys differ on:\n{doc}");
            true
        }
    }
}

impl GenFile {
    /// The same file as one flow mapping: JSON (every key and account double-quoted, marks as
    /// numbers, mark keys quoted) or YAML flow (plain words where the token allows).
    pub(super) fn render_flow(&self, json: bool) -> String {
        let mut noise = self.noise.iter().cycle().copied();
        let mut next = move || noise.next().unwrap_or(0);
        let mut out = String::new();
        let quote = |t: &str| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""));
        let mut sep = |out: &mut String| match next() % 4 {
            0 => out.push_str("\n  "),
            1 => out.push(' '),
            _ => {}
        };
        out.push_str(if json { "{\"groups\": {" } else { "{groups: {" });
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            sep(&mut out);
            let key = match (&group.style, json) {
                (KeyStyle::Plain, false) => group.key.0.clone(),
                (KeyStyle::Single, false) => format!("'{}'", group.key.0),
                _ => quote(&group.key.0),
            };
            out.push_str(&key);
            out.push_str(": {");
            for (j, (members, entries)) in group.sections.iter().enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                let name = if *members { "members" } else { "marks" };
                out.push_str(&if json { quote(name) } else { name.to_string() });
                out.push_str(": {");
                for (k, ((key, _), items)) in entries.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    sep(&mut out);
                    // Accounts quoted in JSON; marks as numbers, quoted only as JSON keys.
                    let key = if json { quote(key) } else { key.clone() };
                    out.push_str(&key);
                    out.push_str(": [");
                    let items: Vec<String> = items
                        .iter()
                        .map(|(t, _)| {
                            if json && !*members {
                                quote(t)
                            } else {
                                t.clone()
                            }
                        })
                        .collect();
                    out.push_str(&items.join(", "));
                    out.push(']');
                }
                out.push('}');
            }
            out.push('}');
        }
        out.push_str("}}\n");
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Where the flow reader answers, it answers like the full reader; on clean files written as
    /// JSON or as YAML flow with plain words it always answers.
    #[test]
    fn flow_path_reads_like_the_full_reader(file in gen_file(), json in any::<bool>()) {
        let doc = file.render_flow(json);
        let answered = compare_flow(&doc);
        let plain_keys = file.groups.iter().all(|g| matches!(g.style, KeyStyle::Plain));
        if file.is_clean() && (json || plain_keys) {
            prop_assert!(answered, "the flow reader gave up on a clean file:\n{}", doc);
        }
    }
}

/// Flow inputs the fast reader must leave to the full reader.
const FLOW_FALLBACKS: &[(&str, &str)] = &[
    ("null groups", "{\"groups\": null}"),
    (
        "trailing comma",
        "{\"groups\": {\"g\": {\"members\": {\"a\": [1000,]}}}}",
    ),
    ("escape", "{\"groups\": {\"g\\u0041\": {}}}"),
    ("single quotes", "{'groups': {}}"),
    ("comment", "{\"groups\": {}} # x"),
    ("tab", "{\"groups\":\t{}}"),
    ("CRLF", "{\"groups\": {\r\n}}"),
    (
        "quoted mark",
        "{\"groups\": {\"g\": {\"members\": {\"a\": [\"1000\"]}}}}",
    ),
    ("null account", "{groups: {g: {marks: {1000: [null]}}}}"),
    ("plain key without space", "{groups: {g:{}}}"),
    (
        "two accounts run together",
        "{\"groups\": {\"g\": {\"marks\": {\"1000\": [alice\n bob]}}}}",
    ),
    (
        "full-width comma",
        "{\"groups\": {\"g\": {\"marks\": {\"1000\": [\"alice，bob\"]}}}}",
    ),
    (
        "dot first plain account",
        "{groups: {g: {marks: {1000: [.inf]}}}}",
    ),
    (
        "plain null account",
        "{groups: {g: {marks: {1000: [Null]}}}}",
    ),
    ("unknown key", "{\"groups\": {\"g\": {\"memebrs\": {}}}}"),
    ("second top-level key", "{\"groups\": {}, \"x\": 1}"),
    ("anchor", "{\"groups\": {\"g\": &a {}}}"),
    ("non-ASCII group", "{\"groups\": {\"群\": {}}}"),
    ("duplicate group", "{\"groups\": {\"g\": {}, g: {}}}"),
    ("content after", "{\"groups\": {}}\n{}"),
];

#[test]
fn the_flow_path_leaves_tricky_inputs_to_the_full_reader() {
    for (what, doc) in FLOW_FALLBACKS {
        assert!(
            fast::parse_flow(Path::new(PATH), doc).is_none(),
            "{what}: the flow reader answered on:\n{doc}"
        );
    }
}

#[test]
fn the_flow_path_reads_one_line_json_like_the_full_reader() {
    let mut doc = String::from("{\"groups\": {");
    for g in 0..200 {
        if g > 0 {
            doc.push_str(", ");
        }
        let _ = write!(
            doc,
            "\"@TGS#g{g:03}\": {{\"members\": {{\"007\": [1000, 500], \"u{g}\": [1001]}}, \"marks\": {{\"1002\": [\"0x1F\", \"y\"]}}}}"
        );
    }
    doc.push_str("}}");
    assert!(compare_flow(&doc));
    // Pretty-printed, and as YAML flow with plain words.
    let pretty = doc.replace(", \"@", ",\n  \"@");
    assert!(compare_flow(&pretty));
    assert!(compare_flow(
        "{groups: {g1: {members: {007: [1000], y: [500]}, marks: {1001: [no, 0x1F]}}}}\n"
    ));
    // Unusual accounts: the full reader's warnings, at the same places.
    let doc = "{\"groups\": {\"g\": {\"marks\": {\"1001\": [\"a.b\", \"név\"]}, \"members\": {\"név\": [1000]}}}}";
    let (file, _) = fast::parse_flow(Path::new(PATH), doc).expect("read");
    assert_eq!(file.warnings.len(), 2);
    assert!(compare_flow(doc));
    assert!(compare_flow("{groups: {g: {marks: {1001: [+86, 张三]}}}}"));
}

/// A one-line file of many groups: each group's origin keeps a window of the line, not a copy of
/// it (the copies took 6 GB for a 620 KB file), with the full reader and with the flow reader.
#[test]
fn one_line_files_keep_windows_not_copies_of_the_line() {
    let mut doc = String::from("{\"groups\": {");
    for g in 0..5000 {
        if g > 0 {
            doc.push_str(", ");
        }
        let _ = write!(
            doc,
            "\"@TGS#g{g:05}\": {{\"members\": {{\"u{g}\": [1000]}}}}"
        );
    }
    doc.push_str("}}\n");
    let escaped = doc.replacen("\"u0\"", "\"\\u0075\"", 1);
    let path = Path::new("a.json");
    for (reader, text) in [("flow", &doc), ("full", &escaped)] {
        let file =
            parse_file_with(path, text.as_bytes(), reader == "flow", SPLIT, CAP).expect("valid");
        assert_eq!(file.groups.len(), 5000);
        let longest = file
            .groups
            .iter()
            .map(|g| g.1.source_line.len())
            .max()
            .unwrap();
        assert!(
            longest < 300,
            "{reader}: an origin holds {longest} bytes of the line"
        );
        let last = &file.groups[4999].1;
        let caret = (last.column - 1 - last.source_offset) as usize;
        let under: String = last.source_line.chars().skip(caret).take(13).collect();
        assert_eq!(under, "\"@TGS#g04999\"", "{reader}");
    }
    // Both readers agree on the clean file.
    assert!(compare_flow(&doc));
}

// ---------------------------------------------------------------------------------------------
// Nulls below `groups` (issue 14): a cut-off file must never read as an empty group.

/// A null below `groups`: the document, and the line, column and words of the error.
const NULLS: &[(&str, &str, u64, u64, &str)] = &[
    (
        "members: at the end of the file",
        "groups:\n  \"@TGS#class\":\n    members:",
        3,
        5,
        "`members` has no value: the file may be cut off; write `{}` to declare none",
    ),
    (
        "members: mid-file",
        "groups:\n  \"@TGS#a\":\n    members:\n    marks:\n      1000: [x]\n",
        3,
        5,
        "`members` has no value",
    ),
    (
        "marks: at the end of the file",
        "groups:\n  g:\n    members:\n      a: [1000]\n    marks:\n",
        5,
        5,
        "`marks` has no value: the file may be cut off; write `{}` to declare none",
    ),
    (
        "group key at the end of the file",
        "groups:\n  \"@TGS#class\":",
        2,
        3,
        "group \"@TGS#class\" has no value: the file may be cut off; write `{}` to declare a group without marks",
    ),
    (
        "group key mid-file",
        "groups:\n  g:\n  h:\n    members:\n      a: [1000]\n",
        2,
        3,
        "group \"g\" has no value",
    ),
    (
        "group ~",
        "groups:\n  \"@TGS#a\": ~\n",
        2,
        3,
        "group \"@TGS#a\" has no value",
    ),
    (
        "group null",
        "groups:\n  g: null\n  h: {}\n",
        2,
        3,
        "group \"g\" has no value",
    ),
    (
        "section ~",
        "groups:\n  g:\n    marks: ~\n",
        3,
        5,
        "`marks` has no value",
    ),
    (
        "null account list",
        "groups:\n  g:\n    marks:\n      1000:\n",
        4,
        7,
        "the accounts of mark 1000 have no value: the file may be cut off; write `[]` to declare none",
    ),
    (
        "null mark list",
        "groups:\n  g:\n    members:\n      alice:\n",
        4,
        7,
        "the marks of \"alice\" have no value: the file may be cut off; write `[]` to declare none",
    ),
    (
        "~ mark list",
        "groups:\n  g:\n    members:\n      alice: ~\n",
        4,
        7,
        "the marks of \"alice\" have no value",
    ),
    (
        "null mark in a list",
        "groups:\n  g:\n    members:\n      alice:\n        - 1000\n        -\n",
        6,
        10,
        "a mark has no value here",
    ),
    (
        "null merge",
        "groups:\n  g:\n    <<: ~\n    members: {}\n",
        3,
        5,
        "a merge key (`<<`) has no value",
    ),
    (
        "null in a merge list",
        "groups:\n  g:\n    <<: [~]\n    members: {}\n",
        3,
        10,
        "a merge key (`<<`) has no value",
    ),
    (
        "flow group null",
        "{groups: {g: null}}",
        1,
        11,
        "group \"g\" has no value",
    ),
    (
        "flow members null",
        "{\"groups\": {\"g\": {\"members\": null}}}",
        1,
        19,
        "`members` has no value",
    ),
];

#[test]
fn nulls_below_groups_are_errors_in_every_reader() {
    let path = Path::new(PATH);
    for (what, doc, line, column, words) in NULLS {
        for fast in [false, true] {
            let errors = match parse_file_with(path, doc.as_bytes(), fast, SPLIT, CAP) {
                Ok(file) => panic!("{what} (fast: {fast}): read as {file:?}"),
                Err(errors) => errors,
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.line == *line && e.column == *column && e.message.contains(words)),
                "{what} (fast: {fast}): expected {line}:{column} {words:?}, got {errors:#?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Split reading (issue 14): the result never depends on the number of threads.

/// Group bodies, valid and not, some with lines at the group keys' indentation that are not
/// group keys (a flow list or a quoted key continued there).
const SPLIT_BODIES: &[&str] = &[
    "    members:\n      a: [1000]\n",
    "    members:\n      a: [1000, 500]\n      b: [1001]\n    marks:\n      1002: [c, d]\n",
    "    members:\n      a: [1000,\n  1001]\n",
    "    members:\n      a: [1000,\n        1001]\n",
    "    marks:\n      1000: [a,\n  b]\n",
    "    members:\n      \"a\n  b\": [1000]\n",
    "    members:\n      a: [999]\n",
    "    members:\n",
    "",
    "    members: {}\n",
    "  # a comment at the group indentation\n    members:\n      a: [1000]\n",
    "    members:\n      a: [1000]\n  -x: [1]\n",
    "    members:\n      név: [1000]\n",
];

/// Parses `doc` whole and split into chunks of about `chunk_bytes` in thread pools of 1, 2, 3, 4
/// and 8 threads, with and without the fast path: every result must be the whole-file one.
fn split_reads_like_whole(doc: &str, chunk_bytes: usize) -> Result<(), TestCaseError> {
    let path = Path::new(PATH);
    let whole = Split {
        threshold: usize::MAX,
        chunk_bytes,
    };
    let split = Split {
        threshold: 0,
        chunk_bytes,
    };
    for fast in [false, true] {
        let expected = parse_file_with(path, doc.as_bytes(), fast, whole, CAP);
        for threads in [1, 2, 3, 4, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| parse_file_with(path, doc.as_bytes(), fast, split, CAP));
            prop_assert_eq!(
                &got,
                &expected,
                "{} threads, chunks of {} bytes, fast {}:\n{}",
                threads,
                chunk_bytes,
                fast,
                doc
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn split_reading_equals_whole_reading_at_every_thread_count(
        bodies in prop::collection::vec((0..SPLIT_BODIES.len(), 0u8..8), 2..12),
        chunk_bytes in prop_oneof![1usize..200, Just(usize::MAX)],
    ) {
        let mut doc = String::from("groups:\n");
        for (i, (body, name)) in bodies.iter().enumerate() {
            let _ = write!(doc, "  \"@TGS#g{}\":\n{}", if *name == 0 { 0 } else { i }, SPLIT_BODIES[*body]);
        }
        split_reads_like_whole(&doc, chunk_bytes)?;
    }
}

/// The case found by hand: a flow list continued at the group indentation, in a file split in
/// two chunks (which only 2 threads did with the old thread-count-based chunk size).
#[test]
fn a_flow_list_continued_at_the_group_indentation_reads_the_same_split() {
    let mut doc = String::from("groups:\n");
    for g in 0..8 {
        let _ = write!(doc, "  g{g}:\n    members:\n      a: [1000,\n  1001]\n");
    }
    for chunk_bytes in [1, 40, 100, usize::MAX] {
        split_reads_like_whole(&doc, chunk_bytes).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The pairs aliases add, capped across all files (issue 14).

/// A file whose group `id` has `members` members sharing one anchored list of 10 marks: the
/// first list is written out, each of the other `members - 1` adds 10 pairs through its alias.
fn aliased_marks(id: &str, members: usize) -> String {
    let mut doc = format!("groups:\n  \"{id}\":\n    members:\n      u0: &m [");
    let marks: Vec<String> = (1000..1010).map(|m| m.to_string()).collect();
    doc.push_str(&marks.join(", "));
    doc.push_str("]\n");
    for i in 1..members {
        let _ = writeln!(doc, "      u{i}: *m");
    }
    doc
}

#[test]
fn the_pairs_aliases_add_are_counted_whatever_the_alias() {
    let path = Path::new(PATH);
    let count = |doc: &str| {
        super::parse_file(path, doc.as_bytes(), CAP)
            .unwrap_or_else(|e| panic!("{e:#?}\n{doc}"))
            .alias_pairs
    };
    assert_eq!(count(&aliased_marks("g", 5)), 40);
    // Written out: nothing added.
    for written_out in [
        "groups:\n  g:\n    members:\n      a: [1000, 1001]\n",
        "groups:\n  g:\n    members:\n      a:\n        - 1000\n        - 1001\n    marks:\n      1002:\n        - b\n",
        "{\"groups\": {\"g\": {\"members\": {\"\\u0061\": [1000]}, \"marks\": {\"1001\": [\"b\"]}}}}",
        "groups:\n  g: &unused\n    members: {a: [1000]}\n",
    ] {
        assert_eq!(count(written_out), 0, "{written_out}");
    }
    // A whole group, a merged section, a list of accounts and one account through aliases.
    let doc = "groups:\n  t: &t\n    members:\n      a: [1000, 1001]\n  u: *t\n  v:\n    <<: *t\n  w:\n    marks:\n      1000: &who [b, c, d]\n      1001: *who\n      1002: [&x e]\n      1003: [*x]\n";
    assert_eq!(count(doc), 2 + 2 + 3 + 1);
}

#[test]
fn aliases_over_the_cap_across_files_are_an_error_naming_each_file() {
    // Three files, each adding 40 pairs, under a cap of 100 each but 120 together.
    let files: Vec<(std::path::PathBuf, DesiredFile)> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let path = Path::new("desired").join(format!("{name}.yaml"));
            let doc = aliased_marks(&format!("@TGS#{name}"), 5);
            let file = super::parse_file(&path, doc.as_bytes(), 100).expect("under the cap");
            assert_eq!(file.alias_pairs, 40);
            (path, file)
        })
        .collect();
    assert!(super::assemble(files.clone(), 120).is_ok());
    let errors = super::assemble(files, 100)
        .expect_err("120 pairs over a cap of 100")
        .0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let message = &errors[0].message;
    for name in [
        "desired/a.yaml adds 40",
        "desired/b.yaml adds 40",
        "desired/c.yaml adds 40",
    ] {
        assert!(message.contains(name), "{message}");
    }
    assert!(
        message.contains("add 120 (account, mark) pairs"),
        "{message}"
    );
    assert!(
        message.contains("`max_alias_pairs` allows (100)"),
        "{message}"
    );
}

#[test]
fn one_file_over_the_cap_stops_reading_at_the_alias_that_goes_over() {
    let doc = aliased_marks("g", 6);
    let path = Path::new(PATH);
    assert_eq!(
        super::parse_file(path, doc.as_bytes(), 50)
            .expect("50 pairs")
            .alias_pairs,
        50
    );
    let errors = super::parse_file(path, doc.as_bytes(), 49).expect_err("over the cap");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .message
            .contains("add more than 49 (account, mark) pairs"),
        "{errors:#?}"
    );
    // Stopped at the last member's alias, the one that went over.
    assert_eq!(errors[0].line, 9, "{errors:#?}");
    // A cap of 0: no alias may add a pair.
    assert!(super::parse_file(path, doc.as_bytes(), 0).is_err());
    assert!(
        super::parse_file(path, aliased_marks("g", 1).as_bytes(), 0).is_ok(),
        "an anchor that is never used adds nothing"
    );
}
