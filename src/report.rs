//! `validate --json`: every problem `validate` found, as one JSON document for editors and CI
//! annotations (`schema/validate-report.schema.json` describes it). The text report and this one
//! come from the same checks; only the rendering differs.

use serde::Serialize;

use crate::diag::{Diagnostic, Severity};
use crate::error::Error;

/// What `validate` found in files that loaded: the counts of its `OK:` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Groups declared.
    pub groups: usize,
    /// Members over all groups.
    pub members: usize,
    /// (member, mark) pairs.
    pub marks: usize,
    /// Desired files read.
    pub files: usize,
}

/// What `validate`'s checks found in a run that passed.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    /// The counts of what loaded.
    pub summary: Summary,
    /// The desired files' warnings.
    pub warnings: Vec<Diagnostic>,
    /// The secret key's shape warning (already logged), if the key could be read.
    pub key_warning: Option<String>,
}

/// One problem, where it is and how bad.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file, as the config names it (relative paths stay relative); `None` when the
    /// problem is not in one file (a secret key from the environment, an I/O error).
    pub file: Option<String>,
    /// 1-based line; `None` when the problem concerns the whole file.
    pub line: Option<u64>,
    /// 1-based column in characters; `None` when unknown.
    pub column: Option<u64>,
    /// `error` (exit 1) or `warning`.
    pub severity: &'static str,
    /// What is wrong, the same sentence the text report prints.
    pub message: String,
    /// A stable label of the kind of problem (`config`, `desired`, `secret`, `corrupt`...).
    pub code: &'static str,
}

/// The whole document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether the run passed (exit 0).
    pub valid: bool,
    /// How many problems are errors.
    pub errors: usize,
    /// How many problems are warnings.
    pub warnings: usize,
    /// The counts of what loaded; `None` when something failed to load.
    pub summary: Option<Summary>,
    /// Every problem, sorted by file and position.
    pub problems: Vec<Problem>,
}

impl Problem {
    /// A problem at a diagnostic's place.
    pub fn from_diagnostic(d: &Diagnostic, code: &'static str) -> Self {
        // Line 0 is "the whole file"; the closing "... and N more" line has no place either.
        let placed = d.line > 0 && d.line != u64::MAX;
        Problem {
            file: Some(d.path.display().to_string()),
            line: placed.then_some(d.line),
            column: (placed && d.column > 0).then_some(d.column),
            severity: match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            message: d.message.clone(),
            code,
        }
    }

    /// The problems an error stands for: each diagnostic of a config or desired-file error, or
    /// the error itself, in one sentence.
    pub fn from_error(e: &Error) -> Vec<Self> {
        match e {
            Error::Config(d) | Error::Desired(d) => {
                d.0.iter()
                    .map(|d| Problem::from_diagnostic(d, e.metric_label()))
                    .collect()
            }
            _ => vec![Problem {
                file: None,
                line: None,
                column: None,
                severity: "error",
                message: e.to_string(),
                code: e.metric_label(),
            }],
        }
    }
}

impl Report {
    /// The report of `validate`'s checks, and the exit code: the text report's.
    pub fn of(checked: &Result<Checked, Error>) -> (Self, u8) {
        match checked {
            Ok(c) => {
                let mut problems: Vec<Problem> = c
                    .warnings
                    .iter()
                    .map(|w| Problem::from_diagnostic(w, "desired"))
                    .collect();
                problems.extend(c.key_warning.iter().map(|w| Problem {
                    file: None,
                    line: None,
                    column: None,
                    severity: "warning",
                    message: w.clone(),
                    code: "secret",
                }));
                (Report::passed(c.summary, problems), crate::error::exit::OK)
            }
            Err(e) => (Report::failed(e), e.exit_code()),
        }
    }

    /// The report of a run that passed with `warnings`.
    pub fn passed(summary: Summary, warnings: Vec<Problem>) -> Self {
        Report::new(Some(summary), warnings)
    }

    /// The report of a run that failed with `e` (after `warnings`, if any were found first).
    pub fn failed(e: &Error) -> Self {
        Report::new(None, Problem::from_error(e))
    }

    fn new(summary: Option<Summary>, problems: Vec<Problem>) -> Self {
        let errors = problems.iter().filter(|p| p.severity == "error").count();
        Report {
            valid: errors == 0,
            errors,
            warnings: problems.len() - errors,
            summary,
            problems,
        }
    }

    /// The document, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_diagnostic_keeps_its_place_and_a_whole_file_problem_has_none() {
        let src = "groups:\n  g:\n    memebrs: {}\n";
        let at = Diagnostic::at(Path::new("m/a.yaml"), src, 3, 5, "unknown key `memebrs`");
        let p = Problem::from_diagnostic(&at, "desired");
        assert_eq!(
            (p.file.as_deref(), p.line, p.column, p.severity),
            (Some("m/a.yaml"), Some(3), Some(5), "error")
        );
        let whole = Diagnostic::file_error(Path::new("m/b.yaml"), "not UTF-8").warning();
        let p = Problem::from_diagnostic(&whole, "desired");
        assert_eq!((p.line, p.column, p.severity), (None, None, "warning"));
        let more = Diagnostic::more_errors(Path::new("m/c.yaml"), 7);
        assert_eq!(Problem::from_diagnostic(&more, "desired").line, None);
    }

    #[test]
    fn counts_and_validity_follow_the_severities() {
        let warning = Problem::from_diagnostic(
            &Diagnostic::file_error(Path::new("a.yaml"), "odd").warning(),
            "desired",
        );
        let r = Report::passed(Summary::default(), vec![warning]);
        assert!(r.valid);
        assert_eq!((r.errors, r.warnings), (0, 1));
        let r = Report::failed(&Error::Cancelled);
        assert!(!r.valid);
        assert_eq!((r.errors, r.warnings), (1, 0));
        assert_eq!(r.problems[0].file, None);
        assert_eq!(r.problems[0].code, "cancelled");
    }
}
