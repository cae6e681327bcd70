//! The commands behind the CLI. Each takes its options, does its work and returns the exit code
//! for success or an [`Error`] that knows its own. `main` only parses arguments and calls here.
//! This file holds `validate`, `plan`, `usersig` and `emulator`; `apply.rs` (`apply`, `apply
//! FILE`), `import.rs`, `state.rs` (`state list|show|rm`) and `signals.rs` (SIGINT/SIGTERM for
//! them all) the rest. Each is a thin caller of [`crate::engine::Session`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::desired;
use crate::emulator::EmulatorConfig;
use crate::engine::{Session, load_config, load_desired, runtime, secret_key};
use crate::error::{Error, exit};
use crate::model::UnixTime;
use crate::render;
use crate::state::{State, StateStore};

mod apply;
mod import;
mod signals;
mod state;
pub mod state_remote;
mod state_rm_note;

pub use apply::*;
pub use import::*;
pub use signals::*;
pub use state::*;

/// The wall clock's "now", for callers with no [`Clock`] of their own.
pub fn wall_clock_now() -> UnixTime {
    SystemClock.now()
}

/// `marksync validate`: load the config and every desired file; print every problem.
///
/// With `strict`, warnings are errors: the run fails (exit 1) and they are reported as errors.
/// With `json`, the report is one JSON document on stdout ([`crate::report`]) and nothing else
/// is printed; the exit code is the same.
pub fn validate(config_path: &Path, strict: bool, json: bool) -> Result<u8, Error> {
    let checked = validate_checks(config_path, strict);
    if json {
        let (report, code) = crate::report::Report::of(&checked);
        print_stdout(&format!("{}\n", report.to_json()))?;
        return Ok(code);
    }
    let crate::report::Checked {
        summary: s,
        warnings,
        ..
    } = checked?;
    let mut err = anstream::stderr().lock();
    for w in &warnings {
        let _ = writeln!(err, "{w}");
    }
    println!(
        "OK: {} {} with {} {} and {} {} in {} {}.",
        s.groups,
        render::plural(s.groups, "group", "groups"),
        s.members,
        render::plural(s.members, "member", "members"),
        s.marks,
        render::plural(s.marks, "mark", "marks"),
        s.files,
        render::plural(s.files, "file", "files"),
    );
    Ok(exit::OK)
}

/// `validate`'s checks: what loaded, the desired files' warnings, and the secret key's shape
/// warning (already logged; `validate --json` also reports it). With `strict` a warning is an
/// error.
fn validate_checks(config_path: &Path, strict: bool) -> Result<crate::report::Checked, Error> {
    let config = load_config(config_path)?;
    let (files, _) = desired::discover(&config.desired);
    let mut desired =
        desired::load(&config.desired, config.max_alias_pairs).map_err(Error::Desired)?;
    let warnings = std::mem::take(&mut desired.warnings);
    if strict && !warnings.is_empty() {
        let errors = warnings
            .into_iter()
            .map(|mut w| {
                w.severity = crate::diag::Severity::Error;
                w.message.push_str(" (an error with --strict)");
                w
            })
            .collect();
        return Err(Error::Desired(crate::diag::Diagnostics(errors)));
    }
    // The secret key, when one can be read (validate itself needs none): a key that is not 64
    // lower-case hex digits is warned about while loading, and refused with --strict.
    let key_warning = if config.endpoint != crate::config::Endpoint::Embedded
        && let Ok(key) = crate::engine::secret_key(&config)
    {
        key.shape_warning()
    } else {
        None
    };
    if strict && let Some(warning) = key_warning {
        return Err(Error::Secret(crate::tim::usersig::SecretError::Mistyped(
            warning,
        )));
    }
    // The webhook URLs (`notify:`): readable, not readable by others, usable; never printed.
    crate::notify::Notifier::check(&config)?;
    let members = desired.groups.values().map(|g| g.members.len()).sum();
    let summary = crate::report::Summary {
        groups: desired.groups.len(),
        members,
        marks: desired.pair_count(),
        files: files.len(),
    };
    Ok(crate::report::Checked {
        summary,
        warnings,
        key_warning,
    })
}

/// Writes `text` to stdout.
fn print_stdout(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write output", e))
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
    /// Read the live marks first and plan from what the service holds (SPEC section 10).
    pub refresh: bool,
    /// List every drifted member and mark (`-v`), not only the counts.
    pub verbose: bool,
    /// Also write the plan to this file, for `apply FILE`.
    pub out: Option<PathBuf>,
    /// Print the plan as Markdown for a pull or merge request comment (SPEC section 12).
    pub markdown: bool,
    /// The reviewed override of the mass-clear guard: the verdict reads `overridden`, the
    /// detailed exit code is 2, and the saved plan records it for `apply FILE`.
    pub allow_mass_clear: bool,
}

/// `marksync plan`: print what `apply` would do (and, with `out`, save it for `apply FILE`).
/// With `refresh`, read the live marks first (a copy of the state is refreshed; nothing is
/// written and no lock is taken; a saved plan carries the refresh's state changes).
pub fn plan(config_path: &Path, opts: &PlanOptions) -> Result<u8, Error> {
    let mut session = Session::open(load_config(config_path)?, Arc::new(SystemClock))?;
    if let Some(out) = &opts.out {
        crate::saved_plan::check_destination(
            out,
            &files_read(&session.config, session.store()),
            &session.config.desired,
        )?;
    }
    // The digest is taken before the files are loaded: a file edited while planning then makes
    // the digest differ from what `apply FILE` finds, and the plan is refused rather than
    // applied against files nobody reviewed.
    let digest = match &opts.out {
        Some(_) => match crate::saved_plan::desired_digest(&session.config.desired) {
            Ok(d) => Some(d),
            Err(e) => {
                // The loader's report (every problem, with locations) says more than the
                // digest's first one.
                load_desired(&session.config)?;
                return Err(e.into());
            }
        },
        None => None,
    };
    let runtime = runtime()?;
    let (desired, mut state) = runtime.block_on(session.load())?;
    let refreshed = if opts.refresh {
        let r = runtime.block_on(async {
            let mut interrupts = apply_signals()?;
            let notifier = crate::notify::Notifier::new(&session.config, Arc::default())?;
            let r =
                refresh_or_stop(&mut session, &desired, &mut state, &mut interrupts, "Plan").await;
            session.disconnect().await;
            if let Ok(Ok(refreshed)) = &r {
                notifier.after_refresh(refreshed).await;
            }
            r
        })?;
        match r {
            Ok(r) => Some(r),
            Err(code) => return Ok(code),
        }
    } else {
        None
    };
    // Planned once, from the state as refreshed.
    let now = session.clock().now();
    let plan = session.plan(&desired, &state, now, opts.reassert);
    let config = &session.config;
    let guard = render::GuardReport::of(&plan, &config.guard, opts.allow_mass_clear);
    if let (Some(path), Some(desired_digest)) = (&opts.out, digest) {
        let provenance = crate::saved_plan::Provenance {
            created_at: now,
            sdkappid: config.sdkappid,
            state_serial: state.serial,
            desired_digest,
            reassert: opts.reassert,
        };
        let changes = refreshed.as_ref().map(|r| &r.classified.changes);
        let mut saved = crate::saved_plan::SavedPlan::new(&plan, provenance, changes);
        if guard.overridden {
            saved = saved.with_mass_clear_allowed();
        }
        saved.write(path)?;
        // On stderr, so that `plan --json --out FILE` still prints one JSON object on stdout.
        let _ = writeln!(
            anstream::stderr(),
            "Saved the plan to {p}; apply exactly this plan with `marksync apply {p}`.",
            p = path.display()
        );
    }
    let mut out = anstream::stdout().lock();
    let written = if opts.json {
        // Streamed through a buffer: the JSON plan of a million members is 42 MB. Not through
        // `anstream`, which would scan every byte for terminal styles: JSON carries none (its
        // control characters are escaped).
        let mut stdout = std::io::stdout().lock();
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut stdout);
        render::write_json_plan_guarded(
            &mut buffered,
            &plan,
            refreshed.as_ref().map(|r| &r.classified),
            Some(guard),
        )
        .and_then(|()| buffered.flush())
    } else if opts.markdown {
        let mut view = render::PlanView::new(&desired, &state, &config.desired, now);
        view.refreshed = refreshed.is_some();
        view.embedded = matches!(config.endpoint, config::Endpoint::Embedded);
        let text = render::markdown_plan(
            &plan,
            &view,
            &guard,
            refreshed.as_ref().map(|r| &r.classified),
            render::MARKDOWN_BUDGET,
        );
        out.write_all(text.as_bytes())
    } else {
        let mut view = render::PlanView::new(&desired, &state, &config.desired, now);
        view.refreshed = refreshed.is_some();
        view.embedded = matches!(config.endpoint, config::Endpoint::Embedded);
        let drift = refreshed
            .as_ref()
            .map(|r| render::drift(&r.classified, opts.verbose))
            .unwrap_or_default();
        write!(out, "{drift}{}", render::human_plan(&plan, &view))
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write the plan", e))?;
    if let Err(refusal) = plan.check_guard(&config.guard) {
        let _ = if guard.overridden {
            writeln!(
                anstream::stderr(),
                "warning: the mass-clear guard would refuse this plan ({}); --allow-mass-clear \
                 overrides it{}",
                guard.numbers(),
                match &opts.out {
                    Some(p) => format!(
                        ", and {} records the override for `marksync apply {}`",
                        p.display(),
                        p.display()
                    ),
                    None => String::new(),
                }
            )
        } else {
            writeln!(
                anstream::stderr(),
                "warning: apply would refuse this plan: {refusal}"
            )
        };
    }
    let drift_needs_calls = refreshed
        .as_ref()
        .is_some_and(|r| r.classified.needs_calls());
    let code = if !opts.detailed_exitcode {
        exit::OK
    } else if guard.refuses {
        // The pull request shows the refusal before merge, not `apply` after it.
        exit::MASS_CLEAR
    } else if !plan.is_empty() || drift_needs_calls {
        exit::CHANGES
    } else {
        exit::OK
    };
    // The process exits right after this command, and the OS reclaims its memory at once.
    // Dropping the desired state, the state and the plan one entry at a time would free ~2M
    // allocations (every account of a million pairs, twice, plus the tree nodes) just before
    // exit, for nothing. This is only done here, at the end of a one-shot CLI command, never in
    // code the daemon reuses.
    std::mem::forget((desired, state, plan));
    Ok(code)
}

/// The files marksync reads that `plan --out` must never replace, with what each is: the
/// config, the secret key (file or systemd credential), the callback token, the state, and the
/// state's sidecars beside the path given and beside the file it links to.
fn files_read(config: &Config, store: &dyn StateStore) -> Vec<(&'static str, PathBuf)> {
    let mut files = vec![("config file", config.path.clone())];
    if let Some(key) = &config.secret_key_file {
        files.push(("secret key file", key.clone()));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        files.push((
            "secret key credential",
            PathBuf::from(dir).join("secret-key"),
        ));
    }
    if let Some(token) = config
        .http
        .as_ref()
        .and_then(|h| h.callback_token_file.clone())
    {
        files.push(("callback token file", token));
    }
    files.extend(store.local_files());
    files
}

/// Tells the user which groups a refresh could not read: their recorded marks are kept as they
/// are (a failed read is never "absent").
fn warn_unread(r: &crate::refresh::Refreshed) {
    let mut err = anstream::stderr().lock();
    for (group, e) in &r.unread {
        let _ = writeln!(
            err,
            "warning: group {group} could not be read ({e}); its recorded marks are kept as they are"
        );
    }
}

/// The config path from the flag, `$MARKSYNC_CONFIG` or the default.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    config::resolve_path(flag, std::env::var("MARKSYNC_CONFIG").ok())
}

/// A refresh through `session` unless a signal on `interrupts` comes first: then its reads are
/// abandoned at once (they change nothing anywhere, and the state changes only when they all
/// finished), the user is told that `what` stopped, and `Err` holds the exit code. Groups that
/// could not be read are reported.
async fn refresh_or_stop(
    session: &mut Session,
    desired: &desired::DesiredState,
    state: &mut State,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
    what: &str,
) -> Result<Result<crate::refresh::Refreshed, u8>, Error> {
    let ended = session
        .refresh(desired, state, first_signal(interrupts), |_| {})
        .await?;
    match ended.output {
        Some(r) => {
            let r = r?;
            warn_unread(&r);
            Ok(Ok(r))
        }
        None => Ok(Err(interrupted_during_refresh(
            what,
            ended.by.unwrap_or(Interrupt::Int),
            session.store(),
        ))),
    }
}

/// Tells the user that `what` stopped during a refresh's reads: nothing sent, nothing written.
fn interrupted_during_refresh(what: &str, signal: Interrupt, store: &dyn StateStore) -> u8 {
    let _ = writeln!(
        anstream::stderr(),
        "{what} interrupted by {} during the refresh's reads: nothing was sent and the state ({}) was not changed.",
        signal.name(),
        store.describe()
    );
    signal.exit_code()
}

/// `marksync usersig`: print a UserSig for the configured admin.
pub fn usersig(config_path: &Path) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let secret = secret_key(&config)?;
    let ttl = config.usersig_ttl.as_secs();
    println!(
        "{}",
        crate::tim::usersig::generate(
            config.sdkappid,
            &secret,
            &config.identifier,
            ttl,
            SystemClock.now()
        )
    );
    Ok(exit::OK)
}

/// `marksync emulator`: serve the emulator on a loopback address until interrupted. The app's
/// identity comes from the config when there is one, else from the demo defaults of the example.
pub fn emulator(config_path: &Path, listen: std::net::SocketAddr, demo: bool) -> Result<u8, Error> {
    let mut emu = match config::load(config_path) {
        Ok(config) => EmulatorConfig::new(
            config.sdkappid,
            secret_key(&config)?.expose().to_string(),
            config.identifier,
        ),
        Err(_) if !config_path.exists() => {
            EmulatorConfig::new(1_400_000_000, DEMO_SECRET_KEY, "administrator")
        }
        Err(d) => return Err(Error::Config(d)),
    };
    emu.auto_create_groups = demo;
    emu.members_online_by_default = demo;
    // `run_standalone` logs "listening" once the address is bound, never before.
    runtime()?.block_on(crate::emulator::run_standalone(emu, listen))?;
    Ok(exit::OK)
}

/// The key of the bundled example (`examples/demo-secret.key`): for the emulator only.
const DEMO_SECRET_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
