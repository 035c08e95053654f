//! A blocking session with one registry repository, on the `oci-client` crate (tokio underneath,
//! a current-thread runtime per session). It adds what a tool that reads hostile responses needs:
//! an overall deadline on every operation (besides oci-client's connect and read timeouts), size
//! caps, and digest checks of everything read.
//!
//! Limits of oci-client that shape this code: it reads a manifest body whole before returning it,
//! so the manifest cap is checked after the read and the deadline is what bounds a huge answer;
//! redirects follow reqwest's policy, which drops the `Authorization` header when a redirect
//! leaves the registry's host and port, so credentials never reach another host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::ImageIndexEntry;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use super::artifact::{Descriptor, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use super::auth;
use crate::digest::sha256_hex;

/// Largest manifest or index read (distribution's own limit for manifests it accepts).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest blob (an envelope) read.
pub const MAX_BLOB_BYTES: u64 = 64 << 20;
/// Longest any single connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const MANIFEST_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// How to reach and authenticate to registries; shared by `attach`, `discover`,
/// `verify --image-ref` and `run --attach`. Credentials given here are never recorded.
#[derive(Clone, Debug, clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials, USER:PASSWORD (as skopeo's --creds); else the usual auth files.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Auth file (containers auth.json or docker config.json format) to read credentials from.
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Verify the registry's TLS certificate (`--tls-verify=false` to skip; only when asked).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub tls_verify: bool,
    /// Talk plain HTTP to the registry (no TLS at all).
    #[arg(long)]
    pub plain_http: bool,
    /// Directory of extra CA certificates (`*.crt`, as containers' certs.d directories).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// A PEM file of extra CA certificates for the registry.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Give up on a registry operation (one request or one whole push) after this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub registry_timeout: u64,
}

/// An image reference as the user wrote it, parsed.
#[derive(Clone, Debug)]
pub struct ImageRef {
    pub text: String,
    pub reference: Reference,
}

impl ImageRef {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let reference: Reference = text.parse().with_context(|| {
            format!("{text}: not an image reference (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:…)")
        })?;
        if let Some(digest) = reference.digest() {
            check_digest(digest).with_context(|| format!("{text}: bad digest"))?;
        }
        Ok(ImageRef {
            text: text.to_owned(),
            reference,
        })
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_owned(),
        )
    }

    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            tag.to_owned(),
        )
    }
}

/// `sha256:` and 64 lowercase hex digits: the only digests oci-attest reads or writes.
pub fn check_digest(digest: &str) -> anyhow::Result<()> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        _ => bail!("{digest:?} is not a sha256 digest"),
    }
}

/// One repository on one registry, with credentials resolved.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    client: oci_client::Client,
    auth: RegistryAuth,
    deadline: Duration,
    registry: String,
}

impl Session {
    pub fn open(image: &ImageRef, args: &RegistryArgs) -> anyhow::Result<Self> {
        let registry = image.reference.resolve_registry().to_owned();
        let credentials = auth::lookup(
            &registry,
            image.reference.repository(),
            args.creds.as_deref(),
            args.authfile.as_deref(),
        )?;
        let auth = credentials.map_or(RegistryAuth::Anonymous, |credentials| {
            RegistryAuth::Basic(credentials.username, credentials.password)
        });
        let deadline = Duration::from_secs(args.registry_timeout.max(1));
        let config = ClientConfig {
            protocol: if args.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: !args.tls_verify,
            extra_root_certificates: extra_certificates(&registry, args)?,
            connect_timeout: Some(CONNECT_TIMEOUT.min(deadline)),
            read_timeout: Some(deadline),
            // One request per blob: the envelopes are small, and chunked uploads need more
            // round trips (and more registry quirks) for nothing.
            use_monolithic_push: true,
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config)
            .with_context(|| format!("{registry}: cannot set up the registry client"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        // oci-client attaches credentials only for registries it has stored them for, and only
        // some of its calls store them (the blob and referrers calls do not).
        runtime.block_on(client.store_auth_if_needed(&registry, &auth));
        Ok(Session {
            runtime,
            client,
            auth,
            deadline,
            registry,
        })
    }

    /// Runs `work` (which may drive several registry operations at once) to completion.
    pub fn run<F: std::future::Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// One registry operation, to completion or to the deadline.
    async fn within<T>(
        &self,
        what: &str,
        operation: impl std::future::Future<Output = Result<T, OciDistributionError>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.deadline, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(describe(&self.registry, what, &error)),
            Err(_) => bail!(
                "registry {}: {what}: no answer within {}s (--registry-timeout)",
                self.registry,
                self.deadline.as_secs()
            ),
        }
    }

    fn block_on<T>(
        &self,
        what: &str,
        operation: impl std::future::Future<Output = Result<T, OciDistributionError>>,
    ) -> anyhow::Result<T> {
        self.run(self.within(what, operation))
    }

    /// Authenticates for `operation` on the repository (a no-op on registries without auth).
    pub fn login(&self, reference: &Reference, operation: RegistryOperation) -> anyhow::Result<()> {
        self.block_on(
            "authenticate",
            self.client.auth(reference, &self.auth, operation),
        )
        .map(|_| ())
    }

    /// The manifest at `reference` (tag or digest): its bytes and descriptor, the digest computed
    /// over the bytes and checked against the reference's digest and the registry's header.
    pub fn manifest(&self, reference: &Reference) -> anyhow::Result<(Vec<u8>, Descriptor)> {
        self.manifest_if_exists(reference)?
            .with_context(|| format!("registry {}: {reference}: no such manifest", self.registry))
    }

    /// [`Session::manifest`], or `None` when the registry does not have it.
    pub fn manifest_if_exists(
        &self,
        reference: &Reference,
    ) -> anyhow::Result<Option<(Vec<u8>, Descriptor)>> {
        self.run(self.fetch_manifest(reference))
    }

    /// [`Session::manifest_if_exists`], for use inside [`Session::run`].
    pub async fn fetch_manifest(
        &self,
        reference: &Reference,
    ) -> anyhow::Result<Option<(Vec<u8>, Descriptor)>> {
        let what = format!("read manifest {reference}");
        let pulled = tokio::time::timeout(
            self.deadline,
            self.client
                .pull_manifest_raw(reference, &self.auth, MANIFEST_TYPES),
        )
        .await;
        let (bytes, digest) = match pulled {
            Ok(Ok(pulled)) => pulled,
            Ok(Err(error)) if is_not_found(&error) => return Ok(None),
            Ok(Err(error)) => return Err(describe(&self.registry, &what, &error)),
            Err(_) => bail!(
                "registry {}: {what}: no answer within {}s (--registry-timeout)",
                self.registry,
                self.deadline.as_secs()
            ),
        };
        if bytes.len() > MAX_MANIFEST_BYTES {
            bail!(
                "registry {}: {what}: {} bytes is more than the {MAX_MANIFEST_BYTES}-byte limit for a manifest",
                self.registry,
                bytes.len()
            );
        }
        let computed = format!("sha256:{}", sha256_hex(&bytes));
        if digest != computed {
            bail!(
                "registry {}: {what}: the manifest's digest is {computed}, not {digest}",
                self.registry
            );
        }
        let media_type = super::artifact::manifest_media_type(&bytes)
            .with_context(|| format!("registry {}: {what}", self.registry))?;
        let descriptor = Descriptor {
            media_type,
            digest: computed,
            size: bytes.len() as u64,
        };
        Ok(Some((bytes.to_vec(), descriptor)))
    }

    /// Uploads a blob unless the registry already has it.
    pub fn push_blob(&self, reference: &Reference, bytes: &[u8]) -> anyhow::Result<()> {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let exists = self.block_on(
            &format!("look up blob {digest}"),
            self.client.blob_exists(reference, &digest),
        )?;
        if !exists {
            self.block_on(
                &format!("upload blob {digest}"),
                self.client.push_blob(reference, bytes.to_vec(), &digest),
            )?;
        }
        Ok(())
    }

    /// Stores a manifest under `reference` (a tag, or its own digest).
    pub fn push_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> anyhow::Result<()> {
        let content_type = media_type
            .parse()
            .with_context(|| format!("{media_type:?} is not a valid media type"))?;
        self.block_on(
            &format!("store manifest {reference}"),
            self.client
                .push_manifest_raw(reference, bytes.to_vec(), content_type),
        )
        .map(|_| ())
    }

    /// The referrers of `subject` (a reference by digest): the referrers API where the registry
    /// has it, else the referrers tag-schema index (oci-client falls back on a 404).
    pub fn referrers(
        &self,
        subject: &Reference,
        artifact_type: &str,
    ) -> anyhow::Result<Vec<ImageIndexEntry>> {
        let index = self.block_on(
            &format!("list the referrers of {subject}"),
            self.client.pull_referrers(subject, Some(artifact_type)),
        )?;
        Ok(index.manifests)
    }

    /// The blob `digest` (at most `max` bytes, as its descriptor promised), checked against its
    /// digest while it streams in.
    pub fn blob(&self, reference: &Reference, digest: &str, max: u64) -> anyhow::Result<Vec<u8>> {
        self.run(self.fetch_blob(reference, digest, max))
    }

    /// [`Session::blob`], for use inside [`Session::run`].
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        digest: &str,
        max: u64,
    ) -> anyhow::Result<Vec<u8>> {
        check_digest(digest)?;
        let cap = max.min(MAX_BLOB_BYTES);
        let what = format!("read blob {digest}");
        let registry = &self.registry;
        let read = async {
            let mut stream = self.client.pull_blob_stream(reference, digest).await?;
            if stream.content_length.is_some_and(|length| length > cap) {
                return Ok(Err(format!(
                    "announces {} bytes, more than the {cap} expected",
                    stream.content_length.unwrap_or_default()
                )));
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.stream.next().await {
                let chunk = chunk?;
                if (bytes.len() + chunk.len()) as u64 > cap {
                    return Ok(Err(format!("is longer than the {cap} bytes expected")));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Ok(bytes))
        };
        let bytes = self.within(&what, read).await?.map_err(|problem| {
            anyhow::anyhow!("registry {registry}: {what}: the blob {problem}")
        })?;
        let computed = format!("sha256:{}", sha256_hex(&bytes));
        if computed != digest {
            bail!("registry {registry}: {what}: the content's digest is {computed}");
        }
        Ok(bytes)
    }
}

fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

/// One line naming the registry, the operation and the problem (credentials are never part of
/// oci-client's errors).
fn describe(registry: &str, what: &str, error: &OciDistributionError) -> anyhow::Error {
    let problem = match error {
        OciDistributionError::UnauthorizedError { .. } => {
            "the registry refused the credentials (401 Unauthorized): check --creds or the auth file".to_owned()
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            "the registry refused the credentials: check --creds or the auth file".to_owned()
        }
        OciDistributionError::RequestError(request) => {
            let mut text = request.to_string();
            let mut source = std::error::Error::source(request);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    };
    anyhow::anyhow!("registry {registry}: {what}: {problem}")
}

/// `--ca-file`, the `*.crt` files of `--cert-dir`, and the host's certs.d directories for this
/// registry (`/etc/containers/certs.d/HOST:PORT`, `/etc/docker/certs.d/HOST:PORT`), as
/// containers/image reads them. They are added to the system's roots.
fn extra_certificates(registry: &str, args: &RegistryArgs) -> anyhow::Result<Vec<Certificate>> {
    let mut files = Vec::new();
    if let Some(file) = &args.ca_file {
        files.push(file.clone());
    }
    let mut dirs: Vec<PathBuf> = args.cert_dir.iter().cloned().collect();
    for base in ["/etc/containers/certs.d", "/etc/docker/certs.d"] {
        let dir = Path::new(base).join(registry);
        if dir.is_dir() {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))?;
        let mut crts: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "crt"))
            .collect();
        crts.sort();
        files.extend(crts);
    }
    files
        .into_iter()
        .map(|path| {
            let data = read_certificate(&path)?;
            Ok(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
        })
        .collect()
}

fn read_certificate(path: &Path) -> anyhow::Result<Vec<u8>> {
    const MAX_CERTIFICATE_FILE: u64 = 1 << 20;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if !metadata.is_file() || metadata.len() > MAX_CERTIFICATE_FILE {
        bail!(
            "{}: not a regular file of at most {MAX_CERTIFICATE_FILE} bytes",
            path.display()
        );
    }
    let data = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if !data
        .windows(27)
        .any(|window| window == b"-----BEGIN CERTIFICATE-----")
    {
        bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_digests_are_checked() {
        let image = ImageRef::parse("127.0.0.1:5000/team/app:1").unwrap();
        assert_eq!(image.reference.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(image.reference.repository(), "team/app");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            image.at_digest(&digest).to_string(),
            format!("127.0.0.1:5000/team/app@{digest}")
        );
        assert!(ImageRef::parse("127.0.0.1:5000/app@sha256:abc").is_err());
        assert!(ImageRef::parse("127.0.0.1:5000/app:bad tag").is_err());
        assert!(check_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(check_digest(&format!("sha512:{}", "a".repeat(64))).is_err());
    }
}
