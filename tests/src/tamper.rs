//! Tampered copies of a fixture: a flipped layer byte, an edited config, a truncated file.
//! A correct reader must reject every one (a tampered image is never attested: SECURITY.md).

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use sha2::{Digest as _, Sha256};

use crate::command::run;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tampering {
    /// One byte in the middle of the largest blob (always a layer in the fixtures) flipped.
    FlipLayerByte,
    /// `linux` → `linuy` inside the config: still valid JSON, different image ID.
    EditConfig,
    /// The file cut in the middle of its largest member (for a layout directory: its largest blob
    /// cut in half).
    Truncate,
}

pub const ALL: [Tampering; 3] = [
    Tampering::FlipLayerByte,
    Tampering::EditConfig,
    Tampering::Truncate,
];

/// A region of a file: where a member's data starts and how long it is.
#[derive(Clone, Copy, Debug)]
struct Region {
    offset: u64,
    len: u64,
}

/// Writes a tampered copy of `source` (a tar, a gzip tar or a layout dir) into `dir`.
/// `image_id` is the hex image ID of an image in it, used to find its config.
pub fn tampered_copy(
    source: &Path,
    image_id: &str,
    tampering: Tampering,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let name = source
        .file_name()
        .context("fixture path without a file name")?;
    let copy = dir.join(name);
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(source)
        .arg(&copy))?;
    if copy.is_dir() {
        tamper_layout_dir(&copy, image_id, tampering)?;
    } else if is_gzip(&copy)? {
        // Inside an outer gzip every change breaks the stream's CRC; all three still apply.
        let len = std::fs::metadata(&copy)?.len();
        match tampering {
            Tampering::Truncate => truncate_half(&copy, Region { offset: 0, len })?,
            _ => flip_byte(&copy, len / 2)?,
        }
    } else {
        tamper_tar(&copy, image_id, tampering)?;
    }
    Ok(copy)
}

fn is_gzip(path: &Path) -> anyhow::Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = std::fs::File::open(path)?;
    Ok(file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b])
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Regular members of a tar with their data regions, in archive order.
fn tar_members(path: &Path) -> anyhow::Result<Vec<(String, Region)>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    let mut members = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            members.push((
                entry.path()?.to_string_lossy().into_owned(),
                Region {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                },
            ));
        }
    }
    Ok(members)
}

fn read_region(path: &Path, region: Region) -> anyhow::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(region.offset))?;
    let mut bytes = vec![0u8; usize::try_from(region.len)?];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn flip_byte(path: &Path, offset: u64) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut byte = [0u8; 1];
    file.read_exact(&mut byte)?;
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&byte)?;
    Ok(())
}

fn truncate_half(path: &Path, region: Region) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(region.offset + region.len / 2)?;
    Ok(())
}

/// Offset of the `x` of `linux` in a config, so replacing it keeps the JSON valid.
fn config_edit_offset(config: &[u8]) -> anyhow::Result<u64> {
    let position = config
        .windows(5)
        .position(|window| window == b"linux")
        .context("config has no \"linux\" to edit")?;
    Ok(u64::try_from(position + 4)?)
}

fn replace_byte(path: &Path, offset: u64, value: u8) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&[value])?;
    Ok(())
}

fn tamper_tar(path: &Path, image_id: &str, tampering: Tampering) -> anyhow::Result<()> {
    let members = tar_members(path)?;
    let (_, largest) = members
        .iter()
        .max_by_key(|(_, region)| region.len)
        .with_context(|| format!("{} has no regular members", path.display()))?;
    match tampering {
        Tampering::FlipLayerByte => {
            ensure!(
                largest.len > 0,
                "{}: largest member is empty",
                path.display()
            );
            flip_byte(path, largest.offset + largest.len / 2)
        }
        // Cut inside member data: cutting only the end-of-archive padding leaves every member intact.
        Tampering::Truncate => truncate_half(path, *largest),
        Tampering::EditConfig => {
            for (_, region) in &members {
                let bytes = read_region(path, *region)?;
                if sha256_hex(&bytes) == image_id {
                    return replace_byte(path, region.offset + config_edit_offset(&bytes)?, b'y');
                }
            }
            anyhow::bail!("{}: no member is the config {image_id}", path.display())
        }
    }
}

fn tamper_layout_dir(dir: &Path, image_id: &str, tampering: Tampering) -> anyhow::Result<()> {
    let blobs = dir.join("blobs/sha256");
    let mut largest: Option<(u64, PathBuf)> = None;
    for entry in
        std::fs::read_dir(&blobs).with_context(|| format!("cannot list {}", blobs.display()))?
    {
        let entry = entry?;
        let len = entry.metadata()?.len();
        if largest.as_ref().is_none_or(|(max, _)| len > *max) {
            largest = Some((len, entry.path()));
        }
    }
    let (len, largest) = largest.with_context(|| format!("{} is empty", blobs.display()))?;
    match tampering {
        Tampering::FlipLayerByte => flip_byte(&largest, len / 2),
        Tampering::Truncate => truncate_half(&largest, Region { offset: 0, len }),
        Tampering::EditConfig => {
            let config = blobs.join(image_id);
            let bytes = std::fs::read(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            replace_byte(&config, config_edit_offset(&bytes)?, b'y')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_edit_keeps_json_valid() {
        let config = br#"{"os":"linux","architecture":"amd64"}"#;
        let offset = usize::try_from(config_edit_offset(config).expect("offset")).expect("usize");
        let mut edited = config.to_vec();
        edited[offset] = b'y';
        assert_eq!(&edited, br#"{"os":"linuy","architecture":"amd64"}"#);
    }
}
