//! `marksync apply` (and `apply FILE`): prepare the plan, show it, guard, approve, send, report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::*;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::desired;
use crate::engine::{SHUTDOWN_GRACE, Session, load_config, policy, runtime};
use crate::error::{Error, exit};
use crate::model::UnixTime;
use crate::outcome::Totals;
use crate::render;
use crate::state;

/// Options of `marksync apply`.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// How long to wait for another holder of the state's lock (`--lock-timeout`; zero fails at
    /// once, naming it).
    pub lock_timeout: std::time::Duration,
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

/// The last line of `apply --dry-run`.
pub const DRY_RUN_LINE: &str = "Dry run: nothing was sent and the state was not changed.";

/// `marksync apply`: plan, print the plan, execute it, record results. SIGINT and SIGTERM stop
/// it like the daemon (see [`apply_until`]); a second one exits at once.
pub fn apply(config_path: &Path, opts: &ApplyOptions) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async {
        let interrupts = apply_signals()?;
        // Built first: a webhook URL that cannot be read stops the apply before anything is sent.
        let notifier = crate::notify::Notifier::new(&config, Arc::default())?;
        let result = apply_until(&config, opts, Arc::new(SystemClock), interrupts).await;
        if !opts.dry_run {
            notifier.after_apply(&result).await;
        }
        result
    })
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
    let mut session = Session::open(config.clone(), clock)?;
    let _lock = match lock_unless_dry(
        &session,
        "apply",
        opts.dry_run,
        opts.lock_timeout,
        &mut interrupts,
    )
    .await?
    {
        Ok(lock) => lock,
        Err(code) => return Ok(code),
    };
    let code = apply_in(&mut session, opts, &mut interrupts).await;
    session.disconnect().await;
    code
}

/// What `apply` is about to do: the state (refreshed, or with the saved plan's changes), the
/// plan, and what to show with it.
struct Prepared {
    desired: desired::DesiredState,
    st: state::State,
    plan: crate::plan::Plan,
    refreshed: Option<crate::refresh::Refreshed>,
    /// The state records something new even without a call (a refresh's or a saved plan's
    /// changes, a saved plan's ID): it is saved even when the plan is empty.
    state_changed: bool,
    /// When the plan was made.
    now: UnixTime,
    /// A saved plan made with `--allow-mass-clear` carries the reviewed override.
    saved_override: bool,
}

/// `apply` under its lock: prepare, show, guard, approve, send, report.
async fn apply_in(
    session: &mut Session,
    opts: &ApplyOptions,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
) -> Result<u8, Error> {
    let Prepared {
        desired,
        mut st,
        plan,
        refreshed,
        state_changed,
        now,
        saved_override,
    } = match prepare_apply(session, opts, interrupts).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let config = &session.config;
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
    if !opts.allow_mass_clear && !saved_override {
        plan.check_guard(&config.guard)?;
    }
    if state_changed && !opts.dry_run && plan.calls.is_empty() {
        // Nothing to send, but the state changed: keep it. `apply::execute` saves only when it
        // sends calls.
        session.save(&mut st).await?;
    }
    if opts.dry_run || plan.is_empty() {
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
    if let Some(code) = approve(opts, &mut out, interrupts).await? {
        return Ok(code);
    }
    send(session, opts, plan, &mut st, interrupts).await
}

/// The state and the plan `apply` sends: a saved plan's, checked; or planned from the desired
/// files and the state, refreshed first with `--refresh` (planned once, after the refresh).
/// `Err` holds the exit code of a signal during the refresh.
async fn prepare_apply(
    session: &mut Session,
    opts: &ApplyOptions,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
) -> Result<Result<Prepared, u8>, Error> {
    if let Some(path) = &opts.saved {
        // A saved plan is applied exactly: the CLI refuses --refresh with one.
        let now = session.clock().now();
        let st = session.load_state().await?;
        let (desired, st, plan, state_changed, saved_override) =
            load_saved_plan(&session.config, st, path, now, opts.dry_run)?;
        return Ok(Ok(Prepared {
            desired,
            st,
            plan,
            refreshed: None,
            state_changed,
            now,
            saved_override,
        }));
    }
    let (desired, mut st) = session.load().await?;
    let refreshed = if opts.refresh {
        match refresh_or_stop(session, &desired, &mut st, interrupts, "Apply").await? {
            Ok(r) => Some(r),
            Err(code) => return Ok(Err(code)),
        }
    } else {
        None
    };
    let now = session.clock().now();
    let plan = session.plan(&desired, &st, now, opts.reassert);
    // Forgotten or adopted marks are kept even when no call is needed.
    let state_changed = refreshed
        .as_ref()
        .is_some_and(|r| !r.classified.changes.is_empty());
    Ok(Ok(Prepared {
        desired,
        st,
        plan,
        refreshed,
        state_changed,
        now,
        saved_override: false,
    }))
}

/// Asks for approval when a person is at a terminal (and `--auto-approve` was not given);
/// `Some` exit code when the apply stops here (a signal: nothing was sent).
async fn approve(
    opts: &ApplyOptions,
    out: &mut impl Write,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
) -> Result<Option<u8>, Error> {
    use std::io::IsTerminal;
    let terminal = (
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
    );
    if needs_approval(terminal.0, terminal.1, opts.auto_approve) {
        // Asked and read on a thread of its own, so that Ctrl-C at the question stops at
        // once (the first signal, not only the second): nothing has been sent yet.
        out.flush()
            .map_err(|e| Error::io("cannot write output", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let answer =
                read_approval(&mut std::io::stdin().lock(), &mut anstream::stdout().lock());
            let _ = tx.send(answer);
        });
        tokio::select! {
            answer = rx => {
                let approved = answer
                    .map_err(|_| Error::io("cannot read the approval", std::io::Error::other("reader gone")))?
                    .map_err(|e| Error::io("cannot read the approval", e))?;
                if !approved {
                    return Err(Error::Cancelled);
                }
            }
            signal = first_signal(interrupts) => {
                let _ = writeln!(
                    anstream::stderr(),
                    "\nApply interrupted by {} at the approval question: nothing was sent.",
                    signal.name()
                );
                return Ok(Some(signal.exit_code()));
            }
        }
    }
    if let Some(signal) = *interrupts.borrow() {
        let _ = writeln!(
            anstream::stderr(),
            "Apply interrupted by {} before any call: nothing was sent.",
            signal.name()
        );
        return Ok(Some(signal.exit_code()));
    }
    Ok(None)
}

/// Sends `plan`, printing each call's outcome, and reports the totals; a signal stops it (no new
/// call; the calls in flight get [`SHUTDOWN_GRACE`]) and the state is saved either way.
async fn send(
    session: &mut Session,
    opts: &ApplyOptions,
    plan: crate::plan::Plan,
    st: &mut state::State,
    interrupts: &mut watch::Receiver<Option<Interrupt>>,
) -> Result<u8, Error> {
    let mut out = anstream::stdout();
    let write_err = |e| Error::io("cannot write output", e);
    let progress = progress_bar(plan.calls.len());
    let settings = crate::apply::Settings {
        offline_error_codes: session.config.offline_error_codes.clone(),
        ..crate::apply::Settings::default()
    };
    if !opts.json {
        writeln!(out).map_err(write_err)?;
    }
    let ended = session
        .execute(
            plan,
            st,
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
            first_signal(interrupts),
            |signal| {
                progress.suspend(|| {
                    let _ = writeln!(
                        anstream::stderr(),
                        "{}: sending no new calls; waiting up to {}s for the calls in flight, then saving the state (again to stop at once)",
                        signal.name(),
                        SHUTDOWN_GRACE.as_secs()
                    );
                });
            },
        )
        .await?;
    progress.finish_and_clear();
    let applied = match ended.output {
        Some(r) => r?,
        None => {
            // The cut calls' marks are still intents in `st`: saving keeps them unknown, so the
            // next run sets or clears them again.
            session.save(st).await?;
            let signal = ended.by.unwrap_or(Interrupt::Int);
            let _ = writeln!(
                anstream::stderr(),
                "Apply interrupted by {}: calls in flight did not finish within {}s. The state ({}) records what the service confirmed; the marks of the unfinished calls are recorded as unknown and the next apply sends them again.",
                signal.name(),
                SHUTDOWN_GRACE.as_secs(),
                session.store().describe()
            );
            return Ok(signal.exit_code());
        }
    };
    if let Some(signal) = ended.by {
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
            session.store().describe()
        );
        return Ok(signal.exit_code());
    }
    if opts.json {
        writeln!(out, "{}", serde_json::json!({"summary": applied.totals})).map_err(write_err)?;
    } else {
        let line = render::apply_line(&applied.totals);
        let line = if matches!(session.config.endpoint, config::Endpoint::Embedded) {
            render::against_embedded(&line)
        } else {
            line
        };
        writeln!(out, "\n{line}").map_err(write_err)?;
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

/// `apply FILE`'s planning step: given the state (read under the caller's lock), the saved plan, the
/// checks that it still fits (app, already applied, state serial, desired files, age), and the
/// proof that it is what planning gives: the plan is made again from the state (with the saved
/// refresh changes applied) and the desired files, at the saved `created_at` and with the saved
/// policy, and must equal the saved one ([`crate::saved_plan::SavedPlan::verify`]). A plan that
/// does not fit is refused before anything is sent. Returns the desired state (for rendering),
/// the state with the plan's refresh changes and ID folded in, the plan, whether the state
/// was changed (it must be saved even when there is no call), and whether the plan carries the
/// reviewed override of the mass-clear guard (`plan --allow-mass-clear --out`).
#[allow(clippy::type_complexity)]
fn load_saved_plan(
    config: &Config,
    mut st: state::State,
    path: &Path,
    now: UnixTime,
    dry_run: bool,
) -> Result<
    (
        desired::DesiredState,
        state::State,
        crate::plan::Plan,
        bool,
        bool,
    ),
    Error,
> {
    use crate::saved_plan::{SavedPlan, desired_digest, digest_read};
    let saved = SavedPlan::read(path)?;
    // One read of the desired files: the digest is taken from the very bytes that are parsed, so
    // the plan is checked against exactly the files it is made from.
    let read = std::sync::Mutex::new(Vec::new());
    let loaded = crate::engine::load_desired_seeing(config, &|file, bytes| {
        read.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((file.to_path_buf(), bytes.to_vec()));
    });
    let digest = match &loaded {
        Ok(_) => digest_read(
            &config.desired,
            &read
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ),
        // Files that do not load: a tree changed since the plan is still named as such first.
        Err(_) => desired_digest(&config.desired)?,
    };
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
    let desired = loaded?;
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
    if saved.allow_mass_clear
        && let Err(refusal) = plan.check_guard(&config.guard)
    {
        // In the output of the run that sends it, for whoever reads the CI log later.
        let _ = writeln!(
            anstream::stderr(),
            "note: {} carries the reviewed override of the mass-clear guard (made with `plan \
             --allow-mass-clear`), which would otherwise refuse it: {} of {} managed marks are \
             cleared.",
            path.display(),
            refusal.clears,
            refusal.managed
        );
    }
    if !dry_run && (!plan.is_empty() || changed) {
        // Saved with the apply's results: the same file applied again is "already applied".
        st.last_saved_plan = Some(saved.plan_id.clone());
    }
    Ok((desired, st, plan, changed, saved.allow_mass_clear))
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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
