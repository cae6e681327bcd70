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

mod fast;
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

/// Files above this size are split at group boundaries and parsed in parallel when their layout
/// allows it (see [`split_groups`]).
const SPLIT_THRESHOLD_BYTES: usize = 1 << 20;

/// Target size of one chunk of a split file (see [`split_groups`]).
const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Loads the desired state from a directory (recursively: `*.yaml`, `*.yml` and `*.json` in any
/// case, names starting with a dot skipped, symlinks followed) or from a single file.
pub fn load(path: &Path) -> Result<DesiredState, Diagnostics> {
    let (files, mut diags) = discover(path);
    let parsed: Vec<(PathBuf, Result<DesiredFile, Vec<Diagnostic>>)> = files
        .into_par_iter()
        .map(|file| {
            let result = match read_file(&file) {
                Ok(bytes) => parse_file(&file, &bytes),
                Err(d) => Err(vec![d]),
            };
            (file, result)
        })
        .collect();
    let mut ok = Vec::with_capacity(parsed.len());
    for (path, result) in parsed {
        match result {
            Ok(f) => ok.push((path, f)),
            Err(mut d) => diags.append(&mut d),
        }
    }
    match assemble(ok) {
        Ok(state) if diags.iter().all(|d| !d.is_error()) => Ok(state),
        Ok(_) => {
            crate::diag::sort(&mut diags);
            Err(Diagnostics(diags))
        }
        Err(Diagnostics(mut more)) => {
            diags.append(&mut more);
            crate::diag::sort(&mut diags);
            Err(Diagnostics(diags))
        }
    }
}

/// Reads one desired file, refusing anything that is not a regular file of bounded size.
pub fn read_file(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    crate::input::read_regular(path, crate::input::MAX_DESIRED_BYTES)
        .map_err(|e| io_diag(path, "cannot read", &e))
}

fn io_diag(path: &Path, what: &str, e: &io::Error) -> Diagnostic {
    let detail = if e.raw_os_error() == Some(40) {
        // ELOOP
        "symlink loop".to_string()
    } else {
        e.to_string()
    };
    Diagnostic::file_error(path, format!("{what}: {detail}"))
}

/// Lists the desired files under `root` in sorted order, with a diagnostic for anything that
/// cannot be walked (missing root, unreadable directory, symlink loop).
pub fn discover(root: &Path) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    match std::fs::metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            diags.push(Diagnostic::file_error(
                root,
                "the desired path does not exist (a missing directory is an error, never \"no groups\")",
            ));
        }
        Err(e) => diags.push(io_diag(root, "cannot read the desired path", &e)),
        Ok(meta) if meta.is_dir() => {
            let mut ancestors = Vec::new();
            walk(root, &mut ancestors, &mut files, &mut diags);
            if files.is_empty() && diags.is_empty() {
                // Most likely a checkout or mount in progress, or the wrong path: never "clear
                // everything". To desire no marks at all, commit a file with `groups: {}`.
                diags.push(Diagnostic::file_error(
                    root,
                    "the desired directory holds no *.yaml, *.yml or *.json files; to desire no marks at all, add a file with `groups: {}`",
                ));
            }
        }
        Ok(_) => files.push(root.to_path_buf()),
    }
    files.sort();
    (files, diags)
}

fn walk(
    dir: &Path,
    ancestors: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
) {
    let canonical = match std::fs::canonicalize(dir) {
        Ok(c) => c,
        Err(e) => {
            diags.push(io_diag(dir, "cannot read directory", &e));
            return;
        }
    };
    if ancestors.contains(&canonical) {
        diags.push(Diagnostic::file_error(
            dir,
            format!(
                "symlink loop: this leads back to {}, which is already being read",
                canonical.display()
            ),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(io_diag(dir, "cannot read directory", &e));
            return;
        }
    };
    ancestors.push(canonical);
    let mut children: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    children.push(entry.path());
                }
            }
            Err(e) => diags.push(io_diag(dir, "cannot read directory", &e)),
        }
    }
    children.sort();
    for child in children {
        match std::fs::metadata(&child) {
            Ok(m) if m.is_dir() => walk(&child, ancestors, files, diags),
            Ok(_) if is_desired_name(&child) => files.push(child),
            Ok(_) => {}
            // A dangling or looping symlink named like a desired file is an error: it may be the
            // file that holds a group's marks.
            Err(e) if is_desired_name(&child) && e.kind() == io::ErrorKind::NotFound => {
                let detail = match std::fs::read_link(&child) {
                    Ok(target) => format!(
                        "cannot read: it is a symlink to {}, which does not exist",
                        target.display()
                    ),
                    Err(_) => format!("cannot read: {e}"),
                };
                diags.push(Diagnostic::file_error(&child, detail));
            }
            Err(e) if is_desired_name(&child) => diags.push(io_diag(&child, "cannot read", &e)),
            Err(e) if e.raw_os_error() == Some(40) => {
                diags.push(io_diag(&child, "cannot read", &e))
            }
            Err(_) => {}
        }
    }
    ancestors.pop();
}

/// Whether a path names a desired file: `*.yaml`, `*.yml` or `*.json`, in any case (`a.YAML`
/// and `b.Yml` are desired files too: skipping them would clear their groups' marks).
pub fn is_desired_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["yaml", "yml", "json"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// Merges parsed files into one desired state. A group declared in two files is an error that
/// names both.
pub fn assemble(files: Vec<(PathBuf, DesiredFile)>) -> Result<DesiredState, Diagnostics> {
    let mut state = DesiredState::default();
    let mut origins: HashMap<GroupId, Origin> = HashMap::new();
    let mut errors = Vec::new();
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

/// Parses one desired file. Pure: `path` is only used in diagnostics.
///
/// Returns every problem found, not just the first: structural YAML errors stop the parse of the
/// file (or of one group, for large split files), but every value-level problem (bad mark,
/// bad account, unknown key, duplicate, limit) is collected.
///
/// JSON files (generated rosters) are read by the same reader: JSON is YAML's flow style, so they
/// get the same checks and `file:line:column` locations. At most
/// [`crate::diag::MAX_ERRORS_PER_FILE`] errors (or warnings) are returned, then a count of the
/// rest.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<DesiredFile, Vec<Diagnostic>> {
    match parse_file_with(path, bytes, true) {
        Ok(mut file) => {
            crate::diag::cap_per_file(path, &mut file.warnings);
            Ok(file)
        }
        Err(mut errors) => {
            crate::diag::cap_per_file(path, &mut errors);
            Err(errors)
        }
    }
}

/// [`parse_file`], with the plain-layout fast path ([`fast`]) or without it (`fast == false`: the
/// full reader only, which tests compare the fast path with).
fn parse_file_with(path: &Path, bytes: &[u8], fast: bool) -> Result<DesiredFile, Vec<Diagnostic>> {
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
            return Err(vec![Diagnostic::at(
                path,
                &source,
                line,
                column,
                format!(
                    "the file is not valid UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )]);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.len() >= SPLIT_THRESHOLD_BYTES
        && let Some(chunks) = split_groups(text)
    {
        let results: Vec<(ParseResult, Vec<Declared>)> = chunks
            .into_par_iter()
            .map(|chunk| parse_text(path, text, chunk.document(text), chunk.line_offset, fast))
            .collect();
        let mut file = DesiredFile::default();
        let mut errors = Vec::new();
        // A group repeated in another chunk, found from every chunk's keys (not only those of
        // chunks without errors), so that the report is the same as for an unsplit parse.
        let mut first_at: HashMap<&str, u64> = HashMap::new();
        let mut repeated: HashSet<u64> = HashSet::new();
        for (name, line, column) in results.iter().flat_map(|(_, declared)| declared) {
            if let Some(first) = first_at.get(name.as_str()) {
                errors.push(Diagnostic::at(
                    path,
                    text,
                    *line,
                    *column,
                    format!(
                        "duplicate key: group {name:?} is declared again (first at line {first})"
                    ),
                ));
                repeated.insert(*line);
            } else {
                first_at.insert(name, *line);
            }
        }
        for (r, _) in results {
            match r {
                Ok(part) => {
                    file.groups.extend(
                        part.groups
                            .into_iter()
                            .filter(|(_, origin, _)| !repeated.contains(&origin.line)),
                    );
                    file.warnings.extend(part.warnings);
                }
                Err(mut d) => errors.append(&mut d),
            }
        }
        return if errors.is_empty() {
            Ok(file)
        } else {
            crate::diag::sort(&mut errors);
            Err(errors)
        };
    }
    parse_text(path, text, text, 0, fast).0
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
/// Splitting is sound for valid YAML because a line indented exactly like the group keys can only
/// be a group key: block scalars, multi-line flow collections and quoted scalars must all be
/// indented deeper than their parent.
fn split_groups(text: &str) -> Option<Vec<Chunk>> {
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
    // Aim for a few chunks per thread so uneven groups still balance, and at most about
    // MAX_CHUNK_BYTES each: a chunk's raw parse tree (every scalar with its position) is many
    // times its text, and one per thread is alive at a time.
    let target =
        (text.len() / (rayon::current_num_threads() * 4)).clamp(64 * 1024, MAX_CHUNK_BYTES);
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
    let result = parse_chunk(path, full, chunk.as_ref(), line_offset, &mut declared);
    (result, declared)
}

fn parse_chunk(
    path: &Path,
    full: &str,
    chunk: &str,
    line_offset: u64,
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
    let root = match read_document(&cx, chunk) {
        Ok(root) => root,
        Err(d) => return Err(vec![d]),
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
            MapOr::Null => Spanned {
                value: RawGroup::default(),
                referenced: group.referenced,
                defined: group.defined,
            },
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

/// Context for turning serde-saphyr locations into diagnostics.
struct Cx<'a> {
    path: &'a Path,
    /// The whole file.
    full: &'a str,
    /// The text being parsed (the whole file, or a chunk of it: spans count from its start).
    chunk: &'a str,
    line_offset: u64,
    /// The byte range of the last line looked up: a one-line file has every node on one line,
    /// which must be found once, not once per node.
    last_line: std::cell::Cell<(usize, usize)>,
}

/// How a scalar was written.
enum Written<'a> {
    /// Plain (unquoted): the characters as written, before YAML resolves them to numbers,
    /// booleans or null.
    Plain(&'a str),
    /// Quoted (or a block scalar): the parsed value is what was meant.
    Quoted,
}

impl Cx<'_> {
    fn line<T>(&self, s: &Spanned<T>) -> u64 {
        s.referenced.line() + self.line_offset
    }

    fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        self.at_loc(&s.referenced, message)
    }

    fn at_loc(&self, at: &serde_saphyr::Location, message: impl Into<String>) -> Diagnostic {
        let line = at.line() + self.line_offset;
        match at
            .span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= self.chunk.len())
        {
            Some(offset) => {
                let (text, in_line) = self.line_at(offset);
                let (source_line, source_offset) =
                    crate::diag::window_at(text, in_line, at.column());
                Diagnostic {
                    line,
                    column: at.column(),
                    source_line: Some(source_line),
                    source_offset,
                    ..Diagnostic::file_error(self.path, message)
                }
            }
            None => Diagnostic::at(self.path, self.full, line, at.column(), message),
        }
    }

    /// The line of the chunk holding byte `offset`, and the offset within it.
    fn line_at(&self, offset: usize) -> (&str, usize) {
        let (start, end) = self.last_line.get();
        if !(start <= offset && offset <= end) {
            let line = crate::diag::line_at(self.chunk, offset);
            let start = line.as_ptr() as usize - self.chunk.as_ptr() as usize;
            self.last_line.set((start, start + line.len()));
        }
        let (start, end) = self.last_line.get();
        (&self.chunk[start..end], offset - start)
    }

    /// Where a group key is, for a conflict found later.
    fn origin<T>(&self, key: &Spanned<T>) -> Origin {
        let offset = key
            .referenced
            .span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok())
            .unwrap_or(0)
            .min(self.chunk.len());
        let column = key.referenced.column();
        let (text, in_line) = self.line_at(offset);
        let (source_line, source_offset) = crate::diag::window_at(text, in_line, column);
        Origin {
            path: self.path.to_path_buf(),
            line: self.line(key),
            column,
            source_line,
            source_offset,
        }
    }

    fn yaml_error(&self, e: &serde_saphyr::Error) -> Diagnostic {
        let message = crate::yaml::user_message(e);
        match e.location() {
            Some(loc) if loc.line() > 0 => self.at_loc(&loc, message),
            _ => Diagnostic::file_error(self.path, message),
        }
    }

    /// How the node at `s` was written (for an alias: the anchored node).
    fn written<T>(&self, s: &Spanned<T>) -> Written<'_> {
        let span = s.defined.span();
        let (Some(start), Some(len)) = (span.byte_offset(), span.byte_len()) else {
            return Written::Quoted;
        };
        let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
            return Written::Quoted;
        };
        match self.chunk.get(start..start.saturating_add(len)) {
            Some(text) if !text.starts_with(['"', '\'', '|', '>']) => Written::Plain(text),
            _ => Written::Quoted,
        }
    }

    /// The text of an account or group ID as written, or why there is none. YAML's resolution
    /// of plain scalars never applies: `007`, `0x1F`, `y`, `no`, `1e3` are those characters.
    fn name<'s>(&'s self, s: &'s Spanned<Item>, what: &str) -> Result<Cow<'s, str>, String> {
        let scalar = match &s.value {
            Item::Scalar(scalar) => scalar,
            Item::Collection(kind) => {
                return Err(format!("{} must be a string, found {kind}", article(what)));
            }
        };
        match (self.written(s), scalar) {
            (Written::Plain(text), _) => {
                if text.is_empty() {
                    Err(format!(
                        "{} is missing here (the value is empty)",
                        article(what)
                    ))
                } else if matches!(text, "~" | "null" | "Null" | "NULL") {
                    Err(format!(
                        "`{text}` means \"no value\" in YAML, not {}; quote it (\"{text}\") if that is really its name",
                        article(what)
                    ))
                } else if text == "<<" {
                    Err("a merge key (`<<`) can only share `members` and `marks` between groups, directly inside a group".into())
                } else if let Scalar::Str(v) = scalar
                    && v == text
                {
                    Ok(Cow::Borrowed(v.as_str()))
                } else {
                    Ok(Cow::Borrowed(text))
                }
            }
            (Written::Quoted, Scalar::Str(v)) => Ok(Cow::Borrowed(v.as_str())),
            (Written::Quoted, other) => Err(format!(
                "{} must be a string, found {}",
                article(what),
                other.kind()
            )),
        }
    }

    /// The explicit tag (`!!str`, `!!int`...) written before the node at `s`, if any (an anchor
    /// between them is skipped). The node's span starts after its properties.
    fn tag_before<T>(&self, s: &Spanned<T>) -> Option<&str> {
        let start = usize::try_from(s.defined.span().byte_offset()?).ok()?;
        let mut before = self.chunk.get(..start)?;
        for _ in 0..2 {
            let trimmed = before.trim_end_matches([' ', '\t']);
            if trimmed.len() == before.len() {
                return None; // no separating space: nothing written before the node
            }
            let from = trimmed
                .rfind([' ', '\t', '\n', '[', '{', ',', '?', ':', '-'])
                .map_or(0, |i| i + 1);
            let token = &trimmed[from..];
            if token.starts_with('!') {
                return Some(token);
            }
            if !token.starts_with('&') {
                return None;
            }
            before = &trimmed[..from];
        }
        None
    }

    /// A mark: a plain decimal integer (or, as a mapping key, a quoted one: JSON needs it).
    fn mark(&self, s: &Spanned<Item>, as_key: bool) -> Result<Mark, String> {
        let scalar = match &s.value {
            Item::Scalar(scalar) => scalar,
            Item::Collection(kind) => {
                return Err(format!("a mark must be an integer, found {kind}"));
            }
        };
        if let Some(tag) = self.tag_before(s) {
            return Err(format!(
                "a mark is a plain decimal integer: remove the tag `{tag}`"
            ));
        }
        let text: &str = match (self.written(s), scalar) {
            (Written::Plain(text), _) => text,
            (Written::Quoted, Scalar::Str(v)) if is_decimal(v) => {
                if as_key {
                    v
                } else {
                    return Err(format!(
                        "a mark must be an integer, found a string; write {v} without quotes"
                    ));
                }
            }
            (Written::Quoted, other) => {
                return Err(format!("a mark must be an integer, found {}", other.kind()));
            }
        };
        if is_decimal(text) {
            return match text
                .parse::<u64>()
                .ok()
                .filter(|&n| n <= u64::from(u32::MAX))
            {
                Some(n) => Mark::new(n),
                None => Err(format!(
                    "mark {text} is too large: the service's marks are 32-bit (at most {})",
                    u32::MAX
                )),
            };
        }
        let meant: Option<i128> = match scalar {
            Scalar::Int(n) => Some(*n),
            Scalar::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e20 => {
                Some(*f as i128)
            }
            Scalar::Str(v) => v.replace('_', "").parse().ok(),
            _ => None,
        };
        match (meant, scalar) {
            (Some(n), _) if n < 0 => Err(format!(
                "mark {text} is not allowed: a mark is an integer >= 1000, or the special 500 or 600"
            )),
            (Some(n), _) => Err(format!(
                "mark `{text}` is not a plain decimal integer; write {n}"
            )),
            (None, Scalar::Float(_)) => Err(format!("mark {text} is not an integer")),
            (None, other) => Err(format!("a mark must be an integer, found {}", other.kind())),
        }
    }
}

/// The warning for an account the service may reject.
fn unusual_account(a: &Account) -> String {
    format!(
        "account {:?} has characters outside [a-zA-Z0-9_-]; the service may reject it",
        a.as_str()
    )
}

/// "an account", "a group ID".
fn article(what: &str) -> String {
    if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {what}")
    } else {
        format!("a {what}")
    }
}

/// Digits only, no sign, no leading zero, no `_`: the one spelling of a mark.
fn is_decimal(s: &str) -> bool {
    s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Validates one group's raw sections into desired marks, pushing every problem.
fn check_group(
    cx: &Cx<'_>,
    id: &GroupId,
    group: Spanned<RawGroup>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> DesiredGroup {
    let group_pos = group.referenced;
    let mut out = DesiredGroup::default();
    // The group's own sections and those merged in with `<<`, each of which may come from one
    // place only: a merge that repeats or shadows a section is a duplicate key.
    let mut members_from: Option<SectionSource> = None;
    let mut marks_from: Option<SectionSource> = None;
    collect_sections(
        cx,
        group.value,
        None,
        &mut members_from,
        &mut marks_from,
        errors,
    );
    let members_section = members_from.map(|s| s.section);
    let marks_section = marks_from.map(|s| s.section);

    // Where each mark is first used, and how many members carry it, for the service's limits.
    let mut mark_first_use: BTreeMap<Mark, serde_saphyr::Location> = BTreeMap::new();
    let mut warned_accounts: HashSet<Account> = HashSet::new();
    let mut check_account =
        |key: &Spanned<Item>, errors: &mut Vec<Diagnostic>| -> Option<Account> {
            let text = match cx.name(key, "account") {
                Ok(t) => t,
                Err(message) => {
                    errors.push(cx.at(key, message));
                    return None;
                }
            };
            match Account::new(&text) {
                Ok(a) => {
                    if !a.is_conventional() && warned_accounts.insert(a.clone()) {
                        warnings.push(cx.at(key, unusual_account(&a)).warning());
                    }
                    Some(a)
                }
                Err(e) => {
                    errors.push(cx.at(key, e));
                    None
                }
            }
        };
    let check_mark =
        |value: &Spanned<Item>, as_key: bool, errors: &mut Vec<Diagnostic>| -> Option<Mark> {
            match cx.mark(value, as_key) {
                Ok(m) => Some(m),
                Err(message) => {
                    errors.push(cx.at(value, message));
                    None
                }
            }
        };
    let mut note_use = |m: Mark, at: &Spanned<Item>| {
        mark_first_use.entry(m).or_insert(at.referenced);
    };

    let mut section = |s: Option<Spanned<MapOr<Section>>>, what: &str| match s {
        None => Vec::new(),
        Some(s) => match s.value {
            MapOr::Map(entries) => entries.0,
            MapOr::Null => Vec::new(),
            MapOr::Other(kind) => {
                errors.push(cx.at_loc(&s.referenced, format!("{what}, found {kind}")));
                Vec::new()
            }
        },
    };
    let members = section(
        members_section,
        "`members` must be a mapping of account to its marks (such as `host: [500, 1000]`)",
    );
    let marks = section(
        marks_section,
        "`marks` must be a mapping of mark to its accounts (such as `1001: [student9]`)",
    );
    // Members listed in `members`, each account once (a repeated key is an error and skipped).
    let mut listed: Vec<(Account, MarkSet)> = Vec::with_capacity(members.len());
    {
        let repeats = first_lines_of_repeats(
            members
                .iter()
                .map(|(key, _)| (cx.name(key, "account").ok(), cx.line(key))),
        );
        for ((key, marks), repeat) in members.iter().zip(repeats) {
            if let Some(first) = repeat {
                let name = cx.name(key, "account").unwrap_or_default();
                errors.push(cx.at(key, format!(
                    "duplicate key: account {name:?} is listed again in `members` (first at line {first})"
                )));
                continue;
            }
            let whose = match (&marks.value, cx.name(key, "account")) {
                (Node::Seq(_), _) | (_, Err(_)) => String::new(),
                (_, Ok(n)) => format!(" of {n:?}"),
            };
            let account = check_account(key, errors);
            let items = match &marks.value {
                Node::Seq(items) => items,
                other => {
                    errors.push(cx.at(
                        marks,
                        format!(
                            "the marks{whose} must be a list such as [1000], found {}",
                            other.kind()
                        ),
                    ));
                    continue;
                }
            };
            let mut set = MarkSet::new();
            for item in items {
                if let Some(m) = check_mark(item, false, errors) {
                    if !set.insert(m) {
                        errors.push(
                            cx.at(item, format!("mark {m} is listed twice for this account")),
                        );
                    }
                    note_use(m, item);
                }
            }
            if let Some(a) = account {
                listed.push((a, set));
            }
        }
    }
    // Accounts are unique here, so an unstable sort is enough; files usually list them sorted,
    // which the sort detects in one pass. A sorted vector bulk-builds the tree.
    listed.sort_unstable_by(|x, y| x.0.cmp(&y.0));
    out.members = listed.into_iter().collect();
    {
        let keys: Vec<Option<Mark>> = marks
            .iter()
            .map(|(key, _)| cx.mark(key, true).ok())
            .collect();
        let repeats = first_lines_of_repeats(
            marks
                .iter()
                .zip(&keys)
                .map(|((key, _), m)| (m.map(|m| Cow::Owned(m.to_string())), cx.line(key))),
        );
        for ((key, accounts), repeat) in marks.iter().zip(repeats) {
            let mark = check_mark(key, true, errors);
            if let Some(first) = repeat {
                let name = mark.map(|m| m.to_string()).unwrap_or_default();
                errors.push(cx.at(key, format!(
                    "duplicate key: mark {name} is listed again in `marks` (first at line {first})"
                )));
                continue;
            }
            if let Some(m) = mark {
                note_use(m, key);
            }
            let items = match &accounts.value {
                Node::Seq(items) => items,
                other => {
                    let whose = mark.map(|n| format!(" of mark {n}")).unwrap_or_default();
                    errors.push(cx.at_loc(
                        &accounts.referenced,
                        format!(
                            "the accounts{whose} must be a list such as [student9], found {}",
                            other.kind()
                        ),
                    ));
                    continue;
                }
            };
            let repeats =
                first_lines_of_repeats(items.iter().map(|item| (cx.name(item, "account").ok(), 0)));
            for (item, repeat) in items.iter().zip(repeats) {
                if repeat.is_some() {
                    let text = cx.name(item, "account").unwrap_or_default();
                    errors.push(cx.at(
                        item,
                        format!("account {text:?} is listed twice under this mark"),
                    ));
                    continue;
                }
                if let (Some(a), Some(m)) = (check_account(item, errors), mark) {
                    out.members.entry(a).or_default().insert(m);
                }
            }
        }
    }

    // The service's limits, checked before any call.
    if mark_first_use.len() > MAX_MARKS_PER_GROUP {
        let mut by_position: Vec<(&Mark, &serde_saphyr::Location)> =
            mark_first_use.iter().collect();
        by_position.sort_by_key(|(_, at)| (at.line(), at.column()));
        let (&eleventh, at) = by_position[MAX_MARKS_PER_GROUP];
        let all: Vec<String> = mark_first_use.keys().map(Mark::to_string).collect();
        errors.push(cx.at_loc(
            at,
            format!(
                "group {:?} uses {} distinct marks ({}); the service allows at most {MAX_MARKS_PER_GROUP} per group (mark {eleventh} is one too many)",
                id.as_str(),
                all.len(),
                all.join(", ")
            ),
        ));
    }
    // At most a handful of distinct marks: a sorted vector, not a tree, for a million lookups.
    let mut per_mark: Vec<(Mark, usize)> = Vec::new();
    for marks in out.members.values() {
        for m in marks.iter() {
            match per_mark.binary_search_by_key(&m, |e| e.0) {
                Ok(i) => per_mark[i].1 += 1,
                Err(i) => per_mark.insert(i, (m, 1)),
            }
        }
    }
    for (m, count) in per_mark {
        if count > MAX_MEMBERS_PER_MARK {
            let at = mark_first_use.get(&m).copied().unwrap_or(group_pos);
            errors.push(cx.at_loc(
                &at,
                format!(
                    "mark {m} is given to {count} members of group {:?}; the service allows at most {MAX_MEMBERS_PER_MARK} members per mark",
                    id.as_str()
                ),
            ));
        }
    }
    out
}

/// For keys (or list items) given in document order as their text (`None`: not comparable, never
/// a repeat) and line: for each, the line of the first one with the same text when it is a
/// repeat, else `None`. Sorts indices instead of hashing copied strings.
fn first_lines_of_repeats<'t>(
    texts: impl ExactSizeIterator<Item = (Option<std::borrow::Cow<'t, str>>, u64)>,
) -> Vec<Option<u64>> {
    let mut out = vec![None; texts.len()];
    let mut order: Vec<(std::borrow::Cow<'t, str>, u64, usize)> = texts
        .enumerate()
        .filter_map(|(i, (text, line))| text.map(|t| (t, line, i)))
        .collect();
    // Stable: equal texts stay in document order, so the first of a run is the first written.
    order.sort_by(|x, y| x.0.cmp(&y.0));
    for run in order.chunk_by(|x, y| x.0 == y.0) {
        for repeat in &run[1..] {
            out[repeat.2] = Some(run[0].1);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Raw, permissive shapes: they accept anything scalar so that value errors can be reported with
// their location and the parse can go on to find the next problem.

/// The top level of a desired file.
struct RawFile {
    groups: Option<Spanned<MapOr<Groups>>>,
    unknown: Vec<(Spanned<String>, String)>,
}

/// `groups`: group ID -> its sections, as written.
type Groups = Entries<Spanned<Item>, Spanned<MapOr<RawGroup>>>;

/// One group: `members` and `marks` (each with its key), and its merge keys (`<<`).
#[derive(Default)]
struct RawGroup {
    members: Option<(Spanned<String>, Spanned<MapOr<Section>>)>,
    marks: Option<(Spanned<String>, Spanned<MapOr<Section>>)>,
    merges: Vec<(Spanned<String>, Spanned<MergeValue>)>,
    unknown: Vec<(Spanned<String>, String)>,
}

/// Where a group's `members` or `marks` came from: the group itself or a merge key.
struct SectionSource {
    section: Spanned<MapOr<Section>>,
    /// The line of the section's key (for a merged section: in the merged mapping).
    line: u64,
    /// The line of the merge key (`<<`) it came through, if any.
    via: Option<u64>,
}

impl SectionSource {
    fn describe(&self) -> String {
        match self.via {
            None => format!("line {}", self.line),
            Some(m) => format!("line {} (merged through `<<` at line {m})", self.line),
        }
    }
}

/// Gathers a group's sections, its own first, then those of its merge keys (recursively).
fn collect_sections(
    cx: &Cx<'_>,
    group: RawGroup,
    via: Option<u64>,
    members_from: &mut Option<SectionSource>,
    marks_from: &mut Option<SectionSource>,
    errors: &mut Vec<Diagnostic>,
) {
    for (key, message) in &group.unknown {
        errors.push(cx.at(key, message.clone()));
    }
    for (name, slot, entry) in [
        ("members", &mut *members_from, group.members),
        ("marks", &mut *marks_from, group.marks),
    ] {
        let Some((key, section)) = entry else {
            continue;
        };
        let here = SectionSource {
            section,
            line: key.defined.line() + cx.line_offset,
            via,
        };
        match slot {
            None => *slot = Some(here),
            Some(first) => errors.push(cx.at(
                &key,
                format!(
                    "duplicate key `{name}`: the group gets `{name}` from {} and from {}; a merge key (`<<`) may not repeat or shadow a section",
                    first.describe(),
                    here.describe()
                ),
            )),
        }
    }
    for (key, value) in group.merges {
        let line = cx.line(&key);
        let what = "a merge key (`<<`) takes a mapping or a list of mappings (usually aliases such as `*template`)";
        match value.value {
            MergeValue::Maps(maps) => {
                for m in maps {
                    match m.value {
                        MapOr::Map(g) => {
                            collect_sections(cx, g, Some(line), members_from, marks_from, errors)
                        }
                        MapOr::Null => {}
                        MapOr::Other(kind) => {
                            errors.push(cx.at(&m, format!("{what}, found {kind}")))
                        }
                    }
                }
            }
            MergeValue::Other(kind) => errors.push(cx.at(&value, format!("{what}, found {kind}"))),
        }
    }
}

/// The value of a merge key: one mapping or a list of them.
enum MergeValue {
    Maps(Vec<Spanned<MapOr<RawGroup>>>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for MergeValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = MergeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping or a list of mappings")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MergeValue, A::Error> {
                let g = RawGroup::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let at = serde_saphyr::Location::UNKNOWN;
                Ok(MergeValue::Maps(vec![Spanned::new(MapOr::Map(g), at, at)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MergeValue, A::Error> {
                let mut v = Vec::new();
                while let Some(item) = seq.next_element()? {
                    v.push(item);
                }
                Ok(MergeValue::Maps(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("an integer"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("an integer"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("a fractional number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<MergeValue, E> {
                Ok(MergeValue::Other("a string"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MergeValue, E> {
                Ok(MergeValue::Maps(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<MergeValue, E> {
                self.visit_unit()
            }
        }
        d.deserialize_any(V_)
    }
}

/// A key or list item where a single value (account, mark, group ID) belongs, or the kind of
/// collection found there instead, kept so that it is reported with its position and the parse
/// goes on.
enum Item {
    /// A single value.
    Scalar(Scalar),
    /// A list or mapping: "a list" or "a mapping".
    Collection(&'static str),
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                ScalarVisitor.expecting(f)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Item::Collection("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Item::Collection("a mapping"))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Item, E> {
                ScalarVisitor.visit_bool(v).map(Item::Scalar)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item, E> {
                ScalarVisitor.visit_i64(v).map(Item::Scalar)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
                ScalarVisitor.visit_u64(v).map(Item::Scalar)
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Item, E> {
                ScalarVisitor.visit_i128(v).map(Item::Scalar)
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Item, E> {
                ScalarVisitor.visit_u128(v).map(Item::Scalar)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Item, E> {
                ScalarVisitor.visit_f64(v).map(Item::Scalar)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                ScalarVisitor.visit_str(v).map(Item::Scalar)
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Item, E> {
                ScalarVisitor.visit_string(v).map(Item::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::Scalar(Scalar::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::Scalar(Scalar::Null))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

/// `members` (account -> marks) or `marks` (mark -> accounts), keys and values as written.
type Section = Entries<Spanned<Item>, Spanned<Node>>;

/// A value that should be a list; anything else is kept to be reported.
enum Node {
    Seq(Vec<Spanned<Item>>),
    Scalar(Scalar),
    Map,
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Seq(_) => "a list",
            Node::Scalar(s) => s.kind(),
            Node::Map => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(item) = seq.next_element()? {
                    v.push(item);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Node::Map)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                ScalarVisitor.visit_bool(v).map(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                ScalarVisitor.visit_i64(v).map(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                ScalarVisitor.visit_u64(v).map(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                ScalarVisitor.visit_f64(v).map(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                ScalarVisitor.visit_str(v).map(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Null))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with a `groups` key")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawFile, E> {
                Ok(RawFile {
                    groups: None,
                    unknown: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawFile, A::Error> {
                let mut groups = None;
                let unknown = visit_known_keys(map, &["groups"], |_, map| {
                    groups = Some(map.next_value()?);
                    Ok(())
                })?;
                Ok(RawFile { groups, unknown })
            }
        }
        d.deserialize_map(FileVisitor)
    }
}

impl<'de> Deserialize<'de> for RawGroup {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct GroupVisitor;
        impl<'de> Visitor<'de> for GroupVisitor {
            type Value = RawGroup;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with `members` and/or `marks`")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawGroup, E> {
                Ok(RawGroup::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawGroup, A::Error> {
                let mut group = RawGroup::default();
                let mut merges = Vec::new();
                group.unknown = visit_known_keys(map, &["members", "marks", "<<"], |key, map| {
                    match key.value.as_str() {
                        "members" => group.members = Some((key.clone(), map.next_value()?)),
                        "marks" => group.marks = Some((key.clone(), map.next_value()?)),
                        _ => merges.push((key.clone(), map.next_value()?)),
                    }
                    Ok(())
                })?;
                group.merges = merges;
                Ok(group)
            }
        }
        d.deserialize_map(GroupVisitor)
    }
}
