//! The file watcher: notify on the desired directory, debounced by [`Debounce`] into one
//! `FilesChanged` input per burst of events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Input;
use super::schedule::Debounce;

/// The file watcher: raw OS events wake [`debounce_files`], which sends `FilesChanged` once
/// they have been quiet for the debounce period. Dropping it stops both.
pub(super) struct FileWatch {
    /// The debounce it was started with: a reload with another one restarts the watcher.
    pub(super) debounce: Duration,
    /// The directory watched recursively, as configured (through any symlinks).
    target: PathBuf,
    /// Where `target` led when the watch began: the OS watches that directory, not the path,
    /// so once a symlink on the path is re-pointed the watch must be restarted ([`Self::moved`]).
    resolved: Option<PathBuf>,
    /// Dropping it stops the OS watch.
    _watcher: notify::RecommendedWatcher,
    /// The debounce task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileWatch {
    /// Starts watching `root` ([`watch_files`]); a failure is the daemon's error.
    pub(super) fn start(
        root: &Path,
        debounce: Duration,
        sender: &mpsc::Sender<Input>,
    ) -> Result<FileWatch, crate::error::Error> {
        watch_files(root, debounce, sender.clone()).map_err(|source| crate::error::Error::Watch {
            root: root.to_path_buf(),
            source,
        })
    }

    /// Whether the watched path now leads to another directory than when the watch began (git-sync
    /// re-pointed `/git/repo`): the watch is then on the old checkout and must be restarted. An
    /// unresolvable path (mid-swap) is not taken as moved.
    pub(super) fn moved(&self) -> bool {
        self.resolved.is_some()
            && std::fs::canonicalize(&self.target).is_ok_and(|now| Some(now) != self.resolved)
    }

    /// Restarts the watch on `root` when the debounce changed (a reload) or the path was
    /// re-pointed ([`FileWatch::moved`]); keeps the old one, saying so, if that fails.
    pub(super) fn follow(&mut self, root: &Path, debounce: Duration, sender: &mpsc::Sender<Input>) {
        if self.debounce == debounce && !self.moved() {
            return;
        }
        match watch_files(root, debounce, sender.clone()) {
            Ok(w) => *self = w,
            Err(e) => tracing::error!(
                "cannot restart the file watcher; keeping the old one: {}",
                describe_watch_error(&e)
            ),
        }
    }
}

/// Watches the desired directory (or a single file's directory). Any event but a read counts as
/// "maybe changed": content hashes decide.
///
/// Reads are ignored because the daemon's own refresh opens every directory it walks: counted,
/// each refresh would cause the next one, once per debounce period, forever.
///
/// The OS watches the directory a path leads to, not the path: when a symlink on the path is
/// re-pointed (git-sync's `/git/repo` swap below `desired: /git/repo/marks`), the recursive watch
/// stays on the old target. So the directory holding each such symlink is watched too (not
/// recursively; only events naming the link count), and the daemon restarts the watch once the
/// path leads elsewhere ([`FileWatch::moved`]).
pub(super) fn watch_files(
    root: &Path,
    debounce: Duration,
    sender: mpsc::Sender<Input>,
) -> notify::Result<FileWatch> {
    use notify::{RecursiveMode, Watcher};
    let (target, mode) = if root.is_dir() {
        (root.to_path_buf(), RecursiveMode::Recursive)
    } else {
        (
            root.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            RecursiveMode::NonRecursive,
        )
    };
    let links = symlinks_on(&target);
    let wake = Arc::new(tokio::sync::Notify::new());
    let waker = wake.clone();
    let watched = target.clone();
    let watched_links = links.clone();
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) => {
                if counts(&event, &watched, &watched_links) {
                    waker.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!("file watcher: {}", describe_watch_error(&e));
                waker.notify_one();
            }
        })?;
    watcher.watch(&target, mode)?;
    for link in &links {
        if let Some(dir) = link.parent().filter(|p| !p.as_os_str().is_empty()) {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    let task = tokio::spawn(debounce_files(wake, debounce, sender));
    Ok(FileWatch {
        debounce,
        resolved: std::fs::canonicalize(&target).ok(),
        target,
        _watcher: watcher,
        task,
    })
}

/// The symbolic links on `path` itself and its ancestors (`/git/repo` for `/git/repo/marks`).
fn symlinks_on(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .filter(|a| {
            a.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        })
        .map(Path::to_path_buf)
        .collect()
}

/// Whether an event from the watch on `target` may mean the desired files changed: anything but
/// a read, unless every path it names lies under a dot-name below `target` (`.git/FETCH_HEAD`,
/// which git-sync rewrites constantly; discovery skips dot-names, so nothing there is read).
/// Names starting with `..` are not dot-names here: a Kubernetes ConfigMap swaps its content
/// through `..data` and `..<timestamp>` directories, which discovery reaches through symlinks.
/// From the watches of the directories holding `links`, only events naming a link count.
fn counts(event: &notify::Event, target: &Path, links: &[PathBuf]) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    let read = matches!(event.kind, EventKind::Access(kind)
        if kind != AccessKind::Close(AccessMode::Write));
    let relevant = |path: &Path| match path.strip_prefix(target) {
        Ok(below) => !below.components().any(|c| {
            let name = c.as_os_str().as_encoded_bytes();
            name.starts_with(b".") && !name.starts_with(b"..")
        }),
        Err(_) => links.is_empty() || links.iter().any(|l| l == path),
    };
    !read && (event.paths.is_empty() || event.paths.iter().any(|p| relevant(p)))
}

/// Sends one `FilesChanged` per burst of wake-ups, as [`Debounce`] decides.
pub(super) async fn debounce_files(
    wake: Arc<tokio::sync::Notify>,
    debounce: Duration,
    sender: mpsc::Sender<Input>,
) {
    let mut burst = Debounce::new(debounce);
    loop {
        match burst.deadline() {
            None => {
                wake.notified().await;
                burst.event(Instant::now());
            }
            Some(deadline) => tokio::select! {
                () = wake.notified() => burst.event(Instant::now()),
                () = tokio::time::sleep_until(deadline) => {
                    if burst.fire(Instant::now()) && sender.send(Input::FilesChanged).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// OS watch errors, phrased so an operator knows what to do.
pub(super) fn describe_watch_error(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "too many watches: raise fs.inotify.max_user_watches (sysctl) or watch fewer files"
                .into()
        }
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(24) => {
            "too many open files: raise the open-file limit (LimitNOFILE=)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths
            .iter()
            .fold(notify::Event::new(kind), |e, p| e.add_path(p.into()))
    }

    #[test]
    fn writes_count_and_reads_and_dot_folders_do_not() {
        let root = Path::new("/etc/marksync/desired");
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let cases: &[(EventKind, &[&str], bool)] = &[
            (write, &["/etc/marksync/desired/a.yaml"], true),
            (write, &["/etc/marksync/desired/team/b.yml"], true),
            (
                EventKind::Create(CreateKind::File),
                &["/etc/marksync/desired/c.yaml"],
                true,
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/etc/marksync/desired/a.yaml"],
                true,
            ),
            (
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/etc/marksync/desired/a.yaml"],
                false,
            ),
            // git-sync and the like rewrite these all the time; discovery skips dot-names.
            (write, &["/etc/marksync/desired/.git/FETCH_HEAD"], false),
            (write, &["/etc/marksync/desired/team/.hidden/x.yaml"], false),
            (write, &["/etc/marksync/desired/.a.yaml.swp"], false),
            // A rename out of a dot folder into the tree does count.
            (
                write,
                &[
                    "/etc/marksync/desired/.git/x",
                    "/etc/marksync/desired/a.yaml",
                ],
                true,
            ),
            // Kubernetes ConfigMap swaps `..data`: those must count.
            (write, &["/etc/marksync/desired/..data"], true),
            (
                write,
                &["/etc/marksync/desired/..2026_11_28_09_00_00.123/a.yaml"],
                true,
            ),
            // Dots above the desired root do not matter; events with no path count.
            (write, &[], true),
        ];
        for (kind, paths, want) in cases {
            assert_eq!(
                counts(&event(*kind, paths), root, &[]),
                *want,
                "{kind:?} {paths:?}"
            );
        }
        let dotted = Path::new("/home/ops/.config/desired");
        assert!(counts(
            &event(write, &["/home/ops/.config/desired/a.yaml"]),
            dotted,
            &[]
        ));
        // Below a linked root: the link's swap counts, its siblings do not.
        let linked = Path::new("/git/repo/marks");
        let links = [PathBuf::from("/git/repo")];
        let rename = EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Both));
        assert!(counts(
            &event(rename, &["/git/.repo-tmp", "/git/repo"]),
            linked,
            &links
        ));
        assert!(!counts(
            &event(write, &["/git/.git/FETCH_HEAD"]),
            linked,
            &links
        ));
        assert!(!counts(&event(write, &["/git/other"]), linked, &links));
        assert!(counts(
            &event(write, &["/git/repo/marks/a.yaml"]),
            linked,
            &links
        ));
    }

    const D: Duration = Duration::from_millis(500);

    /// Runs the debounce task and wakes it at each of `events` (offsets from the start); returns
    /// the offsets at which it sent `FilesChanged`, up to `until`.
    async fn fired(events: &[u64], until: u64) -> Vec<u64> {
        let start = Instant::now();
        let wake = Arc::new(tokio::sync::Notify::new());
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(debounce_files(wake.clone(), D, tx));
        let waker = tokio::spawn({
            let events = events.to_vec();
            async move {
                for at in events {
                    tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                    wake.notify_one();
                }
            }
        });
        let mut out = Vec::new();
        let end = start + Duration::from_millis(until);
        while let Ok(Some(Input::FilesChanged)) = tokio::time::timeout_at(end, rx.recv()).await {
            out.push((Instant::now() - start).as_millis() as u64);
        }
        task.abort();
        waker.abort();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn one_event_fires_once_after_the_quiet_period() {
        assert_eq!(fired(&[0], 5_000).await, [500]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_fires_once_after_its_last_event() {
        assert_eq!(fired(&[0, 100, 200, 300], 5_000).await, [800]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_longer_than_four_periods_fires_at_the_cap_then_again() {
        // An event every 100 ms for 3 s: at most 4 x 500 ms after the burst began, then the
        // rest of the burst as a second one.
        let events: Vec<u64> = (0..30).map(|i| i * 100).collect();
        assert_eq!(fired(&events, 10_000).await, [2_000, 3_400]);
    }

    #[tokio::test(start_paused = true)]
    async fn separate_bursts_fire_separately() {
        assert_eq!(fired(&[0, 2_000], 5_000).await, [500, 2_500]);
    }
}
