//! No input may panic the desired-file reader (issue 7): property tests over arbitrary text and
//! over mutations of a valid file (bytes flipped, inserted, deleted, lines swapped), in YAML and
//! JSON. Each also checks that what is reported stays proportional to the input: at most the
//! capped number of diagnostics per file, each quoting a bounded window of its line.

use std::path::Path;

use marksync::desired::parse_file;
use proptest::prelude::*;

const SEED_YAML: &str = "# roster\ngroups:\n  \"@TGS#a6I4ZUUGO\":\n    members:\n      teacher10: [1000]\n      007: [500, 1000]\n    marks:\n      1001: [student9, y, 0x1F]\n  g2: &t\n    members:\n      a: [600]\n  g3:\n    <<: *t\n";
const SEED_JSON: &str = "{\"groups\": {\"@TGS#a\": {\"members\": {\"007\": [1000, 500]}, \"marks\": {\"1001\": [\"alice\", \"bob\"]}}}}\n";

/// Fragments that stress YAML's corners when spliced into a file.
const FRAGMENTS: &[&str] = &[
    "---",
    "...",
    "<<",
    "*t",
    "&t",
    "!!str",
    "!foo",
    "~",
    "null",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "'",
    "|",
    ">",
    "#",
    "\t",
    "\r",
    "\n",
    "\u{feff}",
    "\u{ff0c}",
    "\u{3000}",
    "\u{200b}",
    "? ",
    "- ",
    "%YAML 1.2",
    "0x3E8",
    "1e3",
    ".inf",
    "99999999999999999999999",
];

/// Phrases of the parser library's own messages (its types, API and policies), which must never
/// reach users.
const LIBRARY_WORDING: &[&str] = &[
    "budget breached",
    "from_str",
    "Option<",
    "deserialize",
    "invalid type",
    "invalid value",
    "policy",
    "serde",
    "tagged scalar",
    "Depth {",
    // Issue 14: the parser's own wording.
    "did not find expected",
    "may not precede",
    "misplaced bracket",
    "recursion limit",
    "simple key",
    "tabs disallowed",
    "surrogate without",
    "BOM must not",
    "implicit flow mapping",
    "from_str_multiple",
];

/// Parses `text` as `name` and checks the output is bounded; panics propagate to proptest.
fn check(name: &str, text: &[u8]) {
    let path = Path::new(name);
    if let Err(errors) = parse_file(path, text, marksync::desired::DEFAULT_MAX_ALIAS_PAIRS) {
        assert!(!errors.is_empty(), "an error without a diagnostic");
        assert!(
            errors.len() <= 101,
            "{} diagnostics for one file",
            errors.len()
        );
        for e in &errors {
            for phrase in LIBRARY_WORDING {
                assert!(
                    !e.message.contains(phrase),
                    "library wording reached the user: {}",
                    e.message
                );
            }
            let shown = e.to_string();
            // A window of about a hundred characters plus the message, never the whole line.
            assert!(
                shown.chars().count() < 2000,
                "diagnostic of {} chars",
                shown.len()
            );
        }
    }
}

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    SwapLines(usize, usize),
}

fn apply(seed: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for edit in edits {
        let n = bytes.len().max(1);
        match *edit {
            Edit::Flip(at, b) => {
                if !bytes.is_empty() {
                    bytes[at % n] = b;
                }
            }
            Edit::Insert(at, f) => {
                let at = (at % n).min(bytes.len());
                let frag = FRAGMENTS[f % FRAGMENTS.len()].as_bytes();
                bytes.splice(at..at, frag.iter().copied());
            }
            Edit::Delete(at, len) => {
                let at = (at % n).min(bytes.len());
                let end = (at + len % 8).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::SwapLines(a, b) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let k = lines.len();
                lines.swap(a % k, b % k);
                bytes = lines.join("\n").into_bytes();
            }
        }
    }
    bytes
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Flip(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, f)| Edit::Insert(a, f)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, l)| Edit::Delete(a, l)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_desired_text_panics_arbitrary_strings(text in "(?s).{0,400}") {
        check("a.yaml", text.as_bytes());
        check("a.json", text.as_bytes());
    }

    #[test]
    fn no_desired_text_panics_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check("a.yaml", &bytes);
    }

    #[test]
    fn no_desired_text_panics_mutated_yaml(edits in prop::collection::vec(edit(), 1..6)) {
        check("a.yaml", &apply(SEED_YAML, &edits));
    }

    #[test]
    fn no_desired_text_panics_mutated_json(edits in prop::collection::vec(edit(), 1..6)) {
        check("a.json", &apply(SEED_JSON, &edits));
    }
}

#[test]
fn the_seeds_are_valid() {
    assert!(parse_file(Path::new("a.yaml"), SEED_YAML.as_bytes(), 1_000_000).is_ok());
    assert!(parse_file(Path::new("a.json"), SEED_JSON.as_bytes(), 1_000_000).is_ok());
}
