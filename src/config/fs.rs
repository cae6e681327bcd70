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
    parse_bytes(path, &bytes)
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

/// The warning to log when the callback token file is readable or writable by group or others
/// (the secret key file's rule, `tim::usersig::warn_if_loose`); `None` when only its owner can
/// read it. Not for the systemd credential directory, whose modes systemd sets.
pub fn callback_token_permission_warning(path: &Path) -> Option<String> {
    let mode = crate::tim::usersig::loose_mode(path)?;
    Some(format!(
        "the callback token file {} is readable by group or others (mode {mode:03o}); \
         restrict it with chmod 600",
        path.display()
    ))
}
