//! Events and configuration shared by the kernel programs (`oci-attest-ebpf`) and userspace
//! (`oci-attest`).
//!
//! Every type here is a plain `#[repr(C)]` struct so both sides agree on the byte layout
//! without serialisation. Events with a string tail (argv, paths) are written to the ring
//! buffer only up to the bytes actually used; userspace reads the fixed prefix, then the tail.
//! The design is described in `docs/tracing.md`.
#![no_std]

/// Bytes of one path built in the kernel (PATH_MAX). A longer path is flagged
/// [`PATH_TRUNCATED`], never silently cut.
pub const PATH_CAPACITY: usize = 4096;

/// Path components walked per path before it is flagged truncated (a component takes at
/// least two bytes, so a full buffer never needs more).
pub const MAX_PATH_COMPONENTS: u32 = 2048;

/// argv is copied from the new image's argument area in chunks of this many bytes.
pub const ARGV_CHUNK: usize = 8192;

/// Chunks read per exec: 8 MiB, more than the kernel accepts for argv + environment (at most
/// 3/4 of the 8 MiB stack limit), so argv is only flagged truncated on a kernel that allows more.
pub const MAX_ARGV_CHUNKS: u32 = 1024;

/// Entries of the syscall rule table, indexed by syscall number.
pub const SYSCALL_TABLE_SIZE: u32 = 1024;

/// Kind of record in the ring buffer; the first field of every event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A tracked process created a child process (threads are not reported).
    Fork = 1,
    /// A successful exec, with the inode and path of the file the kernel executed.
    Exec = 2,
    /// One chunk of the argv of the exec just reported.
    ExecArgv = 3,
    /// The last thread of a tracked process exited.
    Exit = 4,
    /// A regular file whose content the tree changed, reported once per inode.
    Written = 5,
    /// A rename, link, unlink or truncate(2) by path.
    PathOp = 6,
}

impl EventKind {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => EventKind::Fork,
            2 => EventKind::Exec,
            3 => EventKind::ExecArgv,
            4 => EventKind::Exit,
            5 => EventKind::Written,
            6 => EventKind::PathOp,
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
    /// The new process's id.
    pub child_pid: u32,
    pub _reserved: u32,
}

/// [`ExecArgvEvent::flags`]: more chunks of the same argv follow.
pub const ARGV_CONTINUED: u32 = 1;
/// [`ExecArgvEvent::flags`]: the argv is longer than [`MAX_ARGV_CHUNKS`] chunks.
pub const ARGV_TRUNCATED: u32 = 2;
/// [`ExecArgvEvent::flags`]: the argument area could not be read (pages not resident).
pub const ARGV_UNREADABLE: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecArgvEvent {
    pub header: EventHeader,
    /// [`ARGV_CONTINUED`], [`ARGV_TRUNCATED`], [`ARGV_UNREADABLE`].
    pub flags: u32,
    /// Bytes used in `argv`: a slice of the NUL-separated argument area.
    pub argv_len: u32,
    pub argv: [u8; ARGV_CHUNK],
}

/// Path flag: the path did not fit in [`PATH_CAPACITY`] bytes or [`MAX_PATH_COMPONENTS`].
pub const PATH_TRUNCATED: u32 = 1;
/// Path flag: the dentry chain could not be read.
pub const PATH_UNRESOLVED: u32 = 2;

/// Identity of a file as the kernel knows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InodeId {
    /// `super_block.s_dev` in the kernel's encoding (major << 20 | minor).
    pub dev: u64,
    pub ino: u64,
    /// `inode.i_generation`: tells a reused inode number from the file that had it before.
    pub generation: u32,
    pub _reserved: u32,
}

/// An inode timestamp as the kernel holds it (`inode.i_ctime_sec`/`i_ctime_nsec`): the same
/// clock `statx` reports, so userspace can compare it with the file it finds at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelTime {
    pub sec: i64,
    pub nsec: u32,
    pub _reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Thread id that called exec (becomes the thread-group leader).
    pub old_tid: u32,
    /// [`PATH_TRUNCATED`], [`PATH_UNRESOLVED`].
    pub path_flags: u32,
    /// The file the kernel executed (`linux_binprm.file`; the interpreter for `#!` scripts).
    pub program: InodeId,
    /// The program's ctime at the exec: any later change of its content moves it.
    pub ctime: KernelTime,
    /// The program's link count at the exec: 0 for a memfd, an O_TMPFILE or a deleted file.
    pub nlink: u32,
    /// 1 when the exec changed the process's identity or gave it capabilities (setuid, setgid,
    /// file capabilities: the kernel's `linux_binprm.secureexec`, which sets `AT_SECURE`).
    pub secureexec: u32,
    /// The credentials the new image runs with: real and effective uid, effective and
    /// permitted capabilities.
    pub uid: u32,
    pub euid: u32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
    /// Bytes used in `path`.
    pub path_len: u32,
    pub _reserved: u32,
    pub path: [u8; PATH_CAPACITY],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The wait(2) status of the process (`task_struct.exit_code`), or -1 when unknown.
    pub status: i32,
    pub _reserved: u32,
}

/// [`WrittenEvent::how`]: opened for writing by openat2 and empty right after the open
/// (created or truncated, whatever flags user memory claims).
pub const WRITTEN_EMPTY_AT_OPEN: u32 = 1;
/// [`WrittenEvent::how`]: created by the open (`FMODE_CREATED`).
pub const WRITTEN_CREATED: u32 = 32;
/// [`WrittenEvent::how`]: opened for writing with `O_TRUNC`.
pub const WRITTEN_TRUNCATED: u32 = 2;
/// [`WrittenEvent::how`]: data written (write, pwrite, writev, sendfile, splice, ...).
pub const WRITTEN_DATA: u32 = 4;
/// [`WrittenEvent::how`]: resized (ftruncate, fallocate, truncate) or cloned into (FICLONE).
pub const WRITTEN_RESIZED: u32 = 8;
/// [`WrittenEvent::how`]: mapped shared from an fd open for writing.
pub const WRITTEN_MAPPED: u32 = 16;
/// [`WrittenEvent::how`]: the kernel dirtied the inode's pages in a task of the tree (the
/// file the kernel really wrote, whatever the fd names by the syscall's exit). The path is
/// built from the inode's first dentry and is only a hint.
pub const WRITTEN_DIRTIED: u32 = 64;
/// [`WrittenEvent::how`]: not a write: the tree handed the file, open for writing, to a
/// kernel service that writes it on its own later (a loop device). Reported every time.
pub const WRITTEN_HANDED_OUT: u32 = 128;
/// With [`WRITTEN_HANDED_OUT`]: handed over a Unix socket (`SCM_RIGHTS` in sendmsg/sendmmsg)
/// rather than to a loop device: whoever receives it can write it, inside the tree or not.
pub const WRITTEN_PASSED: u32 = 256;
/// [`WrittenEvent::how`]: not a write seen: the file, open for writing, left an fd table other
/// tasks share (close, or dup2/dup3 over its fd) — a sibling may still be writing it through
/// the fd it looked up before, which its syscall's exit then names wrongly. A candidate: only
/// a file that changed during the run is a product.
pub const WRITTEN_RELEASED: u32 = 512;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct WrittenEvent {
    pub header: EventHeader,
    /// `WRITTEN_*` bits: how the first change was made.
    pub how: u32,
    /// [`PATH_TRUNCATED`], [`PATH_UNRESOLVED`].
    pub path_flags: u32,
    pub inode: InodeId,
    /// `super_block.s_magic` of the file's filesystem (tells pseudo-filesystems apart).
    pub fs_magic: u64,
    /// `inode.i_nlink` when first written: 0 for an O_TMPFILE or an unlinked file.
    pub nlink: u32,
    /// Bytes used in `path`.
    pub path_len: u32,
    /// The inode's ctime right after the first change: a file found at the end that was born
    /// later is another file (where the filesystem cannot report the generation).
    pub ctime: KernelTime,
    pub path: [u8; PATH_CAPACITY],
}

/// Value of the `OUTSIDE_WRITERS` map (key: an [`InodeId`] the tree wrote): the first process
/// outside the tree that dirtied the file's pages while it was traced.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideWriter {
    pub pid: u32,
    pub _reserved: u32,
    /// `task_struct.comm`.
    pub comm: [u8; 16],
}

/// Operation of a [`PathOpEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathOp {
    /// rename/renameat/renameat2: name 0 → name 1.
    Rename = 1,
    /// link/linkat: name 0 (or the fd's file with AT_EMPTY_PATH) gets the new name 1.
    Link = 2,
    /// unlink/unlinkat of a file (not a directory): name 0.
    Unlink = 3,
    /// truncate(2): name 0.
    Truncate = 4,
}

impl PathOp {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => PathOp::Rename,
            2 => PathOp::Link,
            3 => PathOp::Unlink,
            4 => PathOp::Truncate,
            _ => return None,
        })
    }
}

/// Path slots of a [`PathOpEvent`]: the directory (built in the kernel from the dirfd, the
/// cwd or, for an absolute name, the process's root) and the name (as the process passed it)
/// of each of the two operands.
pub const PATH_OP_SLOTS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathOpEvent {
    pub header: EventHeader,
    /// A [`PathOp`].
    pub op: u32,
    /// Flags of each slot ([`PATH_TRUNCATED`], [`PATH_UNRESOLVED`]).
    pub flags: [u32; PATH_OP_SLOTS],
    /// Bytes used in each slot.
    pub lens: [u32; PATH_OP_SLOTS],
    pub _reserved: u32,
    /// Slot `i` at `[i * PATH_CAPACITY, (i + 1) * PATH_CAPACITY)`: dir 0, name 0, dir 1, name 1.
    pub paths: [u8; PATH_OP_SLOTS * PATH_CAPACITY],
}

/// One more than the largest [`SyscallClass`]: the size of the table of class handlers.
pub const SYSCALL_CLASSES: u32 = 11;

/// What the kernel programs do with a syscall ([`SyscallRule::class`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallClass {
    /// Cannot create or change a file's content.
    Ignored = 0,
    /// Returns a new fd: `arg_a` holds the open flags in a register ([`NO_ARG`]: openat2, whose
    /// flags are in user memory); `op` is 1 when the call implies `O_TRUNC` (creat).
    Open = 1,
    /// Writes data through fd `arg_a` (success: a positive result).
    WriteFd = 2,
    /// Resizes or clones into fd `arg_a` (success: 0).
    ResizeFd = 3,
    /// mmap: fd `arg_a`, flags `arg_b`.
    Mmap = 4,
    /// ioctl: fd `arg_a`, request `arg_b`, argument `arg_c`; the clone requests write the
    /// fd's file, the loop-device attach requests hand the backing file out.
    Ioctl = 5,
    /// A [`PathOp`] (`op`): dirfd `arg_a`, name `arg_b`, dirfd `arg_c`, name `arg_d`, flags `arg_e`.
    PathOp = 6,
    /// Can change files in a way the programs do not follow: the trace is incomplete.
    Unmodelled = 7,
    /// mknod/mknodat: mode `arg_a`; unmodelled when it makes a regular file.
    Mknod = 8,
    /// Aimed at the tracer (`op`: a `TRACER_*` target): a successful call makes the trace
    /// incomplete; with [`TRACER_ALSO_UNMODELLED`] in `op` a successful call is also unmodelled.
    Tracer = 9,
    /// sendmsg (`op` 0: a `msghdr` at `arg_a`) or sendmmsg (`op` 1: as many `mmsghdr` at
    /// `arg_a` as the result says): files passed with `SCM_RIGHTS`, open for writing, are
    /// handed out.
    SendMsg = 10,
}

/// [`SyscallClass::Tracer`] target: the process id in `arg_a` (a thread of oci-attest; for a
/// signal, `arg_b` holds the signal, and 0, -1 and process groups reach oci-attest too).
pub const TRACER_PID: u8 = 1;
/// [`SyscallClass::Tracer`] target: the pidfd in `arg_a` (signal in `arg_b`, if any).
pub const TRACER_PIDFD: u8 = 2;
/// [`SyscallClass::Tracer`] target: any successful call (bpf(2): the tracer's maps and
/// programs are reachable through it by id; module and kexec loads change the kernel).
pub const TRACER_ANY: u8 = 3;
/// Flag in `op`: a successful call is also [`SyscallClass::Unmodelled`] (ptrace, process_vm_writev
/// change other processes of the tree in ways the programs do not follow).
pub const TRACER_ALSO_UNMODELLED: u8 = 0x10;

/// [`Tampering::kind`]: a syscall aimed at oci-attest (a signal, ptrace, its memory, its
/// limits or scheduling, its descriptors) succeeded.
pub const TAMPER_TARGETED: u32 = 1;
/// [`Tampering::kind`]: a private `/proc/<pid>/` file of oci-attest was opened (one other
/// users cannot read, or opened for writing).
pub const TAMPER_PROC: u32 = 2;
/// [`Tampering::kind`]: bpf(2), or a module or kexec load, succeeded.
pub const TAMPER_BPF: u32 = 3;
/// [`Tampering::kind`]: the inode of the signing key or of its passphrase file was opened.
pub const TAMPER_KEY: u32 = 4;

/// Key of the `TAMPERED` map: what a process of the tree did to oci-attest or its key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tampering {
    /// The process (thread-group id).
    pub pid: u32,
    /// The syscall.
    pub nr: u32,
    /// A `TAMPER_*` kind.
    pub kind: u32,
    pub _reserved: u32,
}

/// Key of the `PROTECTED` map: a file the tree must not open (the signing key), by the kernel's
/// `s_dev` encoding (major << 20 | minor) and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// Who oci-attest is, set at load time: signals to its process group, or to every process,
/// reach it too; whether the caller could signal it depends on its uid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TracerSelf {
    pub tgid: u32,
    pub pgid: u32,
    pub uid: u32,
    pub _reserved: u32,
}

/// Argument index meaning "none" (a dirfd that is AT_FDCWD, creat's implied flags).
pub const NO_ARG: u8 = 0xff;

/// One row of the syscall table (a BPF array indexed by syscall number, filled by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallRule {
    /// A [`SyscallClass`].
    pub class: u8,
    /// A [`PathOp`] for [`SyscallClass::PathOp`].
    pub op: u8,
    pub arg_a: u8,
    pub arg_b: u8,
    pub arg_c: u8,
    pub arg_d: u8,
    pub arg_e: u8,
    pub _reserved: u8,
}

impl SyscallRule {
    pub const IGNORED: SyscallRule = SyscallRule {
        class: SyscallClass::Ignored as u8,
        op: 0,
        arg_a: NO_ARG,
        arg_b: NO_ARG,
        arg_c: NO_ARG,
        arg_d: NO_ARG,
        arg_e: NO_ARG,
        _reserved: 0,
    };
}

/// Why the kernel side could not record something; the index into the `DROPPED` counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring buffer was full.
    RingBufferFull = 0,
    /// The written-inode set was full: a written file went unrecorded.
    WrittenSetFull = 1,
    /// The tracked-process set was full: a child went untraced.
    TrackedSetFull = 2,
    /// A kernel object could not be read where a file was expected.
    UnreadableFile = 3,
}

pub const DROP_KINDS: u32 = 4;

/// Key of the `FLAGGED` map: a syscall the tree made that the programs do not model.
/// `compat` is 1 for a 32-bit compat syscall (its number is then the 32-bit one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlaggedSyscall {
    pub nr: u32,
    pub compat: u32,
}

/// Byte offsets of the kernel struct members the programs read, from the kernel's BTF at load
/// time (layouts differ between kernels and configurations).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Layout {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_files: u32,
    pub task_fs: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    /// `task_struct.thread_info.status` (x86: `TS_COMPAT` marks a 32-bit syscall).
    pub task_thread_status: u32,
    pub signal_live: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_path: u32,
    pub file_inode: u32,
    pub file_mode: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub qstr_len: u32,
    pub qstr_name: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub inode_mode: u32,
    pub inode_nlink: u32,
    pub inode_generation: u32,
    pub inode_size: u32,
    /// `inode.i_ctime_sec`/`i_ctime_nsec` (`__i_ctime`/`i_ctime` timespec64 on older kernels).
    pub inode_ctime_sec: u32,
    pub inode_ctime_nsec: u32,
    /// `inode.i_dentry` (the list of its dentries) and `dentry.d_u.d_alias` (the link in it).
    pub inode_dentries: u32,
    pub dentry_alias: u32,
    pub task_flags: u32,
    /// The value of `I_DIRTY_PAGES` on this kernel (a define on older kernels, an enum later).
    pub dirty_pages_flag: u32,
    pub sb_dev: u32,
    pub sb_magic: u32,
    /// `struct mount.mnt` (the embedded `vfsmount`).
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub binprm_file: u32,
    /// Bit offset of the `linux_binprm.secureexec` bitfield.
    pub binprm_secureexec_bit: u32,
    /// `task_struct.cred` and the members of `struct cred` an exec may raise.
    pub task_cred: u32,
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_cap_effective: u32,
    pub cred_cap_permitted: u32,
    /// `struct proc_inode`: its `pid` and the embedded `vfs_inode` (a procfs inode's task).
    pub proc_inode_pid: u32,
    pub proc_inode_vfs_inode: u32,
    /// `struct pid.tasks` (its first task) and `task_struct.pid_links` (the link in it).
    pub pid_tasks: u32,
    pub task_pid_links: u32,
    /// `file.private_data` (a pidfd's `struct pid` before pidfs) and `inode.i_private` (a
    /// pidfs inode's `struct pid`).
    pub file_private_data: u32,
    pub inode_private: u32,
    /// `signal_struct.pids` (the group's `struct pid` by type) and `pid.numbers` (its first
    /// `upid`, whose `nr` comes first): the caller's process group, for `kill(0)`.
    pub signal_pids: u32,
    pub pid_numbers: u32,
    /// `files_struct.count`: more than 1 when other tasks share the fd table (threads,
    /// CLONE_FILES).
    pub files_count: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data of integers without padding.
    unsafe impl aya::Pod for super::Layout {}
    unsafe impl aya::Pod for super::SyscallRule {}
    unsafe impl aya::Pod for super::FlaggedSyscall {}
    unsafe impl aya::Pod for super::InodeId {}
    unsafe impl aya::Pod for super::OutsideWriter {}
    unsafe impl aya::Pod for super::Tampering {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::TracerSelf {}
}
