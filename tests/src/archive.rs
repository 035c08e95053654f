//! An in-memory tar archive built member by member, for tests that craft image archives
//! (well-formed or hostile): the reader's unit tests and the binary-level adversarial suite.

use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Clone, Debug)]
pub enum Member {
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

/// An archive as an ordered member list that tests reorder, replace and drop members of.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    pub members: Vec<(String, Member)>,
}

impl Archive {
    pub fn file(&mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.members.push((name.into(), Member::File(bytes.into())));
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.members
            .push((name.to_owned(), Member::Symlink(target.to_owned())));
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.members
            .push((name.to_owned(), Member::Hardlink(target.to_owned())));
        self
    }

    /// Replaces a member (keeping its position) by a file or link.
    pub fn set(&mut self, name: &str, member: Member) -> &mut Self {
        let slot = self
            .members
            .iter_mut()
            .find(|(existing, _)| existing == name)
            .unwrap_or_else(|| panic!("no member {name}"));
        slot.1 = member;
        self
    }

    pub fn replace(&mut self, name: &str, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.set(name, Member::File(bytes.into()))
    }

    pub fn remove(&mut self, name: &str) -> &mut Self {
        let before = self.members.len();
        self.members.retain(|(existing, _)| existing != name);
        assert!(self.members.len() < before, "no member {name}");
        self
    }

    pub fn bytes(&self, name: &str) -> Vec<u8> {
        self.members
            .iter()
            .find_map(|(existing, member)| match member {
                Member::File(bytes) if existing == name => Some(bytes.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no file {name}"))
    }

    pub fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&self.bytes(name)).unwrap()
    }

    pub fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, member) in &self.members {
            let (kind, data, link) = match member {
                Member::File(bytes) => (tar::EntryType::Regular, bytes.as_slice(), ""),
                Member::Symlink(target) => (tar::EntryType::Symlink, &[][..], target.as_str()),
                Member::Hardlink(target) => (tar::EntryType::Link, &[][..], target.as_str()),
            };
            builder
                .append(&ustar_header(name, kind, data.len() as u64, link), data)
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.tar()).unwrap();
        path
    }
}

/// Written field by field so tests can use the names hostile archives use (`..`, absolute),
/// which the tar crate's own setters refuse.
pub fn ustar_header(name: &str, kind: tar::EntryType, size: u64, link: &str) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header
}
