//! The `oci` attestor: wraps the archive reader's verified facts into an attestation.

use std::time::SystemTime;

use crate::attestors::Attestation;
use crate::digest::{sha256_hex, sha256_set, DigestSet};
use crate::inspect::Analysis;

pub const TYPE_URI: &str = "https://aflock.ai/attestations/oci/v0.1";

/// One attestation per analysed archive. `started`/`ended` bracket the analysis, which the
/// caller timed (the product digest and this analysis come from one read).
pub fn attest(analysis: &Analysis, started: SystemTime, ended: SystemTime) -> Attestation {
    let subjects = subjects(analysis);
    let backrefs = subjects
        .iter()
        .filter(|(key, _)| {
            ["manifestdigest:", "imageid:", "imagetag:"]
                .iter()
                .any(|prefix| key.starts_with(prefix))
        })
        .cloned()
        .collect();
    Attestation {
        type_uri: TYPE_URI,
        // A struct of strings, maps and lists: serialising it cannot fail.
        predicate: serde_json::to_value(&analysis.predicate).unwrap_or_default(),
        subjects,
        backrefs,
        started,
        ended,
    }
}

/// The subjects an archive yields, in a stable order without duplicates: what `verify --image`
/// re-derives and compares. Keys are without the type URI prefix.
pub fn subjects(analysis: &Analysis) -> Vec<(String, DigestSet)> {
    let predicate = &analysis.predicate;
    let mut subjects: Vec<(String, DigestSet)> = Vec::new();
    let mut add = |key: String, digest: DigestSet| {
        if !subjects.iter().any(|(existing, _)| *existing == key) {
            subjects.push((key, digest));
        }
    };
    if let Some(hex) = predicate.manifestdigest.get("sha256") {
        add(
            format!("manifestdigest:{hex}"),
            predicate.manifestdigest.clone(),
        );
    }
    if let Some(hex) = &analysis.file_sha256 {
        add(format!("tardigest:{hex}"), sha256_set(hex));
    }
    for image in &analysis.images {
        if let Some(hex) = &image.manifest_sha256 {
            add(format!("manifestdigest:{hex}"), sha256_set(hex));
        }
        add(
            format!("imageid:{}", image.config_sha256),
            sha256_set(&image.config_sha256),
        );
        for tag in image.tags.iter().flatten() {
            add(
                format!("imagetag:{tag}"),
                sha256_set(sha256_hex(tag.as_bytes())),
            );
        }
        for (index, layer) in image.layers.iter().enumerate() {
            add(
                format!("layerdiffid{index:02}:{}", layer.diff_id),
                sha256_set(&layer.diff_id),
            );
        }
    }
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::image::{Image, Layer};
    use crate::inspect::OciPredicate;

    fn image(config: char, tags: &[&str], diff_ids: usize) -> Image {
        Image {
            config_sha256: config.to_string().repeat(64),
            tags: Some(tags.iter().map(|tag| tag.to_string()).collect()),
            manifest_sha256: Some("f".repeat(64)),
            platform: None,
            layers: (0..diff_ids)
                .map(|index| Layer {
                    media_type: None,
                    compression: crate::inspect::image::Compression::None,
                    blob_sha256: format!("{index:064x}"),
                    size: 1,
                    diff_id: format!("{index:064x}"),
                })
                .collect(),
        }
    }

    #[test]
    fn subjects_and_backrefs_cover_every_image() {
        let analysis = Analysis {
            path: "x.tar".into(),
            file_sha256: Some("e".repeat(64)),
            predicate: OciPredicate {
                tardigest: sha256_set("e".repeat(64)),
                manifest: Vec::new(),
                imagetags: None,
                diffids: Vec::new(),
                imageid: sha256_set("a".repeat(64)),
                manifestraw: String::new(),
                manifestdigest: sha256_set("d".repeat(64)),
                format: "docker-archive".into(),
                images: None,
            },
            images: vec![image('a', &["app:1"], 101), image('b', &[], 1)],
        };
        let attestation = attest(&analysis, SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH);
        let keys: Vec<&str> = attestation
            .subjects
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        let d = "d".repeat(64);
        let e = "e".repeat(64);
        let f = "f".repeat(64);
        assert_eq!(
            keys[..4],
            [
                format!("manifestdigest:{d}"),
                format!("tardigest:{e}"),
                format!("manifestdigest:{f}"),
                format!("imageid:{}", "a".repeat(64))
            ]
        );
        assert!(keys.contains(&format!("layerdiffid00:{:064x}", 0).as_str()));
        assert!(keys.contains(&format!("layerdiffid99:{:064x}", 99).as_str()));
        assert!(keys.contains(&format!("layerdiffid100:{:064x}", 100).as_str()));
        assert!(keys.contains(&format!("imageid:{}", "b".repeat(64)).as_str()));
        let tag = attestation
            .subjects
            .iter()
            .find(|(key, _)| key == "imagetag:app:1")
            .unwrap();
        assert_eq!(tag.1, sha256_set(sha256_hex(b"app:1")));
        // image b repeats layer 0's diffID under the same key: listed once.
        assert_eq!(keys.len(), 2 + 1 + 1 + 1 + 101 + 1);
        let backrefs: Vec<&str> = attestation
            .backrefs
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        assert_eq!(backrefs.len(), 5);
        assert!(backrefs
            .iter()
            .all(|key| !key.starts_with("tardigest") && !key.starts_with("layerdiffid")));
        assert_eq!(attestation.predicate["format"], "docker-archive");
    }
}
