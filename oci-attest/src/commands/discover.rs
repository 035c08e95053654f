//! `oci-attest discover IMAGE-REF [--json]`: the attestations attached to an image in its
//! registry (referrers API, referrers tag schema, cosign `.att` tag).

use std::process::ExitCode;

use serde_json::json;

use super::attach::as_registry_failure;
use crate::registry::{self, ImageRef, RegistryArgs};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  oci-attest discover registry.example/team/app:1\n  \
    oci-attest discover --predicate-type https://slsa.dev/provenance/v1 registry.example/team/app:1"
)]
pub struct Args {
    /// The image: REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:….
    #[arg(value_name = "IMAGE-REF")]
    pub image: String,
    /// Print a JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the attestations whose statement has this predicate type (e.g.
    /// https://slsa.dev/provenance/v1, https://aflock.ai/attestation-collection/v0.1).
    #[arg(long, value_name = "URI")]
    pub predicate_type: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What `discover` shows of one attachment (the envelope itself is not kept).
struct Found {
    source: registry::Source,
    manifest: Option<String>,
    envelope_digest: String,
    summary: registry::artifact::EnvelopeSummary,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let image = ImageRef::parse(&args.image)?;
    let mut attachments = Vec::new();
    let discovered = registry::discover(&image, &args.registry, false, |_, attachment| {
        attachments.push(Found {
            source: attachment.source,
            manifest: attachment.manifest,
            envelope_digest: attachment.envelope_digest,
            summary: attachment.summary,
        });
        Ok(())
    })
    .map_err(|error| as_registry_failure(error, &format!("{}: discover failed", image.text)))?;
    let subject = &discovered.identity.subject.digest;
    if let Some(wanted) = &args.predicate_type {
        attachments.retain(|found| &found.summary.predicate_type == wanted);
    }
    if args.json {
        let list: Vec<_> = attachments
            .iter()
            .map(|found| {
                json!({
                    "envelopeDigest": found.envelope_digest,
                    "manifestDigest": found.manifest,
                    "source": found.source,
                    "step": found.summary.step,
                    "predicateType": found.summary.predicate_type,
                    "attestations": found.summary.attestor_types,
                    "keyids": found.summary.keyids,
                })
            })
            .collect();
        let document = json!({
            "image": image.text,
            "subject": subject,
            "attestations": list,
            "duplicates": discovered.duplicates,
            "skipped": discovered.skipped,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(ExitCode::SUCCESS);
    }
    let count = attachments.len();
    println!(
        "{} ({subject}): {count} {}",
        image.text,
        super::plural(count, "attestation", "attestations")
    );
    for found in &attachments {
        let short = |digest: &str| digest.chars().take(19).collect::<String>();
        println!(
            "  {}  {}  step {:?}  keyid {}  via {}",
            short(&found.envelope_digest),
            found.summary.predicate_type,
            found.summary.step,
            found.summary.keyids.join(","),
            match found.source {
                registry::Source::Referrer => "referrer",
                registry::Source::CosignTag => "cosign .att tag",
            }
        );
        if !found.summary.attestor_types.is_empty() {
            println!("      {}", found.summary.attestor_types.join(", "));
        }
    }
    if discovered.duplicates + discovered.skipped > 0 {
        println!(
            "  ({} duplicate referrers listed once, {} unreadable referrers skipped)",
            discovered.duplicates, discovered.skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}
