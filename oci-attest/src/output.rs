//! Writing the attestation: atomically to a file (an existing file keeps its old bytes on any
//! failure, and no temp file is left behind), or to stdout.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Mode of a new output file (before the umask): attestations are public documents.
const NEW_FILE_MODE: u32 = 0o644;

/// Writes `bytes` to `path` via a temp file in the same directory: write, fsync, rename over
/// `path`, fsync the directory. An existing file keeps its permissions.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let display = path.display();
    let file_name = path
        .file_name()
        .with_context(|| format!("{display}: not a file name"))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let existing_mode = match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => anyhow::bail!("{display}: is a directory"),
        Ok(metadata) => Some(metadata.permissions().mode()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| format!("{display}: cannot stat")),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(NEW_FILE_MODE))
        .tempfile_in(dir)
        .with_context(|| format!("{display}: cannot create a temp file in {}", dir.display()))?;
    // From here on an error drops `temp`, which deletes it.
    if let Some(mode) = existing_mode {
        temp.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .with_context(|| format!("{display}: cannot set permissions"))?;
    }
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("{display}: cannot write"))?;
    temp.persist(path)
        .map_err(|error| error.error)
        .with_context(|| format!("{display}: cannot replace"))?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("{display}: cannot sync directory {}", dir.display()))?;
    Ok(())
}

/// Writes the attestation to `outfile` atomically, or to stdout when none is given.
pub fn emit(outfile: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match outfile {
        Some(path) => write_atomically(path, bytes),
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .context("cannot write the attestation to stdout")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("att.json");
        write_atomically(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(entries(dir.path()), ["att.json"]);
    }

    #[test]
    fn failures_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("no/such/dir/att.json");
        let error = write_atomically(&missing_dir, b"x").unwrap_err();
        assert!(
            format!("{error:#}").contains("cannot create a temp file"),
            "{error:#}"
        );

        let a_dir = dir.path().join("sub");
        fs::create_dir(&a_dir).unwrap();
        let error = write_atomically(&a_dir, b"x").unwrap_err();
        assert!(
            format!("{error:#}").ends_with("is a directory"),
            "{error:#}"
        );
        assert_eq!(entries(dir.path()), ["sub"]);
        assert!(entries(&a_dir).is_empty());
    }

    /// A full disk: the old file keeps its bytes and the partial temp file is removed.
    #[test]
    fn full_disk_keeps_the_old_file() {
        if !nix::unistd::geteuid().is_root() {
            oci_attest_tests::skip(
                "full_disk_keeps_the_old_file",
                "needs root to mount a tmpfs",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mount = |args: &[&str]| {
            let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
            assert!(status.success(), "{args:?}");
        };
        let mountpoint = dir.path().to_str().unwrap();
        mount(&[
            "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mountpoint,
        ]);
        let outcome = std::panic::catch_unwind(|| {
            let path = dir.path().join("att.json");
            write_atomically(&path, b"old envelope").unwrap();
            let error = write_atomically(&path, &vec![b'x'; 1 << 20]).unwrap_err();
            assert!(
                format!("{error:#}").contains("No space left on device"),
                "{error:#}"
            );
            assert_eq!(fs::read(&path).unwrap(), b"old envelope");
            assert_eq!(entries(dir.path()), ["att.json"]);
        });
        mount(&["umount", mountpoint]);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
