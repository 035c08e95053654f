//! SLSA provenance v1 (<https://slsa.dev/spec/v1.0/provenance>) derived from a run's collection:
//! `run --slsa-out` signs it as a second envelope beside the collection (see `docs/format.md`,
//! "SLSA provenance"). Everything here is read back from the attestations the collection holds,
//! so the provenance says nothing the signed collection does not.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use super::statement::{self, ResourceDescriptor};
use crate::attestors::{self, Attestation};
use crate::digest::{sha256_hex, sha256_set};
use crate::rfc3339::rfc3339_nano;

pub const PROVENANCE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// Our build type: a command wrapped and traced by `oci-attest run` (docs/format.md).
pub const BUILD_TYPE: &str = "https://oci-attest.dev/build-types/run/v1";
/// The builder id when neither `--slsa-builder-id` nor a CI job says otherwise.
pub const DEFAULT_BUILDER_ID: &str = "https://oci-attest.dev/builders/local/v1";
/// Media type of the collection byproduct when it is a signed envelope.
const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
const STATEMENT_MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// What the provenance is built from besides the attestations.
#[derive(Debug)]
pub struct Run<'a> {
    pub step: &'a str,
    /// The collection's attestations (their predicates are read, never re-derived).
    pub attestations: &'a [Attestation],
    pub builder_id: &'a str,
    pub invocation_id: &'a str,
    /// The collection as written (envelope, or bare statement with `--unsigned`).
    pub collection: &'a [u8],
    pub collection_signed: bool,
    /// Where the collection was written, for the byproduct's name.
    pub collection_name: &'a str,
}

#[derive(Debug, Serialize)]
struct Provenance {
    #[serde(rename = "buildDefinition")]
    build_definition: BuildDefinition,
    #[serde(rename = "runDetails")]
    run_details: RunDetails,
}

#[derive(Debug, Serialize)]
struct BuildDefinition {
    #[serde(rename = "buildType")]
    build_type: &'static str,
    #[serde(rename = "externalParameters")]
    external_parameters: Value,
    #[serde(rename = "internalParameters")]
    internal_parameters: Value,
    #[serde(rename = "resolvedDependencies")]
    resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Serialize)]
struct RunDetails {
    builder: Builder,
    metadata: Metadata,
    byproducts: Vec<ResourceDescriptor>,
}

#[derive(Debug, Serialize)]
struct Builder {
    id: String,
    version: std::collections::BTreeMap<&'static str, &'static str>,
}

#[derive(Debug, Serialize)]
struct Metadata {
    #[serde(rename = "invocationId")]
    invocation_id: String,
    #[serde(rename = "startedOn")]
    started_on: String,
    #[serde(rename = "finishedOn")]
    finished_on: String,
}

/// The provenance statement's JSON bytes (the DSSE payload).
pub fn statement_json(run: &Run<'_>) -> anyhow::Result<Vec<u8>> {
    let command_run = of_type(run.attestations, attestors::COMMAND_RUN_TYPE_URI)
        .next()
        .ok_or_else(|| anyhow::anyhow!("the collection has no command-run attestation"))?;
    let (started, finished): (SystemTime, SystemTime) = (command_run.started, command_run.ended);
    let provenance = Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE,
            external_parameters: serde_json::json!({
                "command": command_run.predicate["cmd"],
                "step": run.step,
            }),
            // The trace summary and the signed options record of the command-run predicate.
            internal_parameters: serde_json::json!({
                "trace": command_run.predicate["summary"],
                "options": command_run.predicate["options"],
            }),
            resolved_dependencies: resolved_dependencies(run.attestations),
        },
        run_details: RunDetails {
            builder: Builder {
                id: run.builder_id.to_owned(),
                version: [("oci-attest", env!("CARGO_PKG_VERSION"))].into(),
            },
            metadata: Metadata {
                invocation_id: run.invocation_id.to_owned(),
                started_on: rfc3339_nano(started),
                finished_on: rfc3339_nano(finished),
            },
            byproducts: vec![ResourceDescriptor {
                name: Some(run.collection_name.to_owned()),
                digest: sha256_set(sha256_hex(run.collection)),
                media_type: Some(
                    if run.collection_signed {
                        DSSE_MEDIA_TYPE
                    } else {
                        STATEMENT_MEDIA_TYPE
                    }
                    .to_owned(),
                ),
                annotations: [(
                    "predicateType".to_owned(),
                    crate::collection::COLLECTION_TYPE.to_owned(),
                )]
                .into(),
                ..ResourceDescriptor::default()
            }],
        },
    };
    statement::to_json(&subjects(run.attestations), PROVENANCE_TYPE, &provenance)
}

fn of_type<'a>(
    attestations: &'a [Attestation],
    type_uri: &'a str,
) -> impl Iterator<Item = &'a Attestation> + 'a {
    attestations
        .iter()
        .filter(move |attestation| attestation.type_uri == type_uri)
}

/// `(path, sha256)` of a product or material tree's leaves.
fn leaves(predicate: &Value) -> impl Iterator<Item = (&str, &str)> {
    predicate["leaves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|leaf| Some((leaf["path"].as_str()?, leaf["fileDigest"].as_str()?)))
}

/// The repository part of an image reference (`reg:5000/team/app:1` → `reg:5000/team/app`):
/// the subject name cosign writes.
fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// Pushed image manifests, the OCI manifests of saved images, the image archives and every
/// product; each (name, digest) once, in that order.
fn subjects(attestations: &[Attestation]) -> Vec<ResourceDescriptor> {
    let mut subjects: Vec<ResourceDescriptor> = Vec::new();
    let mut add = |descriptor: ResourceDescriptor| {
        if !subjects.contains(&descriptor) {
            subjects.push(descriptor);
        }
    };
    let products: Vec<(&str, &str)> = of_type(attestations, attestors::PRODUCT_TYPE_URI)
        .flat_map(|attestation| leaves(&attestation.predicate))
        .collect();
    for oci in of_type(attestations, attestors::oci::TYPE_URI) {
        let predicate = &oci.predicate;
        if let Some(reference) = predicate["imagereference"].as_str() {
            if let Some(hex) = predicate["manifestdigest"]["sha256"].as_str() {
                add(ResourceDescriptor::named(
                    repository(reference),
                    sha256_set(hex),
                ));
            }
            continue;
        }
        for image in predicate["images"].as_array().into_iter().flatten() {
            let Some(hex) = image["manifestdigest"]["sha256"].as_str() else {
                continue;
            };
            let name = image["tags"][0]
                .as_str()
                .map_or("image", repository)
                .to_owned();
            add(ResourceDescriptor::named(name, sha256_set(hex)));
        }
        if let Some(hex) = predicate["tardigest"]["sha256"].as_str() {
            let name = products
                .iter()
                .find(|(_, digest)| digest == &hex)
                .map_or("archive", |(path, _)| path);
            add(ResourceDescriptor::named(name, sha256_set(hex)));
        }
    }
    for (path, hex) in products {
        add(ResourceDescriptor::named(path, sha256_set(hex)));
    }
    subjects
}

/// The materials, then every program the traced tree executed (with its digest when the path
/// still named the executed file), each once.
fn resolved_dependencies(attestations: &[Attestation]) -> Vec<ResourceDescriptor> {
    let mut dependencies: Vec<ResourceDescriptor> = Vec::new();
    for material in of_type(attestations, attestors::MATERIAL_TYPE_URI) {
        for (path, hex) in leaves(&material.predicate) {
            dependencies.push(
                ResourceDescriptor::named(path, sha256_set(hex)).annotated("kind", "material"),
            );
        }
    }
    let execs = of_type(attestations, attestors::COMMAND_RUN_TYPE_URI)
        .flat_map(|attestation| {
            attestation.predicate["processes"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .flat_map(|process| process["execs"].as_array().into_iter().flatten());
    for exec in execs {
        let Some(program) = exec["program"].as_str() else {
            continue;
        };
        let digest = exec["programdigest"]["sha256"]
            .as_str()
            .map(sha256_set)
            .unwrap_or_default();
        let program = ResourceDescriptor::named(program, digest).annotated("kind", "program");
        if !dependencies.contains(&program) {
            dependencies.push(program);
        }
    }
    dependencies
}

/// The CI job running this, as a URL, when the environment names one (GitHub Actions, GitLab
/// CI): the default builder id and invocation id. `lookup` reads an environment variable.
pub fn ci_job_url(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let (Some(server), Some(repository), Some(run)) = (
        lookup("GITHUB_SERVER_URL"),
        lookup("GITHUB_REPOSITORY"),
        lookup("GITHUB_RUN_ID"),
    ) {
        let attempt = lookup("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".to_owned());
        return Some(format!(
            "{server}/{repository}/actions/runs/{run}/attempts/{attempt}"
        ));
    }
    lookup("CI_JOB_URL")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn attestation(type_uri: &'static str, predicate: Value) -> Attestation {
        Attestation {
            type_uri,
            predicate,
            subjects: Vec::new(),
            backrefs: Vec::new(),
            started: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            ended: UNIX_EPOCH + Duration::from_millis(1_700_000_001_500),
        }
    }

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn collection() -> Vec<Attestation> {
        vec![
            attestation(
                attestors::MATERIAL_TYPE_URI,
                json!({"leaves": [{"path": "Containerfile", "fileDigest": hex('1')}]}),
            ),
            attestation(
                attestors::COMMAND_RUN_TYPE_URI,
                json!({"cmd": ["skopeo", "copy", "a", "b"], "summary": {"trace": "ebpf"},
                       "options": {"settings": {"trace": {"value": "ebpf"}}}, "processes": [
                    {"execs": [{"program": "/usr/bin/skopeo", "programdigest": {"sha256": hex('2')}}]},
                    {"execs": [{"program": "/usr/bin/skopeo", "programdigest": {"sha256": hex('2')}},
                               {"program": "/tmp/gone", "programdigest": null}]}]}),
            ),
            attestation(
                attestors::PRODUCT_TYPE_URI,
                json!({"leaves": [{"path": "app.tar", "fileDigest": hex('3')}]}),
            ),
            attestation(
                attestors::oci::TYPE_URI,
                json!({"tardigest": {"sha256": hex('3')}, "images": [
                    {"tags": ["localhost/fx/app:1"], "manifestdigest": {"sha256": hex('4')}},
                    {"tags": null, "manifestdigest": null}]}),
            ),
            attestation(
                attestors::oci::TYPE_URI,
                json!({"manifestdigest": {"sha256": hex('5')}, "imagereference": "reg:5000/team/app:1"}),
            ),
        ]
    }

    #[test]
    fn provenance_reads_subjects_dependencies_and_times_from_the_collection() {
        let attestations = collection();
        let run = Run {
            step: "save",
            attestations: &attestations,
            builder_id: "https://ci.example/job/1",
            invocation_id: "inv-1",
            collection: b"envelope",
            collection_signed: true,
            collection_name: "att.json",
        };
        let statement: Value = serde_json::from_slice(&statement_json(&run).unwrap()).unwrap();
        assert_eq!(statement["_type"], statement::STATEMENT_V1_TYPE);
        assert_eq!(statement["predicateType"], PROVENANCE_TYPE);
        let subjects: Vec<(&str, &str)> = statement["subject"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap(),
                    s["digest"]["sha256"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            subjects,
            [
                ("localhost/fx/app", hex('4').as_str()),
                ("app.tar", hex('3').as_str()),
                ("reg:5000/team/app", hex('5').as_str()),
            ]
        );
        let predicate = &statement["predicate"];
        let definition = &predicate["buildDefinition"];
        assert_eq!(definition["buildType"], BUILD_TYPE);
        assert_eq!(
            definition["externalParameters"],
            json!({"command": ["skopeo", "copy", "a", "b"], "step": "save"})
        );
        assert_eq!(definition["internalParameters"]["trace"]["trace"], "ebpf");
        assert_eq!(
            definition["internalParameters"]["options"]["settings"]["trace"]["value"],
            "ebpf"
        );
        let dependencies = definition["resolvedDependencies"].as_array().unwrap();
        assert_eq!(dependencies.len(), 3, "{dependencies:?}");
        assert_eq!(dependencies[0]["annotations"]["kind"], "material");
        assert_eq!(dependencies[1]["name"], "/usr/bin/skopeo");
        assert!(dependencies[2].get("digest").is_none());
        let details = &predicate["runDetails"];
        assert_eq!(details["builder"]["id"], "https://ci.example/job/1");
        assert_eq!(details["metadata"]["startedOn"], "2023-11-14T22:13:20Z");
        assert_eq!(details["metadata"]["finishedOn"], "2023-11-14T22:13:21.5Z");
        assert_eq!(
            details["byproducts"][0]["digest"]["sha256"],
            sha256_hex(b"envelope")
        );
    }

    #[test]
    fn repository_drops_tag_and_digest_but_not_the_port() {
        assert_eq!(repository("reg:5000/team/app:1"), "reg:5000/team/app");
        assert_eq!(repository("reg:5000/app@sha256:ab"), "reg:5000/app");
        assert_eq!(repository("reg:5000/app"), "reg:5000/app");
        assert_eq!(repository("app"), "app");
    }

    #[test]
    fn ci_job_urls_of_github_and_gitlab() {
        let github = |name: &str| {
            match name {
                "GITHUB_SERVER_URL" => Some("https://github.com"),
                "GITHUB_REPOSITORY" => Some("o/r"),
                "GITHUB_RUN_ID" => Some("7"),
                _ => None,
            }
            .map(str::to_owned)
        };
        assert_eq!(
            ci_job_url(github).as_deref(),
            Some("https://github.com/o/r/actions/runs/7/attempts/1")
        );
        let gitlab = |name: &str| (name == "CI_JOB_URL").then(|| "https://gl/j/1".to_owned());
        assert_eq!(ci_job_url(gitlab).as_deref(), Some("https://gl/j/1"));
        assert_eq!(ci_job_url(|_| None), None);
    }
}
