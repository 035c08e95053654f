//! Where the kernel programs find their data on the running kernel: byte offsets of the
//! kernel struct members they read, from the kernel's BTF (`/sys/kernel/btf/vmlinux`).

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context as _};
use oci_attest_common::Layout;

/// The kernel's BTF, where member offsets of kernel structs are published.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The layout of the running kernel, from its BTF.
pub fn read_layout() -> anyhow::Result<Layout> {
    let raw = std::fs::read(VMLINUX_BTF)
        .with_context(|| format!("{VMLINUX_BTF}: kernel BTF unreadable (CONFIG_DEBUG_INFO_BTF)"))?;
    let btf = Btf::parse(&raw).map_err(|problem| anyhow!("{VMLINUX_BTF}: {problem}"))?;
    layout_from(&btf)
}

/// Every offset the programs need; a missing member is an error naming it.
pub fn layout_from(btf: &Btf) -> anyhow::Result<Layout> {
    let at = |spec: &str| -> anyhow::Result<u32> {
        let (structure, member) = spec
            .split_once(':')
            .ok_or_else(|| anyhow!("bad member spec {spec}"))?;
        btf.member_offset(structure, member)
            .ok_or_else(|| anyhow!("kernel BTF has no member {member} in struct {structure}"))
    };
    // Members renamed between kernel versions: the first that exists.
    let first_of = |specs: &[&str]| -> anyhow::Result<u32> {
        specs
            .iter()
            .find_map(|spec| at(spec).ok())
            .ok_or_else(|| anyhow!("kernel BTF has none of {}", specs.join(", ")))
    };
    Ok(Layout {
        task_pid: at("task_struct:pid")?,
        task_tgid: at("task_struct:tgid")?,
        task_files: at("task_struct:files")?,
        task_fs: at("task_struct:fs")?,
        task_mm: at("task_struct:mm")?,
        task_signal: at("task_struct:signal")?,
        task_exit_code: at("task_struct:exit_code")?,
        task_thread_status: at("task_struct:thread_info.status")?,
        signal_live: at("signal_struct:live")?,
        files_fdt: at("files_struct:fdt")?,
        fdt_max_fds: at("fdtable:max_fds")?,
        fdt_fd: at("fdtable:fd")?,
        file_path: at("file:f_path")?,
        file_inode: at("file:f_inode")?,
        file_mode: at("file:f_mode")?,
        path_mnt: at("path:mnt")?,
        path_dentry: at("path:dentry")?,
        dentry_parent: at("dentry:d_parent")?,
        dentry_name: at("dentry:d_name")?,
        qstr_len: at("qstr:len")?,
        qstr_name: at("qstr:name")?,
        inode_ino: at("inode:i_ino")?,
        inode_sb: at("inode:i_sb")?,
        inode_mode: at("inode:i_mode")?,
        inode_nlink: at("inode:i_nlink")?,
        inode_generation: at("inode:i_generation")?,
        inode_size: at("inode:i_size")?,
        inode_ctime_sec: first_of(&[
            "inode:i_ctime_sec",
            "inode:__i_ctime.tv_sec",
            "inode:i_ctime.tv_sec",
        ])?,
        inode_ctime_nsec: first_of(&[
            "inode:i_ctime_nsec",
            "inode:__i_ctime.tv_nsec",
            "inode:i_ctime.tv_nsec",
        ])?,
        inode_dentries: at("inode:i_dentry")?,
        dentry_alias: at("dentry:d_u.d_alias")?,
        task_flags: at("task_struct:flags")?,
        // An enum member since 6.12 (its value moved); a define of 1 << 2 before.
        dirty_pages_flag: btf.enum_value("I_DIRTY_PAGES").unwrap_or(1 << 2),
        sb_dev: at("super_block:s_dev")?,
        sb_magic: at("super_block:s_magic")?,
        mount_mnt: at("mount:mnt")?,
        mount_parent: at("mount:mnt_parent")?,
        mount_mountpoint: at("mount:mnt_mountpoint")?,
        vfsmount_root: at("vfsmount:mnt_root")?,
        fs_root: at("fs_struct:root")?,
        fs_pwd: at("fs_struct:pwd")?,
        mm_arg_start: at("mm_struct:arg_start")?,
        mm_arg_end: at("mm_struct:arg_end")?,
        binprm_file: at("linux_binprm:file")?,
        binprm_secureexec_bit: btf
            .member_bit_offset("linux_binprm", "secureexec")
            .ok_or_else(|| anyhow!("kernel BTF has no member secureexec in struct linux_binprm"))?,
        task_cred: at("task_struct:cred")?,
        cred_uid: at("cred:uid")?,
        cred_euid: at("cred:euid")?,
        cred_cap_effective: at("cred:cap_effective")?,
        cred_cap_permitted: at("cred:cap_permitted")?,
        proc_inode_pid: at("proc_inode:pid")?,
        proc_inode_vfs_inode: at("proc_inode:vfs_inode")?,
        pid_tasks: at("pid:tasks")?,
        task_pid_links: at("task_struct:pid_links")?,
        file_private_data: at("file:private_data")?,
        inode_private: at("inode:i_private")?,
        signal_pids: at("signal_struct:pids")?,
        pid_numbers: at("pid:numbers")?,
        files_count: at("files_struct:count")?,
    })
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Member {
    name: u32,
    type_id: u32,
    offset_bits: u32,
}

/// One type, decoded from its record when asked for.
struct Type {
    kind: u32,
    /// The referenced type of a typedef/const/volatile/...
    target: u32,
    bitfields: bool,
    vlen: usize,
    /// Byte offset of the record's trailing data (struct/union members).
    trailing: usize,
}

/// The types of a raw BTF blob (format: the kernel's Documentation/bpf/btf.rst), enough to
/// find member offsets, including members nested in anonymous structs and unions. Parsing
/// only indexes where each type's record starts (vmlinux has about 100k types); members are
/// decoded when a lookup needs them.
///
/// Written here because aya parses BTF but keeps member offsets private.
pub struct Btf<'a> {
    raw: &'a [u8],
    strings: &'a [u8],
    /// Type id n starts at `starts[n - 1]`.
    starts: Vec<u32>,
    structs: HashMap<&'a [u8], u32>,
}

fn u32_in(raw: &[u8], offset: usize) -> Option<u32> {
    raw.get(offset..offset + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_le_bytes)
}

impl<'a> Btf<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Btf<'a>, String> {
        let u32_at = |offset: usize| {
            u32_in(raw, offset).ok_or_else(|| format!("truncated at byte {offset}"))
        };
        if raw.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err("not BTF (bad magic)".into());
        }
        let header_len = u32_at(4)? as usize;
        let types_start = header_len + u32_at(8)? as usize;
        let types_end = types_start + u32_at(12)? as usize;
        let strings_start = header_len + u32_at(16)? as usize;
        let strings_end = strings_start + u32_at(20)? as usize;
        let strings = raw
            .get(strings_start..strings_end)
            .ok_or("string section out of bounds")?;
        if types_end > raw.len() {
            return Err("type section out of bounds".into());
        }
        let mut btf = Btf {
            raw,
            strings,
            starts: Vec::new(),
            structs: HashMap::new(),
        };
        let mut cursor = types_start;
        while cursor + 12 <= types_end {
            let name = u32_at(cursor)?;
            let info = u32_at(cursor + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let trailing = match kind {
                1 | 14 | 17 => 4,          // int, var, decl_tag
                3 => 12,                   // array
                4 | 5 => 12 * vlen,        // struct, union: members
                6 | 13 => 8 * vlen,        // enum, func_proto
                15 | 19 => 12 * vlen,      // datasec, enum64
                2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
                other => return Err(format!("unknown BTF kind {other}")),
            };
            let start = u32::try_from(cursor).map_err(|_| "BTF larger than 4 GiB")?;
            btf.starts.push(start);
            if kind == KIND_STRUCT && name != 0 {
                let id = btf.starts.len() as u32;
                // The first definition wins: later ones are rare same-named duplicates.
                btf.structs.entry(btf.name(name)).or_insert(id);
            }
            cursor += 12 + trailing;
        }
        Ok(btf)
    }

    fn name(&self, offset: u32) -> &'a [u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(rest.len())]
    }

    fn get(&self, id: u32) -> Option<Type> {
        let start = *self.starts.get((id as usize).checked_sub(1)?)? as usize;
        let info = u32_in(self.raw, start + 4)?;
        Some(Type {
            kind: (info >> 24) & 0x1f,
            target: u32_in(self.raw, start + 8)?,
            bitfields: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            trailing: start + 12,
        })
    }

    fn members(&self, of: &Type) -> impl Iterator<Item = Member> + '_ {
        let (trailing, bitfields) = (of.trailing, of.bitfields);
        (0..of.vlen).filter_map(move |index| {
            let entry = trailing + 12 * index;
            let offset = u32_in(self.raw, entry + 8)?;
            Some(Member {
                name: u32_in(self.raw, entry)?,
                type_id: u32_in(self.raw, entry + 4)?,
                offset_bits: if bitfields {
                    offset & 0x00ff_ffff
                } else {
                    offset
                },
            })
        })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..32 {
            let found = self.get(id)?;
            match found.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = found.target
                }
                _ => return Some(found),
            }
        }
        None
    }

    /// The value of the enum member `name` in any enum (the first found), if it fits in 32 bits.
    pub fn enum_value(&self, name: &str) -> Option<u32> {
        (1..=self.starts.len() as u32).find_map(|id| {
            let found = self.get(id)?;
            if found.kind != KIND_ENUM {
                return None;
            }
            (0..found.vlen).find_map(|index| {
                let entry = found.trailing + 8 * index;
                (self.name(u32_in(self.raw, entry)?) == name.as_bytes())
                    .then(|| u32_in(self.raw, entry + 4))
                    .flatten()
            })
        })
    }

    /// Byte offset of `member` (dotted for nested members: `thread_info.status`) in
    /// `struct name`, looking through anonymous structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let bits = self.member_bit_offset(name, member)?;
        (bits % 8 == 0).then_some(bits / 8)
    }

    /// Bit offset of `member` in `struct name` (as [`Btf::member_offset`]), for bitfields.
    pub fn member_bit_offset(&self, name: &str, member: &str) -> Option<u32> {
        let mut current = self.get(*self.structs.get(name.as_bytes())?)?;
        let mut total_bits = 0;
        let mut parts = member.split('.').peekable();
        while let Some(part) = parts.next() {
            let (bits, type_id) = self.find_member(&current, part.as_bytes(), 0)?;
            total_bits += bits;
            if parts.peek().is_some() {
                current = self.resolve(type_id)?;
            }
        }
        Some(total_bits)
    }

    fn find_member(&self, within: &Type, name: &[u8], depth: u32) -> Option<(u32, u32)> {
        if depth > 8 || !(within.kind == KIND_STRUCT || within.kind == KIND_UNION) {
            return None;
        }
        if let Some(found) = self.members(within).find(|m| self.name(m.name) == name) {
            return Some((found.offset_bits, found.type_id));
        }
        self.members(within)
            .filter(|m| m.name == 0)
            .find_map(|anonymous| {
                let inner = self.resolve(anonymous.type_id)?;
                let (bits, type_id) = self.find_member(&inner, name, depth + 1)?;
                Some((anonymous.offset_bits + bits, type_id))
            })
    }
}

/// Fails unless this is x86_64: the syscall table and the saved-register layout are x86_64's.
pub fn check_architecture() -> anyhow::Result<()> {
    if cfg!(target_arch = "x86_64") {
        Ok(())
    } else {
        bail!("the kernel programs model x86_64 syscalls only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: int; struct pair { int first; union { int a; struct { int b; } ; }; }
    /// and a typedef of the inner struct, to exercise anonymous members.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0pair\0first\0a\0b\0outer\0inner\0";
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
        push(&[1, 1 << 24, 4, 32]); // [1] int
        push(&[0, (4 << 24) | 1, 4]); // [2] anonymous struct { int b; }
        push(&[18, 1, 0]); //    b at 0
        push(&[0, (5 << 24) | 2, 4]); // [3] anonymous union { int a; struct [2]; }
        push(&[16, 1, 0]); //    a at 0
        push(&[0, 2, 0]); //     anonymous [2] at 0
        push(&[5, (4 << 24) | 2, 8]); // [4] struct pair
        push(&[10, 1, 0]); //    first at 0
        push(&[0, 3, 32]); //    anonymous [3] at 32 bits
        push(&[20, (4 << 24) | 1, 8]); // [5] struct outer { struct pair inner at 64 bits }
        push(&[26, 4, 64]);
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
        btf
    }

    #[test]
    fn finds_direct_anonymous_and_nested_members() {
        let raw = blob();
        let btf = Btf::parse(&raw).unwrap();
        assert_eq!(btf.member_offset("pair", "first"), Some(0));
        assert_eq!(btf.member_offset("pair", "a"), Some(4));
        assert_eq!(btf.member_offset("pair", "b"), Some(4));
        assert_eq!(btf.member_offset("outer", "inner.b"), Some(12));
        assert_eq!(btf.member_offset("pair", "third"), None);
        assert_eq!(btf.member_offset("other", "first"), None);
    }

    #[test]
    fn rejects_truncated_or_foreign_blobs() {
        let raw = blob();
        assert!(Btf::parse(&raw[..10]).is_err());
        assert!(Btf::parse(b"\x7fELF").is_err());
    }

    #[test]
    fn the_running_kernel_has_every_member() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{VMLINUX_BTF} missing (CI=true: the layout must be checked)");
            }
            eprintln!("SKIPPED the_running_kernel_has_every_member: no {VMLINUX_BTF}");
            return;
        }
        let layout = read_layout().unwrap();
        assert!(layout.task_tgid > 0 && layout.inode_sb > 0 && layout.mm_arg_end > 0);
        assert!(layout.inode_ctime_sec > 0 && layout.dentry_alias > 0);
        assert!(layout.dirty_pages_flag.is_power_of_two());
        assert!(layout.binprm_secureexec_bit / 8 < layout.binprm_file);
        assert!(layout.proc_inode_vfs_inode > layout.proc_inode_pid);
    }
}
