//! The documents oci-attest writes to a registry, built without any I/O: the referrer artifact
//! manifest that carries one envelope, the referrers tag-schema index, and cosign's `.att`
//! manifest. See `docs/registry.md` for the layouts.
//!
//! Everything is serialised with a fixed key order and no timestamps, so the same envelope always
//! gives the same manifest digest: attaching it twice finds it already listed.

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::digest::sha256_hex;

pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The OCI empty descriptor: the config of an artifact that has none (`{}`).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_BLOB: &[u8] = b"{}";

/// Annotation keys on the referrer manifest (and its index entry).
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
pub const STEP_ANNOTATION: &str = "ai.aflock.attestation.step";
pub const ATTESTORS_ANNOTATION: &str = "ai.aflock.attestation.types";
/// cosign's annotations on each `.att` layer.
const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const COSIGN_PREDICATE_ANNOTATION: &str = "predicateType";

/// A content descriptor: media type, `sha256:<hex>` digest and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{}", sha256_hex(bytes)),
            size: bytes.len() as u64,
        }
    }

    fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What the envelope says about itself, for annotations and `discover`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeSummary {
    /// The statement's `predicateType` (the collection URI for oci-attest's own output).
    pub predicate_type: String,
    /// The collection's step name (`predicate.name`).
    pub step: String,
    /// The attestor types inside the collection (`predicate.attestations[].type`).
    pub attestor_types: Vec<String>,
    /// The statement's subjects: `(name, sha256 hex)`.
    pub subjects: Vec<(String, String)>,
    /// The key ids of the envelope's signatures.
    pub keyids: Vec<String>,
}

impl EnvelopeSummary {
    /// Reads the (unverified) statement inside a DSSE envelope.
    pub fn read(envelope: &[u8]) -> anyhow::Result<Self> {
        let envelope = crate::dsse::parse(envelope).map_err(anyhow::Error::new)?;
        let payload = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            envelope.payload.as_bytes(),
        )
        .context("the envelope payload is not base64")?;
        let statement: Value =
            serde_json::from_slice(&payload).context("the envelope payload is not JSON")?;
        let strings = |values: &Value, key: &str| -> Vec<String> {
            values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|value| value[key].as_str().map(str::to_owned))
                .collect()
        };
        let subjects = crate::collection::sha256_subjects(&statement).collect();
        Ok(EnvelopeSummary {
            predicate_type: statement["predicateType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            step: statement["predicate"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            attestor_types: strings(&statement["predicate"]["attestations"], "type"),
            subjects,
            keyids: envelope
                .signatures
                .iter()
                .map(|signature| signature.keyid.clone())
                .collect(),
        })
    }

    fn annotations(&self) -> Value {
        let mut annotations = serde_json::Map::new();
        if !self.predicate_type.is_empty() {
            annotations.insert(PREDICATE_TYPE_ANNOTATION.into(), json!(self.predicate_type));
        }
        if !self.step.is_empty() {
            annotations.insert(STEP_ANNOTATION.into(), json!(self.step));
        }
        if !self.attestor_types.is_empty() {
            annotations.insert(
                ATTESTORS_ANNOTATION.into(),
                json!(self.attestor_types.join(",")),
            );
        }
        Value::Object(annotations)
    }
}

/// The referrer artifact manifest for one envelope, with `subject` = the image manifest.
pub fn referrer_manifest(
    envelope: &Descriptor,
    summary: &EnvelopeSummary,
    subject: &Descriptor,
) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": DSSE_MEDIA_TYPE,
        "config": Descriptor::of(EMPTY_MEDIA_TYPE, EMPTY_BLOB).to_json(),
        "layers": [envelope.to_json()],
        "subject": subject.to_json(),
        "annotations": summary.annotations(),
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// The referrers tag-schema index with `manifest` added, or `None` when it is already listed.
/// `existing` is the index currently under the `sha256-<hex>` tag, if any.
pub fn add_to_referrers_index(
    existing: Option<&[u8]>,
    manifest: &Descriptor,
    summary: &EnvelopeSummary,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut index = match existing {
        Some(bytes) => parse_object(bytes, "the referrers index")?,
        None => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    };
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .context("the referrers index has no `manifests` list")?;
    if manifests
        .iter()
        .any(|entry| entry["digest"] == manifest.digest.as_str())
    {
        return Ok(None);
    }
    let mut entry = manifest.to_json();
    entry["artifactType"] = json!(DSSE_MEDIA_TYPE);
    entry["annotations"] = summary.annotations();
    manifests.push(entry);
    Ok(Some(serde_json::to_vec(&index)?))
}

/// cosign's `.att` image with `envelope` appended as a layer, or `None` when it is already one.
/// Returns the new config blob and manifest.
pub fn add_to_cosign_attestations(
    existing: Option<&[u8]>,
    envelope: &Descriptor,
    summary: &EnvelopeSummary,
) -> anyhow::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut layers = match existing {
        Some(bytes) => {
            let manifest = parse_object(bytes, "the cosign attestation manifest")?;
            manifest["layers"]
                .as_array()
                .context("the cosign attestation manifest has no `layers` list")?
                .clone()
        }
        None => Vec::new(),
    };
    if layers
        .iter()
        .any(|layer| layer["digest"] == envelope.digest.as_str())
    {
        return Ok(None);
    }
    let mut layer = envelope.to_json();
    layer["annotations"] = json!({
        COSIGN_SIGNATURE_ANNOTATION: "",
        COSIGN_PREDICATE_ANNOTATION: summary.predicate_type,
    });
    layers.push(layer);
    // go-containerregistry's empty image with the layers appended, as cosign writes it.
    let diff_ids: Vec<&Value> = layers.iter().map(|layer| &layer["digest"]).collect();
    let config = json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": layers.iter().map(|_| json!({"created": "0001-01-01T00:00:00Z"})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    let config = serde_json::to_vec(&config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor::of(OCI_CONFIG, &config).to_json(),
        "layers": layers,
    });
    Ok(Some((config, serde_json::to_vec(&manifest)?)))
}

/// The media type a manifest declares (`mediaType`), else what its shape says.
pub fn manifest_media_type(bytes: &[u8]) -> anyhow::Result<String> {
    let manifest = parse_object(bytes, "the image manifest")?;
    if let Some(media_type) = manifest["mediaType"].as_str() {
        return Ok(media_type.to_owned());
    }
    Ok(if manifest.get("manifests").is_some() {
        OCI_INDEX
    } else {
        OCI_MANIFEST
    }
    .to_owned())
}

fn parse_object(bytes: &[u8], what: &str) -> anyhow::Result<Value> {
    let value: Value =
        serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))?;
    if !value.is_object() {
        bail!("{what} is not a JSON object");
    }
    Ok(value)
}

/// The referrers tag-schema tag for a manifest digest: `sha256:<hex>` → `sha256-<hex>`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// cosign's attestation tag: `sha256-<hex>.att`.
pub fn cosign_tag(digest: &str) -> String {
    format!("{}.att", referrers_tag(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> EnvelopeSummary {
        EnvelopeSummary {
            predicate_type: "https://aflock.ai/attestation-collection/v0.1".into(),
            step: "push".into(),
            attestor_types: vec!["a".into(), "b".into()],
            ..EnvelopeSummary::default()
        }
    }

    #[test]
    fn the_referrer_manifest_is_deterministic_and_names_its_subject() {
        let envelope = Descriptor::of(DSSE_MEDIA_TYPE, b"envelope");
        let subject = Descriptor::of(OCI_MANIFEST, b"image");
        let first = referrer_manifest(&envelope, &summary(), &subject);
        assert_eq!(first, referrer_manifest(&envelope, &summary(), &subject));
        let manifest: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(manifest["subject"]["digest"], subject.digest.as_str());
        assert_eq!(manifest["artifactType"], DSSE_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["digest"], envelope.digest.as_str());
        assert_eq!(
            manifest["config"]["digest"],
            format!("sha256:{}", sha256_hex(b"{}"))
        );
        assert_eq!(manifest["annotations"][STEP_ANNOTATION], "push");
        assert_eq!(manifest["annotations"][ATTESTORS_ANNOTATION], "a,b");
    }

    #[test]
    fn the_index_gains_each_manifest_once_and_keeps_foreign_entries() {
        let one = Descriptor::of(OCI_MANIFEST, b"one");
        let two = Descriptor::of(OCI_MANIFEST, b"two");
        let first = add_to_referrers_index(None, &one, &summary())
            .unwrap()
            .unwrap();
        assert_eq!(
            add_to_referrers_index(Some(&first), &one, &summary()).unwrap(),
            None
        );
        let second = add_to_referrers_index(Some(&first), &two, &summary())
            .unwrap()
            .unwrap();
        let index: Value = serde_json::from_slice(&second).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(index["manifests"][1]["artifactType"], DSSE_MEDIA_TYPE);
        assert!(add_to_referrers_index(Some(b"[]"), &one, &summary()).is_err());
        assert!(add_to_referrers_index(Some(b"{}"), &one, &summary()).is_err());
    }

    #[test]
    fn cosign_layers_are_appended_with_matching_diff_ids() {
        let one = Descriptor::of(DSSE_MEDIA_TYPE, b"one");
        let two = Descriptor::of(DSSE_MEDIA_TYPE, b"two");
        let (_, first) = add_to_cosign_attestations(None, &one, &summary())
            .unwrap()
            .unwrap();
        assert!(add_to_cosign_attestations(Some(&first), &one, &summary())
            .unwrap()
            .is_none());
        let (config, second) = add_to_cosign_attestations(Some(&first), &two, &summary())
            .unwrap()
            .unwrap();
        let manifest: Value = serde_json::from_slice(&second).unwrap();
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(manifest["layers"][1]["digest"], two.digest.as_str());
        assert_eq!(
            manifest["layers"][0]["annotations"][COSIGN_SIGNATURE_ANNOTATION],
            ""
        );
        assert_eq!(config["rootfs"]["diff_ids"][0], one.digest.as_str());
        assert_eq!(config["rootfs"]["diff_ids"][1], two.digest.as_str());
    }

    #[test]
    fn tags_follow_the_schemas() {
        assert_eq!(referrers_tag("sha256:ab"), "sha256-ab");
        assert_eq!(cosign_tag("sha256:ab"), "sha256-ab.att");
    }
}
