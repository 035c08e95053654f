//! Private containerd and dockerd instances on sockets under a directory, stopped by pid.

use std::fs::File;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::command::{describe, run};
use crate::paths;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running daemon, its log file and its readiness probe.
pub(crate) struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group: a Ctrl-C in the terminal reaches the tests, not the daemon,
            // which the harness stops in order (dockerd before the containerd it uses).
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}: `{}`", describe(&command)))?;
        Ok(Daemon { name, child, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Polls `probe` until it succeeds; fails early if the daemon exits.
    pub(crate) fn wait_ready(&mut self, mut probe: impl FnMut() -> bool) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            if probe() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "{} did not answer within {}s; log {}:\n{}",
            self.name,
            READY_TIMEOUT.as_secs(),
            self.log.display(),
            self.log_tail()
        )
    }

    /// SIGTERM, then SIGKILL if it has not exited after [`STOP_TIMEOUT`].
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, Signal::SIGTERM)
            .with_context(|| format!("cannot signal {} ({pid})", self.name))?;
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{} ({pid}) ignored SIGTERM for {}s; killing it",
            self.name,
            STOP_TIMEOUT.as_secs()
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// containerd and dockerd (Debian's docker.io 20.10, unpacked by `cargo xtask setup`), each on a
/// private socket and data directory under `dir`. Dropping it stops both.
pub struct Daemons {
    dir: PathBuf,
    containerd: Option<Daemon>,
    dockerd: Option<Daemon>,
    pub containerd_address: PathBuf,
    pub docker_host: String,
}

impl Daemons {
    /// Starts both daemons under `dir` and waits until they answer.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // The docker group reaches dockerd's socket (root:docker, 0660) through here; nobody
        // lists what else is in it. Its parent must be searchable too (`cargo xtask test`).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("cannot chmod {}", dir.display()))?;
        if !paths::dockerd().is_file() {
            bail!(
                "{} is missing (run `cargo xtask setup`)",
                paths::dockerd().display()
            );
        }
        let containerd_address = dir.join("containerd.sock");
        let docker_socket = dir.join("docker.sock");
        let mut daemons = Daemons {
            containerd: None,
            dockerd: None,
            containerd_address: containerd_address.clone(),
            docker_host: format!("unix://{}", docker_socket.display()),
            dir: dir.clone(),
        };

        let config = dir.join("containerd.toml");
        // The CRI plugin is for Kubernetes; without it containerd opens nothing but its socket.
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{address}\"\n",
                root = dir.join("containerd-root").display(),
                state = dir.join("containerd-state").display(),
                address = containerd_address.display(),
            ),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let mut containerd = Command::new("containerd");
        containerd
            .arg("--config")
            .arg(&config)
            .env("PATH", paths::search_path());
        let containerd = daemons.containerd.insert(Daemon::spawn(
            "containerd",
            containerd,
            dir.join("containerd.log"),
        )?);
        containerd.wait_ready(|| {
            run(Command::new("ctr")
                .arg("-a")
                .arg(&containerd_address)
                .arg("version"))
            .is_ok()
        })?;

        let mut dockerd = Command::new(paths::dockerd());
        dockerd
            .arg("--data-root")
            .arg(dir.join("docker-data"))
            .arg("--exec-root")
            .arg(dir.join("docker-exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("-H")
            .arg(&daemons.docker_host)
            .arg("--containerd")
            .arg(&containerd_address)
            // The socket's group (its default, said explicitly: the docker tests depend on it).
            .args(["--group", "docker"])
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-masq=false",
                "--storage-driver",
                "overlay2",
            ])
            .env("PATH", paths::search_path());
        std::fs::write(dir.join("daemon.json"), "{}\n")?;
        let docker_host = daemons.docker_host.clone();
        let dockerd =
            daemons
                .dockerd
                .insert(Daemon::spawn("dockerd", dockerd, dir.join("dockerd.log"))?);
        dockerd.wait_ready(|| {
            run(Command::new(paths::docker_client()).args(["-H", &docker_host, "version"])).is_ok()
        })?;
        Ok(daemons)
    }

    /// Environment for child processes that talk to these daemons.
    pub fn env(&self) -> [(&'static str, std::ffi::OsString); 2] {
        [
            ("DOCKER_HOST", self.docker_host.clone().into()),
            ("CONTAINERD_ADDRESS", self.containerd_address.clone().into()),
        ]
    }

    /// Stops dockerd, then containerd, then unmounts what they left under their directory.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for daemon in [self.dockerd.take(), self.containerd.take()]
            .into_iter()
            .flatten()
        {
            let mut daemon = daemon;
            if let Err(error) = daemon.stop() {
                result = Err(error);
            }
        }
        result.and(crate::storage::unmount_below(&self.dir))
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("stopping the test daemons: {error:#}");
        }
    }
}

/// Handles to daemons started by someone else (`cargo xtask test`), read from the environment.
#[derive(Clone, Debug)]
pub struct DaemonEnv {
    pub docker_host: String,
    pub containerd_address: PathBuf,
}

impl DaemonEnv {
    pub fn from_env() -> anyhow::Result<Self> {
        let docker_host = std::env::var("DOCKER_HOST")
            .context("DOCKER_HOST is not set (run the tests with `cargo xtask test`)")?;
        let containerd_address = std::env::var_os("CONTAINERD_ADDRESS")
            .map(PathBuf::from)
            .context("CONTAINERD_ADDRESS is not set (run the tests with `cargo xtask test`)")?;
        let probe = run(Command::new(paths::docker_client()).args(["-H", &docker_host, "version"]));
        probe.with_context(|| format!("the Docker engine at {docker_host} does not answer"))?;
        Ok(DaemonEnv {
            docker_host,
            containerd_address,
        })
    }

    /// A `docker` client command for this engine.
    pub fn docker(&self) -> Command {
        let mut command = Command::new(paths::docker_client());
        command.env("DOCKER_HOST", &self.docker_host);
        command
    }

    /// A `ctr` command for this containerd.
    pub fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command.arg("-a").arg(&self.containerd_address);
        command
    }
}

impl Daemons {
    /// The same handles as [`DaemonEnv`], for code that serves both cases.
    pub fn handles(&self) -> DaemonEnv {
        DaemonEnv {
            docker_host: self.docker_host.clone(),
            containerd_address: self.containerd_address.clone(),
        }
    }
}
