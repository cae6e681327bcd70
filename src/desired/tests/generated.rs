//! Generated desired files: plain-layout files from good and (in a dirty file) bad tokens,
//! rendered as written or as one flow mapping, and whether the full reader accepts them
//! without a message.

use super::*;

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
pub(super) enum KeyStyle {
    Double,
    Single,
    Plain,
}

/// A token as written, and whether the fast path may accept it.
type Token = (String, bool);

/// A section entry: its key and its list items.
type Entry = (Token, Vec<Token>);

#[derive(Clone, Debug)]
pub(super) struct GenGroup {
    key: Token,
    pub(super) style: KeyStyle,
    /// `true`: `members`, `false`: `marks`; entries as (key, list items).
    sections: Vec<(bool, Vec<Entry>)>,
}

#[derive(Clone, Debug)]
pub(in crate::desired) struct GenFile {
    pub(super) groups: Vec<GenGroup>,
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

pub(in crate::desired) fn gen_file() -> impl Strategy<Value = GenFile> {
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
    pub(super) fn render(&self) -> String {
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

    pub(in crate::desired) fn is_clean(&self) -> bool {
        let mut names = HashSet::new();
        // `groups:` with nothing under it is null: an error, not "no groups".
        !self.groups.is_empty()
            && self
                .groups
                .iter()
                .all(|g| names.insert(g.key.0.clone()) && g.is_clean())
    }
}

impl GenFile {
    /// The same file as one flow mapping: JSON (every key and account double-quoted, marks as
    /// numbers, mark keys quoted) or YAML flow (plain words where the token allows).
    pub(in crate::desired) fn render_flow(&self, json: bool) -> String {
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
