//! The `oci` predicate, in cilock's shape: the legacy keys (`tardigest` … `manifestdigest`)
//! describe the first image as cilock does; `format` and `images` are ours and describe every
//! image (see `docs/format.md`).

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};

use crate::digest::{sha256_hex, sha256_set, DigestSet};
use crate::inspect::image::{Image, Layer, Platform};
use crate::inspect::layout::LayoutImage;
use crate::inspect::Analysis;

/// The `https://aflock.ai/attestations/oci/v0.1` predicate, keys in wire order.
#[derive(Clone, Debug, Serialize)]
pub struct OciPredicate {
    pub tardigest: DigestSet,
    pub manifest: Vec<Value>,
    pub imagetags: Option<Vec<String>>,
    pub diffids: Vec<DigestSet>,
    pub imageid: DigestSet,
    pub manifestraw: String,
    pub manifestdigest: DigestSet,
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<Value>>,
}

/// The predicate of one analysed archive. `manifest` and `manifestraw` come from
/// `manifest.json` when there is one, else from the OCI index (synthesised entries, the first
/// image's OCI manifest).
pub fn predicate(analysis: &Analysis) -> OciPredicate {
    let layout = analysis.layout.as_deref();
    let (manifest, manifest_raw) = match (&analysis.docker, layout) {
        (Some(docker), _) => (
            docker.entries.iter().map(|entry| entry.to_json()).collect(),
            docker.raw_manifest.as_slice(),
        ),
        (None, Some(layout)) => (
            layout.iter().map(synthesized_entry).collect(),
            layout
                .first()
                .map_or(&[][..], |first| first.manifest_raw.as_slice()),
        ),
        (None, None) => (Vec::new(), &[][..]),
    };
    // The reader never returns an analysis without an image.
    let first = analysis.images.first();
    OciPredicate {
        tardigest: analysis
            .file_sha256
            .as_deref()
            .map(sha256_set)
            .unwrap_or_default(),
        manifest,
        imagetags: first.and_then(|image| image.tags.clone()),
        diffids: first.map(diff_id_sets).unwrap_or_default(),
        imageid: first
            .map(|image| sha256_set(&image.config_sha256))
            .unwrap_or_default(),
        manifestraw: base64::engine::general_purpose::STANDARD.encode(manifest_raw),
        manifestdigest: sha256_set(sha256_hex(manifest_raw)),
        format: analysis.format().to_owned(),
        images: (analysis.images.len() > 1 || layout.is_some())
            .then(|| analysis.images.iter().map(image_json).collect()),
    }
}

/// For an archive without `manifest.json`: what docker would have written.
fn synthesized_entry(layout_image: &LayoutImage) -> Value {
    json!({
        "Config": layout_image.config_name,
        "RepoTags": layout_image.image.tags,
        "Layers": layout_image.layer_names,
    })
}

fn diff_id_sets(image: &Image) -> Vec<DigestSet> {
    image
        .layers
        .iter()
        .map(|layer| sha256_set(&layer.diff_id))
        .collect()
}

fn platform_json(platform: &Platform) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("os".into(), json!(platform.os));
    object.insert("architecture".into(), json!(platform.architecture));
    if let Some(variant) = &platform.variant {
        object.insert("variant".into(), json!(variant));
    }
    Value::Object(object)
}

fn layer_json(layer: &Layer) -> Value {
    json!({
        "mediatype": layer.media_type,
        "compression": layer.compression.as_str(),
        "blobdigest": sha256_set(&layer.blob_sha256),
        "size": layer.size,
    })
}

fn image_json(image: &Image) -> Value {
    json!({
        "imageid": sha256_set(&image.config_sha256),
        "diffids": diff_id_sets(image),
        "tags": image.tags,
        "manifestdigest": image.manifest_sha256.as_ref().map(sha256_set),
        "platform": image.platform.as_ref().map(platform_json),
        "layers": image.layers.iter().map(layer_json).collect::<Vec<_>>(),
    })
}
