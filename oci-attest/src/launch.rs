//! Launching the wrapped command: forked stopped, released on demand, signals forwarded, and
//! its whole process tree waited for.
//!
//! The tracer must know the child's pid before the child runs a single instruction of the
//! wrapped program, or its first exec and opens escape the trace. So the child is forked by hand
//! and blocks on a pipe; the parent registers the pid (in the BPF map), then releases it to exec.
//! `std::process::Command` cannot do this: its `pre_exec` runs in the child and `spawn` only
//! returns after the exec, so a hook that waits for the parent deadlocks. The child still starts
//! the way `Command` starts one: SIGPIPE back to its default action, no signal blocked.
//!
//! oci-attest is a child subreaper ([`become_subreaper`]): orphans and double-forked daemons of
//! the command are re-parented to it rather than to init, so [`wait_for_tree`] can wait until
//! every process of the tree has ended.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::exit::{failure, FailureKind};
use crate::identity::{CommandIdentity, PreparedSwitch, Switch};
use crate::observed::Termination;
use crate::program_path::resolve_program;

/// A pidfd of the child for the signal handler (-1: no child to forward to). A pidfd, not a
/// pid: once the child is reaped its pid may name another process, its pidfd never does.
static FORWARD_TO: AtomicI32 = AtomicI32::new(-1);

/// The signals forwarded to the child while it runs.
const FORWARDED: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

/// A forked child blocked before exec. Dropping it without [`StoppedChild::release`] makes the
/// child exit without running anything, and reaps it.
pub struct StoppedChild {
    pid: Pid,
    program: PathBuf,
    /// For messages: who the command runs as, and where.
    identity: String,
    working_dir: PathBuf,
    release: Option<File>,
    exec_error: File,
}

/// The released child, running the wrapped program.
pub struct RunningChild {
    pid: Pid,
}

/// Forks a child that will exec `argv` in `working_dir` as `identity`, but only once released.
///
/// The program is resolved on PATH here, before forking, so "command not found" is an error
/// of this call rather than a child that exits 127. Everything the child needs (the switch to
/// `identity`, argv, the environment) is prepared here too: between fork and exec the child
/// only makes async-signal-safe system calls.
pub fn spawn_stopped(
    argv: &[OsString],
    working_dir: &Path,
    identity: &CommandIdentity,
) -> anyhow::Result<StoppedChild> {
    let Some(name) = argv.first() else {
        bail!("no command given: put the save command after `--`");
    };
    let program = resolve_program(name)?;
    let c_program = c_string(program.as_os_str())?;
    let c_argv = argv
        .iter()
        .map(|arg| c_string(arg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let c_env = identity
        .environment()
        .into_iter()
        .map(|(name, value)| {
            let mut entry = name;
            entry.push("=");
            entry.push(value);
            c_string(&entry)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let c_working_dir = c_string(working_dir.as_os_str())?;
    let switch = identity.switch();
    let prepared = Prepared {
        working_dir: c_working_dir,
        program: c_program,
        argv: null_terminated(&c_argv),
        env: null_terminated(&c_env),
        switch: switch.prepare(),
    };

    let (release_read, release_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (error_read, error_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: between fork and exec the child only makes async-signal-safe calls (read, the
    // credential switch, close_range, chdir, sigprocmask, execve, write, _exit) on memory
    // prepared before the fork.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => {
            drop(release_write);
            drop(error_read);
            child_wait_and_exec(&release_read, &error_write, &switch, &prepared)
        }
        ForkResult::Parent { child } => Ok(StoppedChild {
            pid: child,
            program,
            identity: identity.describe(),
            working_dir: working_dir.to_path_buf(),
            release: Some(File::from(release_write)),
            exec_error: File::from(error_read),
        }),
    }
}

/// What the child reads between fork and exec.
struct Prepared {
    working_dir: CString,
    program: CString,
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
    switch: PreparedSwitch,
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The step of the child that failed, sent to the parent with its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum ChildStep {
    Switch = 1,
    CloseFds = 2,
    Chdir = 3,
    Exec = 4,
}

impl ChildStep {
    fn from_byte(byte: u8) -> Option<ChildStep> {
        [
            ChildStep::Switch,
            ChildStep::CloseFds,
            ChildStep::Chdir,
            ChildStep::Exec,
        ]
        .into_iter()
        .find(|step| *step as u8 == byte)
    }
}

/// The child side: wait for the parent's go, take on the command's identity, then exec. Never
/// returns.
fn child_wait_and_exec(
    release: &OwnedFd,
    exec_error: &OwnedFd,
    switch: &Switch,
    prepared: &Prepared,
) -> ! {
    // SAFETY: plain syscalls on valid fds and NUL-terminated strings prepared before fork.
    unsafe {
        let mut go = 0u8;
        let released = loop {
            match libc::read(release.as_raw_fd(), (&mut go as *mut u8).cast(), 1) {
                1 => break true,
                -1 if *libc::__errno_location() == libc::EINTR => continue,
                // EOF: the parent gave up (or died) before releasing us.
                _ => break false,
            }
        };
        if !released {
            libc::_exit(127);
        }
        let failed = |step: ChildStep, errno: i32| -> ! {
            let mut message = [0u8; 5];
            message[0] = step as u8;
            message[1..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(
                exec_error.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
            );
            libc::_exit(127)
        };
        if let Err(error) = switch.apply(&prepared.switch) {
            failed(ChildStep::Switch, error.errno);
        }
        // No descriptor of oci-attest (the key's were closed long ago; the BPF maps, the ring
        // buffer, the pidfd, the output) survives the exec: close-on-exec for all but 0, 1, 2.
        // The error pipe stays open until the exec succeeds.
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            failed(ChildStep::CloseFds, *libc::__errno_location());
        }
        if libc::chdir(prepared.working_dir.as_ptr()) != 0 {
            failed(ChildStep::Chdir, *libc::__errno_location());
        }
        // The Rust runtime ignores SIGPIPE, and an ignored signal stays ignored across
        // exec: without this, `yes | head -1` in the command never ends by SIGPIPE.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            prepared.program.as_ptr(),
            prepared.argv.as_ptr(),
            prepared.env.as_ptr(),
        );
        failed(ChildStep::Exec, *libc::__errno_location())
    }
}

impl StoppedChild {
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Lets the child exec. Returns once the exec succeeded (or with the reason it failed).
    /// From here on SIGINT and SIGTERM sent to oci-attest are forwarded to the child.
    pub fn release(mut self) -> anyhow::Result<RunningChild> {
        install_forwarding(self.pid)?;
        let mut release = self.release.take().context("child already released")?;
        release
            .write_all(&[1])
            .context("could not release the child process")?;
        drop(release);
        let mut message = [0u8; 5];
        let failed = read_exact_or_eof(&mut self.exec_error, &mut message)
            .context("could not learn whether the command started")?;
        let pid = self.pid;
        let program = std::mem::take(&mut self.program);
        let identity = std::mem::take(&mut self.identity);
        let working_dir = std::mem::take(&mut self.working_dir);
        std::mem::forget(self);
        if failed {
            let _ = waitpid(pid, None);
            remove_forwarding();
            let mut errno = [0u8; 4];
            errno.copy_from_slice(&message[1..]);
            let error = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            return Err(match ChildStep::from_byte(message[0]) {
                Some(ChildStep::Exec) if error.kind() == io::ErrorKind::NotFound => failure(
                    FailureKind::CommandNotFound,
                    format!("cannot execute {}: {error}", program.display()),
                ),
                Some(ChildStep::Exec) => failure(
                    FailureKind::CommandNotExecutable,
                    format!(
                        "cannot execute {} as {identity}: {error}",
                        program.display()
                    ),
                ),
                Some(ChildStep::Chdir) => anyhow::anyhow!(
                    "the command cannot enter its working directory {} as {identity}: {error} \
                     (give that user access to it, or pass -d DIR)",
                    working_dir.display()
                ),
                Some(ChildStep::Switch) => {
                    anyhow::anyhow!("cannot switch the command to {identity}: {error}")
                }
                Some(ChildStep::CloseFds) | None => anyhow::anyhow!(
                    "cannot close oci-attest's file descriptors before the command: {error}"
                ),
            });
        }
        Ok(RunningChild { pid })
    }
}

impl Drop for StoppedChild {
    fn drop(&mut self) {
        // Closing the release pipe makes the child _exit(127) without exec; reap it.
        self.release.take();
        let _ = waitpid(self.pid, None);
    }
}

impl RunningChild {
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Waits for the child to end, forwarding SIGINT/SIGTERM meanwhile. Once it is reaped the
    /// signals have their default action again: a SIGTERM during the analysis stops oci-attest.
    pub fn wait(self) -> anyhow::Result<Termination> {
        let termination = loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => break Termination::Exited(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    break Termination::Signalled(signal as i32)
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(errno) => {
                    remove_forwarding();
                    return Err(errno).context("waiting for the command failed");
                }
            }
        };
        remove_forwarding();
        Ok(termination)
    }
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> anyhow::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error()).context("cannot become a child subreaper");
    }
    Ok(())
}

/// A process of the tree still alive when the wait for the tree ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StillRunning {
    pub pid: u32,
    /// The executable (`/proc/PID/exe`), else the command name.
    pub program: String,
}

/// Reaps every remaining child (orphans of the tree are re-parented to this subreaper) until
/// none is left or `grace` has passed; then names the descendants still alive.
pub fn wait_for_tree(grace: Duration) -> anyhow::Result<Vec<StillRunning>> {
    let deadline = Instant::now() + grace;
    let mut pause = Duration::from_millis(1);
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return Ok(Vec::new()),
            Err(errno) => return Err(errno).context("waiting for the command's descendants"),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(descendants(std::process::id()));
        }
        // Short first (most trees end with their main process), then at most 50 ms late.
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The live descendants of `ancestor`, found through `/proc/PID/stat` parent links.
fn descendants(ancestor: u32) -> Vec<StillRunning> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((pid, parent_of(pid)?))
        })
        .collect();
    let mut found: Vec<u32> = Vec::new();
    let mut frontier = vec![ancestor];
    while let Some(parent) = frontier.pop() {
        for &(pid, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
            if !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found.sort_unstable();
    found
        .into_iter()
        .map(|pid| StillRunning {
            pid,
            program: program_of(pid),
        })
        .collect()
}

/// The parent pid from `/proc/PID/stat` (after the command name, which may hold spaces and
/// parentheses: the last `)` ends it).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

fn program_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|path| path.to_string_lossy().into_owned())
        .or_else(|_| std::fs::read_to_string(format!("/proc/{pid}/comm")))
        .map(|name| name.trim_end().to_owned())
        .unwrap_or_default()
}

/// Reads exactly `buffer.len()` bytes; `Ok(false)` on an immediate EOF (the exec succeeded and
/// closed the close-on-exec pipe), `Ok(true)` when the child reported an errno.
fn read_exact_or_eof(file: &mut File, buffer: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled == buffer.len())
}

extern "C" fn forward_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
    // A terminal's Ctrl-C already reached the child (same process group): the kernel marks such
    // signals SI_KERNEL. Forwarding them too would deliver the signal twice.
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    if !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL {
        return;
    }
    let pidfd = FORWARD_TO.load(Ordering::SeqCst);
    if pidfd >= 0 {
        // SAFETY: a raw syscall, async-signal-safe; a reaped child's pidfd just fails (ESRCH).
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

fn install_forwarding(child: Pid) -> anyhow::Result<()> {
    // SAFETY: pidfd_open on our own unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error()).context("pidfd_open of the command failed");
    }
    FORWARD_TO.store(i32::try_from(pidfd)?, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::SigAction(forward_signal),
        SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // SAFETY: the handler only reads an atomic and makes one syscall.
        unsafe { signal::sigaction(sig, &action) }
            .with_context(|| format!("cannot install a {sig} handler"))?;
    }
    Ok(())
}

/// Back to the default actions first, so no new handler starts; then the pidfd is closed.
fn remove_forwarding() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in FORWARDED {
        // SAFETY: restoring the default action.
        let _ = unsafe { signal::sigaction(sig, &default) };
    }
    let pidfd = FORWARD_TO.swap(-1, Ordering::SeqCst);
    if pidfd >= 0 {
        // SAFETY: the pidfd was opened by install_forwarding and is closed only here.
        unsafe { libc::close(pidfd) };
    }
}

fn c_string(value: &OsStr) -> anyhow::Result<CString> {
    CString::new(value.as_bytes())
        .with_context(|| format!("argument contains a NUL byte: {}", value.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn me() -> CommandIdentity {
        CommandIdentity::current()
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn runs_after_release_and_reports_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_stopped(
            &args(&["sh", "-c", "pwd > where; exit 7"]),
            dir.path(),
            &me(),
        )
        .unwrap();
        assert!(child.pid() > 0);
        assert!(
            !dir.path().join("where").exists(),
            "child ran before release"
        );
        let termination = child.release().unwrap().wait().unwrap();
        assert_eq!(termination, Termination::Exited(7));
        let where_ = std::fs::read_to_string(dir.path().join("where")).unwrap();
        assert_eq!(Path::new(where_.trim()), dir.path().canonicalize().unwrap());
    }

    #[test]
    fn signalled_child_reports_128_plus_signal() {
        let child =
            spawn_stopped(&args(&["sh", "-c", "kill -KILL $$"]), Path::new("/"), &me()).unwrap();
        let termination = child.release().unwrap().wait().unwrap();
        assert_eq!(termination, Termination::Signalled(9));
        assert_eq!(termination.exit_code(), 137);
    }

    #[test]
    fn unknown_command_fails_before_fork() {
        let error = spawn_stopped(&args(&["no-such-program-xyz"]), Path::new("/"), &me())
            .err()
            .unwrap();
        assert!(error
            .to_string()
            .contains("command not found: no-such-program-xyz"));
    }

    #[test]
    fn exec_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable-format");
        std::fs::write(&script, [0u8, 1, 2, 3]).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let child = spawn_stopped(&[script.clone().into_os_string()], dir.path(), &me()).unwrap();
        let error = child.release().err().unwrap();
        assert!(error.to_string().starts_with("cannot execute"), "{error}");
    }

    #[test]
    fn descendants_are_found_with_their_program() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id());
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let sleep = found
            .iter()
            .find(|process| process.pid == sleeper.id())
            .unwrap_or_else(|| panic!("{found:?}"));
        assert!(sleep.program.ends_with("/sleep"), "{sleep:?}");
        assert!(found
            .iter()
            .all(|process| process.pid != std::process::id()));
    }

    #[test]
    fn dropped_child_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_stopped(&args(&["touch", "ran"]), dir.path(), &me()).unwrap();
        drop(child);
        assert!(!dir.path().join("ran").exists());
    }
}
