//! The process tree and file-operation log rebuilt from the kernel events.
//!
//! Relative paths are resolved here, not in the kernel (tracepoint programs cannot call
//! `d_path`): each process has a cwd (inherited at fork, followed through chdir/fchdir) and a
//! table of the paths its open fds refer to (inherited at fork, filled by successful opens), so
//! `*at` calls with a directory fd resolve too. Paths are normalised lexically.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_attest_common::{FileOp, AT_FDCWD};

use crate::observed::{ExecRecord, ObservedProcess, Termination, TraceCounts};
use crate::trace::events::{Event, Header};

/// unlinkat flag: the call removed a directory, not a file.
const AT_REMOVEDIR: u32 = 0x200;
const WRITE_INTENT: u32 = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u32;

/// Converts the kernel's boot-time clock into wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    boot: SystemTime,
}

impl BootClock {
    pub fn now() -> Self {
        let mut since_boot = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer; CLOCK_BOOTTIME always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut since_boot) };
        let since_boot = Duration::new(since_boot.tv_sec as u64, since_boot.tv_nsec as u32);
        BootClock {
            boot: SystemTime::now() - since_boot,
        }
    }

    pub fn at(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}

struct Process {
    observed: ObservedProcess,
    cwd: Option<PathBuf>,
    fds: HashMap<i32, PathBuf>,
    /// argv read at execve entry, per calling thread, until the exec succeeds.
    pending_argv: HashMap<u32, (Vec<String>, bool)>,
    /// Seen acting as a process (an event with this pid as thread-group id). A fork event
    /// alone may be a new thread: `sched_process_fork` does not tell them apart.
    confirmed: bool,
}

pub struct ProcessTree {
    live: HashMap<u32, Process>,
    finished: Vec<ObservedProcess>,
    counts: TraceCounts,
    clock: BootClock,
}

impl ProcessTree {
    /// The tree of one wrapped child, which starts in `cwd` (it was forked from this process).
    pub fn new(root_pid: u32, parent_pid: u32, cwd: PathBuf, clock: BootClock) -> Self {
        let mut root = Process::new(root_pid, parent_pid, SystemTime::now(), Some(cwd));
        root.confirmed = true;
        ProcessTree {
            live: HashMap::from([(root_pid, root)]),
            finished: Vec::new(),
            counts: TraceCounts::default(),
            clock,
        }
    }

    pub fn apply(&mut self, header: Header, event: Event) {
        self.counts.events += 1;
        let time = self.clock.at(header.time_ns);
        if let Event::Fork { child_pid } = event {
            self.counts.forks += 1;
            self.fork(header.pid, child_pid, time);
            return;
        }
        let process = live_process(&mut self.live, header.pid, time);
        process.confirmed = true;
        match event {
            Event::Fork { .. } => {}
            Event::ExecArgv { argv, truncated } => {
                process.pending_argv.insert(header.tid, (argv, truncated));
            }
            Event::Exec { old_tid, filename } => {
                self.counts.execs += 1;
                let (argv, truncated) = process
                    .pending_argv
                    .remove(&old_tid)
                    .unwrap_or((Vec::new(), true));
                if truncated {
                    self.counts.truncated_argvs += 1;
                }
                process.pending_argv.clear();
                // execve("./tool") reports the path as given: make it absolute like the rest.
                let program = process
                    .resolve(AT_FDCWD, filename.as_bytes())
                    .map_or(filename, |path| path.to_string_lossy().into_owned());
                process.observed.execs.push(ExecRecord {
                    program,
                    argv,
                    time,
                });
            }
            Event::Exit { status } => {
                process.observed.ended = Some(time);
                process.observed.exit = status.map(termination_from_wait_status);
                if let Some(process) = self.live.remove(&header.pid) {
                    self.finished.push(process.observed);
                }
            }
            Event::FileOp {
                op,
                flags,
                dirfd,
                dirfd2,
                result,
                path,
                path2,
            } => {
                self.counts.file_ops += 1;
                let resolved = process.resolve(dirfd, &path);
                match op {
                    FileOp::Open => {
                        if let Some(path) = &resolved {
                            if let Ok(fd) = i32::try_from(result) {
                                process.fds.insert(fd, path.clone());
                            }
                        }
                        let list = if flags & WRITE_INTENT != 0 {
                            &mut process.observed.writes
                        } else {
                            &mut process.observed.reads
                        };
                        list.extend(resolved.clone());
                    }
                    FileOp::Rename => {
                        let resolved2 = process.resolve(dirfd2, &path2);
                        if let (Some(old), Some(new)) = (&resolved, resolved2) {
                            process.observed.renames.push((old.clone(), new));
                        } else {
                            self.counts.unresolved_paths += 1;
                        }
                    }
                    FileOp::Unlink => {
                        if flags & AT_REMOVEDIR == 0 {
                            process.observed.deletes.extend(resolved.clone());
                        }
                    }
                    FileOp::Chdir => process.cwd = resolved.clone(),
                    FileOp::Fchdir => process.cwd = process.fds.get(&dirfd).cloned(),
                }
                let unresolved = match op {
                    FileOp::Fchdir => process.cwd.is_none(),
                    FileOp::Rename => false,
                    _ => resolved.is_none(),
                };
                if unresolved {
                    self.counts.unresolved_paths += 1;
                }
            }
        }
    }

    fn fork(&mut self, parent_pid: u32, child_pid: u32, time: SystemTime) {
        let parent = live_process(&mut self.live, parent_pid, time);
        parent.confirmed = true;
        let mut child = Process::new(child_pid, parent_pid, time, parent.cwd.clone());
        child.fds = parent.fds.clone();
        if let Some(reused) = self.live.insert(child_pid, child) {
            // The pid was a thread of a tracked process (threads exit silently) or a process
            // whose exit event was lost: keep what it did.
            if reused.confirmed {
                self.finished.push(reused.observed);
            }
        }
    }

    /// The processes (sorted by start) and the counters. `lost` comes from the kernel.
    pub fn finish(mut self, lost: u64) -> (Vec<ObservedProcess>, TraceCounts) {
        let mut processes = self.finished;
        processes.extend(
            self.live
                .into_values()
                .filter(|process| process.confirmed)
                .map(|process| process.observed),
        );
        processes.sort_by_key(|process| (process.started, process.pid));
        self.counts.lost = lost;
        (processes, self.counts)
    }
}

/// The live process `pid`; created with unknown parent and cwd when its fork event was lost
/// (the lost counter already says so).
fn live_process(live: &mut HashMap<u32, Process>, pid: u32, time: SystemTime) -> &mut Process {
    live.entry(pid)
        .or_insert_with(|| Process::new(pid, 0, time, None))
}

impl Process {
    fn new(pid: u32, parent_pid: u32, started: SystemTime, cwd: Option<PathBuf>) -> Self {
        Process {
            observed: ObservedProcess {
                pid,
                parent_pid,
                execs: Vec::new(),
                started,
                ended: None,
                exit: None,
                writes: Vec::new(),
                reads: Vec::new(),
                renames: Vec::new(),
                deletes: Vec::new(),
            },
            cwd,
            fds: HashMap::new(),
            pending_argv: HashMap::new(),
            confirmed: false,
        }
    }

    /// The absolute path `path` names when relative to `dirfd` (or the cwd); `None` when the
    /// base is unknown.
    fn resolve(&self, dirfd: i32, path: &[u8]) -> Option<PathBuf> {
        let path = Path::new(OsStr::from_bytes(path));
        if path.is_absolute() {
            return Some(normalize(path));
        }
        let base = if dirfd == AT_FDCWD {
            self.cwd.as_ref()?
        } else {
            self.fds.get(&dirfd)?
        };
        Some(normalize(&base.join(path)))
    }
}

/// Removes `.` and resolves `..` lexically (the kernel resolved symlinks; we cannot without
/// racing the filesystem).
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(part) => normal.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}

fn termination_from_wait_status(status: i32) -> Termination {
    match status & 0x7f {
        0 => Termination::Exited((status >> 8) & 0xff),
        signal => Termination::Signalled(signal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: u32, tid: u32) -> Header {
        Header {
            pid,
            tid,
            time_ns: 1,
        }
    }

    fn open(dirfd: i32, path: &str, flags: i32, fd: i64) -> Event {
        Event::FileOp {
            op: FileOp::Open,
            flags: flags as u32,
            dirfd,
            dirfd2: AT_FDCWD,
            result: fd,
            path: path.as_bytes().to_vec(),
            path2: Vec::new(),
        }
    }

    fn path_op(op: FileOp, path: &str, path2: &str) -> Event {
        Event::FileOp {
            op,
            flags: 0,
            dirfd: AT_FDCWD,
            dirfd2: AT_FDCWD,
            result: 0,
            path: path.as_bytes().to_vec(),
            path2: path2.as_bytes().to_vec(),
        }
    }

    fn tree() -> ProcessTree {
        ProcessTree::new(10, 1, PathBuf::from("/work"), BootClock::now())
    }

    #[test]
    fn resolves_paths_against_cwd_chdir_and_dirfds() {
        let mut tree = tree();
        tree.apply(
            header(10, 10),
            open(AT_FDCWD, "out/../a.tar", libc::O_CREAT, 3),
        );
        tree.apply(header(10, 10), path_op(FileOp::Chdir, "sub", ""));
        tree.apply(header(10, 10), open(AT_FDCWD, "./b", libc::O_WRONLY, 4));
        tree.apply(
            header(10, 10),
            open(AT_FDCWD, "/tmp/d", libc::O_DIRECTORY, 5),
        );
        tree.apply(header(10, 10), open(5, "c", libc::O_RDWR, 6));
        tree.apply(header(10, 10), open(AT_FDCWD, "r", libc::O_RDONLY, 7));
        let (processes, counts) = tree.finish(0);
        let writes: Vec<_> = processes[0]
            .writes
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect();
        assert_eq!(writes, ["/work/a.tar", "/work/sub/b", "/tmp/d/c"]);
        assert_eq!(
            processes[0].reads,
            [PathBuf::from("/tmp/d"), "/work/sub/r".into()]
        );
        assert_eq!(counts.file_ops, 6);
        assert_eq!(counts.unresolved_paths, 0);
    }

    #[test]
    fn children_inherit_cwd_and_fds_and_fchdir_follows_the_fd() {
        let mut tree = tree();
        tree.apply(
            header(10, 10),
            open(AT_FDCWD, "/data", libc::O_DIRECTORY, 3),
        );
        tree.apply(header(10, 10), Event::Fork { child_pid: 11 });
        tree.apply(
            header(11, 11),
            Event::FileOp {
                op: FileOp::Fchdir,
                flags: 0,
                dirfd: 3,
                dirfd2: AT_FDCWD,
                result: 0,
                path: Vec::new(),
                path2: Vec::new(),
            },
        );
        tree.apply(header(11, 11), path_op(FileOp::Rename, "tmp.1", "final"));
        tree.apply(header(11, 11), path_op(FileOp::Unlink, "gone", ""));
        tree.apply(header(11, 11), Event::Exit { status: Some(9) });
        tree.apply(
            header(10, 10),
            Event::Exit {
                status: Some(2 << 8),
            },
        );
        let (processes, counts) = tree.finish(3);
        assert_eq!(processes.len(), 2);
        let child = processes.iter().find(|p| p.pid == 11).unwrap();
        assert_eq!(child.parent_pid, 10);
        assert_eq!(
            child.renames,
            [(PathBuf::from("/data/tmp.1"), PathBuf::from("/data/final"))]
        );
        assert_eq!(child.deletes, [PathBuf::from("/data/gone")]);
        assert_eq!(child.exit, Some(Termination::Signalled(9)));
        let root = processes.iter().find(|p| p.pid == 10).unwrap();
        assert_eq!(root.exit, Some(Termination::Exited(2)));
        assert_eq!(counts.lost, 3);
        assert_eq!(counts.forks, 1);
    }

    #[test]
    fn exec_takes_the_argv_of_the_successful_call() {
        let mut tree = tree();
        let argv = |args: &[&str]| Event::ExecArgv {
            argv: args.iter().map(|arg| arg.to_string()).collect(),
            truncated: false,
        };
        tree.apply(header(10, 10), argv(&["old"]));
        tree.apply(header(10, 12), argv(&["tar", "cf", "x.tar"]));
        tree.apply(
            header(10, 10),
            Event::Exec {
                old_tid: 12,
                filename: "bin/../tar".into(),
            },
        );
        let (processes, counts) = tree.finish(0);
        assert_eq!(processes[0].program(), "/work/tar");
        assert_eq!(processes[0].argv(), ["tar", "cf", "x.tar"]);
        assert_eq!(counts.execs, 1);
        assert_eq!(counts.truncated_argvs, 0);
    }

    #[test]
    fn a_forked_thread_without_activity_is_not_a_process() {
        let mut tree = tree();
        tree.apply(header(10, 10), Event::Fork { child_pid: 15 });
        tree.apply(header(10, 15), open(AT_FDCWD, "x", libc::O_WRONLY, 3));
        let (processes, _) = tree.finish(0);
        assert_eq!(processes.len(), 1);
        assert_eq!(processes[0].writes, [PathBuf::from("/work/x")]);
    }

    #[test]
    fn an_unknown_dirfd_is_counted_not_guessed() {
        let mut tree = tree();
        tree.apply(header(10, 10), open(42, "x", libc::O_WRONLY, 3));
        let (processes, counts) = tree.finish(0);
        assert!(processes[0].writes.is_empty());
        assert_eq!(counts.unresolved_paths, 1);
    }
}
