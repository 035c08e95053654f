//! The image-archive reader: docker-archive tars, OCI image layouts (tar or directory), their
//! hybrid, gzip-wrapped tars. One sequential streaming read, every claimed digest checked.
//!
//! This module knows nothing of tracing, attestation collections or signing: it turns a path
//! into verified facts about the images inside ([`Analysis`]) or a precise error.
//!
//! STUB: the interface other modules code against; the archive work fills it in.

use std::io;
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

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub limits: DecompressionLimits,
    /// Show a progress bar on stderr (callers pass `true` only when stderr is a terminal).
    pub progress: bool,
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
pub fn sniff(_path: &Path) -> io::Result<Option<ArchiveKind>> {
    todo!("archive reader")
}

/// Reads and verifies the archive at `path`.
pub fn analyze(_path: &Path, _options: &Options) -> Result<Analysis, InspectError> {
    todo!("archive reader")
}
