//! A rootless containers-storage of a test user (podman, buildah, skopeo as that user): the vfs
//! driver, its own image store and runtime directory, made per test, so that parallel tests
//! share neither images, nor a user namespace, nor podman's pause process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::command::run;
use crate::oci_attest::TestUser;
use crate::storage::remove_tree;

/// How an image gets into the user's storage before the attested step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    /// `podman load`: creates the user namespace and leaves podman's pause process holding it,
    /// so later podman commands join it (with no setuid helper).
    Podman,
    /// `skopeo copy docker-archive:… containers-storage:…`: a user namespace of its own for
    /// the copy, gone when it ends.
    Skopeo,
}

/// The storage, under a temp dir owned by the user; dropping it stops the pause process podman
/// left there (by pid) and removes the tree.
pub struct UserStorage {
    dir: tempfile::TempDir,
    user: TestUser,
}

impl UserStorage {
    pub fn create(user: &TestUser) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("oci-attest-rootless.")
            .tempdir()
            .context("cannot create a temp dir")?;
        let root = dir.path();
        for sub in ["graph", "runtime"] {
            std::fs::create_dir(root.join(sub))
                .with_context(|| format!("cannot create {}", root.join(sub).display()))?;
        }
        // XDG_RUNTIME_DIR must be private to its user.
        std::fs::set_permissions(
            root.join("runtime"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        // Rootless, containers/storage ignores `graphroot` for `rootless_storage_path` (else a
        // path under HOME, which `run` sets to the user's real home).
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{graph}\"\nrootless_storage_path = \"{graph}\"\n\
             runroot = \"{runtime}/containers\"\n",
            graph = root.join("graph").display(),
            runtime = root.join("runtime").display(),
        );
        // No systemd here: cgroupfs, and events in a file.
        let containers = format!(
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             events_logfile_path = \"{}\"\n",
            root.join("events.log").display()
        );
        std::fs::write(root.join("storage.conf"), storage)?;
        std::fs::write(root.join("containers.conf"), containers)?;
        user.own(root)?;
        Ok(UserStorage {
            dir,
            user: user.clone(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the user's tools need to find this storage (and not root's, which `cargo xtask
    /// test` names in the tests' environment).
    pub fn env(&self) -> [(&'static str, OsString); 3] {
        [
            ("CONTAINERS_STORAGE_CONF", self.path("storage.conf").into()),
            ("CONTAINERS_CONF", self.path("containers.conf").into()),
            ("XDG_RUNTIME_DIR", self.path("runtime").into()),
        ]
    }

    /// `program` run as the user ([`TestUser::command`]) on this storage, outside `oci-attest
    /// run`: the set-up an earlier CI step would do.
    pub fn as_user(&self, program: &str) -> Command {
        let mut command = self.user.command(program);
        command.envs(self.env()).current_dir(self.dir.path());
        command
    }

    /// Loads the docker-archive `archive` (tagged `image`) into the storage as the user.
    pub fn load(&self, archive: &Path, image: &str, loader: Loader) -> anyhow::Result<()> {
        // The fixtures may sit where the user cannot look (a checkout under /root).
        let input = self.path("input.tar");
        std::fs::copy(archive, &input)
            .with_context(|| format!("cannot copy {}", archive.display()))?;
        self.user.own(&input)?;
        match loader {
            Loader::Podman => run(self
                .as_user("podman")
                .args(["load", "-q", "-i"])
                .arg(&input))?,
            Loader::Skopeo => run(self
                .as_user("skopeo")
                .args(["copy", "-q"])
                .arg(format!("docker-archive:{}", input.display()))
                .arg(format!("containers-storage:{image}")))?,
        };
        Ok(())
    }

    /// podman's pause process for this storage's runtime dir, if one runs (checked to be the
    /// user's, so a recycled pid is left alone).
    pub fn pause_process(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.path("runtime/libpod/tmp/pause.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?;
        (uid == self.user.uid.to_string()).then(|| Pid::from_raw(pid))
    }
}

impl Drop for UserStorage {
    fn drop(&mut self) {
        if let Some(pid) = self.pause_process() {
            if let Err(error) = kill(pid, Signal::SIGTERM) {
                eprintln!("cannot stop podman's pause process {pid}: {error}");
            }
        }
        if let Err(error) = remove_tree(self.dir.path()) {
            eprintln!("cannot remove {}: {error:#}", self.dir.path().display());
        }
    }
}
