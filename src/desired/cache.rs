//! The daemon's incremental view of the desired files.
//!
//! [`DesiredCache::refresh`] walks the desired directory, and for each file compares its metadata
//! and then its content hash with what it saw last time: only files whose content changed are read
//! and parsed again, and only their groups are replaced in the assembled desired state. Touching a
//! file without changing it, or events from unrelated files (the state directory, editor backups),
//! therefore change nothing and trigger no reconcile.
//!
//! Architecture invariant: the last good desired state is kept until every file parses again and
//! no group is declared twice; a broken file never turns into "no groups".

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::desired::{self, DesiredFile, DesiredState, Origin};
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::GroupId;

/// What a refresh found.
#[derive(Debug)]
pub enum Refresh {
    /// The desired content is what it was: nothing to do.
    Unchanged,
    /// The desired state changed; these files changed content (added, edited or removed).
    Changed(Vec<PathBuf>),
    /// Some file does not read or parse (or a group is declared twice): the last good desired
    /// state is kept, and these are the problems.
    Broken(Diagnostics),
}

/// Metadata that changes whenever content can have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Meta {
    fn of(m: &std::fs::Metadata) -> Self {
        Meta {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// One file as last seen.
#[derive(Clone, Debug)]
struct Entry {
    meta: Meta,
    hash: [u8; 32],
    parsed: Result<Arc<DesiredFile>, Arc<Vec<Diagnostic>>>,
}

/// The desired state the daemon works from, and the files it came from.
#[derive(Debug, Default)]
struct Good {
    state: DesiredState,
    /// Content hash of every file the good state was assembled from.
    files: BTreeMap<PathBuf, [u8; 32]>,
    /// Which groups each file contributed.
    groups_of: BTreeMap<PathBuf, Vec<GroupId>>,
    /// Where each group is declared.
    origins: HashMap<GroupId, Origin>,
}

/// Incremental loader of the desired files (see the module docs).
#[derive(Debug)]
pub struct DesiredCache {
    root: PathBuf,
    /// The config's `max_alias_pairs`: the pairs aliases may add across all files, checked on
    /// every refresh as `desired::load` does.
    max_alias_pairs: usize,
    files: BTreeMap<PathBuf, Entry>,
    good: Option<Good>,
    /// Files re-parsed by the last refresh (for tests and metrics: "only the changed file").
    pub last_parsed: usize,
    /// Whether the last refresh could not read something (the directory, a file's metadata or
    /// content: `EMFILE`, a rename in progress), as opposed to content that does not parse. Such
    /// a problem may go away with no file event to say so, so the daemon retries on its own.
    pub last_unreadable: bool,
}

impl DesiredCache {
    /// A cache of the desired directory or file at `root`; nothing is read until [`refresh`].
    ///
    /// [`refresh`]: DesiredCache::refresh
    pub fn new(root: PathBuf, max_alias_pairs: usize) -> Self {
        DesiredCache {
            root,
            max_alias_pairs,
            files: BTreeMap::new(),
            good: None,
            last_parsed: 0,
            last_unreadable: false,
        }
    }

    /// The desired directory or file.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The last good desired state, if the files ever parsed.
    pub fn desired(&self) -> Option<&DesiredState> {
        self.good.as_ref().map(|g| &g.state)
    }

    /// How many files the current good desired state was assembled from.
    pub fn file_count(&self) -> usize {
        self.good.as_ref().map_or(0, |g| g.files.len())
    }

    /// Re-reads what changed and updates the last good desired state when everything parses.
    pub fn refresh(&mut self) -> Refresh {
        let (paths, mut problems) = desired::discover(&self.root);
        let mut next: BTreeMap<PathBuf, Entry> = BTreeMap::new();
        let mut to_read: Vec<(PathBuf, Meta)> = Vec::new();
        for path in paths {
            match std::fs::metadata(&path) {
                Ok(m) => {
                    let meta = Meta::of(&m);
                    match self.files.get(&path) {
                        Some(e) if e.meta == meta => {
                            next.insert(path, e.clone());
                        }
                        _ => to_read.push((path, meta)),
                    }
                }
                Err(e) => problems.push(Diagnostic::file_error(&path, format!("cannot read: {e}"))),
            }
        }
        let previous = &self.files;
        let max_alias_pairs = self.max_alias_pairs;
        let read: Vec<(PathBuf, Result<Entry, Diagnostic>, bool)> = to_read
            .into_par_iter()
            .map(|(path, meta)| match desired::read_file(&path) {
                Err(d) => (path, Err(d), false),
                Ok(bytes) => {
                    let hash: [u8; 32] = Sha256::digest(&bytes).into();
                    match previous.get(&path) {
                        Some(old) if old.hash == hash => {
                            let entry = Entry {
                                meta,
                                hash,
                                parsed: old.parsed.clone(),
                            };
                            (path, Ok(entry), false)
                        }
                        _ => {
                            let parsed = desired::parse_file(&path, &bytes, max_alias_pairs)
                                .map(Arc::new)
                                .map_err(Arc::new);
                            (path, Ok(Entry { meta, hash, parsed }), true)
                        }
                    }
                }
            })
            .collect();
        self.last_parsed = read.iter().filter(|(_, _, parsed)| *parsed).count();
        for (path, entry, _) in read {
            match entry {
                Ok(e) => {
                    next.insert(path, e);
                }
                Err(d) => problems.push(d),
            }
        }
        self.files = next;
        self.last_unreadable = problems.iter().any(Diagnostic::is_error);
        for entry in self.files.values() {
            if let Err(d) = &entry.parsed {
                problems.extend(d.iter().cloned());
            }
        }
        // The same cap over all files as `desired::load`, whichever files changed.
        let shares = self.files.iter().filter_map(|(path, entry)| {
            let file = entry.parsed.as_ref().ok()?;
            Some((path.as_path(), file.alias_pairs))
        });
        if let Err(d) = desired::check_alias_pairs(shares, self.max_alias_pairs) {
            problems.push(d);
        }
        if problems.iter().any(Diagnostic::is_error) {
            crate::diag::sort(&mut problems);
            return Refresh::Broken(Diagnostics(problems));
        }
        self.merge()
    }

    /// Applies the differences between the parsed files and the good state, after checking that no
    /// group would be declared twice. The conflicts are checked against the good state as it is
    /// (none yet on a first refresh) before anything is changed, so a conflict leaves the good
    /// state exactly as it was: absent when there never was one, never empty or partial.
    fn merge(&mut self) -> Refresh {
        let none = Good::default();
        let good = self.good.as_ref().unwrap_or(&none);
        let current: BTreeMap<&PathBuf, [u8; 32]> =
            self.files.iter().map(|(p, e)| (p, e.hash)).collect();
        let mut gone: Vec<PathBuf> = Vec::new();
        for (path, hash) in &good.files {
            if current.get(path) != Some(hash) {
                gone.push(path.clone());
            }
        }
        let mut fresh: Vec<(&PathBuf, &Arc<DesiredFile>)> = Vec::new();
        for (path, entry) in &self.files {
            if good.files.get(path) != Some(&entry.hash)
                && let Ok(file) = &entry.parsed
            {
                fresh.push((path, file));
            }
        }
        if gone.is_empty() && fresh.is_empty() {
            return Refresh::Unchanged;
        }
        // Conflicts: a fresh group declared by a file that stays, or by two fresh files.
        let mut claimed: HashMap<&GroupId, &Origin> = HashMap::new();
        let mut errors = Vec::new();
        for (_, file) in &fresh {
            for (id, origin, _) in &file.groups {
                let stays_elsewhere = good.origins.get(id).filter(|o| !gone.contains(&o.path));
                if let Some(first) = stays_elsewhere.or_else(|| claimed.get(id).copied()) {
                    errors.push(desired::declared_twice(id, origin, first));
                } else {
                    claimed.insert(id, origin);
                }
            }
        }
        if !errors.is_empty() {
            crate::diag::sort(&mut errors);
            return Refresh::Broken(Diagnostics(errors));
        }
        let good = self.good.get_or_insert_with(Good::default);
        let mut changed = gone.clone();
        for path in &gone {
            for id in good.groups_of.remove(path).unwrap_or_default() {
                good.state.groups.remove(&id);
                good.origins.remove(&id);
            }
            good.files.remove(path);
        }
        for (path, file) in fresh {
            let mut ids = Vec::with_capacity(file.groups.len());
            for (id, origin, group) in &file.groups {
                good.state.groups.insert(id.clone(), group.clone());
                good.origins.insert(id.clone(), origin.clone());
                ids.push(id.clone());
            }
            good.groups_of.insert(path.clone(), ids);
            good.files.insert(path.clone(), self.files[path].hash);
            if !changed.contains(path) {
                changed.push(path.clone());
            }
        }
        good.state.warnings = self
            .files
            .values()
            .filter_map(|e| e.parsed.as_ref().ok())
            .flat_map(|f| f.warnings.iter().cloned())
            .collect();
        changed.sort();
        Refresh::Changed(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, account: &str) -> String {
        format!("groups:\n  \"{id}\":\n    members:\n      {account}: [1000]\n")
    }

    fn changed(r: Refresh) -> Vec<String> {
        match r {
            Refresh::Changed(files) => files
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect(),
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    /// The cap on the pairs aliases add holds across all files in the daemon too, whichever
    /// file changed last.
    #[test]
    fn aliases_over_the_cap_across_files_break_the_refresh() {
        let dir = tempfile::tempdir().unwrap();
        // Each file: one list of 2 marks written out and reused by 10 members: 20 pairs added.
        let aliased = |id: &str| {
            let mut doc =
                format!("groups:\n  \"{id}\":\n    members:\n      u0: &m [1000, 1001]\n");
            for i in 1..=10 {
                doc.push_str(&format!("      u{i}: *m\n"));
            }
            doc
        };
        std::fs::write(dir.path().join("a.yaml"), aliased("@TGS#a")).unwrap();
        let mut cache = DesiredCache::new(dir.path().to_path_buf(), 30);
        assert_eq!(changed(cache.refresh()), ["a.yaml"]);
        std::fs::write(dir.path().join("b.yaml"), aliased("@TGS#b")).unwrap();
        match cache.refresh() {
            Refresh::Broken(d) => {
                let text = d.to_string();
                assert!(text.contains("add 40 (account, mark) pairs"), "{text}");
                assert!(
                    text.contains("a.yaml adds 20") && text.contains("b.yaml adds 20"),
                    "{text}"
                );
            }
            other => panic!("expected Broken, got {other:?}"),
        }
        // The last good state is kept: only the first file's group.
        assert_eq!(cache.desired().unwrap().groups.len(), 1);
    }

    #[test]
    fn only_changed_files_are_parsed_and_touching_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(
                dir.path().join(format!("g{i}.yaml")),
                group(&format!("@TGS#{i}"), "u"),
            )
            .unwrap();
        }
        let mut cache =
            DesiredCache::new(dir.path().to_path_buf(), desired::DEFAULT_MAX_ALIAS_PAIRS);
        assert_eq!(changed(cache.refresh()).len(), 5);
        assert_eq!(cache.last_parsed, 5);
        assert!(matches!(cache.refresh(), Refresh::Unchanged));
        assert_eq!(cache.last_parsed, 0);

        // Same content, new mtime: read and hashed, not parsed, no change.
        let p = dir.path().join("g1.yaml");
        std::fs::write(&p, group("@TGS#1", "u")).unwrap();
        assert!(matches!(cache.refresh(), Refresh::Unchanged));
        assert_eq!(cache.last_parsed, 0);

        std::fs::write(&p, group("@TGS#1", "v")).unwrap();
        assert_eq!(changed(cache.refresh()), ["g1.yaml"]);
        assert_eq!(cache.last_parsed, 1);
        let d = cache.desired().unwrap();
        assert!(
            d.groups[&GroupId::new("@TGS#1").unwrap()]
                .members
                .keys()
                .any(|a| a.as_str() == "v")
        );
        assert_eq!(d.groups.len(), 5);
    }

    #[test]
    fn a_file_that_cannot_be_read_is_told_apart_from_one_that_does_not_parse() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("a.yaml");
        // A symlink whose target is not there yet: a rename in progress.
        std::os::unix::fs::symlink(&target, dir.path().join("a.yaml")).unwrap();
        let mut cache =
            DesiredCache::new(dir.path().to_path_buf(), desired::DEFAULT_MAX_ALIAS_PAIRS);
        assert!(matches!(cache.refresh(), Refresh::Broken(_)));
        assert!(cache.last_unreadable);
        std::fs::write(&target, "groups:\n  \"@TGS#a\":\n    memebrs: {}\n").unwrap();
        assert!(matches!(cache.refresh(), Refresh::Broken(_)));
        assert!(
            !cache.last_unreadable,
            "a parse error is not an I/O problem"
        );
        std::fs::write(&target, group("@TGS#a", "u")).unwrap();
        assert_eq!(changed(cache.refresh()), ["a.yaml"]);
        assert!(!cache.last_unreadable);
    }

    #[test]
    fn broken_files_keep_the_last_good_state_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, group("@TGS#a", "u")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), group("@TGS#b", "u")).unwrap();
        let mut cache =
            DesiredCache::new(dir.path().to_path_buf(), desired::DEFAULT_MAX_ALIAS_PAIRS);
        changed(cache.refresh());

        std::fs::write(&a, "groups:\n  \"@TGS#a\":\n    memebrs: {}\n").unwrap();
        match cache.refresh() {
            Refresh::Broken(d) => assert!(d.to_string().contains("a.yaml:3:5"), "{d}"),
            other => panic!("expected Broken, got {other:?}"),
        }
        assert_eq!(
            cache.desired().unwrap().groups.len(),
            2,
            "last good state kept"
        );

        std::fs::remove_file(&a).unwrap();
        assert_eq!(changed(cache.refresh()), ["a.yaml"]);
        assert_eq!(cache.desired().unwrap().groups.len(), 1);
    }

    #[test]
    fn a_group_moving_between_files_is_not_a_conflict_but_a_duplicate_is() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, group("@TGS#x", "u")).unwrap();
        std::fs::write(&b, "groups: {}\n").unwrap();
        let mut cache =
            DesiredCache::new(dir.path().to_path_buf(), desired::DEFAULT_MAX_ALIAS_PAIRS);
        changed(cache.refresh());

        // Moved in one step (as a git checkout would): fine.
        std::fs::write(&a, "groups: {}\n").unwrap();
        std::fs::write(&b, group("@TGS#x", "w")).unwrap();
        assert_eq!(changed(cache.refresh()), ["a.yaml", "b.yaml"]);

        // Declared in both: refused, last good kept.
        std::fs::write(&a, group("@TGS#x", "u")).unwrap();
        match cache.refresh() {
            Refresh::Broken(d) => assert!(d.to_string().contains("declared in two files"), "{d}"),
            other => panic!("expected Broken, got {other:?}"),
        }
        let x = &cache.desired().unwrap().groups[&GroupId::new("@TGS#x").unwrap()];
        assert!(x.members.keys().any(|a| a.as_str() == "w"));
    }

    #[test]
    fn a_group_declared_twice_from_the_start_leaves_no_desired_state_at_all() {
        // The first refresh finds the conflict: there is no last good state, and `desired()`
        // must say so rather than offer an empty one (which would plan clearing everything).
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, group("@TGS#x", "u")).unwrap();
        std::fs::write(&b, group("@TGS#x", "w")).unwrap();
        let mut cache =
            DesiredCache::new(dir.path().to_path_buf(), desired::DEFAULT_MAX_ALIAS_PAIRS);
        assert!(matches!(cache.refresh(), Refresh::Broken(_)));
        assert!(cache.desired().is_none(), "{:?}", cache.desired());
        assert!(matches!(cache.refresh(), Refresh::Broken(_)));
        assert!(cache.desired().is_none());

        std::fs::write(&b, "groups: {}\n").unwrap();
        assert_eq!(changed(cache.refresh()), ["a.yaml", "b.yaml"]);
        let d = cache.desired().unwrap();
        assert_eq!(d.groups.len(), 1);
    }
}
