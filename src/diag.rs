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
    pub source_line: Option<String>,
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
        Diagnostic {
            severity: Severity::Error,
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            source_line: line_of(source, line),
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
    if line == 0 {
        return None;
    }
    source
        .split('\n')
        .nth(usize::try_from(line - 1).ok()?)
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = self.path.display();
        if self.line == 0 {
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
                let pad: String = src
                    .chars()
                    .take(usize::try_from(self.column - 1).unwrap_or(0))
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
    fn whole_file_errors_have_no_position() {
        let d = Diagnostic::file_error(Path::new("x.yaml"), "not UTF-8");
        assert_eq!(d.to_string(), "x.yaml: error: not UTF-8");
    }
}
