//! Kernel programs of oci-attest: follow the wrapped command's process tree and report what
//! it executed and which files' content it changed, from kernel objects, through one ring
//! buffer. The design is described in `docs/tracing.md`.
//!
//! Six raw tracepoints: `sys_exit` (every syscall of every process; tracked processes are
//! filtered first, then the syscall number is looked up in the `RULES` table userspace fills,
//! and the syscall's class handed by tail call to its handler program), `sys_enter` (only the
//! calls by which a file leaves a shared fd table), `sched_process_fork/exec/exit` and
//! `writeback_mark_inode_dirty`. Files are identified through the fd table
//! (task → files → fdt → fd[n] → file → inode), never by the strings the process passed, and
//! their paths are built here from the dentry chain. `sys_exit` does the syscalls' work: the
//! arguments are still in the saved user registers and the result is what the kernel did.
//! Member offsets of kernel structs come from BTF through `LAYOUT`.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel,
        generated::{bpf_loop, bpf_probe_read_kernel as read_kernel_raw, bpf_probe_read_user_str},
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::RawTracePointContext,
};
use oci_attest_common::{
    DropReason, EventHeader, EventKind, ExecArgvEvent, ExecEvent, ExitEvent, FileKey,
    FlaggedSyscall, ForkEvent, InodeId, KernelTime, Layout, OutsideWriter, PathOp, PathOpEvent,
    SyscallClass, SyscallRule, Tampering, TracerSelf, WrittenEvent, ARGV_CHUNK, ARGV_CONTINUED,
    ARGV_TRUNCATED, ARGV_UNREADABLE, MAX_ARGV_CHUNKS, MAX_PATH_COMPONENTS, NO_ARG, PATH_CAPACITY,
    PATH_OP_SLOTS, PATH_TRUNCATED, PATH_UNRESOLVED, SYSCALL_CLASSES, SYSCALL_TABLE_SIZE,
    TAMPER_BPF, TAMPER_KEY, TAMPER_PROC, TAMPER_TARGETED, TRACER_ALSO_UNMODELLED, TRACER_ANY,
    TRACER_PIDFD, WRITTEN_CREATED, WRITTEN_DATA, WRITTEN_DIRTIED, WRITTEN_EMPTY_AT_OPEN,
    WRITTEN_HANDED_OUT, WRITTEN_MAPPED, WRITTEN_PASSED, WRITTEN_RELEASED, WRITTEN_RESIZED,
    WRITTEN_TRUNCATED,
};

/// Filled by userspace before loading (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static LAYOUT: Layout = Layout {
    task_pid: 0,
    task_tgid: 0,
    task_files: 0,
    task_fs: 0,
    task_mm: 0,
    task_signal: 0,
    task_exit_code: 0,
    task_thread_status: 0,
    signal_live: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_path: 0,
    file_inode: 0,
    file_mode: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    qstr_len: 0,
    qstr_name: 0,
    inode_ino: 0,
    inode_sb: 0,
    inode_mode: 0,
    inode_nlink: 0,
    inode_generation: 0,
    inode_size: 0,
    inode_ctime_sec: 0,
    inode_ctime_nsec: 0,
    inode_dentries: 0,
    dentry_alias: 0,
    task_flags: 0,
    dirty_pages_flag: 0,
    sb_dev: 0,
    sb_magic: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    fs_root: 0,
    fs_pwd: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    binprm_file: 0,
    binprm_secureexec_bit: 0,
    task_cred: 0,
    cred_uid: 0,
    cred_euid: 0,
    cred_cap_effective: 0,
    cred_cap_permitted: 0,
    proc_inode_pid: 0,
    proc_inode_vfs_inode: 0,
    pid_tasks: 0,
    task_pid_links: 0,
    file_private_data: 0,
    inode_private: 0,
    signal_pids: 0,
    pid_numbers: 0,
    files_count: 0,
};

/// oci-attest itself (filled by userspace before loading, like `LAYOUT`).
#[unsafe(no_mangle)]
static TRACER_SELF: TracerSelf = TracerSelf {
    tgid: 0,
    pgid: 0,
    uid: 0,
    _reserved: 0,
};

/// Ring-buffer fill level (bytes) from which a write wakes the consumer. Below it, writes do
/// not wake it and it drains on its poll timeout (a wake-up per event costs a context switch
/// per event). Userspace sets it at load time.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// Thread-group ids of the traced tree (value unused). Userspace inserts the wrapped child;
/// `sched_process_fork` adds child processes; the exit of a process removes it. A plain hash
/// map: a full map is counted ([`DropReason::TrackedSetFull`]), never evicts. Not preallocated
/// (nor is WRITTEN): creating the preallocated maps took ~6 ms of the tracer's fixed cost, and a
/// run uses a sliver of them.
#[map]
static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Userspace sets the size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// What could not be recorded, per CPU, indexed by [`DropReason`].
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

/// The handler program of each syscall class, by class (filled by userspace, then frozen).
#[map]
static EXIT_HANDLERS: ProgramArray = ProgramArray::with_max_entries(SYSCALL_CLASSES, 0);

/// The syscall table, indexed by x86_64 syscall number (filled by userspace).
#[map]
static RULES: Array<SyscallRule> = Array::with_max_entries(SYSCALL_TABLE_SIZE, 0);

/// Inodes already reported written: one event per written file, however many writes.
#[map]
static WRITTEN: HashMap<InodeId, u8> = HashMap::with_max_entries(131072, BPF_F_NO_PREALLOC);

/// Processes outside the tree that dirtied the pages of a file the tree wrote, while traced.
#[map]
static OUTSIDE_WRITERS: HashMap<InodeId, OutsideWriter> = HashMap::with_max_entries(4096, 0);

/// Unmodelled (and 32-bit compat) syscalls the tree made; userspace names them.
#[map]
static FLAGGED: HashMap<FlaggedSyscall, u8> = HashMap::with_max_entries(1024, 0);

/// What the tree did to oci-attest or to its key. Userspace freezes the map (no syscall may
/// change it, root's included): only these programs add to it.
#[map]
static TAMPERED: HashMap<Tampering, u8> = HashMap::with_max_entries(1024, 0);

/// Thread ids of oci-attest (its thread-group id among them): userspace adds those that exist
/// when the tree starts, `sched_process_fork` those it creates later.
#[map]
static TRACER_THREADS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// The signing key and its passphrase file, filled and frozen by userspace before the tree starts.
#[map]
static PROTECTED: HashMap<FileKey, u8> = HashMap::with_max_entries(8, 0);

/// Per-CPU scratch space: the big events are built here and copied into the ring buffer with
/// only the bytes they use (a raw tracepoint program runs without migration, so a CPU's slot
/// is not shared while in use).
#[map]
static ARGV_SCRATCH: PerCpuArray<ExecArgvEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static WRITTEN_SCRATCH: PerCpuArray<WrittenEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static PATH_OP_SCRATCH: PerCpuArray<PathOpEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SENT_SCRATCH: PerCpuArray<SentWalk> = PerCpuArray::with_max_entries(1, 0);

/// A path is built backwards (from the file up to the root) in here, then copied forwards
/// into its event. The tail leaves room for one component written at any position. The walk's
/// state lives here too, not on the stack: loaded from a map, its values are unknown to the
/// verifier, so the `bpf_loop` callback is verified in one pass instead of once per possible
/// position.
#[repr(C)]
struct PathBuffer {
    walk: PathWalk,
    bytes: [u8; PATH_CAPACITY + 256],
}
#[map]
static PATH_SCRATCH: PerCpuArray<PathBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Reads one field of LAYOUT. The volatile read stops the compiler from folding the
/// compile-time default into the code (userspace rewrites it at load time).
macro_rules! layout {
    ($field:ident) => {
        layout_field(&LAYOUT.$field)
    };
}

fn layout_field(field: &u32) -> u64 {
    // SAFETY: a reference to a field of the read-only LAYOUT global.
    (unsafe { core::ptr::read_volatile(field) }) as u64
}

// x86_64 `struct pt_regs` offsets (the user registers saved at syscall entry: an ABI).
const REGS_ORIG_AX: u64 = 120;
const REGS_CS: u64 = 136;
/// Code segment of 32-bit user mode (`__USER32_CS`).
const USER32_CS: u64 = 0x23;
/// `thread_info.status` bit of a 32-bit syscall, also set for `int $0x80` from 64-bit code.
const TS_COMPAT: u32 = 0x0002;

const FMODE_WRITE: u32 = 0x2;
/// Set by the kernel on a file its open created (`include/linux/fs.h`, stable since 4.19).
const FMODE_CREATED: u32 = 0x10_0000;
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const O_TRUNC: u64 = 0o1000;
const MAP_SHARED: u64 = 0x1;
const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_REMOVEDIR: u64 = 0x200;
const FICLONE: u64 = 0x4004_9409;
const FICLONERANGE: u64 = 0x4020_940d;
const MAX_ERRNO: u64 = 4095;
/// `f_mode` of an `O_PATH` descriptor: it cannot read or write the file.
const FMODE_PATH: u32 = 0x4000;
const S_IROTH: u16 = 0o4;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const PIDFS_MAGIC: u64 = 0x5049_4446;
const CAP_KILL: u64 = 5;
/// `enum pid_type` index of the process group in `signal_struct.pids`.
const PIDTYPE_PGID: u64 = 2;

fn count_drop(reason: DropReason) {
    if let Some(counter) = DROPPED.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}

fn is_tracked(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { TRACKED.get(&tgid).is_some() }
}

fn header(kind: EventKind) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u32,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _reserved: 0,
        // SAFETY: helper without preconditions.
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}

fn wakeup_flags() -> u64 {
    // SAFETY: read-only global, rewritten by userspace at load time (see `layout!`).
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Writes the first `len` bytes of `event` (a scratch slot) into the ring buffer.
fn submit_bytes<T>(event: *const T, len: usize) {
    let len = if len > size_of::<T>() {
        size_of::<T>()
    } else {
        len
    };
    // SAFETY: `event` points to a map value of size_of::<T>() bytes and len ≤ that.
    let bytes = unsafe { core::slice::from_raw_parts(event.cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_err() {
        count_drop(DropReason::RingBufferFull);
    }
}

fn submit<T>(event: &T) {
    if EVENTS.output::<T>(event, wakeup_flags()).is_err() {
        count_drop(DropReason::RingBufferFull);
    }
}

/// Reads a kernel value at `base + offset`; `None` when the memory is unreadable.
fn read<T>(base: u64, offset: u64) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T).ok() }
}

fn current_task() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task() }
}

/// Syscall argument `index` from the saved user registers.
fn syscall_arg(regs: u64, index: u8) -> u64 {
    // di, si, dx, r10, r8, r9.
    let offset = match index {
        0 => 112,
        1 => 104,
        2 => 96,
        3 => 56,
        4 => 72,
        5 => 64,
        _ => return 0,
    };
    read::<u64>(regs, offset).unwrap_or(0)
}

/// The `struct file *` open as `fd` in the current task's fd table (the kernel's table, also
/// when shared with CLONE_FILES or inherited).
fn file_of_fd(fd: u64) -> Option<u64> {
    let files: u64 = read(current_task(), layout!(task_files))?;
    let fdt: u64 = read(files, layout!(files_fdt))?;
    let max_fds: u32 = read(fdt, layout!(fdt_max_fds))?;
    if fd >= max_fds as u64 {
        return None;
    }
    let array: u64 = read(fdt, layout!(fdt_fd))?;
    let file: u64 = read(array, fd * 8)?;
    (file != 0).then_some(file)
}

// ---------------------------------------------------------------------------------------------
// Paths from the dentry chain

/// State of the path walk (in [`PathBuffer`]).
#[repr(C)]
struct PathWalk {
    dentry: u64,
    /// The `struct vfsmount` the dentry is seen through.
    vfsmount: u64,
    /// Start of the path built so far in the scratch buffer (it ends at PATH_CAPACITY).
    position: u64,
    flags: u64,
    done: u64,
}

/// One `bpf_loop` step: prepends the dentry's name, or crosses to the parent mount at a
/// mount's root. Stops at the root of the mount namespace (the mount that is its own parent),
/// not at the process's root: a chroot does not shorten the path. Returns 1 to stop.
extern "C" fn path_step(_index: u64, _context: *mut c_void) -> i64 {
    let Some(buffer) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, used by one program at a time.
    let walk = unsafe { &mut (*buffer).walk };
    let (Some(mount_root), Some(parent)) = (
        read::<u64>(walk.vfsmount, layout!(vfsmount_root)),
        read::<u64>(walk.dentry, layout!(dentry_parent)),
    ) else {
        walk.flags |= PATH_UNRESOLVED as u64;
        return 1;
    };
    if walk.dentry == mount_root {
        let mount = walk.vfsmount - layout!(mount_mnt);
        let mount_parent = read::<u64>(mount, layout!(mount_parent)).unwrap_or(0);
        if mount_parent == mount || mount_parent == 0 {
            walk.done = 1;
            return 1;
        }
        let Some(mountpoint) = read::<u64>(mount, layout!(mount_mountpoint)) else {
            walk.flags |= PATH_UNRESOLVED as u64;
            return 1;
        };
        walk.dentry = mountpoint;
        walk.vfsmount = mount_parent + layout!(mount_mnt);
        return 0;
    }
    // A dentry that is its own parent below a mount's root is detached: a memfd or another
    // pseudo file, named by its name alone (`/memfd:x`).
    let detached = walk.dentry == parent;
    let name_base = walk.dentry + layout!(dentry_name);
    let (Some(len), Some(name)) = (
        read::<u32>(name_base, layout!(qstr_len)),
        read::<u64>(name_base, layout!(qstr_name)),
    ) else {
        walk.flags |= PATH_UNRESOLVED as u64;
        return 1;
    };
    // The mask stays in the code (the verifier needs the bound); a longer name (impossible
    // for a dentry: NAME_MAX is 255) is caught after the copy.
    let size = len as u64 & 0xff;
    // Keep at least one byte free so the finished path is shorter than PATH_CAPACITY.
    if size + 1 >= walk.position {
        walk.flags |= PATH_TRUNCATED as u64;
        return 1;
    }
    walk.position -= size + 1;
    let at = walk.position as usize & (PATH_CAPACITY - 1);
    // SAFETY: at < PATH_CAPACITY and size ≤ 255: inside the PATH_CAPACITY + 256 buffer.
    unsafe {
        let slot = (*buffer).bytes.as_mut_ptr().add(at);
        *slot = b'/';
        if read_kernel_raw(
            slot.add(1).cast::<c_void>(),
            size as u32,
            name as *const c_void,
        ) < 0
        {
            walk.flags |= PATH_UNRESOLVED as u64;
            return 1;
        }
    }
    if size != len as u64 {
        walk.flags |= PATH_TRUNCATED as u64;
        return 1;
    }
    if detached {
        walk.done = 1;
        return 1;
    }
    walk.dentry = parent;
    0
}

/// Builds the absolute path of `(vfsmount, dentry)` into `dest` (PATH_CAPACITY bytes);
/// returns its length and `PATH_*` flags.
fn build_path(vfsmount: u64, dentry: u64, dest: *mut u8) -> (u32, u32) {
    if dentry == 0 || vfsmount == 0 {
        return (0, PATH_UNRESOLVED);
    }
    let Some(buffer) = PATH_SCRATCH.get_ptr_mut(0) else {
        return (0, PATH_UNRESOLVED);
    };
    // SAFETY: this CPU's scratch slot.
    unsafe {
        (*buffer).walk = PathWalk {
            dentry,
            vfsmount,
            position: PATH_CAPACITY as u64,
            flags: 0,
            done: 0,
        };
    }
    // SAFETY: the callback follows the bpf_loop contract; it needs no context.
    unsafe {
        bpf_loop(
            MAX_PATH_COMPONENTS,
            path_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: this CPU's scratch slot.
    let walk = unsafe { &(*buffer).walk };
    let mut flags = walk.flags as u32;
    if walk.done == 0 && flags == 0 {
        flags |= PATH_TRUNCATED;
    }
    let start = walk.position as usize & (PATH_CAPACITY - 1);
    let len = (PATH_CAPACITY - start) & (PATH_CAPACITY - 1);
    if len == 0 {
        // SAFETY: dest has PATH_CAPACITY bytes.
        unsafe { *dest = b'/' };
        return (1, flags);
    }
    // SAFETY: start + len == PATH_CAPACITY ≤ the buffer; dest has PATH_CAPACITY bytes.
    unsafe {
        read_kernel_raw(
            dest.cast::<c_void>(),
            len as u32,
            (*buffer).bytes.as_ptr().add(start).cast::<c_void>(),
        );
    }
    (len as u32, flags)
}

/// Builds the path of a `struct path` (a `{vfsmount, dentry}` pair) at `path`.
fn build_struct_path(path: u64, dest: *mut u8) -> (u32, u32) {
    let vfsmount = read::<u64>(path, layout!(path_mnt)).unwrap_or(0);
    let dentry = read::<u64>(path, layout!(path_dentry)).unwrap_or(0);
    build_path(vfsmount, dentry, dest)
}

fn inode_id(inode: u64) -> Option<InodeId> {
    let super_block: u64 = read(inode, layout!(inode_sb))?;
    Some(InodeId {
        dev: read::<u32>(super_block, layout!(sb_dev))? as u64,
        ino: read(inode, layout!(inode_ino))?,
        generation: read(inode, layout!(inode_generation))?,
        _reserved: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Written files

/// Reports `file` written (once per inode) when it is a regular file.
fn record_written(file: u64, how: u32) {
    let Some(inode) = read::<u64>(file, layout!(file_inode)) else {
        count_drop(DropReason::UnreadableFile);
        return;
    };
    let Some(id) = regular_inode_id(inode) else {
        return;
    };
    if first_write(&id) {
        let vfsmount = read::<u64>(file, layout!(file_path) + layout!(path_mnt)).unwrap_or(0);
        let dentry = read::<u64>(file, layout!(file_path) + layout!(path_dentry)).unwrap_or(0);
        submit_written(inode, &id, how, vfsmount, dentry);
    }
}

/// The identity of `inode` when it is a regular file (`None` otherwise, or unreadable: counted).
fn regular_inode_id(inode: u64) -> Option<InodeId> {
    let Some(mode) = read::<u16>(inode, layout!(inode_mode)) else {
        count_drop(DropReason::UnreadableFile);
        return None;
    };
    if mode & S_IFMT != S_IFREG {
        return None;
    }
    let id = inode_id(inode);
    if id.is_none() {
        count_drop(DropReason::UnreadableFile);
    }
    id
}

/// Adds `id` to the written set; true when it was not there yet (its first change).
fn first_write(id: &InodeId) -> bool {
    // SAFETY: only tested for presence.
    if unsafe { WRITTEN.get(id).is_some() } {
        return false;
    }
    if WRITTEN.insert(id, &1, BPF_NOEXIST as u64).is_err() {
        // Either another CPU recorded it just now, or the set is full.
        // SAFETY: only tested for presence.
        if unsafe { WRITTEN.get(id).is_none() } {
            count_drop(DropReason::WrittenSetFull);
        }
        return false;
    }
    true
}

fn inode_ctime(inode: u64) -> KernelTime {
    KernelTime {
        sec: read::<i64>(inode, layout!(inode_ctime_sec)).unwrap_or(0),
        // Multigrain timestamps keep a "queried" flag in the top bit (nanoseconds fit in 30).
        nsec: read::<u32>(inode, layout!(inode_ctime_nsec)).unwrap_or(0) & 0x3fff_ffff,
        _reserved: 0,
    }
}

/// Sends a written event for `inode`, named by the path of `(vfsmount, dentry)`.
fn submit_written(inode: u64, id: &InodeId, how: u32, vfsmount: u64, dentry: u64) {
    let Some(event) = WRITTEN_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let super_block = read::<u64>(inode, layout!(inode_sb)).unwrap_or(0);
    // SAFETY: the scratch slot is this CPU's.
    unsafe {
        (*event).header = header(EventKind::Written);
        (*event).how = how;
        (*event).inode = *id;
        (*event).fs_magic = read::<u64>(super_block, layout!(sb_magic)).unwrap_or(0);
        (*event).nlink = read::<u32>(inode, layout!(inode_nlink)).unwrap_or(0);
        (*event).ctime = inode_ctime(inode);
        let (len, flags) = build_path(vfsmount, dentry, (*event).path.as_mut_ptr());
        (*event).path_len = len;
        (*event).path_flags = flags;
        let used = core::mem::offset_of!(WrittenEvent, path) + (len as usize & (PATH_CAPACITY - 1));
        submit_bytes(event, used);
    }
}

/// The tree gave `file` to something that may write it later out of the trace's sight (a loop
/// device, or a receiver of SCM_RIGHTS; `how` says which): reported every time, whether or not
/// the tree changed the file itself.
fn report_handed_out(file: u64, how: u32) {
    let Some(inode) = read::<u64>(file, layout!(file_inode)) else {
        count_drop(DropReason::UnreadableFile);
        return;
    };
    let Some(id) = regular_inode_id(inode) else {
        return;
    };
    let vfsmount = read::<u64>(file, layout!(file_path) + layout!(path_mnt)).unwrap_or(0);
    let dentry = read::<u64>(file, layout!(file_path) + layout!(path_dentry)).unwrap_or(0);
    submit_written(inode, &id, how, vfsmount, dentry);
}

fn file_mode(file: u64) -> u32 {
    read::<u32>(file, layout!(file_mode)).unwrap_or(0)
}

/// A successful open: the file is written when open for writing and created by this open
/// (`FMODE_CREATED`, set by the kernel) or truncated (O_TRUNC in the flags register, or
/// implied by creat). openat2's flags are in user memory, which can change under us: for it a
/// file empty right after the open counts too.
fn opened(nr: u32, rule: &SyscallRule, regs: u64, fd: u64) {
    let Some(file) = file_of_fd(fd) else {
        count_drop(DropReason::UnreadableFile);
        return;
    };
    check_opened(nr, file);
    let mode = file_mode(file);
    if mode & FMODE_WRITE == 0 {
        return;
    }
    let mut how = 0;
    if mode & FMODE_CREATED != 0 {
        how |= WRITTEN_CREATED;
    }
    if rule.op == 1 || (rule.arg_a != NO_ARG && syscall_arg(regs, rule.arg_a) & O_TRUNC != 0) {
        how |= WRITTEN_TRUNCATED;
    }
    if rule.arg_a == NO_ARG && rule.op == 0 {
        let inode = read::<u64>(file, layout!(file_inode)).unwrap_or(0);
        if read::<i64>(inode, layout!(inode_size)) == Some(0) {
            how |= WRITTEN_EMPTY_AT_OPEN;
        }
    }
    if how != 0 {
        record_written(file, how);
    }
}

// ---------------------------------------------------------------------------------------------
// Files the tree hands to others to write

const LOOP_SET_FD: u64 = 0x4c00;
const LOOP_CHANGE_FD: u64 = 0x4c06;
const LOOP_CONFIGURE: u64 = 0x4c0a;

fn is_loop_attach(request: u64) -> bool {
    request == LOOP_SET_FD || request == LOOP_CHANGE_FD || request == LOOP_CONFIGURE
}

/// A backing file attached to a loop device: the loop driver's kernel thread writes it from
/// now on, for whoever writes the block device. `argument` is the backing fd, or for
/// LOOP_CONFIGURE a pointer to a `struct loop_config` that starts with it (user memory: if it
/// no longer names a file, the syscall is flagged instead).
fn loop_attached(nr: u32, request: u64, argument: u64) {
    let fd = if request == LOOP_CONFIGURE {
        // SAFETY: bpf_probe_read_user checks the address.
        match unsafe { aya_ebpf::helpers::bpf_probe_read_user(argument as *const u32) } {
            Ok(fd) => fd as u64,
            Err(_) => u64::MAX,
        }
    } else {
        argument
    };
    match file_of_fd(fd) {
        Some(file) if file_mode(file) & FMODE_WRITE != 0 => {
            report_handed_out(file, WRITTEN_HANDED_OUT)
        }
        Some(_) => {}
        None => flag_syscall(nr, 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Files passed over Unix sockets (SCM_RIGHTS)

/// `struct user_msghdr` (x86_64): `msg_control` and `msg_controllen`.
const MSGHDR_CONTROL: u64 = 32;
const MSGHDR_CONTROLLEN: u64 = 40;
/// `sizeof(struct mmsghdr)`: a `user_msghdr` (56 bytes), `msg_len`, padding.
const MMSGHDR_SIZE: u64 = 64;
/// `sizeof(struct cmsghdr)`: `cmsg_len` (8), `cmsg_level` (4), `cmsg_type` (4); data follows.
const CMSG_HEADER: u64 = 16;
const SOL_SOCKET: u32 = 1;
const SCM_RIGHTS: u32 = 1;
/// Control messages read per message; a message with more is flagged.
const MAX_CMSGS: u64 = 4;
/// `SCM_MAX_FD`: the kernel passes no more fds in one message.
const MAX_PASSED_FDS: u64 = 253;
/// `UIO_MAXIOV`: sendmmsg sends no more messages in one call.
const MAX_MESSAGES: u64 = 1024;
/// Steps of [`sent_step`] that walk the largest possible call: per message, one to read it,
/// one per control message plus one per fd it passes, one to end it.
const MAX_SENT_STEPS: u64 = MAX_MESSAGES * (2 + MAX_CMSGS * (1 + MAX_PASSED_FDS));

/// Files one sendmsg/sendmmsg handed out, reported once its messages are walked: building
/// their paths inside the walk made the verifier check the path walk there too.
#[repr(C)]
struct HandedOut {
    files: [u64; MAX_HANDED_OUT],
    count: u64,
}

/// Files open for writing one call may pass: more flag the syscall.
const MAX_HANDED_OUT: usize = 16;

/// State of the walk over a sendmsg/sendmmsg's messages, their control messages and the fds
/// of each `SCM_RIGHTS` one, all in one flat loop ([`sent_step`]), kept in a map
/// (`SENT_SCRATCH`): nested `bpf_loop`s, or state on the stack whose values the verifier
/// follows step by step, made it check the steps over and over (90 ms, then seconds).
#[repr(C)]
struct SentWalk {
    nr: u64,
    /// User address of the next `user_msghdr`, and how many messages are left.
    message: u64,
    messages_left: u64,
    /// The current message's control buffer and its length (0: between messages), the offset
    /// of its next control message and how many were read.
    control: u64,
    length: u64,
    offset: u64,
    cmsgs: u64,
    /// User address of the next fd of the current `SCM_RIGHTS`, and how many are left.
    fd: u64,
    fds_left: u64,
    /// 1 once every message is walked.
    done: u64,
    handed_out: HandedOut,
}

fn read_user<T>(address: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user checks the address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(address as *const T).ok() }
}

/// A sendmsg or sendmmsg of the tree succeeded: the files it passed open for writing are
/// handed out (the receiver may be outside the tree and write them where no trace sees it).
/// The control messages are read from the sender's memory after the kernel used them: one
/// that no longer adds up (a sibling thread rewrote it) flags the syscall.
fn sent(nr: u32, rule: &SyscallRule, regs: u64, result: u64) {
    let Some(walk) = SENT_SCRATCH.get_ptr_mut(0) else {
        flag_syscall(nr, 0);
        return;
    };
    // SAFETY: this CPU's scratch slot, used by one program at a time.
    let walk = unsafe { &mut *walk };
    // A sendmsg is walked as a sendmmsg of one message (an `mmsghdr` starts with its
    // `user_msghdr`).
    walk.nr = nr as u64;
    walk.message = syscall_arg(regs, rule.arg_a);
    walk.messages_left = if rule.op == 0 { 1 } else { result };
    walk.length = 0;
    walk.fds_left = 0;
    walk.done = 0;
    walk.handed_out.count = 0;
    if walk.messages_left > MAX_MESSAGES {
        flag_syscall(nr, 0);
        walk.messages_left = MAX_MESSAGES;
    }
    // SAFETY: the callback follows the bpf_loop contract; its state is in SENT_SCRATCH.
    unsafe {
        bpf_loop(
            MAX_SENT_STEPS as u32,
            sent_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    if walk.done == 0 {
        flag_syscall(nr, 0);
    }
    // SAFETY: the callback follows the bpf_loop contract; its state is in SENT_SCRATCH.
    unsafe {
        bpf_loop(
            MAX_HANDED_OUT as u32,
            handed_out_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
}

extern "C" fn handed_out_step(index: u64, _context: *mut c_void) -> i64 {
    let Some(walk) = SENT_SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, used by one program at a time.
    let handed_out = unsafe { &(*walk).handed_out };
    if index >= handed_out.count {
        return 1;
    }
    if let Some(file) = handed_out.files.get(index as usize) {
        report_handed_out(*file, WRITTEN_HANDED_OUT | WRITTEN_PASSED);
    }
    0
}

/// One step of the walk: the next fd of the current `SCM_RIGHTS`, else the next control
/// message of the current message, else the next message. Returns 1 when all are walked.
extern "C" fn sent_step(_index: u64, _context: *mut c_void) -> i64 {
    let Some(walk) = SENT_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, used by one program at a time.
    let walk = unsafe { &mut *walk };
    if walk.fds_left > 0 {
        passed_fd(walk);
        walk.fd += 4;
        walk.fds_left -= 1;
        return 0;
    }
    if walk.length != 0 {
        next_control_message(walk);
        return 0;
    }
    if walk.messages_left == 0 {
        walk.done = 1;
        return 1;
    }
    let message = walk.message;
    walk.message += MMSGHDR_SIZE;
    walk.messages_left -= 1;
    let (Some(control), Some(length)) = (
        read_user::<u64>(message + MSGHDR_CONTROL),
        read_user::<u64>(message + MSGHDR_CONTROLLEN),
    ) else {
        flag_syscall(walk.nr as u32, 0);
        return 0;
    };
    if control != 0 && length >= CMSG_HEADER {
        walk.control = control;
        walk.length = length;
        walk.offset = 0;
        walk.cmsgs = 0;
    }
    0
}

/// Reads the control message at the walk's offset; ends the message (`length` 0) when none
/// is left or it does not add up.
fn next_control_message(walk: &mut SentWalk) {
    if walk.offset + CMSG_HEADER > walk.length {
        walk.length = 0;
        return;
    }
    let header = walk.control + walk.offset;
    let read = (
        read_user::<u64>(header),
        read_user::<u32>(header + 8),
        read_user::<u32>(header + 12),
    );
    let (Some(cmsg_len), Some(level), Some(kind)) = read else {
        flag_syscall(walk.nr as u32, 0);
        walk.length = 0;
        return;
    };
    // More control messages than are read, or one the kernel would have refused although
    // the call succeeded (rewritten since).
    let fds = cmsg_len.saturating_sub(CMSG_HEADER) / 4;
    let scm_rights = level == SOL_SOCKET && kind == SCM_RIGHTS;
    if walk.cmsgs >= MAX_CMSGS
        || cmsg_len < CMSG_HEADER
        || cmsg_len > walk.length - walk.offset
        || (scm_rights && fds > MAX_PASSED_FDS)
    {
        flag_syscall(walk.nr as u32, 0);
        walk.length = 0;
        return;
    }
    if scm_rights {
        walk.fd = header + CMSG_HEADER;
        walk.fds_left = fds;
    }
    walk.offset += (cmsg_len + 7) & !7;
    walk.cmsgs += 1;
}

/// The fd at the walk's cursor: its file is handed out when open for writing.
fn passed_fd(walk: &mut SentWalk) {
    let file = read_user::<i32>(walk.fd)
        .filter(|fd| *fd >= 0)
        .and_then(|fd| file_of_fd(fd as u64));
    match file {
        Some(file) if file_mode(file) & FMODE_WRITE != 0 => {
            let handed_out = &mut walk.handed_out;
            match handed_out.files.get_mut(handed_out.count as usize) {
                Some(slot) => {
                    *slot = file;
                    handed_out.count += 1;
                }
                None => flag_syscall(walk.nr as u32, 0),
            }
        }
        Some(_) => {}
        // Closed or rewritten since the kernel passed it: what went out is unknown.
        None => flag_syscall(walk.nr as u32, 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Path operations (rename, link, unlink, truncate by path)

/// Fills slot `2 * operand` with the operand's directory (built here) and slot
/// `2 * operand + 1` with its name (as passed, read after the kernel used it).
fn fill_operand(event: *mut PathOpEvent, operand: usize, dirfd: i64, name: u64, empty_path: bool) {
    let dir_slot = (2 * operand) & (PATH_OP_SLOTS - 1);
    let name_slot = (dir_slot + 1) & (PATH_OP_SLOTS - 1);
    // SAFETY: the scratch slot is this CPU's; slot offsets are within `paths`.
    unsafe {
        let paths = (*event).paths.as_mut_ptr();
        let name_dest = paths.add(name_slot * PATH_CAPACITY);
        let mut name_len = 0u32;
        if name != 0 && !empty_path {
            let copied = bpf_probe_read_user_str(
                name_dest.cast::<c_void>(),
                PATH_CAPACITY as u32,
                name as *const c_void,
            );
            if copied > 0 {
                name_len = (copied - 1) as u32;
            }
        }
        let absolute = name_len > 0 && *name_dest == b'/';
        let dir_dest = paths.add(dir_slot * PATH_CAPACITY);
        let (dir_len, dir_flags) = if absolute {
            let fs = read::<u64>(current_task(), layout!(task_fs)).unwrap_or(0);
            build_struct_path(fs + layout!(fs_root), dir_dest)
        } else if dirfd == AT_FDCWD {
            let fs = read::<u64>(current_task(), layout!(task_fs)).unwrap_or(0);
            build_struct_path(fs + layout!(fs_pwd), dir_dest)
        } else {
            match file_of_fd(dirfd as u64) {
                Some(file) => build_struct_path(file + layout!(file_path), dir_dest),
                None => (0, PATH_UNRESOLVED),
            }
        };
        (*event).lens[dir_slot] = dir_len;
        (*event).flags[dir_slot] = dir_flags;
        (*event).lens[name_slot] = name_len;
        (*event).flags[name_slot] = 0;
    }
}

fn path_op(rule: &SyscallRule, regs: u64) {
    let flags = if rule.arg_e == NO_ARG {
        0
    } else {
        syscall_arg(regs, rule.arg_e)
    };
    let op = rule.op as u32;
    if op == PathOp::Unlink as u32 && flags & AT_REMOVEDIR != 0 {
        return;
    }
    let Some(event) = PATH_OP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let dirfd = |index: u8| {
        if index == NO_ARG {
            AT_FDCWD
        } else {
            syscall_arg(regs, index) as i32 as i64
        }
    };
    let name = |index: u8| {
        if index == NO_ARG {
            0
        } else {
            syscall_arg(regs, index)
        }
    };
    // SAFETY: the scratch slot is this CPU's.
    unsafe {
        (*event).header = header(EventKind::PathOp);
        (*event).op = op;
        (*event).lens = [0; PATH_OP_SLOTS];
    }
    let empty_path = op == PathOp::Link as u32 && flags & AT_EMPTY_PATH != 0;
    fill_operand(event, 0, dirfd(rule.arg_a), name(rule.arg_b), empty_path);
    if rule.arg_d != NO_ARG {
        fill_operand(event, 1, dirfd(rule.arg_c), name(rule.arg_d), false);
    }
    submit_bytes(event, size_of::<PathOpEvent>());
}

// ---------------------------------------------------------------------------------------------
// The tracer and its key: what the tree must not touch

fn tampered(nr: u32, kind: u32) {
    let key = Tampering {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        nr,
        kind,
        _reserved: 0,
    };
    // A full map still holds earlier entries: the run is incomplete anyway.
    let _ = TAMPERED.insert(&key, &1, 0);
}

fn tracer_self() -> TracerSelf {
    // SAFETY: read-only global, rewritten by userspace at load time (see `layout!`).
    unsafe { core::ptr::read_volatile(&TRACER_SELF) }
}

fn is_tracer_thread(id: u32) -> bool {
    // SAFETY: only tested for presence.
    unsafe { TRACER_THREADS.get(&id).is_some() }
}

/// The thread-group id of the task a `struct pid` names (0 when it names none any more).
fn tgid_of_pid(pid: u64) -> u32 {
    let first = read::<u64>(pid, layout!(pid_tasks)).unwrap_or(0);
    if first == 0 {
        return 0;
    }
    read::<u32>(first - layout!(task_pid_links), layout!(task_tgid)).unwrap_or(0)
}

/// The `struct pid` a procfs inode of `/proc/<pid>/` names (0 for other procfs inodes).
fn pid_of_proc_inode(inode: u64) -> u64 {
    // Every procfs inode is embedded in a `struct proc_inode`.
    read::<u64>(
        inode - layout!(proc_inode_vfs_inode),
        layout!(proc_inode_pid),
    )
    .unwrap_or(0)
}

/// The `struct pid` of a pidfd: the inode's on pidfs (since 6.9), the file's on the anonymous
/// inode before; a `/proc/<pid>` directory serves as a pidfd too.
fn pid_of_pidfd(file: u64) -> u64 {
    let inode = read::<u64>(file, layout!(file_inode)).unwrap_or(0);
    let super_block = read::<u64>(inode, layout!(inode_sb)).unwrap_or(0);
    match read::<u64>(super_block, layout!(sb_magic)).unwrap_or(0) {
        PROC_SUPER_MAGIC => pid_of_proc_inode(inode),
        PIDFS_MAGIC => read::<u64>(inode, layout!(inode_private)).unwrap_or(0),
        _ => read::<u64>(file, layout!(file_private_data)).unwrap_or(0),
    }
}

/// Whether the current task may signal oci-attest (the kernel's `kill_ok_by_cred`, for the
/// signals sent to a process group or to everyone, whose targets the call does not name).
fn may_signal_tracer() -> bool {
    let cred = read::<u64>(current_task(), layout!(task_cred)).unwrap_or(0);
    let uid = read::<u32>(cred, layout!(cred_uid)).unwrap_or(u32::MAX);
    let euid = read::<u32>(cred, layout!(cred_euid)).unwrap_or(u32::MAX);
    let caps = read::<u64>(cred, layout!(cred_cap_effective)).unwrap_or(0);
    let tracer = tracer_self().uid;
    uid == tracer || euid == tracer || caps & (1 << CAP_KILL) != 0
}

/// Whether a successful syscall of class [`SyscallClass::Tracer`] reached oci-attest.
fn reached_tracer(rule: &SyscallRule, regs: u64) -> bool {
    let target = rule.op & !TRACER_ALSO_UNMODELLED;
    let signal = rule.arg_b != NO_ARG;
    if signal && syscall_arg(regs, rule.arg_b) as u32 == 0 {
        // Signal 0 only asks whether the process exists.
        return false;
    }
    if target == TRACER_ANY {
        return true;
    }
    let argument = syscall_arg(regs, rule.arg_a);
    if target == TRACER_PIDFD {
        let pid = file_of_fd(argument).map_or(0, pid_of_pidfd);
        return pid != 0 && tgid_of_pid(pid) == tracer_self().tgid;
    }
    let pid = argument as i32;
    if pid > 0 {
        return is_tracer_thread(pid as u32);
    }
    // kill(0) (the caller's group), kill(-pgid) and kill(-1) (every process) reach oci-attest
    // when it is in that group (the command starts in oci-attest's) and the caller may signal it.
    let group = match pid {
        0 => caller_pgid(),
        -1 => tracer_self().pgid,
        _ => (-(pid as i64)) as u32,
    };
    signal && group == tracer_self().pgid && may_signal_tracer()
}

/// The process group id of the current task.
fn caller_pgid() -> u32 {
    let signal = read::<u64>(current_task(), layout!(task_signal)).unwrap_or(0);
    let group = read::<u64>(signal, layout!(signal_pids) + PIDTYPE_PGID * 8).unwrap_or(0);
    read::<u32>(group, layout!(pid_numbers)).unwrap_or(0)
}

fn tracer_call(nr: u32, rule: &SyscallRule, regs: u64, succeeded: bool) {
    // A failed ptrace or process_vm_writev changed nothing.
    if succeeded && rule.op & TRACER_ALSO_UNMODELLED != 0 {
        flag_syscall(nr, 0);
    }
    if succeeded && reached_tracer(rule, regs) {
        let kind = if rule.op == TRACER_ANY {
            TAMPER_BPF
        } else {
            TAMPER_TARGETED
        };
        tampered(nr, kind);
    }
}

/// A file the tree opened: the signing key, or a private `/proc` file of oci-attest (one other
/// users cannot read, or opened for writing: its memory, environment, descriptors, limits).
/// `O_PATH` descriptors are left out: they can neither read nor write.
fn check_opened(nr: u32, file: u64) {
    let mode = file_mode(file);
    if mode & FMODE_PATH != 0 {
        return;
    }
    let inode = read::<u64>(file, layout!(file_inode)).unwrap_or(0);
    let super_block = read::<u64>(inode, layout!(inode_sb)).unwrap_or(0);
    let key = FileKey {
        dev: read::<u32>(super_block, layout!(sb_dev)).unwrap_or(0) as u64,
        ino: read::<u64>(inode, layout!(inode_ino)).unwrap_or(0),
    };
    // SAFETY: only tested for presence.
    if unsafe { PROTECTED.get(&key).is_some() } {
        tampered(nr, TAMPER_KEY);
        return;
    }
    if read::<u64>(super_block, layout!(sb_magic)) != Some(PROC_SUPER_MAGIC) {
        return;
    }
    let pid = pid_of_proc_inode(inode);
    if pid == 0 || tgid_of_pid(pid) != tracer_self().tgid {
        return;
    }
    let inode_mode = read::<u16>(inode, layout!(inode_mode)).unwrap_or(0);
    if mode & FMODE_WRITE != 0 || inode_mode & S_IROTH == 0 {
        tampered(nr, TAMPER_PROC);
    }
}

// ---------------------------------------------------------------------------------------------
// Syscall exit: the one entry point for syscalls

fn flag_syscall(nr: u32, compat: u32) {
    let key = FlaggedSyscall { nr, compat };
    // SAFETY: only tested for presence.
    if unsafe { FLAGGED.get(&key).is_none() } {
        // A full map still leaves other flagged syscalls in it: the trace is incomplete anyway.
        let _ = FLAGGED.insert(&key, &1, 0);
    }
}

/// A syscall of a tracked process as it exits.
struct Exited {
    nr: u32,
    rule: SyscallRule,
    regs: u64,
    result: i64,
}

/// The exiting syscall and its rule, for a 64-bit syscall in the table. The handlers run only
/// by tail call from `sys_exit`, which has already filtered the task.
fn exited(ctx: &RawTracePointContext) -> Option<Exited> {
    let regs: u64 = ctx.arg(0);
    let nr = read::<u64>(regs, REGS_ORIG_AX).unwrap_or(u64::MAX);
    if nr >= SYSCALL_TABLE_SIZE as u64 {
        return None;
    }
    Some(Exited {
        nr: nr as u32,
        rule: *RULES.get(nr as u32)?,
        regs,
        result: ctx.arg(1),
    })
}

/// The entry point for every syscall's exit: filters the tree's 64-bit syscalls and hands each
/// class to its handler program by tail call (`EXIT_HANDLERS`). Separate programs because the
/// verifier then checks each on its own, in parallel at load time (the tracer's fixed cost is
/// mostly verification: `oci-attest/src/trace/mod.rs`, `load_in_parallel`).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_tracked(tgid) {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let nr = read::<u64>(regs, REGS_ORIG_AX).unwrap_or(u64::MAX);
    let status = read::<u32>(current_task(), layout!(task_thread_status)).unwrap_or(0);
    let cs = read::<u64>(regs, REGS_CS).unwrap_or(0);
    if status & TS_COMPAT != 0 || cs == USER32_CS {
        flag_syscall(nr as u32, 1);
        return 0;
    }
    let Some(call) = exited(&ctx) else {
        return 0;
    };
    match call.rule.class {
        class if class == SyscallClass::Ignored as u8 => {}
        class if class == SyscallClass::Mknod as u8 => {
            let mode = syscall_arg(regs, call.rule.arg_a) as u16;
            if call.result == 0 && (mode & S_IFMT == 0 || mode & S_IFMT == S_IFREG) {
                flag_syscall(call.nr, 0);
            }
        }
        class if (class as u32) < SYSCALL_CLASSES && class != SyscallClass::Unmodelled as u8 => {
            // SAFETY: a tail call with this program's own context.
            unsafe { EXIT_HANDLERS.tail_call(&ctx, class as u32) };
            // Only reached when the class has no handler in the table.
            flag_syscall(call.nr, 0);
        }
        // Unmodelled, and any class this build does not know: flagged, whatever the result
        // (a failed io_uring_enter may still have submitted work).
        _ => flag_syscall(call.nr, 0),
    }
    0
}

/// [`SyscallClass::Open`].
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_open(ctx: RawTracePointContext) -> u32 {
    if let Some(call) = exited(&ctx) {
        if call.result >= 0 {
            opened(call.nr, &call.rule, call.regs, call.result as u64);
        }
    }
    0
}

/// [`SyscallClass::Tracer`].
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_tracer(ctx: RawTracePointContext) -> u32 {
    if let Some(call) = exited(&ctx) {
        tracer_call(call.nr, &call.rule, call.regs, call.result >= 0);
    }
    0
}

/// [`SyscallClass::PathOp`].
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_path_op(ctx: RawTracePointContext) -> u32 {
    if let Some(call) = exited(&ctx) {
        if call.result == 0 {
            path_op(&call.rule, call.regs);
        }
    }
    0
}

/// [`SyscallClass::SendMsg`].
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_send(ctx: RawTracePointContext) -> u32 {
    if let Some(call) = exited(&ctx) {
        if call.result >= 0 {
            sent(call.nr, &call.rule, call.regs, call.result as u64);
        }
    }
    0
}

/// The classes that change a file through an fd: [`SyscallClass::WriteFd`], `ResizeFd`,
/// `Mmap` and `Ioctl`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_fd(ctx: RawTracePointContext) -> u32 {
    let Some(Exited {
        nr,
        rule,
        regs,
        result,
    }) = exited(&ctx)
    else {
        return 0;
    };
    match rule.class {
        class if class == SyscallClass::WriteFd as u8 || class == SyscallClass::ResizeFd as u8 => {
            // A write succeeds with a positive count, a resize with 0.
            let (done, how) = if class == SyscallClass::WriteFd as u8 {
                (result > 0, WRITTEN_DATA)
            } else {
                (result == 0, WRITTEN_RESIZED)
            };
            if done {
                if let Some(file) = file_of_fd(syscall_arg(regs, rule.arg_a)) {
                    record_written(file, how);
                } else {
                    count_drop(DropReason::UnreadableFile);
                }
            }
        }
        class if class == SyscallClass::Mmap as u8 => {
            // A shared mapping of a file open for writing can be written through (now, or
            // after an mprotect), so it counts as written even if mapped read-only.
            let failed = (result as u64) > u64::MAX - MAX_ERRNO;
            if !failed && syscall_arg(regs, rule.arg_b) & MAP_SHARED != 0 {
                if let Some(file) = file_of_fd(syscall_arg(regs, rule.arg_a)) {
                    if file_mode(file) & FMODE_WRITE != 0 {
                        record_written(file, WRITTEN_MAPPED);
                    }
                }
            }
        }
        class if class == SyscallClass::Ioctl as u8 => {
            let request = syscall_arg(regs, rule.arg_b) & 0xffff_ffff;
            if result == 0 && (request == FICLONE || request == FICLONERANGE) {
                if let Some(file) = file_of_fd(syscall_arg(regs, rule.arg_a)) {
                    record_written(file, WRITTEN_RESIZED);
                }
            } else if result == 0 && is_loop_attach(request) {
                loop_attached(nr, request, syscall_arg(regs, rule.arg_c));
            }
        }
        _ => flag_syscall(nr, 0),
    }
    0
}

// ---------------------------------------------------------------------------------------------
// Files leaving a shared fd table

const SYS_CLOSE: i64 = 3;
const SYS_DUP2: i64 = 33;
const SYS_DUP3: i64 = 292;
const SYS_CLOSE_RANGE: i64 = 436;
/// close_range flags: unshare the table first (the others keep theirs), or only mark the fds
/// close-on-exec.
const CLOSE_RANGE_UNSHARE: u64 = 1 << 1;
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;
/// `sys_enter` of a tracked task's close, dup2, dup3 or close_range: a file open for writing
/// is about to leave an fd table other tasks share. A sibling thread may be inside a write to
/// it right now, through the fd it looked up at its syscall's entry (stalled by a userfaultfd,
/// say); its exit then reads the fd, finds the file swapped in, and the file really written is
/// never named. So it is named here, as a candidate settled by its stamps (`WRITTEN_RELEASED`).
/// The syscall number is tested first: every other syscall of the machine returns at once.
/// (The per-syscall `syscalls:sys_enter_*` tracepoints would run nothing for the others, but
/// detaching each waits for an RCU tasks-trace grace period: 300 ms at the end of every run.)
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> u32 {
    let nr: i64 = ctx.arg(1);
    if !matches!(nr, SYS_CLOSE | SYS_DUP2 | SYS_DUP3 | SYS_CLOSE_RANGE) {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_tracked(tgid) || !fd_table_shared() {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let arg = |index: u8| syscall_arg(regs, index);
    match nr {
        SYS_CLOSE => released(arg(0)),
        SYS_DUP2 | SYS_DUP3 if arg(0) != arg(1) => released(arg(1)),
        SYS_CLOSE_RANGE if arg(2) & (CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) == 0 => {
            // A range of fds: not walked; closing a range of a shared table is flagged.
            flag_syscall(SYS_CLOSE_RANGE as u32, 0);
        }
        _ => {}
    }
    0
}

fn fd_table_shared() -> bool {
    let files = read::<u64>(current_task(), layout!(task_files)).unwrap_or(0);
    read::<i32>(files, layout!(files_count)).unwrap_or(0) > 1
}

fn released(fd: u64) {
    if let Some(file) = file_of_fd(fd) {
        if file_mode(file) & FMODE_WRITE != 0 {
            record_written(file, WRITTEN_RELEASED);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pages dirtied: the file the kernel really writes, and writers outside the tree

/// `task_struct.flags` bit of a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

/// `__mark_inode_dirty`: called in the writer's context when a write (a syscall, a fault on a
/// shared mapping, io_uring) dirties a clean page of an inode. For the tree, the inode is the
/// one the kernel writes, whatever an fd names by the syscall's exit; for a user process
/// outside the tree, it is a write by someone else to a file the tree wrote. Kernel threads
/// (writeback redirtying pages, the loop driver) are left out: loop devices are caught where
/// the tree attaches them.
#[raw_tracepoint(tracepoint = "writeback_mark_inode_dirty")]
pub fn writeback_mark_inode_dirty(ctx: RawTracePointContext) -> u32 {
    let flags: u64 = ctx.arg(1);
    if flags & layout!(dirty_pages_flag) == 0 {
        return 0;
    }
    let inode: u64 = ctx.arg(0);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_tracked(tgid) {
        dirtied_by_tree(inode);
    } else {
        dirtied_outside(inode, tgid);
    }
    0
}

fn dirtied_by_tree(inode: u64) {
    let Some(id) = regular_inode_id(inode) else {
        return;
    };
    if !first_write(&id) {
        return;
    }
    // No file here, only the inode: its first dentry, seen from the process's root mount
    // (settling checks every candidate path by inode and generation).
    let first = read::<u64>(inode, layout!(inode_dentries)).unwrap_or(0);
    let dentry = if first == 0 {
        0
    } else {
        first - layout!(dentry_alias)
    };
    let fs = read::<u64>(current_task(), layout!(task_fs)).unwrap_or(0);
    let vfsmount = read::<u64>(fs, layout!(fs_root) + layout!(path_mnt)).unwrap_or(0);
    submit_written(inode, &id, WRITTEN_DIRTIED, vfsmount, dentry);
}

fn dirtied_outside(inode: u64, tgid: u32) {
    let task_flags = read::<u32>(current_task(), layout!(task_flags)).unwrap_or(PF_KTHREAD);
    if task_flags & PF_KTHREAD != 0 {
        return;
    }
    let Some(id) = inode_id(inode) else {
        return;
    };
    // SAFETY: only tested for presence.
    let ours = unsafe { WRITTEN.get(&id).is_some() };
    // SAFETY: only tested for presence.
    if !ours || unsafe { OUTSIDE_WRITERS.get(&id).is_some() } {
        return;
    }
    let writer = OutsideWriter {
        pid: tgid,
        _reserved: 0,
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // A full map still holds earlier writers: the run is incomplete anyway.
    let _ = OUTSIDE_WRITERS.insert(&id, &writer, 0);
}

// ---------------------------------------------------------------------------------------------
// Process tree

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    let head = header(EventKind::Fork);
    let child: u64 = ctx.arg(1);
    let thread = read::<u32>(child, layout!(task_pid)).unwrap_or(0);
    if head.pid == tracer_self().tgid
        && thread != read::<u32>(child, layout!(task_tgid)).unwrap_or(0)
    {
        // A new thread of oci-attest: signals and ptrace may name it.
        let _ = TRACER_THREADS.insert(&thread, &1, 0);
    } else {
        // Any other new task is not oci-attest's, even when its id was one of oci-attest's
        // threads that ended before this program was attached (the threads are listed at load,
        // while the materials are hashed) and so was never removed.
        let _ = TRACER_THREADS.remove(&thread);
    }
    if !is_tracked(head.pid) {
        return 0;
    }
    let (Some(child_pid), Some(child_tgid)) = (
        read::<u32>(child, layout!(task_pid)),
        read::<u32>(child, layout!(task_tgid)),
    ) else {
        count_drop(DropReason::TrackedSetFull);
        return 0;
    };
    if child_pid != child_tgid {
        // A new thread: its thread group is tracked already.
        return 0;
    }
    if TRACKED.insert(&child_tgid, &1, 0).is_err() {
        count_drop(DropReason::TrackedSetFull);
        return 0;
    }
    submit(&ForkEvent {
        header: head,
        child_pid: child_tgid,
        _reserved: 0,
    });
    0
}

/// State of the argv copy, shared with [`argv_step`] through `bpf_loop`.
#[repr(C)]
struct ArgvCopy {
    next: u64,
    end: u64,
    flags: u64,
}

/// One `bpf_loop` step: sends the next chunk of the argument area. Returns 1 to stop.
extern "C" fn argv_step(_index: u64, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the state given to it, which lives on the caller's stack.
    let copy = unsafe { &mut *context.cast::<ArgvCopy>() };
    let Some(event) = ARGV_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let remaining = copy.end - copy.next;
    let len = if remaining > ARGV_CHUNK as u64 {
        ARGV_CHUNK as u64
    } else {
        remaining
    };
    let last = len == remaining;
    // SAFETY: the scratch slot is this CPU's; len is in [1, ARGV_CHUNK].
    unsafe {
        if len == 0
            || aya_ebpf::helpers::generated::bpf_probe_read_user(
                (*event).argv.as_mut_ptr().cast::<c_void>(),
                ((len - 1) & (ARGV_CHUNK as u64 - 1)) as u32 + 1,
                copy.next as *const c_void,
            ) < 0
        {
            copy.flags |= ARGV_UNREADABLE as u64;
            return 1;
        }
        (*event).argv_len = len as u32;
        (*event).flags = if last { 0 } else { ARGV_CONTINUED };
    }
    submit_bytes(
        event,
        core::mem::offset_of!(ExecArgvEvent, argv) + len as usize,
    );
    copy.next += len;
    if last {
        copy.flags |= 1 << 32;
        return 1;
    }
    0
}

/// Sends the argv of the image just executed, read from its argument area (copied there by
/// the kernel, so it is what the program received), in chunks; the last chunk carries the
/// flags.
fn send_argv(task: u64) {
    let mm = read::<u64>(task, layout!(task_mm)).unwrap_or(0);
    let start = read::<u64>(mm, layout!(mm_arg_start)).unwrap_or(0);
    let end = read::<u64>(mm, layout!(mm_arg_end)).unwrap_or(0);
    let mut copy = ArgvCopy {
        next: start,
        end,
        flags: 0,
    };
    if start == 0 || end <= start {
        copy.flags = ARGV_UNREADABLE as u64;
    } else {
        // SAFETY: the callback and its context follow the bpf_loop contract.
        unsafe {
            bpf_loop(
                MAX_ARGV_CHUNKS,
                argv_step as *mut c_void,
                (&mut copy as *mut ArgvCopy).cast::<c_void>(),
                0,
            )
        };
        if copy.flags == 0 {
            copy.flags = ARGV_TRUNCATED as u64;
        }
    }
    let flags = copy.flags as u32;
    if flags != 0 {
        // Problems arrive as one more, empty chunk that ends the argv.
        let Some(event) = ARGV_SCRATCH.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: the scratch slot is this CPU's.
        unsafe {
            (*event).header = header(EventKind::ExecArgv);
            (*event).flags = flags;
            (*event).argv_len = 0;
        }
        submit_bytes(event, core::mem::offset_of!(ExecArgvEvent, argv));
    }
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> u32 {
    let head = header(EventKind::Exec);
    if !is_tracked(head.pid) {
        return 0;
    }
    let old_tid: u32 = ctx.arg(1);
    let binprm: u64 = ctx.arg(2);
    let Some(event) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let file = read::<u64>(binprm, layout!(binprm_file)).unwrap_or(0);
    let inode = read::<u64>(file, layout!(file_inode)).unwrap_or(0);
    let program = inode_id(inode).unwrap_or(InodeId {
        dev: 0,
        ino: 0,
        generation: 0,
        _reserved: 0,
    });
    // A change of the program after this exec must be reported even if the tree changed it
    // before: forget that it was written.
    let _ = WRITTEN.remove(&program);
    // SAFETY: the scratch slot is this CPU's.
    unsafe {
        (*event).header = head;
        (*event).old_tid = old_tid;
        (*event).program = program;
        (*event).ctime = inode_ctime(inode);
        (*event).nlink = read::<u32>(inode, layout!(inode_nlink)).unwrap_or(0);
        let bit = layout!(binprm_secureexec_bit);
        let secure = read::<u8>(binprm, bit / 8).unwrap_or(0) >> (bit % 8) & 1;
        (*event).secureexec = secure as u32;
        // The credentials were committed before this tracepoint: they are the new image's.
        let cred = read::<u64>(current_task(), layout!(task_cred)).unwrap_or(0);
        (*event).uid = read::<u32>(cred, layout!(cred_uid)).unwrap_or(u32::MAX);
        (*event).euid = read::<u32>(cred, layout!(cred_euid)).unwrap_or(u32::MAX);
        (*event).cap_effective = read::<u64>(cred, layout!(cred_cap_effective)).unwrap_or(0);
        (*event).cap_permitted = read::<u64>(cred, layout!(cred_cap_permitted)).unwrap_or(0);
        let (len, flags) = if file == 0 {
            (0, PATH_UNRESOLVED)
        } else {
            build_struct_path(file + layout!(file_path), (*event).path.as_mut_ptr())
        };
        (*event).path_len = len;
        (*event).path_flags = flags;
        submit_bytes(
            event,
            core::mem::offset_of!(ExecEvent, path) + (len as usize & (PATH_CAPACITY - 1)),
        );
    }
    if let Some(event) = ARGV_SCRATCH.get_ptr_mut(0) {
        // SAFETY: the scratch slot is this CPU's.
        unsafe { (*event).header = header(EventKind::ExecArgv) };
    }
    send_argv(current_task());
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> u32 {
    let head = header(EventKind::Exit);
    if !is_tracked(head.pid) {
        if head.pid == tracer_self().tgid && head.tid != head.pid {
            // Its id may go to another process now.
            let _ = TRACER_THREADS.remove(&head.tid);
        }
        return 0;
    }
    let task = current_task();
    // do_exit decrements signal->live before this tracepoint: 0 means the whole group is dead.
    let signal = read::<u64>(task, layout!(task_signal)).unwrap_or(0);
    let live = read::<i32>(signal, layout!(signal_live)).unwrap_or(0);
    if live != 0 {
        return 0;
    }
    let status = read::<i32>(task, layout!(task_exit_code)).unwrap_or(-1);
    let _ = TRACKED.remove(&head.pid);
    submit(&ExitEvent {
        header: head,
        status,
        _reserved: 0,
    });
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
