//! Attestation envelopes as evidence for a policy: which policy keys signed each one, the
//! collection inside, and what its file trees say — trusted only once the leaves reproduce the
//! signed Merkle root and the full path list agrees with them.
//!
//! Memory follows what is kept, not the envelope's size: the payload is decoded in place
//! ([`dsse::OpenedEnvelope`]), the statement is read without building a JSON tree (predicates
//! stay text, borrowed from the payload), and only the predicates the policy can hand to Rego
//! are copied out before the payload is dropped.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, ensure, Context};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Digest as _;

use crate::attestors::file_tree::{first_path_per_digest, merkle_root};
use crate::attestors::{MATERIAL_TYPE_URI, PRODUCT_TYPE_URI};
use crate::dsse;
use crate::keys::PublicKey;
use crate::policy::predicate_types;

const STATEMENT_TYPES: [&str; 2] = [
    crate::collection::STATEMENT_TYPE,
    "https://in-toto.io/Statement/v1",
];

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Path → SHA-256 of a file set.
pub type FileSet = BTreeMap<String, Digest>;

/// SHA-256 of nothing: the root of an empty Merkle tree and the digest of an empty file, which
/// every empty tree and empty file carries. It ties nothing to anything.
pub fn empty_digest() -> Digest {
    sha2::Sha256::digest([]).into()
}

/// One attestation file that verified under at least one policy key.
#[derive(Debug)]
pub struct Evidence {
    /// Where it came from (the `-a` argument), for messages.
    pub source: String,
    /// Key ids of the policy keys whose signature verified.
    pub signers: Vec<String>,
    pub step: String,
    /// The subjects with a sha256 digest: (name, digest). Other algorithms are not compared
    /// (a weaker one could be chosen to force a match).
    pub subjects: Vec<(String, Digest)>,
    /// The sha256 digests of the collection's back-references.
    pub backrefs: Vec<Digest>,
    /// The attestations in collection order.
    pub attestations: Vec<Predicate>,
    /// The files the step read, when the collection has a material tree.
    pub materials: Option<Files>,
    /// The files the step wrote, when the collection has a product tree.
    pub products: Option<Files>,
    /// The digests of the product leaves whose tree verified: files the step wrote.
    pub product_digests: BTreeSet<Digest>,
    /// SHA-256 of the statement: the same statement given twice is one collection.
    pub statement_digest: Digest,
}

/// One attestation of a collection.
#[derive(Debug)]
pub struct Predicate {
    pub type_uri: String,
    /// The predicate's JSON as signed, kept when the policy can feed it to Rego.
    pub json: Option<Box<str>>,
}

/// What a material or product tree tells about its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Files {
    /// Every path with its digest: the leaves reproduce the signed root, and the full path list
    /// (`files`) agrees with them.
    Known(FileSet),
    /// The paths cannot be compared, and why.
    Unknown(String),
}

#[derive(Deserialize)]
struct Statement<'a> {
    #[serde(rename = "_type")]
    statement_type: Cow<'a, str>,
    #[serde(default)]
    subject: Option<Vec<Subject>>,
    #[serde(rename = "predicateType")]
    predicate_type: Cow<'a, str>,
    #[serde(borrow)]
    predicate: Collection<'a>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    name: String,
    #[serde(default)]
    digest: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Collection<'a> {
    name: String,
    #[serde(borrow)]
    attestations: Option<Vec<CollectionEntry<'a>>>,
    #[serde(default)]
    backrefs: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

#[derive(Deserialize)]
struct CollectionEntry<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    #[serde(borrow)]
    attestation: &'a RawValue,
}

/// A v0.3 product/material predicate, its strings borrowed from the payload.
#[derive(Deserialize)]
struct Tree<'a> {
    #[serde(rename = "merkleRoot")]
    merkle_root: Cow<'a, str>,
    #[serde(rename = "treeSize")]
    tree_size: u64,
    #[serde(default, rename = "hashAlgorithm")]
    hash_algorithm: Option<Cow<'a, str>>,
    #[serde(default)]
    construction: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    leaves: Option<Vec<Leaf<'a>>>,
    #[serde(default, borrow)]
    files: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

#[derive(Deserialize)]
struct Leaf<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(rename = "fileDigest", borrow)]
    file_digest: Cow<'a, str>,
    #[serde(rename = "leafHash", borrow)]
    leaf_hash: Cow<'a, str>,
}

/// Verifies `envelope_bytes` against every policy key and reads the collection it signs.
/// `keep(step, type)` says which predicates to keep as JSON (those the policy can feed to
/// Rego).
pub fn load(
    source: &str,
    envelope_bytes: Vec<u8>,
    keys: &BTreeMap<String, PublicKey>,
    keep: &dyn Fn(&str, &str) -> bool,
) -> anyhow::Result<Evidence> {
    let envelope = dsse::OpenedEnvelope::open(envelope_bytes)?;
    ensure!(
        envelope.payload_type == dsse::IN_TOTO_PAYLOAD_TYPE,
        "payloadType is {:?}, not an in-toto statement ({})",
        envelope.payload_type,
        dsse::IN_TOTO_PAYLOAD_TYPE
    );
    let signers: Vec<String> = keys
        .iter()
        .filter(|(_, key)| envelope.verify(&[dsse::IN_TOTO_PAYLOAD_TYPE], key).is_ok())
        .map(|(keyid, _)| keyid.clone())
        .collect();
    if signers.is_empty() {
        let found: Vec<&str> = envelope
            .signatures
            .iter()
            .map(|signature| signature.keyid.as_str())
            .collect();
        bail!("no signature verifies with a key of the policy (the envelope is signed by keyids {found:?})");
    }
    let payload = envelope.into_payload();
    read_statement(source, signers, &payload, keep)
}

/// Reads the statement `payload` of `source`, whose envelope verified under `signers` (the
/// fuzz target reads statements this way, without signatures).
pub fn read_statement(
    source: &str,
    signers: Vec<String>,
    payload: &[u8],
    keep: &dyn Fn(&str, &str) -> bool,
) -> anyhow::Result<Evidence> {
    let statement: Statement = crate::strict_json::from_slice(payload)
        .context("the signed payload is not a readable in-toto statement")?;
    ensure!(
        STATEMENT_TYPES.contains(&statement.statement_type.as_ref()),
        "the payload is not an in-toto statement (_type {:?})",
        statement.statement_type
    );
    ensure!(
        predicate_types::COLLECTION_TYPES.contains(&statement.predicate_type.as_ref()),
        "the statement's predicateType {:?} is not an attestation collection",
        statement.predicate_type
    );
    let collection = statement.predicate;
    let step = collection.name;
    let mut evidence = Evidence {
        source: source.to_owned(),
        signers,
        subjects: statement
            .subject
            .into_iter()
            .flatten()
            .filter_map(|subject| Some((subject.name, sha256_of(subject.digest.as_ref()?)?)))
            .collect(),
        backrefs: collection
            .backrefs
            .iter()
            .flat_map(|backrefs| backrefs.values())
            .filter_map(sha256_of)
            .collect(),
        attestations: Vec::new(),
        materials: None,
        products: None,
        product_digests: BTreeSet::new(),
        statement_digest: sha2::Sha256::digest(payload).into(),
        step,
    };
    for entry in collection
        .attestations
        .context("the collection has no attestations list")?
    {
        let text = entry.attestation.get();
        let tree = if predicate_types::same(&entry.type_uri, MATERIAL_TYPE_URI) {
            Some(&mut evidence.materials)
        } else if predicate_types::same(&entry.type_uri, PRODUCT_TYPE_URI) {
            Some(&mut evidence.products)
        } else {
            None
        };
        if let Some(files) = tree {
            let (read, digests) = match read_tree(text) {
                Ok((files, digests)) => (files, digests),
                Err(reason) => (
                    Files::Unknown(format!("{source}: {}: {reason}", entry.type_uri)),
                    BTreeSet::new(),
                ),
            };
            *files = Some(match files.take() {
                None => read,
                Some(known) => merge(known, read, &entry.type_uri),
            });
            if predicate_types::same(&entry.type_uri, PRODUCT_TYPE_URI) {
                evidence.product_digests.extend(digests);
            }
        }
        let json = keep(&evidence.step, &entry.type_uri).then(|| Box::from(text));
        evidence.attestations.push(Predicate {
            type_uri: entry.type_uri,
            json,
        });
    }
    Ok(evidence)
}

/// The sha256 of a digest set (lowercase or uppercase hex), if it has a well-formed one.
fn sha256_of(digests: &BTreeMap<String, String>) -> Option<Digest> {
    parse_digest(digests.get("sha256")?).ok()
}

fn parse_digest(hex_text: &str) -> Result<Digest, String> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut digest)
        .map_err(|_| format!("{hex_text:?} is not a SHA-256 digest"))?;
    Ok(digest)
}

/// Two trees of one kind in one collection: their files together, unless they disagree.
fn merge(first: Files, second: Files, type_uri: &str) -> Files {
    match (first, second) {
        (Files::Known(mut files), Files::Known(more)) => {
            for (path, digest) in more {
                if files.get(&path).is_some_and(|known| *known != digest) {
                    return Files::Unknown(format!(
                        "two {type_uri} trees give {path:?} different digests"
                    ));
                }
                files.insert(path, digest);
            }
            Files::Known(files)
        }
        (Files::Unknown(reason), _) | (_, Files::Unknown(reason)) => Files::Unknown(reason),
    }
}

/// Reads a v0.3 tree: its files (when every path is known) and the digests of its leaves,
/// after checking that every leaf hash is the hash of its file digest, that the leaves
/// reproduce `merkleRoot` and `treeSize`, and that the full path list (`files`) gives exactly
/// those leaves.
fn read_tree(json: &str) -> Result<(Files, BTreeSet<Digest>), String> {
    let tree: Tree = serde_json::from_str(json).map_err(|error| error.to_string())?;
    let root = parse_digest(&tree.merkle_root).map_err(|error| format!("merkleRoot {error}"))?;
    if let Some(algorithm) = tree
        .hash_algorithm
        .filter(|algorithm| algorithm != "sha256")
    {
        return Err(format!("hashAlgorithm {algorithm:?} is not sha256"));
    }
    if let Some(construction) = tree.construction.filter(|value| value != "RFC6962") {
        return Err(format!("construction {construction:?} is not RFC6962"));
    }
    let Some(leaves) = tree.leaves else {
        return if tree.tree_size == 0 && root == empty_digest() {
            Ok((Files::Known(FileSet::new()), BTreeSet::new()))
        } else {
            Err("it carries no leaves".to_owned())
        };
    };
    if leaves.len() as u64 != tree.tree_size {
        return Err(format!(
            "{} leaves but treeSize {}",
            leaves.len(),
            tree.tree_size
        ));
    }
    let mut entries: Vec<(Digest, &str)> = Vec::with_capacity(leaves.len());
    let mut hashes = Vec::with_capacity(leaves.len());
    for leaf in &leaves {
        let path = leaf.path.as_ref();
        let digest =
            parse_digest(&leaf.file_digest).map_err(|error| format!("leaf {path:?}: {error}"))?;
        let leaf_hash: Digest = sha2::Sha256::digest(digest).into();
        if parse_digest(&leaf.leaf_hash) != Ok(leaf_hash) {
            return Err(format!(
                "leaf {path:?}: leafHash is not the hash of its fileDigest"
            ));
        }
        hashes.push(leaf_hash);
        entries.push((digest, path));
    }
    let computed = merkle_root(&hashes);
    if computed != root {
        return Err(format!(
            "the leaves do not reproduce merkleRoot {} (they give {})",
            hex::encode(root),
            hex::encode(computed)
        ));
    }
    let digests: BTreeSet<Digest> = entries.iter().map(|(digest, _)| *digest).collect();
    let Some(listed) = tree.files else {
        let files = if leaves.is_empty() {
            Files::Known(FileSet::new())
        } else {
            Files::Unknown(
                "its leaves name one path per distinct content and it has no full path list \
                 (`files`: written by cilock or an older oci-attest), so a file whose content \
                 another file also has cannot be compared"
                    .to_owned(),
            )
        };
        return Ok((files, digests));
    };
    let mut files = FileSet::new();
    for (path, digest) in &listed {
        let digest = parse_digest(digest).map_err(|error| format!("files {path:?}: {error}"))?;
        files.insert(path.as_ref().to_owned(), digest);
    }
    let expected = first_path_per_digest(
        files
            .iter()
            .map(|(path, digest)| (*digest, path.as_str()))
            .collect(),
    );
    if expected != entries {
        return Err("its full path list (`files`) does not give its leaves".to_owned());
    }
    Ok((Files::Known(files), digests))
}

impl Evidence {
    /// A digest of the collection's material and product files (and why they are unknown,
    /// when they are): two collections with the same one link alike through `artifactsFrom`.
    pub fn files_digest(&self) -> Digest {
        let mut hasher = sha2::Sha256::new();
        for files in [&self.materials, &self.products] {
            match files {
                None => hasher.update([0]),
                Some(Files::Unknown(reason)) => {
                    hasher.update([1]);
                    hasher.update((reason.len() as u64).to_le_bytes());
                    hasher.update(reason.as_bytes());
                }
                Some(Files::Known(files)) => {
                    hasher.update([2]);
                    hasher.update((files.len() as u64).to_le_bytes());
                    for (path, digest) in files {
                        hasher.update((path.len() as u64).to_le_bytes());
                        hasher.update(path.as_bytes());
                        hasher.update(digest);
                    }
                }
            }
        }
        hasher.finalize().into()
    }

    /// The attestations of type `type_uri` (or one of its aliases).
    pub fn predicates<'a>(&'a self, type_uri: &'a str) -> impl Iterator<Item = &'a Predicate> + 'a {
        self.attestations
            .iter()
            .filter(move |predicate| predicate_types::same(&predicate.type_uri, type_uri))
    }

    /// Whether `digest` is one of the subjects or a product this collection verified; the
    /// empty digest names nothing.
    pub fn names(&self, digest: &Digest) -> bool {
        *digest != empty_digest()
            && (self.subjects.iter().any(|(_, subject)| subject == digest)
                || self.product_digests.contains(digest))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

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

    fn read(tree: &Value) -> Result<Files, String> {
        read_tree(&tree.to_string()).map(|(files, _)| files)
    }

    fn digest(content: &str) -> Digest {
        sha2::Sha256::digest(content).into()
    }

    #[test]
    fn leaves_are_trusted_only_when_they_reproduce_the_root_and_the_path_list() {
        let good = tree(
            &[("a.txt", "a"), ("b/c", "c"), ("copy-of-a", "a")],
            EmptyLeaves::Write,
        );
        let Files::Known(files) = read(&good).unwrap() else {
            panic!("{good}")
        };
        // The path list brings back the file whose content another leaf already has.
        assert_eq!(files.len(), 3);
        assert_eq!(files["copy-of-a"], digest("a"));

        let mut forged = good.clone();
        forged["leaves"][0]["fileDigest"] = json!(sha256_hex(b"evil"));
        forged["leaves"][0]["leafHash"] = json!(hex::encode(sha2::Sha256::digest(
            sha2::Sha256::digest(b"evil")
        )));
        let error = read(&forged).unwrap_err();
        assert!(error.contains("do not reproduce merkleRoot"), "{error}");

        let mut bad_leaf_hash = good.clone();
        bad_leaf_hash["leaves"][1]["fileDigest"] = json!(sha256_hex(b"evil"));
        assert!(read(&bad_leaf_hash).unwrap_err().contains("leafHash"));

        let mut short = good.clone();
        short["treeSize"] = json!(3);
        assert!(read(&short).is_err());

        // A path list that hides a swapped file behind one with the leaf's content.
        let mut swapped = good.clone();
        swapped["files"]["copy-of-a"] = json!(sha256_hex(b"evil"));
        assert!(read(&swapped)
            .unwrap_err()
            .contains("does not give its leaves"));

        let mut without_list = good.clone();
        without_list.as_object_mut().unwrap().remove("files");
        assert!(
            matches!(read(&without_list).unwrap(), Files::Unknown(reason) if reason.contains("no full path list"))
        );

        assert_eq!(
            read(&tree(&[], EmptyLeaves::Omit)).unwrap(),
            Files::Known(FileSet::new())
        );
        let mut leafless = good;
        leafless.as_object_mut().unwrap().remove("leaves");
        assert!(read(&leafless).unwrap_err().contains("no leaves"));
    }

    fn statement(subject_digest: Value, attestations: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "subject": [{"name": "s", "digest": subject_digest}],
            "predicateType": "https://aflock.ai/attestation-collection/v0.1",
            "predicate": {"name": "build", "attestations": attestations},
        }))
        .unwrap()
    }

    #[test]
    fn only_sha256_subjects_and_verified_products_name_a_digest() {
        let products = tree(&[("app", "binary"), ("empty", "")], EmptyLeaves::Omit);
        let payload = statement(
            json!({"sha1": "aa".repeat(20), "sha256": sha256_hex(b"image").to_uppercase()}),
            json!([
                {"type": PRODUCT_TYPE_URI, "attestation": products},
                {"type": "https://aflock.ai/attestations/command-run/v0.1", "attestation": {"exitcode": 0}},
            ]),
        );
        let keep = |_: &str, type_uri: &str| type_uri.contains("command-run");
        let evidence = read_statement("a.json", vec!["k".into()], &payload, &keep).unwrap();
        assert!(evidence.names(&digest("image")));
        assert!(evidence.names(&digest("binary")));
        // An empty file names nothing: every empty tree and file has that digest.
        assert!(!evidence.names(&empty_digest()));
        assert!(evidence.attestations[0].json.is_none());
        assert_eq!(
            evidence.attestations[1].json.as_deref(),
            Some(r#"{"exitcode": 0}"#.replace(' ', "").as_str())
        );

        // A digest set that only offers a weaker algorithm names nothing.
        let payload = statement(json!({"sha1": "aa".repeat(20)}), json!([]));
        let evidence = read_statement("b.json", vec!["k".into()], &payload, &keep).unwrap();
        assert!(evidence.subjects.is_empty());

        let repeated = br#"{"_type":"https://in-toto.io/Statement/v0.1","subject":[],"predicateType":"https://aflock.ai/attestation-collection/v0.1","predicate":{"name":"build","attestations":[{"type":"t","attestation":{"exitcode":1,"exitcode":0}}]}}"#;
        let error = format!(
            "{:#}",
            read_statement("c.json", vec![], repeated, &keep).unwrap_err()
        );
        assert!(error.contains("repeats the key \"exitcode\""), "{error}");
    }
}
