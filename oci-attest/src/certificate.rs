//! X.509 certificates of a file signing key (`--signer-file-cert-path` and
//! `--signer-file-intermediate-paths`, as in witness), recorded in the DSSE signature the way
//! witness records them: `certificate` holds the leaf's PEM and `intermediates` the chain's, each
//! as base64 in the JSON (Go writes its `[]byte` fields so).
//!
//! The leaf must certify the signing key itself: a certificate for another key is refused
//! before the command runs, since a verifier would otherwise trust the wrong identity.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pkcs8::der::{DecodePem as _, Encode as _, EncodePem as _};
use pkcs8::LineEnding;
use serde::Serialize;
use x509_cert::Certificate;

use crate::exit::{failure, FailureKind};
use crate::keys::{self, PublicKey};

/// The signer certificate options of `run` and `sign` (witness's spellings).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CertArgs {
    /// X.509 certificate (PEM) of the signing key, recorded in the envelope's signature as
    /// witness records it; further certificates in the same file count as intermediates.
    #[arg(long = "signer-file-cert-path", value_name = "CERT.pem")]
    pub cert: Option<PathBuf>,
    /// Intermediate certificates (PEM) recorded with the signer certificate (comma separated
    /// or repeated).
    #[arg(
        long = "signer-file-intermediate-paths",
        value_name = "CERT.pem",
        value_delimiter = ',',
        requires = "cert"
    )]
    pub intermediates: Vec<PathBuf>,
}

impl CertArgs {
    /// The chain to record for `key`, if a certificate was given.
    pub fn load(&self, key: &PublicKey) -> anyhow::Result<Option<CertChain>> {
        self.cert
            .as_deref()
            .map(|cert| CertChain::load(cert, &self.intermediates, key))
            .transpose()
    }
}

/// The certificates recorded beside a signature, as PEM text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertChain {
    pub leaf: String,
    pub intermediates: Vec<String>,
}

impl CertChain {
    /// Reads the leaf (the first certificate of `cert_path`; any further ones in that file
    /// join the intermediates) and the intermediates, and checks that the leaf certifies `key`.
    pub fn load(
        cert_path: &Path,
        intermediate_paths: &[PathBuf],
        key: &PublicKey,
    ) -> anyhow::Result<CertChain> {
        let mut certificates = read_certificates(cert_path)?.into_iter();
        let leaf = certificates.next().ok_or_else(|| {
            failure(
                FailureKind::Key,
                format!("{}: no certificate in the file", cert_path.display()),
            )
        })?;
        let certified = certified_key(&leaf).map_err(|error| {
            failure(
                FailureKind::Key,
                format!("{}: {error:#}", cert_path.display()),
            )
        })?;
        if certified != *key {
            return Err(failure(
                FailureKind::Key,
                format!(
                    "{}: the certificate is for another key (keyid {}), not the signing key \
                     (keyid {})",
                    cert_path.display(),
                    certified.keyid(),
                    key.keyid()
                ),
            ));
        }
        let mut intermediates: Vec<Certificate> = certificates.collect();
        for path in intermediate_paths {
            intermediates.extend(read_certificates(path)?);
        }
        Ok(CertChain {
            leaf: to_pem(&leaf)?,
            intermediates: intermediates.iter().map(to_pem).collect::<Result<_, _>>()?,
        })
    }
}

/// What `verify` shows of a recorded certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    #[serde(rename = "notBefore")]
    pub not_before: String,
    #[serde(rename = "notAfter")]
    pub not_after: String,
    /// Whether the certificate's key is the key the signature verified with.
    #[serde(rename = "certifiesKey")]
    pub certifies_key: bool,
    pub intermediates: usize,
}

impl CertFacts {
    /// The facts of the leaf PEM `pem`, checked against the verifying `key`.
    pub fn of(pem: &[u8], intermediates: usize, key: &PublicKey) -> anyhow::Result<CertFacts> {
        let certificate = Certificate::from_pem(pem).context("not a PEM certificate")?;
        let tbs = &certificate.tbs_certificate;
        Ok(CertFacts {
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            not_before: tbs.validity.not_before.to_string(),
            not_after: tbs.validity.not_after.to_string(),
            certifies_key: certified_key(&certificate).is_ok_and(|certified| certified == *key),
            intermediates,
        })
    }
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<Certificate>> {
    let text = keys::read_small_file(path, "certificate file")?;
    let certificates = Certificate::load_pem_chain(&text).map_err(|error| {
        failure(
            FailureKind::Key,
            format!("{}: not a PEM X.509 certificate: {error}", path.display()),
        )
    })?;
    if certificates.is_empty() {
        return Err(failure(
            FailureKind::Key,
            format!("{}: no certificate in the file", path.display()),
        ));
    }
    Ok(certificates)
}

fn certified_key(certificate: &Certificate) -> anyhow::Result<PublicKey> {
    let spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .context("cannot encode the certificate's public key")?;
    PublicKey::from_spki_der(&spki).map_err(|problem| anyhow::anyhow!("certificate key: {problem}"))
}

fn to_pem(certificate: &Certificate) -> anyhow::Result<String> {
    certificate
        .to_pem(LineEnding::LF)
        .context("cannot encode a certificate as PEM")
}
