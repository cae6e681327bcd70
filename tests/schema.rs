//! The desired-file JSON Schema: the committed copy is the generated one, and it accepts what
//! marksync accepts (every example, valid corpus files) and refuses a typo such as `memebrs`.
//!
//! Validation uses the `jsonschema` crate (draft 2020-12), the validator editors' own stacks
//! agree with; the YAML is read into JSON with the same YAML library marksync uses.
//!
//! After an intended schema change, run `MARKSYNC_BLESS=1 cargo test --test schema` and review
//! the diff of `schema/desired.schema.json` in git.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&marksync::schema::desired_schema()).expect("the schema compiles")
}

/// A desired file as the JSON value an editor validates.
fn instance(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn errors(v: &jsonschema::Validator, value: &Value) -> Vec<String> {
    v.iter_errors(value).map(|e| e.to_string()).collect()
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = root().join("schema/desired.schema.json");
    let generated = marksync::schema::desired_schema_text();
    if std::env::var_os("MARKSYNC_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from `marksync schema`; run MARKSYNC_BLESS=1 cargo test --test schema and \
         review the diff",
        path.display()
    );
}

#[test]
fn every_example_and_valid_corpus_file_is_accepted() {
    let v = validator();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples/marks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for name in [
        "account_32_bytes_ok.yaml",
        "crlf_ok.yaml",
        "good_members_and_marks.yaml",
        "group_empty_ok.yaml",
        "groups_empty_ok.yaml",
        "json_ok.json",
    ] {
        files.push(root().join("tests/corpus/desired").join(name));
    }
    for file in files {
        let value = instance(&file);
        assert_eq!(
            errors(&v, &value),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
    }
}

#[test]
fn every_example_carries_the_schema_modeline() {
    for entry in std::fs::read_dir(root().join("examples/marks")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../../schema/desired.schema.json\n"),
            "{}",
            path.display()
        );
    }
}

#[test]
fn typos_and_values_marksync_refuses_are_refused() {
    let v = validator();
    let refused = [
        (
            "a misspelled section",
            r#"{"groups": {"g": {"memebrs": {"a": [1000]}}}}"#,
        ),
        ("an unknown top-level key", r#"{"groups": {}, "group": {}}"#),
        ("no groups key", r#"{}"#),
        ("null groups", r#"{"groups": null}"#),
        // A null below `groups` (a cut-off file) is refused too, never "none".
        ("a null group", r#"{"groups": {"g": null}}"#),
        ("a null members", r#"{"groups": {"g": {"members": null}}}"#),
        ("a null marks", r#"{"groups": {"g": {"marks": null}}}"#),
        (
            "a null mark list",
            r#"{"groups": {"g": {"members": {"a": null}}}}"#,
        ),
        (
            "mark 999",
            r#"{"groups": {"g": {"members": {"a": [999]}}}}"#,
        ),
        ("mark 0", r#"{"groups": {"g": {"members": {"a": [0]}}}}"#),
        (
            "mark 700",
            r#"{"groups": {"g": {"members": {"a": [700]}}}}"#,
        ),
        (
            "a mark past u32",
            r#"{"groups": {"g": {"members": {"a": [4294967296]}}}}"#,
        ),
        (
            "a fractional mark",
            r#"{"groups": {"g": {"members": {"a": [1000.5]}}}}"#,
        ),
        (
            "a string mark",
            r#"{"groups": {"g": {"members": {"a": ["1000"]}}}}"#,
        ),
        (
            "mark key 0x3E8",
            r#"{"groups": {"g": {"marks": {"0x3E8": ["a"]}}}}"#,
        ),
        (
            "mark key 999",
            r#"{"groups": {"g": {"marks": {"999": ["a"]}}}}"#,
        ),
        (
            "an account of 33 characters",
            r#"{"groups": {"g": {"marks": {"1000": ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}}}"#,
        ),
        (
            "an empty account",
            r#"{"groups": {"g": {"marks": {"1000": [""]}}}}"#,
        ),
        (
            "an account with a space",
            r#"{"groups": {"g": {"marks": {"1000": ["tom li"]}}}}"#,
        ),
        (
            "an account key with a space",
            r#"{"groups": {"g": {"members": {"tom li": [1000]}}}}"#,
        ),
        (
            "a group ID of 49 bytes",
            r#"{"groups": {"ggggggggggggggggggggggggggggggggggggggggggggggggg": {}}}"#,
        ),
        (
            "a group ID with a trailing space",
            r#"{"groups": {"g ": {}}}"#,
        ),
        ("a non-ASCII group ID", r#"{"groups": {"gé": {}}}"#),
    ];
    for (what, json) in refused {
        let value: Value = serde_json::from_str(json).unwrap();
        assert!(!v.is_valid(&value), "{what} was accepted: {json}");
    }
    // The typo's error names the key, so the editor can point at it.
    let typo: Value = serde_json::from_str(r#"{"groups": {"g": {"memebrs": {}}}}"#).unwrap();
    assert!(errors(&v, &typo).join("\n").contains("memebrs"));
}

/// Issue 16: a typo used to be reported as "is not valid under any of the given schemas" (an
/// `anyOf` that hid its branches' errors). Every misspelled or misplaced key is now named by an
/// error of its own, and no error is an `anyOf`/`oneOf` summary.
#[test]
fn a_misspelled_or_misplaced_key_is_named_and_no_error_hides_behind_any_of() {
    use jsonschema::error::ValidationErrorKind as Kind;
    let v = validator();
    let cases = [
        (
            "markz",
            r#"{"groups": {"g": {"members": {"a": {"markz": [1000]}}}}}"#,
        ),
        (
            "memberz",
            r#"{"groups": {"g": {"marks": {"1000": {"memberz": ["a"]}}}}}"#,
        ),
        (
            "accout",
            r#"{"groups": {"g": {"marks": {"1000": [{"accout": "a"}]}}}}"#,
        ),
        (
            "mark",
            r#"{"groups": {"g": {"members": {"a": [{"mark": 1000}]}}}}"#,
        ),
        ("memebrs", r#"{"groups": {"g": {"memebrs": {}}}}"#),
        ("sdkappid", r#"{"sdkappid": 1400000000, "groups": {}}"#),
    ];
    for (key, json) in cases {
        let value: Value = serde_json::from_str(json).unwrap();
        let errors: Vec<_> = v.iter_errors(&value).collect();
        let all = errors
            .iter()
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect::<Vec<_>>();
        assert!(
            errors.iter().any(|e| match e.kind() {
                Kind::AdditionalProperties { unexpected }
                | Kind::UnevaluatedProperties { unexpected } => unexpected == &[key.to_string()],
                _ => false,
            }),
            "{json}: no error names `{key}`: {all:?}"
        );
        assert!(
            !errors
                .iter()
                .any(|e| matches!(e.kind(), Kind::AnyOf { .. } | Kind::OneOfNotValid { .. })),
            "{json}: {all:?}"
        );
    }
    // A mark out of range says which marks there are, not "any of the given schemas".
    let low: Value =
        serde_json::from_str(r#"{"groups": {"g": {"members": {"a": [999]}}}}"#).unwrap();
    let text = errors(&v, &low).join("\n");
    assert!(text.contains("500") && text.contains("600"), "{text}");
    assert!(!text.contains("anyOf"), "{text}");
}
