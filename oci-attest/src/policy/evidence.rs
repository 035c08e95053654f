//! Attestation envelopes as evidence for a policy: which policy keys signed each one, the
//! collection inside, and its file trees (product and material leaves), trusted only once the
//! leaves reproduce the signed Merkle root.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use sha2::Digest as _;

use crate::attestors::file_tree::merkle_root;
use crate::attestors::{MATERIAL_TYPE_URI, PRODUCT_TYPE_URI};
use crate::dsse;
use crate::keys::PublicKey;
use crate::policy::predicate_types;

const STATEMENT_TYPES: [&str; 2] = [
    crate::collection::STATEMENT_TYPE,
    "https://in-toto.io/Statement/v1",
];

/// One attestation file that verified under at least one policy key.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// Where it came from (the `-a` argument), for messages.
    pub source: String,
    /// Key ids of the policy keys whose signature verified.
    pub signers: Vec<String>,
    pub step: String,
    /// Subject digests (sha256 hex) by subject name.
    pub subjects: BTreeMap<String, String>,
    pub attestations: Vec<(String, Value)>,
    /// The sha256 digests of the collection's back-references.
    pub backrefs: Vec<String>,
}

/// Verifies `envelope_bytes` against every policy key and reads the collection it signs.
pub fn load(
    source: &str,
    envelope_bytes: &[u8],
    keys: &BTreeMap<String, PublicKey>,
) -> anyhow::Result<Evidence> {
    let envelope = dsse::parse(envelope_bytes)?;
    let mut payload = None;
    let mut signers = Vec::new();
    for (keyid, key) in keys {
        if let Ok(verified) = dsse::verify(&envelope, key) {
            signers.push(keyid.clone());
            payload = Some(verified);
        }
    }
    let Some(payload) = payload else {
        let found: Vec<&str> = envelope
            .signatures
            .iter()
            .map(|signature| signature.keyid.as_str())
            .collect();
        bail!("no signature verifies with a key of the policy (the envelope is signed by keyids {found:?})");
    };
    let statement: Value =
        serde_json::from_slice(&payload).context("the signed payload is not JSON")?;
    let statement_type = statement["_type"].as_str().unwrap_or_default();
    ensure!(
        STATEMENT_TYPES.contains(&statement_type),
        "the payload is not an in-toto statement (_type {statement_type:?})"
    );
    let predicate_type = statement["predicateType"].as_str().unwrap_or_default();
    ensure!(
        predicate_types::COLLECTION_TYPES.contains(&predicate_type),
        "the statement's predicateType {predicate_type:?} is not an attestation collection"
    );
    let collection = &statement["predicate"];
    let step = collection["name"]
        .as_str()
        .context("the collection has no step name")?
        .to_owned();
    let attestations = collection["attestations"]
        .as_array()
        .context("the collection has no attestations list")?
        .iter()
        .map(|entry| {
            let type_uri = entry["type"]
                .as_str()
                .context("an attestation has no type")?;
            Ok((type_uri.to_owned(), entry["attestation"].clone()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let subjects = crate::collection::sha256_subjects(&statement)
        .map(|(name, hex)| (name, hex.to_ascii_lowercase()))
        .collect();
    let backrefs = collection["backrefs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, digest)| Some(digest["sha256"].as_str()?.to_ascii_lowercase()))
        .collect();
    Ok(Evidence {
        source: source.to_owned(),
        signers,
        step,
        subjects,
        attestations,
        backrefs,
    })
}

/// Path → sha256 hex of a file set.
pub type FileSet = BTreeMap<String, String>;

impl Evidence {
    /// The predicates of the attestations of type `type_uri` (or one of its aliases).
    pub fn predicates<'a>(&'a self, type_uri: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.attestations
            .iter()
            .filter(move |(found, _)| predicate_types::same(found, type_uri))
            .map(|(_, predicate)| predicate)
    }

    /// The files the step read (material leaves). `None` when the collection carries no
    /// material leaves: an unknown set, which can never satisfy an `artifactsFrom` link.
    pub fn materials(&self) -> anyhow::Result<Option<FileSet>> {
        self.file_tree(MATERIAL_TYPE_URI)
    }

    /// The files the step wrote (product leaves); an empty product tree may omit its leaves.
    pub fn products(&self) -> anyhow::Result<FileSet> {
        Ok(self.file_tree(PRODUCT_TYPE_URI)?.unwrap_or_default())
    }

    /// Materials overlaid with products: the files as the step left them.
    pub fn artifacts(&self) -> anyhow::Result<FileSet> {
        let mut artifacts = self.materials()?.unwrap_or_default();
        artifacts.extend(self.products()?);
        Ok(artifacts)
    }

    /// Whether `digest` (sha256 hex) is one of the subjects or one of the products.
    pub fn names_digest(&self, digest: &str) -> anyhow::Result<bool> {
        Ok(self.subjects.values().any(|subject| subject == digest)
            || self.products()?.values().any(|product| product == digest))
    }

    fn file_tree(&self, type_uri: &str) -> anyhow::Result<Option<FileSet>> {
        let mut files: Option<FileSet> = None;
        for predicate in self.predicates(type_uri) {
            let tree = verified_leaves(predicate)
                .with_context(|| format!("{}: {type_uri}", self.source))?;
            if let Some(tree) = tree {
                files.get_or_insert_with(FileSet::new).extend(tree);
            }
        }
        Ok(files)
    }
}

/// The leaves of a product/material v0.3 predicate, after checking that every leaf hash is the
/// hash of its file digest and that the leaves reproduce `merkleRoot` and `treeSize`. `None`
/// when the predicate carries no leaves and does not commit to an empty tree.
fn verified_leaves(predicate: &Value) -> anyhow::Result<Option<FileSet>> {
    let root = predicate["merkleRoot"]
        .as_str()
        .context("no merkleRoot")?
        .to_ascii_lowercase();
    let size = predicate["treeSize"].as_u64().context("no treeSize")?;
    let Some(leaves) = predicate["leaves"].as_array() else {
        let empty_root = hex::encode(merkle_root(&[]));
        return Ok((size == 0 && root == empty_root).then(FileSet::new));
    };
    ensure!(
        leaves.len() as u64 == size,
        "{} leaves but treeSize {size}",
        leaves.len()
    );
    let mut files = FileSet::new();
    let mut hashes = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        let path = leaf["path"].as_str().context("a leaf has no path")?;
        let digest = leaf["fileDigest"]
            .as_str()
            .with_context(|| format!("leaf {path:?} has no fileDigest"))?
            .to_ascii_lowercase();
        let raw = hex::decode(&digest)
            .ok()
            .filter(|raw| raw.len() == 32)
            .with_context(|| format!("leaf {path:?}: fileDigest is not a SHA-256"))?;
        let leaf_hash: [u8; 32] = sha2::Sha256::digest(&raw).into();
        ensure!(
            leaf["leafHash"]
                .as_str()
                .is_some_and(|claimed| claimed.eq_ignore_ascii_case(&hex::encode(leaf_hash))),
            "leaf {path:?}: leafHash is not the hash of its fileDigest"
        );
        hashes.push(leaf_hash);
        files.insert(path.to_owned(), digest);
    }
    let computed = hex::encode(merkle_root(&hashes));
    ensure!(
        computed == root,
        "the leaves do not reproduce merkleRoot {root} (they give {computed})"
    );
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::attestors::file_tree::{predicate, EmptyLeaves};
    use crate::digest::sha256_hex;
    use crate::products::FileDigest;

    fn tree(files: &[(&str, &str)], empty: EmptyLeaves) -> Value {
        let files: Vec<FileDigest> = files
            .iter()
            .map(|(path, content)| FileDigest {
                path: (*path).to_owned(),
                sha256: sha256_hex(content.as_bytes()),
            })
            .collect();
        serde_json::to_value(predicate(&files, empty)).unwrap()
    }

    #[test]
    fn leaves_are_trusted_only_when_they_reproduce_the_root() {
        let good = tree(&[("a.txt", "a"), ("b/c", "c")], EmptyLeaves::Write);
        let files = verified_leaves(&good).unwrap().unwrap();
        assert_eq!(files["a.txt"], sha256_hex(b"a"));

        let mut forged = good.clone();
        forged["leaves"][0]["fileDigest"] = json!(sha256_hex(b"evil"));
        forged["leaves"][0]["leafHash"] = json!(hex::encode(sha2::Sha256::digest(
            sha2::Sha256::digest(b"evil")
        )));
        let error = verified_leaves(&forged).unwrap_err().to_string();
        assert!(error.contains("do not reproduce merkleRoot"), "{error}");

        let mut bad_leaf_hash = good.clone();
        bad_leaf_hash["leaves"][1]["fileDigest"] = json!(sha256_hex(b"evil"));
        let error = verified_leaves(&bad_leaf_hash).unwrap_err().to_string();
        assert!(error.contains("leafHash"), "{error}");

        let mut short = good.clone();
        short["treeSize"] = json!(3);
        assert!(verified_leaves(&short).is_err());

        assert_eq!(
            verified_leaves(&tree(&[], EmptyLeaves::Omit)).unwrap(),
            Some(FileSet::new())
        );
        let mut leafless = good;
        leafless.as_object_mut().unwrap().remove("leaves");
        assert_eq!(verified_leaves(&leafless).unwrap(), None);
    }
}
