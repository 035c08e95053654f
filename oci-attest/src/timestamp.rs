//! RFC 3161 trusted timestamps over DSSE signatures, stored as witness and cilock store them:
//! each signature of the envelope carries `"timestamps": [{"type": "tsp", "data": "<base64 of
//! the TimeStampToken DER>"}]`, the token's message imprint being the SHA-256 of the raw
//! signature bytes (see `docs/format.md`, "Trusted timestamps").
//!
//! Parsing uses RustCrypto's `cms`, `x509-tsp` and `x509-cert`; the TSA certificate chain and
//! every signature check use `rustls-webpki` (path building, validity at the token's time, the
//! timeStamping extended key usage through the whole path). What no crate does is written here:
//! matching the CMS signer to its certificate, the signed-attribute checks of RFC 5652 §5.4 and
//! RFC 3161's rule that the TSA certificate's EKU extension is critical and holds
//! id-kp-timeStamping alone (go-witness enforces the same).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context};
use cms::cert::x509::Certificate;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use sha2::Digest as _;
use webpki::{EndEntityCert, KeyUsage};
use x509_tsp::TstInfo;

/// The `type` of an RFC 3161 timestamp in a DSSE signature (witness's `TimestampRFC3161`).
pub const TIMESTAMP_TYPE: &str = "tsp";

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
/// id-kp-timeStamping as webpki takes it: the OID's DER value bytes.
const TIME_STAMPING_OID_VALUE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Largest TSA response read: tokens with a certificate chain are a few KiB.
#[cfg(feature = "tracer")]
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// How `verify` trusts timestamps: `--tsa-ca` roots the chain must lead to, `--tsa-cert` the
/// TSA certificates (pinned when no root is given, else extra intermediates), `--tsa-policy`
/// the policy OID the token must name.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TrustArgs {
    /// Root certificate (PEM, repeatable) the TSA's certificate chain must lead to; with it,
    /// a valid timestamp is required.
    #[arg(long, value_name = "PEM")]
    pub tsa_ca: Vec<PathBuf>,
    /// The TSA's certificate (PEM, repeatable; chain files accepted): with no --tsa-ca the
    /// token's signer must be one of these, else they complete the chain.
    #[arg(long, value_name = "PEM")]
    pub tsa_cert: Vec<PathBuf>,
    /// The TSA policy OID the token must name (e.g. 1.2.3.4.1).
    #[arg(long, value_name = "OID")]
    pub tsa_policy: Option<String>,
}

impl TrustArgs {
    /// The trust to check timestamps with, or `None` when no TSA option was given.
    pub fn load(&self) -> anyhow::Result<Option<Trust>> {
        if self.tsa_ca.is_empty() && self.tsa_cert.is_empty() {
            ensure!(
                self.tsa_policy.is_none(),
                "--tsa-policy needs the TSA's certificates: --tsa-ca ROOT.pem or --tsa-cert TSA.pem"
            );
            return Ok(None);
        }
        let read = |paths: &[PathBuf]| -> anyhow::Result<Vec<Vec<u8>>> {
            let mut certificates = Vec::new();
            for path in paths {
                certificates.extend(read_pem_certificates(path)?);
            }
            Ok(certificates)
        };
        let policy = self
            .tsa_policy
            .as_deref()
            .map(|text| {
                ObjectIdentifier::new(text)
                    .map_err(|error| anyhow::anyhow!("--tsa-policy {text:?}: not an OID: {error}"))
            })
            .transpose()?;
        Ok(Some(Trust {
            roots: read(&self.tsa_ca)?,
            certificates: read(&self.tsa_cert)?,
            policy,
        }))
    }
}

/// Certificates (DER) trusted for timestamps.
#[derive(Clone, Debug)]
pub struct Trust {
    pub roots: Vec<Vec<u8>>,
    pub certificates: Vec<Vec<u8>>,
    pub policy: Option<ObjectIdentifier>,
}

/// The certificates of a PEM file, as DER; a file without one is an error.
pub fn read_pem_certificates(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = crate::policy::read_capped(path, 1 << 20)?;
    pem_certificates(&text).with_context(|| format!("{}", path.display()))
}

/// Every `CERTIFICATE` block of a PEM text, as DER.
pub fn pem_certificates(text: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let certificates = Certificate::load_pem_chain(text)
        .map_err(|error| anyhow::anyhow!("not PEM certificates: {error}"))?;
    ensure!(!certificates.is_empty(), "no CERTIFICATE block");
    certificates
        .iter()
        .map(|certificate| Ok(certificate.to_der()?))
        .collect()
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// `genTime`, RFC 3339.
    pub time: String,
    #[serde(skip)]
    pub at: SystemTime,
    /// The TSA policy OID.
    pub policy: String,
    /// The signing certificate's subject.
    pub tsa: String,
    pub serial: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("the timestamp token is malformed: {0}")]
    Malformed(String),
    #[error("the timestamp is over other data (its message imprint does not match the signature)")]
    ImprintMismatch,
    #[error("the timestamp token's signature does not verify: {0}")]
    BadSignature(String),
    #[error("the TSA certificate {0}")]
    Certificate(String),
    #[error("the TSA certificate chain does not verify at the timestamp's time: {0}")]
    Chain(String),
    #[error("the timestamp names TSA policy {found}, not the required {expected}")]
    Policy { found: String, expected: String },
}

fn malformed(what: impl std::fmt::Display) -> TimestampError {
    TimestampError::Malformed(what.to_string())
}

/// The hash a digest algorithm OID names, applied to `data`.
fn digest(algorithm: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    match *algorithm {
        ID_SHA256 => Some(sha2::Sha256::digest(data).to_vec()),
        ID_SHA384 => Some(sha2::Sha384::digest(data).to_vec()),
        ID_SHA512 => Some(sha2::Sha512::digest(data).to_vec()),
        _ => None,
    }
}

/// The token's TSTInfo and SignedData, without checking any signature.
fn open(token: &[u8]) -> Result<(SignedData, TstInfo, Vec<u8>), TimestampError> {
    let content = ContentInfo::from_der(token).map_err(malformed)?;
    if content.content_type != ID_SIGNED_DATA {
        return Err(malformed(format!(
            "content type {} is not SignedData",
            content.content_type
        )));
    }
    let signed = content
        .content
        .decode_as::<SignedData>()
        .map_err(malformed)?;
    let encapsulated = &signed.encap_content_info;
    if encapsulated.econtent_type != ID_CT_TST_INFO {
        return Err(malformed(format!(
            "encapsulated content {} is not TSTInfo",
            encapsulated.econtent_type
        )));
    }
    let tst_bytes = encapsulated
        .econtent
        .as_ref()
        .ok_or_else(|| malformed("no TSTInfo"))?
        .decode_as::<OctetString>()
        .map_err(malformed)?
        .into_bytes();
    let tst = TstInfo::from_der(&tst_bytes).map_err(malformed)?;
    Ok((signed, tst, tst_bytes))
}

/// The signer's certificate among the token's and the trusted ones.
fn signer_certificate(
    signer: &SignerInfo,
    candidates: &[Vec<u8>],
) -> Result<(Vec<u8>, Certificate), TimestampError> {
    for der in candidates {
        let Ok(certificate) = Certificate::from_der(der) else {
            continue;
        };
        let tbs = &certificate.tbs_certificate;
        let matches = match &signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                id.issuer == tbs.issuer && id.serial_number == tbs.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(id) => tbs
                .extensions
                .iter()
                .flatten()
                .filter(|extension| extension.extn_id == ID_CE_SUBJECT_KEY_IDENTIFIER)
                .filter_map(|extension| OctetString::from_der(extension.extn_value.as_bytes()).ok())
                .any(|key_id| key_id == id.0),
        };
        if matches {
            return Ok((der.clone(), certificate));
        }
    }
    Err(TimestampError::Certificate(
        "that signed the token is neither in the token nor among --tsa-cert".to_owned(),
    ))
}

/// RFC 3161 §2.3: the extended key usage extension is present, critical, and names
/// id-kp-timeStamping and nothing else.
fn check_sole_critical_time_stamping(certificate: &Certificate) -> Result<(), TimestampError> {
    let refuse = |why: &str| TimestampError::Certificate(why.to_owned());
    let extension = certificate
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|extension| extension.extn_id == ID_CE_EXT_KEY_USAGE)
        .ok_or_else(|| refuse("has no extended key usage (RFC 3161 requires timeStamping)"))?;
    if !extension.critical {
        return Err(refuse(
            "extended key usage extension is not marked critical (RFC 3161 requires it)",
        ));
    }
    let usages = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(extension.extn_value.as_bytes())
        .map_err(|error| refuse(&format!("extended key usage does not decode: {error}")))?;
    if usages.0 != [ID_KP_TIME_STAMPING] {
        let listed: Vec<String> = usages.0.iter().map(ToString::to_string).collect();
        return Err(refuse(&format!(
            "extended key usage must be id-kp-timeStamping alone, it is [{}]",
            listed.join(", ")
        )));
    }
    Ok(())
}

/// Signature algorithms that may have made a CMS signature with this digest.
fn signature_algorithms(
    digest_algorithm: &ObjectIdentifier,
    signature_algorithm: &ObjectIdentifier,
) -> Vec<&'static dyn SignatureVerificationAlgorithm> {
    use webpki::ring as algs;
    if *signature_algorithm == ID_ED25519 {
        return vec![algs::ED25519];
    }
    match *digest_algorithm {
        ID_SHA256 => vec![
            algs::RSA_PKCS1_2048_8192_SHA256,
            algs::ECDSA_P256_SHA256,
            algs::ECDSA_P384_SHA256,
        ],
        ID_SHA384 => vec![
            algs::RSA_PKCS1_2048_8192_SHA384,
            algs::ECDSA_P384_SHA384,
            algs::ECDSA_P256_SHA384,
        ],
        ID_SHA512 => vec![algs::RSA_PKCS1_2048_8192_SHA512],
        _ => Vec::new(),
    }
}

/// Every algorithm the chain's certificates may be signed with.
const CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The one value of a signed attribute.
fn attribute(signer: &SignerInfo, oid: ObjectIdentifier) -> Option<&der::Any> {
    let attribute = signer
        .signed_attrs
        .as_ref()?
        .iter()
        .find(|attribute| attribute.oid == oid)?;
    match attribute.values.as_slice() {
        [value] => Some(value),
        _ => None,
    }
}

/// Checks `token` as a timestamp over `signed` under `trust`.
pub fn verify(token: &[u8], signed: &[u8], trust: &Trust) -> Result<Verified, TimestampError> {
    let (signed_data, tst, tst_bytes) = open(token)?;
    let imprint = &tst.message_imprint;
    let expected = digest(&imprint.hash_algorithm.oid, signed).ok_or_else(|| {
        malformed(format!(
            "unsupported message imprint hash {}",
            imprint.hash_algorithm.oid
        ))
    })?;
    if imprint.hashed_message.as_bytes() != expected.as_slice() {
        return Err(TimestampError::ImprintMismatch);
    }
    let signer = match signed_data.signer_infos.0.as_slice() {
        [signer] => signer,
        others => {
            return Err(malformed(format!(
                "{} signers (a timestamp token has exactly one)",
                others.len()
            )))
        }
    };
    let embedded: Vec<Vec<u8>> = signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(certificate) => certificate.to_der().ok(),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    let candidates: Vec<Vec<u8>> = embedded
        .iter()
        .chain(&trust.certificates)
        .cloned()
        .collect();
    let (leaf_der, leaf) = signer_certificate(signer, &candidates)?;
    check_sole_critical_time_stamping(&leaf)?;

    // RFC 5652 §5.4: the signature covers the DER of the signed attributes, which must name the
    // TSTInfo content type and carry its digest.
    let content_type = attribute(signer, ID_CONTENT_TYPE)
        .and_then(|value| value.decode_as::<ObjectIdentifier>().ok());
    if content_type != Some(ID_CT_TST_INFO) {
        return Err(TimestampError::BadSignature(
            "the signed content-type attribute is not TSTInfo".to_owned(),
        ));
    }
    let content_digest = digest(&signer.digest_alg.oid, &tst_bytes).ok_or_else(|| {
        malformed(format!(
            "unsupported digest algorithm {}",
            signer.digest_alg.oid
        ))
    })?;
    let message_digest = attribute(signer, ID_MESSAGE_DIGEST)
        .and_then(|value| value.decode_as::<OctetString>().ok());
    if message_digest.as_ref().map(OctetString::as_bytes) != Some(content_digest.as_slice()) {
        return Err(TimestampError::BadSignature(
            "the signed message-digest attribute does not match the TSTInfo".to_owned(),
        ));
    }
    let signed_attributes = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| TimestampError::BadSignature("no signed attributes".to_owned()))?
        .to_der()
        .map_err(malformed)?;
    let leaf_cert = CertificateDer::from(leaf_der.as_slice());
    let end_entity = EndEntityCert::try_from(&leaf_cert)
        .map_err(|error| TimestampError::Certificate(format!("is not usable: {error:?}")))?;
    let signature = signer.signature.as_bytes();
    let algorithms = signature_algorithms(&signer.digest_alg.oid, &signer.signature_algorithm.oid);
    if !algorithms.iter().any(|algorithm| {
        end_entity
            .verify_signature(*algorithm, &signed_attributes, signature)
            .is_ok()
    }) {
        return Err(TimestampError::BadSignature(format!(
            "the signature ({} with {}) does not verify with the TSA certificate's key",
            signer.signature_algorithm.oid, signer.digest_alg.oid
        )));
    }

    let at = tst.gen_time.to_system_time();
    check_chain(&end_entity, &leaf_der, &embedded, trust, at)?;
    if let Some(expected) = &trust.policy {
        if &tst.policy != expected {
            return Err(TimestampError::Policy {
                found: tst.policy.to_string(),
                expected: expected.to_string(),
            });
        }
    }
    Ok(Verified {
        time: crate::rfc3339::rfc3339_nano(at),
        at,
        policy: tst.policy.to_string(),
        tsa: leaf.tbs_certificate.subject.to_string(),
        serial: hex::encode(tst.serial_number.as_bytes()),
    })
}

/// The chain from the signer to a `--tsa-ca` root at `at`, every certificate valid for
/// timeStamping; with no root, the signer must be one of the pinned `--tsa-cert` certificates
/// and valid at `at`.
fn check_chain(
    end_entity: &EndEntityCert<'_>,
    leaf_der: &[u8],
    embedded: &[Vec<u8>],
    trust: &Trust,
    at: SystemTime,
) -> Result<(), TimestampError> {
    let time = UnixTime::since_unix_epoch(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    );
    if trust.roots.is_empty() {
        if !trust.certificates.iter().any(|pinned| pinned == leaf_der) {
            return Err(TimestampError::Certificate(
                "that signed the token is not one of --tsa-cert (give --tsa-ca to trust a chain)"
                    .to_owned(),
            ));
        }
        let leaf = Certificate::from_der(leaf_der).map_err(malformed)?;
        let validity = &leaf.tbs_certificate.validity;
        let since_epoch = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        if since_epoch < validity.not_before.to_unix_duration()
            || since_epoch > validity.not_after.to_unix_duration()
        {
            return Err(TimestampError::Chain(
                "the timestamp's time is outside the TSA certificate's validity".to_owned(),
            ));
        }
        return Ok(());
    }
    let root_ders: Vec<CertificateDer<'_>> = trust
        .roots
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .map(|root| {
            webpki::anchor_from_trusted_cert(root)
                .map(|anchor| anchor.to_owned())
                .map_err(|error| TimestampError::Chain(format!("a --tsa-ca root: {error:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let intermediates: Vec<CertificateDer<'_>> = embedded
        .iter()
        .chain(&trust.certificates)
        .filter(|der| der.as_slice() != leaf_der)
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    end_entity
        .verify_for_usage(
            CHAIN_ALGORITHMS,
            &anchors,
            &intermediates,
            time,
            KeyUsage::required(TIME_STAMPING_OID_VALUE),
            None,
            None,
        )
        .map(drop)
        .map_err(|error| TimestampError::Chain(format!("{error:?}")))
}

/// The request for a token over `data` (SHA-256 imprint, the TSA's certificate asked for) and
/// its nonce.
#[cfg(feature = "tracer")]
fn request_for(data: &[u8]) -> anyhow::Result<(Vec<u8>, der::asn1::Int)> {
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    nonce[0] &= 0x7f;
    nonce[0] |= 0x01;
    let nonce = der::asn1::Int::new(&nonce)?;
    let request = x509_tsp::TimeStampReq {
        version: x509_tsp::TspVersion::V1,
        message_imprint: x509_tsp::MessageImprint {
            hash_algorithm: spki::AlgorithmIdentifier {
                oid: ID_SHA256,
                parameters: Some(der::Any::null()),
            },
            hashed_message: OctetString::new(sha2::Sha256::digest(data).to_vec())?,
        },
        req_policy: None,
        nonce: Some(nonce.clone()),
        cert_req: true,
        extensions: None,
    };
    Ok((request.to_der()?, nonce))
}

/// The token inside a TSA response, after checking it answers `request`'s imprint and nonce.
#[cfg(feature = "tracer")]
fn token_from_response(
    response: &[u8],
    data: &[u8],
    nonce: &der::asn1::Int,
) -> anyhow::Result<Vec<u8>> {
    let response = x509_tsp::TimeStampResp::from_der(response)
        .context("the response is not a TimeStampResp")?;
    use cmpv2::status::PkiStatus;
    let status = response.status.status;
    ensure!(
        matches!(status, PkiStatus::Accepted | PkiStatus::GrantedWithMods),
        "the TSA refused the request (status {status:?})"
    );
    let token = response
        .time_stamp_token
        .context("the response grants but carries no token")?
        .to_der()?;
    let (_, tst, _) = open(&token)?;
    ensure!(
        tst.message_imprint.hashed_message.as_bytes() == sha2::Sha256::digest(data).as_slice(),
        "the TSA timestamped other data than the signature"
    );
    ensure!(
        tst.nonce.as_ref() == Some(nonce),
        "the TSA's token does not carry the request's nonce"
    );
    Ok(token)
}

/// Asks the TSA at `url` for a token over `data` (witness sends the same request: SHA-256,
/// certReq). Used by `run` and `sign --timestamp-servers`.
#[cfg(feature = "tracer")]
pub fn request(url: &str, data: &[u8], timeout: Duration) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let (request, nonce) = request_for(data)?;
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .context("cannot build the HTTP client")?;
    let response = client
        .post(url)
        .header("Content-Type", "application/timestamp-query")
        .body(request)
        .send()
        .with_context(|| format!("timestamp server {url}: request failed"))?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("timestamp server {url} answered {status}");
    }
    let mut body = Vec::new();
    response
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("timestamp server {url}: cannot read the response"))?;
    ensure!(
        body.len() as u64 <= MAX_RESPONSE_BYTES,
        "timestamp server {url}: the response is larger than {} KiB",
        MAX_RESPONSE_BYTES >> 10
    );
    token_from_response(&body, data, &nonce).with_context(|| format!("timestamp server {url}"))
}

/// Timeout of one request to a timestamp server.
#[cfg(feature = "tracer")]
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `--timestamp-servers`: refuses anything but http(s) URLs before anything is signed.
pub fn check_servers(servers: &[String]) -> anyhow::Result<()> {
    for server in servers {
        ensure!(
            server.starts_with("http://") || server.starts_with("https://"),
            "--timestamp-servers {server:?}: not an http:// or https:// URL"
        );
    }
    Ok(())
}

/// One token per server over the signature bytes, in the order given.
#[cfg(feature = "tracer")]
pub fn tokens(servers: &[String], signature: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    servers
        .iter()
        .map(|server| request(server, signature, REQUEST_TIMEOUT))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "tracer")]
    #[test]
    fn requests_carry_a_sha256_imprint_a_nonce_and_ask_for_the_certificate() {
        let (bytes, nonce) = request_for(b"signature").unwrap();
        let request = x509_tsp::TimeStampReq::from_der(&bytes).unwrap();
        assert_eq!(request.message_imprint.hash_algorithm.oid, ID_SHA256);
        assert_eq!(
            request.message_imprint.hashed_message.as_bytes(),
            sha2::Sha256::digest(b"signature").as_slice()
        );
        assert!(request.cert_req);
        assert_eq!(request.nonce, Some(nonce));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let trust = Trust {
            roots: Vec::new(),
            certificates: Vec::new(),
            policy: None,
        };
        for token in [&b""[..], b"\x30\x00", b"\x30\x80\x00\x00", &[0x30; 64]] {
            assert!(matches!(
                verify(token, b"x", &trust),
                Err(TimestampError::Malformed(_))
            ));
        }
        assert!(pem_certificates(b"no pem here").is_err());
    }
}
