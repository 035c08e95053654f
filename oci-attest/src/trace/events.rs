//! Decoding of the ring-buffer records written by the kernel programs.
//!
//! Records with a string tail are shorter than their struct (only the used bytes are sent),
//! so fields are read at their `offset_of!` positions instead of casting the whole record.

use std::mem::offset_of;

use oci_attest_common::{
    EventHeader, EventKind, ExecArgvEvent, ExecEvent, ExitEvent, FileOp, FileOpEvent, ForkEvent,
    PATH_CAPACITY,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Fork {
        child_pid: u32,
    },
    ExecArgv {
        argv: Vec<String>,
        truncated: bool,
    },
    Exec {
        old_tid: u32,
        filename: String,
    },
    Exit {
        /// wait(2) status, `None` when the kernel could not read it.
        status: Option<i32>,
    },
    FileOp {
        op: FileOp,
        flags: u32,
        dirfd: i32,
        dirfd2: i32,
        result: i64,
        path: Vec<u8>,
        path2: Vec<u8>,
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

    fn i32_at(&self, offset: usize) -> Result<i32, MalformedRecord> {
        self.u32_at(offset).map(|value| value as i32)
    }

    fn u64_at(&self, offset: usize) -> Result<u64, MalformedRecord> {
        self.bytes
            .get(offset..offset + 8)
            .and_then(|bytes| bytes.try_into().ok())
            .map(u64::from_ne_bytes)
            .ok_or_else(|| self.malformed("truncated fixed fields"))
    }

    fn bytes_at(&self, offset: usize, len: u32) -> Result<&[u8], MalformedRecord> {
        self.bytes
            .get(offset..offset + len as usize)
            .ok_or_else(|| self.malformed("string longer than the record"))
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
        EventKind::ExecArgv => {
            let len = record.u32_at(offset_of!(ExecArgvEvent, argv_len))?;
            let block = record.bytes_at(offset_of!(ExecArgvEvent, argv), len)?;
            Event::ExecArgv {
                argv: split_argv(block),
                truncated: record.u32_at(offset_of!(ExecArgvEvent, truncated))? != 0,
            }
        }
        EventKind::Exec => {
            let len = record.u32_at(offset_of!(ExecEvent, filename_len))?;
            Event::Exec {
                old_tid: record.u32_at(offset_of!(ExecEvent, old_tid))?,
                filename: String::from_utf8_lossy(
                    record.bytes_at(offset_of!(ExecEvent, filename), len)?,
                )
                .into_owned(),
            }
        }
        EventKind::Exit => {
            let status = record.i32_at(offset_of!(ExitEvent, status))?;
            Event::Exit {
                status: (status >= 0).then_some(status),
            }
        }
        EventKind::FileOp => {
            let op = FileOp::from_u32(record.u32_at(offset_of!(FileOpEvent, op))?)
                .ok_or_else(|| record.malformed("unknown file operation"))?;
            let paths = offset_of!(FileOpEvent, paths);
            let path_len = record.u32_at(offset_of!(FileOpEvent, path_len))?;
            let path2_len = record.u32_at(offset_of!(FileOpEvent, path2_len))?;
            let path2 = if path2_len > 0 {
                record.bytes_at(paths + PATH_CAPACITY, path2_len)?.to_vec()
            } else {
                Vec::new()
            };
            Event::FileOp {
                op,
                flags: record.u32_at(offset_of!(FileOpEvent, flags))?,
                dirfd: record.i32_at(offset_of!(FileOpEvent, dirfd))?,
                dirfd2: record.i32_at(offset_of!(FileOpEvent, dirfd2))?,
                result: record.u64_at(offset_of!(FileOpEvent, result))? as i64,
                path: record.bytes_at(paths, path_len)?.to_vec(),
                path2,
            }
        }
    };
    Ok((header, event))
}

/// The kernel's argv block: each argument followed by a NUL.
fn split_argv(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(b"\0").unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&byte| byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
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
    fn decodes_argv_with_empty_arguments() {
        let mut bytes = header_bytes(EventKind::ExecArgv, 7);
        let argv = b"tar\0cf\0\0x.tar\0";
        bytes.extend(0u32.to_ne_bytes());
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
                argv: vec!["tar".into(), "cf".into(), "".into(), "x.tar".into()],
                truncated: false
            }
        );
    }

    #[test]
    fn rejects_a_string_longer_than_the_record() {
        let mut bytes = header_bytes(EventKind::Exec, 7);
        bytes.extend(7u32.to_ne_bytes());
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
