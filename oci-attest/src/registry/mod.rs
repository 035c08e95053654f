//! Attestations in OCI registries, beside the image they describe: `attach` pushes a DSSE
//! envelope as an OCI 1.1 referrer artifact (`subject` = the image manifest) and keeps the
//! referrers tag-schema index (`sha256-<hex>`) up to date, optionally also cosign's
//! `sha256-<hex>.att` image; `discover` finds them again through the referrers API, the
//! tag-schema index and the `.att` tag. Layouts and registry compatibility: `docs/registry.md`.

pub mod artifact;
pub mod auth;
pub mod client;

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use oci_client::manifest::ImageIndexEntry;
use oci_client::RegistryOperation;
use serde_json::Value;

pub use client::{ImageRef, RegistryArgs, Session};

use artifact::{Descriptor, EnvelopeSummary, DSSE_MEDIA_TYPE, EMPTY_BLOB, OCI_INDEX, OCI_MANIFEST};
use client::{check_digest, MAX_MANIFEST_BYTES};

/// Most referrers `discover` reads for one image.
const MAX_REFERRERS: usize = 10_000;
/// Referrers read at the same time (manifest, then envelope, each).
const CONCURRENT_READS: usize = 8;

/// What `attach` did for one envelope.
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

/// One envelope to attach, named for messages.
pub struct Envelope<'a> {
    pub name: String,
    pub bytes: &'a [u8],
}

/// Attaches `envelopes` to the image `image` names (a tag is resolved to its digest once), then
/// updates the tag-schema index (and the `.att` image) once for all of them. Refuses, unless
/// `force`, when an envelope's signed statement has no subject that is the manifest digest;
/// nothing is written then.
pub fn attach(
    envelopes: &[Envelope<'_>],
    image: &ImageRef,
    args: &RegistryArgs,
    force: bool,
    cosign_tag: bool,
) -> anyhow::Result<Vec<Attached>> {
    let summaries = envelopes
        .iter()
        .map(|envelope| {
            EnvelopeSummary::read(envelope.bytes)
                .with_context(|| format!("{}: not a DSSE envelope", envelope.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let session = Session::open(image, args)?;
    session.login(&image.reference, RegistryOperation::Push)?;
    let (_, subject) = session.manifest(&image.reference)?;
    if let Some((envelope, summary)) = envelopes
        .iter()
        .zip(&summaries)
        .find(|(_, summary)| !force && !summary.names_manifest(&subject.digest))
    {
        return Err(crate::exit::failure(
            crate::exit::FailureKind::VerificationFailed,
            format!(
                "{}: the attestation names no subject with the manifest digest {} of {} \
                 (it has {} subjects); --force attaches it anyway",
                envelope.name,
                subject.digest,
                image.text,
                summary.subjects.len()
            ),
        ));
    }
    let repository = &image.reference;
    session.push_blob(repository, EMPTY_BLOB)?;
    let mut referrers = Vec::with_capacity(envelopes.len());
    for (envelope, summary) in envelopes.iter().zip(&summaries) {
        let envelope_descriptor = Descriptor::of(DSSE_MEDIA_TYPE, envelope.bytes);
        let manifest = artifact::referrer_manifest(&envelope_descriptor, summary, &subject);
        let manifest_descriptor = Descriptor::of(OCI_MANIFEST, &manifest);
        session.push_blob(repository, envelope.bytes)?;
        session.push_manifest(
            &image.at_digest(&manifest_descriptor.digest),
            &manifest,
            OCI_MANIFEST,
        )?;
        referrers.push((envelope_descriptor, manifest_descriptor));
    }

    // The referrers API (where a registry has it) lists the manifests by itself; the tag-schema
    // index is what registries without it (distribution 2.8, …) are read through. oci-client
    // does not expose the `OCI-Subject` header that would tell them apart, and an index kept on
    // a registry that has the API is merely redundant, so it is always kept.
    let index_tag = image.at_tag(&artifact::referrers_tag(&subject.digest));
    let mut index = session
        .manifest_if_exists(&index_tag)?
        .map(|(bytes, _)| bytes);
    let mut added = Vec::with_capacity(envelopes.len());
    for ((_, manifest), summary) in referrers.iter().zip(&summaries) {
        let updated = artifact::add_to_referrers_index(index.as_deref(), manifest, summary)
            .with_context(|| format!("{index_tag}"))?;
        added.push(updated.is_some());
        if updated.is_some() {
            index = updated;
        }
    }
    if added.contains(&true) {
        if let Some(index) = &index {
            session.push_manifest(&index_tag, index, OCI_INDEX)?;
        }
    }

    let mut cosign_added = vec![None; envelopes.len()];
    if cosign_tag {
        let att_tag = image.at_tag(&artifact::cosign_tag(&subject.digest));
        let mut att = session
            .manifest_if_exists(&att_tag)?
            .map(|(bytes, _)| bytes);
        let mut config = None;
        for (((envelope, _), summary), added) in
            referrers.iter().zip(&summaries).zip(&mut cosign_added)
        {
            let updated = artifact::add_to_cosign_attestations(att.as_deref(), envelope, summary)
                .with_context(|| format!("{att_tag}"))?;
            *added = Some(updated.is_some());
            if let Some((new_config, new_manifest)) = updated {
                config = Some(new_config);
                att = Some(new_manifest);
            }
        }
        if let (Some(config), Some(att)) = (config, att) {
            session.push_blob(repository, &config)?;
            session.push_manifest(&att_tag, &att, OCI_MANIFEST)?;
        }
    }
    Ok(referrers
        .into_iter()
        .zip(added)
        .zip(cosign_added)
        .map(|(((_, manifest), added), cosign_added)| Attached {
            subject: subject.digest.clone(),
            manifest: manifest.digest,
            added,
            cosign_added,
        })
        .collect())
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
    let mut unique: Vec<&ImageIndexEntry> = Vec::with_capacity(entries.len());
    for entry in &entries {
        if !unique.iter().any(|seen| seen.digest == entry.digest) {
            unique.push(entry);
        }
    }
    let read: Vec<(String, anyhow::Result<Option<Attachment>>)> = session.run(
        futures_util::stream::iter(unique)
            .map(|entry| async {
                let result = referrer(&session, image, &subject.digest, &entry.digest, entry.size);
                (entry.digest.clone(), result.await)
            })
            .buffered(CONCURRENT_READS)
            .collect(),
    );
    let mut found: Vec<Attachment> = Vec::new();
    for (digest, result) in read {
        match result {
            Ok(Some(attachment)) => found.push(attachment),
            Ok(None) => {}
            Err(error) => tracing::warn!("skipping referrer {digest}: {error:#}"),
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
async fn referrer(
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
    let (bytes, _) = session
        .fetch_manifest(&image.at_digest(digest))
        .await?
        .context("the manifest is not in the registry")?;
    let manifest: Value = serde_json::from_slice(&bytes).context("the manifest is not JSON")?;
    if manifest["subject"]["digest"] != subject {
        bail!("its manifest names another subject");
    }
    let Some((envelope_digest, envelope_size)) = envelope_layers(&manifest).into_iter().next()
    else {
        return Ok(None);
    };
    let envelope = session
        .fetch_blob(&image.at_digest(subject), &envelope_digest, envelope_size)
        .await?;
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
