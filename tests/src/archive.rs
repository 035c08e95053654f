//! Image archives built in memory, for tests and tools that craft them (well-formed or
//! hostile): the reader's unit tests, the binary-level adversarial suite, the fuzz seeds and
//! the inspect benchmark. An [`Archive`] is built member by member; the functions below make
//! the blobs that go into one (layers, configs, descriptors).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The content of an OCI layout's `oci-layout` file.
pub const LAYOUT_MARKER: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Gzip at the fastest level (what the save tools write is irrelevant to the digests).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Deterministic text-like bytes: they compress like a real layer, not like zeros.
pub fn sample_text(len: usize, seed: u32) -> Vec<u8> {
    let mut state = 0x9e37_79b9_u32 ^ seed.wrapping_mul(0x85eb_ca6b) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            b"etc/usr/bin lib share \n"[(state % 23) as usize]
        })
        .collect()
}

/// A layer tar (uncompressed) holding one regular file.
pub fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, name, content)
        .expect("writing a tar to memory");
    builder.into_inner().expect("writing a tar to memory")
}

/// An image config (linux/amd64) whose `rootfs.diff_ids` are the given hex digests.
pub fn config_json(diff_ids: &[String]) -> Vec<u8> {
    let diff_ids: Vec<String> = diff_ids.iter().map(|hex| format!("sha256:{hex}")).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("serialising a json! literal")
}

/// An OCI descriptor of `bytes`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": format!("sha256:{}", sha256_hex(bytes)), "size": bytes.len()})
}

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
