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
    /// The DSSE envelope (from `oci-attest run`).
    #[arg(value_name = "ATT.json")]
    pub envelope: PathBuf,
    /// The image: REGISTRY/REPO:TAG (resolved to its digest once) or REGISTRY/REPO@sha256:….
    #[arg(value_name = "IMAGE-REF")]
    pub image: String,
    /// Attach even when no subject of the attestation is the image's manifest digest.
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
    let envelope = read_envelope(&args.envelope)?;
    let image = ImageRef::parse(&args.image)?;
    attach(
        &envelope,
        &args.envelope,
        &image,
        &args.registry,
        args.force,
        args.cosign_tag,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Attaches and reports on stdout; errors carry the registry exit code unless they already
/// carry one (a refused subject).
pub fn attach(
    envelope: &[u8],
    path: &Path,
    image: &ImageRef,
    registry_args: &RegistryArgs,
    force: bool,
    cosign_tag: bool,
) -> anyhow::Result<()> {
    let attached =
        registry::attach(envelope, image, registry_args, force, cosign_tag).map_err(|error| {
            as_registry_failure(error, &format!("{}: attach failed", path.display()))
        })?;
    for line in report(path, image, &attached) {
        println!("{line}");
    }
    Ok(())
}

/// What an attach did, in lines for the user.
pub fn report(path: &Path, image: &ImageRef, attached: &registry::Attached) -> Vec<String> {
    let state = if attached.added {
        "attached"
    } else {
        "already attached"
    };
    let mut lines = vec![format!(
        "{state}: {} → {}/{}@{} (referrer {})",
        path.display(),
        image.reference.resolve_registry(),
        image.reference.repository(),
        attached.subject,
        attached.manifest
    )];
    let tag = registry::artifact::cosign_tag(&attached.subject);
    match attached.cosign_added {
        Some(true) => lines.push(format!("cosign tag: added to {tag}")),
        Some(false) => lines.push(format!("cosign tag: already in {tag}")),
        None => {}
    }
    lines
}

/// Wraps an error in the registry failure code, keeping a code it already has.
pub fn as_registry_failure(error: anyhow::Error, context: &str) -> anyhow::Error {
    if crate::exit::code_for(&error) != FailureKind::General.code() {
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
