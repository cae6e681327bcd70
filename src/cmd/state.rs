//! `marksync state list|show|rm`: read and edit the state by hand.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::engine::{Session, load_config, runtime};
use crate::error::{Error, exit};
use crate::render;
use crate::state;

/// `marksync state list [GROUP]`: the groups the state records, with member and mark counts.
pub fn state_list(
    config_path: &Path,
    group: Option<&crate::model::GroupId>,
    json: bool,
) -> Result<u8, Error> {
    let session = Session::open(load_config(config_path)?, Arc::new(SystemClock))?;
    let st = runtime()?.block_on(session.load_state())?;
    let store = session.store();
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
        t += &format!("State {} (serial {}).\n", store.describe(), st.serial);
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
    let session = Session::open(load_config(config_path)?, Arc::new(SystemClock))?;
    let st = runtime()?.block_on(session.load_state())?;
    let now = session.clock().now();
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
    lock_timeout: std::time::Duration,
) -> Result<u8, Error> {
    let session = Session::open(load_config(config_path)?, Arc::new(SystemClock))?;
    let (st, forgotten, pairs) = runtime()?.block_on(async {
        let _lock = session.lock("state rm", false, lock_timeout).await?;
        let mut st = session.load_state().await?;
        let pairs = super::state_rm_note::recorded(&st, group, account, mark);
        let forgotten = state::inspect::rm(&mut st, group, account, mark)?;
        session.save(&mut st).await?;
        Ok::<_, Error>((st, forgotten, pairs))
    })?;
    let config = &session.config;
    // Whether a desired file still declares what was forgotten (then the next apply sets it
    // again). Broken desired files do not stop the removal: the note says it cannot tell.
    let desired = crate::desired::load(&config.desired, config.max_alias_pairs).ok();
    let note = super::state_rm_note::note(desired.as_ref(), &config.desired, group, &pairs);
    let store = session.store();
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
        "Forgot {what}: the state ({}, serial {}{}) no longer records it. {note}",
        store.describe(),
        st.serial,
        store
            .local_files()
            .into_iter()
            .rev()
            .find(|(what, _)| *what == state::file::BACKUP_FILE)
            .map(|(_, bak)| format!(", previous generation in {}", bak.display()))
            .unwrap_or_default()
    );
    Ok(exit::OK)
}
