//! marksync keeps the marks of Tencent Cloud Chat audio-video group members equal to what a set of
//! YAML files says: it plans the difference against what it last applied and sends the fewest
//! `modify_user_info` calls that close it.
//!
//! # Layout
//! Lower modules never know higher ones: `cmd` and `daemon` sit on `engine`, which sits on
//! everything else; `plan`, `desired` (parsing), `state` (model), `model` and `config` do no I/O
//! beyond reading their own input files.
//! - [`model`]: group IDs, accounts, marks and the service's limits (validating newtypes).
//! - [`diag`]: diagnostics with `path:line:column` and the offending line.
//! - [`yaml`]: what every YAML reader shares (options, permissive scalars, ordered mappings).
//! - [`input`]: reading input files safely (regular files only, bounded size).
//! - [`log_escape`]: values from outside, escaped for a log line.
//! - [`manual`]: the manual pages of `marksync man`, one per command (pure).
//! - [`config`]: the config file, checked key by key.
//! - [`desired`]: desired files -> desired state (pure parsing, parallel loading);
//!   [`desired::cache`]: the daemon's incremental view of them.
//! - [`state`]: the state file: versioned JSON, atomic save, lock, intents for crash safety.
//! - [`plan`]: `(desired, state, now, policy) -> Plan`, minimal batches, the guard (pure).
//! - [`progress`]: reads and retries drawn on a terminal for long one-shot work (a tracing layer).
//! - [`render`]: the human plan and the `--json` contract.
//! - [`report`]: the JSON document of `validate --json` (pure).
//! - [`saved_plan`]: the file of `plan --out` / `apply FILE` and why one is refused (pure checks).
//! - [`schema`]: the desired files' JSON Schema, for editors (`marksync schema`).
//! - [`clock`]: the one source of "now" outside the pure core (swappable in tests).
//! - [`completion`]: dynamic shell completion of group IDs, accounts and marks from the state.
//! - [`tim`]: the only code that knows the service's wire format: UserSig, client, error codes.
//! - [`version`]: the version, commit and build date `--version` names.
//! - [`emulator`]: the local stand-in for the service (`marksync emulator`, `endpoint: embedded`).
//! - [`apply`]: runs a plan through the client, folds confirmed results into the state.
//! - [`outcome`]: what happened to each applied call, and the totals (made by `apply`, shown by
//!   `render`).
//! - [`refresh`]: reads the live marks, classifies drift (pure), and the refreshed state.
//! - [`metrics`]: the daemon's Prometheus metrics.
//! - [`notify`]: notifications to chat webhooks (`notify:`): bodies, once-per-change, delivery.
//! - [`http`]: the daemon's HTTP listener: callbacks, `/healthz`, `/readyz`, `/metrics`.
//! - [`error`]: typed errors, their exit codes and metric labels.
//! - [`engine`]: what commands and the daemon share: load, plan, secret, connect, runtime.
//! - [`cmd`]: one function per CLI command (output only).
//! - [`daemon`]: `marksync run`: the loop, one reconcile, pure scheduling, watcher, signals,
//!   systemd.
#![forbid(unsafe_code)]

pub mod apply;
pub mod clock;
pub mod cmd;
pub mod completion;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod diag;
pub mod emulator;
pub mod engine;
pub mod error;
pub mod http;
pub mod input;
pub mod log_escape;
pub mod manual;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outcome;
pub mod plan;
pub mod progress;
pub mod refresh;
pub mod render;
pub mod report;
pub mod saved_plan;
pub mod schema;
pub mod state;
pub mod tim;
pub mod version;
pub mod yaml;
