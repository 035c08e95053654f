//! The oci-attest binary under test, and the identity its `run` gives the wrapped command.
//!
//! oci-attest runs as root in the tests (it loads eBPF) and, like a CI job started through
//! sudo, runs the command as an unprivileged user: [`TEST_USER`], made by `cargo xtask setup`.
//! Every test starts `oci-attest run` through [`run_command`]; one that needs the command to be
//! root adds `--run-as root` and says why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{ensure, Context as _};

/// The unprivileged user `cargo xtask setup` creates (with a home and subordinate id ranges);
/// the commands under test run as this user.
pub const TEST_USER: &str = "oci-attest-test";

/// A second unprivileged user `cargo xtask setup` creates, a member of the `docker` group (which
/// is root-equivalent): the docker tools' user.
pub const DOCKER_USER: &str = "oci-attest-docker";

/// A user of the tests, from the user database.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl TestUser {
    /// The user called `name`, or what to do when it is missing.
    pub fn named(name: &str) -> anyhow::Result<Self> {
        let user = nix::unistd::User::from_name(name)
            .context("cannot read the user database")?
            .with_context(|| format!("no user {name} (run `cargo xtask setup` as root)"))?;
        Ok(TestUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        })
    }

    /// The ids of its supplementary groups, from the group database (as `initgroups` and
    /// sudo find them), its primary group included.
    pub fn groups(&self) -> anyhow::Result<Vec<u32>> {
        let name = std::ffi::CString::new(self.name.as_str())?;
        let groups = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(self.gid))
            .with_context(|| format!("cannot list the groups of {}", self.name))?;
        let mut ids: Vec<u32> = groups.into_iter().map(|gid| gid.as_raw()).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Hands `path` and everything under it (not following symlinks) to this user, for inputs
    /// the command must change.
    pub fn own(&self, path: &Path) -> anyhow::Result<()> {
        let mut pending = vec![path.to_path_buf()];
        while let Some(next) = pending.pop() {
            std::os::unix::fs::lchown(&next, Some(self.uid), Some(self.gid))
                .with_context(|| format!("cannot give {} to {}", next.display(), self.name))?;
            if next.symlink_metadata()?.is_dir() {
                for entry in std::fs::read_dir(&next)? {
                    pending.push(entry?.path());
                }
            }
        }
        Ok(())
    }

    /// `program` run as this user (real and effective ids, its groups), with a clean
    /// environment holding only HOME, USER, LOGNAME and a standard PATH.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        command
    }
}

/// [`TEST_USER`], or what to do when it is missing.
pub fn test_user() -> anyhow::Result<TestUser> {
    TestUser::named(TEST_USER)
}

/// `BINARY run` as the tests start it: oci-attest as root, with `SUDO_UID`/`SUDO_GID` of the
/// test user set as sudo sets them, so the command runs as that user (no capabilities,
/// no_new_privs). Add the rest of `run`'s arguments. Only a root oci-attest can keep the
/// command away from the key and the tracer, so anything else is an `Err` (a skip outside CI).
pub fn run_command(binary: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(binary);
    command.arg("run");
    invoked_by_test_user(&mut command)?;
    Ok(command)
}

/// The environment [`run_command`] gives oci-attest, for a `run` started through a wrapper
/// (`/usr/bin/time -v oci-attest run ...`): root, the test user as sudo's invoker, the tool
/// PATH, no key passphrase.
pub fn invoked_by_test_user(command: &mut Command) -> anyhow::Result<()> {
    invoked_by(command, &test_user()?)
}

/// [`invoked_by_test_user`] for another `user`.
pub fn invoked_by(command: &mut Command, user: &TestUser) -> anyhow::Result<()> {
    crate::root()?;
    command
        .env("PATH", crate::paths::search_path())
        .env("SUDO_UID", user.uid.to_string())
        .env("SUDO_GID", user.gid.to_string())
        .env("SUDO_USER", &user.name)
        .env_remove("OCI_ATTEST_KEY_PASSPHRASE");
    Ok(())
}

/// [`run_command`] of the binary under test ([`binary`]).
pub fn run() -> anyhow::Result<Command> {
    run_command(&binary()?)
}

/// A temp dir owned by the test user, for the command to write its products into (the test,
/// as root, still puts its inputs and keys there; a key keygen writes is root's, mode 0600).
pub fn user_dir() -> anyhow::Result<tempfile::TempDir> {
    dir_of(&test_user()?)
}

/// [`user_dir`] for another `user`.
pub fn dir_of(user: &TestUser) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("oci-attest-user.")
        .tempdir()
        .context("cannot create a temp dir")?;
    user.own(dir.path())?;
    Ok(dir)
}

/// Hands `path` and everything under it to the test user ([`TestUser::own`]).
pub fn give_to_test_user(path: &Path) -> anyhow::Result<()> {
    test_user()?.own(path)
}

/// `OCI_ATTEST_BIN`, else the workspace's debug build.
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("OCI_ATTEST_BIN").map_or_else(
        || crate::paths::workspace_root().join("target/debug/oci-attest"),
        PathBuf::from,
    );
    ensure!(
        path.is_file(),
        "oci-attest binary {} not found (set OCI_ATTEST_BIN or run `cargo build -p oci-attest`)",
        path.display()
    );
    Ok(path)
}

/// A command running oci-attest with the tool PATH.
pub fn command() -> anyhow::Result<Command> {
    let mut command = Command::new(binary()?);
    command.env("PATH", crate::paths::search_path());
    Ok(command)
}

/// Runs oci-attest with `args`; returns the output whatever the exit status.
pub fn output<I, S>(args: I) -> anyhow::Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = command()?;
    command.args(args);
    command
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", crate::command::describe(&command)))
}

/// The stderr of a finished oci-attest, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `oci-attest inspect --json PATH`, parsed; fails (with stderr) unless it exits 0.
pub fn inspect_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let out = output([Path::new("inspect"), Path::new("--json"), path])?;
    ensure!(
        out.status.success(),
        "oci-attest inspect --json {} exited {}: {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "oci-attest inspect --json {} printed invalid JSON: {}",
            path.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
