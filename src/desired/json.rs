//! JSON desired files (`*.json` in any case), read by serde_json: exact JSON (every escape, no
//! comments, no trailing commas), with the same checks and messages as the YAML reader.
//!
//! One pass of serde_json builds the [`DesiredFile`] directly. Positions come from the input
//! itself: keys and list items are read as [`RawValue`]s, slices of the text whose address gives
//! their byte offset (and whose text is the value as written: `123` as an account is `"123"`); a
//! mapping or list value sits right after its key's `:`. Problems are kept as byte offsets and
//! turned into `line:column` (and a window of the line) in one forward scan at the end, so a
//! one-line file costs one scan, not one per problem. Single-threaded, so the result never
//! depends on the machine.
//!
//! Differences from the YAML reader, all refusals: `null` anywhere (only `{}` and `[]` mean
//! none), a key given twice at any level (both places named with line and column: a one-line
//! file has a single line), and anything serde_json refuses.

use serde::de::DeserializeSeed;
use serde_json::value::RawValue;

use super::*;
use group::{GroupBuild, GroupVisitor};

/// Reads one JSON desired file (`text` without its BOM). Also returns, for a file with problems,
/// the group keys it declares (see [`super::Declared`]).
pub(super) fn parse(path: &Path, text: &str) -> (ParseResult, Vec<Declared>) {
    if text.trim_matches(JSON_SPACE).is_empty() {
        return (
            Err(vec![Diagnostic::file_error(
                path,
                "the file declares nothing (it is empty or blank); to declare no groups, write {\"groups\": {}}",
            )]),
            Vec::new(),
        );
    }
    let mut reader = Reader {
        text,
        pending: Vec::new(),
        groups: Vec::new(),
        whole_file: Vec::new(),
        declared: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let root_at = text.len() - text.trim_start_matches(JSON_SPACE).len();
    let parsed = FileSeed {
        r: &mut reader,
        at: root_at,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = parsed {
        let declared = reader.declared_places();
        return (Err(vec![syntax_error(path, text, &e)]), declared);
    }
    reader.finish(path)
}

/// JSON's whitespace.
const JSON_SPACE: &[char] = &[' ', '\t', '\n', '\r'];

/// A problem found while reading, at a byte offset.
struct Pending {
    at: usize,
    message: String,
    /// Where the same key was first given, for a duplicate.
    first: Option<usize>,
    warning: bool,
    /// Dropped after the fact (a problem inside a repeated entry, which is reported as the
    /// repeat only, as the YAML reader does).
    dropped: bool,
}

struct Reader<'t> {
    text: &'t str,
    pending: Vec<Pending>,
    /// Groups read without a problem: ID, offset of the key, marks.
    groups: Vec<(GroupId, usize, DesiredGroup)>,
    /// Problems of the whole file (no `groups` key).
    whole_file: Vec<String>,
    /// Every group key, first occurrences, valid or not (see [`declared`]).
    declared: Vec<(String, usize)>,
}

impl<'t> Reader<'t> {
    fn offset(&self, s: &str) -> usize {
        s.as_ptr() as usize - self.text.as_ptr() as usize
    }

    /// The offset of the value after the key ending at `key_end` (past `:` and whitespace).
    fn value_after(&self, key_end: usize) -> usize {
        let rest = &self.text[key_end..];
        let rest = rest.trim_start_matches(JSON_SPACE);
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        let rest = rest.trim_start_matches(JSON_SPACE);
        self.text.len() - rest.len()
    }

    fn error(&mut self, at: usize, message: impl Into<String>) {
        self.pending.push(Pending {
            at,
            message: message.into(),
            first: None,
            warning: false,
            dropped: false,
        });
    }

    fn repeat(&mut self, at: usize, first: usize, message: impl Into<String>) {
        self.pending.push(Pending {
            at,
            message: message.into(),
            first: Some(first),
            warning: false,
            dropped: false,
        });
    }

    fn errors_since(&self, start: usize) -> usize {
        self.pending[start..]
            .iter()
            .filter(|p| !p.warning && !p.dropped)
            .count()
    }

    /// The group keys read so far, at their `line:column`.
    fn declared_places(&self) -> Vec<Declared> {
        let places = Places::new(self.text, self.declared.iter().map(|d| d.1).collect());
        self.declared
            .iter()
            .map(|(name, at)| {
                let (line, column) = places.line_column(*at);
                (name.clone(), line, column)
            })
            .collect()
    }

    /// The problems and groups found, as diagnostics at `line:column`.
    fn finish(self, path: &Path) -> (ParseResult, Vec<Declared>) {
        let declared = if self.whole_file.is_empty() && self.pending.iter().all(|p| p.warning) {
            Vec::new()
        } else {
            self.declared_places()
        };
        let Reader {
            text,
            pending,
            groups,
            whole_file,
            ..
        } = self;
        let pending: Vec<Pending> = pending.into_iter().filter(|p| !p.dropped).collect();
        let has_errors = !whole_file.is_empty() || pending.iter().any(|p| !p.warning);
        let mut offsets: Vec<usize> = Vec::new();
        if has_errors {
            for p in pending.iter().filter(|p| !p.warning) {
                offsets.push(p.at);
                offsets.extend(p.first);
            }
        } else {
            offsets.extend(pending.iter().map(|p| p.at));
            offsets.extend(groups.iter().map(|g| g.1));
        }
        let places = Places::new(text, offsets);
        let diag = |p: &Pending| {
            let message = match p.first {
                Some(first) => {
                    let (line, column) = places.line_column(first);
                    format!("{} (first at line {line}, column {column})", p.message)
                }
                None => p.message.clone(),
            };
            let d = places.diagnostic(path, p.at, message);
            if p.warning { d.warning() } else { d }
        };
        if has_errors {
            let whole_file = whole_file
                .into_iter()
                .map(|message| Diagnostic::file_error(path, message));
            let mut errors: Vec<Diagnostic> = whole_file
                .chain(pending.iter().filter(|p| !p.warning).map(diag))
                .collect();
            crate::diag::sort(&mut errors);
            return (Err(errors), declared);
        }
        let warnings = pending.iter().map(diag).collect();
        let groups = groups
            .into_iter()
            .map(|(id, at, group)| (id, places.origin(path, at), group))
            .collect();
        (
            Ok(DesiredFile {
                groups,
                warnings,
                // JSON has no aliases.
                alias_pairs: 0,
            }),
            declared,
        )
    }
}

/// How many bytes of `span` match `f`, counted in blocks of 255 into a byte-wide counter, which
/// the compiler turns into vector compares (a plain `filter().count()` is not).
fn count_bytes(span: &[u8], f: impl Fn(u8) -> bool) -> u64 {
    span.chunks(255)
        .map(|block| u64::from(block.iter().fold(0u8, |n, &b| n + u8::from(f(b)))))
        .sum()
}

/// Line, column and line window of a set of byte offsets, found in one forward scan.
struct Places<'t> {
    text: &'t str,
    /// Sorted offsets with their line, column and the start of their line.
    found: Vec<(usize, u64, u64, usize)>,
    /// The last line looked up (start, end): a one-line file has every group on one line, whose
    /// end must be found once, not once per group.
    last_line: std::cell::Cell<(usize, usize)>,
}

impl<'t> Places<'t> {
    fn new(text: &'t str, mut offsets: Vec<usize>) -> Self {
        offsets.sort_unstable();
        offsets.dedup();
        let bytes = text.as_bytes();
        let mut found = Vec::with_capacity(offsets.len());
        let (mut pos, mut line, mut column, mut line_start) = (0usize, 1u64, 1u64, 0usize);
        // Characters are the bytes that do not continue a UTF-8 sequence. Counted a span at a
        // time (loops the compiler vectorizes), not byte by byte: a pretty-printed file of a
        // million members has millions of lines.
        let chars = |span: &[u8]| count_bytes(span, |b| b & 0xC0 != 0x80);
        for at in offsets {
            let at = at.min(bytes.len());
            let span = &bytes[pos..at];
            match span.iter().rposition(|&b| b == b'\n') {
                Some(last) => {
                    line += count_bytes(span, |b| b == b'\n');
                    line_start = pos + last + 1;
                    column = 1 + chars(&span[last + 1..]);
                }
                None => column += chars(span),
            }
            pos = at;
            found.push((at, line, column, line_start));
        }
        Places {
            text,
            found,
            last_line: std::cell::Cell::new((usize::MAX, 0)),
        }
    }

    fn get(&self, at: usize) -> (usize, u64, u64, usize) {
        let at = at.min(self.text.len());
        match self.found.binary_search_by_key(&at, |f| f.0) {
            Ok(i) => self.found[i],
            Err(_) => (at, 0, 0, at), // not located: never happens, offsets are gathered first
        }
    }

    fn line_column(&self, at: usize) -> (u64, u64) {
        let (_, line, column, _) = self.get(at);
        (line, column)
    }

    /// A window of the line holding `at`, and the characters cut before it.
    fn window(&self, at: usize) -> (u64, u64, String, u64) {
        let (at, line, column, start) = self.get(at);
        let end = match self.last_line.get() {
            (cached, end) if cached == start && end >= at => end,
            _ => {
                let end = self.text[at..]
                    .find('\n')
                    .map_or(self.text.len(), |i| at + i);
                self.last_line.set((start, end));
                end
            }
        };
        let line_text = self.text[start..end].trim_end_matches('\r');
        let (window, cut) = crate::diag::window_at(line_text, at - start, column);
        (line, column, window, cut)
    }

    fn diagnostic(&self, path: &Path, at: usize, message: String) -> Diagnostic {
        let (line, column, window, cut) = self.window(at);
        Diagnostic {
            line,
            column,
            source_line: Some(window),
            source_offset: cut,
            ..Diagnostic::file_error(path, message)
        }
    }

    fn origin(&self, path: &Path, at: usize) -> Origin {
        let (line, column, source_line, source_offset) = self.window(at);
        Origin {
            path: path.to_path_buf(),
            line,
            column,
            source_line,
            source_offset,
        }
    }
}

/// What a value turned out to be when a mapping (or a list) was expected.
enum Shape {
    /// The expected collection, read.
    Expected,
    /// `null`.
    Null,
    /// Something else: "a list", "a string"...
    Other(&'static str),
}

impl Shape {
    /// The kind of what was found, for "must be ..., found {kind}".
    fn kind(&self) -> &'static str {
        match self {
            Shape::Expected => "the expected value",
            Shape::Null => "nothing (null)",
            Shape::Other(kind) => kind,
        }
    }
}

/// Reads a value with `deserialize_any`, so that the visitor sees what is there.
struct Any<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Any<V> {
    type Value = V::Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_any(self.0)
    }
}

/// The visitor methods for the scalars found where a mapping or a list was expected.
macro_rules! other_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
            Ok(Shape::Other("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
            Ok(Shape::Other("an integer"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
            Ok(Shape::Other("an integer"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
            Ok(Shape::Other("a fractional number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
            Ok(Shape::Other("a string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
            Ok(Shape::Null)
        }
    };
}

/// `visit_seq` for a visitor expecting a mapping.
macro_rules! not_a_list {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Shape::Other("a list"))
        }
    };
}

/// `visit_map` for a visitor expecting a list.
macro_rules! not_a_mapping {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Shape::Other("a mapping"))
        }
    };
}

/// A key of a mapping: its offset, the offset just past it, and its text (`None`, reported,
/// when an escape in it is invalid).
type Key<'de> = (usize, usize, Option<Cow<'de, str>>);

fn next_key<'de, A: MapAccess<'de>>(
    r: &mut Reader<'_>,
    map: &mut A,
) -> Result<Option<Key<'de>>, A::Error> {
    let Some(raw) = map.next_key::<&'de RawValue>()? else {
        return Ok(None);
    };
    let raw = raw.get();
    let at = r.offset(raw);
    let text = match string(raw) {
        Ok(text) => Some(text),
        Err(message) => {
            r.error(at, message);
            None
        }
    };
    Ok(Some((at, at + raw.len(), text)))
}

/// The text of a JSON string as written (`raw` with its quotes).
fn string(raw: &str) -> Result<Cow<'_, str>, String> {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).map(Cow::Owned).map_err(|_| {
        "this string holds an invalid `\\u` escape (a UTF-16 surrogate must be followed by its pair, such as \\ud83d\\ude00); write the character itself or fix the escape".to_string()
    })
}

struct FileSeed<'r, 't> {
    r: &'r mut Reader<'t>,
    /// Where the document starts.
    at: usize,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let FileSeed { r, at } = self;
        match d.deserialize_any(FileVisitor { r: &mut *r })? {
            Shape::Expected => {}
            Shape::Null => r.error(
                at,
                "the file holds null, not a mapping with a `groups` key; to declare no groups, write {\"groups\": {}}",
            ),
            Shape::Other(kind) => r.error(
                at,
                format!("a desired file must be a mapping with a `groups` key, found {kind}"),
            ),
        }
        Ok(())
    }
}

struct FileVisitor<'r, 't> {
    r: &'r mut Reader<'t>,
}

impl<'de> Visitor<'de> for FileVisitor<'_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with a `groups` key")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let r = self.r;
        let mut groups_at = None;
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            match name.as_deref() {
                Some("groups") => {
                    if let Some(first) = groups_at {
                        r.repeat(at, first, "duplicate key `groups`");
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    groups_at = Some(at);
                    let value_at = r.value_after(end);
                    match map.next_value_seed(Any(GroupsVisitor { r: &mut *r }))? {
                        Shape::Expected => {}
                        Shape::Null => r.error(
                            value_at,
                            "`groups` is null, which may be a half-written file; to declare no groups, write \"groups\": {}",
                        ),
                        Shape::Other(kind) => r.error(
                            value_at,
                            format!("`groups` must be a mapping of group ID to its `members` and `marks`, found {kind}"),
                        ),
                    }
                }
                Some(other) => {
                    r.error(at, format!("unknown key `{other}`; expected `groups`"));
                    map.next_value::<IgnoredAny>()?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if groups_at.is_none() {
            r.whole_file.push(
                "the file has no `groups` key, so it declares nothing; to declare no groups, write {\"groups\": {}}".into(),
            );
        }
        Ok(Shape::Expected)
    }
}

struct GroupsVisitor<'r, 't> {
    r: &'r mut Reader<'t>,
}

impl<'de> Visitor<'de> for GroupsVisitor<'_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of group ID to its `members` and `marks`")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let r = self.r;
        let mut seen: HashMap<Cow<'de, str>, usize> = HashMap::new();
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            let Some(name) = name else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if let Some(&first) = seen.get(&name) {
                r.repeat(
                    at,
                    first,
                    format!("duplicate key: group {name:?} is declared again"),
                );
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let id = GroupId::new(&name);
            r.declared.push((name.to_string(), at));
            seen.insert(name, at);
            let id = match id {
                Ok(id) => id,
                Err(e) => {
                    r.error(at, e);
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value_at = r.value_after(end);
            let start = r.pending.len();
            let mut build = GroupBuild::default();
            let shape = map.next_value_seed(Any(GroupVisitor {
                r: &mut *r,
                g: &mut build,
            }))?;
            let group = match shape {
                Shape::Expected => build.finish(r, &id, value_at),
                Shape::Null => {
                    r.error(
                        value_at,
                        format!(
                            "group {:?} is null, which may be a half-written file; for a group without marks, write {{}}",
                            id.as_str()
                        ),
                    );
                    continue;
                }
                Shape::Other(kind) => {
                    r.error(
                        value_at,
                        format!(
                            "group {:?} must be a mapping with `members` and/or `marks`, found {kind}",
                            id.as_str()
                        ),
                    );
                    continue;
                }
            };
            if r.errors_since(start) == 0 {
                r.groups.push((id, at, group));
            }
        }
        Ok(Shape::Expected)
    }
}

/// serde_json's error as a diagnostic at its `line:column`, in the user's terms.
fn syntax_error(path: &Path, text: &str, e: &serde_json::Error) -> Diagnostic {
    let message = json_message(e);
    if e.line() == 0 {
        return Diagnostic::file_error(path, message);
    }
    let line_start = if e.line() == 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(e.line() - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    let mut at = (line_start + e.column().saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    Places::new(text, vec![at]).diagnostic(path, at, message)
}

/// What serde_json's error means, and what to do.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let raw = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => &full,
    };
    let what = if let Some(inside) = raw.strip_prefix("EOF while parsing ") {
        let inside = match inside {
            "a list" => "a list",
            "an object" => "a mapping",
            "a string" => "a string",
            _ => "a value",
        };
        return format!(
            "the file ends in the middle of {inside}: it is cut off (a half-written file?) or a bracket is not closed"
        );
    } else {
        raw
    };
    match what {
        "expected `,` or `}`" => "expected `,` or `}` after this mapping entry: a comma is missing, or a bracket is not closed".into(),
        "expected `,` or `]`" => "expected `,` or `]` after this list item: a comma is missing, or a bracket is not closed".into(),
        "expected `:`" => "expected `:` after the key".into(),
        "expected value" => "a value is missing or is not JSON here (JSON has \"strings\" in double quotes, numbers, true, false, null, [lists] and {mappings}; no comments, no single quotes)".into(),
        "expected ident" => "not a JSON value: only true, false and null are written without quotes".into(),
        "key must be a string" => "a key must be a string in double quotes".into(),
        "trailing comma" => "a comma before the closing bracket: remove it (JSON allows no trailing comma)".into(),
        "trailing characters" => "more content after the end of the JSON value: a desired file is one mapping".into(),
        "invalid escape" => "unknown escape sequence in a string: write `\\\\` for a backslash".into(),
        "invalid unicode code point"
        | "lone leading surrogate in hex escape"
        | "unexpected end of hex escape" => "invalid `\\u` escape: write four hexadecimal digits, a UTF-16 surrogate followed by its pair (such as \\ud83d\\ude00), or the character itself".into(),
        "control character (\\u0000-\\u001F) found while parsing a string" => "a control character (a tab or a line break, for instance) inside a string: write it as an escape (`\\t`, `\\n`), or close the string's quotes".into(),
        "recursion limit exceeded" => "nesting deeper than 128 levels: a desired file needs 5 (groups, group, section, list)".into(),
        "invalid number" | "number out of range" => "invalid number".into(),
        _ => "this is not valid JSON".into(),
    }
}

// After the macros above, which it uses.
mod group;
#[cfg(test)]
mod tests;
