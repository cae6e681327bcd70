//! Values from outside (a request, a callback), escaped for a log line.
//!
//! The text log format writes a field given with `%` and the message as they are: a newline and
//! an escape sequence in a request value would forge a whole log line. [`Escaped`] writes
//! control characters (newlines, ESC, DEL, C1 controls) and the bidirectional-override
//! characters as `\n`, `\u{1b}`, ..., and cuts the value at [`MAX_LOGGED_CHARS`].

use std::fmt;

/// A value from a request is cut to this many characters in a log line.
pub const MAX_LOGGED_CHARS: usize = 128;

/// A value from a request, for a log line: control and bidi characters escaped, cut at
/// [`MAX_LOGGED_CHARS`] characters (with `...` when cut).
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        let text = self.0.to_string();
        for (i, c) in text.chars().enumerate() {
            if i == MAX_LOGGED_CHARS {
                return f.write_str("...");
            }
            if c.is_control() || is_bidi_control(c) {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The characters that reorder how a terminal shows the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_values_cannot_break_a_line_or_drive_a_terminal() {
        let check = |raw: &str, logged: &str| assert_eq!(Escaped(raw).to_string(), logged);
        check(
            "Group.CallbackOnMemberStateChange",
            "Group.CallbackOnMemberStateChange",
        );
        check(
            "x\n2026-01-01T00:00:00Z  INFO marksync: all marks cleared",
            "x\\n2026-01-01T00:00:00Z  INFO marksync: all marks cleared",
        );
        check(
            "\u{1b}[2K\r\tok\u{7f}\u{85}",
            "\\u{1b}[2K\\r\\tok\\u{7f}\\u{85}",
        );
        check("a\u{202e}b", "a\\u{202e}b");
        check("帐号", "帐号");
        let long = "a".repeat(MAX_LOGGED_CHARS + 10);
        assert_eq!(
            Escaped(&long).to_string(),
            format!("{}...", "a".repeat(MAX_LOGGED_CHARS))
        );
    }
}
