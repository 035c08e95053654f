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
