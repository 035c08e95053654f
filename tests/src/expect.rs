//! Independent expectations for an image archive, computed with standard tools (GNU `tar`,
//! `sha256sum`, `gzip`, `zstd`) on an unpacked copy, never with oci-attest's own reader.
//!
//! The numbers come from the bytes the real save tools wrote: image ID = `sha256sum` of the config
//! member, diffID = `sha256sum` of the decompressed layer member, manifest digest = `sha256sum` of
//! `manifest.json` (or of the OCI manifest blob). Each archive is also checked against what it
//! claims about itself (config `rootfs.diff_ids`, blob names), so a fixture that a tool wrote
//! inconsistently is reported instead of silently becoming the truth.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command::{first_hex_word, run, sh, sha256sum};

/// What a correct reader must report for one archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchiveExpectation {
    /// `docker-archive`, `oci-layout` or `docker-archive+oci-layout`.
    pub format: String,
    /// `sha256sum` of the file; `None` for a layout directory.
    pub tardigest: Option<String>,
    /// `sha256sum` of `manifest.json`, or of the first image's OCI manifest blob without one.
    pub manifestdigest: String,
    /// Every image, in manifest / index order (depth first through nested indexes).
    pub images: Vec<ImageExpectation>,
}

/// What a correct reader must report for one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageExpectation {
    /// `sha256sum` of the config bytes.
    pub imageid: String,
    /// `sha256sum` of each decompressed layer, in manifest order (repeats kept).
    pub diffids: Vec<String>,
    /// docker-archive: `RepoTags` verbatim (`None` for `null`); OCI layout: the names in the
    /// index annotations (`io.containerd.image.name`, then `org.opencontainers.image.ref.name`).
    pub tags: Option<Vec<String>>,
    /// `sha256sum` of the image's OCI (or v2s2) manifest blob when the archive holds one.
    pub manifestdigest: Option<String>,
    /// `os/architecture[/variant]` from the index descriptor or the config.
    pub platform: Option<String>,
}

/// Computes the expectations for an archive file (tar or gzip tar) or an OCI layout directory.
pub fn compute(path: &Path) -> anyhow::Result<ArchiveExpectation> {
    let unpacked;
    let (tree, tardigest) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        unpacked = tempfile::tempdir().context("cannot create a temp dir")?;
        // GNU tar recognises an outer gzip by itself when reading a file.
        run(std::process::Command::new("tar")
            .arg("-xf")
            .arg(path)
            .arg("-C")
            .arg(unpacked.path()))?;
        (unpacked.path().to_path_buf(), Some(sha256sum(path)?))
    };
    compute_tree(&tree, tardigest).with_context(|| format!("expectations for {}", path.display()))
}

fn compute_tree(tree: &Path, tardigest: Option<String>) -> anyhow::Result<ArchiveExpectation> {
    let docker_manifest = tree.join("manifest.json");
    let has_docker = docker_manifest.is_file();
    let has_layout = tree.join("oci-layout").is_file() && tree.join("index.json").is_file();
    let oci_images = if has_layout {
        oci_images(tree)?
    } else {
        Vec::new()
    };
    let (format, manifestdigest, images) = match (has_docker, has_layout) {
        (true, has_layout) => {
            let mut images = docker_images(tree, &docker_manifest)?;
            for image in &mut images {
                image.manifestdigest = oci_images
                    .iter()
                    .find(|oci| oci.imageid == image.imageid)
                    .and_then(|oci| oci.manifestdigest.clone());
            }
            let format = if has_layout {
                "docker-archive+oci-layout"
            } else {
                "docker-archive"
            };
            (format, sha256sum(&docker_manifest)?, images)
        }
        (false, true) => {
            let first = oci_images
                .first()
                .and_then(|image| image.manifestdigest.clone())
                .context("the OCI layout holds no image")?;
            ("oci-layout", first, oci_images)
        }
        (false, false) => bail!("neither manifest.json nor oci-layout + index.json found"),
    };
    Ok(ArchiveExpectation {
        format: format.to_owned(),
        tardigest,
        manifestdigest,
        images,
    })
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// A member of the unpacked archive, refusing paths (or symlinks) that leave it.
fn member(tree: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = tree.join(name);
    let resolved = path
        .canonicalize()
        .with_context(|| format!("member {name} is missing"))?;
    ensure!(
        resolved.starts_with(tree.canonicalize()?),
        "member {name} resolves outside the archive"
    );
    Ok(resolved)
}

/// The value of the first key that matches `name` case-insensitively (docker writes `Config`,
/// some writers `config`).
fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

fn docker_images(tree: &Path, manifest: &Path) -> anyhow::Result<Vec<ImageExpectation>> {
    let entries = read_json(manifest)?;
    let entries = entries
        .as_array()
        .context("manifest.json is not an array")?;
    entries
        .iter()
        .map(|entry| {
            let config_name = field(entry, "config")
                .and_then(Value::as_str)
                .context("manifest.json entry without Config")?;
            let config_path = member(tree, config_name)?;
            let layers = field(entry, "layers")
                .and_then(Value::as_array)
                .context("manifest.json entry without Layers")?
                .iter()
                .map(|layer| {
                    let name = layer.as_str().context("non-string layer name")?;
                    diff_id(&member(tree, name)?)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let tags = match field(entry, "repotags") {
                None | Some(Value::Null) => None,
                Some(value) => Some(serde_json::from_value(value.clone()).context("RepoTags")?),
            };
            image_from_config(&config_path, layers, tags, None, None)
        })
        .collect()
}

fn image_from_config(
    config_path: &Path,
    diffids: Vec<String>,
    tags: Option<Vec<String>>,
    manifestdigest: Option<String>,
    descriptor_platform: Option<String>,
) -> anyhow::Result<ImageExpectation> {
    let config = read_json(config_path)?;
    let declared: Vec<String> = field(&config, "rootfs")
        .and_then(|rootfs| field(rootfs, "diff_ids"))
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(|id| id.trim_start_matches("sha256:").to_owned())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        declared == diffids,
        "{}: rootfs.diff_ids {declared:?} differ from the layers' sha256sum {diffids:?}",
        config_path.display()
    );
    let platform = descriptor_platform.or_else(|| platform_of(&config, "architecture"));
    Ok(ImageExpectation {
        imageid: sha256sum(config_path)?,
        diffids,
        tags,
        manifestdigest,
        platform,
    })
}

/// `os/arch[/variant]` of a config (`architecture`) or an index descriptor's `platform`.
fn platform_of(object: &Value, arch_key: &str) -> Option<String> {
    let os = field(object, "os")?.as_str()?;
    let arch = field(object, arch_key)?.as_str()?;
    Some(match field(object, "variant").and_then(Value::as_str) {
        Some(variant) => format!("{os}/{arch}/{variant}"),
        None => format!("{os}/{arch}"),
    })
}

/// sha256sum of a layer after decompression, the codec chosen by its magic bytes with `od`.
fn diff_id(layer: &Path) -> anyhow::Result<String> {
    let line = sh(
        r#"case "$(head -c4 "$1" | od -An -tx1 | tr -d ' \n')" in
             1f8b*) gzip -dc "$1" ;;
             28b52ffd) zstd -dcq "$1" ;;
             *) cat "$1" ;;
           esac | sha256sum"#,
        [layer],
    )?;
    first_hex_word(&line)
        .with_context(|| format!("diffID of {}: bad output {line:?}", layer.display()))
}

fn blob_path(tree: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let (algorithm, hex) = digest
        .split_once(':')
        .with_context(|| format!("bad digest {digest}"))?;
    let path = member(tree, &format!("blobs/{algorithm}/{hex}"))?;
    let actual = sha256sum(&path)?;
    ensure!(
        actual == hex,
        "blob {digest} has sha256sum {actual} (the tool wrote a wrong name)"
    );
    Ok(path)
}

fn descriptor_names(descriptor: &Value) -> Option<Vec<String>> {
    let annotations = field(descriptor, "annotations")?;
    let names: Vec<String> = [
        "io.containerd.image.name",
        "org.opencontainers.image.ref.name",
    ]
    .iter()
    .filter_map(|key| annotations.get(*key).and_then(Value::as_str))
    .map(str::to_owned)
    .collect();
    (!names.is_empty()).then_some(names)
}

fn oci_images(tree: &Path) -> anyhow::Result<Vec<ImageExpectation>> {
    let index = read_json(&tree.join("index.json"))?;
    let mut images = Vec::new();
    walk_index(tree, &index, None, &mut images)?;
    Ok(images)
}

fn walk_index(
    tree: &Path,
    index: &Value,
    inherited_tags: Option<&Vec<String>>,
    images: &mut Vec<ImageExpectation>,
) -> anyhow::Result<()> {
    let descriptors = field(index, "manifests")
        .and_then(Value::as_array)
        .context("index without manifests")?;
    for descriptor in descriptors {
        let digest = field(descriptor, "digest")
            .and_then(Value::as_str)
            .context("descriptor without digest")?;
        let tags = descriptor_names(descriptor).or_else(|| inherited_tags.cloned());
        let blob = blob_path(tree, digest)?;
        let document = read_json(&blob)?;
        if field(&document, "manifests").is_some() {
            walk_index(tree, &document, tags.as_ref(), images)?;
            continue;
        }
        let config_digest = field(&document, "config")
            .and_then(|config| field(config, "digest"))
            .and_then(Value::as_str)
            .with_context(|| format!("manifest {digest} without config digest"))?;
        let layers = field(&document, "layers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|layer| {
                let layer_digest = field(layer, "digest")
                    .and_then(Value::as_str)
                    .context("layer descriptor without digest")?;
                diff_id(&blob_path(tree, layer_digest)?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let platform = field(descriptor, "platform").and_then(|p| platform_of(p, "architecture"));
        images.push(image_from_config(
            &blob_path(tree, config_digest)?,
            layers,
            tags,
            Some(digest.trim_start_matches("sha256:").to_owned()),
            platform,
        )?);
    }
    Ok(())
}

/// Do the tags a reader reported agree with the expectation? docker-archive tags must match
/// exactly. OCI annotations may hold a full name or only the tag, so a reported tag agrees with
/// an annotation when it is the annotation itself or ends with `:` + the annotation.
pub fn tags_agree(
    format: &str,
    expected: Option<&Vec<String>>,
    reported: Option<&Vec<String>>,
) -> bool {
    let reported_list = reported.map(Vec::as_slice).unwrap_or_default();
    match expected {
        None => reported_list.is_empty(),
        Some(expected) if format == "oci-layout" => {
            !reported_list.is_empty()
                && reported_list.iter().all(|tag| {
                    expected
                        .iter()
                        .any(|name| tag == name || tag.ends_with(&format!(":{name}")))
                })
        }
        Some(expected) => reported_list == expected.as_slice(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_tags_must_match_exactly() {
        let expected = vec!["localhost/a:1".to_owned()];
        assert!(tags_agree(
            "docker-archive",
            Some(&expected),
            Some(&expected)
        ));
        assert!(!tags_agree(
            "docker-archive",
            Some(&expected),
            Some(&vec!["a:1".to_owned()])
        ));
        assert!(!tags_agree("docker-archive", None, Some(&expected)));
        assert!(tags_agree("docker-archive", None, None));
    }

    #[test]
    fn oci_ref_names_may_be_tag_only() {
        let expected = vec!["1".to_owned()];
        assert!(tags_agree(
            "oci-layout",
            Some(&expected),
            Some(&vec!["1".to_owned()])
        ));
        assert!(tags_agree(
            "oci-layout",
            Some(&expected),
            Some(&vec!["localhost/x:1".to_owned()])
        ));
        assert!(!tags_agree(
            "oci-layout",
            Some(&expected),
            Some(&vec!["localhost/x:2".to_owned()])
        ));
        assert!(!tags_agree("oci-layout", Some(&expected), None));
    }

    #[test]
    fn layer_codecs_are_sniffed_by_magic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("layer");
        std::fs::write(&plain, b"layer bytes").expect("write");
        let expected = sha256sum(&plain).expect("sha256sum");
        run(std::process::Command::new("gzip").arg("-k").arg(&plain)).expect("gzip");
        run(std::process::Command::new("zstd").arg("-q").arg(&plain)).expect("zstd");
        for name in ["layer", "layer.gz", "layer.zst"] {
            assert_eq!(
                diff_id(&dir.path().join(name)).expect("diff_id"),
                expected,
                "{name}"
            );
        }
    }
}
