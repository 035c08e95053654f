//! Where a program named on a command line lives, found as a shell would find it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::exit::{failure, FailureKind};

/// Finds `name` the way a shell would: as a path when it contains `/`, else on PATH.
pub fn resolve_program(name: &OsStr) -> anyhow::Result<PathBuf> {
    let is_executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        if !path.exists() {
            return Err(failure(
                FailureKind::CommandNotFound,
                format!("command not found: {}", path.display()),
            ));
        }
        return Ok(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            failure(
                FailureKind::CommandNotFound,
                format!(
                    "command not found: {} (not on PATH; give a path or fix PATH)",
                    name.to_string_lossy()
                ),
            )
        })
}
