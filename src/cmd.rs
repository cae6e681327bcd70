//! The commands behind the CLI. Each takes its options, does its work and returns the exit code
//! for success or an [`Error`] that knows its own. `main` only parses arguments and calls here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{self, Config};
use crate::desired::{self, DesiredState};
use crate::diag::Diagnostic;
use crate::error::{Error, exit};
use crate::model::UnixTime;
use crate::plan::{self, Plan, Policy};
use crate::render;
use crate::state;

/// The wall clock, read only at the edges (the planner takes `now` as a parameter).
pub fn wall_clock_now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Loads the config, reporting every problem.
pub fn load_config(path: &Path) -> Result<Config, Error> {
    config::load(path).map_err(Error::Config)
}

/// Loads the desired state and prints its warnings to stderr.
pub fn load_desired(config: &Config) -> Result<DesiredState, Error> {
    let desired = desired::load(&config.desired).map_err(Error::Desired)?;
    print_warnings(&desired.warnings);
    Ok(desired)
}

fn print_warnings(warnings: &[Diagnostic]) {
    if warnings.is_empty() {
        return;
    }
    let mut err = anstream::stderr().lock();
    for w in warnings {
        let _ = writeln!(err, "{w}");
    }
}

/// The planning policy a config asks for.
pub fn policy(config: &Config, reassert: bool) -> Policy {
    Policy {
        renew_margin_secs: config.renew_margin.as_secs() as i64,
        reassert,
    }
}

/// `marksync validate`: load the config and every desired file; print every problem.
pub fn validate(config_path: &Path) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let (files, _) = desired::discover(&config.desired);
    let desired = load_desired(&config)?;
    let members: usize = desired.groups.values().map(|g| g.members.len()).sum();
    println!(
        "OK: {} {} with {} {} and {} {} in {} {}.",
        desired.groups.len(),
        render::plural(desired.groups.len(), "group", "groups"),
        members,
        render::plural(members, "member", "members"),
        desired.pair_count(),
        render::plural(desired.pair_count(), "mark", "marks"),
        files.len(),
        render::plural(files.len(), "file", "files"),
    );
    Ok(exit::OK)
}

/// Options of `marksync plan`.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Print the JSON contract instead of the human plan.
    pub json: bool,
    /// Exit 2 when there are changes.
    pub detailed_exitcode: bool,
    /// Plan re-sending every desired mark.
    pub reassert: bool,
}

/// Loads everything `plan` and `apply` need and computes the plan (no lock, no network).
pub fn compute_plan(
    config: &Config,
    reassert: bool,
    now: UnixTime,
) -> Result<(DesiredState, state::State, Plan), Error> {
    let desired = load_desired(config)?;
    let state = state::load(&config.state, config.sdkappid)?;
    let plan = plan::plan(&desired, &state, now, &policy(config, reassert));
    Ok((desired, state, plan))
}

/// `marksync plan`: print what `apply` would do.
pub fn plan(config_path: &Path, opts: &PlanOptions) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let now = wall_clock_now();
    let (_, _, plan) = compute_plan(&config, opts.reassert, now)?;
    let mut out = anstream::stdout().lock();
    let written = if opts.json {
        writeln!(out, "{}", render::json_plan(&plan))
    } else {
        write!(out, "{}", render::human_plan(&plan, now))
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Error::Other(format!("cannot write the plan: {e}")))?;
    if let Err(refusal) = plan.check_guard(&config.guard) {
        let _ = writeln!(
            anstream::stderr(),
            "warning: apply would refuse this plan: {refusal}"
        );
    }
    Ok(if opts.detailed_exitcode && !plan.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

/// The config path from the flag, `$MARKSYNC_CONFIG` or the default.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    config::resolve_path(flag, std::env::var("MARKSYNC_CONFIG").ok())
}
