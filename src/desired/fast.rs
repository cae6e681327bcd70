//! A conservative line-by-line reader for desired files in the plain layout.
//!
//! The full reader (serde-saphyr with a position on every scalar) costs a few microseconds per
//! member-mark pair, most of it building spanned values. Nearly every real file is written in one
//! plain layout, which this module reads directly:
//!
//! ```yaml
//! # comments and blank lines anywhere
//! groups:
//!   "@TGS#a6I4ZUUGO":        # (no trailing comments, though)
//!     members:
//!       teacher10: [1000]
//!     marks:
//!       1001: [student9, student10]
//! ```
//!
//! It either returns exactly the [`DesiredFile`] the full reader would produce, or `None`, and the
//! caller runs the full reader, which is always correct and reports every problem. The only
//! diagnostic it produces is the full reader's warning about an account with characters outside
//! `[a-zA-Z0-9_-]`, with the same text at the same place; any value that would make the full
//! reader report an error (bad mark, duplicate, limit exceeded...), and anything it is not sure
//! YAML reads the way it does (tabs, a CR that does not end a line, anchors, tags, flow mappings, quoting it does not know,
//! plain `null`, a group or section with nothing under it...), makes it give up. Keys and names are the characters as written in both
//! readers (`007`, `0x1F`, `y` are those strings), so plain words are read here without YAML's
//! resolution. [`parse_flow`] does the same for files written as one JSON or YAML flow mapping.
//!
//! Tests in `super::tests` compare it with the full reader on generated files.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::{Declared, DesiredFile, DesiredGroup, Origin};
use crate::diag::Diagnostic;
use crate::model::{
    Account, GroupId, MAX_ACCOUNT_BYTES, MAX_MARKS_PER_GROUP, MAX_MEMBERS_PER_MARK, Mark, MarkSet,
    is_forbidden_in_names,
};

/// Keys longer than this are left to the full reader (YAML limits implicit keys to 1024
/// characters; staying well below it avoids depending on how the parser counts).
const MAX_KEY_BYTES: usize = 512;

/// Reads `doc` (a whole file, or a split chunk whose line 2 is line `line_offset + 2` of the
/// file) if it follows the plain layout exactly and holds nothing the full reader would report.
/// Also returns the group keys declared, as [`super::parse_text`] does.
pub(super) fn parse(
    path: &Path,
    doc: &str,
    line_offset: u64,
) -> Option<(DesiredFile, Vec<Declared>)> {
    if doc.contains('\t') {
        return None;
    }
    // CRLF line ends (files saved on Windows) read like LF ones; a CR anywhere else is left to
    // the full reader.
    let crlf = doc.contains('\r');
    if crlf
        && doc
            .split('\n')
            .any(|l| l.find('\r').is_some_and(|at| at + 1 != l.len()))
    {
        return None;
    }
    let mut reader = Reader::default();
    for (i, line) in doc.split('\n').enumerate() {
        let line = if crlf {
            line.strip_suffix('\r').unwrap_or(line)
        } else {
            line
        };
        reader.line(line, i as u64 + 1)?;
    }
    reader.finish_group()?;
    if reader.state == State::Header || (reader.state == State::Groups && reader.groups.is_empty())
    {
        // No `groups:` line, or a null `groups`: the full reader reports the file.
        return None;
    }
    finish(path, reader.groups, line_offset)
}

/// The file from the groups read: their IDs validated, their origins with a window of the key's
/// line.
fn finish(
    path: &Path,
    groups: Vec<ReadGroup<'_>>,
    line_offset: u64,
) -> Option<(DesiredFile, Vec<Declared>)> {
    let mut file = DesiredFile::default();
    let mut declared = Vec::with_capacity(groups.len());
    for (name, line, column, source_line, in_line, group, warnings) in groups {
        let line = line + line_offset;
        let id = GroupId::new(&name).ok()?;
        declared.push((name, line, column));
        let (source_line, source_offset) = crate::diag::window_at(source_line, in_line, column);
        let origin = Origin {
            path: path.to_path_buf(),
            line,
            column,
            source_line,
            source_offset,
        };
        file.groups.push((id, origin, group));
        for (message, spot) in warnings {
            let (source_line, source_offset) =
                crate::diag::window_at(spot.text, spot.in_line, spot.column);
            file.warnings.push(Diagnostic {
                line: spot.line + line_offset,
                column: spot.column,
                source_line: Some(source_line),
                source_offset,
                ..Diagnostic::file_error(path, message).warning()
            });
        }
    }
    Some((file, declared))
}

/// A group read: its ID as written, the line and column of its key, the key's line and the key's
/// byte offset in it, its marks, and its warnings.
type ReadGroup<'t> = (
    String,
    u64,
    u64,
    &'t str,
    usize,
    DesiredGroup,
    Vec<(String, Spot<'t>)>,
);

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Before the `groups:` line.
    #[default]
    Header,
    /// After `groups: {}`: only comments and blank lines may follow.
    Closed,
    /// Inside `groups:`.
    Groups,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Members,
    Marks,
}

/// The group being read, as written (validated when it ends).
#[derive(Default)]
struct OpenGroup<'t> {
    name: String,
    line: u64,
    /// 1-based column (in characters) of the key.
    column: u64,
    /// Byte offset of the key in its line.
    in_line: usize,
    /// The key's whole line, as written (for `Origin::source_line`).
    text: &'t str,
    /// The group's mapping was written on its key's line, in flow style: nothing may follow.
    inline: bool,
    seen_members: bool,
    seen_marks: bool,
    section: Option<Section>,
    /// Read by [`parse_flow`]: every value is written out, so none is null.
    flow: bool,
    /// Entries read under the current section: a section with none is null (`members:` with
    /// nothing under it, often a cut-off file), which the full reader reports.
    entries: usize,
    /// `members`: account -> its marks.
    members: Vec<(&'t str, MarkSet)>,
    /// Accounts with characters outside `[a-zA-Z0-9_-]` in `members` and in `marks`, in
    /// document order, with where they were written: the full reader warns about each (once per
    /// group, `members` first), and so must this reader.
    unusual_members: Vec<(&'t str, Spot<'t>)>,
    unusual_marks: Vec<(&'t str, Spot<'t>)>,
    /// `marks`: mark -> its accounts.
    marks: Vec<(Mark, Vec<&'t str>)>,
}

/// Where a token was written: for a warning about it.
#[derive(Clone, Copy)]
struct Spot<'t> {
    line: u64,
    /// 1-based, in characters.
    column: u64,
    /// The whole line.
    text: &'t str,
    /// Byte offset of the token in `text`.
    in_line: usize,
}

impl<'t> Spot<'t> {
    /// The spot of `token`, a slice of the line `text` (line `line` of the document).
    fn of(token: &'t str, text: &'t str, line: u64) -> Self {
        let in_line = token.as_ptr() as usize - text.as_ptr() as usize;
        Spot {
            line,
            column: text[..in_line].chars().count() as u64 + 1,
            text,
            in_line,
        }
    }
}

#[derive(Default)]
struct Reader<'t> {
    state: State,
    group_indent: Option<usize>,
    section_indent: Option<usize>,
    entry_indent: Option<usize>,
    open: Option<OpenGroup<'t>>,
    names: HashSet<String>,
    groups: Vec<ReadGroup<'t>>,
}

impl<'t> Reader<'t> {
    /// Reads one line (without its `\n`); `None` gives up on the whole document.
    fn line(&mut self, raw: &'t str, number: u64) -> Option<()> {
        let line = raw.trim_end_matches(' ');
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if body.is_empty() {
            return Some(());
        }
        if body.starts_with('#') {
            return body.chars().all(printable).then_some(());
        }
        match self.state {
            State::Header => {
                if indent != 0 {
                    return None;
                }
                self.state = match body {
                    "groups:" => State::Groups,
                    "groups: {}" => State::Closed,
                    _ => return None,
                };
                Some(())
            }
            State::Closed => None,
            State::Groups => {
                if indent == 0 {
                    return None; // another top-level key, or a document marker
                }
                let group_indent = *self.group_indent.get_or_insert(indent);
                if indent == group_indent {
                    return self.group_key(body, raw, number);
                }
                if indent < group_indent {
                    return None;
                }
                let section_indent = *self.section_indent.get_or_insert(indent);
                if indent == section_indent {
                    return self.section_key(body);
                }
                if indent < section_indent {
                    return None;
                }
                let entry_indent = *self.entry_indent.get_or_insert(indent);
                if indent != entry_indent {
                    return None;
                }
                self.entry(body, raw, number)
            }
        }
    }

    /// A group key line: `"ID":`, `'ID':` or `ID:`, or one of these followed by the group's
    /// flow mapping on the same line (`"ID": {members: {a: [1000]}}`), which the flow scanner
    /// reads (see [`parse_flow`]).
    fn group_key(&mut self, body: &'t str, raw: &'t str, number: u64) -> Option<()> {
        self.finish_group()?;
        let (key, inline) = match body.strip_suffix(':') {
            Some(key) => (key, None),
            None => {
                let end = match body.as_bytes()[0] {
                    q @ (b'"' | b'\'') => body[1..].find(char::from(q))? + 2,
                    _ => body.find(':')?,
                };
                let (key, rest) = body.split_at(end);
                let mapping = rest.strip_prefix(": ")?.trim_start_matches(' ');
                if !mapping.starts_with('{') {
                    return None;
                }
                (key, Some(mapping))
            }
        };
        if key.len() > MAX_KEY_BYTES {
            return None;
        }
        let name = if let Some(inner) = key.strip_prefix('"') {
            let inner = inner.strip_suffix('"')?;
            if inner.contains(['"', '\\']) || !inner.chars().all(printable) {
                return None;
            }
            inner
        } else if let Some(inner) = key.strip_prefix('\'') {
            let inner = inner.strip_suffix('\'')?;
            if inner.contains('\'') || !inner.chars().all(printable) {
                return None;
            }
            inner
        } else if is_plain_word(key) {
            key
        } else {
            return None;
        };
        if name.is_empty() || !self.names.insert(name.to_string()) {
            return None; // an empty ID or a repeated group: the full reader reports it
        }
        let indent = self.group_indent.unwrap_or(0);
        self.open = Some(OpenGroup {
            name: name.to_string(),
            line: number,
            column: indent as u64 + 1,
            in_line: indent,
            text: raw,
            inline: inline.is_some(),
            ..OpenGroup::default()
        });
        if let Some(mapping) = inline {
            // The rest of the line is the group's mapping, closed on this line, then nothing
            // (a comment or a continuation line is left to the full reader).
            let pos = mapping.as_ptr() as usize - raw.as_ptr() as usize;
            let mut s = Scanner {
                text: raw,
                b: raw.as_bytes(),
                pos,
                line: number,
                line_start: 0,
                line_end: None,
                col: raw[..pos].chars().count() as u64,
            };
            s.group(self.open.as_mut()?)?;
            s.ws()?;
            if s.pos != raw.len() {
                return None;
            }
        }
        Some(())
    }

    /// `members:` or `marks:`, each at most once per group.
    fn section_key(&mut self, body: &str) -> Option<()> {
        let group = self.open.as_mut()?;
        if group.inline {
            return None; // the group's mapping was given on its key's line
        }
        let (seen, section) = match body {
            "members:" => (&mut group.seen_members, Section::Members),
            "marks:" => (&mut group.seen_marks, Section::Marks),
            _ => return None,
        };
        if std::mem::replace(seen, true) {
            return None;
        }
        if group.section.is_some() && group.entries == 0 {
            return None; // the previous section is null
        }
        group.section = Some(section);
        group.entries = 0;
        Some(())
    }

    /// `KEY: [V, V, ...]` in the current section.
    fn entry(&mut self, body: &'t str, raw: &'t str, number: u64) -> Option<()> {
        let group = self.open.as_mut()?;
        group.entries += 1;
        let (key, rest) = body.split_once(':')?;
        let list = rest.strip_prefix(' ')?.trim_start_matches(' ');
        let inner = list.strip_prefix('[')?.strip_suffix(']')?;
        let items = inner.trim_matches(' ');
        let items = (!items.is_empty()).then(|| items.split(',').map(|i| i.trim_matches(' ')));
        match group.section? {
            Section::Members => {
                if plain_account(key)? {
                    group
                        .unusual_members
                        .push((key, Spot::of(key, raw, number)));
                }
                let mut set = MarkSet::new();
                for item in items.into_iter().flatten() {
                    if !set.insert(parse_mark(item)?) {
                        return None;
                    }
                }
                group.members.push((key, set));
            }
            Section::Marks => {
                let mark = parse_mark(key)?;
                let mut accounts = Vec::new();
                for item in items.into_iter().flatten() {
                    if plain_account(item)? {
                        group
                            .unusual_marks
                            .push((item, Spot::of(item, raw, number)));
                    }
                    accounts.push(item);
                }
                group.marks.push((mark, accounts));
            }
        }
        Some(())
    }

    /// Validates the open group as `check_group` would and keeps it; `None` on anything that
    /// would be reported.
    fn finish_group(&mut self) -> Option<()> {
        let Some(group) = self.open.take() else {
            return Some(());
        };
        // A group or a section with nothing under it is null: the full reader reports it. (In
        // the flow layout, and in a group's mapping given on its key's line, every value is
        // written out, `{}` included: nothing there is null.)
        if !group.flow && !group.inline && (group.section.is_none() || group.entries == 0) {
            return None;
        }
        let OpenGroup {
            name,
            line,
            column,
            in_line,
            text,
            mut members,
            mut marks,
            unusual_members,
            unusual_marks,
            ..
        } = group;
        // Distinct marks, however they are used (an empty `marks` entry counts too).
        let mut distinct: Vec<Mark> = Vec::new();
        let mut note = |m: Mark| {
            if let Err(i) = distinct.binary_search(&m) {
                distinct.insert(i, m);
            }
        };
        for (_, set) in &members {
            set.iter().for_each(&mut note);
        }
        for (m, _) in &marks {
            note(*m);
        }
        if distinct.len() > MAX_MARKS_PER_GROUP {
            return None;
        }
        members.sort_unstable_by(|x, y| x.0.cmp(y.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        marks.sort_by_key(|e| e.0);
        if marks.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let mut out = DesiredGroup {
            members: members
                .into_iter()
                .map(|(a, set)| Some((Account::new(a).ok()?, set)))
                .collect::<Option<BTreeMap<_, _>>>()?,
        };
        for (mark, mut accounts) in marks {
            accounts.sort_unstable();
            if accounts.windows(2).any(|w| w[0] == w[1]) {
                return None;
            }
            for a in accounts {
                out.members
                    .entry(Account::new(a).ok()?)
                    .or_default()
                    .insert(mark);
            }
        }
        let mut per_mark = [0usize; MAX_MARKS_PER_GROUP];
        for set in out.members.values() {
            for m in set.iter() {
                per_mark[distinct.binary_search(&m).ok()?] += 1;
            }
        }
        if per_mark.iter().any(|&n| n > MAX_MEMBERS_PER_MARK) {
            return None;
        }
        // The full reader's warnings: each unusual account once, `members` first.
        let mut warned: HashSet<&str> = HashSet::new();
        let mut warnings = Vec::new();
        for (account, spot) in unusual_members.iter().chain(&unusual_marks) {
            if warned.insert(account) {
                let account = Account::new(account).ok()?;
                warnings.push((super::unusual_account(&account), *spot));
            }
        }
        self.groups
            .push((name, line, column, text, in_line, out, warnings));
        Some(())
    }
}

/// A character the fast path accepts inside a comment or a quoted key: no control characters and
/// nothing a YAML reader may treat specially (byte order mark, non-characters, line separators).
fn printable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' | '\u{2028}' | '\u{2029}'
        )
}

/// A plain scalar the full reader takes as written: `[A-Za-z0-9_-]`, starting with a letter, a
/// digit or `_` (never `-`, an indicator). Both readers take keys and names as the characters
/// written, so `007`, `0x1F`, `1e3`, `y` and `no` are accepted here too; only `null` (in any
/// case), which the full reader refuses as "no value", is left to it.
fn is_plain_word(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || first == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !s.eq_ignore_ascii_case("null")
}

/// An account the full reader would accept without any message.
fn is_account(s: &str) -> bool {
    s.len() <= MAX_ACCOUNT_BYTES && is_plain_word(s)
}

/// A plain account the full reader takes as written: `Some(false)` when it has nothing to say,
/// `Some(true)` when it only warns (characters outside `[a-zA-Z0-9_-]` that are safe in a plain
/// scalar: `.`, `@`, `+`, non-ASCII letters), `None` when this reader is unsure or the full reader
/// would report an error.
fn plain_account(s: &str) -> Option<bool> {
    if is_account(s) {
        return Some(false);
    }
    if s.eq_ignore_ascii_case("null") {
        return None; // "no value": the full reader reports it
    }
    let mut chars = s.chars();
    let first = chars.next()?;
    let safe = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '.' | '@' | '+')
            || (!c.is_ascii() && printable(c) && !is_forbidden_in_names(c))
    };
    let first_ok = first.is_ascii_alphanumeric()
        || matches!(first, '_' | '+')
        || (!first.is_ascii() && safe(first));
    (first_ok && chars.all(safe) && Account::new(s).is_ok()).then_some(true)
}

/// A mark written in plain decimal (no sign, no leading zero, no `_`) that is a valid mark.
fn parse_mark(s: &str) -> Option<Mark> {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || bytes[0] == b'0' {
        return None;
    }
    if !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Mark::new(s.parse::<u64>().ok()?).ok()
}

// ---------------------------------------------------------------------------------------------
// The flow layout: one JSON (or YAML flow) mapping, as scripts write rosters.

/// Reads `doc` if it is one flow mapping in the plain shape, `{"groups": {ID: {"members":
/// {ACCOUNT: [MARK, ...]}, "marks": {MARK: [ACCOUNT, ...]}}}}`, in any spacing and line layout,
/// with keys and accounts double-quoted or plain words, marks plain decimal, and nothing the full
/// reader would report. `None` on anything else (escapes, single quotes, comments, tabs, CR,
/// anchors, tags, trailing commas, null...), as [`parse`] does. Whole files only (never split).
pub(super) fn parse_flow(path: &Path, doc: &str) -> Option<(DesiredFile, Vec<Declared>)> {
    let mut s = Scanner {
        text: doc,
        b: doc.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
        line_end: None,
        col: 0,
    };
    let mut reader = Reader::default();
    s.ws()?;
    s.eat(b'{')?;
    s.ws()?;
    let top = s.key()?;
    if top.text != "groups" {
        return None;
    }
    s.ws()?;
    s.eat(b'{')?;
    s.ws()?;
    if s.peek() == Some(b'}') {
        s.bump(1);
    } else {
        loop {
            let in_line = s.pos - s.line_start;
            let key = s.key()?;
            let line_text = s.current_line();
            if !(key.quoted || is_plain_word(key.text)) || key.text.is_empty() {
                return None;
            }
            if key.text.len() > MAX_KEY_BYTES || !reader.names.insert(key.text.to_string()) {
                return None;
            }
            reader.open = Some(OpenGroup {
                name: key.text.to_string(),
                line: key.line,
                column: key.column,
                in_line,
                text: line_text,
                flow: true,
                ..OpenGroup::default()
            });
            s.ws()?;
            s.group(reader.open.as_mut()?)?;
            reader.finish_group()?;
            if !s.next_item(b'}')? {
                break;
            }
        }
    }
    s.ws()?;
    s.eat(b'}')?;
    s.ws()?;
    if s.pos != s.b.len() {
        return None;
    }
    finish(path, reader.groups, 0)
}

/// A key as written.
struct Key<'t> {
    text: &'t str,
    quoted: bool,
    line: u64,
    /// 1-based, in characters.
    column: u64,
}

/// A cursor over a flow document that knows its line and column.
struct Scanner<'t> {
    text: &'t str,
    b: &'t [u8],
    pos: usize,
    line: u64,
    line_start: usize,
    /// Where the current line ends, once asked for (see [`Scanner::current_line`]).
    line_end: Option<usize>,
    /// Characters between the line's start and `pos`.
    col: u64,
}

impl<'t> Scanner<'t> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Moves `n` bytes on (none of them a line break), counting characters.
    fn bump(&mut self, n: usize) {
        let end = (self.pos + n).min(self.b.len());
        self.col += self.b[self.pos..end]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count() as u64;
        self.pos = end;
    }

    /// Skips spaces and line breaks; `None` on what the fast path leaves alone (tabs, CR,
    /// comments, anything YAML gives a meaning to between tokens).
    fn ws(&mut self) -> Option<()> {
        while let Some(b) = self.peek() {
            match b {
                b' ' => {
                    self.pos += 1;
                    self.col += 1;
                }
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.pos;
                    self.line_end = None;
                    self.col = 0;
                }
                b'\t' | b'\r' | b'#' => return None,
                _ => break,
            }
        }
        Some(())
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.bump(1))
    }

    /// After an item: `,` then another item (`true`), or the closing `close` (`false`).
    fn next_item(&mut self, close: u8) -> Option<bool> {
        self.ws()?;
        match self.peek()? {
            b',' => {
                self.bump(1);
                self.ws()?;
                // A trailing comma: YAML allows it, JSON does not; leave it to the full reader.
                (self.peek()? != close).then_some(true)
            }
            b if b == close => {
                self.bump(1);
                Some(false)
            }
            _ => None,
        }
    }

    /// A double-quoted string without escapes or control characters, or a plain word.
    fn token(&mut self) -> Option<Key<'t>> {
        let line = self.line;
        let column = self.col + 1;
        if self.peek()? == b'"' {
            let start = self.pos + 1;
            let len = self.b[start..].iter().position(|&b| b == b'"')?;
            let inner = &self.text[start..start + len];
            if inner.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f)
                || !inner.chars().all(printable)
            {
                return None;
            }
            self.bump(len + 2);
            return Some(Key {
                text: inner,
                quoted: true,
                line,
                column,
            });
        }
        let start = self.pos;
        let len = self.b[start..]
            .iter()
            .position(|&b| {
                !(b.is_ascii_alphanumeric()
                    || matches!(b, b'_' | b'-' | b'.' | b'@' | b'+')
                    || b >= 0x80)
            })
            .unwrap_or(self.b.len() - start);
        let word = self.text.get(start..start + len)?;
        if word.is_empty() {
            return None;
        }
        self.bump(len);
        Some(Key {
            text: word,
            quoted: false,
            line,
            column,
        })
    }

    /// `KEY:`. The colon must follow the key at once, and after a plain key a space or line
    /// break must follow it (else YAML reads `a:b` as one scalar).
    fn key(&mut self) -> Option<Key<'t>> {
        let key = self.token()?;
        self.eat(b':')?;
        if !key.quoted && !matches!(self.peek()?, b' ' | b'\n') {
            return None;
        }
        Some(key)
    }

    /// Where `key`, which started `in_line` bytes into the current line, was written.
    fn spot(&mut self, key: &Key<'t>, in_line: usize) -> Spot<'t> {
        Spot {
            line: key.line,
            column: key.column,
            text: self.current_line(),
            in_line,
        }
    }

    /// The current line, found once per line (a one-line file has a million keys on it).
    fn current_line(&mut self) -> &'t str {
        let end = match self.line_end {
            Some(end) if end >= self.pos => end,
            _ => {
                let end = self.b[self.pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.b.len(), |i| self.pos + i);
                self.line_end = Some(end);
                end
            }
        };
        &self.text[self.line_start..end]
    }

    /// A group's mapping: `{}` or `members` and `marks`, each at most once.
    fn group(&mut self, group: &mut OpenGroup<'t>) -> Option<()> {
        self.items(b'{', b'}', |s| {
            let key = s.key()?;
            s.ws()?;
            let seen = match key.text {
                "members" => &mut group.seen_members,
                "marks" => &mut group.seen_marks,
                _ => return None,
            };
            if std::mem::replace(seen, true) {
                return None;
            }
            if key.text == "members" {
                s.members(group)?;
            } else {
                s.marks(group)?;
            }
            Some(())
        })
    }

    /// `{ACCOUNT: [MARK, ...], ...}`.
    fn members(&mut self, group: &mut OpenGroup<'t>) -> Option<()> {
        self.items(b'{', b'}', |s| {
            let in_line = s.pos - s.line_start;
            let key = s.key()?;
            if flow_account(&key)? {
                let spot = s.spot(&key, in_line);
                group.unusual_members.push((key.text, spot));
            }
            s.ws()?;
            let mut set = MarkSet::new();
            s.list(|s| {
                let t = s.token()?;
                if t.quoted || !set.insert(parse_mark(t.text)?) {
                    return None;
                }
                Some(())
            })?;
            group.members.push((key.text, set));
            Some(())
        })
    }

    /// `{MARK: [ACCOUNT, ...], ...}`; a mark key may be quoted (JSON needs it).
    fn marks(&mut self, group: &mut OpenGroup<'t>) -> Option<()> {
        self.items(b'{', b'}', |s| {
            let key = s.key()?;
            let mark = parse_mark(key.text)?;
            s.ws()?;
            let mut accounts = Vec::new();
            let mut unusual = Vec::new();
            s.list(|s| {
                let in_line = s.pos - s.line_start;
                let t = s.token()?;
                if flow_account(&t)? {
                    unusual.push((t.text, s.spot(&t, in_line)));
                }
                accounts.push(t.text);
                Some(())
            })?;
            group.unusual_marks.append(&mut unusual);
            group.marks.push((mark, accounts));
            Some(())
        })
    }

    /// `[ITEM, ...]`, each item read by `item`.
    fn list(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.items(b'[', b']', item)
    }

    /// `open ITEM, ... close` (a flow list or mapping), each item read by `item`.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.ws()?;
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            if !self.next_item(close)? {
                return Some(());
            }
        }
    }
}

/// An account the full reader takes: `Some(false)` without a message, `Some(true)` with only a
/// warning (characters outside `[a-zA-Z0-9_-]`), `None` when unsure or when it would report an
/// error. A quoted one is read as is; a plain one as [`plain_account`] says.
fn flow_account(t: &Key<'_>) -> Option<bool> {
    if !t.quoted {
        return plain_account(t.text);
    }
    let conventional = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !t.text.is_empty() && t.text.len() <= MAX_ACCOUNT_BYTES && t.text.bytes().all(conventional) {
        return Some(false);
    }
    let account = Account::new(t.text).ok()?;
    Some(!account.is_conventional())
}
