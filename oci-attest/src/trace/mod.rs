//! eBPF tracing of the wrapped command's process tree (docs/tracing.md).
//!
//! [`Tracer::load`] loads and attaches the kernel programs of `oci-attest-ebpf`;
//! [`Tracer::track`] puts the stopped child's pid in the tracked set (before it is released)
//! and starts a thread that drains the ring buffer into a [`model::ProcessTree`];
//! [`Tracer::finish`] (after the child exited) drains what is left and returns the processes
//! and counters, including the events the kernel could not queue.

pub mod events;
pub mod layout;
pub mod model;

use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::trace_point::TracePointLink;
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::observed::{ObservedProcess, TraceCounts};
use model::{BootClock, ProcessTree};

/// Ring buffer size when not configured: 100k opens/s under CPU load lost nothing at 4 MiB
/// (docs/tracing.md); twice that leaves room for exec bursts with long argv.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// Size of the event ring buffer: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
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
    /// The program's name, which is also its tracepoint's name.
    pub name: String,
    /// `category/name` under tracefs `events/`.
    pub tracepoint: String,
    pub loaded: bool,
    pub attached: bool,
    /// Why it did not load or attach.
    pub error: Option<String>,
}

/// What the trace saw, returned by [`Tracer::finish`].
#[derive(Clone, Debug)]
pub struct TraceOutcome {
    /// Sorted by start time.
    pub processes: Vec<ObservedProcess>,
    pub counts: TraceCounts,
}

/// Loaded and attached kernel programs, and (once tracking) the ring-buffer consumer.
pub struct Tracer {
    programs: Vec<ProgramStatus>,
    /// Detached in parallel on drop (see the Drop impl).
    links: Vec<TracePointLink>,
    tracked: BpfHashMap<MapData, u32, u8>,
    lost: PerCpuArray<MapData, u64>,
    /// What the consumer thread takes over once `track` starts it.
    consumer_inputs: Option<(RingBuf<MapData>, EbpfLogger<&'static dyn log::Log>)>,
    consumer: Option<Consumer>,
    load_duration: Duration,
    ring_buffer_bytes: u32,
    // Dropped last: detaches and unloads the programs.
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
    /// (no privileges, tracefs missing, verifier rejection, ...).
    pub fn load(config: &TraceConfig) -> Result<Tracer, TraceUnavailable> {
        let started = Instant::now();
        let size = config.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(TraceUnavailable::new(format!(
                "ring buffer size {size} is not a power of two of at least 4096 bytes"
            )));
        }
        if !Privileges::current().can_trace() {
            return Err(TraceUnavailable::new(
                "not root and without CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN): cannot load eBPF programs",
            ));
        }
        let tracefs = layout::tracefs_root().map_err(TraceUnavailable::new)?;
        let layout = layout::read_layout(&tracefs)
            .map_err(|error| TraceUnavailable::new(format!("{error:#}")))?;

        let layout_read = started.elapsed();
        let mut ebpf = EbpfLoader::new()
            .override_global("LAYOUT", &layout, true)
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
        // The logger owns the log map the programs write to: it must exist before they load.
        let logger = EbpfLogger::init(&mut ebpf).map_err(|error| {
            TraceUnavailable::new(format!("aya-log initialisation failed: {error}"))
        })?;
        let object_loaded = started.elapsed();
        let (programs, links) = attach_all(&mut ebpf, &tracefs);
        tracing::debug!(
            "eBPF: layouts read in {layout_read:?}, object loaded at {object_loaded:?}, \
             programs attached at {:?}",
            started.elapsed()
        );
        if let Some(failed) = programs
            .iter()
            .find(|program| !program.attached && program.error.is_some())
        {
            return Err(TraceUnavailable {
                reason: with_privilege_hint(format!(
                    "program {} did not load/attach: {}",
                    failed.name,
                    failed.error.as_deref().unwrap_or_default()
                )),
                programs,
            });
        }
        let mut map = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| TraceUnavailable::new(format!("map {name} missing from the object")))
        };
        let tracked = BpfHashMap::try_from(map("TRACKED")?)
            .map_err(|error| TraceUnavailable::new(format!("map TRACKED: {error}")))?;
        let lost = PerCpuArray::try_from(map("LOST")?)
            .map_err(|error| TraceUnavailable::new(format!("map LOST: {error}")))?;
        let events = RingBuf::try_from(map("EVENTS")?)
            .map_err(|error| TraceUnavailable::new(format!("map EVENTS: {error}")))?;
        Ok(Tracer {
            programs,
            links,
            tracked,
            lost,
            consumer_inputs: Some((events, logger)),
            consumer: None,
            load_duration: started.elapsed(),
            ring_buffer_bytes: size,
            _ebpf: ebpf,
        })
    }

    pub fn programs(&self) -> &[ProgramStatus] {
        &self.programs
    }

    /// Time spent reading layouts, loading and attaching.
    pub fn load_duration(&self) -> Duration {
        self.load_duration
    }

    pub fn ring_buffer_bytes(&self) -> u32 {
        self.ring_buffer_bytes
    }

    /// Traces `pid` and its descendants from now on. Call it while the child is stopped before
    /// its exec; the child was forked from this process, so it starts in our cwd. Once only.
    pub fn track(&mut self, pid: u32) -> anyhow::Result<()> {
        let Some((events, logger)) = self.consumer_inputs.take() else {
            bail!("the tracer already tracks a process");
        };
        let cwd = std::env::current_dir().context("current directory")?;
        self.tracked
            .insert(pid, 1, 0)
            .with_context(|| format!("adding pid {pid} to the tracked set"))?;
        let tree = ProcessTree::new(pid, std::process::id(), cwd, BootClock::now());
        let (stop_read, stop) = nix::unistd::pipe().context("creating the stop pipe")?;
        let thread = std::thread::Builder::new()
            .name("trace-events".into())
            .spawn(move || consume(events, logger, tree, stop_read))
            .context("starting the trace consumer thread")?;
        self.consumer = Some(Consumer { stop, thread });
        Ok(())
    }

    /// Drains the remaining events (call after the tracked child exited) and returns what was
    /// observed. `counts.lost` sums the kernel's per-CPU counters.
    pub fn finish(mut self) -> anyhow::Result<TraceOutcome> {
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
        let kernel_lost: u64 = self
            .lost
            .get(&0, 0)
            .context("reading the lost-event counters")?
            .iter()
            .sum();
        // A record we could not decode is an event lost as surely as one never queued.
        let (processes, counts) = drained.tree.finish(kernel_lost + drained.malformed);
        // Detaching takes about a second (see Drop): let it overlap with what the caller does
        // next (hashing, signing). If the process exits first, the kernel finishes the job.
        std::thread::spawn(move || drop(self));
        Ok(TraceOutcome { processes, counts })
    }
}

impl Drop for Tracer {
    /// Detaching a tracepoint program waits for RCU grace periods (30-70 ms here, under a
    /// kernel mutex): 29 programs took 1.5-2 s one after the other, about 1 s concurrently.
    fn drop(&mut self) {
        std::thread::scope(|scope| {
            for link in self.links.drain(..) {
                scope.spawn(move || drop(link));
            }
        });
    }
}

/// Loads and attaches each program to the tracepoint of the same name. Syscalls this
/// architecture lacks are reported as not loaded, without error.
fn attach_all(ebpf: &mut Ebpf, tracefs: &Path) -> (Vec<ProgramStatus>, Vec<TracePointLink>) {
    let mut statuses = Vec::new();
    let mut links = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let category = if name.starts_with("sched_") {
            "sched"
        } else {
            "syscalls"
        };
        let mut status = ProgramStatus {
            name: name.to_string(),
            tracepoint: format!("{category}/{name}"),
            loaded: false,
            attached: false,
            error: None,
        };
        if !tracefs.join("events").join(category).join(name).is_dir() {
            let legacy = layout::SYSCALLS.iter().any(|spec| {
                spec.legacy
                    && name
                        .strip_prefix("sys_enter_")
                        .or(name.strip_prefix("sys_exit_"))
                        == Some(spec.name)
            });
            if !legacy {
                status.error = Some(format!("tracepoint {category}/{name} does not exist"));
            }
            statuses.push(status);
            continue;
        }
        let program_started = Instant::now();
        let result = (|| -> Result<(), String> {
            let tracepoint: &mut TracePoint = program
                .try_into()
                .map_err(|error| format!("not a tracepoint program: {error}"))?;
            tracepoint.load().map_err(|error| format!("{error:#}"))?;
            status.loaded = true;
            let link = tracepoint
                .attach(category, name)
                .and_then(|link| tracepoint.take_link(link))
                .map_err(|error| format!("{error:#}"))?;
            links.push(link);
            status.attached = true;
            Ok(())
        })();
        status.error = result.err();
        tracing::trace!("eBPF: {name} in {:?}", program_started.elapsed());
        statuses.push(status);
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    (statuses, links)
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
    mut logger: EbpfLogger<&'static dyn log::Log>,
    mut tree: ProcessTree,
    stop: OwnedFd,
) -> anyhow::Result<Drained> {
    let mut malformed = 0;
    loop {
        malformed += drain(&mut events, &mut tree);
        logger.flush();
        let mut fds = [
            PollFd::new(events.as_fd(), PollFlags::POLLIN),
            PollFd::new(logger.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        // The kernel wakes us only when the ring is a quarter full; otherwise we drain on
        // this timeout (short enough that the ring cannot fill in between at 100k events/s).
        match poll(&mut fds, PollTimeout::from(DRAIN_INTERVAL_MS)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(error) => return Err(anyhow!("polling the trace ring buffer: {error}")),
        }
        let stopping = fds[2].revents().is_some_and(|events| !events.is_empty());
        if stopping {
            malformed += drain(&mut events, &mut tree);
            logger.flush();
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
