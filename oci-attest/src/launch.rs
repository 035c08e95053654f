//! Launching the wrapped command: forked stopped, released on demand, signals forwarded.
//!
//! The tracer must know the child's pid before the child runs a single instruction of the
//! wrapped program, or its first exec and opens escape the trace. So the child is forked by hand
//! and blocks on a pipe; the parent registers the pid (in the BPF map), then releases it to exec.
//! `std::process::Command` cannot do this: its `pre_exec` runs in the child and `spawn` only
//! returns after the exec, so a hook that waits for the parent deadlocks.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::observed::Termination;
use crate::program_path::resolve_program;

/// The child's pid for the signal handler (0: no child to forward to).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

/// A forked child blocked before exec. Dropping it without [`StoppedChild::release`] makes the
/// child exit without running anything, and reaps it.
pub struct StoppedChild {
    pid: Pid,
    program: PathBuf,
    release: Option<File>,
    exec_error: File,
}

/// The released child, running the wrapped program.
pub struct RunningChild {
    pid: Pid,
}

/// Forks a child that will exec `argv` in `working_dir`, but only once released.
///
/// The program is resolved on PATH here, before forking, so "command not found" is an error
/// of this call rather than a child that exits 127.
pub fn spawn_stopped(argv: &[OsString], working_dir: &Path) -> anyhow::Result<StoppedChild> {
    let Some(name) = argv.first() else {
        bail!("no command given: put the save command after `--`");
    };
    let program = resolve_program(name)?;
    let c_program = c_string(program.as_os_str())?;
    let c_argv = argv
        .iter()
        .map(|arg| c_string(arg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut c_argv_ptrs: Vec<*const libc::c_char> = c_argv.iter().map(|arg| arg.as_ptr()).collect();
    c_argv_ptrs.push(std::ptr::null());
    let c_working_dir = c_string(working_dir.as_os_str())?;

    let (release_read, release_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (error_read, error_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: between fork and exec the child only makes async-signal-safe calls (close, read,
    // chdir, sigprocmask, execv, write, _exit) on memory prepared before the fork.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => {
            drop(release_write);
            drop(error_read);
            child_wait_and_exec(
                &release_read,
                &error_write,
                &c_working_dir,
                &c_program,
                &c_argv_ptrs,
            )
        }
        ForkResult::Parent { child } => Ok(StoppedChild {
            pid: child,
            program,
            release: Some(File::from(release_write)),
            exec_error: File::from(error_read),
        }),
    }
}

/// The child side: wait for the parent's go, then exec. Never returns.
fn child_wait_and_exec(
    release: &OwnedFd,
    exec_error: &OwnedFd,
    working_dir: &CString,
    program: &CString,
    argv: &[*const libc::c_char],
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
        if libc::chdir(working_dir.as_ptr()) == 0 {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execv(program.as_ptr(), argv.as_ptr());
        }
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(exec_error.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
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
        let mut errno = [0u8; 4];
        let failed = read_exact_or_eof(&mut self.exec_error, &mut errno)
            .context("could not learn whether the command started")?;
        let pid = self.pid;
        let program = std::mem::take(&mut self.program);
        std::mem::forget(self);
        if failed {
            let _ = waitpid(pid, None);
            FORWARD_TO.store(0, Ordering::SeqCst);
            let error = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            bail!("cannot execute {}: {error}", program.display());
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

    /// Waits for the child to end, forwarding SIGINT/SIGTERM meanwhile.
    pub fn wait(self) -> anyhow::Result<Termination> {
        let termination = loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => break Termination::Exited(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    break Termination::Signalled(signal as i32)
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(errno) => return Err(errno).context("waiting for the command failed"),
            }
        };
        FORWARD_TO.store(0, Ordering::SeqCst);
        Ok(termination)
    }
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
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

fn install_forwarding(child: Pid) -> anyhow::Result<()> {
    FORWARD_TO.store(child.as_raw(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::SigAction(forward_signal),
        SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only reads an atomic and calls kill.
        unsafe { signal::sigaction(sig, &action) }
            .with_context(|| format!("cannot install a {sig} handler"))?;
    }
    Ok(())
}

fn c_string(value: &OsStr) -> anyhow::Result<CString> {
    CString::new(value.as_bytes())
        .with_context(|| format!("argument contains a NUL byte: {}", value.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn runs_after_release_and_reports_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_stopped(&args(&["sh", "-c", "pwd > where; exit 7"]), dir.path()).unwrap();
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
        let child = spawn_stopped(&args(&["sh", "-c", "kill -KILL $$"]), Path::new("/")).unwrap();
        let termination = child.release().unwrap().wait().unwrap();
        assert_eq!(termination, Termination::Signalled(9));
        assert_eq!(termination.exit_code(), 137);
    }

    #[test]
    fn unknown_command_fails_before_fork() {
        let error = spawn_stopped(&args(&["no-such-program-xyz"]), Path::new("/"))
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
        let child = spawn_stopped(&[script.clone().into_os_string()], dir.path()).unwrap();
        let error = child.release().err().unwrap();
        assert!(error.to_string().starts_with("cannot execute"), "{error}");
    }

    #[test]
    fn dropped_child_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_stopped(&args(&["touch", "ran"]), dir.path()).unwrap();
        drop(child);
        assert!(!dir.path().join("ran").exists());
    }
}
