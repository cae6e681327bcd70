//! marksync keeps the marks of Tencent Cloud Chat audio-video group members equal to what a set of
//! YAML files says: it plans the difference against what it last applied and sends the fewest
//! `modify_user_info` calls that close it.
//!
//! # Layout
//! - [`model`]: group IDs, accounts, marks and the service's limits (validating newtypes).
//! - [`diag`]: diagnostics with `path:line:column` and the offending line.
//! - [`yaml`]: what every YAML reader shares (options, permissive scalars, ordered mappings).
//! - [`input`]: reading input files safely (regular files only, bounded size).
//! - [`config`]: the config file, checked key by key.
//! - [`desired`]: desired files -> desired state (pure parsing, parallel loading).
//! - [`state`]: the state file: versioned JSON, atomic save, lock, intents for crash safety.
//! - [`plan`]: `(desired, state, now, policy) -> Plan`, minimal batches, the guard (pure).
//! - [`render`]: the human plan and the `--json` contract.
//! - [`saved_plan`]: the file of `plan --out` / `apply FILE` and why one is refused (pure checks).
//! - [`schema`]: the desired files' JSON Schema, for editors (`marksync schema`).
//! - [`clock`]: the one source of "now" outside the pure core (swappable in tests).
//! - [`tim`]: the only code that knows the service's wire format: UserSig, client, error codes.
//! - [`emulator`]: the local stand-in for the service (`marksync emulator`, `endpoint: embedded`).
//! - [`apply`]: runs a plan through the client, folds confirmed results into the state.
//! - [`refresh`]: reads the live marks, classifies drift (pure), and the refreshed state.
//! - [`metrics`]: the daemon's Prometheus metrics.
//! - [`http`]: the daemon's HTTP listener: callbacks, `/healthz`, `/readyz`, `/metrics`.
//! - [`cmd`]: the commands behind the CLI; [`error`]: how they fail and their exit codes.
pub mod apply;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod diag;
pub mod emulator;
pub mod error;
pub mod http;
pub mod input;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod refresh;
pub mod render;
pub mod saved_plan;
pub mod schema;

pub mod snapshot;
pub mod state;
pub mod tim;
pub mod yaml;
