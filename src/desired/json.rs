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

/// One member entry of `members`, as read.
struct Listed {
    /// The account, or the name that is not a valid account.
    name: Result<Account, String>,
    /// Offset of its key.
    at: usize,
    marks: MarkSet,
    /// The problems found in the entry (dropped if the entry repeats an earlier one).
    problems: std::ops::Range<usize>,
}

impl Listed {
    fn name(&self) -> &str {
        match &self.name {
            Ok(a) => a.as_str(),
            Err(n) => n,
        }
    }
}

/// What one group's sections say, gathered as they are read, checked at the group's end.
#[derive(Default)]
struct GroupBuild {
    members_at: Option<usize>,
    marks_at: Option<usize>,
    listed: Vec<Listed>,
    /// (account, mark) from `marks`.
    pairs: Vec<(Account, Mark)>,
    /// Where each mark is first used in `members`, and in `marks`.
    uses_in_members: BTreeMap<Mark, usize>,
    uses_in_marks: BTreeMap<Mark, usize>,
    /// Accounts to warn about: account, 0 in `members` or 1 in `marks`, offset.
    unusual: Vec<(Account, u8, usize)>,
}

impl GroupBuild {
    /// The group's desired marks, after the checks that need the whole group (repeated
    /// members, unusual accounts warned once, the service's limits), in the order the YAML
    /// reader makes them (`members` before `marks`, whatever the order written).
    fn finish(self, r: &mut Reader<'_>, id: &GroupId, group_at: usize) -> DesiredGroup {
        let GroupBuild {
            listed,
            pairs,
            uses_in_members,
            uses_in_marks,
            mut unusual,
            ..
        } = self;
        let mut out = DesiredGroup::default();
        // Repeated accounts in `members`: the first stands, each repeat is one error.
        let mut order: Vec<usize> = (0..listed.len()).collect();
        order.sort_by(|&x, &y| listed[x].name().cmp(listed[y].name()));
        let mut repeated = vec![false; listed.len()];
        for run in order.chunk_by(|&x, &y| listed[x].name() == listed[y].name()) {
            let first = run[0];
            for &i in &run[1..] {
                repeated[i] = true;
                for p in &mut r.pending[listed[i].problems.clone()] {
                    p.dropped = true;
                }
                r.repeat(
                    listed[i].at,
                    listed[first].at,
                    format!(
                        "duplicate key: account {:?} is listed again in `members`",
                        listed[i].name()
                    ),
                );
            }
        }
        let mut members: Vec<(Account, MarkSet)> = listed
            .into_iter()
            .zip(repeated)
            .filter_map(|(l, repeat)| match l.name {
                Ok(a) if !repeat => Some((a, l.marks)),
                _ => None,
            })
            .collect();
        members.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        out.members = members.into_iter().collect();
        for (a, m) in pairs {
            out.members.entry(a).or_default().insert(m);
        }
        // Each unusual account warned once, where the YAML reader warns: its first place in
        // `members`, else in `marks`.
        unusual.sort_by(|x, y| (&x.0, x.1, x.2).cmp(&(&y.0, y.1, y.2)));
        unusual.dedup_by(|later, first| later.0 == first.0);
        unusual.sort_by_key(|u| (u.1, u.2));
        for (a, _, at) in unusual {
            r.pending.push(Pending {
                at,
                message: unusual_account(&a),
                first: None,
                warning: true,
                dropped: false,
            });
        }
        // The service's limits, checked before any call.
        let mut uses = uses_in_members;
        for (m, at) in uses_in_marks {
            uses.entry(m).or_insert(at);
        }
        for (at, message) in super::check::limit_problems(id, &uses, &out, group_at, |at| *at) {
            r.error(at, message);
        }
        out
    }
}

struct GroupVisitor<'r, 't, 'g> {
    r: &'r mut Reader<'t>,
    g: &'g mut GroupBuild,
}

impl<'de> Visitor<'de> for GroupVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with `members` and/or `marks`")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let GroupVisitor { r, g } = self;
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            let members = match name.as_deref() {
                Some("members") => true,
                Some("marks") => false,
                Some(other) => {
                    r.error(
                        at,
                        format!("unknown key `{other}`; expected `members` or `marks`"),
                    );
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let (section, slot) = if members {
                ("members", &mut g.members_at)
            } else {
                ("marks", &mut g.marks_at)
            };
            if let Some(first) = *slot {
                r.repeat(at, first, format!("duplicate key `{section}`"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            *slot = Some(at);
            let value_at = r.value_after(end);
            let shape = if members {
                map.next_value_seed(Any(MembersVisitor {
                    r: &mut *r,
                    g: &mut *g,
                }))?
            } else {
                map.next_value_seed(Any(MarksVisitor {
                    r: &mut *r,
                    g: &mut *g,
                }))?
            };
            let what = if members {
                "`members` must be a mapping of account to its marks (such as `host: [500, 1000]`)"
            } else {
                "`marks` must be a mapping of mark to its accounts (such as `1001: [student9]`)"
            };
            match shape {
                Shape::Expected => {}
                Shape::Null => r.error(
                    value_at,
                    format!("`{section}` is null, which may be a half-written file; for none, write {{}}"),
                ),
                Shape::Other(kind) => r.error(value_at, format!("{what}, found {kind}")),
            }
        }
        Ok(Shape::Expected)
    }
}

struct MembersVisitor<'r, 't, 'g> {
    r: &'r mut Reader<'t>,
    g: &'g mut GroupBuild,
}

impl<'de> Visitor<'de> for MembersVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of account to its marks")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let MembersVisitor { r, g } = self;
        if let Some(n) = map.size_hint() {
            g.listed.reserve(n);
        }
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            let Some(name) = name else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let start = r.pending.len();
            let account = match Account::new(&name) {
                Ok(a) => {
                    if !a.is_conventional() {
                        g.unusual.push((a.clone(), 0, at));
                    }
                    Ok(a)
                }
                Err(e) => {
                    r.error(at, e);
                    Err(name.clone().into_owned())
                }
            };
            let value_at = r.value_after(end);
            let mut marks = MarkSet::new();
            let shape = map.next_value_seed(Any(MarkListVisitor {
                r: &mut *r,
                marks: &mut marks,
                uses: &mut g.uses_in_members,
            }))?;
            if !matches!(shape, Shape::Expected) {
                r.error(
                    value_at,
                    format!(
                        "the marks of {name:?} must be a list such as [1000], found {}",
                        shape.kind()
                    ),
                );
            }
            g.listed.push(Listed {
                name: account,
                at,
                marks,
                problems: start..r.pending.len(),
            });
        }
        Ok(Shape::Expected)
    }
}

struct MarkListVisitor<'r, 't, 'u> {
    r: &'r mut Reader<'t>,
    marks: &'u mut MarkSet,
    uses: &'u mut BTreeMap<Mark, usize>,
}

impl<'de> Visitor<'de> for MarkListVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of marks")
    }
    other_scalars!();
    not_a_mapping!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let MarkListVisitor { r, marks, uses } = self;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let raw = raw.get();
            let at = r.offset(raw);
            match mark_item(raw) {
                Ok(m) => {
                    if !marks.insert(m) {
                        r.error(at, format!("mark {m} is listed twice for this account"));
                    }
                    uses.entry(m).or_insert(at);
                }
                Err(message) => r.error(at, message),
            }
        }
        Ok(Shape::Expected)
    }
}

struct MarksVisitor<'r, 't, 'g> {
    r: &'r mut Reader<'t>,
    g: &'g mut GroupBuild,
}

impl<'de> Visitor<'de> for MarksVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of mark to its accounts")
    }
    other_scalars!();
    not_a_list!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let MarksVisitor { r, g } = self;
        let mut seen: HashMap<Mark, usize> = HashMap::new();
        while let Some((at, end, name)) = next_key(r, &mut map)? {
            let Some(name) = name else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let mark = if is_decimal(&name) {
                mark_number(&name)
            } else {
                Err("a mark must be an integer, found a string".to_string())
            };
            let mark = match mark {
                Ok(m) => {
                    if let Some(&first) = seen.get(&m) {
                        r.repeat(
                            at,
                            first,
                            format!("duplicate key: mark {m} is listed again in `marks`"),
                        );
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    seen.insert(m, at);
                    g.uses_in_marks.entry(m).or_insert(at);
                    Some(m)
                }
                Err(message) => {
                    r.error(at, message);
                    None
                }
            };
            let value_at = r.value_after(end);
            let shape = map.next_value_seed(Any(AccountListVisitor {
                r: &mut *r,
                g: &mut *g,
                mark,
            }))?;
            if !matches!(shape, Shape::Expected) {
                let whose = mark.map(|m| format!(" of mark {m}")).unwrap_or_default();
                r.error(
                    value_at,
                    format!(
                        "the accounts{whose} must be a list such as [student9], found {}",
                        shape.kind()
                    ),
                );
            }
        }
        Ok(Shape::Expected)
    }
}

struct AccountListVisitor<'r, 't, 'g> {
    r: &'r mut Reader<'t>,
    g: &'g mut GroupBuild,
    mark: Option<Mark>,
}

impl<'de> Visitor<'de> for AccountListVisitor<'_, '_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of accounts")
    }
    other_scalars!();
    not_a_mapping!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let AccountListVisitor { r, g, mark } = self;
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let raw = raw.get();
            let at = r.offset(raw);
            let name = match account_item(raw) {
                Ok(name) => name,
                Err(message) => {
                    r.error(at, message);
                    continue;
                }
            };
            if seen.contains(&name) {
                r.error(
                    at,
                    format!("account {name:?} is listed twice under this mark"),
                );
                continue;
            }
            match Account::new(&name) {
                Ok(a) => {
                    if !a.is_conventional() {
                        g.unusual.push((a.clone(), 1, at));
                    }
                    if let Some(m) = mark {
                        g.pairs.push((a, m));
                    }
                }
                Err(e) => r.error(at, e),
            }
            seen.insert(name);
        }
        Ok(Shape::Expected)
    }
}

/// An account in a list, as written: a string's text, or a number or `true` as written.
fn account_item(raw: &str) -> Result<Cow<'_, str>, String> {
    match raw.as_bytes()[0] {
        b'"' => string(raw),
        b'n' => Err(
            "`null` is no value, not an account; write \"null\" in quotes if that is really its name"
                .into(),
        ),
        b'[' => Err("an account must be a string, found a list".into()),
        b'{' => Err("an account must be a string, found a mapping".into()),
        _ => Ok(Cow::Borrowed(raw)),
    }
}

/// A mark in a list: a plain decimal integer.
fn mark_item(raw: &str) -> Result<Mark, String> {
    match raw.as_bytes()[0] {
        b'"' => match string(raw) {
            Ok(s) if is_decimal(&s) => Err(format!(
                "a mark must be an integer, found a string; write {s} without quotes"
            )),
            _ => Err("a mark must be an integer, found a string".into()),
        },
        b'n' => Err("a mark must be an integer, found nothing (null)".into()),
        b't' | b'f' => Err("a mark must be an integer, found a boolean".into()),
        b'[' => Err("a mark must be an integer, found a list".into()),
        b'{' => Err("a mark must be an integer, found a mapping".into()),
        _ => mark_number(raw),
    }
}

/// A number as written where a mark belongs (or a decimal key of `marks`).
fn mark_number(text: &str) -> Result<Mark, String> {
    if let Some(mark) = super::check::plain_decimal_mark(text) {
        return mark;
    }
    let meant = text.parse::<i128>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e20)
            .map(|f| f as i128)
    });
    match meant {
        Some(n) => Err(not_plain_decimal(text, n)),
        None => Err(format!("mark {text} is not an integer")),
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

#[cfg(test)]
mod tests;
