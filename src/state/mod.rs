//! The state file (SPEC section 4): what marksync last had confirmed by the service.
//!
//! ```json
//! {"format_version": 1, "sdkappid": 1400000000, "serial": 7,
//!  "groups":  {"@TGS#a": {"host": {"500": 1764000000, "1000": 1764000000}}},
//!  "intents": {"@TGS#a": {"teacher10": [1000]}}}
//! ```
//! `groups` holds, per group, account and mark, the unix time the service last confirmed that
//! mark. `intents` holds marks an apply is about to set or clear and has not yet seen answered:
//! after a crash such a mark may or may not be on the service, whatever `groups` says, so the
//! planner treats it as unknown (set again if desired, cleared again if not).
//!
//! Architecture invariants: only confirmed results enter `groups`; a save is atomic (temporary
//! file, fsync, rename, fsync of the directory) and keeps the previous generation as `.bak`; a
//! state that cannot be read is an error, never "empty"; one writer at a time (sidecar lock).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use crate::model::{Account, GroupId, Mark, MarkSet, UnixTime};

pub mod file;
pub mod inspect;
pub mod object;
mod open;
pub mod store;
pub use file::{
    FileStore, Lock, Renamed, backup_path, intents_path, load, lock, lock_path, save, save_intents,
    target, write_atomically,
};
pub use object::{ObjectStore, STATE_URL_SCHEMES, StoreSettings};
pub use open::open;
pub use store::{
    Generation, Location, LockHolder, LockRequest, StateStore, StoreFuture, StoreLock,
};

/// The version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// What a state error is about: a file or an object, as its store names it (`state.json`,
/// `state.json.bak`, `s3://bucket/state.json`). Errors speak of places in the user's terms,
/// whichever store is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place(String);

impl Place {
    /// The place as shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for Place {
    fn from(path: &Path) -> Self {
        Place(path.display().to_string())
    }
}

impl From<PathBuf> for Place {
    fn from(path: PathBuf) -> Self {
        Place::from(path.as_path())
    }
}

impl From<&PathBuf> for Place {
    fn from(path: &PathBuf) -> Self {
        Place::from(path.as_path())
    }
}

impl From<String> for Place {
    fn from(description: String) -> Self {
        Place(description)
    }
}

impl From<&str> for Place {
    fn from(description: &str) -> Self {
        Place(description.to_string())
    }
}

/// Errors reading, writing or locking the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The state file.
        path: Place,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid state JSON. Never read as empty: that would re-plan everything.
    #[error(
        "state file {path} is corrupt ({detail}); it was not used. The previous generation is {bak} if it exists: inspect both, then restore one"
    )]
    Corrupt {
        /// The state file.
        path: Place,
        /// The JSON error with its line and column.
        detail: String,
        /// The backup file.
        bak: Place,
    },
    /// Written by another version of marksync.
    #[error(
        "state file {path} has format_version {found}; this marksync reads version {FORMAT_VERSION}"
    )]
    Version {
        /// The state file.
        path: Place,
        /// The version found.
        found: u32,
    },
    /// Belongs to another application.
    #[error(
        "state file {path} belongs to sdkappid {found}, but the config says {expected}; refusing to mix two applications' state"
    )]
    OtherApp {
        /// The state file.
        path: Place,
        /// The state's sdkappid.
        found: u64,
        /// The config's sdkappid.
        expected: u64,
    },
    /// The state is missing but its backup is there: something removed it.
    #[error(
        "state file {path} is missing but {bak} exists; restore it (cp {bak} {path}) rather than starting from nothing"
    )]
    MissingWithBackup {
        /// The state file.
        path: Place,
        /// The backup file.
        bak: Place,
    },
    /// Writing failed; the previous state is intact.
    #[error("cannot save state file {path}: {source}")]
    Write {
        /// The state file.
        path: Place,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error("state {path} is locked by another marksync process{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The state file.
        path: Place,
        /// The holder's pid, when it wrote one.
        pid: Option<u32>,
    },
    /// Another writer replaced the stored state since this process read it (SPEC 11): the write
    /// was refused by the store's version check, and no further call may be sent.
    #[error(
        "state {state} was changed by another writer ({writer}) since this process read it; nothing more was sent. Run plan again to see the new state"
    )]
    Conflict {
        /// The state's path or URL.
        state: String,
        /// Who wrote, as far as the store says.
        writer: String,
    },
    /// The state's store cannot be used by this build or with these settings.
    #[error("state {state}: {detail}")]
    Unavailable {
        /// The state's path or URL.
        state: String,
        /// Why, and what to do.
        detail: String,
    },
    /// Another process holds the state's lock object (SPEC 11).
    #[error(
        "state {state} is locked by `{}` (pid {} on {}) since {}, lease until {}; wait with --lock-timeout, or if that process is gone run `marksync state unlock {}`",
        holder.command, holder.pid, holder.host, rfc3339(holder.started),
        holder.expires.map(rfc3339).unwrap_or_else(|| "its exit".into()), holder.id
    )]
    HeldBy {
        /// The state's URL.
        state: String,
        /// Who holds it.
        holder: Box<LockHolder>,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: Place,
        /// Why.
        source: io::Error,
    },
}

impl StateError {
    /// The same error with every path it names passed through `f`.
    fn map_paths(self, f: impl Fn(Place) -> Place) -> Self {
        use StateError::*;
        match self {
            Read { path, source } => Read {
                path: f(path),
                source,
            },
            Corrupt { path, detail, bak } => Corrupt {
                path: f(path),
                detail,
                bak: f(bak),
            },
            Version { path, found } => Version {
                path: f(path),
                found,
            },
            OtherApp {
                path,
                found,
                expected,
            } => OtherApp {
                path: f(path),
                found,
                expected,
            },
            MissingWithBackup { path, bak } => MissingWithBackup {
                path: f(path),
                bak: f(bak),
            },
            Write { path, source } => Write {
                path: f(path),
                source,
            },
            Locked { path, pid } => Locked { path: f(path), pid },
            Conflict { state, writer } => Conflict { state, writer },
            Unavailable { state, detail } => Unavailable { state, detail },
            HeldBy { state, holder } => HeldBy { state, holder },
            Lock { path, source } => Lock {
                path: f(path),
                source,
            },
        }
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StateError::Read { .. } => "read",
            StateError::Corrupt { .. } => "corrupt",
            StateError::Version { .. } => "version",
            StateError::OtherApp { .. } => "other_app",
            StateError::MissingWithBackup { .. } => "missing_with_backup",
            StateError::Write { .. } => "write",
            StateError::Locked { .. } => "locked",
            StateError::Conflict { .. } => "conflict",
            StateError::Unavailable { .. } => "unavailable",
            StateError::HeldBy { .. } => "locked",
            StateError::Lock { .. } => "lock",
        }
    }
}

/// A unix time as RFC 3339 (UTC), for messages.
fn rfc3339(t: UnixTime) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Confirmation times of one member's marks, sorted by mark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmed(SmallVec<[(Mark, UnixTime); 1]>);

impl Confirmed {
    /// When `m` was last confirmed, if it is held.
    pub fn get(&self, m: Mark) -> Option<UnixTime> {
        self.0
            .binary_search_by_key(&m, |e| e.0)
            .ok()
            .map(|i| self.0[i].1)
    }

    /// Records a confirmation of `m` at `at`.
    pub fn confirm(&mut self, m: Mark, at: UnixTime) {
        match self.0.binary_search_by_key(&m, |e| e.0) {
            Ok(i) => self.0[i].1 = at,
            Err(i) => self.0.insert(i, (m, at)),
        }
    }

    /// Forgets `m`; returns whether it was held.
    pub fn remove(&mut self, m: Mark) -> bool {
        match self.0.binary_search_by_key(&m, |e| e.0) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The held marks and their confirmation times, by mark.
    pub fn iter(&self) -> impl Iterator<Item = (Mark, UnixTime)> + '_ {
        self.0.iter().copied()
    }

    /// The held marks.
    pub fn marks(&self) -> MarkSet {
        self.0.iter().map(|e| e.0).collect()
    }

    /// Whether no mark is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of marks held.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The last-applied state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Always [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// The application this state belongs to.
    pub sdkappid: u64,
    /// Incremented on every save, so operators can tell generations apart.
    pub serial: u64,
    /// Group -> account -> confirmed marks. Only confirmed results enter here.
    #[serde(default, deserialize_with = "unique_nested")]
    pub groups: BTreeMap<GroupId, BTreeMap<Account, Confirmed>>,
    /// Group -> account -> marks being set or cleared whose outcome is not yet known (the
    /// crash-safety record). A mark here is unknown, whether or not it is also confirmed.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_nested"
    )]
    pub intents: BTreeMap<GroupId, BTreeMap<Account, MarkSet>>,
    /// The `plan_id` of the last saved plan `apply FILE` applied, so that applying the same file
    /// again is refused as "already applied" (not just "the state changed"). Absent in states
    /// written before saved plans or never given a saved plan; only the next `apply FILE`
    /// replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_saved_plan: Option<String>,
}

impl State {
    /// The state of a first run: nothing confirmed.
    pub fn new(sdkappid: u64) -> Self {
        State {
            format_version: FORMAT_VERSION,
            sdkappid,
            serial: 0,
            groups: BTreeMap::new(),
            intents: BTreeMap::new(),
            last_saved_plan: None,
        }
    }

    /// Number of confirmed (group, account, mark) triples: the "managed marks".
    pub fn managed_count(&self) -> usize {
        self.groups
            .values()
            .flat_map(BTreeMap::values)
            .map(Confirmed::len)
            .sum()
    }

    /// The confirmed marks of one member.
    pub fn confirmed(&self, group: &GroupId, account: &Account) -> Option<&Confirmed> {
        self.groups.get(group)?.get(account)
    }

    /// Records that the service confirmed `marks` for `account` at `at`, and drops their intents.
    pub fn confirm(
        &mut self,
        group: &GroupId,
        account: &Account,
        marks: impl IntoIterator<Item = Mark>,
        at: UnixTime,
    ) {
        let entry = self
            .groups
            .entry(group.clone())
            .or_default()
            .entry(account.clone())
            .or_default();
        let mut done = Vec::new();
        for m in marks {
            entry.confirm(m, at);
            done.push(m);
        }
        self.drop_intents(group, account, done);
    }

    /// Forgets marks of a member (cleared by us, or dropped by the service).
    pub fn forget(
        &mut self,
        group: &GroupId,
        account: &Account,
        marks: impl IntoIterator<Item = Mark>,
    ) {
        edit_member(&mut self.groups, group, account, |c| {
            for m in marks {
                c.remove(m);
            }
            c.is_empty()
        });
    }

    /// Forgets everything recorded for a group (it no longer exists on the service).
    pub fn forget_group(&mut self, group: &GroupId) {
        self.groups.remove(group);
        self.intents.remove(group);
    }

    /// The marks of a member with an intent (unknown), if any.
    pub fn intended(&self, group: &GroupId, account: &Account) -> Option<&MarkSet> {
        self.intents.get(group)?.get(account)
    }

    /// Records that marks are about to be set or cleared for a member: until the answer is
    /// folded in, they are unknown.
    pub fn intend(
        &mut self,
        group: &GroupId,
        account: &Account,
        marks: impl IntoIterator<Item = Mark>,
    ) {
        self.intents
            .entry(group.clone())
            .or_default()
            .entry(account.clone())
            .or_default()
            .extend(marks);
    }

    /// Drops intents that are resolved (confirmed, or known not to have been applied).
    pub fn drop_intents(
        &mut self,
        group: &GroupId,
        account: &Account,
        marks: impl IntoIterator<Item = Mark>,
    ) {
        edit_member(&mut self.intents, group, account, |set| {
            for m in marks {
                set.remove(m);
            }
            set.is_empty()
        });
    }
}

/// Parses state JSON. A file of another version is named as such, not as corrupt.
///
/// One pass in the usual case: the full parse comes first, and only when it fails is the version
/// probed, so that a future format (whose layout this build may not read) is reported as a version
/// mismatch rather than as corruption. The outcome is the same as probing first: a file that
/// does not even probe is corrupt with the probe's error; one whose version differs is refused
/// as such; one without a version says so; and one of this version that does not parse is
/// corrupt with the full parse's error.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    let corrupt = |e: serde_json::Error| StateError::Corrupt {
        path: path.into(),
        detail: e.to_string(),
        bak: backup_path(path).into(),
    };
    /// Only the version, read when the full parse fails.
    #[derive(Deserialize)]
    struct Probe {
        format_version: Option<u64>,
    }
    let version = |found: u64| StateError::Version {
        path: path.into(),
        found: u32::try_from(found).unwrap_or(u32::MAX),
    };
    match serde_json::from_slice::<State>(bytes) {
        // Group IDs and accounts deserialize through their checks (`model`), so a hand-edited
        // or damaged state cannot feed the planner an ID the service would refuse.
        Ok(state) if state.format_version == FORMAT_VERSION => Ok(state),
        Ok(state) => Err(version(u64::from(state.format_version))),
        Err(full) => {
            if let Some(kind) = not_an_object(bytes) {
                let bak = backup_path(path);
                return Err(StateError::Corrupt {
                    path: path.into(),
                    detail: format!(
                        "the state file holds {kind}, not a state; restore {} or run `marksync import`",
                        bak.display()
                    ),
                    bak: bak.into(),
                });
            }
            let probe: Probe = serde_json::from_slice(bytes).map_err(corrupt)?;
            match probe.format_version {
                Some(v) if v == u64::from(FORMAT_VERSION) => Err(corrupt(full)),
                Some(v) => Err(version(v)),
                None => Err(StateError::Corrupt {
                    path: path.into(),
                    detail: "no format_version".into(),
                    bak: backup_path(path).into(),
                }),
            }
        }
    }
}

/// What a state file holds instead of a JSON object (`null`, a list...), if it is valid JSON of
/// another kind: serde's "expected struct" would name a type of this program, not the problem.
fn not_an_object(bytes: &[u8]) -> Option<&'static str> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    match value {
        serde_json::Value::Null => Some("null"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Array(_) => Some("a list"),
        serde_json::Value::Object(_) => None,
    }
}

impl Serialize for Confirmed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (m, t) in &self.0 {
            map.serialize_entry(&m.get(), t)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Confirmed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Confirmed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of mark to confirmation time")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Confirmed, A::Error> {
                let mut c = Confirmed::default();
                while let Some(m) = map.next_key::<Mark>()? {
                    if c.get(m).is_some() {
                        return Err(serde::de::Error::custom(format!("duplicate mark {m}")));
                    }
                    c.confirm(m, map.next_value::<UnixTime>()?);
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object read into a sorted map, refusing a key that appears twice: "last one wins"
/// would silently drop a group's members (or a member's marks) from the state.
struct UniqueMap<K, V>(BTreeMap<K, V>);

impl<'de, K, V> Deserialize<'de> for UniqueMap<K, V>
where
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Unique<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for Unique<K, V>
        where
            K: Deserialize<'de> + Ord + fmt::Display,
            V: Deserialize<'de>,
        {
            type Value = UniqueMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // marksync writes its state sorted: while every key is greater than the one
                // before, none can repeat, and the entries are collected in a list that the map
                // is then built from in one pass (a million members: no search per key). The
                // first key out of order switches to checking each key against the map, so a
                // duplicate is refused at the same place either way.
                let mut sorted: Vec<(K, V)> = Vec::new();
                let mut out: Option<BTreeMap<K, V>> = None;
                while let Some(k) = map.next_key::<K>()? {
                    if out.is_none() && sorted.last().is_none_or(|(last, _)| *last < k) {
                        let v = map.next_value::<V>()?;
                        sorted.push((k, v));
                        continue;
                    }
                    let out = out
                        .get_or_insert_with(|| std::mem::take(&mut sorted).into_iter().collect());
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key \"{k}\"")));
                    }
                    let v = map.next_value::<V>()?;
                    out.insert(k, v);
                }
                Ok(UniqueMap(
                    out.unwrap_or_else(|| sorted.into_iter().collect()),
                ))
            }
        }
        d.deserialize_map(Unique(std::marker::PhantomData))
    }
}

/// Deserializes a map of maps (group -> account -> value), refusing a duplicate key at either
/// level ([`UniqueMap`]).
fn unique_nested<'de, D, K1, K2, V>(d: D) -> Result<BTreeMap<K1, BTreeMap<K2, V>>, D::Error>
where
    D: Deserializer<'de>,
    K1: Deserialize<'de> + Ord + fmt::Display,
    K2: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    let outer = UniqueMap::<K1, UniqueMap<K2, V>>::deserialize(d)?;
    Ok(outer.0.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Changes a member's entry of `map`, if it has one (`change` says whether it is now empty), then
/// removes what is left empty: the member, then the group.
fn edit_member<V>(
    map: &mut BTreeMap<GroupId, BTreeMap<Account, V>>,
    group: &GroupId,
    account: &Account,
    change: impl FnOnce(&mut V) -> bool,
) {
    if let Some(accounts) = map.get_mut(group) {
        if let Some(v) = accounts.get_mut(account)
            && change(v)
        {
            accounts.remove(account);
        }
        if accounts.is_empty() {
            map.remove(group);
        }
    }
}

#[cfg(test)]
mod tests;
