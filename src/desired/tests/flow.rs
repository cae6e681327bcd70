//! The flow layout (one JSON or YAML flow mapping) against the full reader.

use super::*;

/// Both readers on a flow `doc`; panics if they disagree where the flow reader answered.
fn compare_flow(doc: &str) -> bool {
    let path = Path::new(PATH);
    let full = parse_text(path, doc, doc, 0, false, CAP);
    match fast::parse_flow(path, doc) {
        None => false,
        Some((file, declared)) => {
            assert_eq!(Ok(file), full.0, "flow and full readers differ on:\n{doc}");
            assert_eq!(declared, full.1, "declared keys differ on:\n{doc}");
            true
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Where the flow reader answers, it answers like the full reader; on clean files written as
    /// JSON or as YAML flow with plain words it always answers.
    #[test]
    fn flow_path_reads_like_the_full_reader(file in gen_file(), json in any::<bool>()) {
        let doc = file.render_flow(json);
        let answered = compare_flow(&doc);
        let plain_keys = file.groups.iter().all(|g| matches!(g.style, KeyStyle::Plain));
        if file.is_clean() && (json || plain_keys) {
            prop_assert!(answered, "the flow reader gave up on a clean file:\n{}", doc);
        }
    }
}

/// Flow inputs the fast reader must leave to the full reader.
const FLOW_FALLBACKS: &[(&str, &str)] = &[
    ("null groups", "{\"groups\": null}"),
    (
        "trailing comma",
        "{\"groups\": {\"g\": {\"members\": {\"a\": [1000,]}}}}",
    ),
    ("escape", "{\"groups\": {\"g\\u0041\": {}}}"),
    ("single quotes", "{'groups': {}}"),
    ("comment", "{\"groups\": {}} # x"),
    ("tab", "{\"groups\":\t{}}"),
    ("CRLF", "{\"groups\": {\r\n}}"),
    (
        "quoted mark",
        "{\"groups\": {\"g\": {\"members\": {\"a\": [\"1000\"]}}}}",
    ),
    ("null account", "{groups: {g: {marks: {1000: [null]}}}}"),
    ("plain key without space", "{groups: {g:{}}}"),
    (
        "two accounts run together",
        "{\"groups\": {\"g\": {\"marks\": {\"1000\": [alice\n bob]}}}}",
    ),
    (
        "full-width comma",
        "{\"groups\": {\"g\": {\"marks\": {\"1000\": [\"alice，bob\"]}}}}",
    ),
    (
        "dot first plain account",
        "{groups: {g: {marks: {1000: [.inf]}}}}",
    ),
    (
        "plain null account",
        "{groups: {g: {marks: {1000: [Null]}}}}",
    ),
    ("unknown key", "{\"groups\": {\"g\": {\"memebrs\": {}}}}"),
    ("second top-level key", "{\"groups\": {}, \"x\": 1}"),
    ("anchor", "{\"groups\": {\"g\": &a {}}}"),
    ("non-ASCII group", "{\"groups\": {\"群\": {}}}"),
    ("duplicate group", "{\"groups\": {\"g\": {}, g: {}}}"),
    ("content after", "{\"groups\": {}}\n{}"),
];

#[test]
fn the_flow_path_leaves_tricky_inputs_to_the_full_reader() {
    for (what, doc) in FLOW_FALLBACKS {
        assert!(
            fast::parse_flow(Path::new(PATH), doc).is_none(),
            "{what}: the flow reader answered on:\n{doc}"
        );
    }
}

#[test]
fn the_flow_path_reads_one_line_json_like_the_full_reader() {
    let mut doc = String::from("{\"groups\": {");
    for g in 0..200 {
        if g > 0 {
            doc.push_str(", ");
        }
        let _ = write!(
            doc,
            "\"@TGS#g{g:03}\": {{\"members\": {{\"007\": [1000, 500], \"u{g}\": [1001]}}, \"marks\": {{\"1002\": [\"0x1F\", \"y\"]}}}}"
        );
    }
    doc.push_str("}}");
    assert!(compare_flow(&doc));
    // Pretty-printed, and as YAML flow with plain words.
    let pretty = doc.replace(", \"@", ",\n  \"@");
    assert!(compare_flow(&pretty));
    assert!(compare_flow(
        "{groups: {g1: {members: {007: [1000], y: [500]}, marks: {1001: [no, 0x1F]}}}}\n"
    ));
    // Unusual accounts: the full reader's warnings, at the same places.
    let doc = "{\"groups\": {\"g\": {\"marks\": {\"1001\": [\"a.b\", \"név\"]}, \"members\": {\"név\": [1000]}}}}";
    let (file, _) = fast::parse_flow(Path::new(PATH), doc).expect("read");
    assert_eq!(file.warnings.len(), 2);
    assert!(compare_flow(doc));
    assert!(compare_flow("{groups: {g: {marks: {1001: [+86, 张三]}}}}"));
}

/// A one-line file of many groups: each group's origin keeps a window of the line, not a copy of
/// it (the copies took 6 GB for a 620 KB file), with the full reader and with the flow reader.
#[test]
fn one_line_files_keep_windows_not_copies_of_the_line() {
    let mut doc = String::from("{\"groups\": {");
    for g in 0..5000 {
        if g > 0 {
            doc.push_str(", ");
        }
        let _ = write!(
            doc,
            "\"@TGS#g{g:05}\": {{\"members\": {{\"u{g}\": [1000]}}}}"
        );
    }
    doc.push_str("}}\n");
    let escaped = doc.replacen("\"u0\"", "\"\\u0075\"", 1);
    let path = Path::new("a.json");
    for (reader, text) in [("flow", &doc), ("full", &escaped)] {
        let file =
            parse_file_with(path, text.as_bytes(), reader == "flow", SPLIT, CAP).expect("valid");
        assert_eq!(file.groups.len(), 5000);
        let longest = file
            .groups
            .iter()
            .map(|g| g.1.source_line.len())
            .max()
            .unwrap();
        assert!(
            longest < 300,
            "{reader}: an origin holds {longest} bytes of the line"
        );
        let last = &file.groups[4999].1;
        let caret = (last.column - 1 - last.source_offset) as usize;
        let under: String = last.source_line.chars().skip(caret).take(13).collect();
        assert_eq!(under, "\"@TGS#g04999\"", "{reader}");
    }
    // Both readers agree on the clean file.
    assert!(compare_flow(&doc));
}
