//! From verified images to the `oci` predicate: the legacy (cilock) keys describe the first
//! image, `format` and `images` describe everything.

use base64::Engine as _;
use serde_json::{json, Value};

use super::docker::DockerArchive;
use super::image::{Image, Layer, Platform};
use super::layout::LayoutImage;
use super::OciPredicate;
use crate::digest::{sha256_hex, sha256_set, DigestSet};

/// Merges what the docker and OCI halves of an archive say about its images. Images in
/// `manifest.json` come first, in its order; images only in the OCI index follow.
pub fn merge_images(docker: Option<&DockerArchive>, layout: &[LayoutImage]) -> Vec<Image> {
    let mut images: Vec<Image> = docker
        .map(|docker| docker.images.clone())
        .unwrap_or_default();
    let from_docker = images.len();
    for layout_image in layout {
        let oci = &layout_image.image;
        let twin = images[..from_docker].iter_mut().find(|image| {
            image.config_sha256 == oci.config_sha256 && image.manifest_sha256.is_none()
        });
        match twin {
            Some(image) => {
                image.manifest_sha256.clone_from(&oci.manifest_sha256);
                if oci.platform.is_some() {
                    image.platform.clone_from(&oci.platform);
                }
                for (layer, oci_layer) in image.layers.iter_mut().zip(&oci.layers) {
                    if layer.blob_sha256 == oci_layer.blob_sha256 {
                        layer.media_type.clone_from(&oci_layer.media_type);
                    }
                }
            }
            None => images.push(oci.clone()),
        }
    }
    images
}

pub fn build(
    file_sha256: Option<&str>,
    docker: Option<&DockerArchive>,
    layout: Option<&[LayoutImage]>,
    images: &[Image],
) -> Result<OciPredicate, String> {
    let first = images.first().ok_or("the archive holds no image")?;
    let (manifest, manifest_raw) = match (docker, layout) {
        (Some(docker), _) => (
            docker.entries.iter().map(|entry| entry.to_json()).collect(),
            docker.raw_manifest.as_slice(),
        ),
        (None, Some(layout)) => {
            let first_layout = layout.first().ok_or("index.json lists no image")?;
            (
                layout.iter().map(synthesized_entry).collect(),
                first_layout.manifest_raw.as_slice(),
            )
        }
        (None, None) => return Err("the archive holds no image".to_owned()),
    };
    let format = match (docker.is_some(), layout.is_some()) {
        (true, true) => "docker-archive+oci-layout",
        (true, false) => "docker-archive",
        _ => "oci-layout",
    };
    Ok(OciPredicate {
        tardigest: file_sha256.map(sha256_set).unwrap_or_default(),
        manifest,
        imagetags: first.tags.clone(),
        diffids: diff_id_sets(first),
        imageid: sha256_set(&first.config_sha256),
        manifestraw: base64::engine::general_purpose::STANDARD.encode(manifest_raw),
        manifestdigest: sha256_set(sha256_hex(manifest_raw)),
        format: format.to_owned(),
        images: (images.len() > 1 || layout.is_some())
            .then(|| images.iter().map(image_json).collect()),
    })
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
