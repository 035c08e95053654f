//! What was observed of the wrapped command: produced by `launch` and `trace`, consumed by the
//! product collector, the auto-attach rules and the command-run attestor. Plain data, so each
//! side can be tested without the other.

use std::path::PathBuf;
use std::time::SystemTime;

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
    /// Events the kernel could not queue (sum of the per-CPU lost counters).
    pub lost: u64,
    pub execs: u64,
    pub forks: u64,
    pub file_ops: u64,
    /// Execs whose argv could not be read whole (too long, too many arguments, unreadable).
    pub truncated_argvs: u64,
    /// File operations whose relative path could not be resolved (unknown cwd or dirfd):
    /// they are not in the process's lists.
    pub unresolved_paths: u64,
}

/// Why a trace is incomplete: the codes of `summary.incomplete` (documented in
/// `docs/tracing.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    TreeStillRunning,
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
            IncompleteReason::TreeStillRunning => "tree-still-running",
        }
    }
}

/// One gap of the trace: a reason code and one human line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Incomplete {
    pub reason: IncompleteReason,
    pub detail: String,
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
    /// Absolute paths opened for writing (O_WRONLY/O_RDWR/O_CREAT/O_TRUNC, or creat), in order.
    pub writes: Vec<PathBuf>,
    /// Absolute paths opened read-only.
    pub reads: Vec<PathBuf>,
    /// (old, new) absolute paths, in order.
    pub renames: Vec<(PathBuf, PathBuf)>,
    pub deletes: Vec<PathBuf>,
}

/// One successful exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    /// Path of the executable as the kernel resolved it.
    pub program: String,
    /// argv as read in the kernel, untruncated.
    pub argv: Vec<String>,
    pub time: SystemTime,
}

impl ObservedProcess {
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
    pub working_dir: PathBuf,
    pub started: SystemTime,
    pub ended: SystemTime,
    pub termination: Termination,
    pub trace: TraceMode,
    pub counts: TraceCounts,
    /// Sorted by start time. Empty when the trace was off.
    pub processes: Vec<ObservedProcess>,
    /// Why the trace cannot be trusted to be whole; empty when it is complete.
    pub incomplete: Vec<Incomplete>,
}

impl Observation {
    /// argv of every exec seen in the tree (the "exec_observed" set for auto-attach).
    pub fn exec_argvs(&self) -> impl Iterator<Item = &[String]> {
        self.processes
            .iter()
            .flat_map(|process| process.execs.iter())
            .map(|exec| exec.argv.as_slice())
    }
}
