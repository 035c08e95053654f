//! The release `cargo xtask dist` wrote (`OCI_ATTEST_RELEASE_DIR`), the CI job user the
//! integration tests act as, and a static file server on 127.0.0.1 standing in for the
//! release's download site.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, ensure, Context as _};

/// Set by `cargo xtask test` to the release directory of `cargo xtask dist`.
pub const RELEASE_DIR_ENV: &str = "OCI_ATTEST_RELEASE_DIR";

/// The target the release binary is built for: static, runs on any x86_64 Linux (no glibc).
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// The user the CI integration tests run the action's and the template's steps as: like
/// GitHub's `runner`, unprivileged with passwordless sudo (`cargo xtask setup` makes it).
pub const CI_JOB_USER: &str = "oci-attest-ci";

/// The files of a release directory.
#[derive(Clone, Debug)]
pub struct Release {
    pub dir: PathBuf,
    pub version: String,
}

impl Release {
    /// The release named by [`RELEASE_DIR_ENV`].
    pub fn from_env() -> anyhow::Result<Self> {
        let dir = std::env::var_os(RELEASE_DIR_ENV)
            .map(PathBuf::from)
            .with_context(|| {
                format!(
                    "{RELEASE_DIR_ENV} is not set (run the tests with `cargo xtask test` \
                     without a filter, or with --dist)"
                )
            })?;
        ensure!(
            dir.join("SHA256SUMS").is_file(),
            "{} holds no release (no SHA256SUMS)",
            dir.display()
        );
        Ok(Release {
            dir,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    /// The static binary.
    pub fn binary(&self) -> PathBuf {
        self.dir.join("oci-attest")
    }

    /// `oci-attest-VERSION-TARGET`: the tarball's name without `.tar.gz`, and its top directory.
    pub fn stem(&self) -> String {
        format!("oci-attest-{}-{TARGET}", self.version)
    }

    pub fn tarball(&self) -> PathBuf {
        self.dir.join(format!("{}.tar.gz", self.stem()))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `python3 -m http.server` serving `root` on 127.0.0.1 (a free port it picks), stopped by pid
/// when dropped.
pub struct FileServer {
    child: Child,
    pub url: String,
}

impl FileServer {
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        // Debian's python (installed with python3-venv), not whatever python3 comes first.
        let mut child = Command::new("/usr/bin/python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start python3 -m http.server")?;
        let stdout = child.stdout.take().context("http.server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading http.server's first line")?;
        // "Serving HTTP on 127.0.0.1 port 41235 (http://127.0.0.1:41235/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|word| *word != "port")
            .nth(1)
            .and_then(|port| port.parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("http.server printed no port: {line:?}");
        };
        Ok(FileServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
