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
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use crate::model::{Account, GroupId, Mark, MarkSet, UnixTime};

/// The version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Errors reading, writing or locking the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid state JSON. Never read as empty: that would re-plan everything.
    #[error(
        "state file {path} is corrupt ({detail}); it was not used. The previous generation is {bak} if it exists: inspect both, then restore one"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The JSON error with its line and column.
        detail: String,
        /// The backup file.
        bak: PathBuf,
    },
    /// Written by another version of marksync.
    #[error(
        "state file {path} has format_version {found}; this marksync reads version {FORMAT_VERSION}"
    )]
    Version {
        /// The state file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// Belongs to another application.
    #[error(
        "state file {path} belongs to sdkappid {found}, but the config says {expected}; refusing to mix two applications' state"
    )]
    OtherApp {
        /// The state file.
        path: PathBuf,
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
        path: PathBuf,
        /// The backup file.
        bak: PathBuf,
    },
    /// Writing failed; the previous state is intact.
    #[error("cannot save state file {path}: {source}")]
    Write {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error("state {path} is locked by another marksync process{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The holder's pid, when it wrote one.
        pid: Option<u32>,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl StateError {
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
            StateError::Lock { .. } => "lock",
        }
    }
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
    #[serde(default)]
    pub groups: BTreeMap<GroupId, BTreeMap<Account, Confirmed>>,
    /// Group -> account -> marks being set or cleared whose outcome is not yet known (the
    /// crash-safety record). A mark here is unknown, whether or not it is also confirmed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intents: BTreeMap<GroupId, BTreeMap<Account, MarkSet>>,
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
        if let Some(accounts) = self.groups.get_mut(group) {
            if let Some(c) = accounts.get_mut(account) {
                for m in marks {
                    c.remove(m);
                }
                if c.is_empty() {
                    accounts.remove(account);
                }
            }
            if accounts.is_empty() {
                self.groups.remove(group);
            }
        }
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
        if let Some(accounts) = self.intents.get_mut(group) {
            if let Some(set) = accounts.get_mut(account) {
                for m in marks {
                    set.remove(m);
                }
                if set.is_empty() {
                    accounts.remove(account);
                }
            }
            if accounts.is_empty() {
                self.intents.remove(group);
            }
        }
    }
}

/// The `.bak` path of a state path.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}

/// The sidecar lock path of a state path.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Reads the state. A missing file (and no `.bak`) is a first run: an empty state for `sdkappid`.
pub fn load(path: &Path, sdkappid: u64) -> Result<State, StateError> {
    let bytes = match crate::input::read_regular(path, crate::input::MAX_STATE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bak = backup_path(path);
            if bak.exists() {
                return Err(StateError::MissingWithBackup {
                    path: path.into(),
                    bak,
                });
            }
            let mut state = State::new(sdkappid);
            merge_intents(path, &mut state)?;
            return Ok(state);
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            });
        }
    };
    let mut state = parse(path, &bytes)?;
    if state.sdkappid != sdkappid {
        return Err(StateError::OtherApp {
            path: path.into(),
            found: state.sdkappid,
            expected: sdkappid,
        });
    }
    merge_intents(path, &mut state)?;
    Ok(state)
}

/// The intents sidecar of a state path (`<state>.intents`): marks an apply is about to set,
/// written before the first call. Small, so recording intents does not rewrite a state of a
/// million marks before every change; folded into the state (and removed) by the next [`save`].
pub fn intents_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".intents");
    PathBuf::from(s)
}

/// The sidecar's content.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentsFile {
    format_version: u32,
    sdkappid: u64,
    /// The serial of the state generation the intents were recorded against. The next [`save`]
    /// folds them into a later generation, so a sidecar older than the state it sits next to (a
    /// crash between that save's rename and its removal of the sidecar) is already folded.
    /// Missing in sidecars of earlier builds: merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial: Option<u64>,
    intents: BTreeMap<GroupId, BTreeMap<Account, MarkSet>>,
}

/// Adds the sidecar's intents (if any) to `state`. A corrupt sidecar is an error like a corrupt
/// state: ignoring it could leave marks set and unaccounted for.
fn merge_intents(path: &Path, state: &mut State) -> Result<(), StateError> {
    let sidecar = intents_path(path);
    let bytes = match crate::input::read_regular(&sidecar, crate::input::MAX_STATE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateError::Read {
                path: sidecar,
                source,
            });
        }
    };
    let file: IntentsFile = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: sidecar.clone(),
        detail: e.to_string(),
        bak: backup_path(path),
    })?;
    if file.format_version != FORMAT_VERSION {
        return Err(StateError::Version {
            path: sidecar,
            found: file.format_version,
        });
    }
    if file.sdkappid != state.sdkappid {
        return Err(StateError::OtherApp {
            path: sidecar,
            found: file.sdkappid,
            expected: state.sdkappid,
        });
    }
    check_ids(file.intents.iter()).map_err(|detail| StateError::Corrupt {
        path: sidecar.clone(),
        detail,
        bak: backup_path(path),
    })?;
    if file.serial.is_some_and(|s| s < state.serial) {
        // Folded into the state by the save that made this generation.
        return Ok(());
    }
    // Every intent is merged, also those on confirmed marks: a clear (or a renewal) was in flight,
    // so the mark is unknown.
    for (group, accounts) in file.intents {
        for (account, marks) in accounts {
            state.intend(&group, &account, marks.iter());
        }
    }
    Ok(())
}

/// Checks every group ID and account of a state map the way desired files are checked, so a
/// hand-edited or damaged state cannot feed the planner an ID the service would refuse (or a
/// control character into the output). Returns the first problem.
fn check_ids<'a, V: 'a>(
    groups: impl Iterator<Item = (&'a GroupId, &'a BTreeMap<Account, V>)>,
) -> Result<(), String> {
    for (group, accounts) in groups {
        GroupId::new(group.as_str()).map_err(|e| format!("invalid group ID: {e}"))?;
        for account in accounts.keys() {
            Account::new(account.as_str())
                .map_err(|e| format!("invalid account in group {group:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Records the state's intents in the sidecar, atomically and durably (temporary file, fsync,
/// rename, fsync of the directory), without rewriting the state itself.
pub fn save_intents(path: &Path, state: &State) -> Result<(), StateError> {
    let sidecar = intents_path(path);
    let file = IntentsFile {
        format_version: FORMAT_VERSION,
        sdkappid: state.sdkappid,
        serial: Some(state.serial),
        intents: state.intents.clone(),
    };
    write_atomically(
        &sidecar,
        |w| serde_json::to_writer(w, &file).map_err(io::Error::other),
        || Ok(()),
    )
    .map_err(|(_, e)| e)
}

/// Whether a failed [`write_atomically`] had already renamed the new file into place (only the
/// directory's fsync failed): then the new content is what the path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renamed {
    No,
    Yes,
}

/// Writes `path` through a temporary file in the same directory: fsync, `before_rename`, rename,
/// fsync the directory.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
    before_rename: impl FnOnce() -> io::Result<()>,
) -> Result<(), (Renamed, StateError)> {
    let werr = |source: io::Error| {
        (
            Renamed::No,
            StateError::Write {
                path: path.into(),
                source,
            },
        )
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(werr)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".marksync-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(werr)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write(&mut w).map_err(werr)?;
        w.write_all(b"\n").map_err(werr)?;
        w.flush().map_err(werr)?;
    }
    tmp.as_file().sync_all().map_err(werr)?;
    before_rename().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| (Renamed::Yes, werr(e).1))?;
    Ok(())
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
        bak: backup_path(path),
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
        Ok(state) if state.format_version == FORMAT_VERSION => {
            check_ids(state.groups.iter())
                .and_then(|()| check_ids(state.intents.iter()))
                .map_err(|detail| StateError::Corrupt {
                    path: path.into(),
                    detail,
                    bak: backup_path(path),
                })?;
            Ok(state)
        }
        Ok(state) => Err(version(u64::from(state.format_version))),
        Err(full) => {
            let probe: Probe = serde_json::from_slice(bytes).map_err(corrupt)?;
            match probe.format_version {
                Some(v) if v == u64::from(FORMAT_VERSION) => Err(corrupt(full)),
                Some(v) => Err(version(v)),
                None => Err(StateError::Corrupt {
                    path: path.into(),
                    detail: "no format_version".into(),
                    bak: backup_path(path),
                }),
            }
        }
    }
}

/// Writes the state atomically: temporary file in the same directory, fsync, keep the current
/// file as `.bak` (by hard link, so the state path always exists), rename over, fsync the
/// directory. Increments `serial`, only when the write succeeds.
pub fn save(path: &Path, state: &mut State) -> Result<(), StateError> {
    let werr = |source: io::Error| StateError::Write {
        path: path.into(),
        source,
    };
    let previous = state.serial;
    state.serial += 1;
    let keep_backup = || -> io::Result<()> {
        if path.exists() {
            let bak = backup_path(path);
            let dir = bak.parent().map(Path::to_path_buf).unwrap_or_default();
            let bak_tmp = dir.join(format!(".marksync-bak-{}.tmp", std::process::id()));
            let _ = std::fs::remove_file(&bak_tmp);
            std::fs::hard_link(path, &bak_tmp)
                .or_else(|_| std::fs::copy(path, &bak_tmp).map(|_| ()))?;
            std::fs::rename(&bak_tmp, &bak)?;
        }
        Ok(())
    };
    let written = write_atomically(
        path,
        |w| serde_json::to_writer(w, &*state).map_err(io::Error::other),
        keep_backup,
    );
    if let Err((renamed, e)) = written {
        // Once the new file is in place its serial is the one on disk, durable or not.
        if renamed == Renamed::No {
            state.serial = previous;
        }
        return Err(e);
    }
    // The state now holds every open intent: the sidecar is redundant.
    match std::fs::remove_file(intents_path(path)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(werr(e)),
    }
}

/// An exclusive hold on a state: the sidecar lock file, locked for the life of this value.
/// Holds the holder's pid so a refused process can say who holds it.
#[derive(Debug)]
pub struct Lock {
    /// Kept open: the OS lock lives as long as the descriptor.
    _file: File,
    /// The lock file's path.
    pub path: PathBuf,
}

/// Takes the exclusive lock for `state_path`, or says which pid holds it.
pub fn lock(state_path: &Path) -> Result<Lock, StateError> {
    let path = lock_path(state_path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Lock {
            path: path.clone(),
            source,
        })?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StateError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StateError::Locked {
                path: state_path.into(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(StateError::Lock { path, source }),
    }
    let write_pid = |f: &mut File| -> io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        f.sync_all()
    };
    write_pid(&mut file).map_err(|source| StateError::Lock {
        path: path.clone(),
        source,
    })?;
    Ok(Lock { _file: file, path })
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
                while let Some((m, t)) = map.next_entry::<Mark, UnixTime>()? {
                    c.confirm(m, t);
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }
    fn a(s: &str) -> Account {
        Account::new(s).unwrap()
    }
    fn m(n: u64) -> Mark {
        Mark::new(n).unwrap()
    }

    fn sample() -> State {
        let mut s = State::new(1400000000);
        s.confirm(&g("@TGS#a"), &a("host"), [m(500), m(1000)], 1_764_000_000);
        s.confirm(&g("@TGS#a"), &a("teacher"), [m(1001)], 1_764_000_100);
        s.intend(&g("@TGS#b"), &a("x"), [m(600)]);
        s
    }

    #[test]
    fn save_then_load_round_trips_and_counts_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("st/marksync.json");
        let mut s = sample();
        save(&path, &mut s).unwrap();
        assert_eq!(s.serial, 1);
        assert!(
            !backup_path(&path).exists(),
            "first save has no previous generation"
        );
        let loaded = load(&path, 1400000000).unwrap();
        assert_eq!(loaded, s);
        s.forget(&g("@TGS#a"), &a("teacher"), [m(1001)]);
        save(&path, &mut s).unwrap();
        let bak = parse(
            &backup_path(&path),
            &std::fs::read(backup_path(&path)).unwrap(),
        )
        .unwrap();
        assert_eq!(bak.serial, 1, ".bak holds the previous generation");
        assert_eq!(load(&path, 1400000000).unwrap().serial, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""host":{"500":1764000000,"1000":1764000000}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""intents":{"@TGS#b":{"x":[600]}}"#),
            "{text}"
        );
    }

    #[test]
    fn missing_state_is_a_first_run_unless_a_backup_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert_eq!(load(&path, 7).unwrap(), State::new(7));
        std::fs::write(backup_path(&path), "{}").unwrap();
        assert!(matches!(
            load(&path, 7),
            Err(StateError::MissingWithBackup { .. })
        ));
    }

    #[test]
    fn unusable_states_are_refused_never_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let cases: &[(&str, &str)] = &[
            ("", "corrupt"),
            (
                "{\"format_version\": 1, \"sdkappid\": 7, \"serial\": 1, \"groups\": {",
                "corrupt",
            ),
            ("[]", "corrupt"),
            (
                "{\"format_version\": 2, \"sdkappid\": 7, \"serial\": 1}",
                "version",
            ),
            (
                "{\"format_version\": 1, \"sdkappid\": 8, \"serial\": 1}",
                "other_app",
            ),
            (
                "{\"format_version\": 1, \"sdkappid\": 7, \"serial\": 1, \"groups\": {\"g\": {\"a\": {\"999\": 1}}}}",
                "corrupt",
            ),
            (
                "{\"format_version\": 1, \"sdkappid\": 7, \"serial\": 1, \"extra\": true}",
                "corrupt",
            ),
        ];
        for (text, label) in cases {
            std::fs::write(&path, text).unwrap();
            let err = load(&path, 7).expect_err(text);
            assert_eq!(err.metric_label(), *label, "{text}: {err}");
        }
    }

    #[test]
    fn second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let held = lock(&path).unwrap();
        match lock(&path) {
            Err(StateError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        lock(&path).expect("lock is free again once dropped");
    }

    #[test]
    fn confirm_resolves_intents() {
        let mut s = State::new(1);
        s.intend(&g("G"), &a("u"), [m(1000), m(1001)]);
        s.confirm(&g("G"), &a("u"), [m(1000)], 5);
        assert_eq!(s.intents[&g("G")][&a("u")].as_slice(), &[m(1001)]);
        s.drop_intents(&g("G"), &a("u"), [m(1001)]);
        assert!(s.intents.is_empty());
        assert_eq!(s.managed_count(), 1);
    }

    #[test]
    fn intents_sidecar_survives_a_crash_and_is_folded_by_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        // A first apply that crashed after recording its intents: no state file yet.
        let mut s = State::new(7);
        s.intend(&g("G"), &a("u"), [m(1000), m(1001)]);
        save_intents(&path, &s).unwrap();
        assert!(!path.exists());
        let loaded = load(&path, 7).unwrap();
        assert_eq!(
            loaded.intents, s.intents,
            "a crash before the first save loses no intent"
        );

        let mut later = State::new(7);
        later.confirm(&g("G"), &a("u"), [m(1000)], 5);
        save(&path, &mut later).unwrap();
        assert!(
            !intents_path(&path).exists(),
            "a save folds and removes the sidecar"
        );
        // A sidecar written against the current generation is merged whole: an intent on a
        // confirmed mark (a clear in flight) makes that mark unknown.
        let mut clearing = later.clone();
        clearing.intend(&g("G"), &a("u"), [m(1000)]);
        save_intents(&path, &clearing).unwrap();
        let merged = load(&path, 7).unwrap();
        assert_eq!(merged.intents[&g("G")][&a("u")].as_slice(), &[m(1000)]);
        assert!(merged.confirmed(&g("G"), &a("u")).is_some());
        // One written against an older generation was folded by the save that made this one
        // (a crash between that save's rename and its removal of the sidecar): ignored.
        save_intents(&path, &s).unwrap();
        assert!(load(&path, 7).unwrap().intents.is_empty());

        std::fs::write(intents_path(&path), "{").unwrap();
        assert_eq!(load(&path, 7).unwrap_err().metric_label(), "corrupt");
        std::fs::write(
            intents_path(&path),
            r#"{"format_version":1,"sdkappid":8,"intents":{}}"#,
        )
        .unwrap();
        assert_eq!(load(&path, 7).unwrap_err().metric_label(), "other_app");
    }

    #[test]
    fn a_failed_save_leaves_the_serial_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut s = sample();
        save(&path, &mut s).unwrap();
        assert_eq!(s.serial, 1);
        // Root ignores permissions: make the rename fail instead (a non-empty directory where
        // the state file goes).
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir_all(path.join("x")).unwrap();
        assert_eq!(save(&path, &mut s).unwrap_err().metric_label(), "write");
        assert_eq!(s.serial, 1, "serial moves only with a successful write");
    }

    #[test]
    fn ids_in_the_state_and_sidecar_are_validated_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let long = "a".repeat(40);
        let cases = [
            format!(
                r#"{{"format_version":1,"sdkappid":7,"serial":1,"groups":{{"G":{{"{long}":{{"1000":1}}}}}}}}"#
            ),
            r#"{"format_version":1,"sdkappid":7,"serial":1,"groups":{"@TGS#\u0001":{"u":{"1000":1}}}}"#
                .to_string(),
            format!(
                r#"{{"format_version":1,"sdkappid":7,"serial":1,"intents":{{"G":{{"{long}":[1000]}}}}}}"#
            ),
            r#"{"format_version":1,"sdkappid":7,"serial":1,"groups":{"G":{"":{"1000":1}}}}"#
                .to_string(),
        ];
        for text in &cases {
            std::fs::write(&path, text).unwrap();
            let err = load(&path, 7).expect_err(text);
            assert_eq!(err.metric_label(), "corrupt", "{text}: {err}");
            assert!(err.to_string().contains("s.json"), "names the file: {err}");
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::write(
            intents_path(&path),
            format!(r#"{{"format_version":1,"sdkappid":7,"intents":{{"G":{{"{long}":[1000]}}}}}}"#),
        )
        .unwrap();
        let err = load(&path, 7).unwrap_err();
        assert_eq!(err.metric_label(), "corrupt", "{err}");
        assert!(err.to_string().contains("s.json.intents"), "{err}");
    }

    /// Runs `load` on another thread so that a reader that blocks fails the test instead of
    /// hanging it.
    fn load_within(path: &Path) -> Result<State, StateError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load(&path, 7));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("load returned instead of blocking")
    }

    #[test]
    fn a_fifo_or_device_as_state_or_sidecar_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = load_within(&path).unwrap_err();
        assert_eq!(err.metric_label(), "read", "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_file(&path).unwrap();

        let made = |p: &Path| {
            std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success())
        };
        if made(&path) {
            let err = load_within(&path).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
            std::fs::remove_file(&path).unwrap();
        }
        save(&path, &mut State::new(7)).unwrap();
        if made(&intents_path(&path)) {
            let err = load_within(&path).unwrap_err();
            assert!(err.to_string().contains("s.json.intents"), "{err}");
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }
}
