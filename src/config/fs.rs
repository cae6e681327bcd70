//! Reading the config and callback token files: the config module's only I/O.

use std::path::Path;

use super::Config;
use super::parse_bytes;
use crate::diag::{Diagnostic, Diagnostics};

/// Reads and checks the config file.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let bytes = crate::input::read_regular(path, crate::input::MAX_CONFIG_BYTES).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "config file not found (pass -c FILE or set MARKSYNC_CONFIG)".to_string()
        } else {
            format!("cannot read config file: {e}")
        };
        Diagnostics(vec![Diagnostic::file_error(path, what)])
    })?;
    let config = parse_bytes(path, &bytes)?;
    match state_inside_desired(&config) {
        None => Ok(config),
        Some(message) => {
            // `parse_bytes` accepted the bytes as UTF-8. Point at the `state` key when it is
            // written at the start of a line (else `desired`, for the default state path).
            let text = String::from_utf8_lossy(&bytes);
            let line = ["state:", "desired:"].iter().find_map(|key| {
                text.lines()
                    .position(|l| l.starts_with(key))
                    .map(|i| i as u64 + 1)
            });
            let d = match line {
                Some(line) => Diagnostic::at(path, &text, line, 1, message),
                None => Diagnostic::file_error(path, message),
            };
            Err(Diagnostics(vec![d]))
        }
    }
}

/// Why the state path is unusable beside the desired path, if it is: the state file (where the
/// path itself is, and the file it stands for when it is a symbolic link), its `.bak`, intents
/// sidecar, lock and temporary files must not be inside the desired directory (or be the desired
/// file), or the desired reader would read marksync's own files as desired marks. Paths are
/// compared resolved (symbolic links followed where they exist).
fn state_inside_desired(config: &Config) -> Option<String> {
    use crate::state::{backup_path, intents_path, lock_path, target};
    let super::Location::File(state) = &config.state else {
        return None;
    };
    let desired = target(&config.desired).ok()?;
    // The path's own place (its directory resolved), and the file it stands for.
    let place = match (state.parent(), state.file_name()) {
        (Some(dir), Some(name)) => target(dir).ok().map(|d| d.join(name)),
        _ => None,
    };
    let real = target(state).ok();
    let hit = place.iter().chain(real.iter()).find(|p| {
        [
            p.to_path_buf(),
            backup_path(p),
            intents_path(p),
            lock_path(p),
        ]
        .iter()
        .any(|f| f.starts_with(&desired))
    })?;
    let through = match &real {
        Some(r) if r == hit && Some(r) != place.as_ref() => {
            format!(" (through a symbolic link, {})", r.display())
        }
        _ => String::new(),
    };
    let shown = config.desired.display();
    Some(if desired.is_dir() {
        format!(
            "`state` {}{through} is inside the directory of `desired` ({shown}): the desired \
             reader would take the state and its .bak, .intents and .lock files for desired \
             files, and replacing the desired tree (a checkout, a ConfigMap update) would take \
             them away. Move the state outside {shown}",
            state.display()
        )
    } else {
        format!(
            "`state` {}{through} is the file of `desired` ({shown}) or beside it under a \
             sidecar's name: marksync would overwrite desired marks with its state. Give the \
             state another path",
            state.display()
        )
    })
}

/// Reads the callback token file: a regular file of at most [`crate::input::MAX_TOKEN_BYTES`],
/// one line, no byte-order mark or quotes (surrounding whitespace trimmed), printable ASCII. The
/// error names the file and the rule, never the token.
pub fn read_callback_token(path: &Path) -> Result<String, String> {
    let bytes = crate::input::read_regular(path, crate::input::MAX_TOKEN_BYTES).map_err(|e| {
        format!(
            "cannot read the callback token file {}: {e}",
            path.display()
        )
    })?;
    let token = crate::input::secret_line(&bytes)
        .map_err(|p| format!("the callback token file {} {p}", path.display()))?;
    if let Some(i) = token.chars().position(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the callback token file {} contains a space or a non-printable or non-ASCII \
             character (character {}); the token is printable ASCII without spaces",
            path.display(),
            i + 1
        ));
    }
    Ok(token.to_owned())
}

/// The warning to log when the callback token file is loose by the secret key file's rule
/// (`tim::usersig::loose_mode`: readable by others or a foreign group, writable by anyone but
/// its owner); `None` otherwise. Not for the systemd credential directory, whose modes systemd sets.
pub fn callback_token_permission_warning(path: &Path) -> Option<String> {
    let mode = crate::tim::usersig::loose_mode(path)?;
    Some(format!(
        "the callback token file {} is readable by others or by a group that is not this \
         process's own, or writable by its group (mode {mode:03o}); restrict it with chmod 600 (or 0440 with marksync's own group)",
        path.display()
    ))
}
