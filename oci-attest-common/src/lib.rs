//! Events and configuration shared by the kernel programs (`oci-attest-ebpf`) and userspace
//! (`oci-attest`).
//!
//! Every type here is a plain `#[repr(C)]` struct so both sides agree on the byte layout
//! without serialisation. Events with a string tail (argv, paths) are written to the ring
//! buffer only up to the bytes actually used; userspace reads the fixed prefix, then the tail.
#![no_std]

/// Bytes of one path read from user memory (PATH_MAX, including the NUL).
pub const PATH_CAPACITY: usize = 4096;

/// argv is read argument by argument into a buffer of twice this size: each argument may be up
/// to this long, and arguments are appended while the used length stays below it. So at least
/// this many bytes of argv are always captured; anything cut off is flagged `truncated`.
pub const ARGV_WINDOW: usize = 8192;

/// Arguments read per exec before the argv is flagged truncated.
pub const MAX_ARGS: u32 = 512;

/// Kind of record in the ring buffer; the first field of every event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A tracked process created a child (or a thread: userspace tells them apart).
    Fork = 1,
    /// argv at the entry of execve/execveat (the exec may still fail).
    ExecArgv = 2,
    /// A successful exec (`sched_process_exec`).
    Exec = 3,
    /// The last thread of a tracked process exited.
    Exit = 4,
    /// A successful open/creat/rename/unlink/chdir/fchdir.
    FileOp = 5,
}

impl EventKind {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => EventKind::Fork,
            2 => EventKind::ExecArgv,
            3 => EventKind::Exec,
            4 => EventKind::Exit,
            5 => EventKind::FileOp,
            _ => return None,
        })
    }
}

/// Common prefix of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u32,
    /// Thread-group id (the userspace "pid").
    pub pid: u32,
    /// Thread id of the task that caused the event.
    pub tid: u32,
    pub _reserved: u32,
    /// Nanoseconds since boot (`bpf_ktime_get_boot_ns`).
    pub time_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    pub header: EventHeader,
    /// The new task's id: a process id, or a thread id when the parent created a thread.
    pub child_pid: u32,
    pub _reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecArgvEvent {
    pub header: EventHeader,
    /// Non-zero when argv did not fit (too many or too long arguments) or could not be read.
    pub truncated: u32,
    /// Bytes used in `argv`: the arguments, each followed by a NUL.
    pub argv_len: u32,
    pub argv: [u8; 2 * ARGV_WINDOW],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Thread id that called exec (becomes the thread-group leader).
    pub old_tid: u32,
    /// Bytes used in `filename`, without the NUL.
    pub filename_len: u32,
    pub filename: [u8; PATH_CAPACITY],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The wait(2) status of the process (`task_struct.exit_code`), or -1 when unknown.
    pub status: i32,
    pub _reserved: u32,
}

/// File operation of a [`FileOpEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// open/openat/openat2/creat: `flags` are the open flags, `result` the new fd.
    Open = 1,
    /// rename/renameat/renameat2: path → path2.
    Rename = 2,
    /// unlink/unlinkat: `flags` are the unlinkat flags.
    Unlink = 3,
    /// chdir: the new cwd is `path`.
    Chdir = 4,
    /// fchdir: the new cwd is the directory open as fd `dirfd`.
    Fchdir = 5,
}

impl FileOp {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => FileOp::Open,
            2 => FileOp::Rename,
            3 => FileOp::Unlink,
            4 => FileOp::Chdir,
            5 => FileOp::Fchdir,
            _ => return None,
        })
    }
}

/// The open flags creat(2) implies: O_WRONLY | O_CREAT | O_TRUNC.
pub const CREAT_FLAGS: u64 = 0o1101;

/// `dirfd` value meaning "relative to the current directory".
pub const AT_FDCWD: i32 = -100;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileOpEvent {
    pub header: EventHeader,
    /// A [`FileOp`].
    pub op: u32,
    /// The syscall's open/unlink flags (openat2: `open_how.flags`).
    pub flags: u32,
    /// Directory fd `path` is relative to ([`AT_FDCWD`] for the cwd; fchdir: the fd).
    pub dirfd: i32,
    /// Directory fd `path2` is relative to.
    pub dirfd2: i32,
    /// The syscall's return value (always ≥ 0: failed calls are not reported).
    pub result: i64,
    /// Bytes used in the first path slot, without the NUL.
    pub path_len: u32,
    /// Bytes used in the second path slot (renames only).
    pub path2_len: u32,
    /// `path` at `[0, PATH_CAPACITY)`, `path2` at `[PATH_CAPACITY, 2 * PATH_CAPACITY)`.
    pub paths: [u8; 2 * PATH_CAPACITY],
}

/// The syscalls with enter/exit programs; the index into [`Layout::syscalls`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Open = 0,
    Openat = 1,
    Openat2 = 2,
    Creat = 3,
    Rename = 4,
    Renameat = 5,
    Renameat2 = 6,
    Unlink = 7,
    Unlinkat = 8,
    Chdir = 9,
    Fchdir = 10,
    Execve = 11,
    Execveat = 12,
}

pub const SYSCALL_COUNT: usize = 13;

/// Offset meaning "this tracepoint has no such field".
pub const ABSENT: i32 = -1;

/// Byte offsets of the fields a syscall program reads, in its `sys_enter_*` record (and `ret`
/// in its `sys_exit_*` record), or [`ABSENT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallFields {
    pub dirfd: i32,
    pub path: i32,
    pub dirfd2: i32,
    pub path2: i32,
    pub flags: i32,
    /// openat2's `struct open_how *` (flags are its first u64).
    pub open_how: i32,
    pub argv: i32,
    pub ret: i32,
}

impl SyscallFields {
    pub const ABSENT: SyscallFields = SyscallFields {
        dirfd: ABSENT,
        path: ABSENT,
        dirfd2: ABSENT,
        path2: ABSENT,
        flags: ABSENT,
        open_how: ABSENT,
        argv: ABSENT,
        ret: ABSENT,
    };
}

/// Where the kernel programs find their data on this kernel: tracepoint field offsets read
/// from tracefs `format` files and `task_struct` offsets read from BTF, set by userspace as a
/// read-only global before loading (layouts differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub syscalls: [SyscallFields; SYSCALL_COUNT],
    /// `sched_process_fork.child_pid`.
    pub fork_child_pid: i32,
    /// `sched_process_exec.filename` (a `__data_loc`).
    pub exec_filename: i32,
    /// `sched_process_exec.old_pid`.
    pub exec_old_pid: i32,
    /// `sched_process_exit.group_dead`, or [`ABSENT`] on kernels without it.
    pub exit_group_dead: i32,
    /// `task_struct.exit_code`, or [`ABSENT`] when BTF does not say.
    pub task_exit_code: i32,
    pub _reserved: i32,
}

impl Layout {
    pub const ABSENT: Layout = Layout {
        syscalls: [SyscallFields::ABSENT; SYSCALL_COUNT],
        fork_child_pid: ABSENT,
        exec_filename: ABSENT,
        exec_old_pid: ABSENT,
        exit_group_dead: ABSENT,
        task_exit_code: ABSENT,
        _reserved: 0,
    };
}

/// Entry arguments of a syscall in flight, kept per thread until its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingSyscall {
    /// A [`Syscall`].
    pub syscall: u32,
    pub dirfd: i32,
    pub dirfd2: i32,
    pub _reserved: u32,
    pub flags: u64,
    pub path: u64,
    pub path2: u64,
    pub open_how: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data without padding holes that matter or pointers.
    unsafe impl aya::Pod for super::Layout {}
    unsafe impl aya::Pod for super::PendingSyscall {}
}
