//! The `oci` attestor: wraps the archive reader's verified facts into an attestation.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::attestors::{
    Attach, Attestation, Attestor, AutoRule, PredicateField, RunContext, Stage,
};
use crate::digest::{sha256_hex, sha256_set, DigestSet};
use crate::exit::{failure, FailureKind};
use crate::inspect::{self, Analysis, ArchiveKind};
use crate::observed::{Incomplete, IncompleteReason};
use crate::products;
use crate::save_command;
use crate::snapshot::FileStamp;

mod predicate;

pub use predicate::{predicate, OciPredicate};

pub const TYPE_URI: &str = "https://aflock.ai/attestations/oci/v0.1";

pub const ATTESTOR: Attestor = Attestor {
    name: "oci",
    predicate_type: TYPE_URI,
    aliases: &["https://witness.dev/attestations/oci/v0.1"],
    stage: Stage::PostProduct,
    attach: Attach::Auto(AutoRule {
        decide,
        describe,
        step: "oci-save",
        programs: save_programs,
    }),
    summary: "image ID, layer diffIDs, tags and manifest digest of every image archive produced",
    fields: FIELDS,
    attest: from_run,
};

const FIELDS: &[PredicateField] = &[
    PredicateField {
        name: "tardigest",
        meaning: "DigestSet of the archive file itself",
    },
    PredicateField {
        name: "manifest",
        meaning:
            "manifest.json entries: [{Config, RepoTags, Layers}] (synthesised for OCI layouts)",
    },
    PredicateField {
        name: "imagetags",
        meaning: "RepoTags of the first image (null when none)",
    },
    PredicateField {
        name: "diffids",
        meaning: "one DigestSet per layer of the first image, in manifest order",
    },
    PredicateField {
        name: "imageid",
        meaning: "DigestSet of the config blob bytes (the Docker image ID)",
    },
    PredicateField {
        name: "manifestraw",
        meaning: "base64 of the raw manifest.json (OCI layout: the first image's OCI manifest)",
    },
    PredicateField {
        name: "manifestdigest",
        meaning: "DigestSet of the bytes in manifestraw",
    },
    PredicateField {
        name: "format",
        meaning: "docker-archive | oci-layout | docker-archive+oci-layout",
    },
    PredicateField {
        name: "images",
        meaning: "every image: imageid, diffids, tags, manifestdigest, platform, layers",
    },
];

/// Before the command: its argv is a save. After it: the trace saw a save exec'd anywhere in
/// the process tree, or a product looks like an OCI layout or archive.
fn decide(run: &RunContext) -> Option<String> {
    let Some(outcome) = &run.outcome else {
        return save_command::save_rule(&run.argv).map(|rule| format!("the command is `{rule}`"));
    };
    if let Some((rule, argv)) = outcome
        .observation
        .exec_argvs()
        .find_map(|argv| save_command::save_rule(argv).map(|rule| (rule, argv)))
    {
        return Some(format!(
            "`{rule}` ran inside the command: {}",
            argv.join(" ")
        ));
    }
    outcome
        .products
        .iter()
        .find(|path| save_command::product_matches(path, &run.working_dir))
        .map(|path| format!("product {} looks like an OCI image", path.display()))
}

fn describe() -> Vec<String> {
    vec![
        "requested with -a oci".to_owned(),
        format!(
            "pre: argv starts with one of: {}",
            save_command::describe_commands()
        ),
        "post: the trace saw any of those commands exec'd in the process tree (Makefiles, scripts)"
            .to_owned(),
        format!(
            "post: a product matches {}",
            save_command::describe_product_globs()
        ),
    ]
}

fn save_programs() -> Vec<&'static str> {
    save_command::SAVE_TOOLS
        .iter()
        .map(|tool| tool.program)
        .collect()
}

/// One attestation per image archive among the products. An archive that fails analysis
/// fails the run: nothing is signed.
fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let outcome = run.outcome(ATTESTOR.name)?;
    let archives = image_archives(&outcome.products)?;
    if archives.is_empty() && run.pushed.is_none() {
        let reason = run
            .reason(ATTESTOR.name)
            .map(|reason| reason.describe(ATTESTOR.name))
            .unwrap_or_default();
        tracing::warn!(
            "oci attestor skipped: it attached ({reason}) but no image archive was produced"
        );
    }
    let options = inspect::Options {
        progress: crate::progress::archive_bar(),
        ..inspect::Options::default()
    };
    let mut attestations = Vec::new();
    for archive in archives {
        let started = SystemTime::now();
        let before = stamp_of(&archive);
        let analysis = inspect::analyze(&archive, &options).map_err(|error| {
            failure(
                FailureKind::Analysis,
                format!("{error}; nothing was signed"),
            )
        })?;
        // The analysis and the product digest come from one read, only if the archive is the
        // version the command left and did not change while it was read.
        let expected = outcome.product_stamps.get(&archive).copied();
        let stable = before.is_some()
            && before == stamp_of(&archive)
            && expected.is_none_or(|expected| Some(expected) == before);
        match &analysis.file_sha256 {
            Some(digest) if stable => {
                run.known_digests
                    .borrow_mut()
                    .insert(archive.clone(), digest.clone());
            }
            Some(_) => run.late_gaps.borrow_mut().push(Incomplete {
                reason: IncompleteReason::ProductUnstable,
                detail: format!(
                    "{}: changed while it was analysed, or since the command ended",
                    crate::pathtext::escape(&archive)
                ),
            }),
            None => {}
        }
        attestations.push(attest(&analysis, started, SystemTime::now()));
    }
    Ok(attestations)
}

/// What the archive (a file, or a layout directory) looks like now; `None` if it cannot be seen.
fn stamp_of(path: &Path) -> Option<FileStamp> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|metadata| FileStamp::of(&metadata))
}

/// The image archives among the products: OCI layout directories, and files whose content is
/// a (gzip) tar outside those directories (a layout's blobs are layers, not archives).
fn image_archives(product_paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let layout_dirs = products::layout_dirs(product_paths, |path| path.is_file());
    let mut archives = layout_dirs.clone();
    for path in product_paths {
        if layout_dirs.iter().any(|dir| path.starts_with(dir)) {
            continue;
        }
        let kind = match inspect::sniff(path) {
            Ok(kind) => kind,
            // A busy working directory: another tool's temp file is gone already. The product
            // attestor notes it when it hashes the products.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(failure(
                    FailureKind::Analysis,
                    format!("{}: cannot read: {error}", path.display()),
                ))
            }
        };
        if matches!(kind, Some(ArchiveKind::Tar | ArchiveKind::GzipTar)) {
            archives.push(path.clone());
        }
    }
    Ok(archives)
}

/// One attestation per analysed archive. `started`/`ended` bracket the analysis, which the
/// caller timed (the product digest and this analysis come from one read).
pub fn attest(analysis: &Analysis, started: SystemTime, ended: SystemTime) -> Attestation {
    let predicate = predicate(analysis);
    let subjects = subjects(analysis, &predicate);
    let backrefs = subjects
        .iter()
        .filter(|(key, _)| {
            ["manifestdigest:", "indexdigest:", "imageid:", "imagetag:"]
                .iter()
                .any(|prefix| key.starts_with(prefix))
        })
        .cloned()
        .collect();
    Attestation {
        type_uri: TYPE_URI,
        // A struct of strings, maps and lists: serialising it cannot fail.
        predicate: serde_json::to_value(&predicate).unwrap_or_default(),
        subjects,
        backrefs,
        started,
        ended,
    }
}

/// The subjects an archive yields, in a stable order without duplicates: what `verify --image`
/// re-derives and compares. Keys are without the type URI prefix.
fn subjects(analysis: &Analysis, predicate: &OciPredicate) -> Vec<(String, DigestSet)> {
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
    // A multi-platform image: the index is what a registry serves under its tag.
    for layout_image in analysis.layout.iter().flatten() {
        if let Some(hex) = &layout_image.index_sha256 {
            add(format!("indexdigest:{hex}"), sha256_set(hex));
        }
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
    use crate::inspect::docker::DockerArchive;
    use crate::inspect::image::{Image, Layer};

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
        let raw_manifest = b"[]".to_vec();
        let analysis = Analysis {
            path: "x.tar".into(),
            file_sha256: Some("e".repeat(64)),
            docker: Some(DockerArchive {
                raw_manifest: raw_manifest.clone(),
                entries: Vec::new(),
                images: Vec::new(),
            }),
            layout: None,
            images: vec![image('a', &["app:1"], 101), image('b', &[], 1)],
        };
        let attestation = attest(&analysis, SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH);
        let keys: Vec<&str> = attestation
            .subjects
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        let d = sha256_hex(&raw_manifest);
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
