//! `marksync import`: the state from what the service holds (SPEC section 10).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::*;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::engine::{Session, load_config, runtime};
use crate::error::{Error, exit};
use crate::render;

/// Options of `marksync import`.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Show what would be recorded; never write the state.
    pub dry_run: bool,
    /// How long to wait for another holder of the state's lock (`--lock-timeout`; zero fails at
    /// once, naming it).
    pub lock_timeout: std::time::Duration,
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
    let mut session = Session::open(config.clone(), clock)?;
    let _lock = match lock_unless_dry(
        &session,
        "import",
        opts.dry_run,
        opts.lock_timeout,
        &mut interrupts,
    )
    .await?
    {
        Ok(lock) => lock,
        Err(code) => return Ok(code),
    };
    let (desired, mut st) = session.load().await?;
    let r = refresh_or_stop(&mut session, &desired, &mut st, &mut interrupts, "Import").await;
    session.disconnect().await;
    let r = match r? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
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
        counts.get(crate::refresh::DriftKind::Unmanaged),
        match r.classified.unnameable.len() {
            0 => String::new(),
            n => format!(" (and {})", render::unnameable_count(n)),
        },
        counts.get(crate::refresh::DriftKind::NotChecked),
        r.calls,
        render::plural(r.calls as usize, "call", "calls"),
    )
    .map_err(write_err)?;
    if opts.dry_run {
        writeln!(
            out,
            "Dry run: the state ({}) was not written.",
            session.store().describe()
        )
        .map_err(write_err)?;
    } else if !changes.is_empty() {
        session.save(&mut st).await?;
        writeln!(out, "State saved to {}.", session.store().describe()).map_err(write_err)?;
    } else {
        writeln!(out, "The state already records what the service holds.").map_err(write_err)?;
    }
    Ok(exit::OK)
}
