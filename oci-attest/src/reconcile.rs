//! Two witnesses must agree: the trace (what the kernel saw the tree do) and the working
//! directory itself, before the command (the materials snapshot) and after it.
//!
//! Every file of the working directory that was created, changed or removed must be explained
//! by the trace: written by the tree (its inode settled at that path), moved there or away by
//! a rename or link of the tree, or unlinked by it. A change nobody in the tree made (a daemon
//! writing through an fd the tree passed it, a path the tree sent it, a loop device writing an
//! image, a write the kernel attributed to another fd, another job sharing the directory) is an
//! `untraced-change` naming the files. And a file the trace says the tree wrote whose stamp
//! did not change is no product: whatever the syscall's fd named, this file was not written.
//!
//! Stamps (size, mtime, ctime, inode) decide; where only metadata moved (ctime, mode) the
//! content is compared with the digest the material attestor took before the command.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::digest::sha256_reader;
use crate::observed::{Fate, Incomplete, IncompleteReason, Observation};
use crate::pathtext;
use crate::snapshot::{FileStamp, Snapshot};

/// Files named in one `untraced-change` entry; the rest are counted.
const NAMED_CHANGES: usize = 20;

/// What the comparison found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Changes the trace does not explain, in path order.
    pub unexplained: Vec<Change>,
    /// Paths the trace has as written that did not change: not products.
    pub unchanged_written: BTreeSet<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created(PathBuf),
    Changed(PathBuf),
    Removed(PathBuf),
}

impl Change {
    pub fn path(&self) -> &Path {
        match self {
            Change::Created(path) | Change::Changed(path) | Change::Removed(path) => path,
        }
    }

    fn describe(&self, working_dir: &Path) -> String {
        let (what, path) = match self {
            Change::Created(path) => ("created", path),
            Change::Changed(path) => ("changed", path),
            Change::Removed(path) => ("removed", path),
        };
        format!(
            "{what} {}",
            pathtext::escape(path.strip_prefix(working_dir).unwrap_or(path))
        )
    }
}

/// Compares the working directory `before` and `after` the command with the trace in
/// `observation`. `ignored` paths (private files, exclude globs) are neither changes nor
/// witnesses; `material_digests` are the digests taken before the command.
pub fn reconcile(
    observation: &Observation,
    before: &Snapshot,
    after: &Snapshot,
    material_digests: &HashMap<PathBuf, String>,
    ignored: impl Fn(&Path) -> bool,
) -> Reconciled {
    let written: HashSet<&Path> = observation
        .written
        .iter()
        .flat_map(|file| match &file.fate {
            Fate::Present(paths) => paths.as_slice(),
            _ => &[],
        })
        .map(PathBuf::as_path)
        .collect();
    let mut deleted: HashSet<&Path> = HashSet::new();
    let mut moves: Vec<(&Path, &Path)> = Vec::new();
    let mut linked: HashSet<&Path> = HashSet::new();
    for process in &observation.processes {
        deleted.extend(process.deletes.iter().map(PathBuf::as_path));
        moves.extend(
            process
                .renames
                .iter()
                .map(|(old, new)| (old.as_path(), new.as_path())),
        );
        linked.extend(process.links.iter().map(|(_, new)| new.as_path()));
    }
    // A path reached by a rename of the tree (of the file, or of a directory above it); or,
    // for RENAME_EXCHANGE, the old name of a rename that now holds what the new name held.
    let moved_in = |path: &Path, stamp: &FileStamp| {
        moves.iter().any(|(old, new)| {
            let exchanged = path.strip_prefix(old).ok().and_then(|rest| {
                let counterpart = if rest.as_os_str().is_empty() {
                    new.to_path_buf()
                } else {
                    new.join(rest)
                };
                before.get(&counterpart).copied()
            });
            path.starts_with(new)
                || exchanged
                    .is_some_and(|was| (was.device, was.inode) == (stamp.device, stamp.inode))
        })
    };
    let moved_away = |path: &Path| moves.iter().any(|(old, _)| path.starts_with(old));

    let mut reconciled = Reconciled::default();
    // Only what differs is looked at (one merge of the two snapshots); the globs and the
    // private files are asked about those files alone.
    for difference in before.differences(after) {
        let path = difference.path;
        if ignored(path) {
            continue;
        }
        match (difference.before, difference.after) {
            (_, Some(stamp))
                if written.contains(path) || moved_in(path, stamp) || linked.contains(path) => {}
            (Some(previous), Some(stamp))
                if same_content(path, previous, stamp, material_digests) => {}
            (Some(_), Some(_)) => reconciled
                .unexplained
                .push(Change::Changed(path.to_path_buf())),
            (None, Some(_)) => reconciled
                .unexplained
                .push(Change::Created(path.to_path_buf())),
            (Some(_), None) if deleted.contains(path) || moved_away(path) => {}
            (Some(_), None) => reconciled
                .unexplained
                .push(Change::Removed(path.to_path_buf())),
            (None, None) => {}
        }
    }
    reconciled.unchanged_written = written
        .iter()
        .filter(|path| {
            let now = after.get(path);
            now.is_some() && before.get(path) == now && !ignored(path)
        })
        .map(|path| path.to_path_buf())
        .collect();
    reconciled
}

/// Only metadata moved (mode, owner, links: ctime alone): the content is the material's.
fn same_content(
    path: &Path,
    before: &FileStamp,
    after: &FileStamp,
    material_digests: &HashMap<PathBuf, String>,
) -> bool {
    if before.size != after.size || before.mtime_ns != after.mtime_ns {
        return false;
    }
    let Some(digest) = material_digests.get(path) else {
        return false;
    };
    std::fs::File::open(path)
        .ok()
        .and_then(|file| sha256_reader(file).ok())
        .is_some_and(|now| &now == digest)
}

impl Reconciled {
    /// The `untraced-change` entry, when something changed that the trace does not explain.
    pub fn gap(&self, working_dir: &Path) -> Option<Incomplete> {
        if self.unexplained.is_empty() {
            return None;
        }
        let mut named: Vec<String> = self
            .unexplained
            .iter()
            .take(NAMED_CHANGES)
            .map(|change| change.describe(working_dir))
            .collect();
        if self.unexplained.len() > NAMED_CHANGES {
            named.push(format!(
                "and {} more",
                self.unexplained.len() - NAMED_CHANGES
            ));
        }
        Some(Incomplete {
            reason: IncompleteReason::UntracedChange,
            detail: format!(
                "{} file(s) of the working directory changed without the traced tree changing \
                 them: {} (give the step a working directory of its own, or exclude such files \
                 with --attestor-product-exclude-glob)",
                self.unexplained.len(),
                named.join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::observed::{ObservedProcess, SettledFile, Termination, TraceCounts, TraceMode};

    fn observation(dir: &Path, written: &[&Path], process: ObservedProcess) -> Observation {
        Observation {
            identity: crate::identity::CommandIdentity::current(),
            argv: vec!["x".into()],
            working_dir: dir.to_path_buf(),
            started: UNIX_EPOCH,
            ended: UNIX_EPOCH + Duration::from_secs(1),
            termination: Termination::Exited(0),
            trace: TraceMode::Ebpf,
            counts: TraceCounts::default(),
            processes: vec![process],
            written: written
                .iter()
                .map(|path| SettledFile {
                    dev: 0,
                    ino: 0,
                    written_as: path.to_path_buf(),
                    fate: Fate::Present(vec![path.to_path_buf()]),
                })
                .collect(),
            outside_writes: Vec::new(),
            incomplete: Vec::new(),
        }
    }

    #[test]
    fn every_change_needs_the_trace_and_unchanged_writes_are_no_products() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "kept",
            "written-unchanged",
            "deleted",
            "to-rename",
            "untraced",
            "chmod",
            "gone",
        ] {
            fs::write(d.join(name), name).unwrap();
        }
        fs::create_dir(d.join(".cache")).unwrap();
        let before = Snapshot::take(d).unwrap();
        let materials: HashMap<PathBuf, String> = before
            .paths()
            .map(|path| {
                let digest = sha256_reader(fs::File::open(path).unwrap()).unwrap();
                (path.to_path_buf(), digest)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        // By the tree (the trace says so).
        fs::write(d.join("out"), "product").unwrap();
        fs::remove_file(d.join("deleted")).unwrap();
        fs::rename(d.join("to-rename"), d.join("renamed")).unwrap();
        // By someone else.
        fs::write(d.join("untraced"), "changed behind the trace").unwrap();
        fs::write(d.join("stranger"), "created behind the trace").unwrap();
        fs::remove_file(d.join("gone")).unwrap();
        fs::write(d.join(".cache/x"), "ignored").unwrap();
        let mut permissions = fs::metadata(d.join("chmod")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
        fs::set_permissions(d.join("chmod"), permissions).unwrap();
        let after = Snapshot::take(d).unwrap();

        let mut tree = ObservedProcess::new(2, 1, UNIX_EPOCH);
        tree.deletes.push(d.join("deleted"));
        tree.renames.push((d.join("to-rename"), d.join("renamed")));
        let observation = observation(d, &[&d.join("out"), &d.join("written-unchanged")], tree);
        let reconciled = reconcile(&observation, &before, &after, &materials, |path| {
            path.starts_with(d.join(".cache"))
        });
        assert_eq!(
            reconciled.unexplained,
            [
                Change::Removed(d.join("gone")),
                Change::Created(d.join("stranger")),
                Change::Changed(d.join("untraced")),
            ]
        );
        assert_eq!(
            reconciled.unchanged_written,
            BTreeSet::from([d.join("written-unchanged")])
        );
        let gap = reconciled.gap(d).unwrap();
        assert_eq!(gap.reason, IncompleteReason::UntracedChange);
        assert!(
            gap.detail
                .contains("removed gone, created stranger, changed untraced"),
            "{}",
            gap.detail
        );
    }
}
