//! After the tree ended: where is each written inode now, and is each executed program still
//! the file the kernel ran? Every claim is checked by inode, so a path is only reported when
//! it names that very file now (`lstat`), never because a string says so.
//!
//! Candidates for a written inode, in order: the path the kernel built at the first write,
//! then the targets of the tree's renames and links and the paths of its truncates, then a
//! walk of the working directory and of the directories of those paths (inode → every path).
//! An inode found nowhere is known deleted (never linked, unlinked by the tree, its number
//! reused) or else unverified.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::sha256_reader;
use crate::observed::{
    ExecRecord, Fate, Incomplete, IncompleteReason, ObservedProcess, SettledFile,
};
use crate::pathtext;
use crate::trace::events::FileId;
use crate::trace::model::WrittenInode;

/// Magic numbers (`super_block.s_magic`) of kernel pseudo-filesystems: writes there
/// (`/proc/self/oom_score_adj`, cgroup files) change kernel state, not stored content.
const PSEUDO_FILESYSTEMS: &[u64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0x7363_6673, // securityfs
    0xcafe_4a11, // bpf
    0x6265_6570, // configfs
    0xde5e_81e4, // efivarfs
    0x6165_676c, // pstore
    0xf97c_ff8c, // selinuxfs
    0x6573_5543, // fusectl
];

/// Entries visited by the walk of the working directory before it gives up (what it could
/// not map stays unverified).
const WALK_LIMIT: usize = 2_000_000;

/// Where each written inode is now. Reasons for what cannot be accounted for are appended.
pub fn settle_written(
    written: &[WrittenInode],
    processes: &[ObservedProcess],
    working_dir: &Path,
    incomplete: &mut Vec<Incomplete>,
) -> Vec<SettledFile> {
    let written = with_truncated(written, processes);
    let written = written.as_slice();
    // The last inode with a given (dev, ino) is the current one: an earlier generation was
    // freed (deleted) before its number was reused.
    let mut latest: HashMap<FileId, u32> = HashMap::new();
    for inode in written {
        latest.insert(inode.file, inode.generation);
    }
    let mut candidates: BTreeSet<PathBuf> = written.iter().map(|w| w.path.clone()).collect();
    let mut deleted_paths: HashSet<&Path> = HashSet::new();
    for process in processes {
        candidates.extend(process.renames.iter().map(|(_, new)| new.clone()));
        candidates.extend(process.links.iter().map(|(_, new)| new.clone()));
        candidates.extend(process.truncates.iter().cloned());
        deleted_paths.extend(process.deletes.iter().map(PathBuf::as_path));
        deleted_paths.extend(process.renames.iter().map(|(old, _)| old.as_path()));
    }
    let mut names = InodeNames::default();
    for path in &candidates {
        names.add(path);
    }
    let linked: HashSet<&Path> = processes
        .iter()
        .flat_map(|process| process.links.iter().map(|(old, _)| old.as_path()))
        .collect();

    let needs_walk = written
        .iter()
        .any(|inode| !is_pseudo(inode) && !names.by_inode.contains_key(&inode.file));
    if needs_walk {
        let mut dirs: BTreeSet<PathBuf> = candidates
            .iter()
            .filter_map(|path| path.parent().map(Path::to_path_buf))
            .collect();
        dirs.remove(working_dir);
        names.walk(working_dir, usize::MAX, WALK_LIMIT);
        for dir in dirs {
            names.walk(&dir, 1, WALK_LIMIT);
        }
    }

    let mut settled = Vec::new();
    let mut seen: HashSet<(FileId, u32)> = HashSet::new();
    for inode in written {
        if !seen.insert((inode.file, inode.generation)) {
            continue;
        }
        let fate = if is_pseudo(inode) {
            Fate::Pseudo
        } else if latest.get(&inode.file) != Some(&inode.generation) {
            Fate::Deleted
        } else if let Some(paths) = names.by_inode.get(&inode.file) {
            Fate::Present(paths.iter().cloned().collect())
        } else if (inode.nlink == 0 && !linked.contains(inode.path.as_path()))
            || deleted_paths.contains(inode.path.as_path())
        {
            Fate::Deleted
        } else {
            incomplete.push(Incomplete {
                reason: IncompleteReason::UnverifiedProduct,
                detail: format!(
                    "{}: written (inode {}:{}) but no path names it now and it was not seen deleted",
                    pathtext::escape(&inode.path),
                    inode.file.dev,
                    inode.file.ino
                ),
            });
            Fate::Unverified
        };
        settled.push(SettledFile {
            dev: inode.file.dev,
            ino: inode.file.ino,
            written_as: inode.path.clone(),
            fate,
        });
    }
    settled
}

/// `written` plus the files truncated by path (truncate(2) has no fd to identify the file by:
/// the path is resolved now, so a file replaced at that path since is a limit documented in
/// `docs/tracing.md`).
fn with_truncated(written: &[WrittenInode], processes: &[ObservedProcess]) -> Vec<WrittenInode> {
    let mut all = written.to_vec();
    let known: HashSet<FileId> = written.iter().map(|inode| inode.file).collect();
    for path in processes.iter().flat_map(|process| &process.truncates) {
        let Ok(metadata) = fs::symlink_metadata(path) else {
            continue;
        };
        let file = FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        };
        if metadata.is_file() && !known.contains(&file) {
            all.push(WrittenInode {
                file,
                generation: 0,
                path: path.clone(),
                path_flags: 0,
                fs_magic: 0,
                nlink: metadata.nlink() as u32,
            });
        }
    }
    all
}

fn is_pseudo(inode: &WrittenInode) -> bool {
    PSEUDO_FILESYSTEMS.contains(&inode.fs_magic)
}

/// Regular files found, by inode.
#[derive(Default)]
struct InodeNames {
    by_inode: HashMap<FileId, BTreeSet<PathBuf>>,
    visited: usize,
}

impl InodeNames {
    fn add(&mut self, path: &Path) {
        // lstat: a symlink is not the file it points to.
        if let Ok(metadata) = fs::symlink_metadata(path) {
            if metadata.is_file() {
                let id = FileId {
                    dev: metadata.dev(),
                    ino: metadata.ino(),
                };
                self.by_inode
                    .entry(id)
                    .or_default()
                    .insert(path.to_path_buf());
            }
        }
    }

    /// Adds the regular files under `dir`, `depth` levels down (symlinks not followed).
    fn walk(&mut self, dir: &Path, depth: usize, limit: usize) {
        let mut pending = vec![(dir.to_path_buf(), depth)];
        while let Some((current, depth)) = pending.pop() {
            let Ok(entries) = fs::read_dir(&current) else {
                continue;
            };
            for entry in entries.flatten() {
                self.visited += 1;
                if self.visited > limit {
                    return;
                }
                let path = entry.path();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() && depth > 1 => pending.push((path, depth - 1)),
                    Ok(kind) if kind.is_file() => self.add(&path),
                    _ => {}
                }
            }
        }
    }
}

/// Fills `program_digest` of each exec whose program path still names the inode the kernel
/// executed (opened, then checked with `fstat`, then hashed from that same descriptor); every
/// other exec is a `program-replaced` reason.
pub fn settle_programs(processes: &mut [ObservedProcess], incomplete: &mut Vec<Incomplete>) {
    let mut digests: HashMap<(String, (u64, u64)), Result<String, String>> = HashMap::new();
    for process in processes.iter_mut() {
        for exec in &mut process.execs {
            let key = (exec.program.clone(), exec.program_id);
            let result = digests
                .entry(key)
                .or_insert_with(|| program_digest(exec))
                .clone();
            match result {
                Ok(digest) => exec.program_digest = Some(digest),
                Err(problem) => incomplete.push(Incomplete {
                    reason: IncompleteReason::ProgramReplaced,
                    detail: format!("{} (pid {}): {problem}", exec.program, process.pid),
                }),
            }
        }
    }
}

fn program_digest(exec: &ExecRecord) -> Result<String, String> {
    // The recorded program is the escaped kernel path: open the bytes it stands for.
    let path = pathtext::unescape(&exec.program).ok_or("the kernel could not build its path")?;
    let file = File::open(&path).map_err(|error| format!("cannot open it now: {error}"))?;
    let metadata = file
        .metadata()
        .map_err(|error| format!("cannot stat it now: {error}"))?;
    if (metadata.dev(), metadata.ino()) != exec.program_id {
        return Err(format!(
            "the path now names another file (inode {}:{} executed, {}:{} now)",
            exec.program_id.0,
            exec.program_id.1,
            metadata.dev(),
            metadata.ino()
        ));
    }
    sha256_reader(file).map_err(|error| format!("cannot read it: {error}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::time::UNIX_EPOCH;

    use super::*;

    fn written(path: &Path, nlink: u32) -> WrittenInode {
        let metadata = fs::symlink_metadata(path).unwrap();
        WrittenInode {
            file: FileId {
                dev: metadata.dev(),
                ino: metadata.ino(),
            },
            generation: 0,
            path: path.to_path_buf(),
            path_flags: 0,
            fs_magic: 0xef53,
            nlink,
        }
    }

    fn process() -> ObservedProcess {
        ObservedProcess {
            pid: 2,
            parent_pid: 1,
            execs: Vec::new(),
            started: UNIX_EPOCH,
            ended: None,
            exit: None,
            writes: Vec::new(),
            renames: Vec::new(),
            links: Vec::new(),
            deletes: Vec::new(),
            truncates: Vec::new(),
        }
    }

    #[test]
    fn follows_inodes_through_renames_links_and_walks_never_decoys() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        // Written as a.tmp, renamed by a directory rename the trace did not name.
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/a.tmp"), "a").unwrap();
        let moved = written(&d.join("sub/a.tmp"), 1);
        fs::rename(d.join("sub"), d.join("renamed")).unwrap();
        // Written, then a decoy took its name and the real file moved elsewhere in the tree.
        fs::write(d.join("b"), "b").unwrap();
        let replaced = written(&d.join("b"), 1);
        fs::rename(d.join("b"), d.join("b.real")).unwrap();
        fs::write(d.join("b"), "decoy").unwrap();
        // Written then deleted; and a file that vanished without a trace.
        fs::write(d.join("gone"), "g").unwrap();
        let gone = written(&d.join("gone"), 1);
        fs::remove_file(d.join("gone")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("lost"), "l").unwrap();
        let lost = written(&elsewhere.path().join("lost"), 1);
        let outside = tempfile::tempdir().unwrap();
        fs::rename(elsewhere.path().join("lost"), outside.path().join("x")).unwrap();
        let mut deleter = process();
        deleter.deletes.push(d.join("gone"));
        let mut incomplete = Vec::new();
        let settled = settle_written(
            &[moved, replaced, gone, lost],
            &[deleter],
            &d,
            &mut incomplete,
        );
        assert_eq!(
            settled[0].fate,
            Fate::Present(vec![d.join("renamed/a.tmp")])
        );
        assert_eq!(settled[1].fate, Fate::Present(vec![d.join("b.real")]));
        assert_eq!(settled[2].fate, Fate::Deleted);
        assert_eq!(settled[3].fate, Fate::Unverified);
        assert_eq!(incomplete.len(), 1);
        assert_eq!(incomplete[0].reason, IncompleteReason::UnverifiedProduct);
    }

    #[test]
    fn a_replaced_program_gets_no_digest() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("tool\nname");
        fs::write(&program, "v1").unwrap();
        let metadata = fs::metadata(&program).unwrap();
        let exec = |id| ExecRecord {
            program: pathtext::escape_bytes(program.as_os_str().as_bytes()),
            program_id: id,
            program_digest: None,
            argv: Vec::new(),
            time: UNIX_EPOCH,
        };
        let mut processes = [process()];
        processes[0].execs = vec![exec((metadata.dev(), metadata.ino())), exec((0, 1))];
        let mut incomplete = Vec::new();
        settle_programs(&mut processes, &mut incomplete);
        assert_eq!(
            processes[0].execs[0].program_digest.as_deref(),
            Some(crate::digest::sha256_hex(b"v1").as_str())
        );
        assert_eq!(processes[0].execs[1].program_digest, None);
        assert_eq!(incomplete.len(), 1);
        assert_eq!(incomplete[0].reason, IncompleteReason::ProgramReplaced);
    }
}
