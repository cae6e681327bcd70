//! Reading an input file (config, secret key, callback token, desired file, state) the one safe
//! way: a regular file only, and never more than a stated number of bytes.
//!
//! A FIFO would block the reader forever and `/dev/zero` would fill memory; both are refused
//! before a byte is read. The caller names the limit, so every kind of input has its own.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The largest config file read (it is a few hundred bytes in practice).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest secret key file read (the console's key is 64 hex digits).
pub const MAX_SECRET_BYTES: u64 = 4 << 10;
/// The largest callback token file read.
pub const MAX_TOKEN_BYTES: u64 = 4 << 10;
/// The largest desired file read (a million pairs in block YAML is about 30 MB).
pub const MAX_DESIRED_BYTES: u64 = 512 << 20;
/// The largest state or intents file read (a million marks is about 40 MB).
pub const MAX_STATE_BYTES: u64 = 1 << 30;

/// Reads all of `path`, refusing anything but a regular file (symlinks to one are followed) and
/// anything longer than `max_bytes`. The errors say which rule was broken, in the user's terms.
pub fn read_regular(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    // Stat before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path)?;
    check_meta(&meta, max_bytes)?;
    let file = File::open(path)?;
    // The path may have been swapped between the stat and the open: check what was opened.
    let meta = file.metadata()?;
    check_meta(&meta, max_bytes)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(max_bytes));
    }
    Ok(bytes)
}

/// Why the text of a one-line secret (the secret key, the callback token) cannot be used as it is.
/// No variant carries any part of the text: a secret must never reach an error message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretTextProblem {
    /// Editors on Windows add one; it would become the first three bytes of the secret.
    #[error("starts with a UTF-8 byte-order mark (save it without one)")]
    ByteOrderMark,
    /// Bytes that are not UTF-8 text.
    #[error("is not UTF-8 text")]
    NotUtf8,
    /// Nothing but whitespace.
    #[error("is empty")]
    Empty,
    /// A line break inside the text: two values, or a value and a comment.
    #[error("contains a second line (it must be one line)")]
    SecondLine,
    /// `"..."` or `'...'`: the quotes would become part of the secret.
    #[error("is wrapped in quotes (write the value alone, without quotes)")]
    Quoted,
}

/// The one line of a secret read from a file or the environment: surrounding ASCII whitespace
/// (the trailing newline of `echo >`) is trimmed; a byte-order mark, non-UTF-8 bytes, an empty
/// value, a second line or surrounding quotes are refused, because each would otherwise be hashed
/// into a secret the service does not know and fail much later with an opaque code.
pub fn secret_line(bytes: &[u8]) -> Result<&str, SecretTextProblem> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(SecretTextProblem::ByteOrderMark);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SecretTextProblem::NotUtf8)?;
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() {
        return Err(SecretTextProblem::Empty);
    }
    if text.contains(['\n', '\r']) {
        return Err(SecretTextProblem::SecondLine);
    }
    let quoted = |q: char| text.starts_with(q) || text.ends_with(q);
    if quoted('"') || quoted('\'') {
        return Err(SecretTextProblem::Quoted);
    }
    Ok(text)
}

fn check_meta(meta: &std::fs::Metadata, max_bytes: u64) -> io::Result<()> {
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory, not a regular file"
        } else {
            "not a regular file (a FIFO, socket or device cannot be read safely)"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    }
    if meta.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    Ok(())
}

fn too_large(max_bytes: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the limit of {}", human_bytes(max_bytes)),
    )
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(read_regular(&p, 3).unwrap(), b"abc");
        let e = read_regular(&p, 2).unwrap_err();
        assert_eq!(e.to_string(), "larger than the limit of 2 bytes");
    }

    #[test]
    fn refuses_directories_devices_and_fifos_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = read_regular(&fifo, 10).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn secret_line_trims_ascii_whitespace_and_refuses_what_would_change_the_secret() {
        use SecretTextProblem::*;
        assert_eq!(secret_line(b"abc\n"), Ok("abc"));
        assert_eq!(secret_line(b" \tabc \r\n"), Ok("abc"));
        assert_eq!(secret_line(b"a-b_c.d"), Ok("a-b_c.d"));
        for (input, problem) in [
            (&b"\xEF\xBB\xBFabc"[..], ByteOrderMark),
            (b"\xff\xfeabc", NotUtf8),
            (b"", Empty),
            (b" \n\n", Empty),
            (b"abc\ndef\n", SecondLine),
            (b"abc\rdef", SecondLine),
            (b"\"abc\"", Quoted),
            (b"'abc'\n", Quoted),
            (b"abc\"", Quoted),
        ] {
            assert_eq!(secret_line(input), Err(problem), "{input:?}");
        }
    }
}
