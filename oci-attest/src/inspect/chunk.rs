//! Reusable 1 MiB buffers for the bytes in flight between the reader and the hashers.
//!
//! Every byte of an archive passes through a few of these; allocating a fresh zeroed
//! megabyte each time cost page faults and memsets comparable to the hashing itself. A
//! buffer goes back to its pool when the last thread holding it lets go.

use std::io::{self, Read};
use std::ops::Deref;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

pub const CHUNK_BYTES: usize = 1 << 20;
/// Buffers kept for reuse; beyond that, returned buffers are freed (memory stays bounded).
const POOL_BUFFERS: usize = 24;

/// Bytes shared between the threads that need them (file hasher, member worker, helpers).
pub type Chunk = Arc<Buffer>;

pub struct Buffer {
    data: Vec<u8>,
    len: usize,
    home: Sender<Vec<u8>>,
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // A full pool just lets this buffer be freed.
        let _ = self.home.try_send(std::mem::take(&mut self.data));
    }
}

#[derive(Clone)]
pub struct Pool {
    free: Receiver<Vec<u8>>,
    home: Sender<Vec<u8>>,
}

impl Default for Pool {
    fn default() -> Self {
        let (home, free) = bounded(POOL_BUFFERS);
        Pool { free, home }
    }
}

impl Pool {
    /// Fills a buffer from `reader` until it is full or the reader ends; `None` at the end.
    pub fn fill(&self, reader: &mut impl Read) -> io::Result<Option<Chunk>> {
        let mut data = self
            .free
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; CHUNK_BYTES]);
        let mut len = 0;
        while len < data.len() {
            match reader.read(&mut data[len..]) {
                Ok(0) => break,
                Ok(count) => len += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let _ = self.home.try_send(data);
                    return Err(error);
                }
            }
        }
        let buffer = Buffer {
            data,
            len,
            home: self.home.clone(),
        };
        Ok((len > 0).then(|| Arc::new(buffer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_whole_buffers_and_reuses_them() {
        let pool = Pool::default();
        let bytes: Vec<u8> = (0..CHUNK_BYTES + 10).map(|i| i as u8).collect();
        let mut reader = bytes.as_slice();
        let first = pool.fill(&mut reader).unwrap().unwrap();
        assert_eq!(&first[..], &bytes[..CHUNK_BYTES]);
        let address = first.as_ptr();
        drop(first);
        let second = pool.fill(&mut reader).unwrap().unwrap();
        assert_eq!(&second[..], &bytes[CHUNK_BYTES..]);
        assert_eq!(second.as_ptr(), address, "the returned buffer is reused");
        assert!(pool.fill(&mut reader).unwrap().is_none());
    }
}
