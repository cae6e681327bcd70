//! The state in a local file (SPEC 4): load, atomic save with `.bak`, the intents sidecar, the
//! flock lock; and [`FileStore`], the [`StateStore`] over them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::store::{Generation, LockHolder, LockRequest, StateStore, StoreFuture, StoreLock};
use super::{FORMAT_VERSION, Place, State, StateError, parse};
use crate::model::{Account, GroupId, MarkSet};

/// What [`StateStore::local_files`] calls the previous generation of a state file.
pub const BACKUP_FILE: &str = "state backup";

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

/// How many symbolic links [`target`] follows before calling it a loop (Linux's own limit).
const MAX_LINKS: usize = 40;

/// The file a state path stands for: the final target of a chain of symbolic links (relative
/// links resolved against their own directory), in its real directory (links among the parent
/// directories resolved too). A path that does not exist yet, or a dangling link, stands for the
/// file it names in that real directory: the first save creates it there.
///
/// Every store function reads and writes the target, so a link stays a link and the `.bak`, the
/// intents sidecar, the lock and the temporary files live beside the file they belong to (a
/// rename over the link would turn it into a file and leave the target behind, frozen).
pub fn target(path: &Path) -> io::Result<PathBuf> {
    let mut p = std::path::absolute(path)?;
    for _ in 0..=MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)?;
                p = p.parent().unwrap_or(Path::new("/")).join(link);
            }
            Ok(_) => return std::fs::canonicalize(&p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} does not name a file", p.display()),
                    ));
                };
                return Ok(target(dir)?.join(name));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links in a row (a loop?) from {}",
        path.display()
    )))
}

/// Reads the state. A missing file (and no `.bak`) is a first run: an empty state for `sdkappid`.
pub fn load(path: &Path, sdkappid: u64) -> Result<State, StateError> {
    let real = target(path).map_err(|source| StateError::Read {
        path: path.into(),
        source,
    })?;
    load_at(&real, sdkappid).map_err(|e| named(e, path, &real))
}

/// The paths in an error about the file `real` that `given` stands for, as the user wrote them
/// (`state.json`, not `/srv/marksync/state.json`), unless `given` is a symbolic link: then the
/// error is about the target, and names it.
fn named(e: StateError, given: &Path, real: &Path) -> StateError {
    if std::fs::symlink_metadata(given).is_ok_and(|m| m.file_type().is_symlink()) {
        return e;
    }
    e.map_paths(|p| {
        for side in [
            |p: &Path| p.to_path_buf(),
            backup_path,
            intents_path,
            lock_path,
        ] {
            if p == Place::from(side(real)) {
                return side(given).into();
            }
        }
        p
    })
}

/// [`load`] of the file itself.
fn load_at(path: &Path, sdkappid: u64) -> Result<State, StateError> {
    let bytes = match crate::input::read_regular(path, crate::input::MAX_STATE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bak = backup_path(path);
            if bak.exists() {
                return Err(StateError::MissingWithBackup {
                    path: path.into(),
                    bak: bak.into(),
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
    #[serde(deserialize_with = "super::unique_nested")]
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
                path: sidecar.into(),
                source,
            });
        }
    };
    let file: IntentsFile = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: sidecar.clone().into(),
        detail: e.to_string(),
        bak: backup_path(path).into(),
    })?;
    if file.format_version != FORMAT_VERSION {
        return Err(StateError::Version {
            path: sidecar.into(),
            found: file.format_version,
        });
    }
    if file.sdkappid != state.sdkappid {
        return Err(StateError::OtherApp {
            path: sidecar.into(),
            found: file.sdkappid,
            expected: state.sdkappid,
        });
    }
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

/// Records the state's intents in the sidecar, atomically and durably (temporary file, fsync,
/// rename, fsync of the directory), without rewriting the state itself.
pub fn save_intents(path: &Path, state: &State) -> Result<(), StateError> {
    let real = target(path).map_err(|source| StateError::Write {
        path: path.into(),
        source,
    })?;
    save_intents_at(&real, state).map_err(|e| named(e, path, &real))
}

/// [`save_intents`] beside the file itself.
fn save_intents_at(path: &Path, state: &State) -> Result<(), StateError> {
    let sidecar = intents_path(path);
    let file = IntentsFile {
        format_version: FORMAT_VERSION,
        sdkappid: state.sdkappid,
        serial: Some(state.serial),
        intents: state.intents.clone(),
    };
    write_atomically(&sidecar, |w| json_line(w, &file), || Ok(())).map_err(|(_, source)| {
        StateError::Write {
            path: sidecar.clone().into(),
            source,
        }
    })
}

/// Whether a failed [`write_atomically`] had already renamed the new file into place (only the
/// directory's fsync failed): then the new content is what the path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renamed {
    /// The old file (if any) is still in place.
    No,
    /// The new file is in place, but maybe not durably.
    Yes,
}

/// Writes `path` through a temporary file in the same directory: `write`, fsync,
/// `before_rename`, rename, fsync the directory. A crash at any instant leaves the old file or
/// the new one, never a mix. The one atomic write (the state, its intents, a saved plan).
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
    before_rename: impl FnOnce() -> io::Result<()>,
) -> Result<(), (Renamed, io::Error)> {
    let werr = |source: io::Error| (Renamed::No, source);
    // A FIFO, a device or a directory where the file goes is not replaced (the load refuses
    // one too): renaming over a link's target would replace, say, /dev/null itself.
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
        && !meta.file_type().is_symlink()
    {
        return Err(werr(io::Error::other(
            "not a regular file (a FIFO, a device or a directory); marksync will not replace it",
        )));
    }
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
        w.flush().map_err(werr)?;
    }
    tmp.as_file().sync_all().map_err(werr)?;
    before_rename().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| (Renamed::Yes, e))?;
    Ok(())
}

/// A JSON document and a newline, as the state and its intents are written.
fn json_line(w: &mut BufWriter<&mut File>, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *w, value).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

/// Writes the state atomically: temporary file in the same directory, fsync, keep the current
/// file as `.bak` (by hard link, so the state path always exists), rename over, fsync the
/// directory. Increments `serial`, only when the write succeeds.
pub fn save(path: &Path, state: &mut State) -> Result<(), StateError> {
    let real = target(path).map_err(|source| StateError::Write {
        path: path.into(),
        source,
    })?;
    save_at(&real, state).map_err(|e| named(e, path, &real))
}

/// [`save`] of the file itself.
fn save_at(path: &Path, state: &mut State) -> Result<(), StateError> {
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
    let written = write_atomically(path, |w| json_line(w, &*state), keep_backup);
    if let Err((renamed, source)) = written {
        let e = werr(source);
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
    /// Kept open: the OS lock lives as long as its open file description.
    pub(super) file: File,
    /// The lock file's path.
    pub path: PathBuf,
}

impl Drop for Lock {
    /// Unlocks before the descriptor closes: a child process spawned at that moment (by a
    /// program embedding marksync, or a test) may still share the open file description until
    /// its `exec`, and closing alone would leave the lock held for that long.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Turns an I/O error about the lock file `path` into a [`StateError::Lock`] naming it.
fn lock_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + use<> {
    let path = path.to_path_buf();
    move |source| StateError::Lock {
        path: path.into(),
        source,
    }
}

/// Takes the exclusive lock for `state_path` (beside its [`target`]), or says which pid holds it.
///
/// The lock file is opened without following a symbolic link (one there would have its target
/// truncated and overwritten with a pid) and created readable by its owner only.
pub fn lock(state_path: &Path) -> Result<Lock, StateError> {
    let real = target(state_path).map_err(lock_error(&lock_path(state_path)))?;
    lock_at(&real).map_err(|e| named(e, state_path, &real))
}

/// [`lock`] of the file itself.
fn lock_at(state_path: &Path) -> Result<Lock, StateError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let path = lock_path(state_path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(lock_error(&path))?;
    }
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path);
    let is_link = || std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && is_link() => {
            return Err(StateError::Lock {
                path: path.clone().into(),
                source: io::Error::other(
                    "it is a symbolic link; marksync creates this file itself and never follows \
                     a link there: remove the link",
                ),
            });
        }
        Err(e) => return Err(lock_error(&path)(e)),
    };
    let kind = file.metadata().map_err(lock_error(&path))?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else {
            "not a regular file"
        };
        return Err(StateError::Lock {
            path: path.clone().into(),
            source: io::Error::other(format!(
                "it is {what}; marksync creates this file itself: remove it"
            )),
        });
    }
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
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(StateError::Lock {
                path: path.into(),
                source,
            });
        }
    }
    let write_pid = |f: &mut File| -> io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        f.sync_all()
    };
    write_pid(&mut file).map_err(lock_error(&path))?;
    Ok(Lock { file, path })
}

/// A state in a local file: the [`StateStore`] over the functions above. The flock is the
/// one-writer guarantee, so writes need no version check.
#[derive(Debug)]
pub struct FileStore {
    /// The path as configured (what messages name).
    path: PathBuf,
    /// The file the path stood for when the lock was taken: from then on every read and write
    /// goes there, beside the lock, even if a symbolic link is re-pointed meanwhile (a restart
    /// picks the new target).
    pinned: OnceLock<PathBuf>,
}

impl FileStore {
    /// The store for the state file at `path` (a symbolic link is written through, see [`target`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            pinned: OnceLock::new(),
        }
    }

    /// The file to read and write: the pinned one once locked, else what the path stands for now.
    fn real(
        &self,
        err: impl FnOnce(PathBuf, io::Error) -> StateError,
    ) -> Result<PathBuf, StateError> {
        match self.pinned.get() {
            Some(p) => Ok(p.clone()),
            None => target(&self.path).map_err(|e| err(self.path.clone(), e)),
        }
    }
}

/// A held flock, as a [`StoreLock`]: it lasts as long as this process holds it.
impl StoreLock for Lock {
    fn lease_deadline(&self) -> Option<tokio::time::Instant> {
        None
    }

    fn lost(&self) -> bool {
        false
    }
}

impl StateStore for FileStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&self, sdkappid: u64) -> StoreFuture<'_, State> {
        Box::pin(async move {
            let real = self.real(|path, source| StateError::Read {
                path: path.into(),
                source,
            })?;
            load_at(&real, sdkappid).map_err(|e| named(e, &self.path, &real))
        })
    }

    fn save<'a>(&'a self, state: &'a mut State) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let real = self.real(|path, source| StateError::Write {
                path: path.into(),
                source,
            })?;
            save_at(&real, state).map_err(|e| named(e, &self.path, &real))
        })
    }

    fn save_intents<'a>(&'a self, state: &'a State) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let real = self.real(|path, source| StateError::Write {
                path: path.into(),
                source,
            })?;
            save_intents_at(&real, state).map_err(|e| named(e, &self.path, &real))
        })
    }

    fn lock<'a>(&'a self, request: &'a LockRequest) -> StoreFuture<'a, Box<dyn StoreLock>> {
        Box::pin(async move {
            let real = target(&self.path).map_err(lock_error(&lock_path(&self.path)))?;
            // `--lock-timeout`: try again, with a growing pause, until the holder lets go or the
            // wait is over; then the holder is named as without a wait.
            let deadline = tokio::time::Instant::now() + request.wait;
            let mut pause = std::time::Duration::from_millis(50);
            let mut said = false;
            let held = loop {
                match lock_at(&real) {
                    Err(StateError::Locked { pid, .. })
                        if tokio::time::Instant::now() < deadline =>
                    {
                        if !std::mem::replace(&mut said, true) {
                            tracing::warn!(
                                "waiting up to {} for the state's lock, held by {}",
                                humantime::format_duration(request.wait),
                                pid.map_or("another marksync process".to_string(), |p| format!(
                                    "pid {p}"
                                ))
                            );
                        }
                        let left = deadline - tokio::time::Instant::now();
                        tokio::time::sleep(pause.min(left)).await;
                        pause = (pause * 2).min(std::time::Duration::from_secs(1));
                    }
                    other => break other,
                }
            }
            .map_err(|e| named(e, &self.path, &real))?;
            // A second lock of the same store (never done) would keep the first pin.
            let _ = self.pinned.set(real);
            Ok(Box::new(held) as Box<dyn StoreLock>)
        })
    }

    fn holder(&self) -> StoreFuture<'_, Option<LockHolder>> {
        Box::pin(async move { Ok(None) })
    }

    fn unlock<'a>(&'a self, _lock_id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            Err(StateError::Lock {
                path: lock_path(&self.path).into(),
                source: io::Error::other(
                    "a local state's lock is released by the system when its holder exits; \
                     there is nothing to unlock",
                ),
            })
        })
    }

    fn history(&self) -> StoreFuture<'_, Vec<Generation>> {
        Box::pin(async move { Ok(Vec::new()) })
    }

    fn pull(&self, _serial: Option<u64>) -> StoreFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let real = self.real(|path, source| StateError::Read {
                path: path.into(),
                source,
            })?;
            std::fs::read(&real).map_err(|source| StateError::Read {
                path: self.path.clone().into(),
                source,
            })
        })
    }

    fn local_files(&self) -> Vec<(&'static str, PathBuf)> {
        // Beside the path given and beside the file it stands for (a symbolic link's target).
        let mut states = vec![self.path.clone()];
        if let Ok(real) = self.real(|path, source| StateError::Read {
            path: path.into(),
            source,
        }) && real != self.path
        {
            states.push(real);
        }
        let mut files = Vec::new();
        for st in states {
            files.push((BACKUP_FILE, backup_path(&st)));
            files.push(("state intents sidecar", intents_path(&st)));
            files.push(("state lock", lock_path(&st)));
            files.push(("state file", st));
        }
        files
    }
}
