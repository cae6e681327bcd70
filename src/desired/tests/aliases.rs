//! The pairs aliases add, capped across all files (issue 14).

use super::*;

/// A file whose group `id` has `members` members sharing one anchored list of 10 marks: the
/// first list is written out, each of the other `members - 1` adds 10 pairs through its alias.
fn aliased_marks(id: &str, members: usize) -> String {
    let mut doc = format!("groups:\n  \"{id}\":\n    members:\n      u0: &m [");
    let marks: Vec<String> = (1000..1010).map(|m| m.to_string()).collect();
    doc.push_str(&marks.join(", "));
    doc.push_str("]\n");
    for i in 1..members {
        let _ = writeln!(doc, "      u{i}: *m");
    }
    doc
}

#[test]
fn the_pairs_aliases_add_are_counted_whatever_the_alias() {
    let path = Path::new(PATH);
    let count = |doc: &str| {
        crate::desired::parse_file(path, doc.as_bytes(), CAP)
            .unwrap_or_else(|e| panic!("{e:#?}\n{doc}"))
            .alias_pairs
    };
    assert_eq!(count(&aliased_marks("g", 5)), 40);
    // Written out: nothing added.
    for written_out in [
        "groups:\n  g:\n    members:\n      a: [1000, 1001]\n",
        "groups:\n  g:\n    members:\n      a:\n        - 1000\n        - 1001\n    marks:\n      1002:\n        - b\n",
        "{\"groups\": {\"g\": {\"members\": {\"\\u0061\": [1000]}, \"marks\": {\"1001\": [\"b\"]}}}}",
        "groups:\n  g: &unused\n    members: {a: [1000]}\n",
    ] {
        assert_eq!(count(written_out), 0, "{written_out}");
    }
    // A whole group, a merged section, a list of accounts and one account through aliases.
    let doc = "groups:\n  t: &t\n    members:\n      a: [1000, 1001]\n  u: *t\n  v:\n    <<: *t\n  w:\n    marks:\n      1000: &who [b, c, d]\n      1001: *who\n      1002: [&x e]\n      1003: [*x]\n";
    assert_eq!(count(doc), 2 + 2 + 3 + 1);
}

#[test]
fn aliases_over_the_cap_across_files_are_an_error_naming_each_file() {
    // Three files, each adding 40 pairs, under a cap of 100 each but 120 together.
    let files: Vec<(std::path::PathBuf, DesiredFile)> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let path = Path::new("desired").join(format!("{name}.yaml"));
            let doc = aliased_marks(&format!("@TGS#{name}"), 5);
            let file =
                crate::desired::parse_file(&path, doc.as_bytes(), 100).expect("under the cap");
            assert_eq!(file.alias_pairs, 40);
            (path, file)
        })
        .collect();
    assert!(crate::desired::assemble(files.clone(), 120).is_ok());
    let errors = crate::desired::assemble(files, 100)
        .expect_err("120 pairs over a cap of 100")
        .0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let message = &errors[0].message;
    for name in [
        "desired/a.yaml adds 40",
        "desired/b.yaml adds 40",
        "desired/c.yaml adds 40",
    ] {
        assert!(message.contains(name), "{message}");
    }
    assert!(
        message.contains("add 120 (account, mark) pairs"),
        "{message}"
    );
    assert!(
        message.contains("`max_alias_pairs` allows (100)"),
        "{message}"
    );
}

#[test]
fn one_file_over_the_cap_stops_reading_at_the_alias_that_goes_over() {
    let doc = aliased_marks("g", 6);
    let path = Path::new(PATH);
    assert_eq!(
        crate::desired::parse_file(path, doc.as_bytes(), 50)
            .expect("50 pairs")
            .alias_pairs,
        50
    );
    let errors = crate::desired::parse_file(path, doc.as_bytes(), 49).expect_err("over the cap");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .message
            .contains("add more than 49 (account, mark) pairs"),
        "{errors:#?}"
    );
    // Stopped at the last member's alias, the one that went over.
    assert_eq!(errors[0].line, 9, "{errors:#?}");
    // A cap of 0: no alias may add a pair.
    assert!(crate::desired::parse_file(path, doc.as_bytes(), 0).is_err());
    assert!(
        crate::desired::parse_file(path, aliased_marks("g", 1).as_bytes(), 0).is_ok(),
        "an anchor that is never used adds nothing"
    );
}
