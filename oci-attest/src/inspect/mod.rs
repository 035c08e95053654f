//! The image-archive reader: docker-archive tars, OCI image layouts (tar or directory), their
//! hybrid, gzip-wrapped tars. One sequential streaming read, every claimed digest checked.
//!
//! This module knows nothing of tracing, attestation collections or signing: it turns a path
//! into verified facts about the images inside ([`Analysis`]) or a precise error.
//!
//! How: [`scan`] reads the file once, in order, feeding a whole-file hasher and a pool of
//! [`digester`] workers that hash every member (and decompress layers) as it streams past;
//! [`members`] keeps the results by name and resolves links; [`docker`] and [`layout`] then
//! verify each image through [`image`]; [`predicate`] writes the result.
// Input is hostile: no panicking shortcuts outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod chunk;
mod digester;
mod docker;
pub mod image;
mod layout;
mod members;
mod predicate;
mod scan;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::DigestSet;

/// Bounds on decompression, so a bomb fails with a clear error instead of running forever.
#[derive(Clone, Copy, Debug)]
pub struct DecompressionLimits {
    /// Total decompressed bytes over all layers of one archive.
    pub max_total_bytes: u64,
    /// Largest decompressed/compressed ratio of one layer (checked once the layer is past 1 MiB).
    pub max_ratio: u64,
}

impl Default for DecompressionLimits {
    fn default() -> Self {
        DecompressionLimits {
            max_total_bytes: 1 << 40,
            max_ratio: 1000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub limits: DecompressionLimits,
    /// Layers one image may have (docker itself stops at 127; see [`image::MAX_LAYERS`]).
    pub max_layers: usize,
    /// Show a progress bar on stderr (callers pass `true` only when stderr is a terminal).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: DecompressionLimits::default(),
            max_layers: image::MAX_LAYERS,
            progress: false,
        }
    }
}

/// What kind of image archive a path holds, judged by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    GzipTar,
    LayoutDir,
}

/// Why an archive could not be analysed. The message names the file and member.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InspectError {
    pub path: PathBuf,
    pub message: String,
}

/// The verified facts of one archive.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub path: PathBuf,
    /// SHA-256 of the archive file as read (the `tardigest`); `None` for a layout directory.
    pub file_sha256: Option<String>,
    pub predicate: OciPredicate,
    /// Every image, verified, in predicate order (`manifest.json` order, then index order).
    pub images: Vec<image::Image>,
}

/// The `https://aflock.ai/attestations/oci/v0.1` predicate (SPEC 3.1), keys in wire order.
#[derive(Clone, Debug, Serialize)]
pub struct OciPredicate {
    pub tardigest: DigestSet,
    pub manifest: Vec<serde_json::Value>,
    pub imagetags: Option<Vec<String>>,
    pub diffids: Vec<DigestSet>,
    pub imageid: DigestSet,
    pub manifestraw: String,
    pub manifestdigest: DigestSet,
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<serde_json::Value>>,
}

/// Is `path` an image archive (tar content, gzip tar, or an OCI layout directory)?
pub fn sniff(path: &Path) -> io::Result<Option<ArchiveKind>> {
    let metadata = std::fs::metadata(path)?;
    if metadata.is_dir() {
        let is_layout =
            path.join(layout::LAYOUT_MARKER).is_file() && path.join(layout::INDEX).is_file();
        return Ok(is_layout.then_some(ArchiveKind::LayoutDir));
    }
    if !metadata.is_file() {
        return Ok(None);
    }
    let mut start = Vec::with_capacity(512);
    File::open(path)?.take(512).read_to_end(&mut start)?;
    if is_tar_header(&start) {
        return Ok(Some(ArchiveKind::Tar));
    }
    if digester::Compression::sniff(&start) == digester::Compression::Gzip {
        let mut inner = Vec::with_capacity(512);
        let decoder = flate2::read::MultiGzDecoder::new(File::open(path)?);
        // A damaged stream is simply not a gzip tar.
        if decoder.take(512).read_to_end(&mut inner).is_ok() && is_tar_header(&inner) {
            return Ok(Some(ArchiveKind::GzipTar));
        }
    }
    Ok(None)
}

/// ustar/GNU magic, or a pre-POSIX (v7) header whose checksum adds up.
fn is_tar_header(block: &[u8]) -> bool {
    let Ok(block) = <&[u8; 512]>::try_from(block) else {
        return false;
    };
    if &block[257..262] == b"ustar" {
        return true;
    }
    let header = tar::Header::from_byte_slice(block);
    let Ok(stored) = header.cksum() else {
        return false;
    };
    let unsigned: u32 = block
        .iter()
        .enumerate()
        .map(|(index, &byte)| {
            if (148..156).contains(&index) {
                32
            } else {
                u32::from(byte)
            }
        })
        .sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(index, &byte)| {
            if (148..156).contains(&index) {
                32
            } else {
                i64::from(byte as i8)
            }
        })
        .sum();
    // An all-zero block sums to 256 with a stored 0: it is the end of an (empty) archive, not a header.
    block[0] != 0 && (stored == unsigned || i64::from(stored) == signed)
}

/// Reads and verifies the archive at `path`.
pub fn analyze(path: &Path, options: &Options) -> Result<Analysis, InspectError> {
    let fail = |message: String| InspectError {
        path: path.to_owned(),
        message: one_line(&message),
    };
    let kind = sniff(path)
        .map_err(|error| fail(format!("cannot read: {error}")))?
        .ok_or_else(|| {
            fail("not an image archive (neither a tar, a gzip-compressed tar nor an OCI layout directory)".to_owned())
        })?;
    let scanned = scan::scan(path, kind, options).map_err(&fail)?;
    let members = &scanned.members;
    check_blob_names(members).map_err(&fail)?;
    let docker = members
        .contains(docker::MANIFEST)
        .then(|| docker::read(members, options.max_layers))
        .transpose()
        .map_err(&fail)?;
    let layout = members
        .contains(layout::INDEX)
        .then(|| layout::read(members, options.max_layers))
        .transpose()
        .map_err(&fail)?;
    if docker.is_none() && layout.is_none() {
        return Err(fail(format!(
            "neither {} (docker-archive) nor {} (OCI layout): not an image archive",
            docker::MANIFEST,
            layout::INDEX
        )));
    }
    let images = predicate::merge_images(docker.as_ref(), layout.as_deref().unwrap_or_default());
    let predicate = predicate::build(
        scanned.file_sha256.as_deref(),
        docker.as_ref(),
        layout.as_deref(),
        &images,
    )
    .map_err(&fail)?;
    Ok(Analysis {
        path: path.to_owned(),
        file_sha256: scanned.file_sha256,
        predicate,
        images,
    })
}

/// Escapes control characters: parser errors can quote raw header bytes, and a newline or a
/// terminal escape from a hostile archive must not forge extra lines of output.
fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len());
    for ch in message.chars() {
        if ch.is_control() {
            line.extend(ch.escape_debug());
        } else {
            line.push(ch);
        }
    }
    line
}

/// Every member named by a digest must hold exactly that content, referenced or not.
fn check_blob_names(members: &members::Members) -> Result<(), String> {
    for (name, facts) in members.files() {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if image::is_sha256_hex(hex) && facts.sha256 != hex {
                return Err(format!(
                    "blob {name:?} has digest sha256:{}, not the one its name claims",
                    facts.sha256
                ));
            }
        }
    }
    Ok(())
}
