//! Desired files: YAML saying which members of which group carry which marks (SPEC section 3).
//!
//! Loading is two steps. [`parse_file`] turns one file's bytes into a [`DesiredFile`] or a list of
//! every problem in it, each at `path:line:column`; it is pure, so the daemon can re-parse only the
//! files whose content changed. [`assemble`] merges files into one [`DesiredState`] and reports a
//! group declared in two files. [`load`] walks a directory (or takes one file), reads and parses the
//! files in parallel, and assembles them.
//!
//! Architecture invariant: a file that fails to read or parse never contributes "no groups". Any
//! error makes the whole load fail, so a broken file can never turn into clears.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{Account, GroupId, MAX_MARKS_PER_GROUP, MAX_MEMBERS_PER_MARK, Mark, MarkSet};
use crate::yaml::{Entries, MapOr, Scalar, ScalarVisitor, visit_known_keys};

use check::*;
pub use fs::{discover, is_desired_name, load, load_seeing, read_file};
use raw::*;

pub mod cache;
mod check;
mod fast;
pub mod fs;
#[cfg(test)]
mod inline_tests;
mod json;
mod raw;
#[cfg(test)]
mod tests;

/// The marks one group should carry, by member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredGroup {
    /// Account -> the marks it should carry (union of the `members` and `marks` sections).
    pub members: BTreeMap<Account, MarkSet>,
}

impl DesiredGroup {
    /// Number of (account, mark) pairs.
    pub fn pair_count(&self) -> usize {
        self.members.values().map(MarkSet::len).sum()
    }
}

/// Where a group was declared, so that a group in two files can name both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub path: PathBuf,
    /// 1-based line of the group's key.
    pub line: u64,
    /// 1-based column of the group's key.
    pub column: u64,
    /// The line declaring the group (a window of it around the key, for long lines), so that a
    /// conflict found later (by `assemble` or the daemon's cache) is shown without reading the
    /// file again.
    pub source_line: String,
    /// Characters cut before `source_line` (see [`Diagnostic::source_offset`]).
    pub source_offset: u64,
}

impl Origin {
    /// An error at this group key, quoting its line.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            line: self.line,
            column: self.column,
            source_line: Some(self.source_line.clone()),
            source_offset: self.source_offset,
            ..Diagnostic::file_error(&self.path, message)
        }
    }
}

/// The error for a group declared again at `here`, first declared at `first`.
pub fn declared_twice(id: &GroupId, here: &Origin, first: &Origin) -> Diagnostic {
    let what = if first.path == here.path {
        format!(
            "group {:?} is declared twice in this file (first at line {})",
            id.as_str(),
            first.line
        )
    } else {
        format!(
            "group {:?} is declared in two files: here and in {}:{}:{}",
            id.as_str(),
            first.path.display(),
            first.line,
            first.column
        )
    };
    here.error(what)
}

/// One parsed desired file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredFile {
    /// The groups the file declares, with where each was declared.
    pub groups: Vec<(GroupId, Origin, DesiredGroup)>,
    /// Problems that do not stop the file from being used.
    pub warnings: Vec<Diagnostic>,
    /// The (account, mark) pairs that aliases (`*name`, `<<: *name`) add in this file: what
    /// [`check_alias_pairs`] sums over all files.
    pub alias_pairs: usize,
}

/// The default of the config's `max_alias_pairs`: the pairs aliases may add across all files.
pub const DEFAULT_MAX_ALIAS_PAIRS: usize = 1_000_000;

/// The pairs that aliases add across all files, `(file, pairs)`, checked against the config's
/// `max_alias_pairs`: over it, an error naming every contributing file and its share (on the
/// largest contributor), so that a small file cannot expand past the deployment's memory.
pub fn check_alias_pairs<'p>(
    files: impl IntoIterator<Item = (&'p Path, usize)>,
    max_alias_pairs: usize,
) -> Result<(), Diagnostic> {
    let mut shares: Vec<(&Path, usize)> = files.into_iter().filter(|f| f.1 > 0).collect();
    let total: usize = shares.iter().map(|f| f.1).sum();
    if total <= max_alias_pairs {
        return Ok(());
    }
    shares.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    let list: Vec<String> = shares
        .iter()
        .map(|(p, n)| format!("{} adds {n}", p.display()))
        .collect();
    Err(Diagnostic::file_error(
        shares[0].0,
        format!(
            "aliases (`*name`, `<<`) add {total} (account, mark) pairs across the desired files, more than `max_alias_pairs` allows ({max_alias_pairs}): {}; write the pairs out, or raise `max_alias_pairs` in the config",
            list.join(", ")
        ),
    ))
}

/// Everything the desired files say, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Group -> its desired members and marks. Sorted, so plans are deterministic.
    pub groups: BTreeMap<GroupId, DesiredGroup>,
    /// Problems that do not stop the desired state from being used.
    pub warnings: Vec<Diagnostic>,
    /// Where each group is declared (the plan heads each group with its `file:line`).
    pub origins: BTreeMap<GroupId, Origin>,
}

impl DesiredState {
    /// Number of (group, account, mark) triples.
    pub fn pair_count(&self) -> usize {
        self.groups.values().map(DesiredGroup::pair_count).sum()
    }
}

/// When and how a large file is split at group boundaries to be parsed in parallel (see
/// [`split_groups`]).
#[derive(Clone, Copy, Debug)]
struct Split {
    /// Files of at least this many bytes are split when their layout allows it.
    threshold: usize,
    /// Target size of one chunk.
    chunk_bytes: usize,
}

/// The split of every file read: files of 1 MiB and more, chunks of about 256 KiB (a 26 MB
/// file gives about a hundred, which balance over any number of threads).
const SPLIT: Split = Split {
    threshold: 1 << 20,
    chunk_bytes: 256 << 10,
};

/// Merges parsed files into one desired state. A group declared in two files is an error that
/// names both, and so are aliases adding more than `max_alias_pairs` pairs across the files.
pub fn assemble(
    files: Vec<(PathBuf, DesiredFile)>,
    max_alias_pairs: usize,
) -> Result<DesiredState, Diagnostics> {
    let mut state = DesiredState::default();
    let mut origins: HashMap<GroupId, Origin> = HashMap::new();
    let mut errors = Vec::new();
    if let Err(d) = check_alias_pairs(
        files.iter().map(|(p, f)| (p.as_path(), f.alias_pairs)),
        max_alias_pairs,
    ) {
        errors.push(d);
    }
    for (_, file) in files {
        state.warnings.extend(file.warnings);
        for (id, origin, group) in file.groups {
            if let Some(first) = origins.get(&id) {
                errors.push(declared_twice(&id, &origin, first));
                continue;
            }
            origins.insert(id.clone(), origin.clone());
            state.origins.insert(id.clone(), origin);
            state.groups.insert(id, group);
        }
    }
    if errors.is_empty() {
        crate::diag::sort(&mut state.warnings);
        Ok(state)
    } else {
        Err(Diagnostics(errors))
    }
}

/// A file as [`load`] read it: parsed, or failed with the group keys it declares all the same
/// (and its text, to quote them), so that a group also declared in another file is reported in
/// the same pass as the file's other problems.
enum Loaded<'a> {
    Parsed(&'a DesiredFile),
    Failed(&'a [Declared], &'a [u8]),
}

/// Reports each group declared both in a file that failed to parse and in another file, in file
/// order (the first file named is "first"). Conflicts between files that parsed are
/// [`assemble`]'s; a group repeated within one file is that file's own error.
fn conflicts_with_failed(files: &[(&Path, Loaded<'_>)]) -> Vec<Diagnostic> {
    let origin = |path: &Path, bytes: &[u8], line: u64, column: u64| {
        let text = String::from_utf8_lossy(bytes);
        let d = Diagnostic::at(path, &text, line, column, "");
        Origin {
            path: path.to_path_buf(),
            line,
            column,
            source_line: d.source_line.unwrap_or_default(),
            source_offset: d.source_offset,
        }
    };
    // Group -> (file index, position in the file's list) of its first declaration.
    let mut first: HashMap<GroupId, (usize, usize)> = HashMap::new();
    let mut errors = Vec::new();
    let origin_of = |file: usize, at: usize| -> Origin {
        let (path, loaded) = &files[file];
        match loaded {
            Loaded::Parsed(f) => f.groups[at].1.clone(),
            Loaded::Failed(declared, bytes) => {
                let (_, line, column) = &declared[at];
                origin(path, bytes, *line, *column)
            }
        }
    };
    for (index, (_, loaded)) in files.iter().enumerate() {
        let ids: Vec<Option<GroupId>> = match loaded {
            Loaded::Parsed(f) => f.groups.iter().map(|g| Some(g.0.clone())).collect(),
            Loaded::Failed(declared, _) => declared
                .iter()
                .map(|(name, _, _)| GroupId::new(name).ok())
                .collect(),
        };
        for (at, id) in ids.into_iter().enumerate() {
            let Some(id) = id else { continue };
            match first.get(&id) {
                None => {
                    first.insert(id, (index, at));
                }
                Some(&(first_file, first_at)) => {
                    let both_parsed = matches!(files[first_file].1, Loaded::Parsed(_))
                        && matches!(loaded, Loaded::Parsed(_));
                    if !both_parsed && first_file != index {
                        errors.push(declared_twice(
                            &id,
                            &origin_of(index, at),
                            &origin_of(first_file, first_at),
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// Parses one desired file. Pure: `path` is only used in diagnostics.
///
/// Returns every problem found, not just the first: structural YAML errors stop the parse of the
/// file (or of one group, for large split files), but every value-level problem (bad mark,
/// bad account, unknown key, duplicate, limit) is collected.
///
/// JSON files (`*.json`, generated rosters) are read by serde_json (`json.rs`) with the same checks
/// and messages, at `file:line:column`. At most
/// [`crate::diag::MAX_ERRORS_PER_FILE`] errors (or warnings) are returned, then a count of the
/// rest.
///
/// Aliases may add at most `max_alias_pairs` pairs (the config's key): the count is kept while
/// reading, and reading stops as soon as it goes over, so memory stays proportional to the input
/// below the cap. [`DesiredFile::alias_pairs`] is what they added, for the total over all files.
pub fn parse_file(
    path: &Path,
    bytes: &[u8],
    max_alias_pairs: usize,
) -> Result<DesiredFile, Vec<Diagnostic>> {
    parse_file_declaring(path, bytes, max_alias_pairs).0
}

/// [`parse_file`], and the group keys the file declares (first occurrences, valid or not, as far
/// as the text could be read), which [`load`] needs for a file that failed.
fn parse_file_declaring(
    path: &Path,
    bytes: &[u8],
    max_alias_pairs: usize,
) -> (ParseResult, Vec<Declared>) {
    let (result, declared) = parse_file_with_declared(path, bytes, true, SPLIT, max_alias_pairs);
    let result = match result {
        Ok(mut file) => {
            crate::diag::cap_per_file(path, &mut file.warnings);
            Ok(file)
        }
        Err(mut errors) => {
            crate::diag::cap_per_file(path, &mut errors);
            Err(errors)
        }
    };
    (result, declared)
}

/// [`parse_file`], with the plain-layout fast path ([`fast`]) or without it (`fast == false`: the
/// full reader only, which tests compare the fast path with), splitting large files as `split`
/// says (tests split small files).
#[cfg(test)]
fn parse_file_with(
    path: &Path,
    bytes: &[u8],
    fast: bool,
    split: Split,
    max_alias_pairs: usize,
) -> Result<DesiredFile, Vec<Diagnostic>> {
    parse_file_with_declared(path, bytes, fast, split, max_alias_pairs).0
}

fn parse_file_with_declared(
    path: &Path,
    bytes: &[u8],
    fast: bool,
    split: Split,
    max_alias_pairs: usize,
) -> (ParseResult, Vec<Declared>) {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count() as u64
                + 1;
            let source = String::from_utf8_lossy(bytes);
            return (
                Err(vec![Diagnostic::at(
                    path,
                    &source,
                    line,
                    column,
                    format!(
                        "the file is not valid UTF-8 (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                )]),
                Vec::new(),
            );
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if is_json_name(path) {
        return json::parse(path, text);
    }
    if text.len() >= split.threshold
        && let Some(chunks) = split_groups(text, split.chunk_bytes)
    {
        let results: Vec<(ParseResult, Vec<Declared>)> = chunks
            .into_par_iter()
            .map(|chunk| {
                let doc = chunk.document(text);
                parse_text(path, text, doc, chunk.line_offset, fast, max_alias_pairs)
            })
            .collect();
        // Any problem, in a chunk or across chunks (a group declared in two of them), and the
        // file is read whole: a split point that was not a group key after all (a flow list or
        // a quoted key continued at the group indentation) makes a chunk fail, and the report
        // must be the whole file's whatever the split, so that it never depends on the chunk
        // size, the number of threads or the machine.
        let mut names: HashSet<&str> = HashSet::new();
        let clean = results.iter().all(|(r, declared)| {
            r.is_ok() && declared.iter().all(|(name, _, _)| names.insert(name))
        });
        if clean {
            let mut file = DesiredFile::default();
            let mut all_declared = Vec::new();
            for (r, declared) in results {
                let part = r.expect("checked above");
                file.groups.extend(part.groups);
                file.warnings.extend(part.warnings);
                file.alias_pairs += part.alias_pairs;
                all_declared.extend(declared);
            }
            return (Ok(file), all_declared);
        }
    }
    parse_text(path, text, text, 0, fast, max_alias_pairs)
}

/// Whether `path` names a JSON file (`*.json` in any case), read by [`json`] instead of the YAML
/// reader: exact JSON, every escape, at serde_json's speed.
fn is_json_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// One file's (or chunk's) groups, or every problem found in it.
type ParseResult = Result<DesiredFile, Vec<Diagnostic>>;

/// A group key as written, with its line and column in the whole file.
type Declared = (String, u64, u64);

/// A range of a large file holding whole groups, to be parsed on its own.
///
/// Only the range is kept: the chunk's document is built by [`Chunk::document`] just before it is
/// parsed and dropped right after, so at most one chunk copy per thread exists at a time instead
/// of a copy of the whole file.
struct Chunk {
    /// Byte range of the group lines in the file.
    range: std::ops::Range<usize>,
    /// Lines before the chunk's first group line in the original file, minus the header line.
    line_offset: u64,
}

impl Chunk {
    /// `groups:` plus the group lines, so the chunk is a valid document of its own.
    fn document(&self, text: &str) -> String {
        let lines = &text[self.range.clone()];
        let mut doc = String::with_capacity(lines.len() + 8);
        doc.push_str("groups:\n");
        doc.push_str(lines);
        doc
    }
}

/// Splits a large, plainly laid out file (`groups:` at column 0, group keys at one fixed
/// indentation, block style) into chunks of whole groups. Returns `None` whenever the layout is
/// anything else (anchors, flow style at the top, other top-level keys, documents markers, tabs):
/// the caller then parses the file whole, which is always correct, only slower.
///
/// A line indented exactly like the group keys is taken for a group key. YAML wants block
/// scalars, multi-line flow collections and quoted scalars indented deeper than their parent,
/// but the parser is lenient: a flow list or a quoted key may continue at the group indentation.
/// A split there leaves a chunk ending inside the open list or quote, which then fails to parse;
/// the caller reads the file whole whenever a chunk fails, so such a split changes nothing.
fn split_groups(text: &str, chunk_bytes: usize) -> Option<Vec<Chunk>> {
    if text.contains(['&', '*', '\t']) || text.contains("\n---") || text.contains("\n...") {
        return None;
    }
    let mut offset = 0usize;
    let mut line_no = 0u64;
    let mut header_end = None;
    let mut indent: Option<usize> = None;
    let mut starts: Vec<(usize, u64)> = Vec::new();
    for line in text.split_inclusive('\n') {
        line_no += 1;
        let trimmed = line.trim_end();
        let body = trimmed.trim_start();
        let this_indent = trimmed.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            offset += line.len();
            continue;
        }
        match header_end {
            None => {
                if trimmed != "groups:" {
                    return None;
                }
                header_end = Some(offset + line.len());
            }
            Some(_) => {
                if this_indent == 0 {
                    return None; // another top-level key: let the full parser judge it
                }
                let group_indent = *indent.get_or_insert(this_indent);
                if this_indent == group_indent {
                    if body.starts_with(['-', '[', '{', '?']) {
                        return None;
                    }
                    starts.push((offset, line_no));
                } else if this_indent < group_indent {
                    return None;
                }
            }
        }
        offset += line.len();
    }
    if starts.len() < 2 {
        return None;
    }
    // Chunks of about `chunk_bytes`, never sized by the number of threads, so that the split
    // is the same on every machine: a chunk's raw parse tree (every scalar with its position)
    // is many times its text, and one per thread is alive at a time.
    let target = chunk_bytes.max(1);
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < starts.len() {
        let (begin, first_line) = starts[i];
        let mut j = i + 1;
        while j < starts.len() && starts[j].0 - begin < target {
            j += 1;
        }
        let end = starts.get(j).map_or(text.len(), |s| s.0);
        chunks.push(Chunk {
            range: begin..end,
            line_offset: first_line - 2,
        });
        i = j;
    }
    Some(chunks)
}

/// Parses YAML `chunk` (all of `full`, or a split of it starting `line_offset` lines later).
/// Also returns the group keys declared (first occurrence in the chunk, valid or not), so that a
/// split file can find a group repeated in another chunk.
///
/// With `fast`, a chunk in the plain layout with nothing to report is read by [`fast::parse`],
/// which gives the same result; anything else goes to the full reader.
fn parse_text(
    path: &Path,
    full: &str,
    chunk: impl AsRef<str>,
    line_offset: u64,
    fast: bool,
    max_alias_pairs: usize,
) -> (ParseResult, Vec<Declared>) {
    if fast && let Some((file, declared)) = fast::parse(path, chunk.as_ref(), line_offset) {
        return (Ok(file), declared);
    }
    // One JSON (or YAML flow) mapping, as scripts write rosters: whole files only.
    if fast
        && line_offset == 0
        && chunk.as_ref().trim_start().starts_with('{')
        && let Some((file, declared)) = fast::parse_flow(path, chunk.as_ref())
    {
        return (Ok(file), declared);
    }
    let mut declared = Vec::new();
    let result = parse_chunk(
        path,
        full,
        chunk.as_ref(),
        line_offset,
        max_alias_pairs,
        &mut declared,
    );
    (result, declared)
}

fn parse_chunk(
    path: &Path,
    full: &str,
    chunk: &str,
    line_offset: u64,
    max_alias_pairs: usize,
    declared: &mut Vec<Declared>,
) -> Result<DesiredFile, Vec<Diagnostic>> {
    let cx = Cx {
        path,
        full,
        chunk,
        line_offset,
        last_line: std::cell::Cell::new((1, 0)),
    };
    if declares_nothing(chunk) {
        // A truncated write (the most common half-written file) or a placeholder: never "no
        // groups", which would clear every mark the file used to declare.
        return Err(vec![Diagnostic::file_error(
            path,
            "the file declares nothing (it is empty, blank or only comments); to declare no groups, write `groups: {}`",
        )]);
    }
    let (root, alias_pairs) = alias_pairs_counted(max_alias_pairs, || read_document(&cx, chunk));
    let root = match root {
        Ok(root) => root,
        Err(mut d) => {
            if alias_pairs > max_alias_pairs {
                // Stopped at the alias that went over: no more of the expansion was built.
                d.message = format!(
                    "aliases (`*name`, `<<`) in this file add more than {max_alias_pairs} (account, mark) pairs, more than `max_alias_pairs` allows across all desired files; write the pairs out, or raise `max_alias_pairs` in the config"
                );
            }
            return Err(vec![d]);
        }
    };
    let raw = match root.value {
        MapOr::Map(raw) => raw,
        MapOr::Null => RawFile {
            groups: None,
            unknown: Vec::new(),
        },
        MapOr::Other(kind) => {
            return Err(vec![cx.at(
                &root,
                format!("a desired file must be a mapping with a `groups` key, found {kind}"),
            )]);
        }
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (key, message) in raw.unknown {
        errors.push(cx.at(&key, message));
    }
    let mut file = DesiredFile::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let groups = match raw.groups {
        None => {
            errors.push(Diagnostic::file_error(
                path,
                "the file has no `groups` key, so it declares nothing; to declare no groups, write `groups: {}`",
            ));
            Vec::new()
        }
        Some(groups) => match groups.value {
            MapOr::Map(entries) => entries.0,
            MapOr::Null => {
                errors.push(cx.at_loc(
                    &groups.referenced,
                    "`groups` is empty (null), which may be a half-written file; to declare no groups, write `groups: {}`",
                ));
                Vec::new()
            }
            MapOr::Other(kind) => {
                errors.push(cx.at_loc(
                    &groups.referenced,
                    format!("`groups` must be a mapping of group ID to its `members` and `marks`, found {kind}"),
                ));
                Vec::new()
            }
        },
    };
    for (key, group) in groups {
        let name = match cx.name(&key, "group ID") {
            Ok(name) => name,
            Err(message) => {
                errors.push(cx.at(&key, message));
                continue;
            }
        };
        let line = cx.line(&key);
        if let Some(first) = seen.get(name.as_ref()) {
            errors.push(cx.at(
                &key,
                format!("duplicate key: group {name:?} is declared again (first at line {first})"),
            ));
            continue;
        }
        seen.insert(name.to_string(), line);
        declared.push((name.to_string(), line, key.referenced.column()));
        let id = match GroupId::new(&name) {
            Ok(id) => id,
            Err(e) => {
                errors.push(cx.at(&key, e));
                continue;
            }
        };
        let origin = cx.origin(&key);
        let group = match group.value {
            MapOr::Map(g) => Spanned {
                value: g,
                referenced: group.referenced,
                defined: group.defined,
            },
            MapOr::Null => {
                // A cut-off file (`"@TGS#a":` and nothing after it) must never clear the group.
                errors.push(cx.at(
                    &key,
                    format!(
                        "group {:?} has no value: the file may be cut off; write `{{}}` to declare a group without marks",
                        id.as_str()
                    ),
                ));
                continue;
            }
            MapOr::Other(kind) => {
                errors.push(cx.at(
                    &group,
                    format!(
                        "group {:?} must be a mapping with `members` and/or `marks`, found {kind}",
                        id.as_str()
                    ),
                ));
                continue;
            }
        };
        let before = errors.len();
        let desired = check_group(&cx, &id, group, &mut errors, &mut warnings);
        if errors.len() == before {
            file.groups.push((id, origin, desired));
        }
    }
    if errors.is_empty() {
        file.warnings = warnings;
        file.alias_pairs = alias_pairs;
        Ok(file)
    } else {
        Err(errors)
    }
}

/// Whether `text` holds no YAML content at all: only blank lines, comments, document markers
/// and directives.
fn declares_nothing(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%') || is_document_marker(l)
    })
}

/// `---` or `...` at column 0, alone or followed by a space or a comment.
fn is_document_marker(line: &str) -> bool {
    let line = line.trim_end();
    ["---", "..."].iter().any(|m| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    })
}

/// Reads the one document of `chunk`. A trailing empty document (`---` or `...` followed only
/// by comments) is accepted; a second document with content is "one document per file".
fn read_document(cx: &Cx<'_>, chunk: &str) -> Result<Spanned<MapOr<RawFile>>, Diagnostic> {
    let e = match serde_saphyr::from_str_with_options(chunk, crate::yaml::desired_options()) {
        Ok(raw) => return Ok(raw),
        Err(e) => e,
    };
    if !crate::yaml::message(&e).starts_with("multiple YAML documents") {
        return Err(cx.yaml_error(&e));
    }
    // Where the second document starts: the first document marker after some content.
    let mut offset = 0;
    let mut content = false;
    let mut second = None;
    for (i, line) in chunk.split_inclusive('\n').enumerate() {
        let t = line.trim();
        if is_document_marker(line) {
            if content && second.is_none() {
                second = Some((offset, i as u64 + 1));
            }
        } else if !(t.is_empty() || t.starts_with('#') || t.starts_with('%')) {
            if let Some((_, marker_line)) = second {
                return Err(Diagnostic::at(
                    cx.path,
                    cx.full,
                    marker_line + cx.line_offset,
                    1,
                    format!(
                        "one document per file: found a second document at line {}; put each group in one document (or one file)",
                        marker_line + cx.line_offset
                    ),
                ));
            }
            content = true;
        }
        offset += line.len();
    }
    match second {
        Some((at, _)) => {
            serde_saphyr::from_str_with_options(&chunk[..at], crate::yaml::desired_options())
                .map_err(|e| cx.yaml_error(&e))
        }
        None => Err(cx.yaml_error(&e)),
    }
}
