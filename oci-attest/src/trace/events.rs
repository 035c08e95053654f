//! Decoding of the ring-buffer records written by the kernel programs.
//!
//! Records with a string tail are shorter than their struct (only the used bytes are sent),
//! so fields are read at their `offset_of!` positions instead of casting the whole record.

use std::mem::offset_of;

use oci_attest_common::{
    EventHeader, EventKind, ExecArgvEvent, ExecEvent, ExitEvent, ForkEvent, InodeId, KernelTime,
    PathOp, PathOpEvent, WrittenEvent, PATH_CAPACITY,
};

use crate::observed::RaisedPrivileges;
use crate::trace::identity::{Identity, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
}

/// A file identity as userspace `stat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev` encoding.
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// Converts the kernel's `s_dev` (major << 20 | minor) into the `st_dev` encoding.
    pub fn from_kernel(inode: &InodeId) -> FileId {
        FileId {
            dev: libc::makedev((inode.dev >> 20) as u32, (inode.dev & 0xf_ffff) as u32),
            ino: inode.ino,
        }
    }
}

/// A path built in the kernel, with its `PATH_*` flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPath {
    pub bytes: Vec<u8>,
    pub flags: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Fork {
        child_pid: u32,
    },
    Exec {
        old_tid: u32,
        program: Identity,
        /// The program's link count at the exec (0: it had no name).
        nlink: u32,
        path: KernelPath,
        /// The new credentials when the exec raised privileges.
        privileges: Option<RaisedPrivileges>,
    },
    /// One chunk of the argument area of the exec just reported.
    ExecArgv {
        bytes: Vec<u8>,
        flags: u32,
    },
    Exit {
        /// wait(2) status, `None` when the kernel could not read it.
        status: Option<i32>,
    },
    Written {
        how: u32,
        /// Its ctime is the inode's right after the first change.
        identity: Identity,
        fs_magic: u64,
        nlink: u32,
        path: KernelPath,
    },
    PathOp {
        op: PathOp,
        /// Directory and name of each operand (the second is empty for one-operand ops).
        operands: [(KernelPath, Vec<u8>); 2],
    },
}

/// Why a record could not be decoded (a kernel/userspace mismatch, never expected).
#[derive(Debug, thiserror::Error)]
#[error("malformed trace record ({len} bytes): {problem}")]
pub struct MalformedRecord {
    pub len: usize,
    pub problem: &'static str,
}

struct Record<'a> {
    bytes: &'a [u8],
}

impl Record<'_> {
    fn malformed(&self, problem: &'static str) -> MalformedRecord {
        MalformedRecord {
            len: self.bytes.len(),
            problem,
        }
    }

    fn u32_at(&self, offset: usize) -> Result<u32, MalformedRecord> {
        self.bytes
            .get(offset..offset + 4)
            .and_then(|bytes| bytes.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| self.malformed("truncated fixed fields"))
    }

    fn u64_at(&self, offset: usize) -> Result<u64, MalformedRecord> {
        self.bytes
            .get(offset..offset + 8)
            .and_then(|bytes| bytes.try_into().ok())
            .map(u64::from_ne_bytes)
            .ok_or_else(|| self.malformed("truncated fixed fields"))
    }

    fn bytes_at(&self, offset: usize, len: u32) -> Result<&[u8], MalformedRecord> {
        if len as usize > PATH_CAPACITY.max(oci_attest_common::ARGV_CHUNK) {
            return Err(self.malformed("string longer than its buffer"));
        }
        self.bytes
            .get(offset..offset + len as usize)
            .ok_or_else(|| self.malformed("string longer than the record"))
    }

    /// The inode at `inode_offset` with the ctime at `ctime_offset`.
    fn identity_at(
        &self,
        inode_offset: usize,
        ctime_offset: usize,
    ) -> Result<Identity, MalformedRecord> {
        let inode = InodeId {
            dev: self.u64_at(inode_offset + offset_of!(InodeId, dev))?,
            ino: self.u64_at(inode_offset + offset_of!(InodeId, ino))?,
            generation: self.u32_at(inode_offset + offset_of!(InodeId, generation))?,
            _reserved: 0,
        };
        Ok(Identity {
            file: FileId::from_kernel(&inode),
            generation: inode.generation,
            ctime: Timestamp {
                sec: self.u64_at(ctime_offset + offset_of!(KernelTime, sec))? as i64,
                nsec: self.u32_at(ctime_offset + offset_of!(KernelTime, nsec))?,
            },
        })
    }
}

pub fn decode(bytes: &[u8]) -> Result<(Header, Event), MalformedRecord> {
    let record = Record { bytes };
    let header = Header {
        pid: record.u32_at(offset_of!(EventHeader, pid))?,
        tid: record.u32_at(offset_of!(EventHeader, tid))?,
        time_ns: record.u64_at(offset_of!(EventHeader, time_ns))?,
    };
    let kind = EventKind::from_u32(record.u32_at(offset_of!(EventHeader, kind))?)
        .ok_or_else(|| record.malformed("unknown event kind"))?;
    let event = match kind {
        EventKind::Fork => Event::Fork {
            child_pid: record.u32_at(offset_of!(ForkEvent, child_pid))?,
        },
        EventKind::Exec => {
            let len = record.u32_at(offset_of!(ExecEvent, path_len))?;
            Event::Exec {
                old_tid: record.u32_at(offset_of!(ExecEvent, old_tid))?,
                program: record
                    .identity_at(offset_of!(ExecEvent, program), offset_of!(ExecEvent, ctime))?,
                nlink: record.u32_at(offset_of!(ExecEvent, nlink))?,
                path: KernelPath {
                    bytes: record.bytes_at(offset_of!(ExecEvent, path), len)?.to_vec(),
                    flags: record.u32_at(offset_of!(ExecEvent, path_flags))?,
                },
                privileges: if record.u32_at(offset_of!(ExecEvent, secureexec))? != 0 {
                    Some(RaisedPrivileges {
                        uid: record.u32_at(offset_of!(ExecEvent, uid))?,
                        euid: record.u32_at(offset_of!(ExecEvent, euid))?,
                        cap_effective: record.u64_at(offset_of!(ExecEvent, cap_effective))?,
                        cap_permitted: record.u64_at(offset_of!(ExecEvent, cap_permitted))?,
                    })
                } else {
                    None
                },
            }
        }
        EventKind::ExecArgv => {
            let len = record.u32_at(offset_of!(ExecArgvEvent, argv_len))?;
            Event::ExecArgv {
                bytes: record
                    .bytes_at(offset_of!(ExecArgvEvent, argv), len)?
                    .to_vec(),
                flags: record.u32_at(offset_of!(ExecArgvEvent, flags))?,
            }
        }
        EventKind::Exit => {
            let status = record.u32_at(offset_of!(ExitEvent, status))? as i32;
            Event::Exit {
                status: (status >= 0).then_some(status),
            }
        }
        EventKind::Written => {
            let len = record.u32_at(offset_of!(WrittenEvent, path_len))?;
            Event::Written {
                how: record.u32_at(offset_of!(WrittenEvent, how))?,
                identity: record.identity_at(
                    offset_of!(WrittenEvent, inode),
                    offset_of!(WrittenEvent, ctime),
                )?,
                fs_magic: record.u64_at(offset_of!(WrittenEvent, fs_magic))?,
                nlink: record.u32_at(offset_of!(WrittenEvent, nlink))?,
                path: KernelPath {
                    bytes: record
                        .bytes_at(offset_of!(WrittenEvent, path), len)?
                        .to_vec(),
                    flags: record.u32_at(offset_of!(WrittenEvent, path_flags))?,
                },
            }
        }
        EventKind::PathOp => {
            let op = PathOp::from_u32(record.u32_at(offset_of!(PathOpEvent, op))?)
                .ok_or_else(|| record.malformed("unknown path operation"))?;
            let slot = |index: usize| -> Result<(Vec<u8>, u32), MalformedRecord> {
                let len = record.u32_at(offset_of!(PathOpEvent, lens) + 4 * index)?;
                let flags = record.u32_at(offset_of!(PathOpEvent, flags) + 4 * index)?;
                let start = offset_of!(PathOpEvent, paths) + index * PATH_CAPACITY;
                Ok((record.bytes_at(start, len)?.to_vec(), flags))
            };
            let operand = |index: usize| -> Result<(KernelPath, Vec<u8>), MalformedRecord> {
                let (dir, flags) = slot(2 * index)?;
                let (name, _) = slot(2 * index + 1)?;
                Ok((KernelPath { bytes: dir, flags }, name))
            };
            Event::PathOp {
                op,
                operands: [operand(0)?, operand(1)?],
            }
        }
    };
    Ok((header, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(kind: EventKind, pid: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend((kind as u32).to_ne_bytes());
        bytes.extend(pid.to_ne_bytes());
        bytes.extend((pid + 1).to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend(42u64.to_ne_bytes());
        bytes
    }

    #[test]
    fn decodes_an_argv_chunk() {
        let mut bytes = header_bytes(EventKind::ExecArgv, 7);
        let argv = b"tar\0cf\0\0x.tar\0";
        bytes.extend(1u32.to_ne_bytes());
        bytes.extend((argv.len() as u32).to_ne_bytes());
        bytes.extend(argv);
        let (header, event) = decode(&bytes).unwrap();
        assert_eq!(
            header,
            Header {
                pid: 7,
                tid: 8,
                time_ns: 42
            }
        );
        assert_eq!(
            event,
            Event::ExecArgv {
                bytes: argv.to_vec(),
                flags: 1,
            }
        );
    }

    #[test]
    fn decodes_a_written_file_with_its_kernel_identity() {
        let mut bytes = header_bytes(EventKind::Written, 7);
        bytes.extend(4u32.to_ne_bytes()); // how
        bytes.extend(0u32.to_ne_bytes()); // path flags
        bytes.extend(((8u64 << 20) | 1).to_ne_bytes()); // dev 8:1
        bytes.extend(99u64.to_ne_bytes()); // ino
        bytes.extend(5u32.to_ne_bytes()); // generation
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend(0xef53u64.to_ne_bytes()); // ext4
        bytes.extend(1u32.to_ne_bytes()); // nlink
        bytes.extend(6u32.to_ne_bytes()); // path len
        bytes.extend(1_700_000_000i64.to_ne_bytes()); // ctime
        bytes.extend(7u32.to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend(b"/w/a\nb");
        let (_, event) = decode(&bytes).unwrap();
        let Event::Written { identity, path, .. } = event else {
            panic!("{event:?}");
        };
        assert_eq!(identity.file.dev, libc::makedev(8, 1));
        assert_eq!(identity.file.ino, 99);
        assert_eq!(identity.generation, 5);
        assert_eq!(
            identity.ctime,
            Timestamp {
                sec: 1_700_000_000,
                nsec: 7
            }
        );
        assert_eq!(path.bytes, b"/w/a\nb");
    }

    #[test]
    fn rejects_a_string_longer_than_the_record() {
        let mut bytes = header_bytes(EventKind::ExecArgv, 7);
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend(100u32.to_ne_bytes());
        bytes.extend(b"/bin/sh");
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn rejects_unknown_kinds_and_short_records() {
        assert!(decode(&[1, 2, 3]).is_err());
        let mut bytes = header_bytes(EventKind::Fork, 1);
        bytes[0] = 99;
        bytes.extend([0; 8]);
        assert!(decode(&bytes).is_err());
    }
}
