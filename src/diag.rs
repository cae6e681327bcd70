//! Diagnostics: problems found in a user's file, each with `path:line:column`, a message and the
//! offending line, rendered the way compilers do.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file cannot be used; nothing is planned from it.
    Error,
    /// Allowed, but probably not what the author meant.
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in, as the user named it (not canonicalized).
    pub path: PathBuf,
    /// 1-based line, or 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column (in characters), or 0 when unknown.
    pub column: u64,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The offending source line, shown under the message so the user need not open the file.
    /// Long lines are cut to a window around the column (see [`window`]), so a one-line file of
    /// megabytes costs a hundred characters per diagnostic, not the whole line.
    pub source_line: Option<String>,
    /// How many characters of the line were cut before `source_line` starts (minus the `…`
    /// shown in their place), so that the caret still points at `column`.
    pub source_offset: u64,
}

impl Diagnostic {
    /// An error about a whole file (it is missing, unreadable, not UTF-8...).
    pub fn file_error(path: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            source_line: None,
            source_offset: 0,
        }
    }

    /// An error at a position of `source`, quoting its line.
    pub fn at(
        path: &Path,
        source: &str,
        line: u64,
        column: u64,
        message: impl Into<String>,
    ) -> Self {
        let (source_line, source_offset) = match line_of_str(source, line) {
            Some(l) => {
                let (w, off) = window(l, column);
                (Some(w), off)
            }
            None => (None, 0),
        };
        Diagnostic {
            severity: Severity::Error,
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            source_line,
            source_offset,
        }
    }

    /// An error at byte `offset` of `text` (line `line`, column `column` of the file), quoting
    /// a window of its line. Finds the line from the offset, without scanning from the top.
    pub fn at_offset(
        path: &Path,
        text: &str,
        offset: usize,
        line: u64,
        column: u64,
        message: impl Into<String>,
    ) -> Self {
        let line_text = line_at(text, offset);
        let in_line = (offset.min(text.len()))
            .saturating_sub(line_text.as_ptr() as usize - text.as_ptr() as usize);
        let (source_line, source_offset) = window_at(line_text, in_line, column);
        Diagnostic {
            severity: Severity::Error,
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            source_line: Some(source_line),
            source_offset,
        }
    }

    /// The note closing a file's report when it has more than [`MAX_ERRORS_PER_FILE`] errors
    /// (or warnings, with `severity`).
    pub fn more_errors(path: &Path, more: usize) -> Self {
        Self::more(path, more, Severity::Error)
    }

    fn more(path: &Path, more: usize, severity: Severity) -> Self {
        let what = match (severity, more) {
            (Severity::Error, 1) => "error",
            (Severity::Error, _) => "errors",
            (Severity::Warning, 1) => "warning",
            (Severity::Warning, _) => "warnings",
        };
        Diagnostic {
            line: SUMMARY_LINE,
            severity,
            ..Diagnostic::file_error(path, format!("... and {more} more {what} in this file"))
        }
    }

    /// Turns this into a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// Whether this diagnostic stops the file from being used.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Sort key: file, then position, so reports read top to bottom.
    fn key(&self) -> (&Path, u64, u64) {
        (&self.path, self.line, self.column)
    }
}

/// At most this many errors are shown per file; the rest are counted in one closing line.
pub const MAX_ERRORS_PER_FILE: usize = 100;

/// The line of [`Diagnostic::more_errors`]: after every real line, printed without a position.
const SUMMARY_LINE: u64 = u64::MAX;

/// Keeps the first [`MAX_ERRORS_PER_FILE`] diagnostics of one file (in file order, all of one
/// severity) and counts the rest in one closing line, so that a file with a million bad values
/// prints a screenful, not gigabytes.
pub fn cap_per_file(path: &Path, diags: &mut Vec<Diagnostic>) {
    if diags.len() <= MAX_ERRORS_PER_FILE {
        return;
    }
    sort(diags);
    if diags.len() <= MAX_ERRORS_PER_FILE {
        return;
    }
    let severity = diags[0].severity;
    let more = diags.len() - MAX_ERRORS_PER_FILE;
    diags.truncate(MAX_ERRORS_PER_FILE);
    diags.push(Diagnostic::more(path, more, severity));
}

/// Characters of a long line shown on each side of the column.
const WINDOW_CHARS: usize = 50;

/// A window of `line` around the 1-based character `column`: the line itself when it is short,
/// else about a hundred characters with `…` where it was cut. Also returns how many characters
/// the caret moves left (see [`Diagnostic::source_offset`]).
pub fn window(line: &str, column: u64) -> (String, u64) {
    if line.len() <= 2 * WINDOW_CHARS {
        return (line.to_string(), 0);
    }
    let col = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
    let at = line.char_indices().nth(col).map_or(line.len(), |(i, _)| i);
    window_at(line, at, column)
}

/// [`window`] for a column known as a byte offset `at` in `line`: costs the window, not the line
/// (a one-line file of megabytes has thousands of nodes to quote).
pub fn window_at(line: &str, at: usize, column: u64) -> (String, u64) {
    if line.len() <= 2 * WINDOW_CHARS {
        return (line.to_string(), 0);
    }
    let mut at = at.min(line.len());
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    // Up to WINDOW_CHARS characters back, then 2 * WINDOW_CHARS characters on.
    let start = line[..at]
        .char_indices()
        .rev()
        .nth(WINDOW_CHARS - 1)
        .map_or(0, |(i, _)| i);
    let before = line[start..at].chars().count() as u64;
    let end = line[start..]
        .char_indices()
        .nth(2 * WINDOW_CHARS)
        .map_or(line.len(), |(i, _)| start + i);
    let mut out = String::with_capacity(end - start + 8);
    if start > 0 {
        out.push('…');
    }
    out.push_str(&line[start..end]);
    if end < line.len() {
        out.push('…');
    }
    let shown_before = before + u64::from(start > 0);
    (out, column.saturating_sub(1).saturating_sub(shown_before))
}

/// The line of `text` holding byte `offset`, without its line break.
pub fn line_at(text: &str, offset: usize) -> &str {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    text[start..end].trim_end_matches('\r')
}

/// Sorts diagnostics by file and position and drops exact repeats.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        a.key()
            .cmp(&b.key())
            .then_with(|| a.message.cmp(&b.message))
    });
    diags.dedup();
}

/// The 1-based `line` of `source`, without its line break.
pub fn line_of(source: &str, line: u64) -> Option<String> {
    line_of_str(source, line).map(str::to_string)
}

fn line_of_str(source: &str, line: u64) -> Option<&str> {
    if line == 0 {
        return None;
    }
    source
        .split('\n')
        .nth(usize::try_from(line - 1).ok()?)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = self.path.display();
        if self.line == 0 || self.line == SUMMARY_LINE {
            write!(f, "{path}: {kind}: {}", self.message)?;
        } else {
            write!(
                f,
                "{path}:{}:{}: {kind}: {}",
                self.line, self.column, self.message
            )?;
        }
        if let Some(src) = &self.source_line {
            let gutter = self.line.to_string();
            write!(f, "\n {gutter} | {src}")?;
            if self.column > 0 {
                let caret = (self.column - 1).saturating_sub(self.source_offset);
                let pad: String = src
                    .chars()
                    .take(usize::try_from(caret).unwrap_or(0))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "\n {} | {pad}^", " ".repeat(gutter.len()))?;
            }
        }
        Ok(())
    }
}

/// A non-empty list of diagnostics that stopped something from loading: every problem found,
/// not just the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// How many of the diagnostics are errors.
    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    /// Where the problems are, without what the files say: how many errors, and the file and
    /// line of the first. For answers to anyone who can reach a port (`/readyz`), which must
    /// not show source text (account names); the full diagnostics go to the log.
    pub fn location_summary(&self) -> String {
        let errors = self.error_count();
        let noun = if errors == 1 { "error" } else { "errors" };
        match self.0.iter().find(|d| d.is_error()) {
            Some(d) if d.line > 0 => format!(
                "{errors} {noun}, the first in {} at line {}",
                d.path.display(),
                d.line
            ),
            Some(d) => format!("{errors} {noun}, the first in {}", d.path.display()),
            None => format!("{errors} {noun}"),
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_source_and_caret() {
        let src = "groups:\n  g:\n    memebrs: {}\n";
        let d = Diagnostic::at(Path::new("m/a.yaml"), src, 3, 5, "unknown key `memebrs`");
        assert_eq!(
            d.to_string(),
            "m/a.yaml:3:5: error: unknown key `memebrs`\n 3 |     memebrs: {}\n   |     ^"
        );
    }

    #[test]
    fn long_lines_are_cut_to_a_window_around_the_column() {
        let line = format!(
            "{{\"groups\": {{{}\"bad\": 1}}}}",
            "\"g\": {}, ".repeat(100_000)
        );
        let column = line.find("\"bad\"").unwrap() as u64 + 1;
        let d = Diagnostic::at(Path::new("a.json"), &line, 1, column, "here");
        let shown = d.to_string();
        assert!(shown.len() < 400, "{} bytes shown", shown.len());
        let lines: Vec<&str> = shown.lines().collect();
        let caret = lines[2].find('^').unwrap();
        // The caret sits under the `"bad"` of the window, counted in characters.
        let under: String = lines[1]
            .chars()
            .skip(lines[2][..caret].chars().count())
            .take(5)
            .collect();
        assert_eq!(under, "\"bad\"", "{shown}");
        assert!(lines[1].contains('…'));
        // The same from the byte offset, without splitting the text into lines.
        let e = Diagnostic::at_offset(
            Path::new("a.json"),
            &line,
            column as usize - 1,
            1,
            column,
            "here",
        );
        assert_eq!(e, d);
    }

    #[test]
    fn errors_past_the_cap_are_summarized() {
        let p = Path::new("a.yaml");
        let mut errors: Vec<Diagnostic> = (1..=250)
            .map(|i| Diagnostic::at(p, "x", i, 1, format!("bad {i}")))
            .collect();
        cap_per_file(p, &mut errors);
        assert_eq!(errors.len(), MAX_ERRORS_PER_FILE + 1);
        assert_eq!(errors[99].line, 100);
        assert_eq!(
            errors[100].to_string(),
            "a.yaml: error: ... and 150 more errors in this file"
        );
        sort(&mut errors);
        assert!(errors.last().unwrap().message.contains("150 more"));

        let mut warnings: Vec<Diagnostic> = (1..=101)
            .map(|i| Diagnostic::at(p, "x", i, 1, "odd").warning())
            .collect();
        cap_per_file(p, &mut warnings);
        assert_eq!(
            warnings[100].to_string(),
            "a.yaml: warning: ... and 1 more warning in this file"
        );
    }

    #[test]
    fn whole_file_errors_have_no_position() {
        let d = Diagnostic::file_error(Path::new("x.yaml"), "not UTF-8");
        assert_eq!(d.to_string(), "x.yaml: error: not UTF-8");
    }
}
