//! Checking a parsed group: names, marks, limits, repeats, each problem at its `path:line:column`.

use super::*;

/// Context for turning serde-saphyr locations into diagnostics.
pub(super) struct Cx<'a> {
    pub(super) path: &'a Path,
    /// The whole file.
    pub(super) full: &'a str,
    /// The text being parsed (the whole file, or a chunk of it: spans count from its start).
    pub(super) chunk: &'a str,
    pub(super) line_offset: u64,
    /// The byte range of the last line looked up: a one-line file has every node on one line,
    /// which must be found once, not once per node.
    pub(super) last_line: std::cell::Cell<(usize, usize)>,
}

/// How a scalar was written.
pub(super) enum Written<'a> {
    /// Plain (unquoted): the characters as written, before YAML resolves them to numbers,
    /// booleans or null.
    Plain(&'a str),
    /// Quoted (or a block scalar): the parsed value is what was meant.
    Quoted,
}

impl Cx<'_> {
    pub(super) fn line<T>(&self, s: &Spanned<T>) -> u64 {
        s.referenced.line() + self.line_offset
    }

    pub(super) fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        self.at_loc(&s.referenced, message)
    }

    pub(super) fn at_loc(
        &self,
        at: &serde_saphyr::Location,
        message: impl Into<String>,
    ) -> Diagnostic {
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
    pub(super) fn line_at(&self, offset: usize) -> (&str, usize) {
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
    pub(super) fn origin<T>(&self, key: &Spanned<T>) -> Origin {
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

    pub(super) fn yaml_error(&self, e: &serde_saphyr::Error) -> Diagnostic {
        let message = crate::yaml::user_message(e);
        match e.location() {
            Some(loc) if loc.line() > 0 => self.at_loc(&loc, message),
            _ => Diagnostic::file_error(self.path, message),
        }
    }

    /// How the node at `s` was written (for an alias: the anchored node).
    pub(super) fn written<T>(&self, s: &Spanned<T>) -> Written<'_> {
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
    pub(super) fn name<'s>(
        &'s self,
        s: &'s Spanned<Item>,
        what: &str,
    ) -> Result<Cow<'s, str>, String> {
        let scalar = match &s.value {
            Item::Scalar(scalar) => scalar,
            Item::Collection(kind) => {
                return Err(format!("{} must be a string, found {kind}", article(what)));
            }
        };
        if let Some(tag) = self.tag_before(s)
            && !is_str_tag(tag)
        {
            return Err(format!(
                "{} is text as written: remove the tag `{tag}` (only `!!str`, or no tag, is allowed)",
                article(what)
            ));
        }
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
    pub(super) fn tag_before<T>(&self, s: &Spanned<T>) -> Option<&str> {
        let start = usize::try_from(s.defined.span().byte_offset()?).ok()?;
        let len = usize::try_from(s.defined.span().byte_len()?).ok()?;
        // A value's properties may sit on the line before it (`- !!int` then `12`); a key's
        // cannot (a tag on the line before a key belongs to the mapping).
        let is_key = self
            .chunk
            .get(start.saturating_add(len)..)
            .is_some_and(|after| after.trim_start_matches([' ', '\t']).starts_with(':'));
        let mut before = self.chunk.get(..start)?;
        for _ in 0..2 {
            let mut trimmed = before.trim_end_matches([' ', '\t']);
            if trimmed.len() == before.len() {
                return None; // no separating space: nothing written before the node
            }
            if trimmed.ends_with('\n') {
                if is_key {
                    return None;
                }
                trimmed = trimmed.trim_end_matches([' ', '\t', '\n', '\r']);
                let line = &trimmed[trimmed.rfind('\n').map_or(0, |i| i + 1)..];
                if line.trim_start().starts_with('#') || line.contains(" #") {
                    return None; // a comment, not properties
                }
            }
            // A verbatim tag (`!<tag:yaml.org,2002:int>`) holds `:` and `,` itself.
            let verbatim = trimmed
                .strip_suffix('>')
                .and_then(|t| t.rfind("!<"))
                .filter(|&i| !trimmed[i..].contains([' ', '\n']));
            let from = verbatim.unwrap_or_else(|| {
                trimmed
                    .rfind([' ', '\t', '\n', '[', '{', ',', '?', ':', '-'])
                    .map_or(0, |i| i + 1)
            });
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
    pub(super) fn mark(&self, s: &Spanned<Item>, as_key: bool) -> Result<Mark, String> {
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
            (Written::Plain(""), Scalar::Null) => {
                return Err("a mark has no value here: the file may be cut off; write the mark or remove the empty item".into());
            }
            (Written::Plain(text @ ("~" | "null" | "Null" | "NULL")), Scalar::Null) => {
                return Err(format!(
                    "`{text}` means \"no value\" in YAML, not a mark; write the mark or remove the item"
                ));
            }
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
        if let Some(mark) = plain_decimal_mark(text) {
            return mark;
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
            (Some(n), _) => Err(not_plain_decimal(text, n)),
            (None, Scalar::Float(_)) => Err(format!("mark {text} is not an integer")),
            (None, other) => Err(format!("a mark must be an integer, found {}", other.kind())),
        }
    }
}

/// The tags that leave a name as written: `!!str` and its verbatim form.
pub(super) fn is_str_tag(tag: &str) -> bool {
    matches!(tag, "!!str" | "!<tag:yaml.org,2002:str>")
}

/// The end of the error for a list of marks or accounts that is null.
const NULL_LIST: &str = "have no value: the file may be cut off; write `[]` to declare none";

/// A mark written in plain decimal (`1000`): the mark, or why it is none; `None` when `text` is not
/// plain decimal. Both readers read marks through it.
pub(super) fn plain_decimal_mark(text: &str) -> Option<Result<Mark, String>> {
    is_decimal(text).then(|| {
        match text
            .parse::<u64>()
            .ok()
            .filter(|&n| n <= u64::from(u32::MAX))
        {
            Some(n) => Mark::new(n),
            None => Err(format!(
                "mark {text} is too large: the service's marks are 32-bit (at most {})",
                u32::MAX
            )),
        }
    })
}

/// A mark written as `text`, which means the integer `n` but not in plain decimal: suggest `n`
/// only when it is a mark (`-0` and `1e2` are not; a negative number is never one).
pub(super) fn not_plain_decimal(text: &str, n: i128) -> String {
    if n < 0 {
        return format!(
            "mark {text} is not allowed: a mark is an integer >= 1000, or the special 500 or 600"
        );
    }
    match u64::try_from(n).ok().map(Mark::new) {
        Some(Ok(_)) => format!("mark `{text}` is not a plain decimal integer; write {n}"),
        _ => format!(
            "mark `{text}` is not allowed: a mark is a plain decimal integer >= 1000, or the special 500 or 600"
        ),
    }
}

/// The warning for an account the service may reject.
pub(super) fn unusual_account(a: &Account) -> String {
    format!(
        "account {:?} has characters outside [a-zA-Z0-9_-]; the service may reject it",
        a.as_str()
    )
}

/// "an account", "a group ID".
pub(super) fn article(what: &str) -> String {
    if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {what}")
    } else {
        format!("a {what}")
    }
}

/// Digits only, no sign, no leading zero, no `_`: the one spelling of a mark.
pub(super) fn is_decimal(s: &str) -> bool {
    s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Validates one group's raw sections into desired marks, pushing every problem.
pub(super) fn check_group(
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
    let members_section = members_from.map(|s| (s.key, s.section));
    let marks_section = marks_from.map(|s| (s.key, s.section));

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

    let mut section = |s: Option<(serde_saphyr::Location, Spanned<MapOr<Section>>)>, what: &str| {
        match s {
            None => Vec::new(),
            Some((key, s)) => match s.value {
                MapOr::Map(entries) => entries.0,
                MapOr::Null => {
                    // `members:` with nothing after it: a cut-off file, never "no members".
                    let name = what.split('`').nth(1).unwrap_or("members");
                    errors.push(cx.at_loc(
                    &key,
                    format!("`{name}` has no value: the file may be cut off; write `{{}}` to declare none"),
                ));
                    Vec::new()
                }
                MapOr::Other(kind) => {
                    errors.push(cx.at_loc(&s.referenced, format!("{what}, found {kind}")));
                    Vec::new()
                }
            },
        }
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
                // Its marks are still written in the file: they count toward the group's
                // distinct marks (as in the JSON reader), their own problems aside.
                if let Node::Seq(items) = &marks.value {
                    for item in items {
                        if let Ok(m) = cx.mark(item, false) {
                            note_use(m, item);
                        }
                    }
                }
                continue;
            }
            let whose = match (&marks.value, cx.name(key, "account")) {
                (Node::Seq(_), _) | (_, Err(_)) => String::new(),
                (_, Ok(n)) => format!(" of {n:?}"),
            };
            let account = check_account(key, errors);
            let items = match &marks.value {
                Node::Seq(items) => items,
                Node::Scalar(Scalar::Null) => {
                    let whose = match cx.name(key, "account") {
                        Ok(n) => format!(" of {n:?}"),
                        Err(_) => String::new(),
                    };
                    errors.push(cx.at(key, format!("the marks{whose} {NULL_LIST}")));
                    continue;
                }
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
                Node::Scalar(Scalar::Null) => {
                    let whose = mark.map(|n| format!(" of mark {n}")).unwrap_or_default();
                    errors.push(cx.at(key, format!("the accounts{whose} {NULL_LIST}")));
                    continue;
                }
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
    for (at, message) in limit_problems(id, &mark_first_use, &out, group_pos, |l| {
        (l.line(), l.column())
    }) {
        errors.push(cx.at_loc(&at, message));
    }
    out
}

/// The service's limits on one group, checked before any call (both readers share it): at most
/// [`MAX_MARKS_PER_GROUP`] distinct marks, reported at the first use of the one too many, and at
/// most [`MAX_MEMBERS_PER_MARK`] members per mark, reported at the mark's first use (or the
/// group's place). `first_use` maps each mark to where it is first used; `order` sorts places.
pub(super) fn limit_problems<P: Copy, K: Ord>(
    id: &GroupId,
    first_use: &BTreeMap<Mark, P>,
    group: &DesiredGroup,
    group_at: P,
    order: impl Fn(&P) -> K,
) -> Vec<(P, String)> {
    let mut problems = Vec::new();
    if first_use.len() > MAX_MARKS_PER_GROUP {
        let mut by_position: Vec<(Mark, P)> = first_use.iter().map(|(m, at)| (*m, *at)).collect();
        by_position.sort_by_key(|(_, at)| order(at));
        let (eleventh, at) = by_position[MAX_MARKS_PER_GROUP];
        let all: Vec<String> = first_use.keys().map(Mark::to_string).collect();
        problems.push((
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
    for marks in group.members.values() {
        for m in marks.iter() {
            match per_mark.binary_search_by_key(&m, |e| e.0) {
                Ok(i) => per_mark[i].1 += 1,
                Err(i) => per_mark.insert(i, (m, 1)),
            }
        }
    }
    for (m, count) in per_mark {
        if count > MAX_MEMBERS_PER_MARK {
            let at = first_use.get(&m).copied().unwrap_or(group_at);
            problems.push((
                at,
                format!(
                    "mark {m} is given to {count} members of group {:?}; the service allows at most {MAX_MEMBERS_PER_MARK} members per mark",
                    id.as_str()
                ),
            ));
        }
    }
    problems
}

/// For keys (or list items) given in document order as their text (`None`: not comparable, never
/// a repeat) and line: for each, the line of the first one with the same text when it is a
/// repeat, else `None`. Sorts indices instead of hashing copied strings.
pub(super) fn first_lines_of_repeats<'t>(
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
