//! The process tree and file log rebuilt from the kernel events.
//!
//! Nothing is resolved here against a cwd or an fd table: written files come with their inode
//! and a path built in the kernel; path operations come with their directory built in the
//! kernel and the name the process passed, joined here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_attest_common::{
    PathOp, ARGV_CONTINUED, ARGV_TRUNCATED, ARGV_UNREADABLE, PATH_TRUNCATED, PATH_UNRESOLVED,
    WRITTEN_DIRTIED, WRITTEN_HANDED_OUT, WRITTEN_RELEASED,
};

use crate::observed::{
    ExecRecord, ObservedProcess, ProgramId, Termination, TraceCounts, WrittenFile,
};
use crate::pathtext;
use crate::trace::events::{Event, Header, KernelPath};
use crate::trace::identity::Identity;

/// argv bytes kept for the whole run (documented in `docs/tracing.md`). The command-run
/// predicate holds every argv twice (`cmdline` and `argv`) and is signed whole, so a tree that
/// execs 20 000 programs with 20 KB of argv each would need gigabytes; past this budget execs
/// are still recorded, without their argv, and the trace is incomplete (`argv-limit`). Each kept
/// byte costs about 8.5 bytes of peak memory (the records, the predicate's three copies as JSON
/// values, the statement): 8 MiB keeps the 20 000-exec storm of `cargo xtask bench trace` near
/// 200 MiB, and is more than twice what the attested release build of `cargo xtask dist` was
/// measured to spend (1.5 MiB over 650 execs from a clean clone, 3.5 MiB over 2 440 execs in
/// another full run).
pub const MAX_RECORDED_ARGV_BYTES: usize = 8 * 1024 * 1024;

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

/// What the settling step needs to know about a written inode besides its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenInode {
    /// Its ctime is the inode's right after the first change.
    pub identity: Identity,
    /// `WRITTEN_*` bits of the event.
    pub how: u32,
    pub path: PathBuf,
    pub path_flags: u32,
    pub fs_magic: u64,
    /// Link count at the first write: 0 for an O_TMPFILE or an already unlinked file.
    pub nlink: u32,
    /// When the kernel reported it.
    pub time: SystemTime,
}

struct Process {
    observed: ObservedProcess,
    /// The argument area of the last exec, until its last chunk arrives (`None` inside: over
    /// the argv budget, dropped).
    argv_bytes: Option<Option<Vec<u8>>>,
}

pub struct ProcessTree {
    live: HashMap<u32, Process>,
    finished: Vec<ObservedProcess>,
    /// Every written inode, in order of the first change.
    written: Vec<WrittenInode>,
    counts: TraceCounts,
    clock: BootClock,
    /// argv bytes that may still be kept ([`MAX_RECORDED_ARGV_BYTES`] at the start).
    argv_budget: usize,
}

/// Everything the tree recorded, for the settling step.
pub struct Recorded {
    /// Sorted by start time.
    pub processes: Vec<ObservedProcess>,
    pub written: Vec<WrittenInode>,
    pub counts: TraceCounts,
}

impl ProcessTree {
    pub fn new(root_pid: u32, parent_pid: u32, clock: BootClock) -> Self {
        let root = Process::new(root_pid, parent_pid, SystemTime::now());
        ProcessTree {
            live: HashMap::from([(root_pid, root)]),
            finished: Vec::new(),
            written: Vec::new(),
            counts: TraceCounts::default(),
            clock,
            argv_budget: MAX_RECORDED_ARGV_BYTES,
        }
    }

    pub fn apply(&mut self, header: Header, event: Event) {
        self.counts.events += 1;
        let time = self.clock.at(header.time_ns);
        if let Event::Fork { child_pid } = event {
            self.counts.forks += 1;
            live_process(&mut self.live, header.pid, time);
            if let Some(reused) = self
                .live
                .insert(child_pid, Process::new(child_pid, header.pid, time))
            {
                // Its exit event was lost (the lost counter says so): keep what it did.
                self.finished.push(reused.observed);
            }
            return;
        }
        let process = live_process(&mut self.live, header.pid, time);
        match event {
            Event::Fork { .. } => {}
            Event::Exec {
                program,
                nlink,
                path,
                privileges,
                ..
            } => {
                self.counts.execs += 1;
                count_path_flags(&mut self.counts, &path);
                process.argv_bytes = Some(Some(Vec::new()));
                process.observed.execs.push(ExecRecord {
                    program: pathtext::escape_bytes(&path.bytes),
                    program_id: ProgramId {
                        dev: program.file.dev,
                        ino: program.file.ino,
                        generation: program.generation,
                        ctime: (program.ctime.sec, program.ctime.nsec),
                        nlink,
                    },
                    program_digest: None,
                    argv: Vec::new(),
                    time,
                    privileges,
                });
            }
            Event::ExecArgv { bytes, flags } => {
                let Some(kept) = process.argv_bytes.as_mut() else {
                    return;
                };
                if let Some(buffer) = kept {
                    if buffer.len() + bytes.len() > self.argv_budget {
                        *kept = None;
                    } else {
                        buffer.extend_from_slice(&bytes);
                    }
                }
                if flags & ARGV_TRUNCATED != 0 {
                    self.counts.truncated_argvs += 1;
                }
                if flags & ARGV_UNREADABLE != 0 {
                    self.counts.unreadable_argvs += 1;
                }
                if flags & ARGV_CONTINUED == 0 {
                    match process.argv_bytes.take().flatten() {
                        Some(area) => {
                            self.argv_budget -= area.len();
                            if let Some(exec) = process.observed.execs.last_mut() {
                                exec.argv = split_argv(&area);
                            }
                        }
                        None => self.counts.argv_over_limit += 1,
                    }
                }
            }
            Event::Exit { status } => {
                process.observed.ended = Some(time);
                process.observed.exit = status.map(termination_from_wait_status);
                if process.argv_bytes.is_some() {
                    // The exec's last argv chunk never arrived.
                    self.counts.unreadable_argvs += 1;
                }
                if let Some(process) = self.live.remove(&header.pid) {
                    self.finished.push(process.observed);
                }
            }
            Event::Written {
                how,
                identity,
                fs_magic,
                nlink,
                path,
            } => {
                self.counts.file_ops += 1;
                // A dirtied inode's path is a hint built from its first dentry (settling looks
                // for the inode itself): one that could not be built is no gap.
                if how & WRITTEN_DIRTIED == 0 {
                    count_path_flags(&mut self.counts, &path);
                }
                let as_path = PathBuf::from(OsStr::from_bytes(&path.bytes));
                // Handed out, or only closed while a sibling may write it: not the process's
                // write (settling decides by the file's stamps).
                if how & WRITTEN_HANDED_OUT == 0 && how != WRITTEN_RELEASED {
                    process.observed.writes.push(WrittenFile {
                        path: as_path.clone(),
                        dev: identity.file.dev,
                        ino: identity.file.ino,
                    });
                }
                self.written.push(WrittenInode {
                    identity,
                    how,
                    path: as_path,
                    path_flags: path.flags,
                    fs_magic,
                    nlink,
                    time,
                });
            }
            Event::PathOp { op, operands } => {
                self.counts.file_ops += 1;
                let [(dir, name), (dir2, name2)] = operands;
                let first = operand_path(&mut self.counts, &dir, &name);
                let observed = &mut process.observed;
                match op {
                    PathOp::Rename | PathOp::Link => {
                        let second = operand_path(&mut self.counts, &dir2, &name2);
                        let list = if op == PathOp::Rename {
                            &mut observed.renames
                        } else {
                            &mut observed.links
                        };
                        list.push((first, second));
                    }
                    PathOp::Unlink => observed.deletes.push(first),
                    PathOp::Truncate => observed.truncates.push(first),
                }
            }
        }
    }

    /// The processes (sorted by start), the written inodes and the counters.
    pub fn finish(mut self, lost: u64) -> Recorded {
        let mut processes = self.finished;
        processes.extend(self.live.into_values().map(|process| process.observed));
        processes.sort_by_key(|process| (process.started, process.pid));
        self.counts.lost = lost;
        Recorded {
            processes,
            written: self.written,
            counts: self.counts,
        }
    }
}

fn count_path_flags(counts: &mut TraceCounts, path: &KernelPath) {
    if path.flags & PATH_TRUNCATED != 0 {
        counts.truncated_paths += 1;
    }
    if path.flags & PATH_UNRESOLVED != 0 {
        counts.unresolved_paths += 1;
    }
}

/// `dir/name`, or `dir` alone for an empty name (linkat with AT_EMPTY_PATH names the fd's
/// file). For an absolute name `dir` is the process's root, so a chrooted process's
/// `/out` is `<root>/out`.
fn operand_path(counts: &mut TraceCounts, dir: &KernelPath, name: &[u8]) -> PathBuf {
    count_path_flags(counts, dir);
    let dir = Path::new(OsStr::from_bytes(&dir.bytes));
    let name = Path::new(OsStr::from_bytes(name));
    let relative = name.strip_prefix("/").unwrap_or(name);
    if relative.as_os_str().is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(relative)
    }
}

/// The live process `pid`; created with unknown parent when its fork event was lost (the
/// lost counter already says so).
fn live_process(live: &mut HashMap<u32, Process>, pid: u32, time: SystemTime) -> &mut Process {
    live.entry(pid)
        .or_insert_with(|| Process::new(pid, 0, time))
}

impl Process {
    fn new(pid: u32, parent_pid: u32, started: SystemTime) -> Self {
        Process {
            observed: ObservedProcess::new(pid, parent_pid, started),
            argv_bytes: None,
        }
    }
}

/// The argument area: each argument followed by a NUL. Arguments are shown escaped
/// (`crate::pathtext`), so no byte is lost.
fn split_argv(area: &[u8]) -> Vec<String> {
    let area = area.strip_suffix(b"\0").unwrap_or(area);
    if area.is_empty() {
        return Vec::new();
    }
    area.split(|&byte| byte == 0)
        .map(|arg| match std::str::from_utf8(arg) {
            Ok(text) => text.to_owned(),
            Err(_) => pathtext::escape_bytes(arg),
        })
        .collect()
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
    use crate::trace::events::FileId;
    use crate::trace::identity::Timestamp;

    fn header(pid: u32) -> Header {
        Header {
            pid,
            tid: pid,
            time_ns: 1,
        }
    }

    fn kernel_path(path: &str) -> KernelPath {
        KernelPath {
            bytes: path.as_bytes().to_vec(),
            flags: 0,
        }
    }

    fn identity(ino: u64) -> Identity {
        Identity {
            file: FileId { dev: 1, ino },
            generation: 0,
            ctime: Timestamp::default(),
        }
    }

    fn written(path: &str, ino: u64) -> Event {
        Event::Written {
            how: 4,
            identity: identity(ino),
            fs_magic: 0xef53,
            nlink: 1,
            path: kernel_path(path),
        }
    }

    #[test]
    fn exec_argv_arrives_in_chunks_after_the_exec() {
        let mut tree = ProcessTree::new(10, 1, BootClock::now());
        tree.apply(
            header(10),
            Event::Exec {
                old_tid: 10,
                program: identity(2),
                nlink: 1,
                path: kernel_path("/usr/bin/tar"),
                privileges: None,
            },
        );
        for (bytes, flags) in [(&b"tar\0c"[..], ARGV_CONTINUED), (b"f\0x.tar\0", 0)] {
            tree.apply(
                header(10),
                Event::ExecArgv {
                    bytes: bytes.to_vec(),
                    flags,
                },
            );
        }
        let recorded = tree.finish(0);
        assert_eq!(recorded.processes[0].argv(), ["tar", "cf", "x.tar"]);
        assert_eq!(recorded.processes[0].program(), "/usr/bin/tar");
        let id = recorded.processes[0].execs[0].program_id;
        assert_eq!((id.dev, id.ino, id.nlink), (1, 2, 1));
        assert_eq!(recorded.counts.truncated_argvs, 0);
    }

    #[test]
    fn every_exec_of_a_pid_is_kept_and_unreadable_argv_is_counted() {
        let mut tree = ProcessTree::new(10, 1, BootClock::now());
        for program in ["/bin/sh", "/bin/true"] {
            tree.apply(
                header(10),
                Event::Exec {
                    old_tid: 10,
                    program: identity(2),
                    nlink: 1,
                    path: kernel_path(program),
                    privileges: None,
                },
            );
        }
        tree.apply(
            header(10),
            Event::ExecArgv {
                bytes: Vec::new(),
                flags: ARGV_UNREADABLE,
            },
        );
        let recorded = tree.finish(0);
        assert_eq!(recorded.processes[0].execs.len(), 2);
        assert_eq!(recorded.counts.unreadable_argvs, 1);
    }

    #[test]
    fn forks_writes_and_path_operations_build_the_tree() {
        let mut tree = ProcessTree::new(10, 1, BootClock::now());
        tree.apply(header(10), Event::Fork { child_pid: 11 });
        tree.apply(header(11), written("/w/out.tmp", 7));
        tree.apply(
            header(11),
            Event::PathOp {
                op: PathOp::Rename,
                operands: [
                    (kernel_path("/w"), b"out.tmp".to_vec()),
                    (kernel_path("/chroot"), b"/out".to_vec()),
                ],
            },
        );
        tree.apply(
            header(11),
            Event::PathOp {
                op: PathOp::Link,
                operands: [
                    (kernel_path("/w/#12"), Vec::new()),
                    (kernel_path("/w"), b"linked".to_vec()),
                ],
            },
        );
        tree.apply(header(11), Event::Exit { status: Some(9) });
        let recorded = tree.finish(3);
        let child = recorded.processes.iter().find(|p| p.pid == 11).unwrap();
        assert_eq!(child.parent_pid, 10);
        assert_eq!(child.writes[0].path, PathBuf::from("/w/out.tmp"));
        assert_eq!(
            child.renames,
            [(PathBuf::from("/w/out.tmp"), PathBuf::from("/chroot/out"))]
        );
        assert_eq!(
            child.links,
            [(PathBuf::from("/w/#12"), PathBuf::from("/w/linked"))]
        );
        assert_eq!(child.exit, Some(Termination::Signalled(9)));
        assert_eq!(recorded.written.len(), 1);
        assert_eq!(recorded.counts.lost, 3);
    }

    /// An exec storm: past the budget every exec is still recorded, without its argv.
    #[test]
    fn argv_past_the_budget_is_dropped_and_counted() {
        let mut tree = ProcessTree::new(10, 1, BootClock::now());
        let argv = vec![b'a'; 1024 * 1024];
        let execs = MAX_RECORDED_ARGV_BYTES / argv.len() + 3;
        for _ in 0..execs {
            tree.apply(
                header(10),
                Event::Exec {
                    old_tid: 10,
                    program: identity(2),
                    nlink: 1,
                    path: kernel_path("/bin/x"),
                    privileges: None,
                },
            );
            for chunk in argv.chunks(8192) {
                tree.apply(
                    header(10),
                    Event::ExecArgv {
                        bytes: chunk.to_vec(),
                        flags: ARGV_CONTINUED,
                    },
                );
            }
            tree.apply(
                header(10),
                Event::ExecArgv {
                    bytes: Vec::new(),
                    flags: 0,
                },
            );
        }
        let recorded = tree.finish(0);
        let execs_kept = &recorded.processes[0].execs;
        assert_eq!(execs_kept.len(), execs);
        let with_argv = execs_kept
            .iter()
            .filter(|exec| !exec.argv.is_empty())
            .count();
        assert_eq!(with_argv, MAX_RECORDED_ARGV_BYTES / argv.len());
        assert_eq!(recorded.counts.argv_over_limit, 3);
    }

    #[test]
    fn non_utf8_arguments_are_escaped_not_replaced() {
        assert_eq!(split_argv(b"a\0\xff\n\0"), ["a", "\\xff\\x0a"]);
    }
}
