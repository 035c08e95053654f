//! The working directory as the filesystem shows it: the regular files under a directory with
//! the stamps that change when a file is written, truncated or replaced. Taken before the
//! command (materials) and after it (the second witness of what changed, beside the trace).

use std::cmp::Ordering;
use std::collections::{btree_map, BTreeMap};
use std::fs;
use std::iter::Peekable;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// What changes when a file is written, truncated or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
    pub device: u64,
}

impl FileStamp {
    pub fn of(metadata: &fs::Metadata) -> FileStamp {
        let nanos =
            |seconds: i64, nanos: i64| i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        FileStamp {
            size: metadata.len(),
            mtime_ns: nanos(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: nanos(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }
}

/// The regular files under a directory (symlinks are not followed), by absolute path.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    files: BTreeMap<PathBuf, FileStamp>,
}

impl Snapshot {
    /// Walks `dir`. Subdirectories that cannot be read are skipped with a warning: they can
    /// hold neither materials nor products we could hash.
    pub fn take(dir: &Path) -> anyhow::Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        let mut pending = vec![dir.to_path_buf()];
        let mut first = true;
        while let Some(current) = pending.pop() {
            let entries = match fs::read_dir(&current) {
                Ok(entries) => entries,
                Err(error) if !first => {
                    tracing::warn!("skipping {}: {error}", current.display());
                    continue;
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("{}: cannot read directory", dir.display()))
                }
            };
            first = false;
            for entry in entries {
                let entry = entry.with_context(|| format!("{}: cannot list", current.display()))?;
                let path = entry.path();
                let Ok(metadata) = fs::symlink_metadata(&path) else {
                    continue; // vanished while walking
                };
                if metadata.is_dir() {
                    pending.push(path);
                } else if metadata.is_file() {
                    snapshot.files.insert(path, FileStamp::of(&metadata));
                }
            }
        }
        Ok(snapshot)
    }

    /// Keeps only the files for which `keep` is true.
    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.files.retain(|path, _| keep(path));
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    pub fn files(&self) -> impl Iterator<Item = (&Path, &FileStamp)> {
        self.files
            .iter()
            .map(|(path, stamp)| (path.as_path(), stamp))
    }

    pub fn get(&self, path: &Path) -> Option<&FileStamp> {
        self.files.get(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Files that are new in `self` or whose stamp differs from `before`.
    pub fn changed_since(&self, before: &Snapshot) -> Vec<PathBuf> {
        before
            .differences(self)
            .filter(|difference| difference.after.is_some())
            .map(|difference| difference.path.to_path_buf())
            .collect()
    }

    /// The files whose stamp differs between `self` (before) and `after`, or that exist in only
    /// one of them, in path order. One merge of the two sorted maps: a lookup per file would
    /// compare paths component by component a dozen times each.
    pub fn differences<'a>(&'a self, after: &'a Snapshot) -> Differences<'a> {
        Differences {
            before: self.files.iter().peekable(),
            after: after.files.iter().peekable(),
        }
    }
}

/// A file that is not the same in two snapshots: created (`before` is `None`), removed
/// (`after` is `None`) or changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Difference<'a> {
    pub path: &'a Path,
    pub before: Option<&'a FileStamp>,
    pub after: Option<&'a FileStamp>,
}

/// See [`Snapshot::differences`].
pub struct Differences<'a> {
    before: Peekable<btree_map::Iter<'a, PathBuf, FileStamp>>,
    after: Peekable<btree_map::Iter<'a, PathBuf, FileStamp>>,
}

impl<'a> Iterator for Differences<'a> {
    type Item = Difference<'a>;

    fn next(&mut self) -> Option<Difference<'a>> {
        loop {
            let order = match (self.before.peek(), self.after.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((old, _)), Some((new, _))) => old.cmp(new),
            };
            let (before, after) = match order {
                Ordering::Less => (self.before.next(), None),
                Ordering::Greater => (None, self.after.next()),
                Ordering::Equal => (self.before.next(), self.after.next()),
            };
            let before = before.map(|(path, stamp)| (path.as_path(), stamp));
            let after = after.map(|(path, stamp)| (path.as_path(), stamp));
            let stamp = |side: Option<(&'a Path, &'a FileStamp)>| side.map(|(_, stamp)| stamp);
            if stamp(before) == stamp(after) {
                continue;
            }
            let path = before.or(after).map(|(path, _)| path)?;
            return Some(Difference {
                path,
                before: stamp(before),
                after: stamp(after),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sees_new_and_changed_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("same"), "s").unwrap();
        fs::write(d.join("sub/changed"), "1").unwrap();
        fs::write(d.join("replaced"), "r").unwrap();
        std::os::unix::fs::symlink("same", d.join("link")).unwrap();
        let before = Snapshot::take(d).unwrap();
        assert_eq!(before.paths().count(), 3);

        fs::write(d.join("sub/changed"), "2").unwrap();
        fs::write(d.join("new"), "n").unwrap();
        fs::write(d.join("replaced.tmp"), "r").unwrap();
        fs::rename(d.join("replaced.tmp"), d.join("replaced")).unwrap();
        let after = Snapshot::take(d).unwrap();
        let changed = after.changed_since(&before);
        assert_eq!(
            changed,
            [d.join("new"), d.join("replaced"), d.join("sub/changed")]
        );
        assert_eq!(after.get(&d.join("same")), before.get(&d.join("same")));

        fs::remove_file(d.join("sub/changed")).unwrap();
        let last = Snapshot::take(d).unwrap();
        let differences: Vec<(PathBuf, bool, bool)> = before
            .differences(&last)
            .map(|found| {
                let path = found.path.to_path_buf();
                (path, found.before.is_some(), found.after.is_some())
            })
            .collect();
        assert_eq!(
            differences,
            [
                (d.join("new"), false, true),
                (d.join("replaced"), true, true),
                (d.join("sub/changed"), true, false),
            ]
        );
    }
}
