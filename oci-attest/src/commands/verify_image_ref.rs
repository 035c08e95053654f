//! `oci-attest verify --key PUB.pem --image-ref IMAGE-REF`: fetch the attestations attached to
//! an image in its registry and verify them, with no file on disk.

use std::process::ExitCode;

use serde::Serialize;

use super::attach::as_registry_failure;
use super::plural;
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::keys::PublicKey;
use crate::registry::{self, ImageRef, RegistryArgs};

/// What `verify --image-ref` found, printed as text or (`--json`) as one object
/// (`docs/json.md`).
#[derive(Debug, Serialize)]
struct Report {
    image: String,
    /// The manifest digest the reference resolved to.
    subject: String,
    verified: bool,
    keyid: String,
    attestations: Vec<Attached>,
}

/// One attached envelope and why it passed or not.
#[derive(Debug, Serialize)]
struct Attached {
    #[serde(rename = "envelopeDigest")]
    envelope_digest: String,
    step: String,
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

/// Passes when at least one attached envelope is signed by `key` and its statement names the
/// image's manifest digest; every attachment gets a line (or a JSON entry) saying why it passed
/// or not.
pub fn execute(
    key: &PublicKey,
    image: &str,
    registry_args: &RegistryArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let image = ImageRef::parse(image)?;
    let (subject, attachments) = registry::discover(&image, registry_args).map_err(|error| {
        as_registry_failure(
            error,
            &format!("{}: cannot fetch the attestations", image.text),
        )
    })?;
    let attestations: Vec<Attached> = attachments
        .iter()
        .map(|found| {
            let problem = dsse::parse(&found.envelope)
                .and_then(|envelope| dsse::verify(&envelope, key))
                .map_err(|error| error.to_string())
                .and_then(|_| {
                    if found.summary.names_manifest(&subject) {
                        Ok(())
                    } else {
                        Err("signed, but its statement does not name this image".to_owned())
                    }
                })
                .err();
            Attached {
                envelope_digest: found.envelope_digest.clone(),
                step: found.summary.step.clone(),
                verified: problem.is_none(),
                problem,
            }
        })
        .collect();
    let report = Report {
        image: image.text.clone(),
        verified: attestations.iter().any(|attached| attached.verified),
        subject,
        keyid: key.keyid(),
        attestations,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if !crate::logging::quiet() {
        print_text(&report, key);
    }
    if !report.verified {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!(
                "{}: no attached attestation is signed by key {} and names {}",
                report.image, report.keyid, report.subject
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(report: &Report, key: &PublicKey) {
    let count = report.attestations.len();
    println!(
        "{} ({}): {count} {} attached",
        report.image,
        report.subject,
        plural(count, "attestation", "attestations")
    );
    for attached in &report.attestations {
        match &attached.problem {
            None => println!(
                "  {}: ok (step {:?}, {} key {})",
                attached.envelope_digest,
                attached.step,
                key.algorithm(),
                report.keyid
            ),
            Some(problem) => println!("  {}: FAILED: {problem}", attached.envelope_digest),
        }
    }
}
