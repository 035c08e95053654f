//! Signing keys: loading PEM private and public keys, key ids, signing and verifying raw
//! messages, key generation.
//!
//! Supported: Ed25519, ECDSA P-256 and P-384, RSA (RSASSA-PSS with SHA-256), as witness and
//! cilock sign. Private keys come as PKCS#8 (plain or passphrase-encrypted), PKCS#1 (RSA) or
//! SEC1 (EC); public keys as SubjectPublicKeyInfo (or PKCS#1 for RSA). Every way a key file can
//! be unusable has its own message, so a CI log says what to fix.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::path::Path;

use anyhow::Context;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use pkcs8::der::asn1::ObjectIdentifier;
use pkcs8::der::pem;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand_core::OsRng;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest as _, Sha256};
use spki::{DecodePublicKey, EncodePublicKey};

use crate::digest::sha256_hex;
use crate::exit::{failure, FailureKind};

/// PBKDF2 rounds of keys `keygen --passphrase-file` encrypts (OWASP's figure for SHA-256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// Environment variable holding the passphrase of an encrypted key (the passphrase file wins).
pub const PASSPHRASE_ENV: &str = "OCI_ATTEST_KEY_PASSPHRASE";

/// Key files are a few KiB; anything much larger is not a key and is not read whole.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// RSA moduli below this are refused: they no longer protect a signature.
const MIN_RSA_BITS: usize = 2048;
/// The largest RSA key ring signs with; the rsa crate, which has no such limit, is not used
/// for signing (see [`RsaSigner`]).
const MAX_RSA_SIGNING_BITS: usize = 4096;

const RSA_BITS_GENERATED: usize = 3072;

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Readable names for algorithms and curves that people do try to use, for the error message.
fn algorithm_name(oid: ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.3.101.113" => "Ed448",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS-restricted RSA",
        "1.3.132.0.10" => "ECDSA secp256k1",
        "1.3.132.0.35" => "ECDSA P-521",
        "1.2.840.10045.3.1.1" => "ECDSA P-192",
        "1.3.132.0.33" => "ECDSA P-224",
        "1.3.36.3.3.2.8.1.1.7" => "ECDSA brainpoolP256r1",
        "1.2.643.7.1.1.1.1" => "GOST R 34.10-2012",
        _ => return format!("with OID {oid}"),
    };
    name.to_owned()
}

/// The signature algorithms oci-attest can sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    Ed25519,
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    #[value(name = "ecdsa-p384")]
    EcdsaP384,
    Rsa,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Ed25519 => "Ed25519",
            Algorithm::EcdsaP256 => "ECDSA P-256",
            Algorithm::EcdsaP384 => "ECDSA P-384",
            Algorithm::Rsa => "RSA-PSS",
        })
    }
}

/// Why a key file cannot be used (the path is added by the caller).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyProblem {
    #[error("not a PEM key file (no -----BEGIN ...----- block found)")]
    NotPem,
    #[error("holds a public key ({0}); signing needs the private key")]
    PublicKeyGiven(String),
    #[error("holds a private key; verifying needs the public key (the .pub file)")]
    PrivateKeyGiven,
    #[error("unsupported key algorithm: {0} (supported: Ed25519, ECDSA P-256/P-384, RSA)")]
    UnsupportedAlgorithm(String),
    #[error("unsupported PEM block `{0}`")]
    UnsupportedFormat(String),
    #[error(
        "encrypted private key but no passphrase given \
         (use --signer-file-key-passphrase-path or {PASSPHRASE_ENV})"
    )]
    PassphraseMissing,
    #[error("wrong passphrase for the encrypted private key")]
    WrongPassphrase,
    #[error(
        "legacy OpenSSL-encrypted PEM (Proc-Type header) is not supported; \
         convert it with `openssl pkcs8 -topk8 -in KEY -out KEY.p8`"
    )]
    LegacyEncryption,
    #[error("RSA key of {0} bits is too small (at least {MIN_RSA_BITS} bits)")]
    RsaTooSmall(usize),
    #[error("RSA key of {0} bits is too large to sign with (at most {MAX_RSA_SIGNING_BITS} bits)")]
    RsaTooLarge(usize),
    #[error("malformed {label} block: {detail}")]
    Malformed { label: String, detail: String },
}

fn malformed(label: &str, detail: impl fmt::Display) -> KeyProblem {
    KeyProblem::Malformed {
        label: label.to_owned(),
        detail: detail.to_string(),
    }
}

/// A public key able to verify signatures.
#[derive(Clone, Debug, PartialEq)]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Ed25519(_) => Algorithm::Ed25519,
            PublicKey::P256(_) => Algorithm::EcdsaP256,
            PublicKey::P384(_) => Algorithm::EcdsaP384,
            PublicKey::Rsa(_) => Algorithm::Rsa,
        }
    }

    /// The SubjectPublicKeyInfo PEM, byte-identical to `openssl pkey -pubout`.
    pub fn to_pem(&self) -> String {
        let encoded = match self {
            PublicKey::Ed25519(key) => key.to_public_key_pem(LineEnding::LF),
            PublicKey::P256(key) => key.to_public_key_pem(LineEnding::LF),
            PublicKey::P384(key) => key.to_public_key_pem(LineEnding::LF),
            PublicKey::Rsa(key) => key.to_public_key_pem(LineEnding::LF),
        };
        // Encoding a key we hold in memory cannot fail (fixed-size structures, valid OIDs).
        encoded.unwrap_or_else(|error| unreachable!("encoding a valid public key: {error}"))
    }

    /// The DSSE key id: lowercase hex SHA-256 of [`PublicKey::to_pem`] (as witness computes it).
    pub fn keyid(&self) -> String {
        sha256_hex(self.to_pem().as_bytes())
    }

    /// Does `signature` sign `message` (DSSE: the PAE) under this key?
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            PublicKey::P256(key) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(&Sha256::digest(message), &sig).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(&Sha256::digest(message), &sig).is_ok()),
            PublicKey::Rsa(key) => verify_rsa_pss_any_salt(key, message, signature),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo (the key inside an X.509 certificate).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyProblem> {
        public_from_spki(der)
    }

    /// Parses the first public-key PEM block of `text`.
    pub fn from_pem(text: &[u8]) -> Result<PublicKey, KeyProblem> {
        let block = first_key_block(text)?;
        match block.label.as_str() {
            "PUBLIC KEY" => public_from_spki(&block.der),
            "RSA PUBLIC KEY" => rsa::RsaPublicKey::from_pkcs1_der(&block.der)
                .map_err(|error| malformed(&block.label, error))
                .and_then(checked_rsa_public),
            label if is_private_label(label) => Err(KeyProblem::PrivateKeyGiven),
            label => Err(KeyProblem::UnsupportedFormat(label.to_owned())),
        }
    }
}

fn public_from_spki(der: &[u8]) -> Result<PublicKey, KeyProblem> {
    let label = "PUBLIC KEY";
    let info = spki::SubjectPublicKeyInfoRef::try_from(der).map_err(|e| malformed(label, e))?;
    let oid = info.algorithm.oid;
    if oid == OID_ED25519 {
        ed25519_dalek::VerifyingKey::from_public_key_der(der)
            .map(PublicKey::Ed25519)
            .map_err(|error| malformed(label, error))
    } else if oid == OID_EC_PUBLIC_KEY {
        match info.algorithm.parameters_oid() {
            Ok(OID_P256) => p256::ecdsa::VerifyingKey::from_public_key_der(der)
                .map(PublicKey::P256)
                .map_err(|error| malformed(label, error)),
            Ok(OID_P384) => p384::ecdsa::VerifyingKey::from_public_key_der(der)
                .map(PublicKey::P384)
                .map_err(|error| malformed(label, error)),
            Ok(curve) => Err(KeyProblem::UnsupportedAlgorithm(algorithm_name(curve))),
            Err(error) => Err(malformed(label, error)),
        }
    } else if oid == OID_RSA_ENCRYPTION {
        rsa::RsaPublicKey::from_public_key_der(der)
            .map_err(|error| malformed(label, error))
            .and_then(checked_rsa_public)
    } else {
        Err(KeyProblem::UnsupportedAlgorithm(algorithm_name(oid)))
    }
}

fn checked_rsa_public(key: rsa::RsaPublicKey) -> Result<PublicKey, KeyProblem> {
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(KeyProblem::RsaTooSmall(bits));
    }
    Ok(PublicKey::Rsa(key))
}

/// RSASSA-PSS with SHA-256 and MGF1-SHA-256, accepting the salt length the signer chose.
///
/// Signers differ (we, securesystemslib and witness use the digest length, Go's default is the
/// maximum, some use none) and the rsa crate verifies one given length. Instead of trying every
/// length the modulus allows (hundreds of public-key operations per hostile signature), the
/// salt length is read from the signature itself (RFC 8017 EMSA-PSS-VERIFY steps 7-10 give it)
/// and then checked by the crate: two public-key operations per signature, whatever its salt.
fn verify_rsa_pss_any_salt(key: &rsa::RsaPublicKey, message: &[u8], signature: &[u8]) -> bool {
    let hashed = Sha256::digest(message);
    let Some(salt_len) = pss_salt_len(key, signature, hashed.len()) else {
        return false;
    };
    key.verify(
        rsa::Pss::new_with_salt::<Sha256>(salt_len),
        &hashed,
        signature,
    )
    .is_ok()
}

/// The salt length encoded in an RSA-PSS (SHA-256, MGF1-SHA-256) signature, or `None` when the
/// signature is not a PSS encoding under `key` at all.
fn pss_salt_len(key: &rsa::RsaPublicKey, signature: &[u8], hash_len: usize) -> Option<usize> {
    let modulus = key.n();
    let signature_value = rsa::BigUint::from_bytes_be(signature);
    if signature.len() != key.size() || &signature_value >= modulus {
        return None;
    }
    let em_bits = modulus.bits() - 1;
    let em_len = em_bits.div_ceil(8);
    let encoded = signature_value.modpow(key.e(), modulus).to_bytes_be();
    let mut em = vec![0u8; em_len.checked_sub(encoded.len())?];
    em.extend_from_slice(&encoded);
    if em.len() != em_len || em_len < hash_len + 2 || em[em_len - 1] != 0xbc {
        return None;
    }
    let (masked_db, rest) = em.split_at(em_len - hash_len - 1);
    let seed = &rest[..hash_len];
    let mut db: Vec<u8> = masked_db
        .iter()
        .zip(mgf1_sha256(seed, masked_db.len()))
        .map(|(masked, mask)| masked ^ mask)
        .collect();
    db[0] &= 0xff >> (8 * em_len - em_bits);
    let separator = db.iter().position(|byte| *byte != 0)?;
    (db[separator] == 0x01).then(|| db.len() - separator - 1)
}

/// MGF1 with SHA-256 (RFC 8017 B.2.1).
fn mgf1_sha256(seed: &[u8], len: usize) -> Vec<u8> {
    let mut mask = Vec::with_capacity(len + 32);
    let mut counter: u32 = 0;
    while mask.len() < len {
        mask.extend_from_slice(
            &Sha256::new()
                .chain_update(seed)
                .chain_update(counter.to_be_bytes())
                .finalize(),
        );
        counter += 1;
    }
    mask.truncate(len);
    mask
}

enum SecretKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<RsaSigner>),
}

/// An RSA private key: the rsa crate parses, checks and exports it; ring signs with it.
/// Signing with the rsa crate leaks timing about the private key (RUSTSEC-2023-0071, the
/// Marvin attack); ring's RSA private-key operation is constant-time and blinded.
struct RsaSigner {
    key: rsa::RsaPrivateKey,
    signer: ring::rsa::KeyPair,
}

impl RsaSigner {
    fn new(key: rsa::RsaPrivateKey) -> Result<RsaSigner, KeyProblem> {
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(KeyProblem::RsaTooSmall(bits));
        }
        if bits > MAX_RSA_SIGNING_BITS {
            return Err(KeyProblem::RsaTooLarge(bits));
        }
        let malformed = |detail: String| KeyProblem::Malformed {
            label: "RSA PRIVATE KEY".to_owned(),
            detail,
        };
        let der = key
            .to_pkcs1_der()
            .map_err(|error| malformed(error.to_string()))?;
        let signer = ring::rsa::KeyPair::from_der(der.as_bytes())
            .map_err(|error| malformed(format!("refused by the signer: {error}")))?;
        Ok(RsaSigner { key, signer })
    }

    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt.
    fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut signature = vec![0; self.signer.public().modulus_len()];
        self.signer
            .sign(
                &ring::signature::RSA_PSS_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
        Ok(signature)
    }
}

/// A private key ready to sign, with its public half.
pub struct PrivateKey {
    secret: SecretKey,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, only what identifies the key.
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.public.algorithm())
            .field("keyid", &self.public.keyid())
            .finish()
    }
}

impl PrivateKey {
    fn from_secret(secret: SecretKey) -> PrivateKey {
        let public = match &secret {
            SecretKey::Ed25519(key) => PublicKey::Ed25519(key.verifying_key()),
            SecretKey::P256(key) => PublicKey::P256(*key.verifying_key()),
            SecretKey::P384(key) => PublicKey::P384(*key.verifying_key()),
            SecretKey::Rsa(rsa) => PublicKey::Rsa(rsa.key.to_public_key()),
        };
        PrivateKey { secret, public }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn keyid(&self) -> String {
        self.public.keyid()
    }

    /// Signs `message` (DSSE: the PAE). ECDSA signs the SHA-256 of it (also for P-384, as
    /// witness does), DER-encoded; RSA uses PSS with a 32-byte salt.
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let signature = match &self.secret {
            SecretKey::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
            SecretKey::P256(key) => {
                let signature: p256::ecdsa::Signature =
                    key.sign_prehash(&Sha256::digest(message))?;
                signature.to_der().as_bytes().to_vec()
            }
            SecretKey::P384(key) => {
                let signature: p384::ecdsa::Signature =
                    key.sign_prehash(&Sha256::digest(message))?;
                signature.to_der().as_bytes().to_vec()
            }
            SecretKey::Rsa(rsa) => rsa.sign(message)?,
        };
        Ok(signature)
    }

    /// Signs a probe and checks it with the public half: a key that loads but cannot produce a
    /// verifiable signature (an inconsistent key file) is caught before any work is done.
    pub fn prove_usable(&self) -> anyhow::Result<()> {
        let probe = b"oci-attest key self-test";
        let signature = self.sign(probe)?;
        anyhow::ensure!(
            self.public.verify(probe, &signature),
            "the key's signature does not verify with its own public key (inconsistent key file)"
        );
        Ok(())
    }

    /// A fresh key of `algorithm`.
    pub fn generate(algorithm: Algorithm) -> anyhow::Result<PrivateKey> {
        let secret = match algorithm {
            Algorithm::Ed25519 => {
                SecretKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng))
            }
            Algorithm::EcdsaP256 => SecretKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            Algorithm::EcdsaP384 => SecretKey::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
            Algorithm::Rsa => SecretKey::Rsa(Box::new(RsaSigner::new(
                rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS_GENERATED)
                    .context("RSA key generation failed")?,
            )?)),
        };
        Ok(PrivateKey::from_secret(secret))
    }

    /// The unencrypted PKCS#8 PEM of the private key.
    pub fn to_pkcs8_pem(&self) -> anyhow::Result<pkcs8::der::zeroize::Zeroizing<String>> {
        let pem = match &self.secret {
            // PKCS#8 v1 (no embedded public key): OpenSSL 3.0 cannot read the v2 form that
            // ed25519-dalek writes by default.
            SecretKey::Ed25519(key) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF),
            SecretKey::P256(key) => key.to_pkcs8_pem(LineEnding::LF),
            SecretKey::P384(key) => key.to_pkcs8_pem(LineEnding::LF),
            SecretKey::Rsa(rsa) => rsa.key.to_pkcs8_pem(LineEnding::LF),
        };
        pem.context("encoding the private key as PKCS#8")
    }

    /// The PKCS#8 PEM of the private key encrypted under `passphrase` (PBES2: PBKDF2-SHA256,
    /// [`PBKDF2_ITERATIONS`] rounds, AES-256-CBC), as `openssl pkey -aes256` writes it.
    pub fn to_encrypted_pkcs8_pem(
        &self,
        passphrase: &[u8],
    ) -> anyhow::Result<pkcs8::der::zeroize::Zeroizing<String>> {
        anyhow::ensure!(!passphrase.is_empty(), "the passphrase is empty");
        let plain = self.to_pkcs8_pem()?;
        let (_, document) = pkcs8::SecretDocument::from_pem(&plain)
            .map_err(|error| anyhow::anyhow!("re-reading the PKCS#8 key: {error}"))?;
        let info = pkcs8::PrivateKeyInfo::try_from(document.as_bytes())
            .map_err(|error| anyhow::anyhow!("re-reading the PKCS#8 key: {error}"))?;
        let mut salt = [0u8; 16];
        let mut iv = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut iv);
        let parameters =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
                .map_err(|error| anyhow::anyhow!("encryption parameters: {error}"))?;
        let encrypted = info
            .encrypt_with_params(parameters, passphrase)
            .map_err(|error| anyhow::anyhow!("encrypting the key: {error}"))?;
        encrypted
            .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .map_err(|error| anyhow::anyhow!("encoding the encrypted key: {error}"))
    }

    /// Parses the first private-key PEM block of `text`.
    pub fn from_pem(text: &[u8], passphrase: Option<&[u8]>) -> Result<PrivateKey, KeyProblem> {
        let block = first_key_block(text)?;
        let label = block.label.as_str();
        let secret = match label {
            "PRIVATE KEY" => secret_from_pkcs8(&block.der, label)?,
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase.ok_or(KeyProblem::PassphraseMissing)?;
                let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(block.der.as_slice())
                    .map_err(|error| malformed(label, error))?;
                let decrypted = encrypted
                    .decrypt(passphrase)
                    .map_err(|_| KeyProblem::WrongPassphrase)?;
                // A wrong passphrase usually fails the padding check, but may pass it by chance
                // and yield garbage: that garbage is not a PrivateKeyInfo.
                secret_from_pkcs8(decrypted.as_bytes(), label).map_err(|problem| match problem {
                    KeyProblem::Malformed { .. } => KeyProblem::WrongPassphrase,
                    other => other,
                })?
            }
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&block.der)
                .map_err(|error| malformed(label, error))
                .and_then(checked_rsa_secret)?,
            "EC PRIVATE KEY" => secret_from_sec1(&block.der, label)?,
            "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => {
                return Err(KeyProblem::PublicKeyGiven(label.to_owned()))
            }
            "OPENSSH PRIVATE KEY" => {
                return Err(KeyProblem::UnsupportedFormat(format!(
                    "{label}` (convert it with `ssh-keygen -p -m PKCS8 -f KEY`"
                )))
            }
            "DSA PRIVATE KEY" => return Err(KeyProblem::UnsupportedAlgorithm("DSA".to_owned())),
            _ => return Err(KeyProblem::UnsupportedFormat(label.to_owned())),
        };
        Ok(PrivateKey::from_secret(secret))
    }
}

fn checked_rsa_secret(key: rsa::RsaPrivateKey) -> Result<SecretKey, KeyProblem> {
    Ok(SecretKey::Rsa(Box::new(RsaSigner::new(key)?)))
}

fn secret_from_pkcs8(der: &[u8], label: &str) -> Result<SecretKey, KeyProblem> {
    let info = pkcs8::PrivateKeyInfo::try_from(der).map_err(|error| malformed(label, error))?;
    let oid = info.algorithm.oid;
    if oid == OID_ED25519 {
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(SecretKey::Ed25519)
            .map_err(|error| malformed(label, error))
    } else if oid == OID_EC_PUBLIC_KEY {
        match info.algorithm.parameters_oid() {
            Ok(OID_P256) => p256::ecdsa::SigningKey::from_pkcs8_der(der)
                .map(SecretKey::P256)
                .map_err(|error| malformed(label, error)),
            Ok(OID_P384) => p384::ecdsa::SigningKey::from_pkcs8_der(der)
                .map(SecretKey::P384)
                .map_err(|error| malformed(label, error)),
            Ok(curve) => Err(KeyProblem::UnsupportedAlgorithm(algorithm_name(curve))),
            Err(error) => Err(malformed(label, error)),
        }
    } else if oid == OID_RSA_ENCRYPTION {
        rsa::RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|error| malformed(label, error))
            .and_then(checked_rsa_secret)
    } else {
        Err(KeyProblem::UnsupportedAlgorithm(algorithm_name(oid)))
    }
}

fn secret_from_sec1(der: &[u8], label: &str) -> Result<SecretKey, KeyProblem> {
    let key = sec1::EcPrivateKey::try_from(der).map_err(|error| malformed(label, error))?;
    let curve = key
        .parameters
        .and_then(|parameters| parameters.named_curve())
        .ok_or_else(|| malformed(label, "no named curve in the key parameters"))?;
    match curve {
        OID_P256 => p256::SecretKey::from_sec1_der(der)
            .map(|secret| SecretKey::P256(secret.into()))
            .map_err(|error| malformed(label, error)),
        OID_P384 => p384::SecretKey::from_sec1_der(der)
            .map(|secret| SecretKey::P384(secret.into()))
            .map_err(|error| malformed(label, error)),
        other => Err(KeyProblem::UnsupportedAlgorithm(algorithm_name(other))),
    }
}

fn is_private_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

struct PemBlock {
    label: String,
    der: Vec<u8>,
}

/// The first PEM block holding a key. `EC PARAMETERS` blocks are skipped, because
/// `openssl ecparam -genkey` writes one in front of the key.
///
/// Scanning for the block boundaries is done here (pem-rfc7468 wants exactly one block and no
/// surrounding text); decoding the block itself is left to pem-rfc7468.
fn first_key_block(text: &[u8]) -> Result<PemBlock, KeyProblem> {
    let text = std::str::from_utf8(text).map_err(|_| KeyProblem::NotPem)?;
    let mut rest = text;
    loop {
        let begin = rest.find("-----BEGIN ").ok_or(KeyProblem::NotPem)?;
        let after_begin = &rest[begin + "-----BEGIN ".len()..];
        let label_end = after_begin.find("-----").ok_or(KeyProblem::NotPem)?;
        let label = &after_begin[..label_end];
        // A label ends on its BEGIN line; one that runs on is not a boundary (and would put key
        // text into the message).
        if label.chars().any(char::is_control) {
            return Err(KeyProblem::NotPem);
        }
        let end_marker = format!("-----END {label}-----");
        let Some(end) = after_begin.find(&end_marker) else {
            return Err(malformed(label, "no matching END line"));
        };
        let block_end = begin + "-----BEGIN ".len() + end + end_marker.len();
        let block = &rest[begin..block_end];
        rest = &rest[block_end..];
        if label == "EC PARAMETERS" {
            continue;
        }
        if block.contains("Proc-Type:") {
            return Err(KeyProblem::LegacyEncryption);
        }
        let (decoded_label, der) =
            pem::decode_vec(block.as_bytes()).map_err(|error| malformed(label, error))?;
        return Ok(PemBlock {
            label: decoded_label.to_owned(),
            der,
        });
    }
}

/// Reads a small secret file (`what`: "key file", "passphrase file"), with one-line errors.
pub(crate) fn read_small_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let display = path.display();
    let describe = |error: io::Error| {
        let message = match error.kind() {
            io::ErrorKind::NotFound => format!("{display}: {what} not found"),
            io::ErrorKind::PermissionDenied => {
                format!("{display}: cannot read {what}: permission denied")
            }
            _ => format!("{display}: cannot read {what}: {error}"),
        };
        failure(FailureKind::Key, message)
    };
    // stat before open: a FIFO would block the open, a device could stream forever.
    let metadata = std::fs::metadata(path).map_err(describe)?;
    if metadata.is_dir() {
        return Err(failure(
            FailureKind::Key,
            format!("{display}: is a directory, not a {what}"),
        ));
    }
    if !metadata.is_file() {
        return Err(failure(
            FailureKind::Key,
            format!("{display}: not a regular file, cannot be a {what}"),
        ));
    }
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(failure(
            FailureKind::Key,
            format!(
                "{display}: {} bytes is too large for a {what}",
                metadata.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|file| file.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(describe)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(failure(
            FailureKind::Key,
            format!("{display}: grew past {MAX_KEY_FILE_BYTES} bytes while read: not a {what}"),
        ));
    }
    Ok(bytes)
}

/// The passphrase for an encrypted key: the file's content (one trailing newline removed), else
/// the environment variable [`PASSPHRASE_ENV`], else none.
pub fn read_passphrase(path: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = path else {
        return Ok(std::env::var_os(PASSPHRASE_ENV).map(|value| value.into_encoded_bytes()));
    };
    let mut passphrase = read_small_file(path, "passphrase file")?;
    if passphrase.ends_with(b"\n") {
        passphrase.pop();
        if passphrase.ends_with(b"\r") {
            passphrase.pop();
        }
    }
    Ok(Some(passphrase))
}

/// Loads the private key at `path` and proves it can sign. Every failure is a
/// [`FailureKind::Key`] naming the file.
pub fn load_private_key(path: &Path, passphrase: Option<&[u8]>) -> anyhow::Result<PrivateKey> {
    let text = read_small_file(path, "key file")?;
    let key = PrivateKey::from_pem(&text, passphrase)
        .map_err(|problem| failure(FailureKind::Key, format!("{}: {problem}", path.display())))?;
    key.prove_usable().map_err(|error| {
        failure(
            FailureKind::Key,
            format!("{}: cannot sign: {error:#}", path.display()),
        )
    })?;
    Ok(key)
}

/// Loads the public key at `path`. Every failure is a [`FailureKind::Key`] naming the file.
pub fn load_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text = read_small_file(path, "key file")?;
    PublicKey::from_pem(&text)
        .map_err(|problem| failure(FailureKind::Key, format!("{}: {problem}", path.display())))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// RFC 8032 section 7.1, test 1.
    const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn rfc8032_key() -> PrivateKey {
        let secret: [u8; 32] = hex::decode(RFC8032_SECRET).unwrap().try_into().unwrap();
        PrivateKey::from_secret(SecretKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(
            &secret,
        )))
    }

    #[test]
    fn rfc8032_key_has_the_spec_keyid() {
        let key = rfc8032_key();
        let PublicKey::Ed25519(public) = key.public() else {
            panic!("not ed25519")
        };
        assert_eq!(hex::encode(public.as_bytes()), RFC8032_PUBLIC);
        assert_eq!(
            key.keyid(),
            "7f2d9ed0b71b8e5a6c5cf30e647d6e20b5bca6dac8071f11abe3fef8014db610"
        );
        // RFC 8032 test 1 signs the empty message with this signature.
        assert_eq!(
            hex::encode(key.sign(b"").unwrap()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    fn openssl(args: &[&str]) -> Vec<u8> {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is part of the test environment");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Keys written by openssl in every supported container, and the public PEM openssl derives.
    fn openssl_key(dir: &Path, name: &str, genpkey: &[&str]) -> (std::path::PathBuf, Vec<u8>) {
        let path = dir.join(name);
        let mut args = vec!["genpkey"];
        args.extend_from_slice(genpkey);
        args.extend_from_slice(&["-out", path.to_str().unwrap()]);
        openssl(&args);
        let public = openssl(&["pkey", "-in", path.to_str().unwrap(), "-pubout"]);
        (path, public)
    }

    #[test]
    fn loads_every_openssl_key_kind_and_matches_openssl_public_pem() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases: Vec<(&str, Vec<&str>, Algorithm)> = vec![
            ("ed.pem", vec!["-algorithm", "ed25519"], Algorithm::Ed25519),
            (
                "p256.pem",
                vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                Algorithm::EcdsaP256,
            ),
            (
                "p384.pem",
                vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
                Algorithm::EcdsaP384,
            ),
            (
                "rsa.pem",
                vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                Algorithm::Rsa,
            ),
        ];
        for (name, genpkey, algorithm) in cases {
            let (path, openssl_public) = openssl_key(d, name, &genpkey);
            let key = load_private_key(&path, None).unwrap();
            assert_eq!(key.public().algorithm(), algorithm);
            assert_eq!(key.public().to_pem().as_bytes(), openssl_public, "{name}");
            assert_eq!(key.keyid(), sha256_hex(&openssl_public));
            let public_path = d.join(format!("{name}.pub"));
            std::fs::write(&public_path, &openssl_public).unwrap();
            let public = load_public_key(&public_path).unwrap();
            assert_eq!(&public, key.public());
            let signature = key.sign(b"message").unwrap();
            assert!(public.verify(b"message", &signature), "{name}");
            assert!(!public.verify(b"messagf", &signature), "{name}");
        }
    }

    #[test]
    fn loads_pkcs1_sec1_and_encrypted_pkcs8() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (rsa, _) = openssl_key(d, "rsa.pem", &["-algorithm", "RSA"]);
        let pkcs1 = openssl(&["rsa", "-in", rsa.to_str().unwrap(), "-traditional"]);
        assert!(pkcs1.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
        let key = PrivateKey::from_pem(&pkcs1, None).unwrap();
        assert_eq!(key.public().algorithm(), Algorithm::Rsa);

        // `openssl ecparam -genkey` writes an EC PARAMETERS block before the SEC1 key.
        let sec1 = openssl(&["ecparam", "-name", "secp384r1", "-genkey"]);
        assert!(String::from_utf8_lossy(&sec1).contains("-----BEGIN EC PRIVATE KEY-----"));
        let key = PrivateKey::from_pem(&sec1, None).unwrap();
        assert_eq!(key.public().algorithm(), Algorithm::EcdsaP384);

        let (ed, _) = openssl_key(d, "ed.pem", &["-algorithm", "ed25519"]);
        let encrypted = openssl(&[
            "pkcs8",
            "-topk8",
            "-in",
            ed.to_str().unwrap(),
            "-passout",
            "pass:correct horse",
        ]);
        let plain = PrivateKey::from_pem(&std::fs::read(&ed).unwrap(), None).unwrap();
        let decrypted = PrivateKey::from_pem(&encrypted, Some(b"correct horse")).unwrap();
        assert_eq!(decrypted.keyid(), plain.keyid());
        assert_eq!(
            PrivateKey::from_pem(&encrypted, None).unwrap_err(),
            KeyProblem::PassphraseMissing
        );
        assert_eq!(
            PrivateKey::from_pem(&encrypted, Some(b"wrong")).unwrap_err(),
            KeyProblem::WrongPassphrase
        );
    }

    #[test]
    fn each_unusable_key_file_has_its_own_message() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let error_of = |path: &Path| {
            let error = load_private_key(path, None).unwrap_err();
            assert_eq!(crate::exit::kind_of(&error), FailureKind::Key);
            let message = format!("{error:#}");
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
            message
        };
        assert!(error_of(&d.join("absent.pem")).ends_with("key file not found"));

        let (ed, public) = openssl_key(d, "ed.pem", &["-algorithm", "ed25519"]);
        let public_path = d.join("ed.pub");
        std::fs::write(&public_path, public).unwrap();
        assert!(error_of(&public_path).contains("holds a public key"));

        let (ed448, _) = openssl_key(d, "ed448.pem", &["-algorithm", "ed448"]);
        assert!(error_of(&ed448).contains("unsupported key algorithm: Ed448"));
        let (p521, _) = openssl_key(
            d,
            "p521.pem",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        );
        assert!(error_of(&p521).contains("unsupported key algorithm: ECDSA P-521"));

        let garbage = d.join("garbage.pem");
        std::fs::write(&garbage, b"\x00\x01 not a key").unwrap();
        assert!(error_of(&garbage).contains("not a PEM key file"));
        let corrupt = d.join("corrupt.pem");
        std::fs::write(
            &corrupt,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(error_of(&corrupt).contains("malformed PRIVATE KEY block"));

        let encrypted = d.join("enc.pem");
        let bytes = openssl(&[
            "pkcs8",
            "-topk8",
            "-in",
            ed.to_str().unwrap(),
            "-passout",
            "pass:secret",
        ]);
        std::fs::write(&encrypted, bytes).unwrap();
        assert!(error_of(&encrypted).contains("no passphrase given"));
        let error = load_private_key(&encrypted, Some(b"nope")).unwrap_err();
        assert!(format!("{error}").ends_with("wrong passphrase for the encrypted private key"));

        let not_a_file = d.join("dir.pem");
        std::fs::create_dir(&not_a_file).unwrap();
        assert!(error_of(&not_a_file).contains("is a directory"));
    }

    #[test]
    fn crlf_lines_and_leading_text_are_accepted() {
        let pem = rfc8032_key().to_pkcs8_pem().unwrap();
        let text = format!(
            "Bag Attributes: from a tool\r\n{}",
            pem.replace('\n', "\r\n")
        );
        let key = PrivateKey::from_pem(text.as_bytes(), None).unwrap();
        assert_eq!(key.keyid(), rfc8032_key().keyid());
    }

    #[test]
    fn public_key_loader_rejects_private_keys() {
        let pem = rfc8032_key().to_pkcs8_pem().unwrap();
        assert_eq!(
            PublicKey::from_pem(pem.as_bytes()).unwrap_err(),
            KeyProblem::PrivateKeyGiven
        );
    }

    #[test]
    fn passphrase_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, b"pass word\n").unwrap();
        assert_eq!(
            read_passphrase(Some(&path)).unwrap(),
            Some(b"pass word".to_vec())
        );
        let error = read_passphrase(Some(&dir.path().join("none"))).unwrap_err();
        assert!(
            format!("{error}").contains("passphrase file not found"),
            "{error}"
        );
    }

    /// `keygen --passphrase-file`: OpenSSL opens the key with the passphrase (and derives the
    /// same public key), we open it with the passphrase only.
    #[test]
    fn encrypted_keys_open_with_their_passphrase_here_and_in_openssl() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [Algorithm::Ed25519, Algorithm::EcdsaP256] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let pem = key.to_encrypted_pkcs8_pem(b"correct horse").unwrap();
            assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
            let loaded = PrivateKey::from_pem(pem.as_bytes(), Some(b"correct horse")).unwrap();
            assert_eq!(loaded.keyid(), key.keyid());
            assert_eq!(
                PrivateKey::from_pem(pem.as_bytes(), Some(b"battery")).unwrap_err(),
                KeyProblem::WrongPassphrase
            );
            let path = dir.path().join(format!("{algorithm:?}.pem"));
            std::fs::write(&path, pem.as_bytes()).unwrap();
            let pass = dir.path().join("pass");
            std::fs::write(&pass, "correct horse").unwrap();
            let openssl_public = openssl(&[
                "pkey",
                "-in",
                path.to_str().unwrap(),
                "-passin",
                &format!("file:{}", pass.display()),
                "-pubout",
            ]);
            assert_eq!(key.public().to_pem().as_bytes(), openssl_public);
        }
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        assert!(key.to_encrypted_pkcs8_pem(b"").is_err());
    }

    #[test]
    fn generated_keys_round_trip_through_pkcs8_and_openssl_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [
            Algorithm::Ed25519,
            Algorithm::EcdsaP256,
            Algorithm::EcdsaP384,
            Algorithm::Rsa,
        ] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let pem = key.to_pkcs8_pem().unwrap();
            let loaded = PrivateKey::from_pem(pem.as_bytes(), None).unwrap();
            assert_eq!(loaded.keyid(), key.keyid());
            loaded.prove_usable().unwrap();
            let path = dir.path().join(format!("{algorithm:?}.pem"));
            std::fs::write(&path, pem.as_bytes()).unwrap();
            let openssl_public = openssl(&["pkey", "-in", path.to_str().unwrap(), "-pubout"]);
            assert_eq!(
                key.public().to_pem().as_bytes(),
                openssl_public,
                "{algorithm}"
            );
        }
    }

    #[test]
    fn rsa_verification_accepts_any_salt_length() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public_pem) = openssl_key(dir.path(), "rsa.pem", &["-algorithm", "RSA"]);
        let public = PublicKey::from_pem(&public_pem).unwrap();
        let message = dir.path().join("msg");
        std::fs::write(&message, b"payload").unwrap();
        for salt in ["0", "32", "max", "17"] {
            let signature = openssl(&[
                "dgst",
                "-sha256",
                "-sign",
                path.to_str().unwrap(),
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                &format!("rsa_pss_saltlen:{salt}"),
                message.to_str().unwrap(),
            ]);
            assert!(public.verify(b"payload", &signature), "salt {salt}");
            assert!(!public.verify(b"payloae", &signature), "salt {salt}");
        }
    }
}
