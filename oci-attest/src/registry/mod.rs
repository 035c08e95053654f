//! Attestations in OCI registries, beside the image they describe: `attach` pushes a DSSE
//! envelope as an OCI 1.1 referrer artifact (`subject` = the image manifest or index) and keeps
//! the referrers tag-schema index (`sha256-<hex>`) up to date, optionally also cosign's
//! `sha256-<hex>.att` image; `discover` finds them again through the referrers API, the
//! tag-schema index and the `.att` tag. Layouts and registry compatibility: `docs/registry.md`.

pub mod artifact;
pub mod auth;
pub mod client;
mod hosts;
mod tls;
pub mod token;

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use serde_json::Value;

pub use client::{Access, ImageRef, RegistryArgs, Session};

use artifact::{Descriptor, EnvelopeSummary, DSSE_MEDIA_TYPE, EMPTY_BLOB, OCI_INDEX, OCI_MANIFEST};
use client::{check_digest, ReferrerEntry, MAX_BLOB_BYTES, MAX_MANIFEST_BYTES};

/// Most referrers `discover` reads for one image.
const MAX_REFERRERS: usize = 10_000;
/// Referrers read at the same time (manifest, then envelope, each).
const CONCURRENT_READS: usize = 8;
/// Envelope bytes held at once while referrers are read concurrently: one envelope of the
/// largest size, or several small ones. A flood of referrers stays within it.
const IN_FLIGHT_KIB: usize = (MAX_BLOB_BYTES / 1024) as usize;
/// Platform manifests of an index looked at for an image-identity link.
const MAX_INDEX_CHILDREN: usize = 64;

/// One way an attestation can name the image in the registry: a digest, and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// `sha256:<hex>`.
    pub digest: String,
    /// "the manifest digest", "the image ID (config) of the manifest", …
    pub what: String,
}

/// Everything that identifies the image a reference names: its manifest (or index) digest; for
/// a manifest, its config digest (the image ID `docker save` and `podman save` attest); for an
/// index, each platform manifest and its image ID.
#[derive(Clone, Debug)]
pub struct ImageIdentity {
    pub subject: Descriptor,
    pub links: Vec<Link>,
}

impl ImageIdentity {
    /// The first link an attestation's subjects name, and the subject that names it.
    pub fn link_for<'a>(&'a self, summary: &'a EnvelopeSummary) -> Option<(&'a Link, &'a str)> {
        self.links.iter().find_map(|link| {
            let hex = link.digest.strip_prefix("sha256:").unwrap_or(&link.digest);
            summary
                .subjects
                .iter()
                .find(|(_, subject)| subject == hex)
                .map(|(name, _)| (link, name.as_str()))
        })
    }

    /// Reads the manifest `reference` names and, for an image-identity link, its config digest
    /// or (for an index) its platform manifests and their config digests.
    pub fn resolve(session: &Session, reference: &str) -> anyhow::Result<Self> {
        let (bytes, subject) = session.manifest(reference)?;
        let mut links = vec![Link {
            digest: subject.digest.clone(),
            what: if subject.media_type == OCI_INDEX
                || subject.media_type == artifact::DOCKER_MANIFEST_LIST
            {
                "the index digest".to_owned()
            } else {
                "the manifest digest".to_owned()
            },
        }];
        let manifest: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: the manifest is not JSON", subject.digest))?;
        links.extend(config_link(&manifest, "the manifest's config"));
        let children: Vec<&str> = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| {
                matches!(
                    entry["mediaType"].as_str(),
                    Some(OCI_MANIFEST | artifact::DOCKER_MANIFEST)
                )
            })
            .filter_map(|entry| entry["digest"].as_str())
            .filter(|digest| check_digest(digest).is_ok())
            .take(MAX_INDEX_CHILDREN)
            .collect();
        for child in children {
            links.push(Link {
                digest: child.to_owned(),
                what: format!("platform manifest {child} of the index"),
            });
            let (child_bytes, _) = session.manifest(child)?;
            let child_manifest: Value = serde_json::from_slice(&child_bytes)
                .with_context(|| format!("{child}: the manifest is not JSON"))?;
            links.extend(config_link(
                &child_manifest,
                &format!("the config of platform manifest {child}"),
            ));
        }
        Ok(ImageIdentity { subject, links })
    }
}

fn config_link(manifest: &Value, whose: &str) -> Option<Link> {
    let config = manifest["config"]["digest"].as_str()?;
    check_digest(config).ok()?;
    Some(Link {
        digest: config.to_owned(),
        what: format!("the image ID {config} ({whose})"),
    })
}

/// What `attach` did for one envelope.
#[derive(Debug)]
pub struct Attached {
    /// The image manifest or index the envelope is attached to (`sha256:<hex>`).
    pub subject: String,
    /// The referrer artifact manifest that carries the envelope.
    pub manifest: String,
    /// How the attestation names the image (`None` with `--force` and no link).
    pub link: Option<String>,
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
/// `force`, when an envelope's signed statement names the image by none of its identities
/// ([`ImageIdentity`]); nothing is written then.
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
    let session = Session::open(image, args, Access::Push)?;
    let identity = ImageIdentity::resolve(&session, &image.tag_or_digest())?;
    let subject = &identity.subject;
    let mut links = Vec::with_capacity(envelopes.len());
    for (envelope, summary) in envelopes.iter().zip(&summaries) {
        let link = identity
            .link_for(summary)
            .map(|(link, name)| format!("{} is its subject {name}", link.what));
        if link.is_none() && !force {
            return Err(crate::exit::failure(
                crate::exit::FailureKind::VerificationFailed,
                format!(
                    "{}: the attestation names {} by none of its identities ({}; it has {} \
                     subjects); --force attaches it anyway",
                    envelope.name,
                    image.text,
                    identity
                        .links
                        .iter()
                        .map(|link| link.what.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    summary.subjects.len()
                ),
            ));
        }
        links.push(link);
    }
    session.push_blob(EMPTY_BLOB)?;
    let mut referrers = Vec::with_capacity(envelopes.len());
    for (envelope, summary) in envelopes.iter().zip(&summaries) {
        let envelope_descriptor = Descriptor::of(DSSE_MEDIA_TYPE, envelope.bytes);
        let manifest = artifact::referrer_manifest(&envelope_descriptor, summary, subject);
        let manifest_descriptor = Descriptor::of(OCI_MANIFEST, &manifest);
        session.push_blob(envelope.bytes)?;
        session.push_manifest(&manifest_descriptor.digest, &manifest, OCI_MANIFEST)?;
        referrers.push((envelope_descriptor, manifest_descriptor));
    }

    // The referrers API (where a registry has it) lists the manifests by itself; the tag-schema
    // index is what registries without it (distribution 2.8, …) are read through. It is kept on
    // every registry: on one with the API it is merely redundant.
    let index_tag = artifact::referrers_tag(&subject.digest);
    let mut index = session
        .manifest_if_exists(&index_tag)?
        .map(|(bytes, _)| bytes);
    let mut added = Vec::with_capacity(envelopes.len());
    for ((_, manifest), summary) in referrers.iter().zip(&summaries) {
        let updated = artifact::add_to_referrers_index(index.as_deref(), manifest, summary)
            .with_context(|| image.at_tag(&index_tag))?;
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
        let att_tag = artifact::cosign_tag(&subject.digest);
        let mut att = session
            .manifest_if_exists(&att_tag)?
            .map(|(bytes, _)| bytes);
        let mut config = None;
        for (((envelope, _), summary), added) in
            referrers.iter().zip(&summaries).zip(&mut cosign_added)
        {
            let updated = artifact::add_to_cosign_attestations(att.as_deref(), envelope, summary)
                .with_context(|| image.at_tag(&att_tag))?;
            *added = Some(updated.is_some());
            if let Some((new_config, new_manifest)) = updated {
                config = Some(new_config);
                att = Some(new_manifest);
            }
        }
        if let (Some(config), Some(att)) = (config, att) {
            session.push_blob(&config)?;
            session.push_manifest(&att_tag, &att, OCI_MANIFEST)?;
        }
    }
    Ok(referrers
        .into_iter()
        .zip(links)
        .zip(added)
        .zip(cosign_added)
        .map(|((((_, manifest), link), added), cosign_added)| Attached {
            subject: subject.digest.clone(),
            manifest: manifest.digest,
            link,
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

/// One attestation attached to an image, handed to the caller of [`discover`] and dropped
/// before the next one is read past the in-flight budget.
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

/// What [`discover`] saw besides the attachments.
#[derive(Debug)]
pub struct Discovered {
    /// The image (manifest or index) the reference names, with its identities when asked for.
    pub identity: ImageIdentity,
    /// Referrers listed more than once, or carrying an envelope already seen.
    pub duplicates: usize,
    /// Referrers that could not be read or name another subject (each warned about).
    pub skipped: usize,
}

/// Finds the DSSE envelopes attached to the image `image` names and hands each to `visit` (with
/// the image's identity), one at a time: at most [`CONCURRENT_READS`] referrers are read at once, and the envelopes held
/// at any moment stay within [`IN_FLIGHT_KIB`]. Every manifest and blob read is size-capped and
/// checked against its digest; a referrer whose manifest names another subject, or that cannot
/// be read, is skipped with a warning; an envelope seen before (under another referrer or in the
/// `.att` image) is read once. With `identities`, the image's platform manifests and image IDs
/// are resolved too (for `verify --image-ref`).
pub fn discover(
    image: &ImageRef,
    args: &RegistryArgs,
    identities: bool,
    mut visit: impl FnMut(&ImageIdentity, Attachment) -> anyhow::Result<()>,
) -> anyhow::Result<Discovered> {
    let session = Session::open(image, args, Access::Pull)?;
    let identity = if identities {
        ImageIdentity::resolve(&session, &image.tag_or_digest())?
    } else {
        let (_, subject) = session.manifest(&image.tag_or_digest())?;
        ImageIdentity {
            links: Vec::new(),
            subject,
        }
    };
    let subject = identity.subject.digest.clone();
    let entries = session.referrers(&subject, DSSE_MEDIA_TYPE)?;
    if entries.len() > MAX_REFERRERS {
        bail!(
            "{}: {} referrers listed, more than the {MAX_REFERRERS} read",
            image.text,
            entries.len()
        );
    }
    let mut unique: Vec<&ReferrerEntry> = Vec::with_capacity(entries.len());
    let mut listed = HashSet::new();
    for entry in &entries {
        if listed.insert(entry.digest.as_str()) {
            unique.push(entry);
        }
    }
    let mut discovered = Discovered {
        identity,
        duplicates: entries.len() - unique.len(),
        skipped: 0,
    };
    let budget = tokio::sync::Semaphore::new(IN_FLIGHT_KIB);
    let seen: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let reader = Referrers {
        session: &session,
        subject: &subject,
        budget: &budget,
        seen: &seen,
    };
    session.run(async {
        let mut reads = futures_util::stream::iter(unique)
            .map(|entry| async { (entry.digest.clone(), reader.read(entry).await) })
            .buffered(CONCURRENT_READS);
        while let Some((digest, read)) = reads.next().await {
            match read {
                Ok(Read::Found(attachment, permit)) => {
                    visit(&discovered.identity, *attachment)?;
                    drop(permit);
                }
                Ok(Read::Duplicate) => discovered.duplicates += 1,
                Ok(Read::NotAnAttestation) => {}
                Err(error) => {
                    discovered.skipped += 1;
                    tracing::warn!("skipping referrer {digest}: {error:#}");
                }
            }
        }
        anyhow::Ok(())
    })?;
    let att_tag = artifact::cosign_tag(&subject);
    if let Some((bytes, _)) = session.manifest_if_exists(&att_tag)? {
        let manifest: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not JSON", image.at_tag(&att_tag)))?;
        for (digest, size) in envelope_layers(&manifest) {
            if !seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest.clone())
            {
                discovered.duplicates += 1;
                continue;
            }
            let envelope = session.run(session.fetch_blob(&digest, size))?;
            let summary = EnvelopeSummary::read(&envelope)
                .with_context(|| format!("{}: layer {digest}", image.at_tag(&att_tag)))?;
            visit(
                &discovered.identity,
                Attachment {
                    source: Source::CosignTag,
                    manifest: None,
                    envelope_digest: digest,
                    envelope,
                    summary,
                },
            )?;
        }
    }
    Ok(discovered)
}

/// What reading one referrer gave.
enum Read<'a> {
    /// An envelope, with the budget it holds until the caller is done with it.
    Found(Box<Attachment>, tokio::sync::SemaphorePermit<'a>),
    /// Its envelope was already read through another referrer.
    Duplicate,
    /// Not a DSSE attestation (no envelope layer).
    NotAnAttestation,
}

struct Referrers<'a> {
    session: &'a Session,
    subject: &'a str,
    budget: &'a tokio::sync::Semaphore,
    seen: &'a Mutex<HashSet<String>>,
}

impl<'a> Referrers<'a> {
    async fn read(&self, entry: &ReferrerEntry) -> anyhow::Result<Read<'a>> {
        check_digest(&entry.digest)?;
        if !(0..=MAX_MANIFEST_BYTES as i64).contains(&entry.size) {
            bail!("its descriptor claims {} bytes", entry.size);
        }
        let (bytes, _) = self
            .session
            .fetch_manifest(&entry.digest)
            .await?
            .context("the manifest is not in the registry")?;
        let manifest: Value = serde_json::from_slice(&bytes).context("the manifest is not JSON")?;
        if manifest["subject"]["digest"] != self.subject {
            bail!("its manifest names another subject");
        }
        drop(bytes);
        let Some((envelope_digest, envelope_size)) = envelope_layers(&manifest).into_iter().next()
        else {
            return Ok(Read::NotAnAttestation);
        };
        if envelope_size > MAX_BLOB_BYTES {
            bail!("its envelope claims {envelope_size} bytes, more than the {MAX_BLOB_BYTES}-byte limit");
        }
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(envelope_digest.clone())
        {
            return Ok(Read::Duplicate);
        }
        let kib = u32::try_from(envelope_size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let permit = self
            .budget
            .acquire_many(kib)
            .await
            .context("the read budget is closed")?;
        let envelope = self
            .session
            .fetch_blob(&envelope_digest, envelope_size)
            .await?;
        let summary = EnvelopeSummary::read(&envelope)?;
        Ok(Read::Found(
            Box::new(Attachment {
                source: Source::Referrer,
                manifest: Some(entry.digest.clone()),
                envelope_digest,
                envelope,
                summary,
            }),
            permit,
        ))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(subjects: &[(&str, &str)]) -> EnvelopeSummary {
        EnvelopeSummary {
            subjects: subjects
                .iter()
                .map(|(name, hex)| ((*name).to_owned(), (*hex).to_owned()))
                .collect(),
            ..EnvelopeSummary::default()
        }
    }

    #[test]
    fn an_attestation_links_by_the_first_identity_its_subjects_name() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let identity = ImageIdentity {
            subject: Descriptor {
                media_type: OCI_INDEX.into(),
                digest: digest('a'),
                size: 1,
            },
            links: vec![
                Link {
                    digest: digest('a'),
                    what: "the index digest".into(),
                },
                Link {
                    digest: digest('b'),
                    what: "platform manifest".into(),
                },
                Link {
                    digest: digest('c'),
                    what: "the image ID".into(),
                },
            ],
        };
        let by_id = summary(&[
            ("tardigest:x", &"9".repeat(64)),
            ("imageid:c", &"c".repeat(64)),
        ]);
        let (link, name) = identity.link_for(&by_id).unwrap();
        assert_eq!((link.what.as_str(), name), ("the image ID", "imageid:c"));
        let both = summary(&[("imageid:c", &"c".repeat(64)), ("m", &"a".repeat(64))]);
        assert_eq!(identity.link_for(&both).unwrap().0.what, "the index digest");
        assert!(identity
            .link_for(&summary(&[("x", &"d".repeat(64))]))
            .is_none());
    }

    #[test]
    fn config_links_need_a_sha256_config() {
        let good = serde_json::json!({"config": {"digest": format!("sha256:{}", "e".repeat(64))}});
        assert!(config_link(&good, "x").unwrap().what.contains("image ID"));
        assert!(config_link(&serde_json::json!({"config": {"digest": "md5:00"}}), "x").is_none());
        assert!(config_link(&serde_json::json!({}), "x").is_none());
    }
}
