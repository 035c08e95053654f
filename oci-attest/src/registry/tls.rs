//! TLS to registries as skopeo and curl do it: the platform's roots plus the CA certificates the
//! user named (`--ca-file`, `--cert-dir`, the certs.d directories), a pinned self-signed server
//! certificate accepted as its own anchor, and `--tls-verify=false` meaning no verification.
//!
//! The one thing rustls does not do by itself: a certificate made as the registry docs say
//! (`openssl req -x509 …`) carries `CA:TRUE`, and webpki refuses a CA certificate as the server's
//! own (`CaUsedAsEndEntity`) even when it is a trusted root. OpenSSL (curl, skopeo's Go TLS)
//! accepts a trusted self-signed certificate presented by the server. [`PinnedOrPlatform`] does
//! the same, and only for that: the certificate must be byte-for-byte one the user gave, the
//! platform verifier must have failed on exactly `CaUsedAsEndEntity` (webpki checks the validity
//! period before basic constraints, so the dates were good), and the name is checked here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Largest certificate file read.
const MAX_CERTIFICATE_FILE: u64 = 1 << 20;

/// How the server's certificate is checked.
pub enum Verification {
    /// Platform roots plus `extra` (PEM files the user named or certs.d holds).
    Verify { extra: Vec<PathBuf> },
    /// `--tls-verify=false` or an `insecure` registries.conf entry: any certificate.
    Skip,
}

/// The rustls client configuration for one registry.
pub fn client_config(verification: &Verification) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match verification {
        Verification::Skip => Arc::new(Unverified(provider.clone())),
        Verification::Verify { extra } => {
            let mut pinned = Vec::new();
            for path in extra {
                pinned.extend(read_certificates(path)?);
            }
            let platform = rustls_platform_verifier::Verifier::new_with_extra_roots(
                pinned.iter().cloned(),
                provider.clone(),
            )
            .context("cannot load the system's CA certificates")?;
            Arc::new(PinnedOrPlatform {
                platform: Arc::new(platform),
                pinned,
            })
        }
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no usable TLS protocol version")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `--ca-file`, the `*.crt` files of `--cert-dir`, and the certs.d directories for this
/// registry, as containers/image reads them: `/etc/containers/certs.d/HOST:PORT`,
/// `~/.config/containers/certs.d/HOST:PORT`, `/etc/docker/certs.d/HOST:PORT`.
pub fn extra_certificate_files(
    registry: &str,
    ca_file: Option<&Path>,
    cert_dir: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = ca_file.map(Path::to_path_buf).into_iter().collect();
    let mut dirs: Vec<PathBuf> = cert_dir.map(Path::to_path_buf).into_iter().collect();
    let mut bases = vec![PathBuf::from("/etc/containers/certs.d")];
    if let Some(home) = std::env::var_os("HOME") {
        bases.push(PathBuf::from(home).join(".config/containers/certs.d"));
    }
    bases.push(PathBuf::from("/etc/docker/certs.d"));
    dirs.extend(
        bases
            .into_iter()
            .map(|base| base.join(registry))
            .filter(|dir| dir.is_dir()),
    );
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
    Ok(files)
}

/// The PEM certificates in `path` (a regular file of bounded size holding at least one).
fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if !metadata.is_file() || metadata.len() > MAX_CERTIFICATE_FILE {
        bail!(
            "{}: not a regular file of at most {MAX_CERTIFICATE_FILE} bytes",
            path.display()
        );
    }
    let data = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
    if certificates.is_empty() {
        bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(certificates)
}

/// The platform verifier (system roots + the user's certificates), plus the one exception
/// described at the top of this file.
#[derive(Debug)]
struct PinnedOrPlatform {
    platform: Arc<rustls_platform_verifier::Verifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrPlatform {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let error = match self.platform.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(error) => error,
        };
        let pinned = self
            .pinned
            .iter()
            .any(|certificate| certificate.as_ref() == end_entity.as_ref());
        if !pinned || !is_ca_used_as_end_entity(&error) {
            return Err(error);
        }
        let certificate = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        certificate
            .verify_is_valid_for_subject_name(server_name)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.platform.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.platform.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.platform.supported_verify_schemes()
    }
}

fn is_ca_used_as_end_entity(error: &rustls::Error) -> bool {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            )
        }
        _ => false,
    }
}

/// `--tls-verify=false`: any certificate is accepted; the handshake signatures are still
/// checked against the presented key, so the connection is at least to its holder.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a failed connection says about TLS, found anywhere in its error chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server answered the handshake with something that is not TLS (plain HTTP).
    NotTls,
    /// The server's certificate was not accepted.
    Certificate,
}

pub fn classify(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidMessage(_) => Some(TlsFailure::NotTls),
                rustls::Error::InvalidCertificate(_) => Some(TlsFailure::Certificate),
                _ => None,
            };
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = classify(inner) {
                    return Some(found);
                }
            }
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_files_must_hold_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate").unwrap();
        let error = read_certificates(&empty).unwrap_err();
        assert!(
            format!("{error:#}").contains("no PEM certificate"),
            "{error:#}"
        );
        assert!(read_certificates(&dir.path().join("missing.crt")).is_err());
        assert!(client_config(&Verification::Verify {
            extra: vec![empty.clone()]
        })
        .is_err());
        assert!(client_config(&Verification::Skip).is_ok());
    }

    #[test]
    fn cert_dirs_contribute_their_crt_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.crt", "a.crt", "client.cert", "client.key"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let files = extra_certificate_files(
            "no-such-registry.invalid:1",
            Some(Path::new("/x/ca.pem")),
            Some(dir.path()),
        )
        .unwrap();
        assert_eq!(
            files,
            vec![
                PathBuf::from("/x/ca.pem"),
                dir.path().join("a.crt"),
                dir.path().join("b.crt")
            ]
        );
    }
}
