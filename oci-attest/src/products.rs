//! Which files a run consumed and produced.
//!
//! Untraced: a snapshot of the working directory before and after; materials are the regular
//! files present at the start, products the regular files that are new or changed at the end.
//! Traced: [`traced_products`], the paths that name the inodes the tree wrote.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::digest::sha256_reader;
use crate::observed::{Fate, SettledFile};
use crate::pathtext;

/// One file of the set: its recorded path and the lowercase hex SHA-256 of its content.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
}

/// What changes when a file is written, truncated or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> FileStamp {
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

    /// Files that are new in `self` or whose stamp differs from `before`.
    pub fn changed_since(&self, before: &Snapshot) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|(path, stamp)| before.files.get(*path) != Some(stamp))
            .map(|(path, _)| path.clone())
            .collect()
    }
}

/// Products of a traced run: every path that names, now, an inode the tree wrote (the trace
/// settled each written inode against the filesystem at the end; deleted and pseudo-filesystem
/// files have no such path).
pub fn traced_products(written: &[SettledFile]) -> Vec<PathBuf> {
    let paths: BTreeSet<&PathBuf> = written
        .iter()
        .flat_map(|file| match &file.fate {
            Fate::Present(paths) => paths.as_slice(),
            _ => &[],
        })
        .collect();
    paths.into_iter().cloned().collect()
}

/// OCI layout directories among the products: a directory with both `oci-layout` and
/// `index.json` (`exists` asks the filesystem), at least one of them produced (copying into an
/// existing layout rewrites only `index.json`).
pub fn layout_dirs(products: &[PathBuf], exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let dirs: BTreeSet<&Path> = products
        .iter()
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name == "oci-layout" || name == "index.json")
        })
        .filter_map(|path| path.parent())
        .filter(|dir| exists(&dir.join("oci-layout")) && exists(&dir.join("index.json")))
        .collect();
    dirs.into_iter().map(Path::to_path_buf).collect()
}

/// How a file is named in the attestation: relative to the working dir when inside it
/// (as witness records), absolute otherwise.
pub fn recorded_path(path: &Path, working_dir: &Path) -> String {
    pathtext::escape(path.strip_prefix(working_dir).unwrap_or(path))
}

/// How many times a file that changes while it is read is read again before it is left out.
const HASH_ATTEMPTS: usize = 3;

/// Opens a file to hash it without following a symlink: none below the working directory,
/// none anywhere for a path outside it (the tracer's paths are already resolved). A symlink
/// put where a file was must not make oci-attest read, and sign the digest of, a file outside
/// the attested tree. Non-blocking, so a FIFO put there cannot stall the run (the caller checks
/// that a regular file was opened).
fn open_without_symlinks(path: &Path, working_dir: &Path) -> std::io::Result<File> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let opened = match path.strip_prefix(working_dir) {
        Ok(relative) if !relative.as_os_str().is_empty() => {
            let dir = File::open(working_dir)?;
            openat2(&dir, relative, how)
        }
        _ => openat2(nix::fcntl::AT_FDCWD, path, how),
    };
    opened.map(File::from).map_err(std::io::Error::from)
}

/// The SHA-256 of `path` as one consistent version of its content, or why there is none: a
/// busy working directory (a parallel build, another tool's temp files) is normal, so a file
/// that vanishes, keeps changing while it is read, or is no longer a regular file reached
/// without symlinks, is left out with a notice instead of failing the run.
fn hash_settled(path: &Path, working_dir: &Path) -> anyhow::Result<Option<String>> {
    let shown = path.display();
    for _ in 0..HASH_ATTEMPTS {
        let file = match open_without_symlinks(path, working_dir) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %shown, "{shown}: left out: it vanished before it could be hashed");
                return Ok(None);
            }
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
                tracing::warn!(path = %shown, "left out: it is reached through a symlink now, which is not followed");
                return Ok(None);
            }
            Err(error) => return Err(error).with_context(|| format!("{shown}: cannot hash")),
        };
        if !file.metadata().is_ok_and(|metadata| metadata.is_file()) {
            tracing::warn!(path = %shown, "left out: it is no longer a regular file");
            return Ok(None);
        }
        let stamp = |file: &File| file.metadata().map(|metadata| FileStamp::of(&metadata));
        let before = stamp(&file).with_context(|| format!("{shown}: cannot hash"))?;
        let digest = sha256_reader(&file).with_context(|| format!("{shown}: cannot hash"))?;
        let after = stamp(&file).with_context(|| format!("{shown}: cannot hash"))?;
        if before == after {
            return Ok(Some(digest));
        }
        tracing::info!(path = %shown, "{shown}: changed while it was hashed; reading it again");
    }
    tracing::warn!(path = %shown, "{shown}: left out: it kept changing while it was hashed");
    Ok(None)
}

/// SHA-256 of each file, reusing `known` digests (an archive the oci analysis already read)
/// instead of reading the file again. Files are hashed on all cores; files that vanish or keep
/// changing meanwhile are left out (see [`hash_settled`]).
pub fn hash_files(
    paths: &[PathBuf],
    known: &HashMap<PathBuf, String>,
    working_dir: &Path,
) -> anyhow::Result<Vec<FileDigest>> {
    let hash = |path: &PathBuf| -> anyhow::Result<Option<FileDigest>> {
        let sha256 = match known.get(path) {
            Some(digest) => digest.clone(),
            None => match hash_settled(path, working_dir)? {
                Some(digest) => digest,
                None => return Ok(None),
            },
        };
        Ok(Some(FileDigest {
            path: recorded_path(path, working_dir),
            sha256,
        }))
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = paths.len().div_ceil(threads).max(1);
    let hashed: anyhow::Result<Vec<Option<FileDigest>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(hash).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(results) => results,
                Err(_) => vec![Err(anyhow::anyhow!("a hashing thread panicked"))],
            })
            .collect()
    });
    Ok(hashed?.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;

    #[test]
    fn traced_products_are_the_present_paths_of_written_inodes() {
        let settled = |fate| SettledFile {
            dev: 1,
            ino: 2,
            written_as: PathBuf::from("/w/.img.tar.tmp"),
            fate,
        };
        let written = [
            settled(Fate::Present(vec![
                PathBuf::from("/w/img.tar"),
                PathBuf::from("/w/hardlink"),
            ])),
            settled(Fate::Deleted),
            settled(Fate::Pseudo),
            settled(Fate::Unverified),
            settled(Fate::Present(vec![PathBuf::from("/w/img.tar")])),
        ];
        assert_eq!(
            traced_products(&written),
            ["/w/hardlink", "/w/img.tar"].map(PathBuf::from)
        );
    }

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

        let known = HashMap::from([(d.join("new"), "00".repeat(32))]);
        let digests = hash_files(&changed, &known, d).unwrap();
        assert_eq!(digests[0].path, "new");
        assert_eq!(digests[0].sha256, "00".repeat(32));
        assert_eq!(digests[2].path, "sub/changed");
        assert_eq!(digests[2].sha256, sha256_hex(b"2"));
    }

    #[test]
    fn layout_dirs_need_both_marker_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        fs::write(layout.join("oci-layout"), "{}").unwrap();
        fs::write(layout.join("index.json"), "{}").unwrap();
        let half = dir.path().join("half");
        fs::create_dir(&half).unwrap();
        fs::write(half.join("index.json"), "{}").unwrap();
        let products = vec![
            layout.join("index.json"),
            layout.join("blobs/sha256/ab"),
            half.join("index.json"),
        ];
        assert_eq!(layout_dirs(&products, |p| p.exists()), [layout]);
    }

    /// A busy working directory: a listed file that is gone by the time it is hashed is left
    /// out, the others are hashed.
    #[test]
    fn vanished_files_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("kept"), "k").unwrap();
        let paths = [d.join("kept"), d.join("vanished.tmp")];
        let digests = hash_files(&paths, &HashMap::new(), d).unwrap();
        assert_eq!(digests.len(), 1);
        assert_eq!(digests[0].path, "kept");
    }

    /// A file listed as a regular file, then replaced by a symlink out of the tree (or put
    /// under a directory replaced by one) before it is hashed: the target outside is never
    /// read, the file is left out.
    #[test]
    fn symlinks_out_of_the_attested_tree_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("sub")).unwrap();
        for (name, content) in [("kept", "k"), ("swapped", "s"), ("sub/secret", "x")] {
            fs::write(d.join(name), content).unwrap();
        }
        let paths = [d.join("kept"), d.join("swapped"), d.join("sub/secret")];
        fs::remove_file(d.join("swapped")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.join("swapped")).unwrap();
        fs::remove_dir_all(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("sub")).unwrap();
        let digests = hash_files(&paths, &HashMap::new(), d).unwrap();
        assert_eq!(
            digests,
            [FileDigest {
                path: "kept".to_owned(),
                sha256: sha256_hex(b"k")
            }]
        );
    }
}
