//! After the tree ended: where is each written inode now, and is each executed program still
//! the file the kernel ran? Every claim is checked by identity (`trace::identity`: inode
//! number and generation, or birth time), so a path is only reported when it names that very
//! file now, never because a string says so or because a stranger's file reuses the number.
//!
//! Candidates for a written inode, in order: the path the kernel built at the first write,
//! then the targets of the tree's renames and links and the paths of its truncates, then the
//! working directory as the end-of-run snapshot shows it and the directories of those paths
//! (inode → every path). An inode found nowhere is known deleted (never linked, unlinked by
//! the tree, its number reused) or else unverified.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci_attest_common::{WRITTEN_HANDED_OUT, WRITTEN_PASSED};

use crate::digest::sha256_reader;
use crate::observed::{
    ExecRecord, Fate, Incomplete, IncompleteReason, ObservedProcess, ProgramId, SettledFile,
};
use crate::pathtext;
use crate::snapshot::Snapshot;
use crate::trace::events::FileId;
use crate::trace::identity::{self, Identity, Recognised, Timestamp};
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

/// Entries visited by the walks of directories outside the working directory before they give
/// up (what they could not map stays unverified).
const WALK_LIMIT: usize = 2_000_000;

/// Rounds of [`moved_by_directory_renames`]: a file can be carried by a rename of its
/// directory, then of that directory's parent, and so on; each round follows one more.
const DIRECTORY_RENAME_ROUNDS: usize = 8;

/// Where the tree's renames of directories carried `paths`: cargo, for one, fills a fresh
/// temporary directory and renames it into place, so the path built at the write names a
/// directory that no longer exists while the file lives on under the new name.
fn moved_by_directory_renames(
    paths: &BTreeSet<PathBuf>,
    renames: &[&(PathBuf, PathBuf)],
) -> BTreeSet<PathBuf> {
    let mut moved = BTreeSet::new();
    let mut round: BTreeSet<PathBuf> = paths.clone();
    for _ in 0..DIRECTORY_RENAME_ROUNDS {
        let mut next = BTreeSet::new();
        for path in &round {
            for (old, new) in renames {
                if let Ok(rest) = path.strip_prefix(old) {
                    if !rest.as_os_str().is_empty() {
                        let carried = new.join(rest);
                        if !paths.contains(&carried) && moved.insert(carried.clone()) {
                            next.insert(carried);
                        }
                    }
                }
            }
        }
        if next.is_empty() {
            break;
        }
        round = next;
    }
    moved
}

/// Where each written inode is now. `working_dir` is seen through `after`, its snapshot at the
/// end of the run. Reasons for what cannot be accounted for are appended.
pub fn settle_written(
    written: &[WrittenInode],
    processes: &[ObservedProcess],
    working_dir: &Path,
    after: &Snapshot,
    incomplete: &mut Vec<Incomplete>,
) -> Vec<SettledFile> {
    let mut all = with_truncated(written, processes);
    // Files handed to a kernel service are a gap of their own, not writes.
    all.retain(|inode| {
        if inode.how & WRITTEN_HANDED_OUT == 0 {
            return true;
        }
        let how = if inode.how & WRITTEN_PASSED != 0 {
            "passed open for writing over a Unix socket (SCM_RIGHTS): whoever received it can \
             write it, inside the tree or not, where no trace sees it"
        } else {
            "attached to a loop device, whose kernel thread writes it for whoever writes the \
             device, inside the tree or not"
        };
        incomplete.push(Incomplete {
            reason: IncompleteReason::HandedOut,
            detail: format!("{}: {how}", pathtext::escape(&inode.path)),
        });
        false
    });
    let written = all.as_slice();
    // The last inode with a given (dev, ino) is the current one: an earlier generation was
    // freed (deleted) before its number was reused.
    let mut latest: HashMap<FileId, u32> = HashMap::new();
    for inode in written {
        latest.insert(inode.identity.file, inode.identity.generation);
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
    for (path, stamp) in after.files() {
        names.insert(
            FileId {
                dev: stamp.device,
                ino: stamp.inode,
            },
            path,
        );
    }
    let renames: Vec<&(PathBuf, PathBuf)> = processes
        .iter()
        .flat_map(|process| process.renames.iter())
        .collect();
    let moved = moved_by_directory_renames(&candidates, &renames);
    candidates.extend(moved);
    for path in &candidates {
        names.add(path);
    }
    let linked: HashSet<&Path> = processes
        .iter()
        .flat_map(|process| process.links.iter().map(|(old, _)| old.as_path()))
        .collect();

    let needs_walk = written
        .iter()
        .any(|inode| !is_pseudo(inode) && !names.by_inode.contains_key(&inode.identity.file));
    if needs_walk {
        let dirs: BTreeSet<PathBuf> = candidates
            .iter()
            .filter_map(|path| path.parent().map(Path::to_path_buf))
            .filter(|dir| !dir.starts_with(working_dir))
            .collect();
        for dir in dirs {
            names.walk(&dir, 1, WALK_LIMIT);
        }
    }

    let mut settled = Vec::new();
    let mut seen: HashSet<(FileId, u32)> = HashSet::new();
    for inode in written {
        let identity = &inode.identity;
        if !seen.insert((identity.file, identity.generation)) {
            continue;
        }
        let fate = if is_pseudo(inode) {
            Fate::Pseudo
        } else if latest.get(&identity.file) != Some(&identity.generation) {
            Fate::Deleted
        } else {
            let found = names
                .by_inode
                .get(&identity.file)
                .map_or(Found::Nothing, |paths| recognise_at(paths, identity));
            match found {
                Found::Present(paths) => Fate::Present(paths),
                // Its number names another file now: it was freed.
                Found::Reused => Fate::Deleted,
                Found::Unknown(why) => unverified(inode, &why, incomplete),
                Found::Nothing
                    if (inode.nlink == 0 && !linked.contains(inode.path.as_path()))
                        || deleted_paths.contains(inode.path.as_path()) =>
                {
                    Fate::Deleted
                }
                Found::Nothing => unverified(
                    inode,
                    "no path names it now and it was not seen deleted",
                    incomplete,
                ),
            }
        };
        settled.push(SettledFile {
            dev: identity.file.dev,
            ino: identity.file.ino,
            written_as: inode.path.clone(),
            fate,
        });
    }
    settled
}

fn unverified(inode: &WrittenInode, why: &str, incomplete: &mut Vec<Incomplete>) -> Fate {
    incomplete.push(Incomplete {
        reason: IncompleteReason::UnverifiedProduct,
        detail: format!(
            "{}: written (inode {}:{}) but {why}",
            pathtext::escape(&inode.path),
            inode.identity.file.dev,
            inode.identity.file.ino
        ),
    });
    Fate::Unverified
}

enum Found {
    Present(Vec<PathBuf>),
    Reused,
    Unknown(String),
    /// Every path that named its number is gone.
    Nothing,
}

/// Which of the paths that name the inode's number name the written file itself.
fn recognise_at(paths: &BTreeSet<PathBuf>, identity: &Identity) -> Found {
    let mut present = Vec::new();
    let mut reused = false;
    let mut unknown = None;
    for path in paths {
        match identity::recognise_path(path, identity) {
            Recognised::Same(_) => present.push(path.clone()),
            Recognised::Other(why) => {
                tracing::debug!("{}: not the written file: {why}", path.display());
                reused = true;
            }
            Recognised::Unknown(why) => {
                unknown = Some(format!(
                    "{} cannot be recognised: {why}",
                    pathtext::escape(path)
                ))
            }
            Recognised::Gone => {}
        }
    }
    match (present.is_empty(), reused, unknown) {
        (false, _, _) => Found::Present(present),
        (true, true, _) => Found::Reused,
        (true, false, Some(why)) => Found::Unknown(why),
        (true, false, None) => Found::Nothing,
    }
}

/// `written` plus the files truncated by path (truncate(2) has no fd to identify the file by:
/// the path is resolved now, so a file replaced at that path since is a limit documented in
/// `docs/tracing.md`).
fn with_truncated(written: &[WrittenInode], processes: &[ObservedProcess]) -> Vec<WrittenInode> {
    let mut all = written.to_vec();
    let known: HashSet<FileId> = written.iter().map(|inode| inode.identity.file).collect();
    for path in processes.iter().flat_map(|process| &process.truncates) {
        let Ok(metadata) = fs::symlink_metadata(path) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        let Ok(identity) = identity::identity_now(path) else {
            continue;
        };
        if !known.contains(&identity.file) {
            all.push(WrittenInode {
                identity,
                how: oci_attest_common::WRITTEN_RESIZED,
                path: path.clone(),
                path_flags: 0,
                fs_magic: 0,
                nlink: metadata.nlink() as u32,
                time: SystemTime::now(),
            });
        }
    }
    all
}

fn is_pseudo(inode: &WrittenInode) -> bool {
    PSEUDO_FILESYSTEMS.contains(&inode.fs_magic)
}

/// Regular files found, by inode number.
#[derive(Default)]
struct InodeNames {
    by_inode: HashMap<FileId, BTreeSet<PathBuf>>,
    visited: usize,
}

impl InodeNames {
    fn insert(&mut self, id: FileId, path: &Path) {
        self.by_inode
            .entry(id)
            .or_default()
            .insert(path.to_path_buf());
    }

    fn add(&mut self, path: &Path) {
        // lstat: a symlink is not the file it points to.
        if let Ok(metadata) = fs::symlink_metadata(path) {
            if metadata.is_file() {
                let id = FileId {
                    dev: metadata.dev(),
                    ino: metadata.ino(),
                };
                self.insert(id, path);
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

/// Fills `program_digest` of each exec whose program is still, unchanged, the file the kernel
/// executed: its path names that inode (number and generation or birth time), its ctime is
/// the one recorded at the exec and the tree did not write it afterwards; it is hashed from
/// the descriptor that was checked. Every other exec is a `program-replaced` reason, or
/// `fileless-exec` for a program that had no name when it ran.
pub fn settle_programs(
    processes: &mut [ObservedProcess],
    written: &[WrittenInode],
    incomplete: &mut Vec<Incomplete>,
) {
    // When the tree wrote each inode (the kernel reports a program written again after it
    // ran: an exec forgets the inode's earlier writes).
    let mut writes: HashMap<(FileId, u32), Vec<SystemTime>> = HashMap::new();
    for inode in written {
        writes
            .entry((inode.identity.file, inode.identity.generation))
            .or_default()
            .push(inode.time);
    }
    name_detached_execs(processes);
    let mut digests: HashMap<(String, ProgramId), Result<String, Problem>> = HashMap::new();
    for process in processes.iter_mut() {
        for exec in &mut process.execs {
            let key = (exec.program.clone(), exec.program_id);
            let result = digests
                .entry(key)
                .or_insert_with(|| program_digest(exec, &writes))
                .clone();
            match result {
                Ok(digest) => exec.program_digest = Some(digest),
                Err(problem) => incomplete.push(Incomplete {
                    reason: problem.reason,
                    detail: format!("{} (pid {}): {}", exec.program, process.pid, problem.detail),
                }),
            }
        }
    }
}

/// The path the kernel builds for a file that is the root of a detached mount.
const DETACHED_MOUNT_ROOT: &str = "/";

/// Names the execs of a program through a detached bind mount of itself. containers/storage
/// (skopeo, buildah, podman) and runc re-execute their own binary that way, so that the
/// command cannot rewrite it: they bind-mount it read-only, open it, detach the mount and
/// exec the descriptor. The mount is then in no tree and the kernel's path is its root, `/`.
/// The file is the one an earlier exec of the tree ran by name when the identities (device,
/// inode, generation, ctime, links) are equal; that name is then checked like any other.
fn name_detached_execs(processes: &mut [ObservedProcess]) {
    let named: HashMap<ProgramId, String> = processes
        .iter()
        .flat_map(|process| &process.execs)
        .filter(|exec| exec.program != DETACHED_MOUNT_ROOT)
        .map(|exec| (exec.program_id, exec.program.clone()))
        .collect();
    for exec in processes.iter_mut().flat_map(|process| &mut process.execs) {
        if exec.program == DETACHED_MOUNT_ROOT {
            if let Some(name) = named.get(&exec.program_id) {
                exec.program.clone_from(name);
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Problem {
    reason: IncompleteReason,
    detail: String,
}

fn replaced(detail: impl Into<String>) -> Problem {
    Problem {
        reason: IncompleteReason::ProgramReplaced,
        detail: detail.into(),
    }
}

fn program_digest(
    exec: &ExecRecord,
    writes: &HashMap<(FileId, u32), Vec<SystemTime>>,
) -> Result<String, Problem> {
    let id = exec.program_id;
    // The recorded program is the escaped kernel path: open the bytes it stands for.
    let path = pathtext::unescape(&exec.program)
        .ok_or_else(|| replaced("the kernel could not build its path"))?;
    if id.nlink == 0 || !identity::is_named(&path) {
        return Err(Problem {
            reason: IncompleteReason::FilelessExec,
            detail: "executed from a file without a name (a memfd, an O_TMPFILE or a deleted \
                     file): nothing names what ran"
                .to_owned(),
        });
    }
    let file =
        File::open(&path).map_err(|error| replaced(format!("cannot open it now: {error}")))?;
    let identity = Identity {
        file: FileId {
            dev: id.dev,
            ino: id.ino,
        },
        generation: id.generation,
        ctime: Timestamp {
            sec: id.ctime.0,
            nsec: id.ctime.1,
        },
    };
    let now = match identity::recognise(&file, &identity) {
        Recognised::Same(now) => now,
        Recognised::Other(why) => {
            return Err(replaced(format!("the path names another file now ({why})")))
        }
        Recognised::Unknown(why) => {
            return Err(replaced(format!("it cannot be recognised now: {why}")))
        }
        Recognised::Gone => return Err(replaced("it is gone")),
    };
    if now.ctime != identity.ctime {
        return Err(replaced(format!(
            "changed since it ran (ctime {}.{:09} at the exec, {}.{:09} now)",
            identity.ctime.sec, identity.ctime.nsec, now.ctime.sec, now.ctime.nsec
        )));
    }
    let written_after = writes
        .get(&(identity.file, identity.generation))
        .is_some_and(|times| times.iter().any(|time| *time >= exec.time));
    if written_after {
        return Err(replaced("the tree wrote it after running it"));
    }
    sha256_reader(file).map_err(|error| replaced(format!("cannot read it: {error}")))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::observed::ProgramId;

    fn written(path: &Path, nlink: u32) -> WrittenInode {
        WrittenInode {
            identity: identity::identity_now(path).unwrap(),
            how: oci_attest_common::WRITTEN_DATA,
            path: path.to_path_buf(),
            path_flags: 0,
            fs_magic: 0xef53,
            nlink,
            time: SystemTime::now(),
        }
    }

    fn process() -> ObservedProcess {
        ObservedProcess::new(2, 1, UNIX_EPOCH)
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
            &Snapshot::take(&d).unwrap(),
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
    fn follows_files_outside_the_working_directory_through_the_trees_directory_renames() {
        // cargo's pattern: fill target/tripleXXXX, rename it to target/triple; here the
        // parent is renamed too, and all of it lies outside the working directory.
        let working = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path().canonicalize().unwrap();
        fs::create_dir_all(o.join("target/tripleXYZ")).unwrap();
        fs::write(o.join("target/tripleXYZ/CACHEDIR.TAG"), "tag").unwrap();
        let tag = written(&o.join("target/tripleXYZ/CACHEDIR.TAG"), 1);
        fs::rename(o.join("target/tripleXYZ"), o.join("target/triple")).unwrap();
        fs::rename(o.join("target"), o.join("final")).unwrap();
        let mut renamer = process();
        renamer
            .renames
            .push((o.join("target/tripleXYZ"), o.join("target/triple")));
        renamer.renames.push((o.join("target"), o.join("final")));
        let mut incomplete = Vec::new();
        let settled = settle_written(
            &[tag],
            &[renamer],
            working.path(),
            &Snapshot::take(working.path()).unwrap(),
            &mut incomplete,
        );
        assert_eq!(
            settled[0].fate,
            Fate::Present(vec![o.join("final/triple/CACHEDIR.TAG")])
        );
        assert!(incomplete.is_empty(), "{incomplete:?}");
    }

    /// An exec of `program` (the kernel's escaped path) identified as `id`, at the epoch.
    fn exec(program: String, id: ProgramId) -> ExecRecord {
        ExecRecord {
            program,
            program_id: id,
            program_digest: None,
            argv: Vec::new(),
            time: UNIX_EPOCH,
            privileges: None,
        }
    }

    fn program_id(path: &Path, nlink: u32) -> ProgramId {
        let identity = identity::identity_now(path).unwrap();
        ProgramId {
            dev: identity.file.dev,
            ino: identity.file.ino,
            generation: identity.generation,
            ctime: (identity.ctime.sec, identity.ctime.nsec),
            nlink,
        }
    }

    #[test]
    fn a_replaced_changed_or_nameless_program_gets_no_digest() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("tool\nname");
        fs::write(&program, "v1").unwrap();
        let changed = dir.path().join("changed");
        fs::write(&changed, "v1").unwrap();
        let exec = |path: &Path, id| exec(pathtext::escape_bytes(path.as_os_str().as_bytes()), id);
        let changed_id = program_id(&changed, 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&changed, "v2 in place").unwrap();
        let mut processes = [process()];
        processes[0].execs = vec![
            exec(&program, program_id(&program, 1)),
            exec(
                &program,
                ProgramId {
                    ino: 1,
                    ..program_id(&program, 1)
                },
            ),
            exec(&changed, changed_id),
            exec(&program, program_id(&program, 0)),
        ];
        let mut incomplete = Vec::new();
        settle_programs(&mut processes, &[], &mut incomplete);
        assert_eq!(
            processes[0].execs[0].program_digest.as_deref(),
            Some(crate::digest::sha256_hex(b"v1").as_str())
        );
        assert!(processes[0].execs[1..]
            .iter()
            .all(|exec| exec.program_digest.is_none()));
        let reasons: Vec<IncompleteReason> = incomplete.iter().map(|gap| gap.reason).collect();
        assert_eq!(
            reasons,
            [
                IncompleteReason::ProgramReplaced,
                IncompleteReason::ProgramReplaced,
                IncompleteReason::FilelessExec
            ],
            "{incomplete:#?}"
        );
    }

    #[test]
    fn an_exec_through_a_detached_bind_mount_is_named_by_an_earlier_exec_of_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("skopeo");
        fs::write(&program, "v1").unwrap();
        let other = dir.path().join("other");
        fs::write(&other, "v2").unwrap();
        let mut processes = [process(), process()];
        processes[0].execs = vec![exec(pathtext::escape(&program), program_id(&program, 1))];
        processes[1].execs = vec![
            exec("/".to_owned(), program_id(&program, 1)),
            // No exec ran this one by name: it stays unnamed, and unaccounted for.
            exec("/".to_owned(), program_id(&other, 1)),
        ];
        let mut incomplete = Vec::new();
        settle_programs(&mut processes, &[], &mut incomplete);
        assert_eq!(processes[1].execs[0].program, pathtext::escape(&program));
        assert_eq!(
            processes[1].execs[0].program_digest.as_deref(),
            Some(crate::digest::sha256_hex(b"v1").as_str())
        );
        assert_eq!(processes[1].execs[1].program, "/");
        let reasons: Vec<IncompleteReason> = incomplete.iter().map(|gap| gap.reason).collect();
        assert_eq!(
            reasons,
            [IncompleteReason::ProgramReplaced],
            "{incomplete:#?}"
        );
    }

    #[test]
    fn a_program_the_tree_wrote_after_running_it_gets_no_digest() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("tool");
        fs::write(&program, "v1").unwrap();
        let mut processes = [process()];
        processes[0].execs = vec![exec(pathtext::escape(&program), program_id(&program, 1))];
        let mut rewrite = written(&program, 1);
        rewrite.time = UNIX_EPOCH + std::time::Duration::from_secs(1);
        let mut incomplete = Vec::new();
        settle_programs(&mut processes, &[rewrite], &mut incomplete);
        assert_eq!(processes[0].execs[0].program_digest, None);
        assert_eq!(incomplete[0].reason, IncompleteReason::ProgramReplaced);
    }
}
