//! Writing the attestation without destroying anything.
//!
//! The destination is chosen before the command runs ([`Destination::choose`]), so a run that
//! could not deliver its attestation fails before the save, not after it:
//! - a regular file (or a new one) is replaced atomically (temp file in the same directory, fsync,
//!   rename, fsync the directory); an existing file keeps its old bytes on any failure;
//! - a symlink is written through: the file it points to is replaced, the link stays a link;
//! - a character device, FIFO, socket or an inherited descriptor (`/dev/stdout`, `/dev/fd/N`)
//!   is opened and written to directly, never replaced by a regular file;
//! - without `-o`, stdout is used only when it is a terminal: a redirected stdout usually holds
//!   the wrapped command's own output (`run -- podman save img > img.tar`); `-o -` is the
//!   explicit choice of stdout (as `inspect -` reads stdin).
//!
//! If the output directory vanished while the command ran, the attestation goes next to the
//! working directory instead and the path is printed: a signed run is never lost silently.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Mode of a new output file (before the umask): attestations are public documents.
const NEW_FILE_MODE: u32 = 0o644;

/// The `-o` value that means stdout.
pub const STDOUT_NAME: &str = "-";

/// Paths that name an already open descriptor of this process rather than a file to replace.
const DESCRIPTOR_PREFIXES: &[&str] = &["/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/"];

/// Where the attestation goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Stdout: a terminal, or asked for with `-o -`.
    Stdout,
    /// A regular file (existing or not) replaced atomically; for a symlinked `-o` this is the
    /// link's final target.
    File { path: PathBuf, requested: PathBuf },
    /// A device, FIFO, socket or descriptor path, written in place.
    Direct(PathBuf),
}

impl Destination {
    /// Decides where the attestation will go, and proves it can be written there, before
    /// anything runs.
    pub fn choose(outfile: Option<&Path>) -> anyhow::Result<Destination> {
        let Some(requested) = outfile else {
            if io::stdout().is_terminal() {
                return Ok(Destination::Stdout);
            }
            anyhow::bail!(
                "stdout is not a terminal, so the attestation would be mixed with the command's \
                 own output: pass -o/--outfile FILE (or -o /dev/stdout to write it there anyway); \
                 the command was not started"
            );
        };
        if requested == Path::new(STDOUT_NAME) {
            return Ok(Destination::Stdout);
        }
        let display = requested.display();
        let as_text = requested.to_string_lossy();
        if DESCRIPTOR_PREFIXES
            .iter()
            .any(|prefix| as_text.starts_with(prefix))
        {
            return Ok(Destination::Direct(requested.to_path_buf()));
        }
        match fs::metadata(requested) {
            Ok(metadata) if metadata.is_dir() => {
                anyhow::bail!("{display}: --outfile is a directory")
            }
            Ok(metadata) if !metadata.file_type().is_file() => {
                return Ok(Destination::Direct(requested.to_path_buf()));
            }
            Ok(_) | Err(_) => {}
        }
        let path = resolve_symlinks(requested)?;
        let dir = parent_dir(&path);
        if !dir.is_dir() {
            anyhow::bail!(
                "{display}: --outfile directory {} does not exist",
                dir.display()
            );
        }
        // The attestation is written through a temp file in that directory: prove it can be made.
        tempfile::Builder::new()
            .prefix(".oci-attest-probe.")
            .tempfile_in(dir)
            .map(drop)
            .with_context(|| format!("{display}: cannot create files in {}", dir.display()))?;
        Ok(Destination::File {
            path,
            requested: requested.to_path_buf(),
        })
    }

    /// The file a previous run may have left here, which the command did not produce.
    pub fn file_path(&self) -> Option<&Path> {
        match self {
            Destination::File { path, .. } => Some(path),
            Destination::Stdout | Destination::Direct(_) => None,
        }
    }

    /// Writes the attestation. When the output directory disappeared during the run, the
    /// attestation is written into `fallback_dir` under a fresh name instead; the path actually
    /// written is returned.
    pub fn write(&self, bytes: &[u8], fallback_dir: &Path) -> anyhow::Result<Written> {
        match self {
            Destination::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout
                    .write_all(bytes)
                    .and_then(|()| stdout.flush())
                    .context("cannot write the attestation to stdout")?;
                Ok(Written::Stdout)
            }
            Destination::Direct(path) => {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|mut file| file.write_all(bytes).and_then(|()| file.flush()))
                    .with_context(|| format!("{}: cannot write", path.display()))?;
                Ok(Written::Path(path.clone()))
            }
            Destination::File { path, requested } => {
                if parent_dir(path).is_dir() {
                    write_atomically(path, bytes)?;
                    return Ok(Written::Path(requested.clone()));
                }
                let fallback = write_fallback(path, bytes, fallback_dir)?;
                // At error level: `--quiet` must still say where the attestation is.
                tracing::error!(
                    "the directory of {} disappeared during the run; the attestation was written \
                     to {} instead",
                    requested.display(),
                    fallback.display()
                );
                Ok(Written::Fallback(fallback))
            }
        }
    }
}

/// Where the attestation ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Stdout,
    Path(PathBuf),
    /// The requested directory was gone; this is the file written instead.
    Fallback(PathBuf),
}

impl Written {
    pub fn describe(&self) -> String {
        match self {
            Written::Stdout => "stdout".to_owned(),
            Written::Path(path) | Written::Fallback(path) => path.display().to_string(),
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Follows `path` through any symlinks (also dangling ones: the target is created) to the file
/// that has to be replaced, so the links themselves stay.
fn resolve_symlinks(path: &Path) -> anyhow::Result<PathBuf> {
    /// The kernel's own limit (`MAXSYMLINKS`).
    const MAX_HOPS: usize = 40;
    let mut current = path.to_path_buf();
    for _ in 0..MAX_HOPS {
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let target = fs::read_link(&current)
                    .with_context(|| format!("{}: cannot read the symlink", current.display()))?;
                current = parent_dir(&current).join(target);
            }
            _ => return Ok(current),
        }
    }
    anyhow::bail!(
        "{}: --outfile is a symlink loop (more than {MAX_HOPS} links)",
        path.display()
    )
}

fn write_fallback(path: &Path, bytes: &[u8], fallback_dir: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .map_or_else(|| "attestation".into(), |name| name.to_string_lossy());
    let mut file = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".fallback")
        .permissions(Permissions::from_mode(NEW_FILE_MODE))
        .tempfile_in(fallback_dir)
        .with_context(|| {
            format!(
                "{}: the output directory disappeared and no fallback file can be created in {}",
                path.display(),
                fallback_dir.display()
            )
        })?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", file.path().display()))?;
    let (_, kept) = file
        .keep()
        .map_err(|error| error.error)
        .context("cannot keep the fallback attestation")?;
    Ok(kept)
}

/// Writes `bytes` to `path` via a temp file in the same directory: write, fsync, rename over
/// `path`, fsync the directory. An existing file keeps its permissions.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let display = path.display();
    let file_name = path
        .file_name()
        .with_context(|| format!("{display}: not a file name"))?;
    let dir = parent_dir(path);
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, FileTypeExt};
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

    #[test]
    fn symlinks_are_written_through_and_stay_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("real")).unwrap();
        fs::write(d.join("real/att.json"), "old").unwrap();
        symlink("real/att.json", d.join("link.json")).unwrap();
        symlink("link.json", d.join("link2.json")).unwrap();
        symlink("real/new.json", d.join("dangling.json")).unwrap();
        symlink("loop.json", d.join("loop.json")).unwrap();

        let chained = Destination::choose(Some(&d.join("link2.json"))).unwrap();
        assert_eq!(chained.file_path(), Some(d.join("real/att.json").as_path()));
        chained.write(b"new", d).unwrap();
        assert_eq!(fs::read(d.join("real/att.json")).unwrap(), b"new");
        assert!(fs::symlink_metadata(d.join("link.json"))
            .unwrap()
            .file_type()
            .is_symlink());

        let dangling = Destination::choose(Some(&d.join("dangling.json"))).unwrap();
        dangling.write(b"created", d).unwrap();
        assert_eq!(fs::read(d.join("real/new.json")).unwrap(), b"created");
        assert!(fs::symlink_metadata(d.join("dangling.json"))
            .unwrap()
            .file_type()
            .is_symlink());

        let error = Destination::choose(Some(&d.join("loop.json"))).unwrap_err();
        assert!(format!("{error:#}").contains("symlink loop"), "{error:#}");
    }

    #[test]
    fn a_vanished_directory_falls_back_to_the_given_dir() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("out")).unwrap();
        let destination = Destination::choose(Some(&d.join("out/att.json"))).unwrap();
        fs::remove_dir(d.join("out")).unwrap();
        let written = destination.write(b"envelope", d).unwrap();
        let Written::Fallback(path) = written else {
            panic!("{written:?}")
        };
        assert_eq!(path.parent(), Some(d));
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("att.json."));
        assert_eq!(fs::read(&path).unwrap(), b"envelope");
    }

    #[test]
    fn dash_is_stdout_whatever_stdout_is() {
        assert_eq!(
            Destination::choose(Some(Path::new("-"))).unwrap(),
            Destination::Stdout
        );
    }

    #[test]
    fn descriptor_paths_are_written_directly() {
        assert_eq!(
            Destination::choose(Some(Path::new("/dev/stdout"))).unwrap(),
            Destination::Direct(PathBuf::from("/dev/stdout"))
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let destination = Destination::choose(Some(&fifo)).unwrap();
        assert_eq!(destination, Destination::Direct(fifo.clone()));
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || fs::read(fifo).unwrap()
        });
        destination.write(b"through the fifo", dir.path()).unwrap();
        assert_eq!(reader.join().unwrap(), b"through the fifo");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
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
