//! Identities the kernel never reuses. An inode number is recycled as soon as its file is
//! freed (ext4 hands it to the next file created, often within milliseconds), so a path that
//! names (dev, ino) at the end of the run may be a stranger's file. The kernel programs record
//! each file's `i_generation` and ctime at the event; a file found at the end is that file
//! only if
//! - its generation, asked with `FS_IOC_GETVERSION`, is the recorded one (ext2/3/4, xfs,
//!   btrfs, f2fs...), or, where the filesystem does not answer it (tmpfs, overlayfs),
//! - its birth time (`statx`) is not later than the ctime the kernel recorded right after the
//!   event: a file born after the event cannot be the one the event changed.
//!
//! Where neither can be asked the answer is [`Recognised::Unknown`]: never a product.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::trace::events::FileId;

/// A timestamp as the kernel keeps it (seconds and nanoseconds since the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// A file as the kernel identified it at an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub file: FileId,
    /// `inode.i_generation`.
    pub generation: u32,
    /// The inode's ctime at the event (right after the change, for a written file).
    pub ctime: Timestamp,
}

/// Whether a file found now is the one an event identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recognised {
    /// The same file (and what it looks like now).
    Same(Now),
    /// Another file that reuses the inode number: the one identified was freed.
    Other(String),
    /// Cannot be told: the filesystem reports neither generation nor birth time, or the file
    /// cannot be opened.
    Unknown(String),
    /// Nothing is at the path any more.
    Gone,
}

/// What the file looks like now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub ctime: Timestamp,
}

/// `FS_IOC_GETVERSION`: `_IOR('v', 1, long)`.
/// `libc::Ioctl` is `c_ulong` on glibc and `c_int` on musl (the static release build).
const FS_IOC_GETVERSION: libc::Ioctl = 0x8008_7601_u32 as libc::Ioctl;

/// Opens `path` without following a symlink, without blocking on a FIFO and without making
/// a terminal the controlling one, and recognises it.
pub fn recognise_path(path: &Path, identity: &Identity) -> Recognised {
    match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => recognise(&file, identity),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Recognised::Gone,
        Err(error) => Recognised::Unknown(format!("cannot open it now: {error}")),
    }
}

/// Recognises an open file (`fstat` first: the descriptor is what is checked and read).
pub fn recognise(file: &File, identity: &Identity) -> Recognised {
    let metadata = match file.metadata() {
        Ok(metadata) => metadata,
        Err(error) => return Recognised::Unknown(format!("cannot stat it now: {error}")),
    };
    let found = FileId {
        dev: metadata.dev(),
        ino: metadata.ino(),
    };
    if found != identity.file {
        return Recognised::Other(format!(
            "inode {}:{} now, {}:{} at the event",
            found.dev, found.ino, identity.file.dev, identity.file.ino
        ));
    }
    let times = match statx_times(file) {
        Ok(times) => times,
        Err(error) => return Recognised::Unknown(format!("statx: {error}")),
    };
    let now = Now { ctime: times.ctime };
    match generation(file) {
        Ok(generation) if generation == identity.generation => Recognised::Same(now),
        Ok(generation) => Recognised::Other(format!(
            "inode {}:{} has generation {generation} now, {} at the event: its number was \
             reused",
            found.dev, found.ino, identity.generation
        )),
        Err(error) if unsupported(&error) => match times.birth {
            Some(birth) if birth <= identity.ctime => Recognised::Same(now),
            Some(birth) => Recognised::Other(format!(
                "inode {}:{} was born at {}.{:09}, after the event (ctime {}.{:09}): its number \
                 was reused",
                found.dev,
                found.ino,
                birth.sec,
                birth.nsec,
                identity.ctime.sec,
                identity.ctime.nsec
            )),
            None => Recognised::Unknown(
                "the filesystem reports neither the inode generation nor a birth time".to_owned(),
            ),
        },
        Err(error) => Recognised::Unknown(format!("FS_IOC_GETVERSION: {error}")),
    }
}

fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)
    )
}

/// `inode.i_generation`, where the filesystem answers `FS_IOC_GETVERSION`.
pub fn generation(file: &File) -> io::Result<u32> {
    // The kernel writes an int; a long-sized buffer is what the request's size says.
    let mut value: libc::c_long = 0;
    // SAFETY: a valid fd and a buffer of the size the request declares.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETVERSION, &mut value) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value as u32)
}

/// The ctime, and the birth time where the filesystem records one.
pub struct Times {
    pub ctime: Timestamp,
    pub birth: Option<Timestamp>,
}

pub fn statx_times(file: &File) -> io::Result<Times> {
    // SAFETY: zeroed statx is a valid out-parameter.
    let mut buffer: libc::statx = unsafe { std::mem::zeroed() };
    let empty = CString::default();
    // SAFETY: valid fd, NUL-terminated empty path with AT_EMPTY_PATH, valid out pointer.
    let result = unsafe {
        libc::statx(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_CTIME | libc::STATX_BTIME,
            &mut buffer,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    let time = |t: libc::statx_timestamp| Timestamp {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    };
    Ok(Times {
        ctime: time(buffer.stx_ctime),
        birth: (buffer.stx_mask & libc::STATX_BTIME != 0).then(|| time(buffer.stx_btime)),
    })
}

/// The identity of the file at `path` as it is now (for files found by path only, such as
/// those truncated with truncate(2)).
pub fn identity_now(path: &Path) -> io::Result<Identity> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    let times = statx_times(&file)?;
    Ok(Identity {
        file: FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        },
        generation: generation(&file).unwrap_or(0),
        ctime: times.ctime,
    })
}

/// Whether `path` has a name in a filesystem (as opposed to a memfd's `/memfd:...`).
pub fn is_named(path: &Path) -> bool {
    !path.as_os_str().as_bytes().starts_with(b"/memfd:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(path: &Path) -> Identity {
        identity_now(path).unwrap()
    }

    /// On disk (the temp dir: ext4 here) the generation decides; on tmpfs (`/dev/shm`) the
    /// birth time. A file whose recorded generation differs and whose event is older than its
    /// birth is another file under either rule.
    #[test]
    fn the_same_file_is_recognised_a_newer_one_with_its_number_is_not() {
        for base in [std::env::temp_dir(), "/dev/shm".into()] {
            if !base.is_dir() {
                continue;
            }
            let dir = tempfile::tempdir_in(&base).unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, "one").unwrap();
            let identity = identity_of(&path);
            assert!(
                matches!(recognise_path(&path, &identity), Recognised::Same(_)),
                "{}",
                base.display()
            );
            let before_it_was_born = Identity {
                generation: identity.generation.wrapping_add(1),
                ctime: Timestamp { sec: 1, nsec: 0 },
                ..identity
            };
            assert!(
                matches!(
                    recognise_path(&path, &before_it_was_born),
                    Recognised::Other(_)
                ),
                "{}",
                base.display()
            );
            let other_inode = Identity {
                file: FileId { dev: 0, ino: 1 },
                ..identity
            };
            assert!(matches!(
                recognise_path(&path, &other_inode),
                Recognised::Other(_)
            ));
        }
    }
}
