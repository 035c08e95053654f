//! The image-archive reader: docker-archive tars, OCI image layouts (tar or directory), their
//! hybrid, gzip-wrapped tars. One sequential streaming read, every claimed digest checked.
//!
//! This module knows nothing of tracing, attestation collections, signing or terminals: it
//! turns a path or any byte stream into verified facts about the images inside ([`Analysis`])
//! or a precise error, and reports how far it has read to an optional [`Progress`] callback.
//!
//! How: [`scan`] reads the stream once, in order, feeding a whole-stream hasher and a pool of
//! [`digester`] workers that hash every member (and decompress layers) as it streams past;
//! [`members`] keeps the results by name and resolves links; [`docker`] and [`layout`] then
//! verify each image through [`image`].
// Input is hostile: no panicking shortcuts outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod chunk;
mod digester;
pub mod docker;
pub mod image;
pub mod layout;
mod members;
mod scan;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Told how far the read of an archive stream has got.
    pub progress: Option<Progress>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: DecompressionLimits::default(),
            max_layers: image::MAX_LAYERS,
            progress: None,
        }
    }
}

/// A step of the read of an archive stream (a layout directory reports nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadProgress {
    /// The read starts; `total` is the stream's length when known (a file's size).
    Started { total: Option<u64> },
    /// `bytes` more bytes were read.
    Advanced { bytes: u64 },
    /// The read stopped, at the end or on an error.
    Finished,
}

/// The callback that receives [`ReadProgress`] (shared, so [`Options`] stays cloneable).
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(ReadProgress) + Send + Sync>);

impl Progress {
    pub fn new(callback: impl Fn(ReadProgress) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(callback))
    }

    fn report(&self, step: ReadProgress) {
        (self.0)(step);
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
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
    /// The path read, or the name the caller gave a stream.
    pub path: PathBuf,
    /// SHA-256 of the archive stream as read (the `tardigest`); `None` for a layout directory.
    pub file_sha256: Option<String>,
    /// `manifest.json`, when the archive has one.
    pub docker: Option<docker::DockerArchive>,
    /// The images reachable from `index.json`, when the archive is (also) an OCI layout.
    pub layout: Option<Vec<layout::LayoutImage>>,
    /// Every image, verified: `manifest.json` order, then images only in the OCI index.
    pub images: Vec<image::Image>,
}

impl Analysis {
    /// Which halves the archive has: `docker-archive`, `oci-layout` or both.
    pub fn format(&self) -> &'static str {
        match (self.docker.is_some(), self.layout.is_some()) {
            (true, true) => "docker-archive+oci-layout",
            (true, false) => "docker-archive",
            _ => "oci-layout",
        }
    }
}

/// Bytes looked at to recognise a stream: enough for a tar header behind any real gzip header.
const SNIFF_BYTES: u64 = 64 << 10;

/// Is `path` an image archive (tar content, gzip tar, or an OCI layout directory)? Only
/// regular files and directories can be: a FIFO or a device is never opened.
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
    let mut start = Vec::new();
    File::open(path)?
        .take(SNIFF_BYTES)
        .read_to_end(&mut start)?;
    Ok(stream_kind(&start, start.len() as u64 == SNIFF_BYTES))
}

/// What the first bytes of a stream say it is. `truncated`: the stream goes on past `start`,
/// so a gzip whose first tar block lies beyond `start` is given the benefit of the doubt (the
/// tar parser decides).
fn stream_kind(start: &[u8], truncated: bool) -> Option<ArchiveKind> {
    if start.get(..512).is_some_and(is_tar_header) {
        return Some(ArchiveKind::Tar);
    }
    if digester::Compression::sniff(start) != digester::Compression::Gzip {
        return None;
    }
    let mut inner = Vec::with_capacity(512);
    let decoded = flate2::read::MultiGzDecoder::new(start)
        .take(512)
        .read_to_end(&mut inner);
    let is_tar = match decoded {
        Ok(_) => inner.len() == 512 && is_tar_header(&inner),
        // A damaged stream is simply not a gzip tar.
        Err(_) => false,
    };
    (is_tar || (truncated && inner.len() < 512)).then_some(ArchiveKind::GzipTar)
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

const NOT_AN_ARCHIVE: &str =
    "not an image archive (neither a tar, a gzip-compressed tar nor an OCI layout directory)";

/// Reads and verifies the archive at `path`: a regular file or an OCI layout directory.
pub fn analyze(path: &Path, options: &Options) -> Result<Analysis, InspectError> {
    let fail = |message: String| failure(path, &message);
    let kind = sniff(path)
        .map_err(|error| fail(format!("cannot read: {error}")))?
        .ok_or_else(|| fail(NOT_AN_ARCHIVE.to_owned()))?;
    let scanned = match kind {
        ArchiveKind::LayoutDir => scan::scan_layout(path, options),
        ArchiveKind::Tar | ArchiveKind::GzipTar => {
            let file = File::open(path).map_err(|error| fail(format!("cannot open: {error}")))?;
            let length = file.metadata().map(|meta| meta.len()).ok();
            scan::scan_stream(file, kind, length, options)
        }
    }
    .map_err(&fail)?;
    verify(path, scanned, options)
}

/// Reads and verifies a tar or gzip tar from any stream (a pipe, stdin, bytes in memory), in
/// one pass. `name` stands for the stream in errors and in [`Analysis::path`].
pub fn analyze_reader(
    name: &Path,
    mut reader: impl Read,
    options: &Options,
) -> Result<Analysis, InspectError> {
    let fail = |message: String| failure(name, &message);
    let mut start = Vec::new();
    (&mut reader)
        .take(SNIFF_BYTES)
        .read_to_end(&mut start)
        .map_err(|error| fail(format!("cannot read: {error}")))?;
    let kind = stream_kind(&start, start.len() as u64 == SNIFF_BYTES)
        .ok_or_else(|| fail(NOT_AN_ARCHIVE.to_owned()))?;
    let stream = io::Cursor::new(start).chain(reader);
    let scanned = scan::scan_stream(stream, kind, None, options).map_err(&fail)?;
    verify(name, scanned, options)
}

fn failure(path: &Path, message: &str) -> InspectError {
    InspectError {
        path: path.to_owned(),
        message: one_line(message),
    }
}

/// Every image the scanned members describe, each checked against its digests.
fn verify(
    path: &Path,
    scanned: scan::Scanned,
    options: &Options,
) -> Result<Analysis, InspectError> {
    let fail = |message: String| failure(path, &message);
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
    let images = merge_images(docker.as_ref(), layout.as_deref().unwrap_or_default());
    if images.is_empty() {
        return Err(fail("the archive holds no image".to_owned()));
    }
    Ok(Analysis {
        path: path.to_owned(),
        file_sha256: scanned.file_sha256,
        docker,
        layout,
        images,
    })
}

/// Merges what the docker and OCI halves of an archive say about its images. Images in
/// `manifest.json` come first, in its order; images only in the OCI index follow.
fn merge_images(
    docker: Option<&docker::DockerArchive>,
    layout: &[layout::LayoutImage],
) -> Vec<image::Image> {
    let mut images: Vec<image::Image> = docker
        .map(|docker| docker.images.clone())
        .unwrap_or_default();
    let from_docker = images.len();
    for layout_image in layout {
        let oci = &layout_image.image;
        let twin = images[..from_docker].iter_mut().find(|image| {
            image.config_sha256 == oci.config_sha256 && image.manifest_sha256.is_none()
        });
        match twin {
            Some(image) => {
                image.manifest_sha256.clone_from(&oci.manifest_sha256);
                if oci.platform.is_some() {
                    image.platform.clone_from(&oci.platform);
                }
                for (layer, oci_layer) in image.layers.iter_mut().zip(&oci.layers) {
                    if layer.blob_sha256 == oci_layer.blob_sha256 {
                        layer.media_type.clone_from(&oci_layer.media_type);
                    }
                }
            }
            None => images.push(oci.clone()),
        }
    }
    images
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
