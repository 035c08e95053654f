//! Where the kernel programs find their data on the running kernel: tracepoint field offsets
//! from the tracefs `format` files, and the offset of `task_struct.exit_code` from BTF.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_attest_common::{Layout, Syscall, SyscallFields, ABSENT};

/// The tracefs mount points, in the order the kernel documentation prefers them.
const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The mounted, readable tracefs, or why there is none.
pub fn tracefs_root() -> Result<PathBuf, String> {
    if let Some(root) = TRACEFS_MOUNTS
        .iter()
        .map(PathBuf::from)
        .find(|root| root.join("events").is_dir())
    {
        return Ok(root);
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    match mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1).zip(line.split(' ').nth(2)))
        .find(|(_, kind)| *kind == "tracefs")
    {
        Some((mount_point, _)) => Err(format!(
            "tracefs at {mount_point} is not readable by this user"
        )),
        None => Err("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)".into()),
    }
}

/// Fields of one tracepoint record: name → byte offset.
#[derive(Debug, Default)]
pub struct TracepointFormat {
    offsets: HashMap<String, i32>,
}

impl TracepointFormat {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> anyhow::Result<Self> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        Self::parse(&text).map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))
    }

    /// Parses lines like `field:const char * filename; offset:24; size:8; signed:0;` (tab-separated).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut offsets = HashMap::new();
        for line in text.lines().map(str::trim) {
            let Some(declaration) = line.strip_prefix("field:") else {
                continue;
            };
            let mut parts = declaration.split(';').map(str::trim);
            let declaration = parts.next().unwrap_or_default();
            let name = declaration
                .rsplit([' ', '*'])
                .next()
                .map(|name| name.split('[').next().unwrap_or(name))
                .filter(|name| !name.is_empty())
                .ok_or_else(|| format!("no field name in `{line}`"))?;
            let offset = parts
                .find_map(|part| part.strip_prefix("offset:"))
                .ok_or_else(|| format!("no offset in `{line}`"))?
                .parse::<i32>()
                .map_err(|_| format!("bad offset in `{line}`"))?;
            offsets.insert(name.to_string(), offset);
        }
        if offsets.is_empty() {
            return Err("no fields".to_string());
        }
        Ok(TracepointFormat { offsets })
    }

    pub fn offset(&self, field: &str) -> Option<i32> {
        self.offsets.get(field).copied()
    }

    fn require(&self, tracepoint: &str, field: &str) -> anyhow::Result<i32> {
        self.offset(field)
            .ok_or_else(|| anyhow::anyhow!("tracepoint {tracepoint} has no field `{field}`"))
    }
}

/// The field names each syscall program reads, as the kernel's `SYSCALL_DEFINE`s name them.
pub struct SyscallSpec {
    pub syscall: Syscall,
    pub name: &'static str,
    pub dirfd: Option<&'static str>,
    pub path: Option<&'static str>,
    pub dirfd2: Option<&'static str>,
    pub path2: Option<&'static str>,
    pub flags: Option<&'static str>,
    pub open_how: Option<&'static str>,
    pub argv: Option<&'static str>,
    /// Only some architectures have it (arm64 lacks open, creat, rename, unlink, ...).
    pub legacy: bool,
}

const NONE: SyscallSpec = SyscallSpec {
    syscall: Syscall::Open,
    name: "",
    dirfd: None,
    path: None,
    dirfd2: None,
    path2: None,
    flags: None,
    open_how: None,
    argv: None,
    legacy: false,
};

pub const SYSCALLS: [SyscallSpec; oci_attest_common::SYSCALL_COUNT] = [
    SyscallSpec {
        syscall: Syscall::Open,
        name: "open",
        path: Some("filename"),
        flags: Some("flags"),
        legacy: true,
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Openat,
        name: "openat",
        dirfd: Some("dfd"),
        path: Some("filename"),
        flags: Some("flags"),
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Openat2,
        name: "openat2",
        dirfd: Some("dfd"),
        path: Some("filename"),
        open_how: Some("how"),
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Creat,
        name: "creat",
        path: Some("pathname"),
        legacy: true,
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Rename,
        name: "rename",
        path: Some("oldname"),
        path2: Some("newname"),
        legacy: true,
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Renameat,
        name: "renameat",
        dirfd: Some("olddfd"),
        path: Some("oldname"),
        dirfd2: Some("newdfd"),
        path2: Some("newname"),
        legacy: true,
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Renameat2,
        name: "renameat2",
        dirfd: Some("olddfd"),
        path: Some("oldname"),
        dirfd2: Some("newdfd"),
        path2: Some("newname"),
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Unlink,
        name: "unlink",
        path: Some("pathname"),
        legacy: true,
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Unlinkat,
        name: "unlinkat",
        dirfd: Some("dfd"),
        path: Some("pathname"),
        flags: Some("flag"),
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Chdir,
        name: "chdir",
        path: Some("filename"),
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Fchdir,
        name: "fchdir",
        dirfd: Some("fd"),
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Execve,
        name: "execve",
        argv: Some("argv"),
        ..NONE
    },
    SyscallSpec {
        syscall: Syscall::Execveat,
        name: "execveat",
        argv: Some("argv"),
        ..NONE
    },
];

impl SyscallSpec {
    fn fields(&self, tracefs: &Path) -> anyhow::Result<SyscallFields> {
        let enter_name = format!("sys_enter_{}", self.name);
        let exit_name = format!("sys_exit_{}", self.name);
        let enter = TracepointFormat::read(tracefs, "syscalls", &enter_name)?;
        let exit = TracepointFormat::read(tracefs, "syscalls", &exit_name)?;
        let field = |name: Option<&str>| -> anyhow::Result<i32> {
            name.map_or(Ok(ABSENT), |name| enter.require(&enter_name, name))
        };
        Ok(SyscallFields {
            dirfd: field(self.dirfd)?,
            path: field(self.path)?,
            dirfd2: field(self.dirfd2)?,
            path2: field(self.path2)?,
            flags: field(self.flags)?,
            open_how: field(self.open_how)?,
            argv: field(self.argv)?,
            ret: exit.require(&exit_name, "ret")?,
        })
    }

    /// Whether this kernel has the syscall's tracepoints.
    pub fn present(&self, tracefs: &Path) -> bool {
        tracefs
            .join("events/syscalls")
            .join(format!("sys_enter_{}", self.name))
            .is_dir()
    }
}

/// Reads the layout of every tracepoint the programs use. Syscalls this architecture lacks
/// (legacy ones) keep [`ABSENT`] fields; everything else must be present.
pub fn read_layout(tracefs: &Path) -> anyhow::Result<Layout> {
    let mut layout = Layout::ABSENT;
    for spec in &SYSCALLS {
        if spec.legacy && !spec.present(tracefs) {
            continue;
        }
        layout.syscalls[spec.syscall as usize] = spec.fields(tracefs)?;
    }
    let fork = TracepointFormat::read(tracefs, "sched", "sched_process_fork")?;
    layout.fork_child_pid = fork.require("sched_process_fork", "child_pid")?;
    let exec = TracepointFormat::read(tracefs, "sched", "sched_process_exec")?;
    layout.exec_filename = exec.require("sched_process_exec", "filename")?;
    layout.exec_old_pid = exec.require("sched_process_exec", "old_pid")?;
    let exit = TracepointFormat::read(tracefs, "sched", "sched_process_exit")?;
    layout.exit_group_dead = exit.offset("group_dead").unwrap_or(ABSENT);
    layout.task_exit_code = task_exit_code_offset().unwrap_or(ABSENT);
    Ok(layout)
}

/// The kernel's BTF, where member offsets of kernel structs are published.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Byte offset of `task_struct.exit_code`, from the kernel's BTF; `None` without BTF.
fn task_exit_code_offset() -> Option<i32> {
    let btf = std::fs::read(VMLINUX_BTF).ok()?;
    struct_member_offset(&btf, "task_struct", "exit_code")
}

/// Byte offset of a direct member of a struct in raw BTF data.
///
/// Written by hand because aya parses BTF but keeps member offsets private; this walks the
/// type section once (format: Documentation/bpf/btf.rst), which is all that is needed here.
pub fn struct_member_offset(btf: &[u8], struct_name: &str, member: &str) -> Option<i32> {
    const KIND_STRUCT: u32 = 4;
    let u32_at = |offset: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            btf.get(offset..offset + 4)?.try_into().ok()?,
        ))
    };
    if btf.get(0..2)? != [0x9f, 0xeb] {
        return None;
    }
    let header_len = u32_at(4)? as usize;
    let types_start = header_len + u32_at(8)? as usize;
    let types_end = types_start + u32_at(12)? as usize;
    let strings_start = header_len + u32_at(16)? as usize;
    let strings_end = strings_start + u32_at(20)? as usize;
    let name_at = |name_offset: u32| -> Option<&[u8]> {
        let start = strings_start + name_offset as usize;
        let rest = btf.get(start..strings_end)?;
        Some(&rest[..rest.iter().position(|&byte| byte == 0)?])
    };

    let mut cursor = types_start;
    while cursor + 12 <= types_end {
        let name_offset = u32_at(cursor)?;
        let info = u32_at(cursor + 4)?;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        let vlen = (info & 0xffff) as usize;
        cursor += 12;
        let trailing = match kind {
            1 | 14 | 17 => 4,          // int, var, decl_tag
            3 => 12,                   // array
            4 | 5 => 12 * vlen,        // struct, union: members
            6 | 13 => 8 * vlen,        // enum, func_proto
            15 | 19 => 12 * vlen,      // datasec, enum64
            2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
            _ => return None,
        };
        if kind == KIND_STRUCT && name_at(name_offset)? == struct_name.as_bytes() {
            for index in 0..vlen {
                let entry = cursor + 12 * index;
                if name_at(u32_at(entry)?)? == member.as_bytes() {
                    let raw = u32_at(entry + 8)?;
                    let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    return i32::try_from(bits / 8).ok();
                }
            }
            return None;
        }
        cursor += trailing;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT_FORMAT: &str = "name: sys_enter_openat\nID: 1\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;\n\
        \tfield:__data_loc char[] parent_comm;\toffset:56;\tsize:4;\tsigned:0;\n\
        \nprint fmt: \"...\"\n";

    #[test]
    fn parses_tracefs_format_fields() {
        let format = TracepointFormat::parse(OPENAT_FORMAT).unwrap();
        assert_eq!(format.offset("dfd"), Some(16));
        assert_eq!(format.offset("filename"), Some(24));
        assert_eq!(format.offset("comm"), Some(40));
        assert_eq!(format.offset("parent_comm"), Some(56));
        assert_eq!(format.offset("flags"), None);
    }

    #[test]
    fn rejects_a_format_without_fields() {
        assert!(TracepointFormat::parse("name: x\nprint fmt: \"\"\n").is_err());
    }

    #[test]
    fn rejects_a_field_without_offset() {
        assert!(TracepointFormat::parse("\tfield:int dfd;\tsize:8;\n").is_err());
    }

    #[test]
    fn finds_a_struct_member_in_btf() {
        // A minimal BTF blob: int, then struct pair { int first; int second; } (second at 32 bits).
        let strings = b"\0int\0pair\0first\0second\0";
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
        push(&[1, 1 << 24, 4, 32]); // [1] int, 4 bytes, 32 bits
        push(&[5, (4 << 24) | 2, 8]); // [2] struct pair, 2 members
        push(&[10, 1, 0]); // first: int at bit 0
        push(&[16, 1, 32]); // second: int at bit 32
        let mut btf = vec![0x9f, 0xeb, 1, 0];
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            btf.extend(word.to_le_bytes());
        }
        btf.extend(&types);
        btf.extend(strings);
        assert_eq!(struct_member_offset(&btf, "pair", "second"), Some(4));
        assert_eq!(struct_member_offset(&btf, "pair", "first"), Some(0));
        assert_eq!(struct_member_offset(&btf, "pair", "third"), None);
        assert_eq!(struct_member_offset(&btf, "other", "first"), None);
        assert_eq!(struct_member_offset(&btf[..10], "pair", "first"), None);
    }
}
