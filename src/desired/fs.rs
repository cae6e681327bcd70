//! Finding and reading desired files: the desired module's only I/O.

use super::*;

/// Loads the desired state from a directory (recursively: `*.yaml`, `*.yml` and `*.json` in any
/// case, names starting with a dot skipped, symlinks followed) or from a single file. Aliases
/// may add at most `max_alias_pairs` pairs across all the files (the config's key).
pub fn load(path: &Path, max_alias_pairs: usize) -> Result<DesiredState, Diagnostics> {
    load_seeing(path, max_alias_pairs, &|_, _| {})
}

/// [`load`], showing `seen` the bytes of every file it read, as read: what is digested (a saved
/// plan's check) is then exactly what is parsed, from one read.
pub fn load_seeing(
    path: &Path,
    max_alias_pairs: usize,
    seen: &(dyn Fn(&Path, &[u8]) + Sync),
) -> Result<DesiredState, Diagnostics> {
    let (files, mut diags) = discover(path);
    type Read = (PathBuf, ParseResult, Vec<Declared>, Vec<u8>);
    let parsed: Vec<Read> = files
        .into_par_iter()
        .map(|file| match read_file(&file) {
            Ok(bytes) => {
                seen(&file, &bytes);
                match parse_file_declaring(&file, &bytes, max_alias_pairs) {
                    (Ok(f), _) => (file, Ok(f), Vec::new(), Vec::new()),
                    // What it declares all the same (and its text), for conflicts with other
                    // files.
                    (Err(d), declared) => (file, Err(d), declared, bytes),
                }
            }
            Err(d) => (file, Err(vec![d]), Vec::new(), Vec::new()),
        })
        .collect();
    if parsed.iter().any(|p| !p.2.is_empty()) {
        let loaded: Vec<(&Path, Loaded<'_>)> = parsed
            .iter()
            .map(|(path, result, declared, bytes)| match result {
                Ok(f) => (path.as_path(), Loaded::Parsed(f)),
                Err(_) => (path.as_path(), Loaded::Failed(declared, bytes)),
            })
            .collect();
        diags.extend(conflicts_with_failed(&loaded));
    }
    let mut ok = Vec::with_capacity(parsed.len());
    for (path, result, _, _) in parsed {
        match result {
            Ok(f) => ok.push((path, f)),
            Err(mut d) => diags.append(&mut d),
        }
    }
    match assemble(ok, max_alias_pairs) {
        Ok(state) if diags.iter().all(|d| !d.is_error()) => Ok(state),
        Ok(_) => {
            crate::diag::sort(&mut diags);
            Err(Diagnostics(diags))
        }
        Err(Diagnostics(mut more)) => {
            diags.append(&mut more);
            crate::diag::sort(&mut diags);
            Err(Diagnostics(diags))
        }
    }
}

/// Reads one desired file, refusing anything that is not a regular file of bounded size.
pub fn read_file(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    crate::input::read_regular(path, crate::input::MAX_DESIRED_BYTES)
        .map_err(|e| io_diag(path, "cannot read", &e))
}

fn io_diag(path: &Path, what: &str, e: &io::Error) -> Diagnostic {
    let detail = if e.raw_os_error() == Some(40) {
        // ELOOP
        "symlink loop".to_string()
    } else {
        e.to_string()
    };
    Diagnostic::file_error(path, format!("{what}: {detail}"))
}

/// Lists the desired files under `root` in sorted order, with a diagnostic for anything that
/// cannot be walked (missing root, unreadable directory, symlink loop).
pub fn discover(root: &Path) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    match std::fs::metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            diags.push(Diagnostic::file_error(
                root,
                "the desired path does not exist (a missing directory is an error, never \"no groups\")",
            ));
        }
        Err(e) => diags.push(io_diag(root, "cannot read the desired path", &e)),
        Ok(meta) if meta.is_dir() => {
            let mut ancestors = Vec::new();
            walk(root, &mut ancestors, &mut files, &mut diags);
            if files.is_empty() && diags.is_empty() {
                // Most likely a checkout or mount in progress, or the wrong path: never "clear
                // everything". To desire no marks at all, commit a file with `groups: {}`.
                diags.push(Diagnostic::file_error(
                    root,
                    "the desired directory holds no *.yaml, *.yml or *.json files; to desire no marks at all, add a file with `groups: {}`",
                ));
            }
        }
        Ok(_) => files.push(root.to_path_buf()),
    }
    files.sort();
    (files, diags)
}

fn walk(
    dir: &Path,
    ancestors: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
) {
    let canonical = match std::fs::canonicalize(dir) {
        Ok(c) => c,
        Err(e) => {
            diags.push(io_diag(dir, "cannot read directory", &e));
            return;
        }
    };
    if ancestors.contains(&canonical) {
        diags.push(Diagnostic::file_error(
            dir,
            format!(
                "symlink loop: this leads back to {}, which is already being read",
                canonical.display()
            ),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(io_diag(dir, "cannot read directory", &e));
            return;
        }
    };
    ancestors.push(canonical);
    let mut children: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    children.push(entry.path());
                }
            }
            Err(e) => diags.push(io_diag(dir, "cannot read directory", &e)),
        }
    }
    children.sort();
    for child in children {
        match std::fs::metadata(&child) {
            Ok(m) if m.is_dir() => walk(&child, ancestors, files, diags),
            Ok(_) if is_desired_name(&child) => files.push(child),
            Ok(_) => {}
            // A dangling or looping symlink named like a desired file is an error: it may be the
            // file that holds a group's marks.
            Err(e) if is_desired_name(&child) && e.kind() == io::ErrorKind::NotFound => {
                let detail = match std::fs::read_link(&child) {
                    Ok(target) => format!(
                        "cannot read: it is a symlink to {}, which does not exist",
                        target.display()
                    ),
                    Err(_) => format!("cannot read: {e}"),
                };
                diags.push(Diagnostic::file_error(&child, detail));
            }
            Err(e) if is_desired_name(&child) => diags.push(io_diag(&child, "cannot read", &e)),
            Err(e) if e.raw_os_error() == Some(40) => {
                diags.push(io_diag(&child, "cannot read", &e))
            }
            Err(_) => {}
        }
    }
    ancestors.pop();
}

/// Whether a path names a desired file: `*.yaml`, `*.yml` or `*.json`, in any case (`a.YAML`
/// and `b.Yml` are desired files too: skipping them would clear their groups' marks).
pub fn is_desired_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["yaml", "yml", "json"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}
