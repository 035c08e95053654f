//! Reading what `oci-attest run` signed, for the end-to-end tests of the save tools: the oci
//! attestations checked against an independent reading of the archive, and the command-run
//! attestation's identity and executed programs.

use serde_json::Value;

use crate::expect::ArchiveExpectation;
use crate::registry_bench::OCI_PREDICATE;

const COMMAND_RUN_PREDICATE: &str = "https://aflock.ai/attestations/command-run/v0.1";
const PRODUCT_PREDICATE: &str = "https://aflock.ai/attestations/product/v0.3";

/// The attestations of `kind` (a predicate type) in a statement.
fn attestations<'a>(statement: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    statement["predicate"]["attestations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(move |attestation| attestation["type"] == kind)
        .map(|attestation| &attestation["attestation"])
}

/// The oci attestations of a statement.
pub fn oci_attestations(statement: &Value) -> Vec<Value> {
    attestations(statement, OCI_PREDICATE).cloned().collect()
}

/// The command-run attestation of a statement.
pub fn command_run(statement: &Value) -> &Value {
    attestations(statement, COMMAND_RUN_PREDICATE)
        .next()
        .unwrap_or_else(|| panic!("no command-run attestation: {statement:#}"))
}

/// The products of a statement: path → sha256 hex (an empty object when there are none).
pub fn products(statement: &Value) -> Value {
    attestations(statement, PRODUCT_PREDICATE)
        .next()
        .map(|product| product["files"].clone())
        .filter(|files| !files.is_null())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// Every exec the command-run attestation records: (program, raised privileges or null).
pub fn execs(statement: &Value) -> Vec<(String, Value)> {
    command_run(statement)["processes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .flat_map(|process| process["execs"].as_array().cloned().unwrap_or_default())
        .map(|exec| {
            (
                exec["program"].as_str().unwrap_or_default().to_owned(),
                exec["privileges"].clone(),
            )
        })
        .collect()
}

pub fn sha256_set(hex: &str) -> Value {
    serde_json::json!({ "sha256": hex })
}

/// One of `attestations` must describe the archive `product` exactly as the independent
/// computation does: image ID, diffIDs, manifest digest, tar digest, every image in order.
pub fn check_oci_attestation(
    attestations: &[Value],
    independent: &ArchiveExpectation,
    product: &str,
) {
    let first = &independent.images[0];
    let matching = attestations
        .iter()
        .find(|attestation| attestation["imageid"] == sha256_set(&first.imageid))
        .unwrap_or_else(|| {
            panic!(
                "no oci attestation has imageid {} (got {:?})",
                first.imageid,
                attestations
                    .iter()
                    .map(|a| a["imageid"].clone())
                    .collect::<Vec<_>>()
            )
        });
    let diffids: Vec<Value> = first.diffids.iter().map(|hex| sha256_set(hex)).collect();
    assert_eq!(
        matching["diffids"],
        Value::Array(diffids),
        "{product}: diffids"
    );
    assert_eq!(
        matching["manifestdigest"],
        sha256_set(&independent.manifestdigest),
        "{product}: manifestdigest"
    );
    if let Some(tardigest) = &independent.tardigest {
        assert_eq!(
            matching["tardigest"],
            sha256_set(tardigest),
            "{product}: tardigest"
        );
    }
    if independent.images.len() > 1 {
        let reported: Vec<Value> = matching["images"]
            .as_array()
            .unwrap_or_else(|| panic!("{product}: several images but no `images`"))
            .iter()
            .map(|image| image["imageid"].clone())
            .collect();
        let expected: Vec<Value> = independent
            .images
            .iter()
            .map(|image| sha256_set(&image.imageid))
            .collect();
        assert_eq!(reported, expected, "{product}: images in archive order");
        for (image, expected) in matching["images"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(&independent.images)
        {
            let diffids: Vec<Value> = expected.diffids.iter().map(|hex| sha256_set(hex)).collect();
            assert_eq!(
                image["diffids"],
                Value::Array(diffids),
                "{product}: diffids of {}",
                expected.imageid
            );
        }
    }
}
