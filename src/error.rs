//! The errors a command can end with, and the exit code each maps to (SPEC section 1).

use std::path::PathBuf;

use crate::diag::Diagnostics;
use crate::emulator::EmulatorError;
use crate::plan::MassClear;
use crate::state::StateError;
use crate::tim::client::{CallError, ClientBuildError};
use crate::tim::endpoint::EndpointError;
use crate::tim::usersig::SecretError;

/// Exit codes, as documented in the README.
pub mod exit {
    /// Success, or no changes.
    pub const OK: u8 = 0;
    /// An error: config, desired files, state, credentials, fatal API error.
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode` found changes.
    pub const CHANGES: u8 = 2;
    /// Refused by the mass-clear guard; nothing was sent.
    pub const MASS_CLEAR: u8 = 3;
    /// `apply` partially failed; what succeeded is recorded.
    pub const PARTIAL: u8 = 4;
    /// The state is locked by another marksync process.
    pub const LOCKED: u8 = 5;
    /// `apply` stopped by SIGINT (128 + 2, the shell's convention); what was confirmed is saved.
    pub const INTERRUPTED: u8 = 130;
    /// `apply` stopped by SIGTERM (128 + 15); what was confirmed is saved.
    pub const TERMINATED: u8 = 143;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is missing or invalid.
    #[error("{0}")]
    Config(Diagnostics),
    /// A desired file is missing, unreadable or invalid.
    #[error("{0}")]
    Desired(Diagnostics),
    /// The state cannot be read, written or locked.
    #[error(transparent)]
    State(#[from] StateError),
    /// The plan clears too much and `--allow-mass-clear` was not given.
    #[error(transparent)]
    MassClear(#[from] MassClear),
    /// The secret key cannot be read, or is not a key (the key itself is never quoted).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A region's endpoint cannot be used.
    #[error("{0}")]
    RegionEndpoint(EndpointError),
    /// An `endpoint` URL cannot be used (not a URL; plain http to a host that is not loopback).
    #[error("endpoint: {0}")]
    EndpointUrl(EndpointError),
    /// The API client cannot be built from the config.
    #[error("cannot build the API client: {0}")]
    Client(#[from] ClientBuildError),
    /// The emulator (`endpoint: embedded`) could not start.
    #[error("cannot start the embedded emulator: {0}")]
    EmbeddedEmulator(std::io::Error),
    /// `marksync emulator` could not run.
    #[error("{0}")]
    Emulator(#[from] EmulatorError),
    /// A fatal API code (a wrong key, SDKAppID, region, admin or edition) stopped the run.
    #[error("stopped by a fatal API error: {0}. {hint}", hint = fatal_hint(.0))]
    Api(CallError),
    /// Reading the live marks (`--refresh`, `import`) failed as a whole: no permission for
    /// `get_members` (the message names the console switch), credentials, a wrong endpoint.
    /// Nothing was classified and the state is unchanged.
    #[error("cannot read the live marks: {0}")]
    Refresh(#[from] crate::refresh::RefreshError),
    /// The callback token file cannot be read or is not one token (already phrased, never
    /// quoting the token).
    #[error("{0}")]
    CallbackToken(String),
    /// The desired directory cannot be watched (too many watches, too many open files).
    #[error("cannot watch {}: {source}", root.display())]
    Watch {
        /// The desired directory or file.
        root: PathBuf,
        /// What the OS said.
        source: notify::Error,
    },
    /// A saved plan cannot be read or written (`plan --out`, `apply FILE`).
    #[error(transparent)]
    SavedPlan(#[from] crate::saved_plan::SavedPlanError),
    /// A saved plan no longer fits: refused, nothing sent.
    #[error("refusing to apply {}: {reason}", path.display())]
    StalePlan {
        /// The saved plan.
        path: PathBuf,
        /// Why.
        reason: crate::saved_plan::Stale,
    },
    /// `state show`/`state rm` named what the state does not record.
    #[error(transparent)]
    NotInState(#[from] crate::state::inspect::NotInState),
    /// `run --advertise` cannot be used with this config (already phrased).
    #[error("--advertise: {0}")]
    Advertise(String),
    /// `apply` on a terminal was not approved with `yes`: nothing sent.
    #[error("Apply cancelled.")]
    Cancelled,
    /// An operating-system operation failed: writing output, installing signal handlers,
    /// listening, starting the runtime.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, phrased for the user ("cannot write output").
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The code's description, after a fatal API error.
fn fatal_hint(e: &CallError) -> String {
    e.code()
        .map(crate::tim::codes::describe)
        .unwrap_or_default()
        .to_string()
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::State(StateError::Locked { .. } | StateError::HeldBy { .. }) => exit::LOCKED,
            Error::MassClear(_) => exit::MASS_CLEAR,
            _ => exit::ERROR,
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Desired(_) => "desired",
            Error::State(e) => e.metric_label(),
            Error::MassClear(_) => "mass_clear",
            Error::Secret(_) => "secret",
            Error::RegionEndpoint(_) | Error::EndpointUrl(_) => "endpoint",
            Error::Client(_) => "client",
            Error::EmbeddedEmulator(_) | Error::Emulator(_) => "emulator",
            Error::Api(_) => "api",
            Error::Refresh(_) => "refresh",
            Error::CallbackToken(_) => "callback_token",
            Error::Watch { .. } => "watch",
            Error::Io { .. } => "io",
            Error::SavedPlan(_) => "saved_plan",
            Error::StalePlan { reason, .. } => reason.metric_label(),
            Error::Cancelled => "cancelled",
            Error::Advertise(_) => "advertise",
            Error::NotInState(_) => "not_in_state",
        }
    }
}

impl Error {
    /// An [`Error::Io`]: `what` was being done when the OS said `source`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_label_and_the_messages_read_as_before() {
        let fatal = CallError::Fatal {
            code: 70009,
            info: "sig check failed".into(),
        };
        let cases: Vec<(Error, &str, &str)> = vec![
            (
                Error::Api(fatal.clone()),
                "api",
                "stopped by a fatal API error: fatal service error 70009",
            ),
            (
                Error::io("cannot write output", std::io::Error::other("broken pipe")),
                "io",
                "cannot write output: broken pipe",
            ),
            (
                Error::EndpointUrl(EndpointError::Invalid {
                    endpoint: "ftp:x".into(),
                    reason: "no".into(),
                }),
                "endpoint",
                "endpoint: endpoint \"ftp:x\" is not a valid URL",
            ),
            (
                Error::CallbackToken("cannot read the callback token file x".into()),
                "callback_token",
                "cannot read the callback token file x",
            ),
        ];
        for (e, label, text) in cases {
            assert_eq!(e.metric_label(), label, "{e}");
            assert!(e.to_string().starts_with(text), "{e}");
            assert_eq!(e.exit_code(), exit::ERROR);
        }
        let hint = crate::tim::codes::describe(70009);
        assert!(
            Error::Api(fatal)
                .to_string()
                .ends_with(&format!(". {hint}"))
        );
    }
}
