//! OCI image layout: `index.json` → (nested indexes →) manifests → config and layers, every
//! descriptor's digest and size checked against the blob it names.

use serde_json::Value;

use super::docker::kind_of;
use super::image::{
    parse_json, sha256_of, verify_image, Image, ListedLayer, Platform,
    ARCHIVE_LAYERS_PER_IMAGE_LIMIT, DOCKER_IMAGE_CONFIG, OCI_IMAGE_CONFIG,
};
use super::members::Members;

pub const INDEX: &str = "index.json";
pub const LAYOUT_MARKER: &str = "oci-layout";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Index nesting deeper than this is hostile (real multi-arch images nest one level).
/// Content addressing already rules out cycles: an index cannot contain its own digest.
const MAX_INDEX_DEPTH: usize = 8;
/// Descriptors visited in total, so a small index cannot fan out exponentially.
const MAX_DESCRIPTORS: usize = 100_000;

const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

#[derive(Clone, Debug)]
pub struct LayoutImage {
    pub image: Image,
    /// The manifest blob's bytes (the first image's become `manifestraw`).
    pub manifest_raw: Vec<u8>,
    pub config_name: String,
    pub layer_names: Vec<String>,
    /// SHA-256 of the image index blob that lists this manifest, when `index.json` points to
    /// an index (a multi-platform image): what a registry serves under the image's tag.
    pub index_sha256: Option<String>,
}

/// How an index lists a manifest: its tag, its platform, and the index blob (not `index.json`).
struct Listing<'a> {
    tag: Option<&'a str>,
    platform: Option<Platform>,
    index_sha256: Option<&'a str>,
}

struct Walk<'a> {
    members: &'a Members,
    max_layers: usize,
    visited: usize,
    layer_references: usize,
    images: Vec<LayoutImage>,
}

pub fn read(members: &Members, max_layers: usize) -> Result<Vec<LayoutImage>, String> {
    let (index, _) = parse_json(members, INDEX)?;
    let mut walk = Walk {
        members,
        max_layers,
        visited: 0,
        layer_references: 0,
        images: Vec::new(),
    };
    walk.index(&index, INDEX, None, None, 0)?;
    Ok(walk.images)
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{digest}")
}

fn tag_of(descriptor: &Value) -> Option<String> {
    let annotations = descriptor.get("annotations")?;
    NAME_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.get(key).and_then(Value::as_str))
        .map(str::to_owned)
}

fn platform_of(descriptor: &Value) -> Option<Platform> {
    let platform = descriptor.get("platform")?;
    let text = |key| platform.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Platform {
        os: text("os")?,
        architecture: text("architecture")?,
        variant: text("variant"),
    })
}

impl Walk<'_> {
    /// Checks a descriptor against its blob; returns the blob's member name and media type.
    fn check_descriptor(&mut self, descriptor: &Value, context: &str) -> Result<String, String> {
        self.visited += 1;
        if self.visited > MAX_DESCRIPTORS {
            return Err(format!(
                "more than {MAX_DESCRIPTORS} descriptors in the layout"
            ));
        }
        let digest = descriptor
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{context}: a descriptor has no digest"))?;
        let hex = sha256_of(digest)
            .ok_or_else(|| format!("{context}: unsupported or malformed digest {digest:?}"))?;
        let name = blob_name(hex);
        let facts = self
            .members
            .resolve(&name)
            .map_err(|problem| format!("{context} refers to {digest}: {problem}"))?;
        if facts.sha256 != hex {
            return Err(format!(
                "blob {name:?} has digest sha256:{}, not the {digest} {context} names",
                facts.sha256
            ));
        }
        let size = descriptor.get("size").and_then(Value::as_u64);
        if size != Some(facts.size) {
            return Err(format!(
                "{context} gives {digest} a size of {}, but the blob has {} bytes",
                size.map_or_else(|| "(none)".to_owned(), |size| size.to_string()),
                facts.size
            ));
        }
        Ok(name)
    }

    fn index(
        &mut self,
        index: &Value,
        context: &str,
        inherited_tag: Option<&str>,
        index_sha256: Option<&str>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_INDEX_DEPTH {
            return Err(format!("indexes nest deeper than {MAX_INDEX_DEPTH} levels"));
        }
        let manifests = match index.get("manifests") {
            Some(Value::Array(list)) => list,
            Some(other) if !other.is_null() => {
                return Err(format!(
                    "{context}: manifests is {}, not a list",
                    kind_of(other)
                ))
            }
            _ if index.is_object() => return Ok(()),
            _ => {
                return Err(format!(
                    "{context} is {}, not an index object",
                    kind_of(index)
                ))
            }
        };
        for descriptor in manifests {
            let name = self.check_descriptor(descriptor, context)?;
            let tag = tag_of(descriptor);
            if let Some(tag) = &tag {
                super::image::check_tag(tag).map_err(|problem| format!("{context}: {problem}"))?;
            }
            let tag = tag.as_deref().or(inherited_tag);
            let media_type = descriptor.get("mediaType").and_then(Value::as_str);
            let (blob, raw) = match media_type {
                None | Some(OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST) => {
                    parse_json(self.members, &name)?
                }
                // Other artifacts (signatures, attestations) are checked but not images.
                Some(_) => continue,
            };
            let is_index = match media_type {
                Some(OCI_INDEX | DOCKER_LIST) => true,
                Some(_) => false,
                None => blob.get("manifests").is_some(),
            };
            if is_index {
                let sha256 = self.members.resolve(&name)?.sha256.clone();
                self.index(&blob, &name, tag, Some(&sha256), depth + 1)?;
            } else {
                let listed = Listing {
                    tag,
                    platform: platform_of(descriptor),
                    index_sha256,
                };
                self.manifest(&blob, raw, name, listed)?;
            }
        }
        Ok(())
    }

    fn manifest(
        &mut self,
        manifest: &Value,
        raw: Vec<u8>,
        name: String,
        listed_as: Listing<'_>,
    ) -> Result<(), String> {
        let Listing {
            tag,
            platform,
            index_sha256,
        } = listed_as;
        let manifest_sha256 = self.members.resolve(&name)?.sha256.clone();
        if let Some(known) = self
            .images
            .iter_mut()
            .find(|known| known.image.manifest_sha256.as_deref() == Some(&manifest_sha256))
        {
            // The same manifest under a second name: one image with both tags.
            if let Some(tag) = tag {
                let tags = known.image.tags.get_or_insert_with(Vec::new);
                if !tags.iter().any(|existing| existing == tag) {
                    tags.push(tag.to_owned());
                }
            }
            return Ok(());
        }
        let config = manifest
            .get("config")
            .ok_or_else(|| format!("manifest {name:?} has no config"))?;
        let config_name = self.check_descriptor(config, &format!("manifest {name:?} config"))?;
        let descriptors = match manifest.get("layers") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(format!(
                    "manifest {name:?}: layers is {}, not a list",
                    kind_of(other)
                ))
            }
        };
        if descriptors.len() > self.max_layers {
            return Err(format!(
                "manifest {name:?} has {} layers, more than the limit of {} (--max-layers)",
                descriptors.len(),
                self.max_layers
            ));
        }
        self.layer_references += descriptors.len();
        let limit = self
            .max_layers
            .saturating_mul(ARCHIVE_LAYERS_PER_IMAGE_LIMIT);
        if self.layer_references > limit {
            return Err(format!(
                "the layout's manifests list more than {limit} layers in total (16 x --max-layers)"
            ));
        }
        let mut listed = Vec::with_capacity(descriptors.len());
        let mut layer_names = Vec::with_capacity(descriptors.len());
        for (position, descriptor) in descriptors.iter().enumerate() {
            let context = format!("manifest {name:?} layer {}", position + 1);
            let layer_name = self.check_descriptor(descriptor, &context)?;
            listed.push(ListedLayer {
                facts: self.members.resolve(&layer_name)?,
                name: layer_name.clone(),
                media_type: descriptor
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
            layer_names.push(layer_name);
        }
        if !matches!(
            config.get("mediaType").and_then(Value::as_str),
            None | Some(OCI_IMAGE_CONFIG | DOCKER_IMAGE_CONFIG)
        ) {
            // An artifact (signature, SBOM, attestation) listed beside the images: its blobs
            // are checked above, but it has no filesystem to describe.
            return Ok(());
        }
        let mut image = verify_image(self.members, &config_name, listed, self.max_layers)?;
        image.tags = tag.map(|tag| vec![tag.to_owned()]);
        image.manifest_sha256 = Some(manifest_sha256);
        if platform.is_some() {
            image.platform = platform;
        }
        self.images.push(LayoutImage {
            image,
            manifest_raw: raw,
            config_name,
            layer_names,
            index_sha256: index_sha256.map(str::to_owned),
        });
        Ok(())
    }
}
