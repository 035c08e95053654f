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

/// Finds a helper program oci-attest itself runs (not the wrapped command): the first `name` on
/// PATH that nobody but root (or the user oci-attest runs as) could have put there — the file
/// and every directory above it owned by root or by us, and writable by no group or other
/// user. PATH is the caller's, and a directory on it that the build can write (`~/.local/bin`,
/// `./node_modules/.bin`) must not hand its own `git` to a process that holds the signing key.
/// `Err` names the candidates refused and why.
pub fn resolve_trusted_program(name: &str) -> Result<PathBuf, String> {
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut refused = Vec::new();
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(name);
        let Ok(metadata) = candidate.metadata() else {
            continue;
        };
        if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
            continue;
        }
        // The resolved path is what runs: a symlink swapped after the check changes nothing.
        let reason = match candidate.canonicalize() {
            Ok(resolved) => match untrusted_part(&resolved) {
                None => return Ok(resolved),
                Some(reason) => reason,
            },
            Err(error) => error.to_string(),
        };
        tracing::warn!("not running {}: {reason}", candidate.display());
        refused.push(format!("{}: {reason}", candidate.display()));
    }
    Err(if refused.is_empty() {
        format!("no `{name}` on PATH")
    } else {
        format!(
            "no trusted `{name}` on PATH (refused {})",
            refused.join("; ")
        )
    })
}

/// Why `path` (a resolved path) could have been written by someone other than root or the
/// effective user: the first such file or directory, from the file up.
fn untrusted_part(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let us = nix::unistd::geteuid().as_raw();
    for part in path.ancestors() {
        let Ok(metadata) = part.metadata() else {
            return Some(format!("cannot read {}", part.display()));
        };
        if metadata.uid() != 0 && metadata.uid() != us {
            return Some(format!(
                "{} is owned by uid {}",
                part.display(),
                metadata.uid()
            ));
        }
        if metadata.mode() & 0o022 != 0 {
            return Some(format!(
                "{} is writable by its group or by others",
                part.display()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_program_in_a_directory_others_can_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::write(open.join("helper"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(open.join("helper"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let reason = untrusted_part(&open.join("helper")).unwrap();
        assert!(
            reason.contains("writable by its group or by others"),
            "{reason}"
        );
        assert_eq!(
            untrusted_part(&Path::new("/bin/sh").canonicalize().unwrap()),
            None
        );
    }
}
