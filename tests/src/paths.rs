//! Where the project keeps its tools and fixtures, and the PATH that finds them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        Path::to_path_buf,
    )
}

/// Project-local tools (`cargo xtask setup` fills it; git-ignored).
pub fn tools_dir() -> PathBuf {
    workspace_root().join(".tools")
}

/// Debian's docker.io, unpacked (not installed: it conflicts with podman-docker).
pub fn docker_root() -> PathBuf {
    tools_dir().join("docker")
}

/// The unpacked `docker` client.
pub fn docker_client() -> PathBuf {
    docker_root().join("usr/bin/docker")
}

/// The unpacked `dockerd`.
pub fn dockerd() -> PathBuf {
    docker_root().join("usr/sbin/dockerd")
}

/// The python of the project venv (PyPI securesystemslib for DSSE interop tests).
pub fn venv_python() -> PathBuf {
    tools_dir().join("venv/bin/python")
}

/// Default fixture directory (git-ignored); `OCI_ATTEST_FIXTURES` overrides it.
pub fn default_fixtures_dir() -> PathBuf {
    workspace_root().join(".fixtures")
}

/// Directories to put in front of PATH: bpf-linker and the unpacked docker binaries.
pub fn tool_bin_dirs() -> Vec<PathBuf> {
    let docker = docker_root();
    vec![
        tools_dir().join("bin"),
        docker.join("usr/bin"),
        docker.join("usr/sbin"),
    ]
}

/// PATH with [`tool_bin_dirs`] in front (each only once, so nesting xtask calls does not grow it).
pub fn search_path() -> OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = tool_bin_dirs();
    dirs.extend(std::env::split_paths(&current).filter(|dir| !tool_bin_dirs().contains(dir)));
    std::env::join_paths(dirs).unwrap_or(current)
}
