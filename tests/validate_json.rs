//! `marksync validate --json` (issue 16): every problem as one JSON document on stdout, for
//! editors and CI annotations, with the exit code of the text report. Each document is checked
//! against `schema/validate-report.schema.json`, the documented contract.

mod common;

use common::cli::marksync;
use serde_json::{Value, json};

const CONFIG: &str =
    "sdkappid: 1400000000\nidentifier: administrator\ndesired: marks/\nstate: state.json\n";

/// A directory with `marksync.yaml` = `config` and each (path, text) of `files`.
fn dir(config: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("marks")).unwrap();
    std::fs::write(dir.path().join("marksync.yaml"), config).unwrap();
    for (path, text) in files {
        std::fs::write(dir.path().join(path), text).unwrap();
    }
    dir
}

/// Runs `marksync validate --json ARGS` in `dir`: (exit code, the one document on stdout,
/// stderr). Fails unless stdout is exactly one JSON document that the report schema accepts.
fn validate_json(dir: &tempfile::TempDir, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["validate", "--json"];
    all.extend_from_slice(args);
    let out = marksync(dir.path(), &all);
    let doc: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", out.stdout));
    assert!(out.stdout.ends_with("}\n"), "one line: {}", out.stdout);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schema/validate-report.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the report schema compiles");
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
    (out.code, doc, out.stderr)
}

#[test]
fn every_problem_of_every_file_is_one_json_document_and_the_exit_code_is_unchanged() {
    let d = dir(
        CONFIG,
        &[
            (
                "marks/a.yaml",
                "groups:\n  \"@TGS#a\":\n    memebrs:\n      alice: [1000]\n    members:\n      bob: [999]\n",
            ),
            (
                "marks/b.yaml",
                "groups:\n  \"@TGS#b\":\n    members: [1, 2]\n",
            ),
        ],
    );
    let (code, doc, stderr) = validate_json(&d, &[]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(stderr, "", "nothing but the document");
    assert_eq!(
        doc,
        json!({
            "valid": false,
            "errors": 3,
            "warnings": 0,
            "summary": null,
            "problems": [
                {"file": "marks/a.yaml", "line": 3, "column": 5, "severity": "error", "code": "desired",
                 "message": "unknown key `memebrs`; expected `members` or `marks`"},
                {"file": "marks/a.yaml", "line": 6, "column": 13, "severity": "error", "code": "desired",
                 "message": "mark 999 is not allowed: a mark is an integer >= 1000, or the special 500 or 600"},
                {"file": "marks/b.yaml", "line": 3, "column": 14, "severity": "error", "code": "desired",
                 "message": "`members` must be a mapping of account to its marks (such as `host: [500, 1000]`), found a list"},
            ]
        })
    );
}

#[test]
fn config_errors_are_reported_at_their_place() {
    let d = dir(
        "sdkappid: \"1400000000\"\nidentifier: administrator\ndesired: marks/\nregoin: tokyo\n",
        &[],
    );
    let (code, doc, _) = validate_json(&d, &[]);
    assert_eq!(code, 1);
    let places: Vec<_> = doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["file"].clone(),
                p["line"].clone(),
                p["column"].clone(),
                p["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        places,
        [
            (json!("marksync.yaml"), json!(1), json!(11), json!("config")),
            (json!("marksync.yaml"), json!(4), json!(1), json!("config")),
        ]
    );
}

#[test]
fn a_valid_tree_has_its_summary_and_warnings_stay_warnings_unless_strict() {
    let d = dir(
        CONFIG,
        &[(
            "marks/a.yaml",
            "groups:\n  \"@TGS#a\":\n    members:\n      n\u{e9}v: [1000]\n      bob: [1000, 1001]\n",
        )],
    );
    let (code, doc, stderr) = validate_json(&d, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(stderr, "", "the warning is in the document, not on stderr");
    assert_eq!(doc["valid"], true);
    assert_eq!(
        doc["summary"],
        json!({"groups": 1, "members": 2, "marks": 3, "files": 1})
    );
    assert_eq!(
        (doc["errors"].clone(), doc["warnings"].clone()),
        (json!(0), json!(1))
    );
    let w = &doc["problems"][0];
    assert_eq!(
        (w["file"].clone(), w["line"].clone(), w["severity"].clone()),
        (json!("marks/a.yaml"), json!(4), json!("warning"))
    );
    assert!(
        w["message"]
            .as_str()
            .unwrap()
            .starts_with("account \"név\""),
        "{w}"
    );

    let (code, doc, _) = validate_json(&d, &["--strict"]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["problems"][0]["severity"], "error");
    assert_eq!(doc["summary"], Value::Null);
}

#[test]
fn a_problem_in_no_file_has_no_place_and_the_secret_is_never_shown() {
    let key = "5BD2850FFF3ECB11D7C805251C51EE463A25727BDDC2385F3FA8BFEE1BB93B5";
    let d = dir(
        "sdkappid: 1400000000\nidentifier: administrator\nregion: singapore\nsecret_key_file: secret.key\ndesired: marks/\nstate: state.json\n",
        &[
            ("secret.key", key),
            (
                "marks/a.yaml",
                "groups:\n  \"@TGS#a\":\n    members:\n      bob: [1000]\n",
            ),
        ],
    );
    let (code, doc, _) = validate_json(&d, &["--strict"]);
    assert_eq!(code, 1, "{doc}");
    let p = &doc["problems"][0];
    assert_eq!(
        (p["file"].clone(), p["line"].clone(), p["code"].clone()),
        (Value::Null, Value::Null, json!("secret"))
    );
    assert!(!doc.to_string().contains(key));

    // Without --strict, the same key is a warning in the document.
    let (code, doc, _) = validate_json(&d, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["warnings"], 1, "{doc}");
    assert_eq!(doc["problems"][0]["code"], "secret");
    assert!(!doc.to_string().contains(key));
}
