//! The fast path on block files whose groups are each one flow mapping on the key's line
//! (`"@TGS#x": {members: {a: [1000]}}`), against the full reader.

use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;

use super::{fast, parse_text};

const PATH: &str = "desired/inline.yaml";

/// Both readers on `doc`; panics if they disagree where the fast path answered.
fn compare(doc: &str) -> bool {
    let path = Path::new(PATH);
    let full = parse_text(
        path,
        doc,
        doc,
        0,
        false,
        crate::desired::DEFAULT_MAX_ALIAS_PAIRS,
    );
    match fast::parse(path, doc, 0) {
        None => false,
        Some((file, declared)) => {
            assert_eq!(Ok(file), full.0, "fast and full readers differ on:\n{doc}");
            assert_eq!(declared, full.1, "declared keys differ on:\n{doc}");
            true
        }
    }
}

const ACCOUNTS: &[&str] = &[
    "alice", "bob", "007", "0x1F", "y", "név", "\"a.b\"", "\"c d\"",
];
const MARKS: &[&str] = &["500", "600", "1000", "1001", "999", "01000"];

fn group() -> impl Strategy<Value = String> {
    let entries = |keys: &'static [&'static str], items: &'static [&'static str]| {
        prop::collection::vec(
            (
                prop::sample::select(keys),
                prop::collection::vec(prop::sample::select(items), 0..3),
            ),
            0..4,
        )
    };
    (
        prop::option::of(entries(ACCOUNTS, MARKS)),
        prop::option::of(entries(MARKS, ACCOUNTS)),
        any::<bool>(),
    )
        .prop_map(|(members, marks, marks_first)| {
            let render = |name: &str, entries: &[(&str, Vec<&str>)]| {
                let body: Vec<String> = entries
                    .iter()
                    .map(|(k, items)| format!("{k}: [{}]", items.join(", ")))
                    .collect();
                format!("{name}: {{{}}}", body.join(", "))
            };
            let mut sections = Vec::new();
            if let Some(m) = &members {
                sections.push(render("members", m));
            }
            if let Some(m) = &marks {
                sections.push(render("marks", m));
            }
            if marks_first {
                sections.reverse();
            }
            format!("{{{}}}", sections.join(", "))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Where the fast path answers, it answers like the full reader; on files without anything
    /// to report it answers.
    #[test]
    fn inline_groups_read_like_the_full_reader(groups in prop::collection::vec(group(), 1..5)) {
        let mut doc = String::from("groups:\n");
        for (i, g) in groups.iter().enumerate() {
            let _ = writeln!(doc, "  \"@TGS#g{i}\": {g}");
        }
        let answered = compare(&doc);
        let clean = !doc.contains("999") && !doc.contains("01000") && !doc.contains("\"c d\"");
        let full = parse_text(Path::new(PATH), &doc, &doc, 0, false, crate::desired::DEFAULT_MAX_ALIAS_PAIRS).0;
        if clean && full.is_ok() {
            prop_assert!(answered, "the fast path gave up on:\n{}", doc);
        }
    }
}

#[test]
fn inline_groups_with_anything_after_them_are_left_to_the_full_reader() {
    for doc in [
        "groups:\n  \"@TGS#a\": {members: {alice: [1000]}} # note\n",
        "groups:\n  \"@TGS#a\": {members: {alice: [1000]}}\n    marks: {}\n",
        "groups:\n  \"@TGS#a\": {}\n    members:\n      alice: [1000]\n",
        "groups:\n  \"@TGS#a\": {members: {alice: [1000]},\n    marks: {}}\n",
    ] {
        assert!(fast::parse(Path::new(PATH), doc, 0).is_none(), "{doc}");
    }
    assert!(compare(
        "groups:\n  \"@TGS#a\": {members: {alice: [1000]}}\n  '@TGS#b':  {marks: {\"1001\": [\"név\"]}}\n  c: {}\n"
    ));
}
