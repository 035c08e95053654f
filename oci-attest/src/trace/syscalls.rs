//! The syscall table the kernel programs dispatch on: for each x86_64 syscall that can create
//! or change a file's content, how it is followed, or that it makes the trace incomplete; and
//! each one that can reach oci-attest itself (signals, ptrace, its memory, limits, scheduling
//! and descriptors, bpf(2)). Syscalls not listed can do neither (reads, stat, close, sockets
//! other than passing fds, ...).
//! A new syscall is one more row.

use oci_attest_common::{
    PathOp, SyscallClass, SyscallRule, NO_ARG, SYSCALL_TABLE_SIZE, TRACER_ALSO_UNMODELLED,
    TRACER_ANY, TRACER_PID, TRACER_PIDFD,
};

/// One row: number, name, rule.
pub struct Row {
    pub nr: u32,
    pub name: &'static str,
    pub rule: SyscallRule,
}

const fn rule(class: SyscallClass, op: u8, args: [u8; 5]) -> SyscallRule {
    SyscallRule {
        class: class as u8,
        op,
        arg_a: args[0],
        arg_b: args[1],
        arg_c: args[2],
        arg_d: args[3],
        arg_e: args[4],
        _reserved: 0,
    }
}

const N: u8 = NO_ARG;

/// Opens: `flags` is the argument register holding the open flags.
const fn open(flags: u8, implies_truncate: bool) -> SyscallRule {
    rule(
        SyscallClass::Open,
        implies_truncate as u8,
        [flags, N, N, N, N],
    )
}
const fn write_fd(fd: u8) -> SyscallRule {
    rule(SyscallClass::WriteFd, 0, [fd, N, N, N, N])
}
const fn resize_fd(fd: u8) -> SyscallRule {
    rule(SyscallClass::ResizeFd, 0, [fd, N, N, N, N])
}
/// Path operations: (dirfd, name) of each operand, then the flags argument.
const fn path_op(op: PathOp, args: [u8; 5]) -> SyscallRule {
    rule(SyscallClass::PathOp, op as u8, args)
}
/// sendmsg/sendmmsg: the message (array) is the second argument.
const fn send_msg(several: bool) -> SyscallRule {
    rule(SyscallClass::SendMsg, several as u8, [1, N, N, N, N])
}
const UNMODELLED: SyscallRule = rule(SyscallClass::Unmodelled, 0, [N; 5]);

/// Any successful call can reach the kernel programs or change the kernel they run in.
const TOUCHES_KERNEL: SyscallRule = rule(SyscallClass::Tracer, TRACER_ANY, [N; 5]);

/// Aimed at a process: the pid in argument `pid`.
const fn at_pid(pid: u8) -> SyscallRule {
    rule(SyscallClass::Tracer, TRACER_PID, [pid, N, N, N, N])
}
/// A signal to the process in argument `pid` (or a group): the signal in argument `signal`.
const fn signal_pid(pid: u8, signal: u8) -> SyscallRule {
    rule(SyscallClass::Tracer, TRACER_PID, [pid, signal, N, N, N])
}
/// Aimed at the process of the pidfd in argument `fd` (a signal in argument `signal`).
const fn at_pidfd(fd: u8, signal: u8) -> SyscallRule {
    rule(SyscallClass::Tracer, TRACER_PIDFD, [fd, signal, N, N, N])
}
/// Aimed at a process (pid in argument `pid`), and able to change the tree's own processes in
/// ways the programs do not follow.
const fn at_pid_unmodelled(pid: u8) -> SyscallRule {
    rule(
        SyscallClass::Tracer,
        TRACER_PID | TRACER_ALSO_UNMODELLED,
        [pid, N, N, N, N],
    )
}

const fn row(nr: u32, name: &'static str, rule: SyscallRule) -> Row {
    Row { nr, name, rule }
}

pub const X86_64: &[Row] = &[
    row(1, "write", write_fd(0)),
    row(2, "open", open(1, false)),
    // Nothing at the exit: their entry (the `sys_enter` program) names a file open for writing
    // that leaves a shared fd table, and flags a close_range there.
    row(3, "close", SyscallRule::IGNORED),
    row(9, "mmap", rule(SyscallClass::Mmap, 0, [4, 3, N, N, N])),
    row(16, "ioctl", rule(SyscallClass::Ioctl, 0, [0, 1, 2, N, N])),
    row(18, "pwrite64", write_fd(0)),
    row(20, "writev", write_fd(0)),
    row(33, "dup2", SyscallRule::IGNORED),
    row(40, "sendfile", write_fd(0)),
    row(46, "sendmsg", send_msg(false)),
    row(62, "kill", signal_pid(0, 1)),
    row(76, "truncate", path_op(PathOp::Truncate, [N, 0, N, N, N])),
    row(77, "ftruncate", resize_fd(0)),
    row(82, "rename", path_op(PathOp::Rename, [N, 0, N, 1, N])),
    row(85, "creat", open(N, true)),
    row(86, "link", path_op(PathOp::Link, [N, 0, N, 1, N])),
    row(87, "unlink", path_op(PathOp::Unlink, [N, 0, N, N, N])),
    row(101, "ptrace", at_pid_unmodelled(1)),
    row(129, "rt_sigqueueinfo", signal_pid(0, 1)),
    row(133, "mknod", rule(SyscallClass::Mknod, 0, [1, N, N, N, N])),
    row(142, "sched_setparam", at_pid(0)),
    row(144, "sched_setscheduler", at_pid(0)),
    row(163, "acct", UNMODELLED),
    row(167, "swapon", UNMODELLED),
    row(175, "init_module", TOUCHES_KERNEL),
    row(176, "delete_module", TOUCHES_KERNEL),
    row(200, "tkill", signal_pid(0, 1)),
    row(203, "sched_setaffinity", at_pid(0)),
    row(209, "io_submit", UNMODELLED),
    row(216, "remap_file_pages", UNMODELLED),
    row(234, "tgkill", signal_pid(0, 2)),
    row(246, "kexec_load", TOUCHES_KERNEL),
    row(256, "migrate_pages", at_pid(0)),
    row(257, "openat", open(2, false)),
    row(
        259,
        "mknodat",
        rule(SyscallClass::Mknod, 0, [2, N, N, N, N]),
    ),
    row(263, "unlinkat", path_op(PathOp::Unlink, [0, 1, N, N, 2])),
    row(264, "renameat", path_op(PathOp::Rename, [0, 1, 2, 3, N])),
    row(265, "linkat", path_op(PathOp::Link, [0, 1, 2, 3, 4])),
    row(275, "splice", write_fd(2)),
    row(279, "move_pages", at_pid(0)),
    row(285, "fallocate", resize_fd(0)),
    row(292, "dup3", SyscallRule::IGNORED),
    row(296, "pwritev", write_fd(0)),
    row(297, "rt_tgsigqueueinfo", signal_pid(0, 2)),
    row(298, "perf_event_open", at_pid(1)),
    row(302, "prlimit64", at_pid(0)),
    row(304, "open_by_handle_at", open(2, false)),
    row(307, "sendmmsg", send_msg(true)),
    row(310, "process_vm_readv", at_pid(0)),
    row(311, "process_vm_writev", at_pid_unmodelled(0)),
    row(313, "finit_module", TOUCHES_KERNEL),
    row(314, "sched_setattr", at_pid(0)),
    row(316, "renameat2", path_op(PathOp::Rename, [0, 1, 2, 3, N])),
    row(320, "kexec_file_load", TOUCHES_KERNEL),
    row(321, "bpf", TOUCHES_KERNEL),
    row(326, "copy_file_range", write_fd(2)),
    row(328, "pwritev2", write_fd(0)),
    row(424, "pidfd_send_signal", at_pidfd(0, 1)),
    row(425, "io_uring_setup", UNMODELLED),
    row(426, "io_uring_enter", UNMODELLED),
    row(427, "io_uring_register", UNMODELLED),
    row(436, "close_range", SyscallRule::IGNORED),
    // openat2's flags are in user memory: only the kernel-side emptiness test applies.
    row(437, "openat2", open(N, false)),
    row(438, "pidfd_getfd", at_pidfd(0, N)),
    row(440, "process_madvise", at_pidfd(0, N)),
];

/// The rules by syscall number, for the kernel's `RULES` array.
pub fn table() -> Vec<SyscallRule> {
    let mut table = vec![SyscallRule::IGNORED; SYSCALL_TABLE_SIZE as usize];
    for row in X86_64 {
        table[row.nr as usize] = row.rule;
    }
    table
}

/// The syscall's name, for the reasons of an incomplete trace.
pub fn name(nr: u32) -> Option<&'static str> {
    X86_64.iter().find(|row| row.nr == nr).map(|row| row.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_sorted_and_fit_the_table() {
        for pair in X86_64.windows(2) {
            assert!(
                pair[0].nr < pair[1].nr,
                "{} / {}",
                pair[0].name,
                pair[1].name
            );
        }
        assert!(X86_64.iter().all(|row| row.nr < SYSCALL_TABLE_SIZE));
        let table = table();
        assert_eq!(table[426].class, SyscallClass::Unmodelled as u8);
        assert_eq!(table[0], SyscallRule::IGNORED);
        assert_eq!(name(304), Some("open_by_handle_at"));
    }

    /// The numbers are the kernel's (libc carries the same uapi values).
    #[test]
    fn numbers_match_libc() {
        for (nr, expected) in [
            (libc::SYS_write, "write"),
            (libc::SYS_openat2, "openat2"),
            (libc::SYS_io_uring_enter, "io_uring_enter"),
            (libc::SYS_copy_file_range, "copy_file_range"),
            (libc::SYS_linkat, "linkat"),
            (libc::SYS_close, "close"),
            (libc::SYS_dup2, "dup2"),
            (libc::SYS_dup3, "dup3"),
            (libc::SYS_close_range, "close_range"),
            (libc::SYS_truncate, "truncate"),
            (libc::SYS_process_vm_writev, "process_vm_writev"),
            (libc::SYS_kill, "kill"),
            (libc::SYS_tgkill, "tgkill"),
            (libc::SYS_rt_tgsigqueueinfo, "rt_tgsigqueueinfo"),
            (libc::SYS_perf_event_open, "perf_event_open"),
            (libc::SYS_prlimit64, "prlimit64"),
            (libc::SYS_process_vm_readv, "process_vm_readv"),
            (libc::SYS_sched_setattr, "sched_setattr"),
            (libc::SYS_bpf, "bpf"),
            (libc::SYS_finit_module, "finit_module"),
            (libc::SYS_kexec_file_load, "kexec_file_load"),
            (libc::SYS_pidfd_send_signal, "pidfd_send_signal"),
            (libc::SYS_pidfd_getfd, "pidfd_getfd"),
            (libc::SYS_process_madvise, "process_madvise"),
            (libc::SYS_move_pages, "move_pages"),
        ] {
            assert_eq!(name(nr as u32), Some(expected));
        }
    }
}
