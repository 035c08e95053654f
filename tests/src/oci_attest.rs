//! The oci-attest binary under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{ensure, Context as _};

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

/// `BINARY run` as the tests start it (add the rest of `run`'s arguments). Every test starts
/// `oci-attest run` through this one helper.
pub fn run() -> anyhow::Result<Command> {
    let mut command = command()?;
    command.arg("run");
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
