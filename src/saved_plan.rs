//! Saved plans (`marksync plan --out FILE`, `marksync apply FILE`): the reviewed plan, written
//! to a file, applied later exactly as it was reviewed, or refused when it no longer fits.
//!
//! # The file
//! One JSON object, written atomically (temporary file in the same directory, fsync, rename):
//!
//! | field | meaning |
//! |---|---|
//! | `format_version` | this layout's version ([`FORMAT_VERSION`]); another version is refused |
//! | `marksync_version` | the version that wrote it (informative) |
//! | `created_at` | when the plan was made, Unix seconds |
//! | `sdkappid` | the app the plan is for |
//! | `state_serial` | the serial of the state the plan was made against |
//! | `desired_digest` | [`desired_digest`] of the desired files the plan was made from |
//! | `refresh` | whether the plan was made with `--refresh` |
//! | `reassert` | whether the plan was made with `--reassert` (absent when not) |
//! | `allow_mass_clear` | whether the plan was made with `--allow-mass-clear`: `apply FILE` lets it through the mass-clear guard (absent when not) |
//! | `refreshed` | with `--refresh`: what the refresh found the state must forget and adopt |
//! | `calls` | the calls, in execution order (same shape as `plan --json`) |
//! | `changes` | every (account, mark) change by group, for rendering the plan again |
//! | `summary` | the counts (same names as `plan --json`) |
//! | `managed` | marks the state managed when planned (the mass-clear guard's denominator) |
//! | `plan_id` | SHA-256 of everything above: names this plan (see "Already applied") |
//!
//! It holds no secret: no key, no UserSig, no token; only IDs and marks, which the desired files
//! already hold in the clear.
//!
//! # The plan ID is not a signature
//! Anyone can edit the file and recompute `plan_id` ([`SavedPlan::content_id`]): it only catches
//! accidental damage and names the plan. What makes an edited file harmless is that `apply FILE`
//! plans again from the state (with the saved refresh changes applied) and the desired files, at
//! the saved `created_at` (so that renewals falling due since cause no false refusal), and
//! [`SavedPlan::verify`] refuses unless the result is exactly the saved plan: the file can only
//! ever make `apply` send what planning would send anyway. Duplicate keys anywhere in the file,
//! a member listed twice in one call or in two calls of the same group and command, and marks
//! that are not strictly ascending are refused when reading.
//!
//! # Refusals
//! [`SavedPlan::check`] refuses a plan made for another app, against another state generation,
//! from other desired files, or longer ago than `saved_plan_max_age`. Applying a plan bumps the
//! state's serial (every apply that sends a call saves the state), so a second apply of the same
//! file would be a serial mismatch; `apply FILE` records the plan's ID in the state
//! (`last_saved_plan`), so the second apply is refused exactly as [`Stale::AlreadyApplied`].
//!
//! Architecture invariant: everything here but [`SavedPlan::write`], [`SavedPlan::read`] and
//! [`desired_digest`] is pure; the clock is a parameter.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Account, GroupId, Mark, MarkSet, UnixTime};
use crate::plan::{Call, Change, ChangeKind, Command, Plan, Summary};
use crate::refresh::StateChanges;

/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest saved plan read: a plan touching a million marks is about 40 MB.
pub const MAX_SAVED_PLAN_BYTES: u64 = 1 << 30;

/// What to do about any refusal: the message's last line.
const REDO: &str =
    "\nWhat to do: run `marksync plan --out FILE` again, review the new plan, and apply it";

/// A saved plan: the file's content. See the module documentation for each field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPlan {
    /// This layout's version: [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The marksync version that wrote the file, for the reader's information.
    pub marksync_version: String,
    /// When the plan was made (Unix seconds): the age check counts from here.
    pub created_at: UnixTime,
    /// The app the plan is for: another app's plan is refused.
    pub sdkappid: u64,
    /// The state generation the plan was made against: any save since (an apply, the daemon, a
    /// callback) may have changed what the plan assumed.
    pub state_serial: u64,
    /// [`desired_digest`] of the desired files: an edit since the review is refused.
    pub desired_digest: String,
    /// Whether the plan was made with `--refresh` (it then compared with the service).
    pub refresh: bool,
    /// Whether the plan was made with `--reassert`: `apply FILE` plans again with the same
    /// policy. Left out of the file when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reassert: bool,
    /// Whether the plan was made with `--allow-mass-clear`: the reviewed override of the
    /// mass-clear guard, which `apply FILE` honours for this plan only. Left out of the file
    /// when false; covered by `plan_id` like every other field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_mass_clear: bool,
    /// With `--refresh`: what the state must forget and adopt before the calls are sent, as the
    /// refresh found when the plan was made. `None` without `--refresh`.
    pub refreshed: Option<SavedStateChanges>,
    /// The calls, in execution order.
    pub calls: Vec<SavedCall>,
    /// Every change by group, as the human plan shows them.
    pub changes: BTreeMap<GroupId, Vec<SavedChange>>,
    /// The counts, named as in `plan --json`.
    pub summary: SavedSummary,
    /// Marks the state managed when planned: the mass-clear guard's denominator at apply time.
    pub managed: usize,
    /// SHA-256 (hex) of every other field: names this plan, so that a state that records the
    /// last applied plan ID can tell "already applied" from "the state changed".
    pub plan_id: String,
}

/// One call: `{"group", "command", "members": [{"account", "marks"}]}`, as in `plan --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedCall {
    /// The group.
    pub group: GroupId,
    /// `set` or `clear`.
    pub command: SavedCommand,
    /// The members, each with all its marks for this command.
    pub members: Vec<SavedMember>,
}

/// `set` or `clear`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedCommand {
    /// Set the listed marks.
    Set,
    /// Clear the listed marks.
    Clear,
}

/// One member of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedMember {
    /// The account (checked like a desired file's when read).
    pub account: Account,
    /// The marks, strictly ascending (checked when read: a mark listed twice is refused).
    #[serde(deserialize_with = "strictly_ascending")]
    pub marks: MarkSet,
}

/// One (account, mark) change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedChange {
    /// `set`, `clear`, `renew` or `reassert`.
    pub kind: SavedChangeKind,
    /// The member.
    pub account: Account,
    /// The mark.
    pub mark: Mark,
    /// For `renew`: when the mark was last confirmed (the plan shows its age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<UnixTime>,
}

/// Why a mark is in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedChangeKind {
    /// Desired and not confirmed.
    Set,
    /// Held and not desired.
    Clear,
    /// Mark 500 due for renewal.
    Renew,
    /// Re-sent because the plan reasserts.
    Reassert,
}

/// The counts, with `plan --json`'s names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSummary {
    /// Marks to set.
    pub set: usize,
    /// Marks to clear.
    pub clear: usize,
    /// Marks 500 to renew.
    pub renew: usize,
    /// Groups with changes.
    pub groups: usize,
    /// API calls.
    pub calls: usize,
}

/// What a refresh found the state must forget and adopt ([`StateChanges`], serializable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedStateChanges {
    /// Recorded marks the service no longer holds.
    pub forget: Vec<(GroupId, Account, Mark)>,
    /// Live and desired marks to record as confirmed at the given time.
    pub adopt: Vec<(GroupId, Account, Mark, UnixTime)>,
}

impl From<&StateChanges> for SavedStateChanges {
    fn from(c: &StateChanges) -> Self {
        SavedStateChanges {
            forget: c.forget.clone(),
            adopt: c.adopt.clone(),
        }
    }
}

impl From<SavedStateChanges> for StateChanges {
    fn from(c: SavedStateChanges) -> Self {
        StateChanges {
            forget: c.forget,
            adopt: c.adopt,
        }
    }
}

/// Where a saved plan was made: what [`SavedPlan::new`] records besides the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// When the plan was made.
    pub created_at: UnixTime,
    /// The app.
    pub sdkappid: u64,
    /// The state's serial when the plan was made (before any refresh changes, which are saved
    /// with the plan and applied by `apply FILE`, not by `plan`).
    pub state_serial: u64,
    /// [`desired_digest`] of the desired files.
    pub desired_digest: String,
    /// Whether the plan was made with `--reassert`.
    pub reassert: bool,
}

/// Why a saved plan is refused. Every message says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// The plan is for another app (another config, or the config's `sdkappid` changed).
    #[error(
        "the saved plan is for sdkappid {planned}, but the config is for {current}; nothing was \
         sent.{REDO} with this config."
    )]
    OtherApp {
        /// The plan's app.
        planned: u64,
        /// The config's app.
        current: u64,
    },
    /// The state's last applied plan is this one: applying it again is refused.
    #[error(
        "the saved plan was already applied (the state records it as the last plan applied); \
         nothing was sent.\nWhat to do: nothing, if it did what was reviewed. For anything left \
         to do, run `marksync plan --out FILE` again, review the new plan, and apply it."
    )]
    AlreadyApplied,
    /// The state was saved since the plan was made: the plan may no longer be what it takes.
    /// (Not this plan's own apply: that is [`Stale::AlreadyApplied`].)
    #[error(
        "the state was saved since the plan was made: its serial moved from {planned} to \
         {current} (an apply, `marksync state rm`, `marksync import` or the daemon changed it), \
         so the plan may no longer be what it takes; nothing was sent.{REDO}."
    )]
    StateChanged {
        /// The serial the plan was made against.
        planned: u64,
        /// The serial now.
        current: u64,
    },
    /// The desired files changed since the plan was made.
    #[error(
        "the desired files changed since the plan was made (a file was edited, added or \
         removed); nothing was sent.{REDO}."
    )]
    DesiredChanged,
    /// The plan is older than `saved_plan_max_age`.
    #[error(
        "the saved plan is {age} old, older than saved_plan_max_age ({max}); marks may have \
         changed on the service since; nothing was sent.{REDO}.",
        age = crate::model::age(*age_secs),
        max = crate::model::age(*max_age_secs)
    )]
    TooOld {
        /// The plan's age in seconds.
        age_secs: i64,
        /// The limit.
        max_age_secs: i64,
    },
    /// The plan says it was made in the future (a clock stepped back, or an edited file).
    #[error(
        "the saved plan was made {} from now by this machine's clock; nothing was sent.{REDO}.",
        crate::model::age(*ahead_secs)
    )]
    FromTheFuture {
        /// How far ahead.
        ahead_secs: i64,
    },
    /// Planning again from the state and the desired files (at the saved `created_at`) does not
    /// give the saved plan: the file was edited (its ID recomputed) or made by other means.
    #[error(
        "the saved plan is not what planning again from the state and the desired files gives \
         ({detail}); the file was edited after it was written, or belongs elsewhere. Nothing was \
         sent.{REDO}; never edit a saved plan by hand."
    )]
    NotAsPlanned {
        /// What differs first.
        detail: String,
    },
}

impl Stale {
    /// A short label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Stale::OtherApp { .. } => "other_app",
            Stale::AlreadyApplied => "already_applied",
            Stale::StateChanged { .. } => "state_changed",
            Stale::DesiredChanged => "desired_changed",
            Stale::TooOld { .. } => "too_old",
            Stale::FromTheFuture { .. } => "from_the_future",
            Stale::NotAsPlanned { .. } => "not_as_planned",
        }
    }
}

/// Why a saved plan cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    /// The file cannot be read (missing, not a regular file, too large).
    #[error("cannot read the saved plan {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a saved plan of this layout.
    #[error("{path} is not a saved plan marksync can read: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file is a saved plan of another layout version.
    #[error(
        "{path} is a saved plan of format version {found}; this marksync reads version \
         {FORMAT_VERSION}: make the plan again with this version"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// The file's content does not match its `plan_id` (edited by hand, or damaged).
    #[error(
        "{path} was modified after it was written (its plan_id does not match its content); \
         nothing was sent.{REDO}; never edit a saved plan by hand."
    )]
    Tampered {
        /// The file.
        path: PathBuf,
    },
    /// The file cannot be written.
    #[error("cannot write the saved plan {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `plan --out` was given a path it must not write: not a regular file, a symbolic link,
    /// or a file marksync reads (config, key, token, state and its sidecars, desired files).
    #[error("refusing to write the saved plan to {path}: {reason}")]
    Destination {
        /// The path given.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// The desired files cannot be read to compute their digest.
    #[error("cannot read the desired files to compute their digest: {0}")]
    Desired(String),
}

impl SavedPlan {
    /// The saved form of `plan`, made as `provenance` says, with what `--refresh` found (if used).
    pub fn new(plan: &Plan, provenance: Provenance, refreshed: Option<&StateChanges>) -> Self {
        let calls = plan
            .calls
            .iter()
            .map(|c| SavedCall {
                group: c.group.clone(),
                command: match c.command {
                    Command::Set => SavedCommand::Set,
                    Command::Clear => SavedCommand::Clear,
                },
                members: c
                    .members
                    .iter()
                    .map(|(account, marks)| SavedMember {
                        account: account.clone(),
                        marks: marks.clone(),
                    })
                    .collect(),
            })
            .collect();
        let changes = plan
            .changes
            .iter()
            .map(|(g, list)| {
                let list = list
                    .iter()
                    .map(|c| {
                        let (kind, confirmed_at) = match c.kind {
                            ChangeKind::Set => (SavedChangeKind::Set, None),
                            ChangeKind::Clear => (SavedChangeKind::Clear, None),
                            ChangeKind::Renew(at) => (SavedChangeKind::Renew, Some(at)),
                            ChangeKind::Reassert => (SavedChangeKind::Reassert, None),
                        };
                        SavedChange {
                            kind,
                            account: c.account.clone(),
                            mark: c.mark,
                            confirmed_at,
                        }
                    })
                    .collect();
                (g.clone(), list)
            })
            .collect();
        let s = plan.summary;
        let mut saved = SavedPlan {
            format_version: FORMAT_VERSION,
            marksync_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: provenance.created_at,
            sdkappid: provenance.sdkappid,
            state_serial: provenance.state_serial,
            desired_digest: provenance.desired_digest,
            refresh: refreshed.is_some(),
            reassert: provenance.reassert,
            allow_mass_clear: false,
            refreshed: refreshed.map(SavedStateChanges::from),
            calls,
            changes,
            summary: SavedSummary {
                set: s.set,
                clear: s.clear,
                renew: s.renew,
                groups: s.groups,
                calls: s.calls,
            },
            managed: plan.managed,
            plan_id: String::new(),
        };
        saved.plan_id = saved.content_id();
        saved
    }

    /// This plan with the mass-clear guard overridden (`plan --allow-mass-clear --out`): `apply
    /// FILE` sends it even when it clears more than the guard allows. The plan ID is recomputed.
    pub fn with_mass_clear_allowed(mut self) -> Self {
        self.allow_mass_clear = true;
        self.plan_id = self.content_id();
        self
    }

    /// The plan ID of this content: SHA-256 (hex) of the serialized plan with an empty
    /// `plan_id`. Anyone can compute it (it is no signature; see the module documentation).
    pub fn content_id(&self) -> String {
        let mut copy = self.clone();
        copy.plan_id = String::new();
        let bytes = serde_json::to_vec(&copy).expect("a saved plan serializes");
        hex::encode(Sha256::digest(&bytes))
    }

    /// The plan to execute, exactly as saved.
    pub fn to_plan(&self) -> Plan {
        Plan {
            calls: self.calls.iter().map(call_of).collect(),
            changes: self
                .changes
                .iter()
                .map(|(g, list)| (g.clone(), self.changes_of(list)))
                .collect(),
            summary: self.summary_of(),
            managed: self.managed,
        }
    }

    /// One group's saved changes as the plan's.
    fn changes_of(&self, list: &[SavedChange]) -> Vec<Change> {
        list.iter()
            .map(|c| Change {
                kind: match c.kind {
                    SavedChangeKind::Set => ChangeKind::Set,
                    SavedChangeKind::Clear => ChangeKind::Clear,
                    SavedChangeKind::Renew => {
                        ChangeKind::Renew(c.confirmed_at.unwrap_or(self.created_at))
                    }
                    SavedChangeKind::Reassert => ChangeKind::Reassert,
                },
                account: c.account.clone(),
                mark: c.mark,
            })
            .collect()
    }

    /// The saved counts as the plan's.
    fn summary_of(&self) -> Summary {
        let s = self.summary;
        Summary {
            set: s.set,
            clear: s.clear,
            renew: s.renew,
            groups: s.groups,
            calls: s.calls,
        }
    }

    /// What the refresh found, to apply to the state before the calls (`apply --refresh`'s
    /// order), or `None` when the plan was made without `--refresh`.
    pub fn refreshed_changes(&self) -> Option<StateChanges> {
        self.refreshed.clone().map(StateChanges::from)
    }

    /// Whether the plan may still be applied: same app, same state generation, same desired
    /// files, not older than `max_age_secs`. `last_applied`, when the state records it, is the
    /// `plan_id` of the last saved plan applied (it turns a serial mismatch into
    /// [`Stale::AlreadyApplied`] when it is this plan). Pure.
    ///
    /// The checks run in this order, so the message names the most fundamental mismatch: app,
    /// already applied, state, desired files, age.
    pub fn check(
        &self,
        sdkappid: u64,
        state_serial: u64,
        desired_digest: &str,
        last_applied: Option<&str>,
        now: UnixTime,
        max_age_secs: i64,
    ) -> Result<(), Stale> {
        if self.sdkappid != sdkappid {
            return Err(Stale::OtherApp {
                planned: self.sdkappid,
                current: sdkappid,
            });
        }
        if last_applied == Some(self.plan_id.as_str()) {
            return Err(Stale::AlreadyApplied);
        }
        if self.state_serial != state_serial {
            return Err(Stale::StateChanged {
                planned: self.state_serial,
                current: state_serial,
            });
        }
        if self.desired_digest != desired_digest {
            return Err(Stale::DesiredChanged);
        }
        let age = now.saturating_sub(self.created_at);
        if age < 0 {
            return Err(Stale::FromTheFuture { ahead_secs: -age });
        }
        if age > max_age_secs {
            return Err(Stale::TooOld {
                age_secs: age,
                max_age_secs,
            });
        }
        Ok(())
    }

    /// Whether `replanned` (what planning again from the state, with the saved refresh changes
    /// applied, and the desired files gives at `created_at` with the saved policy) is exactly
    /// this plan: the same calls in the same order, and the same changes, counts and guard
    /// denominator. The refusal names the first call that differs. Pure.
    ///
    /// Compares one call (and one group's changes) at a time: no second copy of a large plan.
    pub fn verify(&self, replanned: &Plan) -> Result<(), Stale> {
        if let Some(detail) = first_call_difference(&self.calls, &replanned.calls) {
            return Err(Stale::NotAsPlanned { detail });
        }
        let changes_match = self.changes.len() == replanned.changes.len()
            && self
                .changes
                .iter()
                .zip(&replanned.changes)
                .all(|((g, list), (rg, rlist))| g == rg && self.changes_of(list) == *rlist);
        let detail = if !changes_match {
            "the calls match, but the list of changes does not"
        } else if self.summary_of() != replanned.summary {
            "the calls match, but the summary counts do not"
        } else if self.managed != replanned.managed {
            "the calls match, but the count of managed marks does not"
        } else {
            return Ok(());
        };
        Err(Stale::NotAsPlanned {
            detail: detail.into(),
        })
    }

    /// Whether the saved refresh changes are ones a refresh can make: every adopted mark is
    /// desired, and no clear that the plan without them (`without`) sends is missing from the
    /// plan with them (`with`): a refresh may add calls, never remove one (SPEC 10). Without
    /// this, an edited `refreshed.forget` with its calls and ID recomputed would drop a clear
    /// and leave the mark on the service, unrecorded. Pure.
    pub fn check_refresh_changes(
        &self,
        desired: &crate::desired::DesiredState,
        without: &Plan,
        with: &Plan,
    ) -> Result<(), Stale> {
        let Some(changes) = &self.refreshed else {
            return Ok(());
        };
        for (g, a, m, _) in &changes.adopt {
            let declared = desired
                .groups
                .get(g)
                .and_then(|group| group.members.get(a))
                .is_some_and(|marks| marks.contains(*m));
            if !declared {
                return Err(Stale::NotAsPlanned {
                    detail: format!(
                        "its refresh changes adopt mark {m} of {a} in {g}, which no desired file \
                         declares"
                    ),
                });
            }
        }
        let clears = |p: &Plan| -> HashSet<(GroupId, Account, Mark)> {
            p.calls
                .iter()
                .filter(|c| c.command == Command::Clear)
                .flat_map(|c| {
                    c.members.iter().flat_map(move |(a, marks)| {
                        marks.iter().map(move |m| (c.group.clone(), a.clone(), m))
                    })
                })
                .collect()
        };
        let kept = clears(with);
        let mut dropped: Vec<_> = clears(without).difference(&kept).cloned().collect();
        dropped.sort();
        if let Some((g, a, m)) = dropped.first() {
            return Err(Stale::NotAsPlanned {
                detail: format!(
                    "its refresh changes drop the clear of mark {m} of {a} in {g}; a refresh may \
                     add calls, never remove one"
                ),
            });
        }
        Ok(())
    }

    /// The file's bytes: pretty JSON (it is meant to be read in review), newline-terminated.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a saved plan serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parses a saved plan. Refuses another format version (named as such, not as corrupt), an
    /// unknown field, an invalid ID or mark, and content that does not match its `plan_id`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, SavedPlanError> {
        #[derive(Deserialize)]
        struct Probe {
            format_version: Option<u64>,
        }
        let corrupt = |detail: String| SavedPlanError::Corrupt {
            path: path.into(),
            detail,
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        match probe.format_version {
            None => return Err(corrupt("no format_version".into())),
            Some(v) if v != u64::from(FORMAT_VERSION) => {
                return Err(SavedPlanError::Version {
                    path: path.into(),
                    found: v,
                });
            }
            Some(_) => {}
        }
        reject_duplicate_keys(bytes).map_err(corrupt)?;
        let saved: SavedPlan = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if let Some(detail) = member_listed_twice(&saved.calls) {
            return Err(corrupt(detail));
        }
        if saved.content_id() != saved.plan_id {
            return Err(SavedPlanError::Tampered { path: path.into() });
        }
        Ok(saved)
    }

    /// Reads a saved plan: a regular file of bounded size, then [`SavedPlan::from_bytes`].
    pub fn read(path: &Path) -> Result<Self, SavedPlanError> {
        let bytes = crate::input::read_regular(path, MAX_SAVED_PLAN_BYTES).map_err(|source| {
            SavedPlanError::Read {
                path: path.into(),
                source,
            }
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Writes the plan atomically ([`crate::state::write_atomically`]): a crash leaves the old
    /// file or the new one, never half.
    pub fn write(&self, path: &Path) -> Result<(), SavedPlanError> {
        crate::state::write_atomically(path, |w| w.write_all(&self.to_bytes()), || Ok(())).map_err(
            |(_, source)| SavedPlanError::Write {
                path: path.into(),
                source,
            },
        )
    }
}

/// A saved call as the plan's.
fn call_of(c: &SavedCall) -> Call {
    Call {
        group: c.group.clone(),
        command: match c.command {
            SavedCommand::Set => Command::Set,
            SavedCommand::Clear => Command::Clear,
        },
        members: c
            .members
            .iter()
            .map(|m| (m.account.clone(), m.marks.clone()))
            .collect(),
    }
}

/// `call N (set @TGS#a, 2 members)`: a call as a refusal names it.
fn describe_call(index: usize, call: &Call) -> String {
    format!(
        "call {} ({} {}, {} {})",
        index + 1,
        call.command.as_str(),
        call.group,
        call.members.len(),
        if call.members.len() == 1 {
            "member"
        } else {
            "members"
        }
    )
}

/// The first difference between the saved calls and the calls planned again, in words, or
/// `None` when they are the same.
fn first_call_difference(saved: &[SavedCall], replanned: &[Call]) -> Option<String> {
    for (i, (s, r)) in saved.iter().zip(replanned).enumerate() {
        let s = &call_of(s);
        if s == r {
            continue;
        }
        if s.group != r.group || s.command != r.command {
            return Some(format!(
                "the file's {} is {} when planned again",
                describe_call(i, s),
                describe_call(i, r)
            ));
        }
        let member = |m: Option<&(Account, MarkSet)>| match m {
            Some((a, marks)) => format!("{a} [{marks}]"),
            None => "no member".to_string(),
        };
        let j = s
            .members
            .iter()
            .zip(&r.members)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| s.members.len().min(r.members.len()));
        return Some(format!(
            "{}: the file has {} where planning again gives {}",
            describe_call(i, s),
            member(s.members.get(j)),
            member(r.members.get(j))
        ));
    }
    match saved.len().cmp(&replanned.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "the file's {} is not planned again",
            describe_call(replanned.len(), &call_of(&saved[replanned.len()]))
        )),
        std::cmp::Ordering::Less => Some(format!(
            "planning again gives a {} the file does not have",
            describe_call(saved.len(), &replanned[saved.len()])
        )),
    }
}

/// A member listed twice in one call, or in two calls of the same group and command, in words.
fn member_listed_twice(calls: &[SavedCall]) -> Option<String> {
    let mut seen: HashSet<(&GroupId, SavedCommand, &Account)> = HashSet::new();
    for (i, call) in calls.iter().enumerate() {
        for member in &call.members {
            if !seen.insert((&call.group, call.command, &member.account)) {
                let command = match call.command {
                    SavedCommand::Set => "set",
                    SavedCommand::Clear => "clear",
                };
                return Some(format!(
                    "call {} lists {} again: a member appears at most once among the {command} \
                     calls of group {}",
                    i + 1,
                    member.account,
                    call.group
                ));
            }
        }
    }
    None
}

/// Reads a member's marks, refusing a list that is not strictly ascending (a mark listed twice
/// would otherwise vanish silently).
fn strictly_ascending<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MarkSet, D::Error> {
    let marks = Vec::<Mark>::deserialize(d)?;
    if let Some(w) = marks.windows(2).find(|w| w[0] >= w[1]) {
        return Err(serde::de::Error::custom(if w[0] == w[1] {
            format!("mark {} is listed twice for one member", w[0])
        } else {
            format!("marks {} and {} are not in ascending order", w[0], w[1])
        }));
    }
    Ok(marks.into())
}

/// The digest of desired files given as (path relative to the desired root, content): SHA-256
/// over the files sorted by relative path, each as the path's length and bytes, then the
/// content's length and bytes (lengths as 8-byte little-endian, so no two file sets hash the
/// same input). A file edited, added, removed or renamed changes it. `sha256:` + hex. Pure.
pub fn digest_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut files: Vec<(&str, &[u8])> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (path, bytes) in files {
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// [`digest_files`] of the desired files under `root` (a directory, or one file), found as
/// [`crate::desired::discover`] finds them and read as the loader reads them. Paths are relative
/// to `root` (a single file: its name) with `/` separators, so the digest does not depend on
/// where the checkout lives.
pub fn desired_digest(root: &Path) -> Result<String, SavedPlanError> {
    let (files, diags) = crate::desired::discover(root);
    if let Some(d) = diags.first() {
        return Err(SavedPlanError::Desired(d.to_string()));
    }
    let mut read = Vec::with_capacity(files.len());
    for file in files {
        let bytes = crate::input::read_regular(&file, crate::input::MAX_DESIRED_BYTES)
            .map_err(|e| SavedPlanError::Desired(format!("{}: {e}", file.display())))?;
        read.push((file, bytes));
    }
    Ok(digest_read(root, &read))
}

/// [`digest_files`] of files read under `root` (as the desired loader shows them), named as
/// [`desired_digest`] names them.
pub fn digest_read(root: &Path, files: &[(PathBuf, Vec<u8>)]) -> String {
    let named: Vec<(String, &[u8])> = files
        .iter()
        .map(|(file, bytes)| {
            let rel = if file == root {
                file.file_name().map(PathBuf::from).unwrap_or_default()
            } else {
                file.strip_prefix(root).unwrap_or(file).to_path_buf()
            };
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            (rel.join("/"), bytes.as_slice())
        })
        .collect();
    digest_files(named.iter().map(|(p, b)| (p.as_str(), *b)))
}

mod destination;
mod unique_keys;

pub use destination::check_destination;
use unique_keys::reject_duplicate_keys;

#[cfg(test)]
mod tests;
