//! The single sequential read: the archive file streams through a tee that feeds the
//! whole-file hasher, then through the tar parser, whose members go to the digest workers.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Sender};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};

use super::chunk::{Chunk, Pool};
use super::digester::Digester;
use super::members::{Member, Members};
use super::{ArchiveKind, Options};

/// Image archives hold a few members per layer and image; millions of tiny members would only
/// grow the member table (the one thing here that is not bounded by the chunk pool).
pub const MAX_MEMBERS: usize = 100_000;

fn count_member(count: &mut usize) -> Result<(), String> {
    *count += 1;
    if *count > MAX_MEMBERS {
        return Err(format!(
            "more than {MAX_MEMBERS} members: not an image archive"
        ));
    }
    Ok(())
}

/// Archives smaller than this finish too fast for a progress bar to help.
const PROGRESS_MIN_BYTES: u64 = 100_000_000;

pub struct Scanned {
    pub members: Members,
    /// Hex SHA-256 of the stored file; `None` for a directory.
    pub file_sha256: Option<String>,
}

pub fn scan(path: &Path, kind: ArchiveKind, options: &Options) -> Result<Scanned, String> {
    let workers = thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    thread::scope(|scope| {
        let pool = Pool::default();
        let digester = Digester::start(scope, workers, options.limits, &pool);
        let mut members = Members::default();
        let file_sha256 = match kind {
            ArchiveKind::LayoutDir => {
                scan_dir(path, "", &digester, &pool, &mut members, &mut 0)?;
                None
            }
            ArchiveKind::Tar | ArchiveKind::GzipTar => {
                let file = File::open(path).map_err(|error| format!("cannot open: {error}"))?;
                let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
                let progress = if options.progress && length >= PROGRESS_MIN_BYTES {
                    progress_bar(length)
                } else {
                    ProgressBar::hidden()
                };
                let (chunks, chunk_queue) = bounded::<Chunk>(8);
                let hasher = scope.spawn(move || {
                    let mut hasher = Sha256::new();
                    for chunk in chunk_queue {
                        hasher.update(&chunk[..]);
                    }
                    hex::encode(hasher.finalize())
                });
                let mut tee = Tee {
                    file,
                    pool: pool.clone(),
                    block: None,
                    position: 0,
                    hasher: chunks,
                    progress,
                };
                let scanned = if kind == ArchiveKind::GzipTar {
                    let mut decoder = flate2::read::MultiGzDecoder::new(&mut tee);
                    scan_tar(&mut decoder, &digester, &pool, &mut members).and_then(|()| {
                        drain(&mut decoder)
                            .map_err(|error| format!("outer gzip stream is damaged: {error}"))
                    })
                } else {
                    scan_tar(&mut tee, &digester, &pool, &mut members)
                };
                scanned.and_then(|()| {
                    drain(&mut tee).map_err(|error| format!("read error: {error}"))
                })?;
                drop(tee);
                let digest = hasher
                    .join()
                    .map_err(|_| "the file hasher stopped unexpectedly".to_owned())?;
                Some(digest)
            }
        };
        for (name, facts) in digester.finish() {
            members.insert(&name, Member::File(facts))?;
        }
        Ok(Scanned {
            members,
            file_sha256,
        })
    })
}

fn progress_bar(length: u64) -> ProgressBar {
    let bar = ProgressBar::new(length);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message("reading archive");
    bar
}

fn drain(reader: &mut impl Read) -> io::Result<()> {
    io::copy(reader, &mut io::sink()).map(|_| ())
}

/// Reads the file in large blocks, giving each block to the whole-file hasher before the
/// tar parser sees it: the tar digest and the member digests come from the same read.
struct Tee {
    file: File,
    pool: Pool,
    block: Option<Chunk>,
    position: usize,
    hasher: Sender<Chunk>,
    progress: ProgressBar,
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Also on errors: the error line must not follow a half-drawn bar.
        self.progress.finish_and_clear();
    }
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let exhausted = self
            .block
            .as_ref()
            .is_none_or(|block| self.position == block.len());
        if exhausted {
            self.block = None;
            let Some(block) = self.pool.fill(&mut self.file)? else {
                return Ok(0);
            };
            self.hasher
                .send(Arc::clone(&block))
                .map_err(|_| io::Error::other("the file hasher stopped unexpectedly"))?;
            self.progress.inc(block.len() as u64);
            self.block = Some(block);
            self.position = 0;
        }
        let Some(block) = &self.block else {
            return Ok(0);
        };
        let available = &block[self.position..];
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        self.position += count;
        Ok(count)
    }
}

/// Names whose content must be kept for parsing even when it does not look like JSON.
fn is_document_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.ends_with(".json") || base == "oci-layout" || base == "repositories"
}

fn scan_tar(
    reader: impl Read,
    digester: &Digester,
    pool: &Pool,
    members: &mut Members,
) -> Result<(), String> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|error| format!("not a readable tar: {error}"))?;
    let mut last = String::from("(start of archive)");
    let mut count = 0;
    for entry in entries {
        let mut entry = entry
            .map_err(|error| format!("truncated or corrupt tar after member {last:?}: {error}"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_type = entry.header().entry_type();
        if entry_type.is_symlink() || entry_type.is_hard_link() {
            count_member(&mut count)?;
            let target = entry
                .link_name_bytes()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .ok_or_else(|| format!("link member {name:?} has no target"))?;
            let member = if entry_type.is_symlink() {
                Member::Symlink(target)
            } else {
                Member::Hardlink(target)
            };
            members.insert(&name, member)?;
        } else if entry_type.is_file() || entry_type.is_contiguous() || entry_type.is_gnu_sparse() {
            count_member(&mut count)?;
            let expected = entry.size();
            let feed = digester.member(name.clone(), is_document_name(&name))?;
            let mut received: u64 = 0;
            while let Some(chunk) = pool
                .fill(&mut entry)
                .map_err(|error| format!("cannot read member {name:?}: {error}"))?
            {
                received += chunk.len() as u64;
                feed.send(chunk)?;
            }
            if received < expected {
                return Err(format!(
                    "truncated archive: member {name:?} has {received} of its {expected} bytes"
                ));
            }
        }
        last = name;
    }
    Ok(())
}

/// A layout directory is scanned as if it were a tar of itself; symlinks stay links,
/// resolved inside the layout.
fn scan_dir(
    dir: &Path,
    prefix: &str,
    digester: &Digester,
    pool: &Pool,
    members: &mut Members,
    count: &mut usize,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let file_type = entry
            .file_type()
            .map_err(|error| format!("cannot stat {name:?}: {error}"))?;
        if file_type.is_dir() {
            scan_dir(
                &entry.path(),
                &format!("{name}/"),
                digester,
                pool,
                members,
                count,
            )?;
        } else if file_type.is_symlink() {
            count_member(count)?;
            let target = std::fs::read_link(entry.path())
                .map_err(|error| format!("cannot read link {name:?}: {error}"))?;
            members.insert(
                &name,
                Member::Symlink(target.to_string_lossy().into_owned()),
            )?;
        } else if file_type.is_file() {
            count_member(count)?;
            let mut file = File::open(entry.path())
                .map_err(|error| format!("cannot open {name:?}: {error}"))?;
            let feed = digester.member(name.clone(), is_document_name(&name))?;
            while let Some(chunk) = pool
                .fill(&mut file)
                .map_err(|error| format!("cannot read {name:?}: {error}"))?
            {
                feed.send(chunk)?;
            }
        }
    }
    Ok(())
}
