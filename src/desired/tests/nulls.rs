//! Nulls below `groups` (issue 14): a cut-off file must never read as an empty group.

use super::*;

/// A null below `groups`: the document, and the line, column and words of the error.
const NULLS: &[(&str, &str, u64, u64, &str)] = &[
    (
        "members: at the end of the file",
        "groups:\n  \"@TGS#class\":\n    members:",
        3,
        5,
        "`members` has no value: the file may be cut off; write `{}` to declare none",
    ),
    (
        "members: mid-file",
        "groups:\n  \"@TGS#a\":\n    members:\n    marks:\n      1000: [x]\n",
        3,
        5,
        "`members` has no value",
    ),
    (
        "marks: at the end of the file",
        "groups:\n  g:\n    members:\n      a: [1000]\n    marks:\n",
        5,
        5,
        "`marks` has no value: the file may be cut off; write `{}` to declare none",
    ),
    (
        "group key at the end of the file",
        "groups:\n  \"@TGS#class\":",
        2,
        3,
        "group \"@TGS#class\" has no value: the file may be cut off; write `{}` to declare a group without marks",
    ),
    (
        "group key mid-file",
        "groups:\n  g:\n  h:\n    members:\n      a: [1000]\n",
        2,
        3,
        "group \"g\" has no value",
    ),
    (
        "group ~",
        "groups:\n  \"@TGS#a\": ~\n",
        2,
        3,
        "group \"@TGS#a\" has no value",
    ),
    (
        "group null",
        "groups:\n  g: null\n  h: {}\n",
        2,
        3,
        "group \"g\" has no value",
    ),
    (
        "section ~",
        "groups:\n  g:\n    marks: ~\n",
        3,
        5,
        "`marks` has no value",
    ),
    (
        "null account list",
        "groups:\n  g:\n    marks:\n      1000:\n",
        4,
        7,
        "the accounts of mark 1000 have no value: the file may be cut off; write `[]` to declare none",
    ),
    (
        "null mark list",
        "groups:\n  g:\n    members:\n      alice:\n",
        4,
        7,
        "the marks of \"alice\" have no value: the file may be cut off; write `[]` to declare none",
    ),
    (
        "~ mark list",
        "groups:\n  g:\n    members:\n      alice: ~\n",
        4,
        7,
        "the marks of \"alice\" have no value",
    ),
    (
        "null mark in a list",
        "groups:\n  g:\n    members:\n      alice:\n        - 1000\n        -\n",
        6,
        10,
        "a mark has no value here",
    ),
    (
        "null merge",
        "groups:\n  g:\n    <<: ~\n    members: {}\n",
        3,
        5,
        "a merge key (`<<`) has no value",
    ),
    (
        "null in a merge list",
        "groups:\n  g:\n    <<: [~]\n    members: {}\n",
        3,
        10,
        "a merge key (`<<`) has no value",
    ),
    (
        "flow group null",
        "{groups: {g: null}}",
        1,
        11,
        "group \"g\" has no value",
    ),
    (
        "flow members null",
        "{\"groups\": {\"g\": {\"members\": null}}}",
        1,
        19,
        "`members` has no value",
    ),
];

#[test]
fn nulls_below_groups_are_errors_in_every_reader() {
    let path = Path::new(PATH);
    for (what, doc, line, column, words) in NULLS {
        for fast in [false, true] {
            let errors = match parse_file_with(path, doc.as_bytes(), fast, SPLIT, CAP) {
                Ok(file) => panic!("{what} (fast: {fast}): read as {file:?}"),
                Err(errors) => errors,
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.line == *line && e.column == *column && e.message.contains(words)),
                "{what} (fast: {fast}): expected {line}:{column} {words:?}, got {errors:#?}"
            );
        }
    }
}
