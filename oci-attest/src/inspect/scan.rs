//! The single sequential read: the archive stream goes through a tee that feeds the
//! whole-stream hasher, then through the tar parser, whose members go to the digest workers.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Sender};
use sha2::{Digest as _, Sha256};

use super::chunk::{Chunk, Pool};
use super::digester::Digester;
use super::members::{Member, Members};
use super::{ArchiveKind, Options, Progress, ReadProgress};

/// Image archives hold a few members per layer and image; millions of tiny members would only
/// grow the member table (the one thing here that is not bounded by the chunk pool).
pub const MAX_MEMBERS: usize = 250_000;

fn count_member(count: &mut usize) -> Result<(), String> {
    *count += 1;
    if *count > MAX_MEMBERS {
        return Err(format!(
            "more than {MAX_MEMBERS} members: not an image archive"
        ));
    }
    Ok(())
}

pub struct Scanned {
    pub members: Members,
    /// Hex SHA-256 of the stream; `None` for a directory.
    pub file_sha256: Option<String>,
}

/// A layout directory, scanned as if it were a tar of itself.
pub fn scan_layout(dir: &Path, options: &Options) -> Result<Scanned, String> {
    with_digester(options, |digester, pool, members| {
        scan_dir(dir, "", digester, pool, members, &mut 0)?;
        Ok(None)
    })
}

/// A tar or gzip tar stream of `length` bytes (when known), read once.
pub fn scan_stream(
    stream: impl Read,
    kind: ArchiveKind,
    length: Option<u64>,
    options: &Options,
) -> Result<Scanned, String> {
    with_digester(options, |digester, pool, members| {
        thread::scope(|scope| {
            let (chunks, chunk_queue) = bounded::<Chunk>(8);
            let hasher = scope.spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in chunk_queue {
                    hasher.update(&chunk[..]);
                }
                hex::encode(hasher.finalize())
            });
            let mut tee = Tee::new(
                stream,
                pool.clone(),
                chunks,
                options.progress.clone(),
                length,
            );
            let scanned = if kind == ArchiveKind::GzipTar {
                let decoder = flate2::read::MultiGzDecoder::new(&mut tee);
                let mut guard = Guard::new(decoder, Some(options.limits.max_total_bytes));
                scan_tar(&mut guard, digester, pool, members).and_then(|()| {
                    drain(&mut guard).map_err(|error| format!("outer gzip stream: {error}"))
                })
            } else {
                scan_tar(&mut Guard::new(&mut tee, None), digester, pool, members)
            };
            scanned
                .and_then(|()| drain(&mut tee).map_err(|error| format!("read error: {error}")))?;
            drop(tee);
            let digest = hasher
                .join()
                .map_err(|_| "the file hasher stopped unexpectedly".to_owned())?;
            Ok(Some(digest))
        })
    })
}

/// Runs `read` with the digest workers, then collects the members they hashed. `read`
/// returns the digest of the whole stream, if there is one.
fn with_digester(
    options: &Options,
    read: impl FnOnce(&Digester, &Pool, &mut Members) -> Result<Option<String>, String>,
) -> Result<Scanned, String> {
    let workers = thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    thread::scope(|scope| {
        let pool = Pool::default();
        let digester = Digester::start(scope, workers, options.limits, &pool);
        let mut members = Members::default();
        let file_sha256 = read(&digester, &pool, &mut members)?;
        for (name, facts) in digester.finish() {
            members.insert(&name, Member::File(facts))?;
        }
        Ok(Scanned {
            members,
            file_sha256,
        })
    })
}

fn drain(reader: &mut impl Read) -> io::Result<()> {
    io::copy(reader, &mut io::sink()).map(|_| ())
}

/// Reads the stream in large blocks, giving each block to the whole-stream hasher before the
/// tar parser sees it: the tar digest and the member digests come from the same read.
struct Tee<R> {
    stream: R,
    pool: Pool,
    block: Option<Chunk>,
    position: usize,
    hasher: Sender<Chunk>,
    progress: Option<Progress>,
}

impl<R> Tee<R> {
    fn new(
        stream: R,
        pool: Pool,
        hasher: Sender<Chunk>,
        progress: Option<Progress>,
        length: Option<u64>,
    ) -> Self {
        if let Some(progress) = &progress {
            progress.report(ReadProgress::Started { total: length });
        }
        Tee {
            stream,
            pool,
            block: None,
            position: 0,
            hasher,
            progress,
        }
    }
}

impl<R> Drop for Tee<R> {
    fn drop(&mut self) {
        // Also on errors: whoever draws the progress must clear it before the error shows.
        if let Some(progress) = &self.progress {
            progress.report(ReadProgress::Finished);
        }
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let exhausted = self
            .block
            .as_ref()
            .is_none_or(|block| self.position == block.len());
        if exhausted {
            self.block = None;
            let Some(block) = self.pool.fill(&mut self.stream)? else {
                return Ok(0);
            };
            self.hasher
                .send(Arc::clone(&block))
                .map_err(|_| io::Error::other("the file hasher stopped unexpectedly"))?;
            if let Some(progress) = &self.progress {
                progress.report(ReadProgress::Advanced {
                    bytes: block.len() as u64,
                });
            }
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

/// Bytes the tar parser may read to find the next member: its header plus any GNU long-name
/// and PAX extension records before it. The parser keeps those records in memory, so a
/// hostile "long name" of gigabytes must be stopped here.
const HEADER_WINDOW_BYTES: u64 = 1 << 20;

/// Shared between the loop that walks the members and the [`Guard`] the parser reads through.
#[derive(Default)]
struct HeaderWindow {
    /// Bytes the parser may still read before handing over the next member; `None` while a
    /// member's own data is being read (no limit).
    remaining: Cell<Option<u64>>,
    /// The start of the first header read in the window (its name names the culprit).
    first_header: RefCell<Vec<u8>>,
}

impl HeaderWindow {
    fn open(&self) {
        self.remaining.set(Some(HEADER_WINDOW_BYTES));
        self.first_header.borrow_mut().clear();
    }

    fn close(&self) {
        self.remaining.set(None);
    }
}

/// The tar stream as the parser sees it: bounds what it may buffer between members, and,
/// behind an outer gzip, how far the stream may decompress (a bomb after the archive's end
/// is a bomb too).
struct Guard<R> {
    inner: R,
    produced: u64,
    max_produced: Option<u64>,
    window: Rc<HeaderWindow>,
}

impl<R: Read> Guard<R> {
    fn new(inner: R, max_produced: Option<u64>) -> Self {
        Guard {
            inner,
            produced: 0,
            max_produced,
            window: Rc::default(),
        }
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        self.produced += count as u64;
        if let Some(limit) = self.max_produced.filter(|limit| self.produced > *limit) {
            return Err(io::Error::other(format!(
                "decompresses to more than {limit} bytes (--max-decompressed-bytes)"
            )));
        }
        if let Some(remaining) = self.window.remaining.get() {
            let mut first = self.window.first_header.borrow_mut();
            let wanted = NAME_FIELD_BYTES.saturating_sub(first.len()).min(count);
            first.extend_from_slice(&buf[..wanted]);
            let Some(left) = remaining.checked_sub(count as u64) else {
                let name = String::from_utf8_lossy(first.split(|b| *b == 0).next().unwrap_or(&[]));
                return Err(io::Error::other(format!(
                    "header extension {name:?} is larger than {} KiB",
                    HEADER_WINDOW_BYTES >> 10
                )));
            };
            self.window.remaining.set(Some(left));
        }
        Ok(count)
    }
}

/// The name field at the start of a tar header.
const NAME_FIELD_BYTES: usize = 100;

fn scan_tar<R: Read>(
    guard: &mut Guard<R>,
    digester: &Digester,
    pool: &Pool,
    members: &mut Members,
) -> Result<(), String> {
    let window = Rc::clone(&guard.window);
    let mut archive = tar::Archive::new(guard);
    let mut entries = archive
        .entries()
        .map_err(|error| format!("not a readable tar: {error}"))?;
    let mut last = String::from("(start of archive)");
    let mut count = 0;
    loop {
        window.open();
        let next = entries.next();
        window.close();
        let Some(entry) = next else {
            break;
        };
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
        } else if entry_type.is_gnu_sparse() {
            // The tar parser would expand the holes: a few bytes claiming a TiB of zeros.
            // No image tool writes sparse members.
            return Err(format!(
                "member {name:?} is a GNU sparse file, which image archives never contain"
            ));
        } else if entry_type.is_file() || entry_type.is_contiguous() {
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
        // Whatever a non-file member carries is skipped here, outside the header window.
        drain(&mut entry).map_err(|error| format!("cannot read member {name:?}: {error}"))?;
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
