//! A private containers-storage (podman, buildah, skopeo) under a directory, so tests never touch
//! the host's images and several runs can coexist.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Configuration files for a containers-storage rooted in `root`.
#[derive(Clone, Debug)]
pub struct ContainersStorage {
    pub root: PathBuf,
    pub storage_conf: PathBuf,
    pub containers_conf: PathBuf,
}

impl ContainersStorage {
    /// Writes `storage.conf` and `containers.conf` under `root` (created if needed).
    pub fn create(root: &Path) -> anyhow::Result<Self> {
        let root = std::path::absolute(root)
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        for dir in ["graph", "run", "tmp"] {
            std::fs::create_dir_all(root.join(dir))
                .with_context(|| format!("cannot create {}", root.join(dir).display()))?;
        }
        let storage_conf = root.join("storage.conf");
        let containers_conf = root.join("containers.conf");
        let storage = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{graph}\"\nrunroot = \"{run}\"\n",
            graph = root.join("graph").display(),
            run = root.join("run").display(),
        );
        // podman keeps state in tmp_dir (default /run/libpod, shared by every podman on the
        // host): private paths keep parallel runs from seeing each other's database. runc and
        // the ulimits are what works here should a container ever run.
        let containers = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             events_logfile_path = \"{tmp}/events.log\"\ntmp_dir = \"{tmp}\"\nstatic_dir = \"{graph}/libpod\"\n",
            tmp = root.join("tmp").display(),
            graph = root.join("graph").display(),
        );
        std::fs::write(&storage_conf, storage)
            .with_context(|| format!("cannot write {}", storage_conf.display()))?;
        std::fs::write(&containers_conf, containers)
            .with_context(|| format!("cannot write {}", containers_conf.display()))?;
        Ok(ContainersStorage {
            root,
            storage_conf,
            containers_conf,
        })
    }

    /// The storage named by `CONTAINERS_STORAGE_CONF`/`CONTAINERS_CONF` (as exported by
    /// `cargo xtask test`).
    pub fn from_env() -> anyhow::Result<Self> {
        let storage_conf = std::env::var_os("CONTAINERS_STORAGE_CONF")
            .map(PathBuf::from)
            .context(
                "CONTAINERS_STORAGE_CONF is not set (run the tests with `cargo xtask test`)",
            )?;
        let containers_conf = std::env::var_os("CONTAINERS_CONF")
            .map(PathBuf::from)
            .context("CONTAINERS_CONF is not set (run the tests with `cargo xtask test`)")?;
        let root = storage_conf
            .parent()
            .map(Path::to_path_buf)
            .context("CONTAINERS_STORAGE_CONF has no parent directory")?;
        Ok(ContainersStorage {
            root,
            storage_conf,
            containers_conf,
        })
    }

    /// Environment for child processes that use this storage.
    pub fn env(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("CONTAINERS_STORAGE_CONF", self.storage_conf.clone()),
            ("CONTAINERS_CONF", self.containers_conf.clone()),
        ]
    }

    /// A `Command` for `program` using this storage.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .envs(self.env())
            .env("PATH", crate::paths::search_path());
        command
    }
}

/// Unmounts every mount point at or below `dir`, deepest first. The overlay driver bind-mounts
/// its own directory; a temp dir can only be removed once that is gone.
pub fn unmount_below(dir: &Path) -> anyhow::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    let mut mount_points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|point| point.starts_with(dir))
        .collect();
    mount_points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in mount_points {
        nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot unmount {}", point.display()))?;
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|text| u8::from_str_radix(text, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Removes a directory tree that may hold mounts and read-only files made by image tools.
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_below(dir)?;
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b\134c"),
            PathBuf::from("/tmp/a b\\c")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
