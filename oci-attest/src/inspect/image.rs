//! One image, verified: its config against its name, its layers against the config's
//! `rootfs.diff_ids`. Shared by the docker-archive and OCI-layout readers.

use serde_json::Value;

pub use super::digester::Compression;
use super::digester::FileFacts;
use super::members::Members;

pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Default for the layers one image may have: docker itself stops at 127 (overlay2), so this
/// leaves room for any real image while keeping the work per archive bounded.
pub const MAX_LAYERS: usize = 1024;
/// Layer references over all images of an archive, as a multiple of the per-image limit: a
/// manifest listing the same big image hundreds of times must not amplify memory.
pub const ARCHIVE_LAYERS_PER_IMAGE_LIMIT: usize = 16;

/// Longest tag accepted; longer ones are hostile (they become subject names).
const MAX_TAG_BYTES: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Layer {
    /// As declared by an OCI/registry manifest; docker-archive manifests declare none.
    pub media_type: Option<String>,
    pub compression: Compression,
    pub blob_sha256: String,
    pub size: u64,
    pub diff_id: String,
}

#[derive(Clone, Debug)]
pub struct Image {
    /// Hex SHA-256 of the config blob: the image ID.
    pub config_sha256: String,
    pub tags: Option<Vec<String>>,
    /// Hex digest of the OCI/registry manifest, when the archive has one.
    pub manifest_sha256: Option<String>,
    pub platform: Option<Platform>,
    pub layers: Vec<Layer>,
}

/// A parsed JSON document, with the member name in every error.
pub fn parse_json(members: &Members, name: &str) -> Result<(Value, Vec<u8>), String> {
    let bytes = members.resolve(name)?.document(name)?;
    let value = serde_json::from_slice(bytes)
        .map_err(|error| format!("member {name:?} is not valid JSON: {error}"))?;
    Ok((value, bytes.to_vec()))
}

/// `sha256:<64 lowercase hex>` → the hex part.
pub fn sha256_of(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| is_sha256_hex(hex))
}

pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The digest a member's name claims for its content, as docker, crane and OCI writers name them.
pub fn claimed_by_name(name: &str) -> Option<&str> {
    let name = name.trim_start_matches("./");
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return is_sha256_hex(hex).then_some(hex);
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    if let Some(hex) = base.strip_suffix(".json") {
        return is_sha256_hex(hex).then_some(hex);
    }
    sha256_of(base)
}

pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.len() > MAX_TAG_BYTES {
        return Err(format!(
            "image tag of {} bytes is longer than {MAX_TAG_BYTES} bytes",
            tag.len()
        ));
    }
    if tag.chars().any(char::is_control) {
        return Err(format!("image tag {tag:?} contains control characters"));
    }
    Ok(())
}

/// A layer member as listed by a manifest, before its diffID is checked.
pub struct ListedLayer<'a> {
    pub name: String,
    pub facts: &'a FileFacts,
    pub media_type: Option<String>,
}

/// Verifies a config and its layers and returns the image (tags and manifest digest are the
/// caller's to fill in).
pub fn verify_image(
    members: &Members,
    config_name: &str,
    listed: Vec<ListedLayer<'_>>,
    max_layers: usize,
) -> Result<Image, String> {
    let config_facts = members.resolve(config_name)?;
    if let Some(claimed) = claimed_by_name(config_name) {
        if claimed != config_facts.sha256 {
            return Err(format!(
                "config {config_name:?} has digest sha256:{}, not the sha256:{claimed} its name claims",
                config_facts.sha256
            ));
        }
    }
    if listed.len() > max_layers {
        return Err(format!(
            "image {config_name:?} has {} layers, more than the limit of {max_layers} (--max-layers)",
            listed.len()
        ));
    }
    let (config, _) = parse_json(members, config_name)?;
    let diff_ids = config_diff_ids(&config, config_name)?;
    if diff_ids.len() != listed.len() {
        return Err(format!(
            "image {config_name:?} lists {} layers but its config has {} rootfs.diff_ids",
            listed.len(),
            diff_ids.len()
        ));
    }
    let mut layers = Vec::with_capacity(listed.len());
    for (position, (layer, expected)) in listed.into_iter().zip(&diff_ids).enumerate() {
        let diff_id =
            layer.facts.uncompressed_sha256.clone().map_err(|error| {
                format!("layer {:?} cannot be decompressed: {error}", layer.name)
            })?;
        if *expected != diff_id {
            return Err(format!(
                "layer {} ({:?}) has diffID sha256:{diff_id}, but config {config_name:?} expects sha256:{expected}",
                position + 1,
                layer.name
            ));
        }
        layers.push(Layer {
            media_type: layer.media_type,
            compression: layer.facts.compression,
            blob_sha256: layer.facts.sha256.clone(),
            size: layer.facts.size,
            diff_id,
        });
    }
    Ok(Image {
        config_sha256: config_facts.sha256.clone(),
        tags: None,
        manifest_sha256: None,
        platform: config_platform(&config),
        layers,
    })
}

fn config_diff_ids(config: &Value, name: &str) -> Result<Vec<String>, String> {
    let Some(object) = config.as_object() else {
        return Err(format!("config {name:?} is not a JSON object"));
    };
    let diff_ids = object
        .get("rootfs")
        .and_then(|rootfs| rootfs.get("diff_ids"));
    let list = match diff_ids {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(format!("config {name:?}: rootfs.diff_ids is not a list")),
    };
    list.iter()
        .map(|value| {
            value
                .as_str()
                .and_then(sha256_of)
                .map(str::to_owned)
                .ok_or_else(|| {
                    format!("config {name:?}: rootfs.diff_ids holds {value}, not a sha256 digest")
                })
        })
        .collect()
}

fn config_platform(config: &Value) -> Option<Platform> {
    let text = |key| config.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Platform {
        os: text("os")?,
        architecture: text("architecture")?,
        variant: text("variant"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_claims() {
        let hex = "a".repeat(64);
        assert_eq!(
            claimed_by_name(&format!("./blobs/sha256/{hex}")),
            Some(hex.as_str())
        );
        assert_eq!(claimed_by_name(&format!("{hex}.json")), Some(hex.as_str()));
        assert_eq!(
            claimed_by_name(&format!("sha256:{hex}")),
            Some(hex.as_str())
        );
        assert_eq!(claimed_by_name("abc/json"), None);
        assert_eq!(claimed_by_name(&format!("{}.json", "A".repeat(64))), None);
    }

    #[test]
    fn tags_with_control_characters_or_too_long_are_rejected() {
        assert!(check_tag("busybox:latest").is_ok());
        assert_eq!(
            check_tag("a:b\nc").unwrap_err(),
            r#"image tag "a:b\nc" contains control characters"#
        );
        assert_eq!(
            check_tag(&"a".repeat(1025)).unwrap_err(),
            "image tag of 1025 bytes is longer than 1024 bytes"
        );
    }
}
