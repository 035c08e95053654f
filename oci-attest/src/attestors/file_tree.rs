//! The Merkle tree over file digests shared by the product and material attestors (v0.3):
//! RFC 6962 hashing over one leaf per distinct file content, as cilock writes it, and beside it
//! the full path → digest list that the leaves, one path per content, cannot give.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::attestors::Attestation;
use crate::digest::sha256_set;
use crate::products::FileDigest;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leaf {
    pub path: String,
    #[serde(rename = "fileDigest")]
    pub file_digest: String,
    #[serde(rename = "leafHash")]
    pub leaf_hash: String,
}

/// The predicate of the product and material attestors, keys in wire order.
#[derive(Clone, Debug, Serialize)]
pub struct TreePredicate {
    #[serde(rename = "merkleRoot")]
    pub merkle_root: String,
    #[serde(rename = "treeSize")]
    pub tree_size: usize,
    #[serde(rename = "hashAlgorithm")]
    pub hash_algorithm: &'static str,
    pub construction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaves: Option<Vec<Leaf>>,
    /// Every path of the tree → its sha256 hex (oci-attest only; cilock's readers ignore it).
    /// Written whenever `leaves` is: a verifier comparing paths (`verify -p`, `artifactsFrom`)
    /// must not be blind to a file whose content another file also has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
}

/// Whether an empty leaf list is written (material) or left out (product).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyLeaves {
    Write,
    Omit,
}

/// The entries that become leaves: sorted by (digest, path), the first path per digest. Digests
/// compare as lowercase hex or as raw bytes alike (hex keeps the byte order).
pub fn first_path_per_digest<D: Ord, P: Ord>(mut entries: Vec<(D, P)>) -> Vec<(D, P)> {
    entries.sort();
    entries.dedup_by(|next, kept| next.0 == kept.0);
    entries
}

/// Leaves: paths as recorded (escaped losslessly, `crate::pathtext`: a backslash is part of
/// the escaping, not a separator), see [`first_path_per_digest`]; with each leaf its raw leaf
/// hash for the tree.
fn leaves(files: &[FileDigest]) -> Vec<(Leaf, [u8; 32])> {
    let entries: Vec<(String, String)> = files
        .iter()
        .map(|file| (file.sha256.to_ascii_lowercase(), file.path.clone()))
        .collect();
    first_path_per_digest(entries)
        .into_iter()
        .map(|(digest, path)| {
            // Digests come from our own hashing; should one not be hex, its text is hashed,
            // which still yields a distinct, stable leaf.
            let raw = hex::decode(&digest).unwrap_or_else(|_| digest.as_bytes().to_vec());
            let leaf_hash: [u8; 32] = Sha256::digest(raw).into();
            let leaf = Leaf {
                leaf_hash: hex::encode(leaf_hash),
                file_digest: digest,
                path,
            };
            (leaf, leaf_hash)
        })
        .collect()
}

/// RFC 6962 Merkle tree hash over the leaf hashes: leaf node sha256(0x00 ‖ leafHash), inner
/// node sha256(0x01 ‖ left ‖ right), split at the largest power of two below n.
pub fn merkle_root(leaf_hashes: &[[u8; 32]]) -> [u8; 32] {
    match leaf_hashes {
        [] => Sha256::digest([]).into(),
        [leaf] => Sha256::new()
            .chain_update([0x00])
            .chain_update(leaf)
            .finalize()
            .into(),
        _ => {
            let (left, right) = leaf_hashes.split_at(leaf_hashes.len().next_power_of_two() / 2);
            Sha256::new()
                .chain_update([0x01])
                .chain_update(merkle_root(left))
                .chain_update(merkle_root(right))
                .finalize()
                .into()
        }
    }
}

/// The tree over `files` as a predicate, with its root.
pub fn predicate(files: &[FileDigest], empty_leaves: EmptyLeaves) -> TreePredicate {
    let (leaves, hashes): (Vec<Leaf>, Vec<[u8; 32]>) = leaves(files).into_iter().unzip();
    let written = empty_leaves == EmptyLeaves::Write || !leaves.is_empty();
    TreePredicate {
        merkle_root: hex::encode(merkle_root(&hashes)),
        tree_size: leaves.len(),
        hash_algorithm: "sha256",
        construction: "RFC6962",
        leaves: written.then_some(leaves),
        files: written.then(|| {
            files
                .iter()
                .map(|file| (file.path.clone(), file.sha256.to_ascii_lowercase()))
                .collect()
        }),
    }
}

/// The product or material attestation: subject and backref `tree:<name>` → the root.
pub fn attestation(
    type_uri: &'static str,
    tree_name: &str,
    files: &[FileDigest],
    empty_leaves: EmptyLeaves,
    started: SystemTime,
    ended: SystemTime,
) -> anyhow::Result<Attestation> {
    let predicate = predicate(files, empty_leaves);
    let subject = (
        format!("tree:{tree_name}"),
        sha256_set(&predicate.merkle_root),
    );
    Ok(Attestation {
        type_uri,
        predicate: serde_json::to_value(&predicate)?,
        subjects: vec![subject.clone()],
        backrefs: vec![subject],
        started,
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;

    fn file(path: &str, content: &str) -> FileDigest {
        FileDigest {
            path: path.to_owned(),
            sha256: sha256_hex(content.as_bytes()),
        }
    }

    #[test]
    fn spec_test_vector_three_files() {
        let files = [file("f1", "1"), file("f2", "2"), file("f3", "3")];
        let tree = predicate(&files, EmptyLeaves::Omit);
        assert_eq!(
            tree.merkle_root,
            "2501fd5de94d7a57a09afdc7028cfd5e58638597981c12c6005b060d044d3fb8"
        );
        assert_eq!(tree.tree_size, 3);
    }

    #[test]
    fn spec_test_vector_duplicate_content() {
        let files = [
            file("z", "a\n"),
            file("b/c.bin", "hello"),
            file("a.txt", "a\n"),
        ];
        let tree = predicate(&files, EmptyLeaves::Omit);
        assert_eq!(
            tree.merkle_root,
            "986a7a2035ad8a1e6c7b7ef039054fe98cdd560f822944b377bdf0a0323c966c"
        );
        let paths: Vec<&str> = tree
            .leaves
            .iter()
            .flatten()
            .map(|l| l.path.as_str())
            .collect();
        // sha256("hello") = 2cf24d… sorts before sha256("a\n") = 87428f…; a.txt beats z.
        assert_eq!(paths, ["b/c.bin", "a.txt"]);
        // The file list keeps z, which has no leaf of its own.
        let listed: Vec<&str> = tree
            .files
            .iter()
            .flatten()
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(listed, ["a.txt", "b/c.bin", "z"]);
        assert_eq!(tree.files.as_ref().unwrap()["z"], sha256_hex(b"a\n"));
    }

    /// On Linux a backslash is part of a file name: turning it into `/` (as cilock does for
    /// Windows paths) would merge `b\c.bin` with `b/c.bin`, so it is kept.
    #[test]
    fn backslashes_are_not_separators() {
        let files = [file("b\\c.bin", "hello"), file("b/c.bin", "other")];
        let tree = predicate(&files, EmptyLeaves::Omit);
        let mut paths: Vec<&str> = tree
            .leaves
            .iter()
            .flatten()
            .map(|l| l.path.as_str())
            .collect();
        paths.sort_unstable();
        assert_eq!(paths, ["b/c.bin", "b\\c.bin"]);
    }

    #[test]
    fn rfc6962_shapes_for_one_to_five_leaves() {
        let node = |parts: &[&[u8]]| -> [u8; 32] {
            let mut hasher = Sha256::new();
            parts.iter().for_each(|part| hasher.update(part));
            hasher.finalize().into()
        };
        let leaf_hashes: Vec<[u8; 32]> = (0u8..5).map(|i| node(&[&[i]])).collect();
        let leaf = |i: usize| node(&[&[0], &leaf_hashes[i]]);
        let inner = |a: [u8; 32], b: [u8; 32]| node(&[&[1], &a, &b]);
        assert_eq!(merkle_root(&[]), node(&[]));
        assert_eq!(merkle_root(&leaf_hashes[..1]), leaf(0));
        assert_eq!(merkle_root(&leaf_hashes[..2]), inner(leaf(0), leaf(1)));
        assert_eq!(
            merkle_root(&leaf_hashes[..3]),
            inner(inner(leaf(0), leaf(1)), leaf(2))
        );
        let four = inner(inner(leaf(0), leaf(1)), inner(leaf(2), leaf(3)));
        assert_eq!(merkle_root(&leaf_hashes[..4]), four);
        assert_eq!(merkle_root(&leaf_hashes), inner(four, leaf(4)));
    }

    #[test]
    fn empty_leaves_written_only_when_asked() {
        let product = serde_json::to_string(&predicate(&[], EmptyLeaves::Omit)).unwrap();
        assert_eq!(
            product,
            r#"{"merkleRoot":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","treeSize":0,"hashAlgorithm":"sha256","construction":"RFC6962"}"#
        );
        let material = serde_json::to_string(&predicate(&[], EmptyLeaves::Write)).unwrap();
        assert!(material.ends_with(r#""construction":"RFC6962","leaves":[],"files":{}}"#));
    }
}
