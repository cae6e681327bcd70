//! `marksync state pull|push|history|unlock` (SPEC 11): moving a state between a file and a
//! store, its kept generations, and removing a stale lock. Each command works on any store
//! behind the seam; the work is in the `*_in` functions over a [`StateStore`], the commands
//! around them read the config and print.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::{load_config, runtime};
use crate::error::{Error, exit};
use crate::state::{self, Generation, LockRequest, StateError, StateStore};

/// The store the config's `state:` names.
fn open(config: &Config) -> Result<Arc<dyn StateStore>, Error> {
    Ok(state::open(&config.state, config.state_store.as_ref())?)
}

fn write_out(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write output", e))
}

/// `marksync state pull [--serial N]`: the current state (or a kept generation) as a state file.
pub fn state_pull(config_path: &Path, serial: Option<u64>) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let store = open(&config)?;
    let bytes = runtime()?.block_on(store.pull(serial))?;
    write_out(&bytes)?;
    Ok(exit::OK)
}

/// `marksync state history`: the kept generations, newest first.
pub fn state_history(config_path: &Path, json: bool) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let store = open(&config)?;
    let kept = runtime()?.block_on(store.history())?;
    write_out(render_history(&store.describe(), &kept, json).as_bytes())?;
    Ok(exit::OK)
}

/// The history as printed.
fn render_history(state: &str, kept: &[Generation], json: bool) -> String {
    if json {
        return serde_json::json!({ "state": state, "generations": kept }).to_string() + "\n";
    }
    if kept.is_empty() {
        return format!(
            "{state} keeps no earlier generation (a local state keeps one, as .bak).\n"
        );
    }
    let mut t = format!("{:>8}  {:<20}  {:>12}\n", "SERIAL", "WRITTEN", "BYTES");
    for g in kept {
        let at = g
            .written
            .map(|w| {
                let t = std::time::UNIX_EPOCH + Duration::from_secs(w.max(0) as u64);
                humantime::format_rfc3339_seconds(t).to_string()
            })
            .unwrap_or_default();
        t += &format!("{:>8}  {:<20}  {:>12}\n", g.serial, at, g.bytes);
    }
    t += &format!("`marksync state pull --serial N` prints one ({state}).\n");
    t
}

/// `marksync state unlock LOCK_ID`: removes a stale lock, only if its id is `lock_id`.
pub fn state_unlock(config_path: &Path, lock_id: &str) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let store = open(&config)?;
    runtime()?.block_on(store.unlock(lock_id))?;
    println!("Removed lock {lock_id} of {}.", store.describe());
    Ok(exit::OK)
}

/// `marksync state push FILE [--force]`: replaces the stored state with a state file, under the
/// lock. Refuses a state with unsettled intents, another application's state, and (unless
/// `force`) one whose serial is not higher than the stored one.
pub fn state_push(
    config_path: &Path,
    file: &Path,
    force: bool,
    lock_timeout: Duration,
) -> Result<u8, Error> {
    let config = load_config(config_path)?;
    let store = open(&config)?;
    let bytes =
        crate::input::read_regular(file, crate::input::MAX_STATE_BYTES).map_err(|source| {
            StateError::Read {
                path: file.into(),
                source,
            }
        })?;
    let request = LockRequest {
        command: "state push".into(),
        wait: lock_timeout,
        ttl: config_lock_ttl(&config),
        address: None,
    };
    let serial = runtime()?.block_on(push_in(
        store.as_ref(),
        file,
        &bytes,
        config.sdkappid,
        &request,
        force,
    ))?;
    println!(
        "Pushed {} to {} (now serial {serial}).",
        file.display(),
        store.describe()
    );
    Ok(exit::OK)
}

/// How long a lease lasts (SPEC 11's `lock_ttl` default; the config key comes with the seam).
fn config_lock_ttl(_config: &Config) -> Duration {
    Duration::from_secs(30)
}

/// [`state_push`]'s work on `store`: returns the new serial.
pub async fn push_in(
    store: &dyn StateStore,
    file: &Path,
    bytes: &[u8],
    sdkappid: u64,
    request: &LockRequest,
    force: bool,
) -> Result<u64, Error> {
    let mut pushed = state::parse(file, bytes)?;
    let refuse = |detail: String| {
        Error::State(StateError::Unavailable {
            state: store.describe(),
            detail,
        })
    };
    if pushed.sdkappid != sdkappid {
        return Err(StateError::OtherApp {
            path: file.into(),
            found: pushed.sdkappid,
            expected: sdkappid,
        }
        .into());
    }
    if !pushed.intents.is_empty() {
        return Err(refuse(format!(
            "{} has unsettled intents (marks an apply sent without seeing the answer); nothing was pushed. Settle them first: run `marksync apply` (or `marksync import`) against that state, then push it",
            file.display()
        )));
    }
    let lock = store.lock(request).await?;
    let current = store.load(sdkappid).await?;
    if pushed.serial <= current.serial && !force {
        return Err(refuse(format!(
            "{} has serial {}, not higher than the stored state's {}; nothing was pushed. Push a newer state, or replace it anyway with --force (`marksync state pull` saves the stored one first)",
            file.display(),
            pushed.serial,
            current.serial
        )));
    }
    if lock.lost() {
        return Err(refuse(
            "the lock was lost before the push; nothing was pushed".into(),
        ));
    }
    // Above both: a saved plan made against either state no longer matches.
    pushed.serial = pushed.serial.max(current.serial);
    store.save(&mut pushed).await?;
    drop(lock);
    Ok(pushed.serial)
}
