//! Per-member digests, computed by a small worker pool while the archive streams past.
//!
//! The scan hands each member's bytes, chunk by chunk, to a worker through a bounded
//! channel, so memory stays flat however large a member is. A worker hashes the stored
//! bytes, sniffs the compression from the magic bytes and hashes the decompressed stream
//! (the diffID of a layer) in the same pass; a plain member's diffID is its raw digest,
//! hashed once. Small JSON-looking members are also kept, because manifests, indexes and
//! configs must be parsed once the whole archive has been seen.

use std::cell::Cell;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};
use sha2::{Digest as _, Sha256};

use super::chunk::{Chunk, Pool};
use super::DecompressionLimits;

/// Largest JSON document (manifest, index, config) kept in memory.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;
/// All JSON-looking members of one archive together; beyond it, members are hashed but not kept.
const MAX_DOCUMENTS_TOTAL: u64 = 128 << 20;
/// Decompressed bytes a layer must produce before its ratio is judged (tiny layers compress well).
const RATIO_GRACE_BYTES: u64 = 1 << 20;
/// Chunks in flight per member: bounds memory at a few MiB per worker.
const CHUNKS_IN_FLIGHT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Judged from magic bytes only: media types and names lie (skopeo labels plain layers gzip).
    pub fn sniff(start: &[u8]) -> Compression {
        if start.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if start.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A member's content kept for parsing, when it looked like JSON.
#[derive(Debug)]
pub enum Document {
    NotKept,
    Kept(Vec<u8>),
    TooLarge,
    /// Earlier JSON-looking members used up the archive's budget for kept documents.
    OverBudget,
}

/// What one regular member holds.
#[derive(Debug)]
pub struct FileFacts {
    pub size: u64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub compression: Compression,
    /// Hex SHA-256 of the decompressed bytes (the diffID if this is a layer), or why it
    /// could not be computed. Only an error if the member turns out to be a layer.
    pub uncompressed_sha256: Result<String, String>,
    pub document: Document,
}

impl FileFacts {
    /// The member's bytes as a JSON document, `name` being how the caller refers to it.
    pub fn document(&self, name: &str) -> Result<&[u8], String> {
        match &self.document {
            Document::Kept(bytes) => Ok(bytes),
            Document::NotKept => Err(format!("member {name:?} is not a JSON document")),
            Document::TooLarge => Err(format!(
                "member {name:?} is larger than the {} MiB allowed for a JSON document",
                MAX_DOCUMENT_BYTES >> 20
            )),
            Document::OverBudget => Err(format!(
                "member {name:?} was not kept: JSON-looking members exceed {} MiB in total",
                MAX_DOCUMENTS_TOTAL >> 20
            )),
        }
    }
}

struct Job {
    name: String,
    keep_if_json: bool,
    chunks: Receiver<Chunk>,
}

/// Shared by all workers of one archive.
struct Budget {
    limits: DecompressionLimits,
    decompressed_total: AtomicU64,
    documents_total: AtomicU64,
}

impl Budget {
    /// Counts `bytes` more of kept documents; `false` once the archive's total is exceeded.
    fn reserve_document_bytes(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        self.documents_total.fetch_add(bytes, Ordering::Relaxed) + bytes <= MAX_DOCUMENTS_TOTAL
    }
}

/// Feeds one member's bytes to its worker; dropping it ends the member.
pub struct MemberFeed {
    chunks: Sender<Chunk>,
}

impl MemberFeed {
    /// Blocks while the worker is behind, which is what keeps memory flat.
    pub fn send(&self, chunk: Chunk) -> Result<(), String> {
        self.chunks
            .send(chunk)
            .map_err(|_| "a digest worker stopped unexpectedly".to_owned())
    }
}

/// The worker pool. Create with [`Digester::start`] inside a thread scope.
pub struct Digester {
    jobs: Sender<Job>,
    results: Receiver<(String, FileFacts)>,
}

impl Digester {
    pub fn start<'scope>(
        scope: &'scope thread::Scope<'scope, '_>,
        workers: usize,
        limits: DecompressionLimits,
        pool: &Pool,
    ) -> Digester {
        let (jobs, job_queue) = bounded::<Job>(workers);
        let (result_sender, results) = crossbeam_channel::unbounded();
        let budget = Arc::new(Budget {
            limits,
            decompressed_total: AtomicU64::new(0),
            documents_total: AtomicU64::new(0),
        });
        for _ in 0..workers {
            let job_queue = job_queue.clone();
            let result_sender = result_sender.clone();
            let budget = Arc::clone(&budget);
            let pool = pool.clone();
            scope.spawn(move || {
                for job in job_queue {
                    let facts = digest_member(&job, &budget, &pool);
                    if result_sender.send((job.name, facts)).is_err() {
                        return;
                    }
                }
            });
        }
        Digester { jobs, results }
    }

    /// Starts a member. `keep_if_json`: keep its bytes when they look like JSON even if they
    /// do not start with `{`/`[` (a `manifest.json` holding `null` must still be reported as
    /// bad JSON, not as "not a document").
    pub fn member(&self, name: String, keep_if_json: bool) -> Result<MemberFeed, String> {
        let (chunks, receiver) = bounded(CHUNKS_IN_FLIGHT);
        self.jobs
            .send(Job {
                name,
                keep_if_json,
                chunks: receiver,
            })
            .map_err(|_| "the digest workers stopped unexpectedly".to_owned())?;
        Ok(MemberFeed { chunks })
    }

    /// Waits for every member started so far and returns their facts.
    pub fn finish(self) -> Vec<(String, FileFacts)> {
        drop(self.jobs);
        self.results.iter().collect()
    }
}

/// SHA-256 of a stream, computed in place or on a helper thread. A decompressing worker
/// offloads both of its hashes so that its own core spends its time inflating: on a 2-core
/// machine that is what keeps one layer's work from running on one core only.
enum Hashing<'scope> {
    Inline(Sha256),
    Offloaded {
        chunks: Sender<Chunk>,
        digest: thread::ScopedJoinHandle<'scope, String>,
    },
}

impl<'scope> Hashing<'scope> {
    fn offloaded(scope: &'scope thread::Scope<'scope, '_>) -> Self {
        let (chunks, queue) = bounded::<Chunk>(CHUNKS_IN_FLIGHT);
        let digest = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for chunk in queue {
                hasher.update(&chunk[..]);
            }
            hex::encode(hasher.finalize())
        });
        Hashing::Offloaded { chunks, digest }
    }

    fn update(&mut self, chunk: &Chunk) {
        match self {
            Hashing::Inline(hasher) => hasher.update(&chunk[..]),
            // The helper only stops when `chunks` is dropped, so sending cannot fail.
            Hashing::Offloaded { chunks, .. } => {
                let _ = chunks.send(Arc::clone(chunk));
            }
        }
    }

    fn finish(self) -> String {
        match self {
            Hashing::Inline(hasher) => hex::encode(hasher.finalize()),
            Hashing::Offloaded { chunks, digest } => {
                drop(chunks);
                // Hashing cannot fail on input; a panic there is a bug and stays one.
                digest
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
        }
    }
}

/// Serves a member's chunks as a `Read`, hashing and optionally keeping them as they pass.
/// A chunk is hashed when the reader moves past it, so the first chunk can be inspected
/// (to choose how to hash) before any hashing starts.
struct ChunkReader<'a, 'scope> {
    chunks: &'a Receiver<Chunk>,
    current: Option<Chunk>,
    position: usize,
    hashing: Hashing<'scope>,
    size: u64,
    served: &'a Cell<u64>,
    kept: Option<Vec<u8>>,
    /// Why a document that was being kept was dropped.
    dropped: Option<Document>,
    budget: &'a Budget,
}

impl ChunkReader<'_, '_> {
    /// Makes the next chunk current; `false` at the end of the member.
    fn advance(&mut self) -> bool {
        if let Some(done) = self.current.take() {
            self.hashing.update(&done);
        }
        let Ok(chunk) = self.chunks.recv() else {
            return false;
        };
        self.size += chunk.len() as u64;
        if let Some(kept) = &mut self.kept {
            let fits_member = kept.len() + chunk.len() <= MAX_DOCUMENT_BYTES;
            let fits_archive = self.budget.reserve_document_bytes(chunk.len());
            if !fits_member {
                self.kept = None;
                self.dropped = Some(Document::TooLarge);
            } else if !fits_archive {
                self.kept = None;
                self.dropped = Some(Document::OverBudget);
            } else {
                kept.extend_from_slice(&chunk);
            }
        }
        self.current = Some(chunk);
        self.position = 0;
        true
    }

    /// Hashes the rest of the member without copying it anywhere.
    fn skip_rest(&mut self) {
        while self.advance() {}
    }
}

impl Read for ChunkReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(chunk) = &self.current else {
                return Ok(0);
            };
            let available = &chunk[self.position..];
            if !available.is_empty() {
                let count = available.len().min(buf.len());
                buf[..count].copy_from_slice(&available[..count]);
                self.position += count;
                self.served.set(self.served.get() + count as u64);
                return Ok(count);
            }
            if !self.advance() {
                return Ok(0);
            }
        }
    }
}

fn looks_like_json(start: &[u8]) -> bool {
    matches!(
        start.iter().find(|byte| !byte.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

fn digest_member(job: &Job, budget: &Budget, pool: &Pool) -> FileFacts {
    let first = job.chunks.recv().ok();
    let start = first.as_deref().map_or(&[][..], |chunk| &chunk[..]);
    let compression = Compression::sniff(start);
    let wants_document =
        compression == Compression::None && (job.keep_if_json || looks_like_json(start));
    let (kept, dropped) = match wants_document {
        false => (None, None),
        true if budget.reserve_document_bytes(start.len()) => (Some(start.to_vec()), None),
        true => (None, Some(Document::OverBudget)),
    };
    let served = Cell::new(0);
    thread::scope(|scope| {
        let mut reader = ChunkReader {
            chunks: &job.chunks,
            size: first.as_ref().map_or(0, |chunk| chunk.len() as u64),
            current: first,
            position: 0,
            hashing: if compression == Compression::None {
                Hashing::Inline(Sha256::new())
            } else {
                Hashing::offloaded(scope)
            },
            served: &served,
            kept,
            dropped,
            budget,
        };
        let decoded = match compression {
            Compression::None => None,
            Compression::Gzip => Some(hash_decoded(
                flate2::read::MultiGzDecoder::new(&mut reader),
                &served,
                budget,
                pool,
                Hashing::offloaded(scope),
                "gzip",
            )),
            Compression::Zstd => Some(
                zstd::stream::read::Decoder::new(&mut reader)
                    .map_err(|error| format!("zstd: {error}"))
                    .and_then(|decoder| {
                        hash_decoded(
                            decoder,
                            &served,
                            budget,
                            pool,
                            Hashing::offloaded(scope),
                            "zstd",
                        )
                    }),
            ),
        };
        // A decoder may stop early (an error, or trailing bytes): the rest still counts for
        // the stored digest, and the scan must not block on a full channel.
        reader.skip_rest();
        let sha256 = reader.hashing.finish();
        let document = match (reader.kept, reader.dropped) {
            (Some(bytes), _) => Document::Kept(bytes),
            (None, Some(dropped)) => dropped,
            (None, None) => Document::NotKept,
        };
        FileFacts {
            size: reader.size,
            uncompressed_sha256: decoded.unwrap_or_else(|| Ok(sha256.clone())),
            sha256,
            compression,
            document,
        }
    })
}

/// A decoder's output, counted against the decompression limits as it is produced.
struct Limited<'a, R> {
    decoder: R,
    compressed_served: &'a Cell<u64>,
    budget: &'a Budget,
    produced: u64,
    format: &'a str,
    violation: Option<String>,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.decoder.read(buf)?;
        let limits = self.budget.limits;
        self.produced += count as u64;
        let total = self
            .budget
            .decompressed_total
            .fetch_add(count as u64, Ordering::Relaxed)
            + count as u64;
        if total > limits.max_total_bytes {
            self.violation = Some(format!(
                "decompressed layers exceed the limit of {} bytes in total (--max-decompressed-bytes)",
                limits.max_total_bytes
            ));
        } else if self.produced > RATIO_GRACE_BYTES
            && self.produced / self.compressed_served.get().max(1) > limits.max_ratio
        {
            self.violation = Some(format!(
                "{} stream expands more than {}x (--max-ratio): a decompression bomb?",
                self.format, limits.max_ratio
            ));
        }
        match self.violation {
            Some(_) => Err(io::Error::other("decompression limit")),
            None => Ok(count),
        }
    }
}

fn hash_decoded(
    decoder: impl Read,
    compressed_served: &Cell<u64>,
    budget: &Budget,
    pool: &Pool,
    mut hashing: Hashing<'_>,
    format: &str,
) -> Result<String, String> {
    let mut limited = Limited {
        decoder,
        compressed_served,
        budget,
        produced: 0,
        format,
        violation: None,
    };
    loop {
        match pool.fill(&mut limited) {
            Ok(Some(chunk)) => hashing.update(&chunk),
            Ok(None) => return Ok(hashing.finish()),
            Err(error) => {
                return Err(match limited.violation.take() {
                    Some(violation) => violation,
                    None if error.kind() == io::ErrorKind::UnexpectedEof => {
                        format!("{format} stream is truncated")
                    }
                    None => format!("{format} stream is corrupt: {error}"),
                })
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use oci_attest_tests::archive::{gzip, sample_text};

    use super::*;

    /// Facts of an uncompressed, non-JSON member, for tests of the code that consumes them.
    pub fn plain_facts(bytes: &[u8]) -> FileFacts {
        let sha256 = crate::digest::sha256_hex(bytes);
        FileFacts {
            size: bytes.len() as u64,
            uncompressed_sha256: Ok(sha256.clone()),
            sha256,
            compression: Compression::None,
            document: Document::NotKept,
        }
    }

    fn digest_bytes(bytes: &[u8], limits: DecompressionLimits) -> FileFacts {
        std::thread::scope(|scope| {
            let pool = Pool::default();
            let digester = Digester::start(scope, 2, limits, &pool);
            let feed = digester.member("m".into(), false).unwrap();
            let mut reader = bytes;
            while let Some(chunk) = pool.fill(&mut reader).unwrap() {
                feed.send(chunk).unwrap();
            }
            drop(feed);
            let mut results = digester.finish();
            results.pop().unwrap().1
        })
    }

    #[test]
    fn hashes_gzip_multi_member_zstd_and_plain() {
        let content = sample_text(3 << 20, 0);
        let expected = crate::digest::sha256_hex(&content);
        let half = content.len() / 2;
        let mut multi = gzip(&content[..half]);
        multi.extend(gzip(&content[half..]));
        let zstd = zstd::encode_all(content.as_slice(), 3).unwrap();
        for (stored, compression) in [
            (multi, Compression::Gzip),
            (zstd, Compression::Zstd),
            (content.clone(), Compression::None),
        ] {
            let facts = digest_bytes(&stored, DecompressionLimits::default());
            assert_eq!(facts.compression, compression);
            assert_eq!(facts.sha256, crate::digest::sha256_hex(&stored));
            assert_eq!(facts.uncompressed_sha256.as_deref(), Ok(expected.as_str()));
            assert_eq!(facts.size, stored.len() as u64);
        }
    }

    #[test]
    fn keeps_json_documents_only() {
        let facts = digest_bytes(b" {\"a\":1}", DecompressionLimits::default());
        assert!(matches!(facts.document, Document::Kept(ref b) if b == b" {\"a\":1}"));
        let facts = digest_bytes(b"ustar data", DecompressionLimits::default());
        assert_eq!(
            facts.document("x").unwrap_err(),
            r#"member "x" is not a JSON document"#
        );
    }

    #[test]
    fn truncated_and_garbage_gzip_are_reported() {
        let stored = gzip(&b"x".repeat(10_000));
        let facts = digest_bytes(&stored[..stored.len() - 6], DecompressionLimits::default());
        assert_eq!(
            facts.uncompressed_sha256.unwrap_err(),
            "gzip stream is truncated"
        );
        let facts = digest_bytes(
            &[0x1f, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            Default::default(),
        );
        assert!(facts
            .uncompressed_sha256
            .unwrap_err()
            .starts_with("gzip stream is corrupt"));
    }

    #[test]
    fn bombs_stop_at_the_ratio_and_total_limits() {
        // 20 GiB of zeros as repeated zstd frames: a few hundred KiB stored.
        let frame = zstd::encode_all(vec![0u8; 16 << 20].as_slice(), 3).unwrap();
        let bomb: Vec<u8> = frame.repeat(20 * 64);
        let facts = digest_bytes(&bomb, DecompressionLimits::default());
        assert_eq!(
            facts.uncompressed_sha256.unwrap_err(),
            "zstd stream expands more than 1000x (--max-ratio): a decompression bomb?"
        );
        let ordinary = gzip(&b"text ".repeat(1 << 20));
        let limits = DecompressionLimits {
            max_total_bytes: 1 << 20,
            max_ratio: 1000,
        };
        let facts = digest_bytes(&ordinary, limits);
        assert_eq!(
            facts.uncompressed_sha256.unwrap_err(),
            "decompressed layers exceed the limit of 1048576 bytes in total (--max-decompressed-bytes)"
        );
    }
}
