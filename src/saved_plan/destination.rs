//! Where `plan --out` may write: a new file or a regular file that marksync does not read.

use std::io;
use std::path::{Path, PathBuf};

use super::SavedPlanError;

/// Whether `plan --out` may write `path`, checked before anything is written: a new file, or a
/// regular file that is none of `protected` (each a description and a path: the config, the
/// key, the token, the state and its sidecars) and lies outside the desired tree at
/// `desired_root`. A symbolic link, a directory, a FIFO, a device or a socket is refused, as is
/// a path that resolves (through links in its directories) to a protected file. Reads only
/// metadata.
pub fn check_destination(
    path: &Path,
    protected: &[(&str, PathBuf)],
    desired_root: &Path,
) -> Result<(), SavedPlanError> {
    use std::os::unix::fs::FileTypeExt as _;
    let refuse = |reason: String| SavedPlanError::Destination {
        path: path.into(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Ok(md) => {
            let t = md.file_type();
            let kind = if t.is_symlink() {
                Some("a symbolic link (marksync neither writes through nor replaces a link)")
            } else if t.is_dir() {
                Some("a directory")
            } else if t.is_fifo() {
                Some("a FIFO (named pipe)")
            } else if t.is_char_device() {
                Some("a character device")
            } else if t.is_block_device() {
                Some("a block device")
            } else if t.is_socket() {
                Some("a socket")
            } else {
                None
            };
            if let Some(kind) = kind {
                return Err(refuse(format!(
                    "it is {kind}, not a regular file; give the path of a new or regular file"
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SavedPlanError::Write {
                path: path.into(),
                source,
            });
        }
    }
    let Some(dest) = resolve(path) else {
        return Err(refuse(
            "its directory does not exist or cannot be resolved; create the directory or give \
             another path"
                .into(),
        ));
    };
    for (what, p) in protected {
        if resolve(p).is_some_and(|r| r == dest) {
            return Err(refuse(format!(
                "it is the {what} ({}); a saved plan never replaces it: give another path",
                p.display()
            )));
        }
    }
    if let Ok(root) = desired_root.canonicalize()
        && dest.starts_with(&root)
    {
        return Err(refuse(format!(
            "it is inside the desired files ({}); a plan there would replace or become a desired \
             file: write it outside that tree",
            desired_root.display()
        )));
    }
    // A desired file may be a link to a file outside the tree.
    let (files, _) = crate::desired::discover(desired_root);
    if let Some(file) = files.iter().find(|f| resolve(f).is_some_and(|r| r == dest)) {
        return Err(refuse(format!(
            "it is the desired file {}; a saved plan never replaces it: give another path",
            file.display()
        )));
    }
    Ok(())
}

/// Where `path` lives, links resolved: the whole path when it exists, else its directory
/// resolved and its name. `None` when neither resolves.
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(name))
}
