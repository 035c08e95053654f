//! Which files a run consumed and produced.
//!
//! Untraced: a snapshot of the working directory before and after (`crate::snapshot`);
//! materials are the regular files present at the start, products the regular files that are
//! new or changed at the end. Traced: [`traced_products`], the paths that name the inodes the
//! tree wrote.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::digest::sha256_reader;
use crate::observed::{Fate, SettledFile};
use crate::pathtext;
use crate::snapshot::FileStamp;

/// One file of the set: its recorded path and the lowercase hex SHA-256 of its content.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
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

/// What hashing one file gave.
enum Hashed {
    Digest(String),
    /// Gone before it could be hashed: left out quietly (a busy working directory, or a file
    /// its writer deleted).
    Vanished,
    /// Kept changing while it was read, or is not the file the command left: why.
    Unstable(String),
}

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

/// The SHA-256 of `path` as one consistent version of its content. A file that vanished, or is
/// no longer a regular file reached without symlinks, is left out with a notice (a busy working
/// directory is normal); one that keeps changing while it is read, or whose stamp moved since
/// `expected` (its stamp when the command ended), is unstable: someone changed it.
fn hash_settled(
    path: &Path,
    working_dir: &Path,
    expected: Option<&FileStamp>,
) -> anyhow::Result<Hashed> {
    let shown = path.display();
    for _ in 0..HASH_ATTEMPTS {
        let file = match open_without_symlinks(path, working_dir) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %shown, "{shown}: left out: it vanished before it could be hashed");
                return Ok(Hashed::Vanished);
            }
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
                tracing::warn!(path = %shown, "left out: it is reached through a symlink now, which is not followed");
                return Ok(Hashed::Vanished);
            }
            Err(error) => return Err(error).with_context(|| format!("{shown}: cannot hash")),
        };
        if !file.metadata().is_ok_and(|metadata| metadata.is_file()) {
            tracing::warn!(path = %shown, "left out: it is no longer a regular file");
            return Ok(Hashed::Vanished);
        }
        let stamp = |file: &File| file.metadata().map(|metadata| FileStamp::of(&metadata));
        let before = stamp(&file).with_context(|| format!("{shown}: cannot hash"))?;
        if expected.is_some_and(|expected| *expected != before) {
            return Ok(Hashed::Unstable(
                "changed after the command ended, before it was hashed".to_owned(),
            ));
        }
        let digest = sha256_reader(&file).with_context(|| format!("{shown}: cannot hash"))?;
        let after = stamp(&file).with_context(|| format!("{shown}: cannot hash"))?;
        if before == after {
            return Ok(Hashed::Digest(digest));
        }
        tracing::info!(path = %shown, "{shown}: changed while it was hashed; reading it again");
    }
    Ok(Hashed::Unstable(format!(
        "kept changing while it was hashed ({HASH_ATTEMPTS} attempts)"
    )))
}

/// Digests of a set of files, and the files that could not be hashed as one stable version.
#[derive(Debug, Default)]
pub struct HashedFiles {
    pub digests: Vec<FileDigest>,
    /// (recorded path, why) of each file left out because it kept changing.
    pub unstable: Vec<(String, String)>,
}

/// SHA-256 of each file, reusing `known` digests (an archive the oci analysis already read)
/// instead of reading the file again. `expected` holds the stamps the files had when the
/// command ended, where known. Files are hashed on all cores; files that vanish meanwhile are
/// left out quietly, files that keep changing (or changed since `expected`) are listed as
/// unstable.
pub fn hash_files(
    paths: &[PathBuf],
    known: &HashMap<PathBuf, String>,
    expected: &HashMap<PathBuf, FileStamp>,
    working_dir: &Path,
) -> anyhow::Result<HashedFiles> {
    let hash = |path: &PathBuf| -> anyhow::Result<(String, Hashed)> {
        let recorded = recorded_path(path, working_dir);
        let hashed = match known.get(path) {
            Some(digest) => Hashed::Digest(digest.clone()),
            None => hash_settled(path, working_dir, expected.get(path))?,
        };
        Ok((recorded, hashed))
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = paths.len().div_ceil(threads).max(1);
    let hashed: anyhow::Result<Vec<(String, Hashed)>> = std::thread::scope(|scope| {
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
    let mut files = HashedFiles::default();
    for (path, hashed) in hashed? {
        match hashed {
            Hashed::Digest(sha256) => files.digests.push(FileDigest { path, sha256 }),
            Hashed::Vanished => {}
            Hashed::Unstable(why) => {
                tracing::warn!(path, "{path}: left out: {why}");
                files.unstable.push((path, why));
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::fs;

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
    fn changed_files_are_hashed_reusing_known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("new"), "n").unwrap();
        fs::write(d.join("changed"), "2").unwrap();
        let paths = [d.join("changed"), d.join("new")];
        let known = HashMap::from([(d.join("new"), "00".repeat(32))]);
        let digests = hash_files(&paths, &known, &HashMap::new(), d)
            .unwrap()
            .digests;
        assert_eq!(digests[0].path, "changed");
        assert_eq!(digests[0].sha256, sha256_hex(b"2"));
        assert_eq!(digests[1].path, "new");
        assert_eq!(digests[1].sha256, "00".repeat(32));
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
        let hashed = hash_files(&paths, &HashMap::new(), &HashMap::new(), d).unwrap();
        assert_eq!(hashed.digests.len(), 1);
        assert_eq!(hashed.digests[0].path, "kept");
        assert!(hashed.unstable.is_empty());
    }

    /// A product whose stamp moved after the command ended is not hashed as the command's.
    #[test]
    fn a_file_changed_after_the_command_is_unstable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("product"), "by the command").unwrap();
        let stamp = FileStamp::of(&fs::metadata(d.join("product")).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(d.join("product"), "by someone else").unwrap();
        let expected = HashMap::from([(d.join("product"), stamp)]);
        let hashed = hash_files(&[d.join("product")], &HashMap::new(), &expected, d).unwrap();
        assert!(hashed.digests.is_empty());
        assert_eq!(hashed.unstable[0].0, "product");
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
        let digests = hash_files(&paths, &HashMap::new(), &HashMap::new(), d)
            .unwrap()
            .digests;
        assert_eq!(
            digests,
            [FileDigest {
                path: "kept".to_owned(),
                sha256: sha256_hex(b"k")
            }]
        );
    }
}
