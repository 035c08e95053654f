//! What was observed of the wrapped command: produced by `launch` and `trace`, consumed by the
//! product collector, the auto-attach rules and the command-run attestor. Plain data, so each
//! side can be tested without the other.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::identity::CommandIdentity;

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signalled(i32),
}

impl Termination {
    /// The shell convention the attestation records: the code, or 128 + signal number.
    pub fn exit_code(self) -> i32 {
        match self {
            Termination::Exited(code) => code,
            Termination::Signalled(signal) => 128 + signal,
        }
    }
}

/// Whether the kernel trace ran, and if not why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceMode {
    Ebpf,
    Off { reason: String },
}

/// Counters of the trace, reported in the command-run `summary`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceCounts {
    /// Events received from the ring buffer.
    pub events: u64,
    /// Events the kernel could not queue (sum of the per-CPU counters) or that could not be
    /// decoded.
    pub lost: u64,
    pub execs: u64,
    pub forks: u64,
    /// Written files and path operations (rename, link, unlink, truncate).
    pub file_ops: u64,
    /// Execs whose argv was longer than the kernel side reads.
    pub truncated_argvs: u64,
    /// Execs whose argument area could not be read.
    pub unreadable_argvs: u64,
    /// Paths the kernel could not build (unreadable dentry chain, unknown dirfd).
    pub unresolved_paths: u64,
    /// Paths longer than the kernel-side buffer.
    pub truncated_paths: u64,
    /// Execs whose argv was not kept: the run's argv budget
    /// ([`crate::trace::model::MAX_RECORDED_ARGV_BYTES`]) was spent.
    pub argv_over_limit: u64,
}

/// Why a trace is incomplete: the codes of `summary.incomplete` (documented in
/// `docs/tracing.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncompleteReason {
    LostEvents,
    PendingMapFull,
    WrittenSetFull,
    ArgvTruncated,
    ArgvUnreadable,
    UnmodelledSyscall,
    CompatSyscall,
    UnresolvedPath,
    PathTruncated,
    UnverifiedProduct,
    ProgramReplaced,
    /// A program executed from a file without a name (memfd, O_TMPFILE, a deleted file).
    FilelessExec,
    /// A process of the tree was still alive when `--wait-for-tree` ran out.
    TreeStillRunning,
    /// A file in the working directory (or a product) changed in a way the trace does not
    /// explain: written, created or removed by something outside the traced tree.
    UntracedChange,
    /// The tree handed a file open for writing to something that can write it out of the
    /// trace's sight: a loop device, or a receiver of the fd over a Unix socket.
    HandedOut,
    /// A product kept changing while it was hashed, or changed after the tree ended.
    ProductUnstable,
    /// More argv than the run records in total: later execs are listed without their argv.
    ArgvLimit,
    /// The tree reached oci-attest itself: a signal, ptrace, its memory, limits, scheduling or
    /// descriptors, a private `/proc` file of it, or bpf(2).
    TracerTampered,
    /// The tree opened the signing key or its passphrase file: the key is compromised.
    KeyAccessed,
    /// An exec raised a process's privileges (setuid, setgid, file capabilities), by a program
    /// other than the uid-mapping helpers of rootless containers.
    PrivilegeGained,
}

impl IncompleteReason {
    pub fn code(self) -> &'static str {
        match self {
            IncompleteReason::LostEvents => "lost-events",
            IncompleteReason::PendingMapFull => "pending-map-full",
            IncompleteReason::WrittenSetFull => "written-set-full",
            IncompleteReason::ArgvTruncated => "argv-truncated",
            IncompleteReason::ArgvUnreadable => "argv-unreadable",
            IncompleteReason::UnmodelledSyscall => "unmodelled-syscall",
            IncompleteReason::CompatSyscall => "compat-syscall",
            IncompleteReason::UnresolvedPath => "unresolved-path",
            IncompleteReason::PathTruncated => "path-truncated",
            IncompleteReason::UnverifiedProduct => "unverified-product",
            IncompleteReason::ProgramReplaced => "program-replaced",
            IncompleteReason::FilelessExec => "fileless-exec",
            IncompleteReason::TreeStillRunning => "tree-still-running",
            IncompleteReason::UntracedChange => "untraced-change",
            IncompleteReason::HandedOut => "handed-out",
            IncompleteReason::ProductUnstable => "product-unstable",
            IncompleteReason::ArgvLimit => "argv-limit",
            IncompleteReason::TracerTampered => "tracer-tampered",
            IncompleteReason::KeyAccessed => "key-accessed",
            IncompleteReason::PrivilegeGained => "privilege-gained",
        }
    }
}

/// One gap of the trace: a reason code and one human line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Incomplete {
    pub reason: IncompleteReason,
    pub detail: String,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

/// A regular file whose content a process changed, as the kernel identified it when the
/// process first changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its path then, built in the kernel from the dentry chain.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// Where a written file is at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// These paths name that very inode now (checked with `lstat`).
    Present(Vec<PathBuf>),
    /// Deleted (unlinked by the tree, never linked, or its inode number reused).
    Deleted,
    /// On a kernel pseudo-filesystem (/proc, /sys, ...): not a file with lasting content.
    Pseudo,
    /// No path found that names it, and not known deleted: the trace is incomplete.
    Unverified,
}

/// A process outside the traced tree that dirtied the pages of a file the tree wrote, while
/// the run was traced (it received the file's fd, reopened it through `/proc`, or opened its
/// path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutsideWrite {
    pub dev: u64,
    pub ino: u64,
    pub generation: u32,
    pub pid: u32,
    /// Its `comm`.
    pub program: String,
}

/// A written inode and where it ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledFile {
    pub dev: u64,
    pub ino: u64,
    /// The path the kernel saw at the first write.
    pub written_as: PathBuf,
    pub fate: Fate,
}

/// One process of the traced tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedProcess {
    pub pid: u32,
    pub parent_pid: u32,
    /// Every exec of this process in order (a process may exec several times, e.g. `sh -c 'exec x'`).
    pub execs: Vec<ExecRecord>,
    pub started: SystemTime,
    pub ended: Option<SystemTime>,
    pub exit: Option<Termination>,
    /// Files whose content it changed, in order of the first change, wherever they are.
    pub writes: Vec<WrittenFile>,
    /// (old, new) paths: the directory built in the kernel, the name as passed.
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// (existing, new) hard links, same construction.
    pub links: Vec<(PathBuf, PathBuf)>,
    pub deletes: Vec<PathBuf>,
    /// Paths truncated with truncate(2).
    pub truncates: Vec<PathBuf>,
}

/// The executed file as the kernel identified it at the exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProgramId {
    /// `st_dev` encoding.
    pub dev: u64,
    pub ino: u64,
    /// `inode.i_generation`.
    pub generation: u32,
    /// Its ctime at the exec (seconds, nanoseconds): a later change of content moves it.
    pub ctime: (i64, u32),
    /// Its link count at the exec: 0 for a file without a name (memfd, O_TMPFILE, deleted).
    pub nlink: u32,
}

/// One successful exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    /// Path of the file the kernel executed, built in the kernel.
    pub program: String,
    /// The file the kernel executed, as it identified it then.
    pub program_id: ProgramId,
    /// SHA-256 of the program, only when the file at `program` is still that inode.
    pub program_digest: Option<String>,
    /// argv as the new image received it.
    pub argv: Vec<String>,
    pub time: SystemTime,
    /// The credentials the exec gave the process when it raised its privileges (setuid,
    /// setgid, file capabilities); `None` when it did not.
    pub privileges: Option<RaisedPrivileges>,
}

/// The credentials of an exec that raised privileges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RaisedPrivileges {
    pub uid: u32,
    pub euid: u32,
    /// Capability sets as bit masks (bit n: capability n).
    #[serde(rename = "capeffective")]
    pub cap_effective: u64,
    #[serde(rename = "cappermitted")]
    pub cap_permitted: u64,
}

impl ObservedProcess {
    /// A process seen starting, with nothing observed yet.
    pub fn new(pid: u32, parent_pid: u32, started: SystemTime) -> Self {
        ObservedProcess {
            pid,
            parent_pid,
            execs: Vec::new(),
            started,
            ended: None,
            exit: None,
            writes: Vec::new(),
            renames: Vec::new(),
            links: Vec::new(),
            deletes: Vec::new(),
            truncates: Vec::new(),
        }
    }

    /// The program of the last exec (the inherited one if this process never exec'd: empty).
    pub fn program(&self) -> &str {
        self.execs.last().map_or("", |exec| exec.program.as_str())
    }

    /// argv of the last exec.
    pub fn argv(&self) -> &[String] {
        self.execs.last().map_or(&[], |exec| exec.argv.as_slice())
    }
}

/// Everything known about one run of the wrapped command.
#[derive(Clone, Debug)]
pub struct Observation {
    pub argv: Vec<String>,
    /// Who the command ran as.
    pub identity: CommandIdentity,
    pub working_dir: PathBuf,
    pub started: SystemTime,
    pub ended: SystemTime,
    pub termination: Termination,
    pub trace: TraceMode,
    pub counts: TraceCounts,
    /// Sorted by start time. Empty when the trace was off.
    pub processes: Vec<ObservedProcess>,
    /// Every written inode and where it is now. Empty when the trace was off.
    pub written: Vec<SettledFile>,
    /// Writes by processes outside the tree to files the tree wrote. Empty when untraced.
    pub outside_writes: Vec<OutsideWrite>,
    /// Everything the observation could not account for; non-empty means exit 3 unless
    /// `--allow-incomplete-trace`.
    pub incomplete: Vec<Incomplete>,
}

/// The uid-mapping helpers of rootless containers (podman, buildah, skopeo's
/// containers-storage): the setuid programs a command run with `--allow-new-privileges` is
/// expected to need, and the ones no_new_privs stops.
pub const ID_MAP_HELPERS: [&str; 2] = ["newuidmap", "newgidmap"];

impl ExecRecord {
    /// Whether the program is one of the [`ID_MAP_HELPERS`].
    pub fn is_id_map_helper(&self) -> bool {
        let name = self.program.rsplit('/').next().unwrap_or_default();
        ID_MAP_HELPERS.contains(&name)
    }
}

impl Observation {
    /// An id-mapping helper ([`ID_MAP_HELPERS`]) that failed while no_new_privs was set: its
    /// setuid bit did nothing, so it could not write the map (`newuidmap: write to uid_map
    /// failed: Operation not permitted`) and the rootless tool above it failed. Returns the
    /// helper's program and pid.
    pub fn refused_id_mapping(&self) -> Option<(&str, u32)> {
        if !self.identity.nonewprivs {
            return None;
        }
        self.processes.iter().find_map(|process| {
            let exec = process.execs.last()?;
            let failed = process.exit.is_some_and(|exit| exit.exit_code() != 0);
            (failed && exec.is_id_map_helper()).then_some((exec.program.as_str(), process.pid))
        })
    }

    /// argv of every exec seen in the tree (the "exec_observed" set for auto-attach).
    pub fn exec_argvs(&self) -> impl Iterator<Item = &[String]> {
        self.processes
            .iter()
            .flat_map(|process| process.execs.iter())
            .map(|exec| exec.argv.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn ran(pid: u32, program: &str, exit: i32) -> ObservedProcess {
        let mut process = ObservedProcess::new(pid, 1, UNIX_EPOCH);
        process.execs.push(ExecRecord {
            program: program.to_owned(),
            program_id: ProgramId::default(),
            program_digest: None,
            argv: vec![program.to_owned()],
            time: UNIX_EPOCH,
            privileges: None,
        });
        process.exit = Some(Termination::Exited(exit));
        process
    }

    fn observed(nonewprivs: bool, processes: Vec<ObservedProcess>) -> Observation {
        let mut identity = CommandIdentity::current();
        identity.nonewprivs = nonewprivs;
        Observation {
            argv: vec!["podman".to_owned()],
            identity,
            working_dir: PathBuf::from("/"),
            started: UNIX_EPOCH,
            ended: UNIX_EPOCH,
            termination: Termination::Exited(1),
            trace: TraceMode::Ebpf,
            counts: TraceCounts::default(),
            processes,
            written: Vec::new(),
            outside_writes: Vec::new(),
            incomplete: Vec::new(),
        }
    }

    #[test]
    fn a_failed_id_mapping_helper_under_no_new_privs_is_found() {
        let processes = vec![
            ran(10, "/usr/bin/podman", 1),
            ran(11, "/usr/bin/newuidmap", 1),
        ];
        assert_eq!(
            observed(true, processes.clone()).refused_id_mapping(),
            Some(("/usr/bin/newuidmap", 11))
        );
        // With new privileges allowed the helper failed for another reason.
        assert_eq!(observed(false, processes).refused_id_mapping(), None);
        // A helper that mapped the ids, or a failed program of another name, is no refusal.
        let fine = vec![
            ran(11, "/usr/bin/newgidmap", 0),
            ran(12, "/tmp/newuidmap-not", 1),
        ];
        assert_eq!(observed(true, fine).refused_id_mapping(), None);
    }
}
