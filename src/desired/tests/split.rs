//! Split reading (issue 14): the result never depends on the number of threads.

use super::*;

/// Group bodies, valid and not, some with lines at the group keys' indentation that are not
/// group keys (a flow list or a quoted key continued there).
const SPLIT_BODIES: &[&str] = &[
    "    members:\n      a: [1000]\n",
    "    members:\n      a: [1000, 500]\n      b: [1001]\n    marks:\n      1002: [c, d]\n",
    "    members:\n      a: [1000,\n  1001]\n",
    "    members:\n      a: [1000,\n        1001]\n",
    "    marks:\n      1000: [a,\n  b]\n",
    "    members:\n      \"a\n  b\": [1000]\n",
    "    members:\n      a: [999]\n",
    "    members:\n",
    "",
    "    members: {}\n",
    "  # a comment at the group indentation\n    members:\n      a: [1000]\n",
    "    members:\n      a: [1000]\n  -x: [1]\n",
    "    members:\n      név: [1000]\n",
];

/// Parses `doc` whole and split into chunks of about `chunk_bytes` in thread pools of 1, 2, 3, 4
/// and 8 threads, with and without the fast path: every result must be the whole-file one.
fn split_reads_like_whole(doc: &str, chunk_bytes: usize) -> Result<(), TestCaseError> {
    let path = Path::new(PATH);
    let whole = Split {
        threshold: usize::MAX,
        chunk_bytes,
    };
    let split = Split {
        threshold: 0,
        chunk_bytes,
    };
    for fast in [false, true] {
        let expected = parse_file_with(path, doc.as_bytes(), fast, whole, CAP);
        for threads in [1, 2, 3, 4, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| parse_file_with(path, doc.as_bytes(), fast, split, CAP));
            prop_assert_eq!(
                &got,
                &expected,
                "{} threads, chunks of {} bytes, fast {}:\n{}",
                threads,
                chunk_bytes,
                fast,
                doc
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn split_reading_equals_whole_reading_at_every_thread_count(
        bodies in prop::collection::vec((0..SPLIT_BODIES.len(), 0u8..8), 2..12),
        chunk_bytes in prop_oneof![1usize..200, Just(usize::MAX)],
    ) {
        let mut doc = String::from("groups:\n");
        for (i, (body, name)) in bodies.iter().enumerate() {
            let _ = write!(doc, "  \"@TGS#g{}\":\n{}", if *name == 0 { 0 } else { i }, SPLIT_BODIES[*body]);
        }
        split_reads_like_whole(&doc, chunk_bytes)?;
    }
}

/// The case found by hand: a flow list continued at the group indentation, in a file split in
/// two chunks (which only 2 threads did with the old thread-count-based chunk size).
#[test]
fn a_flow_list_continued_at_the_group_indentation_reads_the_same_split() {
    let mut doc = String::from("groups:\n");
    for g in 0..8 {
        let _ = write!(doc, "  g{g}:\n    members:\n      a: [1000,\n  1001]\n");
    }
    for chunk_bytes in [1, 40, 100, usize::MAX] {
        split_reads_like_whole(&doc, chunk_bytes).unwrap();
    }
}
