//! `oci-attest verify --key PUB.pem --image-ref IMAGE-REF`: fetch the attestations attached to
//! an image in its registry and verify them, with no file on disk.

use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use super::attach::as_registry_failure;
use super::plural;
use super::verify::{judge_run, run_facts, Allowances};
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::keys::PublicKey;
use crate::registry::{self, ImageRef, RegistryArgs};

/// What `verify --image-ref` found, printed as text or (`--json`) as one object
/// (`docs/json.md`).
#[derive(Debug, Serialize)]
struct Report {
    image: String,
    /// The manifest (or index) digest the reference resolved to.
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
    /// How its statement names the image (`the image ID … is its subject …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

/// Passes when at least one attached envelope is signed by `key`, names the image by one of its
/// identities (manifest or index digest, image ID, platform manifest: the rule `attach` applies)
/// and records a run the `--allow-*` flags accept (the checks `verify ENVELOPE` makes). Every
/// attachment gets a line (or a JSON entry) saying why it passed or not; envelopes are verified
/// one at a time as they arrive and not kept.
pub(super) fn execute(
    key: &PublicKey,
    image: &str,
    registry_args: &RegistryArgs,
    allow: &Allowances,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let image = ImageRef::parse(image)?;
    let mut attestations = Vec::new();
    let discovered = registry::discover(&image, registry_args, true, |identity, found| {
        attestations.push(judge(key, allow, identity, &found));
        Ok(())
    })
    .map_err(|error| {
        as_registry_failure(
            error,
            &format!("{}: cannot fetch the attestations", image.text),
        )
    })?;
    let report = Report {
        image: image.text.clone(),
        verified: attestations.iter().any(|attached| attached.verified),
        subject: discovered.identity.subject.digest,
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
                "{}: no attached attestation is signed by key {}, names {} and records an \
                 accepted run",
                report.image, report.keyid, report.subject
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The verdict on one attachment: signature, link to the image, run checks.
fn judge(
    key: &PublicKey,
    allow: &Allowances,
    identity: &registry::ImageIdentity,
    found: &registry::Attachment,
) -> Attached {
    let mut attached = Attached {
        envelope_digest: found.envelope_digest.clone(),
        step: found.summary.step.clone(),
        verified: false,
        link: None,
        problem: None,
    };
    let payload =
        match dsse::parse(&found.envelope).and_then(|envelope| dsse::verify(&envelope, key)) {
            Ok(payload) => payload,
            Err(error) => {
                attached.problem = Some(error.to_string());
                return attached;
            }
        };
    let Some((link, subject)) = identity.link_for(&found.summary) else {
        attached.problem =
            Some("signed, but its statement names this image by none of its identities".into());
        return attached;
    };
    attached.link = Some(format!("{} is its subject {subject}", link.what));
    let mut problems = Vec::new();
    match serde_json::from_slice::<Value>(&payload) {
        Ok(statement) => {
            if let Some(run) = run_facts(&statement) {
                judge_run(allow, &run, &mut problems);
            }
        }
        Err(error) => problems.push(format!("the signed payload is not JSON: {error}")),
    }
    if problems.is_empty() {
        attached.verified = true;
    } else {
        attached.problem = Some(problems.join("; "));
    }
    attached
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
                "  {}: ok (step {:?}, {} key {}; linked by {})",
                attached.envelope_digest,
                attached.step,
                key.algorithm(),
                report.keyid,
                attached.link.as_deref().unwrap_or_default()
            ),
            Some(problem) => println!("  {}: FAILED: {problem}", attached.envelope_digest),
        }
    }
}
