//! Unit tests of `cmd`: the approval decision and reader.

use super::*;

#[test]
fn only_a_person_at_a_terminal_is_asked() {
    assert!(needs_approval(true, true, false));
    assert!(!needs_approval(true, true, true), "--auto-approve");
    assert!(!needs_approval(false, true, false), "stdin piped (CI)");
    assert!(!needs_approval(true, false, false), "stdout piped");
    assert!(!needs_approval(false, false, false), "systemd");
}

#[test]
fn only_yes_approves() {
    let ask = |input: &str| {
        let mut out = Vec::new();
        let ok = read_approval(&mut std::io::Cursor::new(input), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(APPROVAL_PROMPT), "{out}");
        ok
    };
    assert!(ask("yes\n"));
    assert!(ask("  yes  \n"));
    for no in ["", "y\n", "Yes\n", "no\n", "yes please\n", "\n"] {
        assert!(!ask(no), "{no:?}");
    }
}

#[test]
fn the_progress_rate_is_rounded() {
    assert_eq!(rate_text(68.1048), "68/s");
    assert_eq!(rate_text(199.6), "200/s");
    assert_eq!(rate_text(0.0), "0/s");
}
