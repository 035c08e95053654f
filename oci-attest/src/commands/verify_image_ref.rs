//! `oci-attest verify --key PUB.pem --image-ref IMAGE-REF`: fetch the attestations attached to
//! an image in its registry and verify them, with no file on disk.

use std::process::ExitCode;

use super::attach::as_registry_failure;
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::keys::PublicKey;
use crate::registry::{self, ImageRef, RegistryArgs};

/// Passes when at least one attached envelope is signed by `key` and its statement names the
/// image's manifest digest; every attachment gets a line saying why it passed or not.
pub fn execute(
    key: &PublicKey,
    image: &str,
    registry_args: &RegistryArgs,
) -> anyhow::Result<ExitCode> {
    let image = ImageRef::parse(image)?;
    let (subject, attachments) = registry::discover(&image, registry_args).map_err(|error| {
        as_registry_failure(
            error,
            &format!("{}: cannot fetch the attestations", image.text),
        )
    })?;
    println!(
        "{} ({subject}): {} attestations attached",
        image.text,
        attachments.len()
    );
    let mut verified = 0;
    for found in &attachments {
        let outcome = dsse::parse(&found.envelope)
            .and_then(|envelope| dsse::verify(&envelope, key))
            .map_err(|error| error.to_string())
            .and_then(|_| {
                if found.summary.names_manifest(&subject) {
                    Ok(())
                } else {
                    Err("signed, but its statement does not name this image".to_owned())
                }
            });
        match outcome {
            Ok(()) => {
                verified += 1;
                println!(
                    "  {}: ok (step {:?}, {} key {})",
                    found.envelope_digest,
                    found.summary.step,
                    key.algorithm(),
                    key.keyid()
                );
            }
            Err(problem) => println!("  {}: FAILED: {problem}", found.envelope_digest),
        }
    }
    if verified == 0 {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!(
                "{}: no attached attestation is signed by key {} and names {subject}",
                image.text,
                key.keyid()
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
