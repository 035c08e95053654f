//! Attacks on the trace: a scenario prepares a working directory, runs the attacker helper
//! (`tests/attackers/attacker.c`, compiled here with gcc) under the real
//! `oci-attest run --trace ebpf --unsigned`, and returns the decoded statement. The checks
//! compare what the statement claims with what is really on disk, read independently.
//!
//! A trace may see through an attack (the true product, at a path that names it now) or say
//! that it could not (exit 3, with a reason in the command-run predicate's
//! `summary.incomplete`); it may never sign the attacker's story.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::command::{describe, sha256sum};

const ATTACKER_SOURCE: &str = include_str!("../attackers/attacker.c");

pub const COMMAND_RUN_TYPE: &str = "https://aflock.ai/attestations/command-run/v0.1";
pub const PRODUCT_TYPE: &str = "https://aflock.ai/attestations/product/v0.3";

/// Exit codes of the attacker itself when a step failed: the attack did not happen.
const ATTACK_FAILED: [i32; 2] = [98, 99];

/// Exit code of `oci-attest run` for an incomplete trace.
pub const INCOMPLETE_EXIT: i32 = 3;

/// Placeholder in scenario arguments for the absolute, canonical working directory.
pub const WORK: &str = "{work}";
/// Placeholder for the absolute path of the attacker binary.
pub const ATTACKER: &str = "{attacker}";
/// Placeholder for the absolute path of the signing key of a [`Scenario::signed`] run.
pub const KEY: &str = "{key}";

/// How a [`Scenario::privileged_program`] copy of the attacker raises its privileges.
#[derive(Clone, Copy, Debug)]
pub enum Privilege {
    /// Owned by root, mode 04755.
    SetuidRoot,
    /// File capabilities (`setcap` text, e.g. `cap_dac_read_search+ep`).
    FileCapabilities(&'static str),
}

/// The attacker binary, compiled once per source version into the workspace's target dir.
pub fn attacker() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| compile_attacker().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn compile_attacker() -> anyhow::Result<PathBuf> {
    let version = hex(&Sha256::digest(ATTACKER_SOURCE.as_bytes()))[..16].to_owned();
    let dir = crate::paths::workspace_root()
        .join("target/attacker")
        .join(version);
    let binary = dir.join("attacker");
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let source = dir.join("attacker.c");
    std::fs::write(&source, ATTACKER_SOURCE)
        .with_context(|| format!("cannot write {}", source.display()))?;
    // Several test binaries may compile at once: each into its own name, renamed into place.
    let partial = dir.join(format!("attacker.{}", std::process::id()));
    crate::command::run(
        Command::new("gcc")
            .args(["-O1", "-Wall", "-Werror", "-o"])
            .arg(&partial)
            .arg(&source)
            .arg("-lpthread"),
    )
    .context("cannot compile the attacker helper (gcc and the kernel uapi headers are needed)")?;
    std::fs::rename(&partial, &binary)
        .with_context(|| format!("cannot move {} into place", partial.display()))?;
    Ok(binary)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What the attacks need: root (eBPF, chroot, mounts, leases) and the compiled attacker.
pub fn environment() -> anyhow::Result<PathBuf> {
    ensure!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "the trace attacks need root (eBPF, chroot, mount namespaces, file leases)"
    );
    attacker()
}

/// One attack: the working directory it starts from, the attacker's steps and extra options.
pub struct Scenario {
    binary: PathBuf,
    attacker: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
    dirs: Vec<PathBuf>,
    /// Copies of the attacker binary (programs to exec or replace).
    programs: Vec<PathBuf>,
    /// Copies of the attacker binary that raise the privileges of whoever runs them.
    privileged: Vec<(PathBuf, Privilege)>,
    /// Signed with a key of root's (mode 0600) beside the working directory, not `--unsigned`.
    signed: bool,
    /// (fd number, file): opened read-write by the test and inherited through oci-attest.
    inherited: Option<(i32, PathBuf)>,
    steps: Vec<OsString>,
    options: Vec<OsString>,
    /// Why the command must run as root (`--run-as root`), if it must; else it runs as the
    /// test user, as every command should.
    as_root: Option<&'static str>,
    /// Attacker command lines run outside the traced tree, started before oci-attest (each
    /// after the previous one's ready file, if it names one, exists) and killed after it.
    outsiders: Vec<(Vec<OsString>, Option<String>)>,
}

impl Scenario {
    /// `steps` are the attacker's command line (`STEP ARGS... + STEP ARGS...`); [`WORK`] and
    /// [`ATTACKER`] in them are replaced.
    pub fn new<S: AsRef<OsStr>>(binary: &Path, steps: &[S]) -> anyhow::Result<Scenario> {
        Ok(Scenario {
            binary: binary.to_path_buf(),
            attacker: environment()?,
            files: Vec::new(),
            dirs: Vec::new(),
            programs: Vec::new(),
            privileged: Vec::new(),
            signed: false,
            inherited: None,
            steps: steps.iter().map(|step| step.as_ref().to_owned()).collect(),
            options: Vec::new(),
            as_root: None,
            outsiders: Vec::new(),
        })
    }

    /// A file in the working directory before the command runs (parents created).
    pub fn file(mut self, path: impl AsRef<Path>, content: impl AsRef<[u8]>) -> Self {
        self.files
            .push((path.as_ref().to_path_buf(), content.as_ref().to_vec()));
        self
    }

    pub fn dir(mut self, path: impl AsRef<Path>) -> Self {
        self.dirs.push(path.as_ref().to_path_buf());
        self
    }

    /// A copy of the attacker binary at `path` in the working directory.
    pub fn program(mut self, path: impl AsRef<Path>) -> Self {
        self.programs.push(path.as_ref().to_path_buf());
        self
    }

    /// A copy of the attacker binary at `path` in the working directory that raises the
    /// privileges of whoever executes it (`how`).
    pub fn privileged_program(mut self, path: impl AsRef<Path>, how: Privilege) -> Self {
        self.privileged.push((path.as_ref().to_path_buf(), how));
        self
    }

    /// Signs the statement with a new key of root's (mode 0600, in root's directory beside the
    /// working directory; [`KEY`] in the steps names it) instead of `--unsigned`.
    pub fn signed(mut self) -> Self {
        self.signed = true;
        self
    }

    /// `path` (a file of the working directory) opened read-write by the test and passed down
    /// to the command as fd `fd` (0, 1 or 2: oci-attest closes the others before the command
    /// starts): the traced tree never opens it.
    pub fn inherit(mut self, fd: i32, path: impl AsRef<Path>) -> Self {
        self.inherited = Some((fd, path.as_ref().to_path_buf()));
        self
    }

    /// Runs the command as root (`--run-as root`) because of `why`: the attack needs a
    /// privilege (chroot, mounts, file handles) the test user does not have. The trace must see
    /// through it all the same.
    pub fn as_root(mut self, why: &'static str) -> Self {
        self.as_root = Some(why);
        self
    }

    /// An attacker process outside the traced tree (`steps` as for the tree; [`WORK`] is
    /// replaced), started before oci-attest and killed once it has exited. When `ready` is
    /// given (a path, [`WORK`] replaced), oci-attest starts only once that file exists.
    pub fn outsider<S: AsRef<OsStr>>(mut self, steps: &[S], ready: Option<&str>) -> Self {
        self.outsiders.push((
            steps.iter().map(|step| step.as_ref().to_owned()).collect(),
            ready.map(str::to_owned),
        ));
        self
    }

    /// An extra `oci-attest run` option.
    pub fn option(mut self, option: impl AsRef<OsStr>) -> Self {
        self.options.push(option.as_ref().to_owned());
        self
    }

    /// Runs the attack; on exit 3, runs it again in a fresh directory with
    /// `--allow-incomplete-trace` to read the reasons from the statement.
    pub fn attest(&self) -> anyhow::Result<Verdict> {
        let first = self.run(false)?;
        if first.exit_code() == Some(INCOMPLETE_EXIT) {
            let again = self.run(true)?;
            ensure!(
                again.exit_code() == Some(0),
                "exit 3 without --allow-incomplete-trace, but {} with it: {}",
                again.status,
                again.stderr
            );
            // Captured by libtest; shown with --nocapture (which routes end incomplete, and why).
            eprintln!(
                "incomplete: {:?}",
                again.statement.as_ref().map(Statement::incomplete)
            );
            return Ok(Verdict::Incomplete {
                first_stderr: first.stderr,
                run: again,
            });
        }
        ensure!(
            first.exit_code() == Some(0),
            "oci-attest run exited {}: {}",
            first.status,
            first.stderr
        );
        Ok(Verdict::Complete(first))
    }

    /// One run of the attack in a fresh directory; fails only when oci-attest could not be run
    /// or the attack itself failed.
    pub fn run(&self, allow_incomplete: bool) -> anyhow::Result<Run> {
        let dir = tempfile::Builder::new()
            .prefix("oci-attest-attack-")
            .tempdir()
            .context("cannot create a temp dir")?;
        // The command's user may pass through to its working directory, nothing more.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let work = dir.path().canonicalize()?.join("work");
        self.prepare(&work)?;
        let outfile = dir.path().join("att.json");
        let key = dir.path().canonicalize()?.join("key.pem");
        let mut command = crate::oci_attest::run_command(&self.binary)?;
        command.args(["--trace", "ebpf"]);
        if self.signed {
            crate::command::run(
                Command::new(&self.binary)
                    .args(["keygen", "--out"])
                    .arg(&key),
            )?;
            command.arg("-k").arg(&key);
        } else {
            command.arg("--unsigned");
        }
        command.arg("-o").arg(&outfile).args(&self.options);
        if self.as_root.is_some() {
            command.arg("--run-as").arg("root");
        }
        if allow_incomplete {
            command.arg("--allow-incomplete-trace");
        }
        command
            .arg("--")
            .arg(&self.attacker)
            .args(
                self.steps
                    .iter()
                    .map(|step| replace_key(&self.substitute(step, &work), &key)),
            )
            .current_dir(&work)
            .stdin(Stdio::null());
        let inherited = match &self.inherited {
            Some((fd, path)) => {
                let file = File::options()
                    .read(true)
                    .write(true)
                    .open(work.join(path))
                    .with_context(|| format!("cannot open {} to pass down", path.display()))?;
                let (source, target) = (file.as_raw_fd(), *fd);
                // SAFETY: dup2 and fcntl are async-signal-safe. dup2 clears close-on-exec on
                // `target`, except when the file already has that number (then it does
                // nothing): clear the flag there.
                unsafe {
                    command.pre_exec(move || {
                        let done = if source == target {
                            libc::fcntl(target, libc::F_SETFD, 0)
                        } else {
                            libc::dup2(source, target)
                        };
                        if done < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                Some(file)
            }
            None => None,
        };
        let outsiders = self.start_outsiders(&work)?;
        // Files, not pipes: a process the command leaves behind cannot hold the run open, and
        // the exit is collected with wait4 for its resource usage.
        let stderr_path = dir.path().join("stderr");
        let child = command
            .stdout(File::create(dir.path().join("stdout"))?)
            .stderr(File::create(&stderr_path)?)
            .spawn()
            .with_context(|| format!("cannot start `{}`", describe(&command)))?;
        let oci_attest_pid = child.id();
        let (status, peak_rss_kib) = wait_with_peak_rss(oci_attest_pid)?;
        drop(inherited);
        drop(outsiders);
        let stderr = String::from_utf8_lossy(&std::fs::read(&stderr_path)?).into_owned();
        if let Some(code) = status.code() {
            ensure!(
                !ATTACK_FAILED.contains(&code),
                "the attack itself failed (exit {code}), so it proves nothing: {stderr}"
            );
        }
        let statement = match std::fs::read(&outfile) {
            Ok(bytes) => Some(
                Statement::from_output(&bytes)
                    .with_context(|| format!("{} is no statement: {stderr}", outfile.display()))?,
            ),
            Err(_) => None,
        };
        Ok(Run {
            work,
            status,
            stderr,
            statement,
            oci_attest_pid,
            peak_rss_kib,
            _dir: dir,
        })
    }

    fn start_outsiders(&self, work: &Path) -> anyhow::Result<Vec<Outsider>> {
        let mut started = Vec::new();
        for (steps, ready) in &self.outsiders {
            let child = Command::new(&self.attacker)
                .args(steps.iter().map(|step| self.substitute(step, work)))
                .current_dir(work)
                .stdin(Stdio::null())
                .spawn()
                .context("cannot start an outsider")?;
            started.push(Outsider(child));
            if let Some(ready) = ready {
                let ready = self.substitute(OsStr::new(ready), work);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !Path::new(&ready).exists() {
                    ensure!(
                        std::time::Instant::now() < deadline,
                        "the outsider never created {}",
                        Path::new(&ready).display()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        Ok(started)
    }

    fn substitute(&self, step: &OsStr, work: &Path) -> OsString {
        let bytes = step.as_bytes();
        let replaced = replace(bytes, WORK.as_bytes(), work.as_os_str().as_bytes());
        OsString::from_vec(replace(
            &replaced,
            ATTACKER.as_bytes(),
            self.attacker.as_os_str().as_bytes(),
        ))
    }

    fn prepare(&self, work: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(work)?;
        for dir in &self.dirs {
            std::fs::create_dir_all(work.join(dir))?;
        }
        for (path, content) in &self.files {
            let path = work.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, content)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        for program in self
            .programs
            .iter()
            .chain(self.privileged.iter().map(|(p, _)| p))
        {
            std::fs::copy(&self.attacker, work.join(program))
                .with_context(|| format!("cannot copy the attacker to {}", program.display()))?;
        }
        // The working directory is the command's; outside it (the temp dir holding it, the
        // statement) is root's.
        crate::oci_attest::give_to_test_user(work)?;
        for (program, how) in &self.privileged {
            let path = work.join(program);
            std::os::unix::fs::chown(&path, Some(0), Some(0))?;
            match how {
                Privilege::SetuidRoot => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4755))?
                }
                Privilege::FileCapabilities(capabilities) => {
                    crate::command::run(Command::new("setcap").arg(capabilities).arg(&path))
                        .context("setcap (cargo xtask setup installs libcap2-bin)")?;
                }
            }
        }
        Ok(())
    }
}

/// An attacker process outside the traced tree; killed and reaped when dropped.
struct Outsider(std::process::Child);

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reaps `pid` (a child of this process); its exit status and the peak resident set size in
/// KiB of it or any of its reaped descendants (`ru_maxrss` of wait4).
fn wait_with_peak_rss(pid: u32) -> anyhow::Result<(ExitStatus, u64)> {
    use std::os::unix::process::ExitStatusExt as _;
    let pid = libc::pid_t::try_from(pid)?;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("wait4 of oci-attest");
        }
    }
    Ok((
        ExitStatus::from_raw(status),
        u64::try_from(usage.ru_maxrss).unwrap_or_default(),
    ))
}

fn replace_key(step: &OsStr, key: &Path) -> OsString {
    OsString::from_vec(replace(
        step.as_bytes(),
        KEY.as_bytes(),
        key.as_os_str().as_bytes(),
    ))
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest
        .windows(needle.len())
        .position(|window| window == needle)
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// One finished `oci-attest run`, with the directory it ran in (kept until dropped).
pub struct Run {
    /// The canonical working directory the command ran in.
    pub work: PathBuf,
    pub status: ExitStatus,
    pub stderr: String,
    /// The written statement, if any.
    pub statement: Option<Statement>,
    pub oci_attest_pid: u32,
    /// Peak RSS (KiB) of oci-attest, or of a process of the traced tree if one was larger.
    pub peak_rss_kib: u64,
    _dir: tempfile::TempDir,
}

impl Run {
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn statement(&self) -> &Statement {
        self.statement
            .as_ref()
            .unwrap_or_else(|| panic!("no statement written: {}", self.stderr))
    }
}

/// How the trace answered an attack.
pub enum Verdict {
    /// Exit 0 without `--allow-incomplete-trace`.
    Complete(Run),
    /// Exit 3; `run` is the second run, with `--allow-incomplete-trace`.
    Incomplete { first_stderr: String, run: Run },
}

impl Verdict {
    pub fn run(&self) -> &Run {
        match self {
            Verdict::Complete(run) | Verdict::Incomplete { run, .. } => run,
        }
    }

    pub fn statement(&self) -> &Statement {
        self.run().statement()
    }

    /// Everything a failed check should show; for an incomplete trace, the first run's error
    /// too (the attack runs twice, and the second run may not meet what stopped the first).
    pub fn describe(&self) -> String {
        let statement = self.statement();
        format!(
            "verdict: {}\nproducts: {:#?}\nincomplete: {:#?}\nprocesses: {}\nstderr: {}",
            match self {
                Verdict::Complete(_) => "complete (exit 0)".to_owned(),
                Verdict::Incomplete { first_stderr, .. } => format!(
                    "incomplete (exit 3); the first run said: {}",
                    first_stderr
                        .lines()
                        .filter(|line| line.contains("error"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            },
            statement.products(),
            statement.incomplete(),
            serde_json::to_string_pretty(&statement.command_run()["processes"]).unwrap_or_default(),
            self.run().stderr
        )
    }

    /// Panics unless the trace is incomplete for one of `reasons`, both in the first run's
    /// error and in the statement.
    fn assert_incomplete_for(&self, reasons: &[&str]) {
        let Verdict::Incomplete { first_stderr, .. } = self else {
            return;
        };
        let listed: Vec<String> = self
            .statement()
            .incomplete()
            .into_iter()
            .map(|(reason, _)| reason)
            .collect();
        assert!(
            listed
                .iter()
                .any(|reason| reasons.contains(&reason.as_str())),
            "exit 3, but summary.incomplete gives none of the expected reasons {reasons:?}\n{}",
            self.describe()
        );
        assert!(
            reasons.iter().any(|reason| first_stderr.contains(reason)),
            "exit 3 without naming any of {reasons:?}: {first_stderr}"
        );
    }

    /// When the trace is incomplete for `reason`, its detail mentions `needle` (e.g. the
    /// syscall it did not model).
    pub fn assert_detail_mentions(&self, reason: &str, needle: &str) {
        if let Verdict::Incomplete { .. } = self {
            let details: Vec<String> = self
                .statement()
                .incomplete()
                .into_iter()
                .filter(|(listed, _)| listed == reason)
                .map(|(_, detail)| detail)
                .collect();
            assert!(
                details.is_empty() || details.iter().any(|detail| detail.contains(needle)),
                "{reason} details {details:?} do not mention {needle}"
            );
        }
    }

    /// The true product or an honest gap: `path` (relative to the working directory) really
    /// holds `content` now; the statement either lists it with its real digest, or the trace is
    /// incomplete for one of `reasons`. Either way no path of `decoys` is a product, and a listed
    /// `path` carries the real digest.
    pub fn assert_product(&self, path: &str, content: &[u8], decoys: &[&str], reasons: &[&str]) {
        let run = self.run();
        let on_disk = run.work.join(path);
        assert_eq!(
            std::fs::read(&on_disk).unwrap_or_default(),
            content,
            "the attack did not leave {path} as expected"
        );
        let digest = sha256sum(&on_disk).expect("sha256sum of the product");
        self.assert_product_digest(path, &digest, decoys, reasons);
    }

    /// [`Verdict::assert_product`] for a product whose path cannot be opened directly (longer
    /// than PATH_MAX): its independently computed `digest` is given.
    pub fn assert_product_digest(
        &self,
        path: &str,
        digest: &str,
        decoys: &[&str],
        reasons: &[&str],
    ) {
        let products = self.statement().products();
        for decoy in decoys {
            assert!(
                !products.contains_key(*decoy),
                "decoy {decoy} reported as a product\n{}",
                self.describe()
            );
        }
        match products.get(path) {
            Some(listed) => assert_eq!(
                listed,
                digest,
                "{path} reported with a digest that is not its content\n{}",
                self.describe()
            ),
            None => assert!(
                matches!(self, Verdict::Incomplete { .. }),
                "{path} (written by the command) is not a product, and the trace claims to be \
                 complete\n{}",
                self.describe()
            ),
        }
        self.assert_incomplete_for(reasons);
    }

    /// The run must have been refused (exit 3) for one of `reasons`, named on stderr and in
    /// the statement signed with `--allow-incomplete-trace`.
    pub fn assert_refused(&self, reasons: &[&str]) {
        assert!(
            matches!(self, Verdict::Incomplete { .. }),
            "the run must exit 3 for one of {reasons:?}\n{}",
            self.describe()
        );
        self.assert_incomplete_for(reasons);
    }

    /// The run must have completed (exit 0) with a complete trace.
    pub fn assert_complete(&self) {
        assert!(
            matches!(self, Verdict::Complete(_)),
            "the trace must be complete\n{}",
            self.describe()
        );
    }

    /// The details of the statement's `reason` entries.
    pub fn details(&self, reason: &str) -> Vec<String> {
        self.statement()
            .incomplete()
            .into_iter()
            .filter(|(listed, _)| listed == reason)
            .map(|(_, detail)| detail)
            .collect()
    }

    /// `path` was not changed by the command and must not be a product; the trace is complete.
    pub fn assert_not_product(&self, path: &str) {
        assert!(
            matches!(self, Verdict::Complete(_)),
            "nothing here should make the trace incomplete\n{}",
            self.describe()
        );
        assert!(
            !self.statement().products().contains_key(path),
            "{path} was not changed, but is reported as a product\n{}",
            self.describe()
        );
    }

    /// The argv the kernel gave to the program that wrote `seen_file` (one argument per line)
    /// is what the statement records for every process that ran it, or the trace is incomplete
    /// for one of `reasons`.
    pub fn assert_argv(&self, seen_file: &str, reasons: &[&str]) {
        let seen = std::fs::read_to_string(self.run().work.join(seen_file))
            .expect("the exec'd program recorded its argv");
        let truth = seen.lines().collect::<Vec<_>>().join(" ");
        let recorded: Vec<String> = self
            .statement()
            .cmdlines()
            .into_iter()
            // The recorder's own execs (`PROG record-argv ...`), not those that merely pass
            // `record-argv` on to it (the attacker's exec step).
            .filter(|cmdline| cmdline.split(' ').nth(1) == Some("record-argv"))
            .collect();
        if let Verdict::Incomplete { .. } = self {
            self.assert_incomplete_for(reasons);
            return;
        }
        assert!(
            !recorded.is_empty(),
            "the exec of the recorder is missing\n{}",
            self.describe()
        );
        for cmdline in recorded {
            assert!(
                cmdline == truth,
                "recorded argv {:?} is not what the kernel executed {:?}\n{}",
                shorten(&cmdline),
                shorten(&truth),
                self.describe()
            );
        }
    }
}

fn shorten(text: &str) -> String {
    if text.len() <= 300 {
        return text.to_owned();
    }
    let cut = (0..=300)
        .rev()
        .find(|at| text.is_char_boundary(*at))
        .unwrap_or(0);
    format!("{}... ({} bytes)", &text[..cut], text.len())
}

/// A decoded in-toto statement.
pub struct Statement(pub Value);

impl Statement {
    /// The statement `run -o` wrote: bare (`--unsigned`) or the payload of a DSSE envelope.
    pub fn from_output(bytes: &[u8]) -> anyhow::Result<Statement> {
        use base64::Engine as _;
        let document: Value = serde_json::from_slice(bytes).context("not JSON")?;
        let Some(payload) = document["payload"].as_str() else {
            return Ok(Statement(document));
        };
        let payload = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .context("the envelope's payload is not base64")?;
        Ok(Statement(
            serde_json::from_slice(&payload).context("the envelope's payload is not JSON")?,
        ))
    }

    fn attestation(&self, type_uri: &str) -> &Value {
        self.0["predicate"]["attestations"]
            .as_array()
            .and_then(|all| all.iter().find(|entry| entry["type"] == type_uri))
            .map_or(&Value::Null, |entry| &entry["attestation"])
    }

    pub fn command_run(&self) -> &Value {
        self.attestation(COMMAND_RUN_TYPE)
    }

    /// Product path (as recorded) → sha256 hex.
    pub fn products(&self) -> BTreeMap<String, String> {
        self.attestation(PRODUCT_TYPE)["leaves"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|leaf| {
                (
                    leaf["path"].as_str().unwrap_or_default().to_owned(),
                    leaf["fileDigest"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// `summary.incomplete` as (reason, detail) pairs.
    pub fn incomplete(&self) -> Vec<(String, String)> {
        self.command_run()["summary"]["incomplete"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                (
                    entry["reason"].as_str().unwrap_or_default().to_owned(),
                    entry["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub fn processes(&self) -> &[Value] {
        self.command_run()["processes"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    /// Every `cmdline` recorded anywhere under a process (also per-exec lists, if any).
    pub fn cmdlines(&self) -> Vec<String> {
        self.processes().iter().flat_map(cmdlines_in).collect()
    }

    /// (`programdigest` sha256 or null) of every record, at any depth under a process, whose
    /// `program` is `program`.
    pub fn program_digests(&self, program: &str) -> Vec<Value> {
        self.processes()
            .iter()
            .flat_map(objects_in)
            .filter(|record| record.get("program").and_then(Value::as_str) == Some(program))
            .map(|record| {
                record
                    .get("programdigest")
                    .map_or(Value::Null, |digest| digest["sha256"].clone())
            })
            .collect()
    }

    /// Every `cmdline` recorded for process `pid`.
    pub fn cmdlines_of(&self, pid: u64) -> Vec<String> {
        self.processes()
            .iter()
            .filter(|process| process["processid"] == pid)
            .flat_map(cmdlines_in)
            .collect()
    }
}

/// `value` and every object nested in it, depth first.
fn objects_in(value: &Value) -> Vec<&serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => std::iter::once(map)
            .chain(map.values().flat_map(objects_in))
            .collect(),
        Value::Array(items) => items.iter().flat_map(objects_in).collect(),
        _ => Vec::new(),
    }
}

/// Every `cmdline` string in `value`, at any depth (also per-exec lists, if any).
fn cmdlines_in(value: &Value) -> Vec<String> {
    objects_in(value)
        .into_iter()
        .filter_map(|object| object.get("cmdline")?.as_str().map(str::to_owned))
        .collect()
}

/// The bytes a recorded path stands for, under the trace's escaping of names that are not
/// printable UTF-8 (`\xNN` for such a byte, `\\` for a backslash); `None` if malformed.
pub fn unescape_path(recorded: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut bytes = recorded.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'x' => {
                let digits = [bytes.next()?, bytes.next()?];
                let text = std::str::from_utf8(&digits).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// SHA-256 of a file reached by walking `components` from `base` one directory at a time
/// (for paths longer than PATH_MAX, which cannot be opened whole).
pub fn sha256_at_depth(base: &Path, components: &[&OsStr]) -> anyhow::Result<String> {
    let Some((name, dirs)) = components.split_last() else {
        bail!("no path components");
    };
    let mut dir = File::open(base).with_context(|| format!("cannot open {}", base.display()))?;
    for component in dirs {
        dir = open_at(&dir, component, libc::O_RDONLY | libc::O_DIRECTORY)?;
    }
    let mut file = open_at(&dir, name, libc::O_RDONLY)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn open_at(dir: &File, name: &OsStr, flags: i32) -> anyhow::Result<File> {
    use std::os::fd::FromRawFd as _;
    let name = std::ffi::CString::new(name.as_bytes())?;
    // SAFETY: a valid dirfd and NUL-terminated name; the returned fd is owned by the File.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("openat {}", name.to_string_lossy()));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_paths_decode_to_their_bytes() {
        assert_eq!(
            unescape_path(r"a\xffb\\c\x0a"),
            Some(b"a\xffb\\c\n".to_vec())
        );
        assert_eq!(unescape_path(r"bad\q"), None);
        assert_eq!(unescape_path(r"short\x4"), None);
    }

    #[test]
    fn placeholders_are_replaced_everywhere() {
        assert_eq!(replace(b"{w}/a:{w}", b"{w}", b"/t"), b"/t/a:/t");
        assert_eq!(replace(b"none", b"{w}", b"/t"), b"none");
    }
}
