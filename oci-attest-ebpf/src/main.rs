//! Kernel programs of oci-attest: follow the wrapped command's process tree and report its
//! execs (with argv), exits and file operations through one ring buffer.
//!
//! Only tracepoints are used (kprobes and fentry are unavailable on many CI kernels). Field
//! offsets come from `LAYOUT`, filled by userspace from the tracefs `format` files.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_loop, bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext as _,
};
use aya_log_ebpf::debug;
use oci_attest_common::{
    EventHeader, EventKind, ExecArgvEvent, ExecEvent, ExitEvent, FileOp, FileOpEvent, ForkEvent,
    Layout, PendingSyscall, Syscall, ABSENT, ARGV_WINDOW, CREAT_FLAGS, MAX_ARGS, PATH_CAPACITY,
};

/// Filled by userspace before loading (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static LAYOUT: Layout = Layout::ABSENT;

/// Thread-group ids of the traced tree (value unused). Userspace inserts the wrapped child;
/// `sched_process_fork` adds descendants; exits remove them.
#[map]
static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Userspace sets the size (default 8 MiB) at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Events that could not be queued, per CPU (index 0).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Syscall entry arguments by thread (pid_tgid), consumed at the syscall's exit. LRU so that
/// entries of threads killed inside a syscall cannot fill the map.
#[map]
static PENDING: LruHashMap<u64, PendingSyscall> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU scratch space: the big events are built here and copied into the ring buffer with
/// only the bytes they use (a tracepoint program runs without migration, so a CPU's slot is
/// not shared while in use).
#[map]
static ARGV_SCRATCH: PerCpuArray<ExecArgvEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static FILE_SCRATCH: PerCpuArray<FileOpEvent> = PerCpuArray::with_max_entries(1, 0);

/// Reads one field of LAYOUT. The volatile read stops the compiler from folding the
/// compile-time default into the code (userspace rewrites it at load time); reading one field
/// at a time keeps the whole struct off the 512-byte stack.
macro_rules! layout {
    ($($field:tt)+) => {
        // SAFETY: LAYOUT is a read-only global.
        unsafe { core::ptr::read_volatile(&LAYOUT.$($field)+) }
    };
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

fn count_lost() {
    if let Some(counter) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
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
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_lost();
    }
}

fn submit<T>(event: &T) {
    if EVENTS.output::<T>(event, 0).is_err() {
        count_lost();
    }
}

/// Reads a u64 field of the tracepoint record at `offset` (syscall arguments are 8 bytes wide).
fn field_u64(ctx: &TracePointContext, offset: i32) -> u64 {
    if offset < 0 {
        return 0;
    }
    // SAFETY: bounded read from the tracepoint record.
    unsafe { ctx.read_at::<u64>(offset as usize).unwrap_or(0) }
}

fn field_i32(ctx: &TracePointContext, offset: i32) -> i32 {
    if offset < 0 {
        return 0;
    }
    // SAFETY: bounded read from the tracepoint record.
    unsafe { ctx.read_at::<i32>(offset as usize).unwrap_or(0) }
}

/// Copies a NUL-terminated user string into `dest` (PATH_CAPACITY bytes); returns its length
/// without the NUL, 0 when unreadable.
fn read_user_path(source: u64, dest: *mut u8) -> u32 {
    if source == 0 {
        return 0;
    }
    // SAFETY: dest has PATH_CAPACITY bytes; the helper bounds the copy.
    let copied = unsafe {
        bpf_probe_read_user_str(
            dest.cast::<c_void>(),
            PATH_CAPACITY as u32,
            source as *const c_void,
        )
    };
    if copied > 0 {
        (copied - 1) as u32
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Process tree

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let parent = header(EventKind::Fork);
    if !is_tracked(parent.pid) {
        return 0;
    }
    let child_pid = field_i32(&ctx, layout!(fork_child_pid)) as u32;
    if TRACKED.insert(&child_pid, &1, 0).is_err() {
        // The child would go unseen: that is a lost event.
        count_lost();
        return 0;
    }
    submit(&ForkEvent {
        header: parent,
        child_pid,
        _reserved: 0,
    });
    0
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let head = header(EventKind::Exec);
    if !is_tracked(head.pid) {
        return 0;
    }
    let old_tid = field_i32(&ctx, layout!(exec_old_pid)) as u32;
    // __data_loc: low 16 bits offset of the string in the record, high 16 bits its length.
    let location = field_i32(&ctx, layout!(exec_filename)) as u32;
    let Some(event) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the scratch slot is this CPU's; reads are bounded by the helpers.
    unsafe {
        (*event).header = head;
        (*event).old_tid = old_tid;
        let source = (ctx.as_ptr() as *const u8).add((location & 0xffff) as usize);
        let copied = bpf_probe_read_kernel_str(
            (*event).filename.as_mut_ptr().cast::<c_void>(),
            PATH_CAPACITY as u32,
            source.cast::<c_void>(),
        );
        let len = if copied > 0 { (copied - 1) as u32 } else { 0 };
        (*event).filename_len = len;
        let used =
            core::mem::offset_of!(ExecEvent, filename) + (len as usize & (PATH_CAPACITY - 1));
        submit_bytes(event, used);
    }
    debug!(&ctx, "exec observed in traced pid {}", head.pid);
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let head = header(EventKind::Exit);
    if !is_tracked(head.pid) {
        return 0;
    }
    if head.tid != head.pid {
        // A thread's id may have been added by sched_process_fork, which cannot tell threads
        // from processes.
        let _ = TRACKED.remove(&head.tid);
    }
    let group_dead_offset = layout!(exit_group_dead);
    let group_dead = if group_dead_offset == ABSENT {
        head.tid == head.pid
    } else {
        // SAFETY: bounded read from the tracepoint record.
        unsafe { ctx.read_at::<u8>(group_dead_offset as usize).unwrap_or(0) != 0 }
    };
    if !group_dead {
        return 0;
    }
    let exit_code_offset = layout!(task_exit_code);
    let status = if exit_code_offset == ABSENT {
        -1
    } else {
        // SAFETY: kernel read at a BTF-provided offset of the current task.
        unsafe {
            let task = bpf_get_current_task() as *const u8;
            bpf_probe_read_kernel(task.add(exit_code_offset as usize).cast::<i32>()).unwrap_or(-1)
        }
    };
    let _ = TRACKED.remove(&head.pid);
    submit(&ExitEvent {
        header: head,
        status,
        _reserved: 0,
    });
    0
}

// ---------------------------------------------------------------------------------------------
// exec argv

/// State of the argv reading loop, shared with [`read_one_argument`] through `bpf_loop`.
#[repr(C)]
struct ArgvCursor {
    /// User pointer to the `char *argv[]` array.
    argv: u64,
    /// Bytes used in the scratch event's argv buffer.
    used: u64,
    /// Set when the terminating NULL of argv was reached.
    complete: u64,
}

/// One `bpf_loop` step: appends argument `index` to the scratch event. Returns 1 to stop.
/// A `bpf_loop` callback is verified once, where an unrolled or bounded loop of MAX_ARGS
/// iterations made the verifier spend ~100 ms per program at load time.
extern "C" fn read_one_argument(index: u64, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the cursor given to it, which lives on the caller's stack.
    let cursor = unsafe { &mut *context.cast::<ArgvCursor>() };
    if cursor.used >= ARGV_WINDOW as u64 {
        return 1;
    }
    let Some(event) = ARGV_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: user reads are checked by the helpers; the write offset is masked to
    // [0, ARGV_WINDOW) and at most ARGV_WINDOW bytes go into a 2 * ARGV_WINDOW buffer.
    unsafe {
        let Ok(pointer) = bpf_probe_read_user((cursor.argv as *const u64).add(index as usize))
        else {
            return 1;
        };
        if pointer == 0 {
            cursor.complete = 1;
            return 1;
        }
        let copied = bpf_probe_read_user_str(
            (*event)
                .argv
                .as_mut_ptr()
                .add(cursor.used as usize & (ARGV_WINDOW - 1))
                .cast::<c_void>(),
            ARGV_WINDOW as u32,
            pointer as *const c_void,
        );
        if copied <= 0 {
            return 1;
        }
        cursor.used += copied as u64;
    }
    0
}

fn read_argv(ctx: &TracePointContext, syscall: Syscall) -> u32 {
    let head = header(EventKind::ExecArgv);
    if !is_tracked(head.pid) {
        return 0;
    }
    let mut cursor = ArgvCursor {
        argv: field_u64(ctx, layout!(syscalls[syscall as usize].argv)),
        used: 0,
        complete: 0,
    };
    if cursor.argv != 0 {
        // SAFETY: the callback and its context follow the bpf_loop contract.
        unsafe {
            bpf_loop(
                MAX_ARGS,
                read_one_argument as *mut c_void,
                (&mut cursor as *mut ArgvCursor).cast::<c_void>(),
                0,
            )
        };
    }
    let Some(event) = ARGV_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let used = cursor.used as usize & (2 * ARGV_WINDOW - 1);
    // SAFETY: the scratch slot is this CPU's.
    unsafe {
        (*event).header = head;
        (*event).truncated = u32::from(cursor.complete == 0);
        (*event).argv_len = used as u32;
    }
    submit_bytes(event, core::mem::offset_of!(ExecArgvEvent, argv) + used);
    0
}

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    read_argv(&ctx, Syscall::Execve)
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    read_argv(&ctx, Syscall::Execveat)
}

// ---------------------------------------------------------------------------------------------
// File operations: arguments are kept at entry, the event is sent at exit if the call succeeded.

fn enter(ctx: &TracePointContext, syscall: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_tracked((pid_tgid >> 32) as u32) {
        return 0;
    }
    let fields = layout!(syscalls[syscall as usize]);
    let pending = PendingSyscall {
        syscall: syscall as u32,
        dirfd: if fields.dirfd == ABSENT {
            oci_attest_common::AT_FDCWD
        } else {
            field_u64(ctx, fields.dirfd) as i32
        },
        dirfd2: if fields.dirfd2 == ABSENT {
            oci_attest_common::AT_FDCWD
        } else {
            field_u64(ctx, fields.dirfd2) as i32
        },
        _reserved: 0,
        flags: if syscall == Syscall::Creat {
            CREAT_FLAGS
        } else {
            field_u64(ctx, fields.flags)
        },
        path: field_u64(ctx, fields.path),
        path2: field_u64(ctx, fields.path2),
        open_how: field_u64(ctx, fields.open_how),
    };
    if PENDING.insert(&pid_tgid, &pending, 0).is_err() {
        count_lost();
    }
    0
}

fn exit(ctx: &TracePointContext, syscall: Syscall, op: FileOp) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = PENDING.remove(&pid_tgid);
    if pending.syscall != syscall as u32 {
        return 0;
    }
    let result = field_u64(ctx, layout!(syscalls[syscall as usize].ret)) as i64;
    if result < 0 {
        return 0;
    }
    let Some(event) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the scratch slot is this CPU's; path reads are bounded to PATH_CAPACITY per slot.
    unsafe {
        (*event).header = header(EventKind::FileOp);
        (*event).op = op as u32;
        (*event).flags = if pending.open_how != 0 {
            // openat2: flags are the first member of struct open_how.
            bpf_probe_read_user(pending.open_how as *const u64).unwrap_or(0) as u32
        } else {
            pending.flags as u32
        };
        (*event).dirfd = pending.dirfd;
        (*event).dirfd2 = pending.dirfd2;
        (*event).result = result;
        // Paths are read at exit: the kernel has just copied them from these pages, so they
        // are resident, which they may not have been at entry.
        let paths = (*event).paths.as_mut_ptr();
        let path_len = read_user_path(pending.path, paths);
        (*event).path_len = path_len;
        let used = if pending.path2 != 0 {
            (*event).path2_len = read_user_path(pending.path2, paths.add(PATH_CAPACITY));
            size_of::<FileOpEvent>()
        } else {
            (*event).path2_len = 0;
            core::mem::offset_of!(FileOpEvent, paths) + (path_len as usize & (PATH_CAPACITY - 1))
        };
        submit_bytes(event, used);
    }
    0
}

/// One enter and one exit program per syscall; the names are the tracepoint names.
macro_rules! file_syscall {
    ($enter:ident, $exit:ident, $syscall:expr, $op:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            enter(&ctx, $syscall)
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit(&ctx, $syscall, $op)
        }
    };
}

file_syscall!(sys_enter_open, sys_exit_open, Syscall::Open, FileOp::Open);
file_syscall!(
    sys_enter_openat,
    sys_exit_openat,
    Syscall::Openat,
    FileOp::Open
);
file_syscall!(
    sys_enter_openat2,
    sys_exit_openat2,
    Syscall::Openat2,
    FileOp::Open
);
file_syscall!(
    sys_enter_creat,
    sys_exit_creat,
    Syscall::Creat,
    FileOp::Open
);
file_syscall!(
    sys_enter_rename,
    sys_exit_rename,
    Syscall::Rename,
    FileOp::Rename
);
file_syscall!(
    sys_enter_renameat,
    sys_exit_renameat,
    Syscall::Renameat,
    FileOp::Rename
);
file_syscall!(
    sys_enter_renameat2,
    sys_exit_renameat2,
    Syscall::Renameat2,
    FileOp::Rename
);
file_syscall!(
    sys_enter_unlink,
    sys_exit_unlink,
    Syscall::Unlink,
    FileOp::Unlink
);
file_syscall!(
    sys_enter_unlinkat,
    sys_exit_unlinkat,
    Syscall::Unlinkat,
    FileOp::Unlink
);
file_syscall!(
    sys_enter_chdir,
    sys_exit_chdir,
    Syscall::Chdir,
    FileOp::Chdir
);
file_syscall!(
    sys_enter_fchdir,
    sys_exit_fchdir,
    Syscall::Fchdir,
    FileOp::Fchdir
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
