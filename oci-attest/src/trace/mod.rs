//! eBPF tracing of the wrapped command's process tree (design: `docs/tracing.md`).
//!
//! [`Tracer::load`] loads the kernel programs of `oci-attest-ebpf`, fills the table of
//! `sys_exit`'s handlers and attaches the others to their raw tracepoints; [`Tracer::track`] puts the stopped child's pid in the tracked set (before
//! it is released) and starts a thread that drains the ring buffer into a
//! [`model::ProcessTree`]; [`Tracer::finish`] (after the tree ended) drains what is left,
//! settles every written inode and executed program, and lists every gap of the trace.

pub mod events;
pub mod identity;
pub mod layout;
pub mod model;
pub mod settle;
pub mod syscalls;

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use aya::maps::{
    Array, HashMap as BpfHashMap, IterableMap, Map, MapData, PerCpuArray, ProgramArray, RingBuf,
};
use aya::programs::raw_trace_point::RawTracePointLink;
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_attest_common::{
    DropReason, FileKey, FlaggedSyscall, InodeId, OutsideWriter, SyscallClass, SyscallRule,
    Tampering, TracerSelf, TAMPER_BPF, TAMPER_KEY, TAMPER_PROC,
};

use crate::observed::{
    Incomplete, IncompleteReason, ObservedProcess, OutsideWrite, SettledFile, TraceCounts,
};
use crate::snapshot::Snapshot;
use events::FileId;
use model::{BootClock, ProcessTree};

/// Ring buffer size when not configured: 100k opens/s under CPU load lost nothing at 4 MiB;
/// twice that leaves room for exec bursts with long argv.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 * 1024 * 1024;

/// The oldest kernel the programs run on: `bpf_loop` (path walks, argv copy) came in 5.17.
pub const MINIMUM_KERNEL: &str = "5.17";

/// The programs `sys_exit` tail-calls (not attached themselves), by name, with the syscall
/// classes each handles (`EXIT_HANDLERS` in oci-attest-ebpf/src/main.rs).
pub const EXIT_HANDLERS: [(&str, &[SyscallClass]); 5] = [
    ("sys_exit_open", &[SyscallClass::Open]),
    (
        "sys_exit_fd",
        &[
            SyscallClass::WriteFd,
            SyscallClass::ResizeFd,
            SyscallClass::Mmap,
            SyscallClass::Ioctl,
        ],
    ),
    ("sys_exit_path_op", &[SyscallClass::PathOp]),
    ("sys_exit_tracer", &[SyscallClass::Tracer]),
    ("sys_exit_send", &[SyscallClass::SendMsg]),
];

/// The raw tracepoints, by program name (the program names are the tracepoint names).
pub const TRACEPOINTS: [&str; 6] = [
    "sys_exit",
    "sys_enter",
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "writeback_mark_inode_dirty",
];

#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// Size of the event ring buffer: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// Files the tree must not open (the signing key, its passphrase file): an open of their
    /// inode makes the trace incomplete (`key-accessed`).
    pub protected_files: Vec<PathBuf>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            protected_files: Vec::new(),
        }
    }
}

/// eBPF tracing cannot run here; `reason` says why in one line.
#[derive(Debug, thiserror::Error)]
#[error("eBPF tracing unavailable: {reason}")]
pub struct TraceUnavailable {
    pub reason: String,
    /// What happened to each program, as far as loading got.
    pub programs: Vec<ProgramStatus>,
}

impl TraceUnavailable {
    fn new(reason: impl Into<String>) -> Self {
        TraceUnavailable {
            reason: reason.into(),
            programs: Vec::new(),
        }
    }
}

/// One kernel program and whether it loaded and attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    /// The program's name (a raw tracepoint program is named after its tracepoint).
    pub name: String,
    /// Where it runs: `raw_tp/<name>`, or a tail call from `sys_exit`.
    pub tracepoint: String,
    pub loaded: bool,
    pub attached: bool,
    /// Why it did not load or attach.
    pub error: Option<String>,
}

impl ProgramStatus {
    /// Not loaded yet.
    fn new(name: &str, tracepoint: String) -> Self {
        ProgramStatus {
            name: name.to_owned(),
            tracepoint,
            loaded: false,
            attached: false,
            error: None,
        }
    }
}

/// Time spent in each phase of the tracer's own cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// BTF read, object loaded (maps created, programs verified).
    pub load: Duration,
    pub attach: Duration,
    /// Links closed, in [`Tracer::finish`].
    pub detach: Duration,
}

/// What the trace saw, returned by [`Tracer::finish`].
#[derive(Clone, Debug, Default)]
pub struct TraceOutcome {
    /// Sorted by start time.
    pub processes: Vec<ObservedProcess>,
    pub counts: TraceCounts,
    /// Every written inode and where it is now.
    pub written: Vec<SettledFile>,
    /// Every gap of the trace (empty when complete).
    pub incomplete: Vec<Incomplete>,
    /// Processes outside the tree that wrote files the tree wrote, while it was traced.
    pub outside_writes: Vec<OutsideWrite>,
    pub phases: Phases,
}

/// Loaded and attached kernel programs, and (once tracking) the ring-buffer consumer.
pub struct Tracer {
    programs: Vec<ProgramStatus>,
    links: Vec<RawTracePointLink>,
    /// Kept open: the kernel empties a program array when its last user fd closes.
    _exit_handlers: Option<Map>,
    tracked: BpfHashMap<MapData, u32, u8>,
    dropped: PerCpuArray<MapData, u64>,
    flagged: BpfHashMap<MapData, FlaggedSyscall, u8>,
    outside_writers: BpfHashMap<MapData, InodeId, OutsideWriter>,
    tampered: BpfHashMap<MapData, Tampering, u8>,
    /// oci-attest's own process id, as the kernel programs know it.
    tracer_pid: u32,
    /// What the consumer thread takes over once `track` starts it.
    consumer_inputs: Option<RingBuf<MapData>>,
    consumer: Option<Consumer>,
    phases: Phases,
    ring_buffer_bytes: u32,
    // Dropped last: unloads the programs.
    _ebpf: Ebpf,
}

struct Consumer {
    stop: OwnedFd,
    thread: JoinHandle<anyhow::Result<Drained>>,
}

struct Drained {
    tree: ProcessTree,
    malformed: u64,
}

impl Tracer {
    /// Loads and attaches every kernel program. Fails with the reason when tracing cannot run
    /// (no privileges, no BTF, verifier rejection, ...).
    pub fn load(config: &TraceConfig) -> Result<Tracer, TraceUnavailable> {
        let started = Instant::now();
        let size = config.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(TraceUnavailable::new(format!(
                "ring buffer size {size} is not a power of two of at least 4096 bytes"
            )));
        }
        layout::check_architecture().map_err(|error| TraceUnavailable::new(error.to_string()))?;
        if !Privileges::current().can_trace() {
            return Err(TraceUnavailable::new(
                "not root and without CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN): cannot load eBPF programs",
            ));
        }
        // Both read the kernel's BTF, each with its own parser (ours for the struct layout, aya's
        // for its relocations): on two threads, as every millisecond here delays the command.
        let (layout, mut loader) = std::thread::scope(|scope| {
            let layout = scope.spawn(|| {
                let layout = layout::read_layout();
                tracing::debug!("eBPF: kernel BTF layout read in {:?}", started.elapsed());
                layout
            });
            let loader = EbpfLoader::new();
            tracing::debug!("eBPF: aya's kernel BTF read in {:?}", started.elapsed());
            let layout = layout
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (layout, loader)
        });
        let layout = layout.map_err(|error| TraceUnavailable::new(format!("{error:#}")))?;
        let tracer_self = TracerSelf {
            tgid: std::process::id(),
            pgid: nix::unistd::getpgrp().as_raw() as u32,
            uid: nix::unistd::getuid().as_raw(),
            _reserved: 0,
        };
        let mut ebpf = loader
            .override_global("LAYOUT", &layout, true)
            .override_global("TRACER_SELF", &tracer_self, true)
            .override_global("WAKEUP_BYTES", &u64::from(size / 4), true)
            .map_max_entries("EVENTS", size)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/oci-attest"
            )))
            .map_err(|error| {
                TraceUnavailable::new(with_privilege_hint(format!(
                    "loading the eBPF object failed: {error}"
                )))
            })?;
        let mut map = |name: &str| ebpf.take_map(name).ok_or_else(|| missing_map(name));
        let unusable = |name: &str, error| TraceUnavailable::new(format!("map {name}: {error}"));
        // Only the kernel programs write these: frozen at once (no syscall may change them from
        // here on, root's included), so a command that gets hold of them (it would need bpf(2),
        // which is recorded) cannot erase a record, and no other process can add one.
        let dropped =
            PerCpuArray::try_from(map("DROPPED")?).map_err(|error| unusable("DROPPED", error))?;
        let flagged =
            BpfHashMap::try_from(map("FLAGGED")?).map_err(|error| unusable("FLAGGED", error))?;
        let outside_writers = BpfHashMap::try_from(map("OUTSIDE_WRITERS")?)
            .map_err(|error| unusable("OUTSIDE_WRITERS", error))?;
        let tampered =
            BpfHashMap::try_from(map("TAMPERED")?).map_err(|error| unusable("TAMPERED", error))?;
        freeze(tampered.map())?;
        freeze(flagged.map())?;
        freeze(outside_writers.map())?;
        freeze(dropped.map())?;
        // These are filled here, then frozen.
        let mut rules: Array<MapData, SyscallRule> =
            Array::try_from(map("RULES")?).map_err(|error| unusable("RULES", error))?;
        for (nr, rule) in syscalls::table().into_iter().enumerate() {
            rules
                .set(nr as u32, rule, 0)
                .map_err(|error| TraceUnavailable::new(format!("filling RULES: {error}")))?;
        }
        let mut protected: BpfHashMap<MapData, FileKey, u8> =
            BpfHashMap::try_from(map("PROTECTED")?)
                .map_err(|error| unusable("PROTECTED", error))?;
        for path in &config.protected_files {
            let key =
                file_key(path).map_err(|error| TraceUnavailable::new(format!("{error:#}")))?;
            protected
                .insert(key, 1, 0)
                .map_err(|error| TraceUnavailable::new(format!("filling PROTECTED: {error}")))?;
        }
        // oci-attest's threads now (the loader, the main thread and any hashing the materials
        // meanwhile); `sched_process_fork` adds those started once the programs are attached,
        // and drops the ids of these that ended before, when a new task reuses them.
        let mut threads: BpfHashMap<MapData, u32, u8> =
            BpfHashMap::try_from(map("TRACER_THREADS")?)
                .map_err(|error| unusable("TRACER_THREADS", error))?;
        for thread in own_threads().map_err(|error| TraceUnavailable::new(format!("{error:#}")))? {
            threads.insert(thread, 1, 0).map_err(|error| {
                TraceUnavailable::new(format!("filling TRACER_THREADS: {error}"))
            })?;
        }
        freeze(rules.map())?;
        freeze(protected.map())?;
        freeze(threads.map())?;
        let tracked =
            BpfHashMap::try_from(map("TRACKED")?).map_err(|error| unusable("TRACKED", error))?;
        let events =
            RingBuf::try_from(map("EVENTS")?).map_err(|error| unusable("EVENTS", error))?;
        let before_programs = started.elapsed();
        let Attached {
            statuses: programs,
            links,
            exit_handlers,
            load: verify,
            attach,
        } = attach_all(&mut ebpf);
        let phases = Phases {
            load: before_programs + verify,
            attach,
            detach: Duration::ZERO,
        };
        tracing::debug!(
            "eBPF: load {:?} (object and maps {before_programs:?}, verifier {verify:?}), attach {:?}",
            phases.load,
            phases.attach
        );
        // A program the verifier refused explains the others' failure to attach.
        let failed = (programs.iter().find(|program| !program.loaded))
            .or_else(|| programs.iter().find(|program| !program.attached));
        if let Some(failed) = failed {
            return Err(TraceUnavailable {
                reason: with_privilege_hint(format!(
                    "program {} did not load/attach: {}",
                    failed.name,
                    failed.error.as_deref().unwrap_or_default()
                )),
                programs,
            });
        }
        Ok(Tracer {
            programs,
            links,
            _exit_handlers: exit_handlers,
            tracked,
            dropped,
            flagged,
            outside_writers,
            tampered,
            tracer_pid: tracer_self.tgid,
            consumer_inputs: Some(events),
            consumer: None,
            phases,
            ring_buffer_bytes: size,
            _ebpf: ebpf,
        })
    }

    pub fn programs(&self) -> &[ProgramStatus] {
        &self.programs
    }

    /// Time spent reading BTF, loading and attaching.
    pub fn load_duration(&self) -> Duration {
        self.phases.load + self.phases.attach
    }

    pub fn ring_buffer_bytes(&self) -> u32 {
        self.ring_buffer_bytes
    }

    /// Traces `pid` and its descendants from now on. Call it while the child is stopped before
    /// its exec. Once only.
    pub fn track(&mut self, pid: u32) -> anyhow::Result<()> {
        let Some(events) = self.consumer_inputs.take() else {
            bail!("the tracer already tracks a process");
        };
        self.tracked
            .insert(pid, 1, 0)
            .with_context(|| format!("adding pid {pid} to the tracked set"))?;
        freeze(self.tracked.map())?;
        let tree = ProcessTree::new(pid, std::process::id(), BootClock::now());
        let (stop_read, stop) = nix::unistd::pipe().context("creating the stop pipe")?;
        let thread = std::thread::Builder::new()
            .name("trace-events".into())
            .spawn(move || consume(events, tree, stop_read))
            .context("starting the trace consumer thread")?;
        self.consumer = Some(Consumer { stop, thread });
        Ok(())
    }

    /// Drains the remaining events (call after the tracked tree ended), then settles what
    /// was written and executed against the filesystem as it is now; `after` (the snapshot of
    /// `working_dir` taken now) finds written inodes that moved there.
    pub fn finish(mut self, working_dir: &Path, after: &Snapshot) -> anyhow::Result<TraceOutcome> {
        let consumer = self
            .consumer
            .take()
            .ok_or_else(|| anyhow!("the tracer never tracked a process"))?;
        std::fs::File::from(consumer.stop)
            .write_all(&[1])
            .context("stopping the trace consumer")?;
        let drained = consumer
            .thread
            .join()
            .map_err(|_| anyhow!("the trace consumer thread panicked"))??;
        let dropped = |reason: DropReason| -> anyhow::Result<u64> {
            Ok(self
                .dropped
                .get(&(reason as u32), 0)
                .context("reading the drop counters")?
                .iter()
                .sum())
        };
        // A record we could not decode is an event lost as surely as one never queued.
        let lost = dropped(DropReason::RingBufferFull)? + drained.malformed;
        let drops = [
            (
                IncompleteReason::LostEvents,
                lost,
                "events lost (ring buffer full: raise --trace-buffer-bytes)",
            ),
            (
                IncompleteReason::LostEvents,
                dropped(DropReason::TrackedSetFull)?,
                "child processes not traced (tracked-process map full)",
            ),
            (
                IncompleteReason::WrittenSetFull,
                dropped(DropReason::WrittenSetFull)?,
                "written files not recorded (written-inode map full)",
            ),
            (
                IncompleteReason::UnresolvedPath,
                dropped(DropReason::UnreadableFile)?,
                "file objects the kernel programs could not read",
            ),
        ];
        let flagged: Vec<FlaggedSyscall> = self
            .flagged
            .keys()
            .collect::<Result<_, _>>()
            .context("reading the flagged syscalls")?;
        let outside_writes: Vec<OutsideWrite> = self
            .outside_writers
            .iter()
            .map(|entry| {
                entry.map(|(inode, writer)| {
                    let file = FileId::from_kernel(&inode);
                    let comm =
                        &writer.comm[..writer.comm.iter().position(|&b| b == 0).unwrap_or(16)];
                    OutsideWrite {
                        dev: file.dev,
                        ino: file.ino,
                        generation: inode.generation,
                        pid: writer.pid,
                        program: crate::pathtext::escape_bytes(comm),
                    }
                })
            })
            .collect::<Result<_, _>>()
            .context("reading the outside writers")?;
        let detaching = Instant::now();
        // Raw tracepoint links detach in well under a millisecond each.
        drop(std::mem::take(&mut self.links));
        let phases = Phases {
            detach: detaching.elapsed(),
            ..self.phases
        };
        let recorded = drained.tree.finish(lost);
        let counts = recorded.counts;
        let mut incomplete = Vec::new();
        let observed_gaps = [
            (
                IncompleteReason::ArgvTruncated,
                counts.truncated_argvs,
                "execs with an argv longer than the kernel side reads",
            ),
            (
                IncompleteReason::ArgvUnreadable,
                counts.unreadable_argvs,
                "execs whose argument area could not be read",
            ),
            (
                IncompleteReason::UnresolvedPath,
                counts.unresolved_paths,
                "paths the kernel could not build",
            ),
            (
                IncompleteReason::PathTruncated,
                counts.truncated_paths,
                "paths longer than the kernel buffer (4096 bytes)",
            ),
            (
                IncompleteReason::ArgvLimit,
                counts.argv_over_limit,
                &format!(
                    "execs recorded without their argv: the run's argv budget ({} MiB) was spent",
                    crate::trace::model::MAX_RECORDED_ARGV_BYTES >> 20
                ),
            ),
        ];
        for (reason, count, what) in drops.into_iter().chain(observed_gaps) {
            if count > 0 {
                incomplete.push(Incomplete {
                    reason,
                    detail: format!("{count} {what}"),
                });
            }
        }
        incomplete.extend(flagged.iter().map(flagged_reason));
        let tampered: Vec<Tampering> = self
            .tampered
            .keys()
            .collect::<Result<_, _>>()
            .context("reading what the tree did to oci-attest")?;
        let mut processes = recorded.processes;
        incomplete.extend(
            tampered
                .iter()
                .map(|tampering| tampering_reason(tampering, self.tracer_pid, &processes)),
        );
        incomplete.extend(privileges_gained(&processes));
        let written = settle::settle_written(
            &recorded.written,
            &processes,
            working_dir,
            after,
            &mut incomplete,
        );
        settle::settle_programs(&mut processes, &recorded.written, &mut incomplete);
        for file in &written {
            tracing::debug!(
                "written {} (inode {}:{}): {:?}",
                crate::pathtext::escape(&file.written_as),
                file.dev,
                file.ino,
                file.fate
            );
        }
        incomplete.sort();
        incomplete.dedup();
        Ok(TraceOutcome {
            processes,
            counts,
            written,
            incomplete,
            outside_writes,
            phases,
        })
    }
}

fn flagged_reason(syscall: &FlaggedSyscall) -> Incomplete {
    if syscall.compat != 0 {
        Incomplete {
            reason: IncompleteReason::CompatSyscall,
            detail: format!(
                "32-bit compat syscall {} (int $0x80 or a 32-bit program) is not modelled",
                syscall.nr
            ),
        }
    } else {
        let name = syscalls::name(syscall.nr).unwrap_or("unknown syscall");
        Incomplete {
            reason: IncompleteReason::UnmodelledSyscall,
            detail: format!("{name}: can change files in ways the trace does not follow"),
        }
    }
}

/// The program the process `pid` of the tree last executed, for messages.
fn program_of(pid: u32, processes: &[ObservedProcess]) -> &str {
    processes
        .iter()
        .find(|process| process.pid == pid)
        .map_or("?", ObservedProcess::program)
}

fn tampering_reason(
    tampering: &Tampering,
    tracer_pid: u32,
    processes: &[ObservedProcess],
) -> Incomplete {
    let who = format!(
        "pid {} ({})",
        tampering.pid,
        program_of(tampering.pid, processes)
    );
    let call = syscalls::name(tampering.nr).unwrap_or("a syscall");
    let (reason, detail) = match tampering.kind {
        TAMPER_KEY => (
            IncompleteReason::KeyAccessed,
            format!(
                "{who} opened the signing key or its passphrase file ({call}): the key must be \
                 considered compromised (replace it and stop trusting its public key)"
            ),
        ),
        TAMPER_PROC => (
            IncompleteReason::TracerTampered,
            format!(
                "{who} opened a private /proc file of oci-attest (pid {tracer_pid}) with {call}"
            ),
        ),
        TAMPER_BPF if call == "bpf" => (
            IncompleteReason::TracerTampered,
            format!("{who} called bpf(2): the tracer's programs and maps are reachable through it"),
        ),
        TAMPER_BPF => (
            IncompleteReason::TracerTampered,
            format!("{who} called {call}: it changes the kernel the tracer runs in"),
        ),
        _ => (
            IncompleteReason::TracerTampered,
            format!("{who} called {call} on oci-attest (pid {tracer_pid})"),
        ),
    };
    Incomplete { reason, detail }
}

/// Every exec that raised privileges, by a program other than the id-mapping helpers.
fn privileges_gained(processes: &[ObservedProcess]) -> Vec<Incomplete> {
    processes
        .iter()
        .flat_map(|process| process.execs.iter().map(move |exec| (process.pid, exec)))
        .filter_map(|(pid, exec)| {
            let raised = exec.privileges.as_ref()?;
            if exec.is_id_map_helper() {
                return None;
            }
            Some(Incomplete {
                reason: IncompleteReason::PrivilegeGained,
                detail: format!(
                    "pid {pid} executed {} and gained privileges (uid {}, euid {}, effective \
                     capabilities {:#x})",
                    exec.program, raised.uid, raised.euid, raised.cap_effective
                ),
            })
        })
        .collect()
}

/// The kernel's identity of `path` (`s_dev` encoding: major << 20 | minor).
fn file_key(path: &Path) -> anyhow::Result<FileKey> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
    let dev = metadata.dev();
    Ok(FileKey {
        dev: (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev)),
        ino: metadata.ino(),
    })
}

/// The thread ids of this process.
fn own_threads() -> anyhow::Result<Vec<u32>> {
    std::fs::read_dir("/proc/self/task")
        .context("/proc/self/task: cannot list this process's threads")?
        .map(|entry| {
            let entry = entry.context("/proc/self/task")?;
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
                .with_context(|| {
                    format!("/proc/self/task: unexpected entry {:?}", entry.file_name())
                })
        })
        .collect()
}

/// Makes `map` read-only for every bpf(2) caller, root included, for good: only the kernel
/// programs can change it from now on. By hand because aya keeps its freeze private (it
/// freezes only `.rodata`).
fn freeze(map: &MapData) -> Result<(), TraceUnavailable> {
    /// `union bpf_attr` as BPF_MAP_FREEZE reads it.
    #[repr(C)]
    struct FreezeAttr {
        map_fd: u32,
    }
    const BPF_MAP_FREEZE: libc::c_long = 22;
    let attr = FreezeAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
    };
    // SAFETY: a valid attribute of the size passed; the kernel only reads it.
    let done = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_FREEZE,
            &attr as *const FreezeAttr,
            size_of::<FreezeAttr>() as libc::c_uint,
        )
    };
    if done < 0 {
        return Err(TraceUnavailable::new(format!(
            "freezing a map of the kernel programs: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn missing_map(name: &str) -> TraceUnavailable {
    TraceUnavailable::new(format!("map {name} missing from the object"))
}

/// The kernel programs once loaded: their statuses, the links of the attached ones, the
/// filled table of `sys_exit`'s handlers, and the time spent loading (verifying) and attaching.
struct Attached {
    statuses: Vec<ProgramStatus>,
    links: Vec<RawTracePointLink>,
    exit_handlers: Option<Map>,
    load: Duration,
    attach: Duration,
}

/// Loads every program, puts the handlers in `sys_exit`'s table (then frozen), and attaches
/// each tracepoint program to the raw tracepoint of the same name: the handlers first, so
/// `sys_exit` never runs without them.
fn attach_all(ebpf: &mut Ebpf) -> Attached {
    let loading = Instant::now();
    let mut loaded = load_in_parallel(ebpf);
    let load = loading.elapsed();
    let mut statuses = Vec::new();
    let (exit_handlers, table_error) = match fill_exit_handlers(ebpf) {
        Ok(table) => (Some(table), None),
        Err(error) => (None, Some(error)),
    };
    for (name, classes) in EXIT_HANDLERS {
        let mut status =
            ProgramStatus::new(name, format!("raw_tp/sys_exit, tail call for {classes:?}"));
        let result = loaded
            .remove(name)
            .unwrap_or_else(|| Err("missing from the object".to_owned()))
            .and_then(|()| {
                status.loaded = true;
                table_error.clone().map_or(Ok(()), Err)
            });
        status.attached = result.is_ok();
        status.error = result.err();
        statuses.push(status);
    }
    let mut links = Vec::new();
    let mut attach = Duration::ZERO;
    for name in TRACEPOINTS {
        let mut status = ProgramStatus::new(name, format!("raw_tp/{name}"));
        let result = (|| -> Result<(), String> {
            loaded
                .remove(name)
                .unwrap_or_else(|| Err("missing from the object".to_owned()))?;
            status.loaded = true;
            if exit_handlers.is_none() {
                return Err("not attached: the table of sys_exit's handlers is not filled".into());
            }
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or("missing from the object")?
                .try_into()
                .map_err(|error| format!("not a raw tracepoint program: {error}"))?;
            let attaching = Instant::now();
            let link = program
                .attach(name)
                .and_then(|link| program.take_link(link))
                .map_err(|error| format!("{error:#}"))?;
            attach += attaching.elapsed();
            links.push(link);
            status.attached = true;
            Ok(())
        })();
        status.error = result.err();
        statuses.push(status);
    }
    Attached {
        statuses,
        links,
        exit_handlers,
        load,
        attach,
    }
}

/// Fills `EXIT_HANDLERS` with each loaded handler, by class, and freezes it (no syscall may
/// swap a handler from here on). The table is kept open for the tracer's life: the kernel
/// empties a program array when its last user fd closes.
fn fill_exit_handlers(ebpf: &mut Ebpf) -> Result<Map, String> {
    let mut map = ebpf
        .take_map("EXIT_HANDLERS")
        .ok_or("map EXIT_HANDLERS missing from the object")?;
    let mut table =
        ProgramArray::try_from(&mut map).map_err(|error| format!("EXIT_HANDLERS: {error}"))?;
    for (name, classes) in EXIT_HANDLERS {
        let fd = ebpf
            .program(name)
            .ok_or_else(|| format!("{name} missing from the object"))?
            .fd()
            .map_err(|error| format!("{name} not loaded: {error}"))?;
        for class in classes {
            table
                .set(*class as u32, fd, 0)
                .map_err(|error| format!("filling EXIT_HANDLERS: {error}"))?;
        }
    }
    let Map::ProgramArray(data) = &map else {
        unreachable!("ProgramArray::try_from accepted it");
    };
    freeze(data).map_err(|error| error.reason)?;
    Ok(map)
}

/// Loads (verifies) every program, each on its own thread: the verifier is most of the
/// tracer's fixed cost, and the programs are independent (README "Cost of tracing"). The
/// syscall handlers are separate programs so that no single one takes most of it.
fn load_in_parallel(ebpf: &mut Ebpf) -> HashMap<&'static str, Result<(), String>> {
    std::thread::scope(|scope| {
        let loads: Vec<_> = ebpf
            .programs_mut()
            .filter_map(|(name, program)| {
                let name = TRACEPOINTS
                    .into_iter()
                    .chain(EXIT_HANDLERS.map(|(name, _)| name))
                    .find(|wanted| *wanted == name)?;
                Some((
                    name,
                    scope.spawn(move || -> Result<(), String> {
                        let started = Instant::now();
                        let program: &mut RawTracePoint = program
                            .try_into()
                            .map_err(|error| format!("not a raw tracepoint program: {error}"))?;
                        program.load().map_err(|error| format!("{error:#}"))?;
                        tracing::debug!("eBPF: {name} verified in {:?}", started.elapsed());
                        Ok(())
                    }),
                ))
            })
            .collect();
        loads
            .into_iter()
            .map(|(name, load)| {
                let result = load
                    .join()
                    .unwrap_or_else(|_| Err("its loading thread panicked".to_owned()));
                (name, result)
            })
            .collect()
    })
}

/// Appends the likely cause when the process lacks the privileges eBPF needs.
fn with_privilege_hint(message: String) -> String {
    let privileges = Privileges::current();
    if privileges.can_trace() {
        message
    } else {
        format!("{message} (not root and no CAP_BPF+CAP_PERFMON)")
    }
}

/// The capabilities that matter for loading tracepoint programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    pub root: bool,
    pub cap_bpf: bool,
    pub cap_perfmon: bool,
    pub cap_sys_admin: bool,
}

impl Privileges {
    pub fn current() -> Self {
        let effective = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("CapEff:"))
                    .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            })
            .unwrap_or(0);
        let has = |capability: u32| effective & (1 << capability) != 0;
        Privileges {
            root: nix::unistd::geteuid().is_root(),
            cap_bpf: has(39),
            cap_perfmon: has(38),
            cap_sys_admin: has(21),
        }
    }

    pub fn can_trace(&self) -> bool {
        self.cap_sys_admin || (self.cap_bpf && self.cap_perfmon)
    }
}

/// How often the consumer drains the ring buffer when the kernel has not woken it.
const DRAIN_INTERVAL_MS: u16 = 10;

/// The consumer thread: decodes events into the tree until told to stop, then drains what is
/// left (everything the tree produced before its exit is queued by then).
fn consume(
    mut events: RingBuf<MapData>,
    mut tree: ProcessTree,
    stop: OwnedFd,
) -> anyhow::Result<Drained> {
    let mut malformed = 0;
    loop {
        malformed += drain(&mut events, &mut tree);
        let mut fds = [
            PollFd::new(events.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        // The kernel wakes us only when the ring is a quarter full; otherwise we drain on
        // this timeout (short enough that the ring cannot fill in between at 100k events/s).
        match poll(&mut fds, PollTimeout::from(DRAIN_INTERVAL_MS)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(error) => return Err(anyhow!("polling the trace ring buffer: {error}")),
        }
        let stopping = fds[1].revents().is_some_and(|events| !events.is_empty());
        if stopping {
            malformed += drain(&mut events, &mut tree);
            return Ok(Drained { tree, malformed });
        }
    }
}

/// Applies every queued record to the tree; returns how many could not be decoded.
fn drain(events: &mut RingBuf<MapData>, tree: &mut ProcessTree) -> u64 {
    let mut malformed = 0;
    while let Some(record) = events.next() {
        match events::decode(&record) {
            Ok((header, event)) => tree.apply(header, event),
            Err(error) => {
                tracing::warn!("{error}");
                malformed += 1;
            }
        }
    }
    malformed
}
