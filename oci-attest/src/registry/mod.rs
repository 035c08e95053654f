//! Attestations in OCI registries, beside the image they describe: `attach` pushes a DSSE
//! envelope as an OCI 1.1 referrer artifact (`subject` = the image manifest) and keeps the
//! referrers tag-schema index (`sha256-<hex>`) up to date, optionally also cosign's
//! `sha256-<hex>.att` image; `discover` finds them again through the referrers API, the
//! tag-schema index and the `.att` tag. Layouts and registry compatibility: `docs/registry.md`.

pub mod artifact;
pub mod auth;
pub mod client;

use anyhow::{bail, Context as _};
use oci_client::RegistryOperation;
use serde_json::Value;

pub use client::{ImageRef, RegistryArgs, Session};

use artifact::{Descriptor, EnvelopeSummary, DSSE_MEDIA_TYPE, EMPTY_BLOB, OCI_INDEX, OCI_MANIFEST};
use client::{check_digest, MAX_MANIFEST_BYTES};

/// Most referrers `discover` reads for one image.
const MAX_REFERRERS: usize = 10_000;

/// What `attach` did.
#[derive(Debug)]
pub struct Attached {
    /// The image manifest the envelope is attached to (`sha256:<hex>`).
    pub subject: String,
    /// The referrer artifact manifest that carries the envelope.
    pub manifest: String,
    /// False when the envelope was already attached (nothing changed).
    pub added: bool,
    /// With `--cosign-tag`: whether the `.att` image gained the envelope.
    pub cosign_added: Option<bool>,
}

/// Attaches `envelope` to the image `image` names (a tag is resolved to its digest once).
/// Refuses, unless `force`, when no subject of the signed statement is that manifest digest.
pub fn attach(
    envelope: &[u8],
    image: &ImageRef,
    args: &RegistryArgs,
    force: bool,
    cosign_tag: bool,
) -> anyhow::Result<Attached> {
    let summary = EnvelopeSummary::read(envelope)?;
    let session = Session::open(image, args)?;
    session.login(&image.reference, RegistryOperation::Push)?;
    let (_, subject) = session.manifest(&image.reference)?;
    if !force && !summary.names_manifest(&subject.digest) {
        return Err(crate::exit::failure(
            crate::exit::FailureKind::VerificationFailed,
            format!(
                "{}: the attestation names no subject with this image's manifest digest {} \
                 (it has {} subjects); --force attaches it anyway",
                image.text,
                subject.digest,
                summary.subjects.len()
            ),
        ));
    }
    let envelope_descriptor = Descriptor::of(DSSE_MEDIA_TYPE, envelope);
    let manifest = artifact::referrer_manifest(&envelope_descriptor, &summary, &subject);
    let manifest_descriptor = Descriptor::of(OCI_MANIFEST, &manifest);

    let repository = &image.reference;
    session.push_blob(repository, EMPTY_BLOB)?;
    session.push_blob(repository, envelope)?;
    session.push_manifest(
        &image.at_digest(&manifest_descriptor.digest),
        &manifest,
        OCI_MANIFEST,
    )?;

    // The referrers API (where a registry has it) lists the manifest by itself; the tag-schema
    // index is what registries without it (distribution 2.8, …) are read through. oci-client
    // does not expose the `OCI-Subject` header that would tell them apart, and an index kept on
    // a registry that has the API is merely redundant, so it is always kept.
    let index_tag = image.at_tag(&artifact::referrers_tag(&subject.digest));
    let existing = session.manifest_if_exists(&index_tag)?;
    let added = match artifact::add_to_referrers_index(
        existing.as_ref().map(|(bytes, _)| bytes.as_slice()),
        &manifest_descriptor,
        &summary,
    )
    .with_context(|| format!("{index_tag}"))?
    {
        Some(index) => {
            session.push_manifest(&index_tag, &index, OCI_INDEX)?;
            true
        }
        None => false,
    };

    let cosign_added = if cosign_tag {
        let att_tag = image.at_tag(&artifact::cosign_tag(&subject.digest));
        let existing = session.manifest_if_exists(&att_tag)?;
        match artifact::add_to_cosign_attestations(
            existing.as_ref().map(|(bytes, _)| bytes.as_slice()),
            &envelope_descriptor,
            &summary,
        )
        .with_context(|| format!("{att_tag}"))?
        {
            Some((config, att_manifest)) => {
                session.push_blob(repository, &config)?;
                session.push_manifest(&att_tag, &att_manifest, OCI_MANIFEST)?;
                Some(true)
            }
            None => Some(false),
        }
    } else {
        None
    };
    Ok(Attached {
        subject: subject.digest,
        manifest: manifest_descriptor.digest,
        added,
        cosign_added,
    })
}

/// Where `discover` found an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A referrer artifact (referrers API or tag-schema index).
    Referrer,
    /// A layer of cosign's `.att` image.
    CosignTag,
}

/// One attestation attached to an image.
#[derive(Debug)]
pub struct Attachment {
    pub source: Source,
    /// The referrer manifest's digest (for `Source::Referrer`).
    pub manifest: Option<String>,
    /// The envelope blob's digest.
    pub envelope_digest: String,
    pub envelope: Vec<u8>,
    pub summary: EnvelopeSummary,
}

/// The image manifest `image` names and the DSSE envelopes attached to it. Every manifest and
/// blob read is size-capped and checked against its digest; a referrer whose manifest names
/// another subject, or that holds no envelope, is skipped with a warning.
pub fn discover(
    image: &ImageRef,
    args: &RegistryArgs,
) -> anyhow::Result<(String, Vec<Attachment>)> {
    let session = Session::open(image, args)?;
    session.login(&image.reference, RegistryOperation::Pull)?;
    let (_, subject) = session.manifest(&image.reference)?;
    let subject_ref = image.at_digest(&subject.digest);
    let entries = session.referrers(&subject_ref, DSSE_MEDIA_TYPE)?;
    if entries.len() > MAX_REFERRERS {
        bail!(
            "{}: {} referrers listed, more than the {MAX_REFERRERS} read",
            image.text,
            entries.len()
        );
    }
    let mut found: Vec<Attachment> = Vec::new();
    for entry in &entries {
        if found
            .iter()
            .any(|a| a.manifest.as_deref() == Some(entry.digest.as_str()))
        {
            continue;
        }
        match referrer(&session, image, &subject.digest, &entry.digest, entry.size) {
            Ok(Some(attachment)) => found.push(attachment),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!("skipping referrer {}: {error:#}", entry.digest);
            }
        }
    }
    let att_tag = image.at_tag(&artifact::cosign_tag(&subject.digest));
    if let Some((bytes, _)) = session.manifest_if_exists(&att_tag)? {
        let manifest: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{att_tag}: not JSON"))?;
        for layer in envelope_layers(&manifest) {
            if found.iter().any(|a| a.envelope_digest == layer.0) {
                continue;
            }
            let envelope = session.blob(&subject_ref, &layer.0, layer.1)?;
            let summary = EnvelopeSummary::read(&envelope)
                .with_context(|| format!("{att_tag}: layer {}", layer.0))?;
            found.push(Attachment {
                source: Source::CosignTag,
                manifest: None,
                envelope_digest: layer.0,
                envelope,
                summary,
            });
        }
    }
    Ok((subject.digest, found))
}

/// Reads one referrer: `None` when it is not a DSSE attestation of this subject.
fn referrer(
    session: &Session,
    image: &ImageRef,
    subject: &str,
    digest: &str,
    size: i64,
) -> anyhow::Result<Option<Attachment>> {
    check_digest(digest)?;
    if !(0..=MAX_MANIFEST_BYTES as i64).contains(&size) {
        bail!("its descriptor claims {size} bytes");
    }
    let (bytes, _) = session.manifest(&image.at_digest(digest))?;
    let manifest: Value = serde_json::from_slice(&bytes).context("the manifest is not JSON")?;
    if manifest["subject"]["digest"] != subject {
        bail!("its manifest names another subject");
    }
    let Some((envelope_digest, envelope_size)) = envelope_layers(&manifest).into_iter().next()
    else {
        return Ok(None);
    };
    let envelope = session.blob(&image.at_digest(subject), &envelope_digest, envelope_size)?;
    let summary = EnvelopeSummary::read(&envelope)?;
    Ok(Some(Attachment {
        source: Source::Referrer,
        manifest: Some(digest.to_owned()),
        envelope_digest,
        envelope,
        summary,
    }))
}

/// `(digest, size)` of a manifest's DSSE envelope layers.
fn envelope_layers(manifest: &Value) -> Vec<(String, u64)> {
    manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|layer| layer["mediaType"] == DSSE_MEDIA_TYPE)
        .filter_map(|layer| {
            Some((
                layer["digest"].as_str()?.to_owned(),
                layer["size"].as_u64()?,
            ))
        })
        .collect()
}
