//! The JSON reader: against the YAML reader on generated files, and its own refusals.

use std::path::Path;

use proptest::prelude::*;

use super::super::tests::gen_file;
use super::super::{DesiredFile, parse_file, parse_text};
use crate::diag::Diagnostic;

const PATH: &str = "desired/test.json";

fn json(doc: &str) -> Result<DesiredFile, Vec<Diagnostic>> {
    super::parse(Path::new(PATH), doc).0
}

fn yaml(doc: &str) -> Result<DesiredFile, Vec<Diagnostic>> {
    parse_text(
        Path::new(PATH),
        doc,
        doc,
        0,
        false,
        crate::desired::DEFAULT_MAX_ALIAS_PAIRS,
    )
    .0
}

/// The errors of `doc` as `line:column: message`.
fn errors(doc: &str) -> Vec<String> {
    match json(doc) {
        Ok(_) => panic!("accepted:\n{doc}"),
        Err(diags) => diags
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect(),
    }
}

/// `doc` with every non-ASCII character written as a `\u` escape.
fn escape_non_ascii(doc: &str) -> String {
    let mut out = String::new();
    for c in doc.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The YAML reader's "(first at line N)", which the JSON reader gives with its column.
fn without_first_column(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    for d in &mut diags {
        if let Some(i) = d.message.find(" (first at line ")
            && let Some(j) = d.message[i..].find(", column ")
        {
            let end = d.message[i..].find(')').map_or(d.message.len(), |k| i + k);
            d.message.replace_range(i + j..end, "");
        }
    }
    diags
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Generated files written as JSON read through the JSON reader exactly as through the YAML
    /// reader (groups, origins, warnings; and for files with problems, the same diagnostics at the
    /// same places, where serde_json accepts the text); with every non-ASCII character escaped,
    /// the same groups.
    #[test]
    fn json_reads_like_the_yaml_reader(file in gen_file()) {
        let doc = file.render_flow(true);
        let by_json = json(&doc);
        if file.is_clean() {
            prop_assert!(by_json.is_ok(), "refused a clean file:\n{}\n{:?}", doc, by_json);
            prop_assert_eq!(&by_json, &yaml(&doc), "on:\n{}", doc);
            let escaped = escape_non_ascii(&doc);
            let again = json(&escaped).expect("escaped file");
            let ids = |f: &DesiredFile| f.groups.iter().map(|g| (g.0.clone(), g.2.clone())).collect::<Vec<_>>();
            prop_assert_eq!(ids(&again), ids(by_json.as_ref().unwrap()));
            prop_assert_eq!(again.warnings.len(), by_json.as_ref().unwrap().warnings.len());
        } else if serde_json::from_str::<serde::de::IgnoredAny>(&doc).is_ok() {
            let by_yaml = yaml(&doc);
            match (by_json, by_yaml) {
                (Ok(j), Ok(y)) => prop_assert_eq!(j, y, "on:\n{}", doc),
                (Err(j), Err(mut y)) => {
                    let mut j = without_first_column(j);
                    crate::diag::sort(&mut j);
                    crate::diag::sort(&mut y);
                    prop_assert_eq!(j, y, "on:\n{}", doc)
                }
                (j, y) => prop_assert!(false, "json {:?}\nyaml {:?}\non:\n{}", j, y, doc),
            }
        }
    }
}

#[test]
fn null_anywhere_below_groups_is_an_error() {
    let cases = [
        ("null", "1:1: the file holds null"),
        ("{\"groups\": null}", "1:12: `groups` is null"),
        ("{\"groups\": {\"g\": null}}", "1:18: group \"g\" is null"),
        (
            "{\"groups\": {\"g\": {\"members\": null}}}",
            "1:30: `members` is null",
        ),
        (
            "{\"groups\": {\"g\": {\"marks\": null}}}",
            "1:28: `marks` is null",
        ),
        (
            "{\"groups\": {\"g\": {\"members\": {\"a\": null}}}}",
            "1:36: the marks of \"a\" must be a list such as [1000], found nothing (null)",
        ),
        (
            "{\"groups\": {\"g\": {\"members\": {\"a\": [null]}}}}",
            "1:37: a mark must be an integer, found nothing (null)",
        ),
        (
            "{\"groups\": {\"g\": {\"marks\": {\"1000\": null}}}}",
            "1:37: the accounts of mark 1000 must be a list such as [student9], found nothing (null)",
        ),
        (
            "{\"groups\": {\"g\": {\"marks\": {\"1000\": [\"a\", null]}}}}",
            "1:43: `null` is no value, not an account",
        ),
    ];
    for (doc, expected) in cases {
        let got = errors(doc);
        assert_eq!(got.len(), 1, "{doc}: {got:?}");
        assert!(got[0].starts_with(expected), "{doc}: {got:?}");
    }
    // Only {} and [] mean none.
    let file = json("{\"groups\": {\"g\": {\"members\": {}, \"marks\": {\"1000\": []}}}}").unwrap();
    assert_eq!(file.groups.len(), 1);
    assert!(file.groups[0].2.members.is_empty());
}

#[test]
fn an_empty_file_or_no_groups_declares_nothing_and_is_refused() {
    for doc in ["", "  \n\t\r\n"] {
        assert!(
            errors(doc)[0].starts_with("0:0: the file declares nothing"),
            "{doc:?}"
        );
    }
    assert!(errors("{}")[0].starts_with("0:0: the file has no `groups` key"));
    assert_eq!(
        errors("[]"),
        ["1:1: a desired file must be a mapping with a `groups` key, found a list"]
    );
}

#[test]
fn duplicate_keys_are_refused_at_every_level_with_both_places() {
    let doc = "{\"groups\": {\"g\": {\"members\": {\"a\": [1000], \"a\": [1001]}, \"marks\": {\"1000\": [\"b\"], \"1000\": [\"c\"]}, \"members\": {}},\n \"g\": {}}, \"groups\": {}}";
    assert_eq!(
        errors(doc),
        [
            "1:44: duplicate key: account \"a\" is listed again in `members` (first at line 1, column 31)",
            "1:83: duplicate key: mark 1000 is listed again in `marks` (first at line 1, column 68)",
            "1:99: duplicate key `members` (first at line 1, column 19)",
            "2:2: duplicate key: group \"g\" is declared again (first at line 1, column 13)",
            "2:12: duplicate key `groups` (first at line 1, column 2)",
        ]
    );
}

#[test]
fn syntax_errors_name_their_place_in_the_users_terms() {
    let cases = [
        (
            "{\"groups\": {\"g\": {\"members\": {\"a\": [1000,]}}}}",
            "1:42: a comma before the closing bracket",
        ),
        (
            "{\"groups\": {\"g\": {\"mem",
            "1:22: the file ends in the middle of a string",
        ),
        (
            "{\"groups\": {\n  \"g\": {}",
            "2:9: the file ends in the middle of a mapping",
        ),
        ("{\"groups\": {}} x", "1:16: more content after the end"),
        (
            "{'groups': {}}",
            "1:2: a key must be a string in double quotes",
        ),
        (
            "{\"groups\": // none\n{}}",
            "1:12: a value is missing or is not JSON",
        ),
        (
            "{\"groups\": {\"g\\q\": {}}}",
            "1:16: unknown escape sequence",
        ),
    ];
    for (doc, expected) in cases {
        let got = errors(doc);
        assert_eq!(got.len(), 1, "{doc}: {got:?}");
        assert!(got[0].starts_with(expected), "{doc}: {got:?}");
        assert!(!got[0].contains(" at line "), "{got:?}");
    }
}

#[test]
fn escapes_and_numbers_are_read_as_written() {
    let doc = "{\"groups\": {\"\\u0067\": {\"marks\": {\"1000\": [123, 1e3, \"\\u00e9\", true]}}}}";
    let file = json(doc).unwrap();
    assert_eq!(file.groups[0].0.as_str(), "g");
    let accounts: Vec<&str> = file.groups[0]
        .2
        .members
        .keys()
        .map(|a| a.as_str())
        .collect();
    assert_eq!(accounts, ["123", "1e3", "true", "é"]);
    assert_eq!(file.warnings.len(), 1, "{:?}", file.warnings);
    assert_eq!((file.warnings[0].line, file.warnings[0].column), (1, 53));
    // A lone surrogate is refused at its string.
    let got = errors("{\"groups\": {\"\\ud800\": {}}}");
    assert!(
        got[0].starts_with("1:13: this string holds an invalid `\\u` escape"),
        "{got:?}"
    );
}

#[test]
fn marks_are_plain_decimal_integers_and_no_invalid_mark_is_suggested() {
    let doc = "{\"groups\": {\"g\": {\"members\": {\"a\": [-0, 1e3, 1000.0, \"1001\", 999, 4294967296]}}}}";
    assert_eq!(
        errors(doc),
        [
            "1:37: mark `-0` is not allowed: a mark is a plain decimal integer >= 1000, or the special 500 or 600",
            "1:41: mark `1e3` is not a plain decimal integer; write 1000",
            "1:46: mark `1000.0` is not a plain decimal integer; write 1000",
            "1:54: a mark must be an integer, found a string; write 1001 without quotes",
            "1:62: mark 999 is not allowed: a mark is an integer >= 1000, or the special 500 or 600",
            "1:67: mark 4294967296 is too large: the service's marks are 32-bit (at most 4294967295)",
        ]
    );
}

#[test]
fn a_file_with_many_errors_reports_the_first_hundred_and_counts_the_rest() {
    let mut doc = String::from("{\"groups\": {\"g\": {\"members\": {");
    for i in 0..250 {
        if i > 0 {
            doc.push_str(", ");
        }
        doc.push_str(&format!("\"a{i}\": [1]"));
    }
    doc.push_str("}}}}");
    let errors = parse_file(
        Path::new(PATH),
        doc.as_bytes(),
        crate::desired::DEFAULT_MAX_ALIAS_PAIRS,
    )
    .unwrap_err();
    assert_eq!(errors.len(), 101);
    assert_eq!(errors[100].message, "... and 150 more errors in this file");
}

#[test]
fn json_names_in_any_case_go_to_the_json_reader() {
    // YAML reads this (a comment), JSON does not.
    let doc = b"{\"groups\": {}} # none";
    assert!(
        parse_file(
            Path::new("a.yaml"),
            doc,
            crate::desired::DEFAULT_MAX_ALIAS_PAIRS
        )
        .is_ok()
    );
    for name in ["a.json", "a.JSON", "a.Json"] {
        assert!(
            parse_file(
                Path::new(name),
                doc,
                crate::desired::DEFAULT_MAX_ALIAS_PAIRS
            )
            .is_err(),
            "{name}"
        );
    }
}

proptest! {
    /// `Places` counts lines and characters a span at a time; it must agree with walking the
    /// text one character at a time, for any text and any set of offsets.
    #[test]
    fn places_agree_with_a_walk_through_the_text(
        text in "[a\n\u{e9}\u{8a9e}\u{1f600} ]{0,60}",
        picks in proptest::collection::vec(0usize..70, 0..8),
    ) {
        let offsets: Vec<usize> = picks.iter().map(|&p| p.min(text.len())).collect();
        let places = super::Places::new(&text, offsets.clone());
        for &at in &offsets {
            let (mut line, mut column, mut line_start) = (1u64, 1u64, 0usize);
            for (i, c) in text.char_indices() {
                if i >= at {
                    break;
                }
                if c == '\n' {
                    line += 1;
                    column = 1;
                    line_start = i + 1;
                } else {
                    column += 1;
                }
            }
            prop_assert_eq!(places.get(at), (at, line, column, line_start), "{:?} at {}", text, at);
        }
    }
}
