//! `oci-attest attach ATT.json IMAGE-REF`: push a signed attestation to the registry, as an OCI
//! referrer of the image manifest (see `docs/registry.md`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::exit::{failure, FailureKind};
use crate::registry::{self, client::MAX_BLOB_BYTES, ImageRef, RegistryArgs};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    oci-attest attach app.att.json registry.example/team/app:1\n  \
    oci-attest attach --cosign-tag app.att.json registry.example/team/app@sha256:…")]
pub struct Args {
    /// The DSSE envelopes (from `oci-attest run`); several are attached in one go.
    #[arg(value_name = "ATT.json", required = true, num_args = 1..)]
    pub envelopes: Vec<PathBuf>,
    /// The image: REGISTRY/REPO:TAG (resolved to its digest once) or REGISTRY/REPO@sha256:….
    #[arg(value_name = "IMAGE-REF")]
    pub image: String,
    /// Attach even when the attestation names the image by none of its identities (manifest
    /// or index digest, image ID, platform manifest).
    #[arg(long)]
    pub force: bool,
    /// Also add the envelope to cosign's `sha256-<hex>.att` tag (read by cosign
    /// verify-attestation, Kyverno, policy-controller).
    #[arg(long)]
    pub cosign_tag: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let contents = args
        .envelopes
        .iter()
        .map(|path| read_envelope(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let envelopes: Vec<registry::Envelope<'_>> = args
        .envelopes
        .iter()
        .zip(&contents)
        .map(|(path, bytes)| registry::Envelope {
            name: path.display().to_string(),
            bytes,
        })
        .collect();
    let image = ImageRef::parse(&args.image)?;
    let attached = registry::attach(
        &envelopes,
        &image,
        &args.registry,
        args.force,
        args.cosign_tag,
    )
    .map_err(|error| as_registry_failure(error, "attach failed"))?;
    for line in report(&envelopes, &image, &attached) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What an attach did, one line per envelope (and per `.att` update).
pub fn report(
    envelopes: &[registry::Envelope<'_>],
    image: &ImageRef,
    attached: &[registry::Attached],
) -> Vec<String> {
    let mut lines = Vec::new();
    for (envelope, attached) in envelopes.iter().zip(attached) {
        let state = if attached.added {
            "attached"
        } else {
            "already attached"
        };
        lines.push(format!(
            "{state}: {} → {} (referrer {})",
            envelope.name,
            image.at_digest(&attached.subject),
            attached.manifest
        ));
        lines.push(match &attached.link {
            Some(link) => format!("  linked by {link}"),
            None => "  linked by nothing: attached with --force".to_owned(),
        });
        let tag = registry::artifact::cosign_tag(&attached.subject);
        match attached.cosign_added {
            Some(true) => lines.push(format!("cosign tag: added to {tag}")),
            Some(false) => lines.push(format!("cosign tag: already in {tag}")),
            None => {}
        }
    }
    lines
}

/// Wraps an error in the registry failure code, keeping a code it already has.
pub fn as_registry_failure(error: anyhow::Error, context: &str) -> anyhow::Error {
    if crate::exit::kind_of(&error) != FailureKind::General {
        return error.context(context.to_owned());
    }
    failure(FailureKind::Registry, format!("{context}: {error:#}"))
}

/// A regular file of at most the registry's blob cap.
fn read_envelope(path: &Path) -> anyhow::Result<Vec<u8>> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if !metadata.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    if metadata.len() > MAX_BLOB_BYTES {
        bail!(
            "{}: {} bytes is too large for an envelope",
            path.display(),
            metadata.len()
        );
    }
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}
