//! The errors a command can end with, and the exit code each maps to (SPEC section 1).

use crate::diag::Diagnostics;
use crate::plan::MassClear;
use crate::state::StateError;

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
    /// Anything else that stops the command, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::State(StateError::Locked { .. }) => exit::LOCKED,
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
            Error::Other(_) => "other",
        }
    }
}
