//! `oci-attest verify --key PUB.pem --image-ref IMAGE-REF`: fetch the attestations attached to
//! an image in its registry and verify them, with no file on disk.

use std::process::ExitCode;

use serde_json::Value;

use super::attach::as_registry_failure;
use super::verify::{judge_run, run_facts, Allowances};
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::keys::PublicKey;
use crate::registry::{self, ImageRef, RegistryArgs};

/// Passes when at least one attached envelope is signed by `key`, names the image by one of its
/// identities (manifest or index digest, image ID, platform manifest: the rule `attach` applies)
/// and records a run the `--allow-*` flags accept (the checks `verify ENVELOPE` makes). Every
/// attachment gets a line saying why it passed or not; envelopes are verified one at a time as
/// they arrive and not kept.
pub(super) fn execute(
    key: &PublicKey,
    image: &str,
    registry_args: &RegistryArgs,
    allow: &Allowances,
) -> anyhow::Result<ExitCode> {
    let image = ImageRef::parse(image)?;
    let mut verified = 0;
    let mut lines = Vec::new();
    let discovered = registry::discover(&image, registry_args, true, |identity, found| {
        lines.push(judge(key, allow, identity, &found, &mut verified));
        Ok(())
    });
    let discovered = discovered.map_err(|error| {
        as_registry_failure(
            error,
            &format!("{}: cannot fetch the attestations", image.text),
        )
    })?;
    let subject = &discovered.identity.subject.digest;
    println!(
        "{} ({subject}): {} attestations attached",
        image.text,
        lines.len()
    );
    for line in &lines {
        println!("  {line}");
    }
    if verified == 0 {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!(
                "{}: no attached attestation is signed by key {}, names {subject} and records \
                 an accepted run",
                image.text,
                key.keyid()
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// One attachment's line: `DIGEST: ok (…)` or `DIGEST: FAILED: why`.
fn judge(
    key: &PublicKey,
    allow: &Allowances,
    identity: &registry::ImageIdentity,
    found: &registry::Attachment,
    verified: &mut usize,
) -> String {
    let payload =
        match dsse::parse(&found.envelope).and_then(|envelope| dsse::verify(&envelope, key)) {
            Ok(payload) => payload,
            Err(error) => return format!("{}: FAILED: {error}", found.envelope_digest),
        };
    let Some((link, subject)) = identity.link_for(&found.summary) else {
        return format!(
            "{}: FAILED: signed, but its statement names this image by none of its identities",
            found.envelope_digest
        );
    };
    let mut problems = Vec::new();
    match serde_json::from_slice::<Value>(&payload) {
        Ok(statement) => {
            if let Some(run) = run_facts(&statement) {
                judge_run(allow, &run, &mut problems);
            }
        }
        Err(error) => problems.push(format!("the signed payload is not JSON: {error}")),
    }
    if !problems.is_empty() {
        return format!("{}: FAILED: {}", found.envelope_digest, problems.join("; "));
    }
    *verified += 1;
    format!(
        "{}: ok (step {:?}, {} key {}; linked by {} is its subject {subject})",
        found.envelope_digest,
        found.summary.step,
        key.algorithm(),
        key.keyid(),
        link.what
    )
}
