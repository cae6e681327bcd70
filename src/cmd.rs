//! The commands behind the CLI. Each takes its options, does its work and returns the exit code
//! for success or an [`Error`] that knows its own. `main` only parses arguments and calls here.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::apply::Totals;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::desired;
use crate::emulator::EmulatorConfig;
pub use crate::engine::compute_plan;
use crate::engine::{
    SHUTDOWN_GRACE, connect, load_config, load_desired, policy, refresh_state, runtime, secret_key,
};
use crate::error::{Error, exit};
use crate::model::UnixTime;
use crate::render;
use crate::state;

/// The wall clock's "now", for callers with no [`Clock`] of their own.
pub fn wall_clock_now() -> UnixTime {
    SystemClock.now()
}

/// `marksync validate`: load the config and every desired file; print every problem.
///
/// With `strict`, warnings are errors: the run fails (exit 1) and they are reported as errors.
pub fn validate(config_path: &Path, strict: bool) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let (files, _) = desired::discover(&config.desired);
    let desired = if strict {
        let desired =
            desired::load(&config.desired, config.max_alias_pairs).map_err(Error::Desired)?;
        if !desired.warnings.is_empty() {
            let errors = desired
                .warnings
                .into_iter()
                .map(|mut w| {
                    w.severity = crate::diag::Severity::Error;
                    w.message.push_str(" (an error with --strict)");
                    w
                })
                .collect();
            return Err(Error::Desired(crate::diag::Diagnostics(errors)));
        }
        desired
    } else {
        load_desired(&config)?
    };
    // The secret key, when one can be read (validate itself needs none): a key that is not 64
    // lower-case hex digits is warned about while loading, and refused with --strict.
    if config.endpoint != crate::config::Endpoint::Embedded
        && let Ok(key) = crate::engine::secret_key(&config)
        && strict
        && let Some(warning) = key.shape_warning()
    {
        return Err(Error::Secret(crate::tim::usersig::SecretError::Mistyped(
            warning,
        )));
    }
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
    /// Read the live marks first and plan from what the service holds (SPEC section 10).
    pub refresh: bool,
    /// List every drifted member and mark (`-v`), not only the counts.
    pub verbose: bool,
    /// Also write the plan to this file, for `apply FILE`.
    pub out: Option<PathBuf>,
}

/// `marksync plan`: print what `apply` would do (and, with `out`, save it for `apply FILE`).
/// With `refresh`, read the live marks first (a copy of the state is refreshed; nothing is
/// written and no lock is taken; a saved plan carries the refresh's state changes).
pub fn plan(config_path: &Path, opts: &PlanOptions) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    if let Some(out) = &opts.out {
        crate::saved_plan::check_destination(out, &files_read(&config), &config.desired)?;
    }
    let mut now = SystemClock.now();
    // The digest is taken before the files are loaded: a file edited while planning then makes
    // the digest differ from what `apply FILE` finds, and the plan is refused rather than
    // applied against files nobody reviewed.
    let digest = match &opts.out {
        Some(_) => match crate::saved_plan::desired_digest(&config.desired) {
            Ok(d) => Some(d),
            Err(e) => {
                // The loader's report (every problem, with locations) says more than the
                // digest's first one.
                load_desired(&config)?;
                return Err(e.into());
            }
        },
        None => None,
    };
    let (desired, mut state, mut plan) = compute_plan(&config, opts.reassert, now)?;
    let refreshed = if opts.refresh {
        let r = runtime()?.block_on(async {
            let mut interrupts = apply_signals()?;
            let connection = connect(&config, Arc::new(SystemClock)).await?;
            let r = refresh_unless_interrupted(
                &connection.client,
                &desired,
                &mut state,
                &SystemClock,
                &mut interrupts,
            )
            .await;
            if let Some(embedded) = connection.embedded {
                let _ = embedded.shutdown().await;
            }
            Ok::<_, Error>(r)
        })?;
        let r = match r {
            Ok(r) => r?,
            Err(signal) => return Ok(interrupted_during_refresh("Plan", signal, &config.state)),
        };
        warn_unread(&r);
        now = SystemClock.now();
        plan = crate::plan::plan(&desired, &state, now, &policy(&config, opts.reassert));
        Some(r)
    } else {
        None
    };
    if let (Some(path), Some(desired_digest)) = (&opts.out, digest) {
        let provenance = crate::saved_plan::Provenance {
            created_at: now,
            sdkappid: config.sdkappid,
            state_serial: state.serial,
            desired_digest,
            reassert: opts.reassert,
        };
        let changes = refreshed.as_ref().map(|r| &r.classified.changes);
        crate::saved_plan::SavedPlan::new(&plan, provenance, changes).write(path)?;
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
        render::write_json_plan(
            &mut buffered,
            &plan,
            refreshed.as_ref().map(|r| &r.classified),
        )
        .and_then(|()| buffered.flush())
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
        let _ = writeln!(
            anstream::stderr(),
            "warning: apply would refuse this plan: {refusal}"
        );
    }
    let drift_needs_calls = refreshed
        .as_ref()
        .is_some_and(|r| r.classified.needs_calls());
    let code = if opts.detailed_exitcode && (!plan.is_empty() || drift_needs_calls) {
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
fn files_read(config: &Config) -> Vec<(&'static str, PathBuf)> {
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
    let mut states = vec![config.state.clone()];
    if let Ok(target) = config.state.canonicalize() {
        states.push(target);
    }
    for st in states {
        files.push(("state backup", state::backup_path(&st)));
        files.push(("state intents sidecar", state::intents_path(&st)));
        files.push(("state lock", state::lock_path(&st)));
        files.push(("state file", st));
    }
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

/// Options of `marksync apply`.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Print the plan object, one JSON line per call and a summary line.
    pub json: bool,
    /// Plan and print; never call the API or write state.
    pub dry_run: bool,
    /// Let a plan through the mass-clear guard.
    pub allow_mass_clear: bool,
    /// Re-send every desired mark, confirmed or not.
    pub reassert: bool,
    /// Read the live marks first (under the lock) and plan from what the service holds.
    pub refresh: bool,
    /// List every drifted member and mark (`-v`).
    pub verbose: bool,
    /// Apply this saved plan (`plan --out`) exactly, instead of planning.
    pub saved: Option<PathBuf>,
    /// Do not ask for approval on a terminal.
    pub auto_approve: bool,
}

/// Whether `apply` asks for `yes` before sending: only when a person is there to answer (stdin
/// and stdout are terminals) and `--auto-approve` was not given. CI, systemd and scripts have no
/// terminal and apply as before.
pub fn needs_approval(
    stdin_is_terminal: bool,
    stdout_is_terminal: bool,
    auto_approve: bool,
) -> bool {
    stdin_is_terminal && stdout_is_terminal && !auto_approve
}

/// The approval question.
pub const APPROVAL_PROMPT: &str =
    "Do you want to apply these changes? Only 'yes' will be accepted:";

/// Asks [`APPROVAL_PROMPT`] on `out` and reads one line from `input`: approved only when the line
/// is exactly `yes` (surrounding spaces aside). End of input is a refusal.
pub fn read_approval(
    input: &mut impl std::io::BufRead,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    write!(out, "\n{APPROVAL_PROMPT} ")?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(is_approval(&line))
}

/// Whether an answer to [`APPROVAL_PROMPT`] approves: exactly `yes`, surrounding spaces aside.
pub fn is_approval(line: &str) -> bool {
    line.trim() == "yes"
}

/// The first signal on `interrupts` (at once if one already came); never, if the sender is gone.
async fn first_signal(interrupts: &mut watch::Receiver<Option<Interrupt>>) -> Interrupt {
    loop {
        if let Some(signal) = *interrupts.borrow_and_update() {
            return signal;
        }
        if interrupts.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// A refresh (see [`refresh_state`]) unless a signal on `interrupts` comes first: then its reads
/// are abandoned at once and the signal is returned. The reads change nothing anywhere, and
/// `state` changes only when they all finished, so an abandoned refresh leaves it as it was.
async fn refresh_unless_interrupted(
    client: &crate::tim::client::Client,
    desired: &desired::DesiredState,
    state: &mut state::State,
    clock: &dyn Clock,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
) -> Result<Result<crate::refresh::Refreshed, Error>, Interrupt> {
    tokio::select! {
        r = refresh_state(client, desired, state, clock) => Ok(r),
        signal = first_signal(interrupts) => Err(signal),
    }
}

/// Tells the user that `what` stopped during a refresh's reads: nothing sent, nothing written.
fn interrupted_during_refresh(what: &str, signal: Interrupt, state: &Path) -> u8 {
    let _ = writeln!(
        anstream::stderr(),
        "{what} interrupted by {} during the refresh's reads: nothing was sent and the state ({}) was not changed.",
        signal.name(),
        state.display()
    );
    signal.exit_code()
}

/// The last line of `apply --dry-run`.
pub const DRY_RUN_LINE: &str = "Dry run: nothing was sent and the state was not changed.";

/// `marksync apply`: plan, print the plan, execute it, record results. SIGINT and SIGTERM stop
/// it like the daemon (see [`apply_until`]); a second one exits at once.
pub fn apply(config_path: &Path, opts: &ApplyOptions) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async {
        let interrupts = apply_signals()?;
        apply_until(&config, opts, Arc::new(SystemClock), interrupts).await
    })
}

/// The signal that interrupted an `apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// SIGINT (Ctrl-C): exit 130.
    Int,
    /// SIGTERM: exit 143.
    Term,
}

impl Interrupt {
    /// The exit code: 128 + the signal number, as a shell reports a process killed by it.
    pub fn exit_code(self) -> u8 {
        match self {
            Interrupt::Int => exit::INTERRUPTED,
            Interrupt::Term => exit::TERMINATED,
        }
    }

    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
        }
    }
}

/// Installs `apply`'s SIGINT/SIGTERM handlers: the first signal is published on the returned
/// channel (the apply stops sending and saves); a second one exits the process at once with the
/// signal's code. That is safe: every mark in flight is recorded in the intents sidecar before
/// its call is sent, so the next run settles it.
pub fn apply_signals() -> Result<watch::Receiver<Option<Interrupt>>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let signal_err = |e| Error::io("cannot install signal handlers", e);
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let got = tokio::select! {
                Some(()) = int.recv() => Interrupt::Int,
                Some(()) = term.recv() => Interrupt::Term,
                else => return,
            };
            if first {
                first = false;
                let _ = tx.send(Some(got));
            } else {
                let _ = writeln!(
                    anstream::stderr(),
                    "{}: stopping at once; calls in flight are recorded as intents, the next apply settles them",
                    got.name()
                );
                std::process::exit(i32::from(got.exit_code()));
            }
        }
    });
    Ok(rx)
}

/// `apply` with an explicit clock (tests drive time through it), never interrupted.
pub async fn apply_with(
    config: &Config,
    opts: &ApplyOptions,
    clock: Arc<dyn Clock>,
) -> Result<u8, Error> {
    let (_never, interrupts) = watch::channel(None);
    apply_until(config, opts, clock, interrupts).await
}

/// `apply`, stopped by the first `Some` on `interrupts` the way the daemon stops on SIGTERM: no
/// new call starts (the `stop` flag of [`crate::apply::Settings`]), calls in flight finish
/// within [`SHUTDOWN_GRACE`], the state is saved, and the exit code is the signal's (130, 143).
pub async fn apply_until(
    config: &Config,
    opts: &ApplyOptions,
    clock: Arc<dyn Clock>,
    mut interrupts: watch::Receiver<Option<Interrupt>>,
) -> Result<u8, Error> {
    let _lock = if opts.dry_run {
        None
    } else {
        Some(state::lock(&config.state)?)
    };
    let mut now = clock.now();
    let (desired, mut st, mut plan, saved_changes) = match &opts.saved {
        None => {
            let (desired, st, plan) = compute_plan(config, opts.reassert, now)?;
            (desired, st, plan, false)
        }
        Some(path) => load_saved_plan(config, path, now, opts.dry_run)?,
    };
    // With --refresh the connection is made first: the plan depends on what the service holds.
    // (A saved plan is applied exactly: the CLI refuses --refresh with one.)
    let mut connection = None;
    let mut refreshed = None;
    if opts.refresh && opts.saved.is_none() {
        let c = connect(config, clock.clone()).await?;
        let r = refresh_unless_interrupted(
            &c.client,
            &desired,
            &mut st,
            clock.as_ref(),
            &mut interrupts,
        )
        .await;
        let r = match r {
            Ok(r) => r?,
            Err(signal) => {
                if let Some(embedded) = c.embedded {
                    let _ = embedded.shutdown().await;
                }
                return Ok(interrupted_during_refresh("Apply", signal, &config.state));
            }
        };
        warn_unread(&r);
        now = clock.now();
        plan = crate::plan::plan(&desired, &st, now, &policy(config, opts.reassert));
        connection = Some(c);
        refreshed = Some(r);
    }
    // The refresh (or the saved plan's refresh) changed what the state records: forgotten or
    // adopted marks, and a saved plan's ID, are kept even when no call is needed.
    let state_changed = saved_changes
        || refreshed
            .as_ref()
            .is_some_and(|r| !r.classified.changes.is_empty());
    let mut out = anstream::stdout();
    let write_err = |e| Error::io("cannot write output", e);
    if opts.json {
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut out);
        render::write_json_plan(
            &mut buffered,
            &plan,
            refreshed.as_ref().map(|r| &r.classified),
        )
        .and_then(|()| buffered.flush())
        .map_err(write_err)?;
    } else {
        if let Some(r) = &refreshed {
            write!(out, "{}", render::drift(&r.classified, opts.verbose)).map_err(write_err)?;
        }
        let mut view = render::PlanView::new(&desired, &st, &config.desired, now);
        view.refreshed = refreshed.is_some();
        view.embedded = matches!(config.endpoint, config::Endpoint::Embedded);
        write!(out, "{}", render::human_plan(&plan, &view)).map_err(write_err)?;
    }
    drop(desired);
    if !opts.allow_mass_clear {
        plan.check_guard(&config.guard)?;
    }
    if state_changed && !opts.dry_run && plan.calls.is_empty() {
        // Nothing to send, but the state changed: keep it. `apply::execute` saves only when it
        // sends calls.
        state::save(&config.state, &mut st)?;
    }
    if opts.dry_run || plan.is_empty() {
        if let Some(c) = connection.take().and_then(|c| c.embedded) {
            let _ = c.shutdown().await;
        }
        if opts.json {
            writeln!(out, "{}", serde_json::json!({"summary": Totals::default()}))
                .map_err(write_err)?;
        }
        if opts.dry_run {
            if opts.json {
                let _ = writeln!(anstream::stderr(), "{DRY_RUN_LINE}");
            } else {
                writeln!(out, "\n{DRY_RUN_LINE}").map_err(write_err)?;
            }
        }
        return Ok(exit::OK);
    }
    {
        use std::io::IsTerminal;
        let terminal = (
            std::io::stdin().is_terminal(),
            std::io::stdout().is_terminal(),
        );
        if needs_approval(terminal.0, terminal.1, opts.auto_approve) {
            // Read on a thread of its own, so that Ctrl-C at the question stops at once (the
            // first signal, not only the second): nothing has been sent yet.
            write!(out, "\n{APPROVAL_PROMPT} ")
                .and_then(|()| out.flush())
                .map_err(write_err)?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let read = std::io::stdin().read_line(&mut line).map(|_| line);
                let _ = tx.send(read);
            });
            tokio::select! {
                answer = rx => {
                    let line = answer
                        .map_err(|_| Error::io("cannot read the approval", std::io::Error::other("reader gone")))?
                        .map_err(|e| Error::io("cannot read the approval", e))?;
                    if !is_approval(&line) {
                        return Err(Error::Cancelled);
                    }
                }
                signal = first_signal(&mut interrupts) => {
                    let _ = writeln!(
                        anstream::stderr(),
                        "\nApply interrupted by {} at the approval question: nothing was sent.",
                        signal.name()
                    );
                    return Ok(signal.exit_code());
                }
            }
        }
    }
    if let Some(signal) = *interrupts.borrow() {
        let _ = writeln!(
            anstream::stderr(),
            "Apply interrupted by {} before any call: nothing was sent.",
            signal.name()
        );
        return Ok(signal.exit_code());
    }
    let connection = match connection {
        Some(c) => c,
        None => connect(config, clock.clone()).await?,
    };
    let progress = progress_bar(plan.calls.len());
    let settings = crate::apply::Settings {
        offline_error_codes: config.offline_error_codes.clone(),
        ..crate::apply::Settings::default()
    };
    let stop = settings.stop.clone();
    let plan = Arc::new(plan);
    if !opts.json {
        writeln!(out).map_err(write_err)?;
    }
    let mut interrupted: Option<Interrupt> = None;
    let result = {
        let work = crate::apply::execute(
            plan,
            &mut st,
            &config.state,
            &connection.client,
            clock.as_ref(),
            &settings,
            |report| {
                progress.inc(1);
                let line = if opts.json {
                    render::json_call(&report)
                } else {
                    render::human_call(&report)
                };
                if progress.is_hidden() {
                    let _ = writeln!(anstream::stdout(), "{line}");
                } else {
                    progress.println(anstream::adapter::strip_str(&line).to_string());
                }
            },
        );
        until_interrupted(work, &mut interrupts, &stop, SHUTDOWN_GRACE, |signal| {
            interrupted = Some(signal);
            progress.suspend(|| {
                let _ = writeln!(
                    anstream::stderr(),
                    "{}: sending no new calls; waiting up to {}s for the calls in flight, then saving the state (again to stop at once)",
                    signal.name(),
                    SHUTDOWN_GRACE.as_secs()
                );
            });
        })
        .await
    };
    progress.finish_and_clear();
    let applied = match result {
        Some(r) => r?,
        None => {
            // The cut calls' marks are still intents in `st`: saving keeps them unknown, so the
            // next run sets or clears them again.
            state::save(&config.state, &mut st)?;
            let signal = interrupted.unwrap_or(Interrupt::Int);
            let _ = writeln!(
                anstream::stderr(),
                "Apply interrupted by {}: calls in flight did not finish within {}s. The state ({}) records what the service confirmed; the marks of the unfinished calls are recorded as unknown and the next apply sends them again.",
                signal.name(),
                SHUTDOWN_GRACE.as_secs(),
                config.state.display()
            );
            return Ok(signal.exit_code());
        }
    };
    if let Some(signal) = interrupted {
        let t = &applied.totals;
        if opts.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"summary": t, "interrupted": signal.name(), "not_sent": t.skipped})
            )
            .map_err(write_err)?;
        }
        let _ = writeln!(
            anstream::stderr(),
            "Apply interrupted by {}: {}; {} {} not sent. The state ({}) is saved with every confirmed result; run apply again to finish.",
            signal.name(),
            render::totals(t),
            t.skipped,
            render::plural(t.skipped, "mark", "marks"),
            config.state.display()
        );
        return Ok(signal.exit_code());
    }
    if opts.json {
        writeln!(out, "{}", serde_json::json!({"summary": applied.totals})).map_err(write_err)?;
    } else {
        let line = render::apply_line(&applied.totals);
        let line = if matches!(config.endpoint, config::Endpoint::Embedded) {
            render::against_embedded(&line)
        } else {
            line
        };
        writeln!(out, "\n{line}").map_err(write_err)?;
    }
    if let Some(embedded) = connection.embedded {
        let _ = embedded.shutdown().await;
    }
    if let Some(fatal) = applied.fatal {
        return Err(Error::Api(fatal));
    }
    Ok(if applied.partially_failed() {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

/// Options of `marksync import`.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Show what would be recorded; never write the state.
    pub dry_run: bool,
    /// List every adopted, forgotten and unmanaged mark.
    pub verbose: bool,
}

/// `marksync import`: builds or repairs the state from the service (SPEC section 10) without a
/// single write call. Under the lock: loads the state (or starts empty for this SDKAppID), reads
/// the live marks, records the live marks the desired files declare (`adopted`; a mark 500 of
/// unknown age as 72 h old, so the next apply renews it) and forgets recorded desired marks the
/// service no longer holds (`lost`, `offline`: the next apply sets them again, which is what a
/// repair needs). Recorded marks no longer desired stay recorded even when absent (`gone`): a
/// listing may be cut short, and only a clear's answer forgets them. Marks nobody declared
/// (`unmanaged`) are reported and left alone.
pub fn import(config_path: &Path, opts: &ImportOptions) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async {
        let interrupts = apply_signals()?;
        import_until(&config, opts, Arc::new(SystemClock), interrupts).await
    })
}

/// `import` with an explicit clock, never interrupted.
pub async fn import_with(
    config: &Config,
    opts: &ImportOptions,
    clock: Arc<dyn Clock>,
) -> Result<u8, Error> {
    let (_never, interrupts) = watch::channel(None);
    import_until(config, opts, clock, interrupts).await
}

/// `import`, stopped by the first `Some` on `interrupts`: the reads are abandoned at once and
/// nothing is written; the exit code is the signal's (130, 143).
pub async fn import_until(
    config: &Config,
    opts: &ImportOptions,
    clock: Arc<dyn Clock>,
    mut interrupts: watch::Receiver<Option<Interrupt>>,
) -> Result<u8, Error> {
    let _lock = if opts.dry_run {
        None
    } else {
        Some(state::lock(&config.state)?)
    };
    let desired = load_desired(config)?;
    let mut st = state::load(&config.state, config.sdkappid)?;
    let connection = connect(config, clock.clone()).await?;
    let r = refresh_unless_interrupted(
        &connection.client,
        &desired,
        &mut st,
        clock.as_ref(),
        &mut interrupts,
    )
    .await;
    if let Some(embedded) = connection.embedded {
        let _ = embedded.shutdown().await;
    }
    let r = match r {
        Ok(r) => r?,
        Err(signal) => return Ok(interrupted_during_refresh("Import", signal, &config.state)),
    };
    warn_unread(&r);
    let changes = &r.classified.changes;
    let mut out = anstream::stdout().lock();
    let write_err = |e| Error::io("cannot write output", e);
    write!(out, "{}", render::drift(&r.classified, opts.verbose)).map_err(write_err)?;
    let counts = r.classified.counts();
    let adopted = changes.adopt.len();
    let forgotten = changes.forget.len();
    writeln!(
        out,
        "Import{}: {adopted} {} adopted, {forgotten} forgotten, {} unmanaged left alone{}, {} not checked; {} read {}, no write call.",
        if opts.dry_run { " (dry run)" } else { "" },
        render::plural(adopted, "mark", "marks"),
        counts.unmanaged,
        match r.classified.unnameable.len() {
            0 => String::new(),
            n => format!(" (and {})", render::unnameable_count(n)),
        },
        counts.not_checked,
        r.calls,
        render::plural(r.calls as usize, "call", "calls"),
    )
    .map_err(write_err)?;
    if opts.dry_run {
        writeln!(
            out,
            "Dry run: the state ({}) was not written.",
            config.state.display()
        )
        .map_err(write_err)?;
    } else if !changes.is_empty() {
        state::save(&config.state, &mut st)?;
        writeln!(out, "State saved to {}.", config.state.display()).map_err(write_err)?;
    } else {
        writeln!(out, "The state already records what the service holds.").map_err(write_err)?;
    }
    Ok(exit::OK)
}

/// `apply FILE`'s planning step: the state (under the caller's lock), the saved plan, the
/// checks that it still fits (app, already applied, state serial, desired files, age), and the
/// proof that it is what planning gives: the plan is made again from the state (with the saved
/// refresh changes applied) and the desired files, at the saved `created_at` and with the saved
/// policy, and must equal the saved one ([`crate::saved_plan::SavedPlan::verify`]). A plan that
/// does not fit is refused before anything is sent. Returns the desired state (for rendering),
/// the state with the plan's refresh changes and ID folded in, the plan, and whether the state
/// was changed (it must be saved even when there is no call).
fn load_saved_plan(
    config: &Config,
    path: &Path,
    now: UnixTime,
    dry_run: bool,
) -> Result<(desired::DesiredState, state::State, crate::plan::Plan, bool), Error> {
    use crate::saved_plan::{SavedPlan, desired_digest};
    let mut st = state::load(&config.state, config.sdkappid)?;
    let saved = SavedPlan::read(path)?;
    let digest = desired_digest(&config.desired)?;
    saved
        .check(
            config.sdkappid,
            st.serial,
            &digest,
            st.last_saved_plan.as_deref(),
            now,
            config.saved_plan_max_age.as_secs() as i64,
        )
        .map_err(|reason| Error::StalePlan {
            path: path.to_path_buf(),
            reason,
        })?;
    // The digest matched. Whatever the loader reads now (the files could change in between), the
    // plan made from it must be the saved one, so a race can only cause a refusal.
    let desired = load_desired(config)?;
    let stale = |reason| Error::StalePlan {
        path: path.to_path_buf(),
        reason,
    };
    let policy = policy(config, saved.reassert);
    // In memory only: a dry run or a refusal never saves `st`.
    let mut changed = false;
    let plan = match saved.refreshed_changes() {
        Some(changes) if !changes.is_empty() => {
            let without = crate::plan::plan(&desired, &st, saved.created_at, &policy);
            changes.apply(&mut st);
            let with = crate::plan::plan(&desired, &st, saved.created_at, &policy);
            saved
                .check_refresh_changes(&desired, &without, &with)
                .map_err(stale)?;
            changed = !dry_run;
            with
        }
        _ => crate::plan::plan(&desired, &st, saved.created_at, &policy),
    };
    saved.verify(&plan).map_err(stale)?;
    if !dry_run && (!plan.is_empty() || changed) {
        // Saved with the apply's results: the same file applied again is "already applied".
        st.last_saved_plan = Some(saved.plan_id.clone());
    }
    Ok((desired, st, plan, changed))
}

/// Runs `work` to its end, unless a signal arrives on `interrupts`: then `stop` is set (so the
/// work sends nothing new), `on_signal` is told, and the work gets `grace` more to finish.
/// Returns its output, or `None` when the grace ran out (the work is dropped).
pub async fn until_interrupted<T>(
    work: impl Future<Output = T>,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
    stop: &AtomicBool,
    grace: Duration,
    mut on_signal: impl FnMut(Interrupt),
) -> Option<T> {
    tokio::pin!(work);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut listening = true;
    loop {
        tokio::select! {
            r = &mut work => return Some(r),
            changed = interrupts.changed(), if listening && deadline.is_none() => {
                if changed.is_err() {
                    // The sender is gone: no signal can come any more.
                    listening = false;
                    continue;
                }
                let Some(signal) = *interrupts.borrow() else {
                    continue;
                };
                stop.store(true, Ordering::SeqCst);
                deadline = Some(tokio::time::Instant::now() + grace);
                on_signal(signal);
            }
            () = sleep_until_opt(deadline) => return None,
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A progress bar on stderr for applies long enough to need one, on a terminal only.
fn progress_bar(calls: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    // At 200 calls per second, 400 calls take two seconds.
    if calls < 400 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(calls as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} calls, {rate}, eta {eta}")
    {
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate_text(state.per_sec()));
            },
        ));
    }
    bar
}

/// A call rate as people read it: `68/s`, not indicatif's `68.1048/s`.
fn rate_text(per_sec: f64) -> String {
    format!("{:.0}/s", per_sec.max(0.0))
}

/// `marksync state list [GROUP]`: the groups the state records, with member and mark counts.
pub fn state_list(
    config_path: &Path,
    group: Option<&crate::model::GroupId>,
    json: bool,
) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let st = state::load(&config.state, config.sdkappid)?;
    let groups = state::inspect::list(&st, group)?;
    let mut out = anstream::stdout().lock();
    let text = if json {
        serde_json::json!({"serial": st.serial, "groups": groups}).to_string() + "\n"
    } else {
        let mut t = String::new();
        if groups.is_empty() {
            t.push_str("The state records no group.\n");
        } else {
            let width = groups
                .iter()
                .map(|g| g.group.to_string().len())
                .max()
                .unwrap_or(5);
            t += &format!("{:<width$}  MEMBERS  CONFIRMED  UNKNOWN\n", "GROUP");
            for g in &groups {
                t += &format!(
                    "{:<width$}  {:>7}  {:>9}  {:>7}\n",
                    g.group.to_string(),
                    g.members,
                    g.confirmed,
                    g.unknown
                );
            }
        }
        t += &format!("State {} (serial {}).\n", config.state.display(), st.serial);
        t
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write output", e))?;
    Ok(exit::OK)
}

/// `marksync state show GROUP [ACCOUNT]`: each member's marks, when the service last confirmed
/// each, and the unknown ones (an apply sent them and did not see the answer).
pub fn state_show(
    config_path: &Path,
    group: &crate::model::GroupId,
    account: Option<&crate::model::Account>,
    json: bool,
) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let st = state::load(&config.state, config.sdkappid)?;
    let now = SystemClock.now();
    let members = state::inspect::show(&st, group, account, now)?;
    let text = if json {
        serde_json::json!({"serial": st.serial, "members": members}).to_string() + "\n"
    } else {
        let width = members
            .iter()
            .map(|m| m.account.to_string().len())
            .max()
            .unwrap_or(0);
        let mut t = format!("{group}\n");
        for m in &members {
            let marks: Vec<String> = m
                .marks
                .iter()
                .map(|k| match (k.age_secs, k.unknown) {
                    (_, true) => format!("{} (unknown: sent, answer not seen)", k.mark),
                    (Some(age), false) => {
                        format!("{} ({})", k.mark, render::confirmed_ago(age))
                    }
                    (None, false) => k.mark.to_string(),
                })
                .collect();
            t += &format!(
                "  {:<width$}  {}\n",
                m.account.to_string(),
                marks.join(", ")
            );
        }
        t
    };
    let mut out = anstream::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write output", e))?;
    Ok(exit::OK)
}

/// `marksync state rm GROUP [ACCOUNT [MARK]]`: forget, under the lock, without clearing anything
/// on the service (marksync stops managing it). The previous state is kept as `.bak`.
pub fn state_rm(
    config_path: &Path,
    group: &crate::model::GroupId,
    account: Option<&crate::model::Account>,
    mark: Option<crate::model::Mark>,
) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let _lock = state::lock(&config.state)?;
    let mut st = state::load(&config.state, config.sdkappid)?;
    let forgotten = state::inspect::rm(&mut st, group, account, mark)?;
    state::save(&config.state, &mut st)?;
    let what = match (account, mark) {
        (None, _) => format!(
            "group {group} ({} {}, {} {})",
            forgotten.accounts,
            render::plural(forgotten.accounts, "account", "accounts"),
            forgotten.marks,
            render::plural(forgotten.marks, "mark", "marks")
        ),
        (Some(a), None) => format!(
            "{a} in {group} ({} {})",
            forgotten.marks,
            render::plural(forgotten.marks, "mark", "marks")
        ),
        (Some(a), Some(m)) => format!("mark {m} of {a} in {group}"),
    };
    println!(
        "Forgot {what}: the state ({}, serial {}, previous generation in {}) no longer records it. \
         Nothing was cleared on the service; marksync no longer manages it unless a desired file \
         declares it.",
        config.state.display(),
        st.serial,
        // Beside the file the state path stands for (a symlink's target).
        state::backup_path(&state::target(&config.state).unwrap_or(config.state.clone())).display()
    );
    Ok(exit::OK)
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
    tracing::info!(%listen, sdkappid = emu.sdkappid, admin = %emu.admin_identifier, "emulator listening");
    runtime()?.block_on(crate::emulator::run_standalone(emu, listen))?;
    Ok(exit::OK)
}

/// The key of the bundled example (`examples/demo-secret.key`): for the emulator only.
const DEMO_SECRET_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

pub mod state_remote;

#[cfg(test)]
mod tests;
