//! Digest sets as the in-toto/witness formats write them: `{"sha256": "<hex>"}` with sorted keys.

use std::collections::BTreeMap;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// Algorithm name → lowercase hex digest. A `BTreeMap` so keys serialise sorted, as Go does.
pub type DigestSet = BTreeMap<String, String>;

/// A digest set holding only SHA-256.
pub fn sha256_set(hex: impl Into<String>) -> DigestSet {
    DigestSet::from([("sha256".to_owned(), hex.into())])
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
