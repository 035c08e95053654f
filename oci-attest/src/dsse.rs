//! DSSE envelopes (<https://github.com/secure-systems-lab/dsse>): the pre-authentication
//! encoding, signing and verifying. The envelope is written compact, keys in the order witness
//! writes them, without a trailing newline; verification works on the payload bytes exactly
//! as stored and never re-serialises them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::certificate::CertChain;
use crate::keys::{PrivateKey, PublicKey};

/// The payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`, lengths in decimal ASCII.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut encoded = pae_header(payload_type, payload.len());
    encoded.extend_from_slice(payload);
    encoded
}

/// The PAE up to the payload.
fn pae_header(payload_type: &str, payload_len: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(payload_type.len() + 48);
    header.extend_from_slice(b"DSSEv1 ");
    header.extend_from_slice(payload_type.len().to_string().as_bytes());
    header.push(b' ');
    header.extend_from_slice(payload_type.as_bytes());
    header.push(b' ');
    header.extend_from_slice(payload_len.to_string().as_bytes());
    header.push(b' ');
    header
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Standard base64 (with padding) of the payload bytes.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub keyid: String,
    /// Standard base64 (with padding) of the signature bytes.
    pub sig: String,
    /// Standard base64 of the signer certificate's PEM (witness's `certificate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Standard base64 of each intermediate certificate's PEM (witness's `intermediates`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermediates: Vec<String>,
    /// RFC 3161 timestamps over the signature bytes, as witness stores them
    /// (`crate::timestamp`); left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timestamps: Vec<SignatureTimestamp>,
}

/// One trusted timestamp of a signature: `type` `tsp`, `data` the base64 of the DER
/// TimeStampToken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureTimestamp {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: String,
}

impl Signature {
    /// The raw signature bytes (what its timestamps are over), if `sig` is base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        BASE64.decode(&self.sig).ok()
    }

    /// The DER tokens of its `tsp` timestamps (undecodable ones left out).
    pub fn timestamp_tokens(&self) -> Vec<Vec<u8>> {
        self.timestamps
            .iter()
            .filter(|timestamp| timestamp.kind == crate::timestamp::TIMESTAMP_TYPE)
            .filter_map(|timestamp| BASE64.decode(&timestamp.data).ok())
            .collect()
    }
}

/// Gets the timestamp tokens for a signature's bytes (one per timestamp server).
pub type Stamper<'a> = &'a dyn Fn(&[u8]) -> anyhow::Result<Vec<Vec<u8>>>;

/// A [`Stamper`] that adds no timestamp.
pub fn no_timestamps(_: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(Vec::new())
}

/// Signs `payload` as an in-toto statement; returns the envelope's JSON bytes.
pub fn sign(payload: &[u8], key: &PrivateKey) -> anyhow::Result<Vec<u8>> {
    sign_as(IN_TOTO_PAYLOAD_TYPE, payload, key)
}

/// Signs `payload` under `payload_type`; returns the envelope's JSON bytes.
pub fn sign_as(payload_type: &str, payload: &[u8], key: &PrivateKey) -> anyhow::Result<Vec<u8>> {
    sign_with_chain(payload_type, payload, key, None, &no_timestamps)
}

/// Signs `payload` under `payload_type`, recording the key's certificate chain (if any) in the
/// signature and the timestamps `stamp` gets for it; returns the envelope's JSON bytes.
pub fn sign_with_chain(
    payload_type: &str,
    payload: &[u8],
    key: &PrivateKey,
    chain: Option<&CertChain>,
    stamp: Stamper<'_>,
) -> anyhow::Result<Vec<u8>> {
    let signature = key.sign(&pae(payload_type, payload))?;
    let timestamps = stamp(&signature)?
        .into_iter()
        .map(|token| SignatureTimestamp {
            kind: crate::timestamp::TIMESTAMP_TYPE.to_owned(),
            data: BASE64.encode(token),
        })
        .collect();
    let envelope = Envelope {
        payload: BASE64.encode(payload),
        payload_type: payload_type.to_owned(),
        signatures: vec![Signature {
            keyid: key.keyid(),
            sig: BASE64.encode(signature),
            certificate: chain.map(|chain| BASE64.encode(&chain.leaf)),
            intermediates: chain
                .map(|chain| {
                    chain
                        .intermediates
                        .iter()
                        .map(|pem| BASE64.encode(pem))
                        .collect()
                })
                .unwrap_or_default(),
            timestamps,
        }],
    };
    Ok(crate::gojson::to_vec(&envelope)?)
}

/// Signatures with the verifying key's keyid that are tried; the rest are ignored.
pub const MAX_SIGNATURES_PER_KEY: usize = 8;

/// Why an envelope did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    #[error("payloadType is {found:?}, expected {expected}")]
    PayloadType { found: String, expected: String },
    #[error("no signature with keyid {expected} (the envelope has: {found})")]
    KeyIdMismatch { expected: String, found: String },
    #[error("the signature with keyid {0} does not verify with the given key")]
    BadSignature(String),
}

/// Parses envelope JSON.
pub fn parse(bytes: &[u8]) -> Result<Envelope, VerifyError> {
    serde_json::from_slice(bytes).map_err(|error| VerifyError::Malformed(error.to_string()))
}

/// Checks that a signature with `key`'s keyid signs the in-toto payload; returns the payload
/// bytes.
pub fn verify(envelope: &Envelope, key: &PublicKey) -> Result<Vec<u8>, VerifyError> {
    verify_as(&[IN_TOTO_PAYLOAD_TYPE], envelope, key)
}

/// Checks that the payload type is one of `payload_types` and that a signature with `key`'s
/// keyid signs the payload; returns the payload bytes.
pub fn verify_as(
    payload_types: &[&str],
    envelope: &Envelope,
    key: &PublicKey,
) -> Result<Vec<u8>, VerifyError> {
    verify_signature(payload_types, envelope, key).map(|(payload, _)| payload)
}

/// As [`verify_as`], also returning the signature that verified (its certificate, if any, is
/// what the signer recorded).
pub fn verify_signature<'a>(
    payload_types: &[&str],
    envelope: &'a Envelope,
    key: &PublicKey,
) -> Result<(Vec<u8>, &'a Signature), VerifyError> {
    check_payload_type(payload_types, &envelope.payload_type)?;
    let payload = BASE64
        .decode(&envelope.payload)
        .map_err(|error| VerifyError::Malformed(format!("payload is not base64: {error}")))?;
    let message = pae(&envelope.payload_type, &payload);
    let signature = check_signatures(&envelope.signatures, &message, key)?;
    Ok((payload, signature))
}

fn check_payload_type(payload_types: &[&str], found: &str) -> Result<(), VerifyError> {
    if payload_types.contains(&found) {
        return Ok(());
    }
    Err(VerifyError::PayloadType {
        found: found.to_owned(),
        expected: payload_types
            .iter()
            .map(|accepted| format!("{accepted:?}"))
            .collect::<Vec<_>>()
            .join(" or "),
    })
}

/// The signature with `key`'s keyid that signs `message` (the PAE). A signature that does not
/// verify confers nothing, whatever keyid it claims.
fn check_signatures<'a>(
    signatures: &'a [Signature],
    message: &[u8],
    key: &PublicKey,
) -> Result<&'a Signature, VerifyError> {
    let keyid = key.keyid();
    let candidates: Vec<&Signature> = signatures
        .iter()
        .filter(|signature| signature.keyid == keyid)
        .collect();
    if candidates.is_empty() {
        let found = signatures
            .iter()
            .map(|signature| format!("{:?}", signature.keyid))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(VerifyError::KeyIdMismatch {
            expected: keyid,
            found: if found.is_empty() {
                "no signatures".to_owned()
            } else {
                found
            },
        });
    }
    // An envelope stuffed with signatures under our keyid must not cost a public-key operation
    // each: signers add one signature per key, a few at most.
    let verified = candidates
        .into_iter()
        .take(MAX_SIGNATURES_PER_KEY)
        .find(|signature| {
            BASE64
                .decode(&signature.sig)
                .is_ok_and(|sig| key.verify(message, &sig))
        });
    verified.ok_or(VerifyError::BadSignature(keyid))
}

/// An envelope opened for verification without copies of its payload: the base64 payload is
/// decoded in place, inside the buffer the envelope was read into, and the PAE header put in
/// front of it, so a 200 MB envelope costs its own size once instead of four times (file,
/// payload text, payload, PAE).
#[derive(Debug)]
pub struct OpenedEnvelope {
    pub payload_type: String,
    pub signatures: Vec<Signature>,
    /// PAE(payload_type, payload): the signed message, the payload its tail.
    message: Vec<u8>,
    header_len: usize,
}

#[derive(Deserialize)]
struct BorrowedEnvelope<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<Signature>,
}

/// Base64 characters decoded per step of [`decode_in_place`] (a multiple of 4, so padding can
/// only be in the last step).
const DECODE_STEP: usize = 16 << 10;

impl OpenedEnvelope {
    /// Parses envelope JSON and decodes its payload, reusing `bytes`.
    pub fn open(mut bytes: Vec<u8>) -> Result<OpenedEnvelope, VerifyError> {
        let malformed = |error: String| VerifyError::Malformed(error);
        let (payload, payload_type, signatures) = {
            let envelope: BorrowedEnvelope = crate::strict_json::from_slice(&bytes)
                .map_err(|error| malformed(error.to_string()))?;
            let payload = match envelope.payload {
                // The text lies inside `bytes`: remember where, to decode it there.
                std::borrow::Cow::Borrowed(text) => {
                    let start = text.as_ptr() as usize - bytes.as_ptr() as usize;
                    Ok(start..start + text.len())
                }
                // Escapes in the JSON string: serde_json unescaped it into its own copy.
                std::borrow::Cow::Owned(text) => Err(text),
            };
            (payload, envelope.payload_type, envelope.signatures)
        };
        let not_base64 =
            |error: base64::DecodeSliceError| malformed(format!("payload is not base64: {error}"));
        let length = match payload {
            Ok(range) => decode_in_place(&mut bytes, range).map_err(not_base64)?,
            Err(text) => {
                bytes = BASE64
                    .decode(text)
                    .map_err(|error| malformed(format!("payload is not base64: {error}")))?;
                bytes.len()
            }
        };
        bytes.truncate(length);
        let header = pae_header(&payload_type, length);
        let header_len = header.len();
        // Within the buffer's capacity (base64 is a third longer than what it encodes): the
        // payload moves, nothing is allocated.
        bytes.splice(0..0, header);
        Ok(OpenedEnvelope {
            payload_type,
            signatures,
            message: bytes,
            header_len,
        })
    }

    /// The payload bytes (not yet verified).
    pub fn payload(&self) -> &[u8] {
        &self.message[self.header_len..]
    }

    /// Checks that the payload type is one of `payload_types` and that a signature with `key`'s
    /// keyid signs the payload; returns that signature.
    pub fn verify(
        &self,
        payload_types: &[&str],
        key: &PublicKey,
    ) -> Result<&Signature, VerifyError> {
        check_payload_type(payload_types, &self.payload_type)?;
        check_signatures(&self.signatures, &self.message, key)
    }

    /// The payload bytes, the buffer they were read into given back.
    pub fn into_payload(mut self) -> Vec<u8> {
        self.message.drain(..self.header_len);
        self.message
    }
}

/// Decodes the standard base64 at `text` inside `bytes` into `bytes[..n]`; returns `n`. The
/// decoded bytes never overtake the text still to be read (3 bytes out per 4 in, writing from
/// the start of the buffer).
fn decode_in_place(
    bytes: &mut [u8],
    text: std::ops::Range<usize>,
) -> Result<usize, base64::DecodeSliceError> {
    let mut decoded = vec![0u8; DECODE_STEP / 4 * 3];
    let (mut read, mut written) = (text.start, 0);
    while read < text.end {
        let end = (read + DECODE_STEP).min(text.end);
        let count = BASE64.decode_slice(&bytes[read..end], &mut decoded)?;
        bytes[written..written + count].copy_from_slice(&decoded[..count]);
        written += count;
        read = end;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn envelope_is_compact_in_key_order_and_verifies() {
        for algorithm in [
            Algorithm::Ed25519,
            Algorithm::EcdsaP256,
            Algorithm::EcdsaP384,
        ] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let payload = br#"{"_type":"x","a":"<&>"}"#;
            let bytes = sign(payload, &key).unwrap();
            let text = String::from_utf8(bytes.clone()).unwrap();
            let prefix = format!(
                r#"{{"payload":"{}","payloadType":"application/vnd.in-toto+json","signatures":[{{"keyid":"{}","sig":""#,
                BASE64.encode(payload),
                key.keyid()
            );
            assert!(text.starts_with(&prefix), "{text}");
            assert!(text.ends_with("\"}]}"), "{text}");
            let envelope = parse(&bytes).unwrap();
            assert_eq!(verify(&envelope, key.public()).unwrap(), payload);
        }
    }

    #[test]
    fn every_kind_of_tampering_is_detected() {
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        let other = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        let envelope = parse(&sign(b"{\"a\":1}", &key).unwrap()).unwrap();

        let mut payload = envelope.clone();
        payload.payload = BASE64.encode(b"{\"a\":2}");
        assert_eq!(
            verify(&payload, key.public()),
            Err(VerifyError::BadSignature(key.keyid()))
        );

        let mut signature = envelope.clone();
        let mut sig = BASE64.decode(&signature.signatures[0].sig).unwrap();
        sig[5] ^= 1;
        signature.signatures[0].sig = BASE64.encode(sig);
        assert!(matches!(
            verify(&signature, key.public()),
            Err(VerifyError::BadSignature(_))
        ));

        let mut keyid = envelope.clone();
        keyid.signatures[0].keyid = other.keyid();
        assert!(matches!(
            verify(&keyid, key.public()),
            Err(VerifyError::KeyIdMismatch { .. })
        ));
        assert!(matches!(
            verify(&envelope, other.public()),
            Err(VerifyError::KeyIdMismatch { .. })
        ));

        let mut payload_type = envelope.clone();
        payload_type.payload_type = "text/plain".to_owned();
        assert!(matches!(
            verify(&payload_type, key.public()),
            Err(VerifyError::PayloadType { .. })
        ));
        assert!(matches!(parse(b"{}"), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn an_envelope_opened_in_place_verifies_like_a_parsed_one() {
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        // Long enough for several decode steps, with a length that needs padding.
        let payload: Vec<u8> = (0..100_001u32).map(|i| (i % 251) as u8).collect();
        let bytes = sign(&payload, &key).unwrap();
        let opened = OpenedEnvelope::open(bytes.clone()).unwrap();
        assert_eq!(opened.payload(), payload.as_slice());
        opened
            .verify(&[IN_TOTO_PAYLOAD_TYPE], key.public())
            .unwrap();
        assert_eq!(opened.into_payload(), payload);

        // JSON may escape `/` in the base64 text: still the same payload.
        let escaped = String::from_utf8(bytes.clone())
            .unwrap()
            .replacen('/', "\\/", 3);
        let opened = OpenedEnvelope::open(escaped.into_bytes()).unwrap();
        assert_eq!(opened.payload(), payload.as_slice());
        opened
            .verify(&[IN_TOTO_PAYLOAD_TYPE], key.public())
            .unwrap();

        let mut envelope = parse(&bytes).unwrap();
        let mut tampered = BASE64.decode(&envelope.payload).unwrap();
        tampered[70_000] ^= 1;
        envelope.payload = BASE64.encode(tampered);
        let opened = OpenedEnvelope::open(serde_json::to_vec(&envelope).unwrap()).unwrap();
        assert_eq!(
            opened.verify(&[IN_TOTO_PAYLOAD_TYPE], key.public()),
            Err(VerifyError::BadSignature(key.keyid()))
        );
        assert!(matches!(
            opened.verify(&["text/plain"], key.public()),
            Err(VerifyError::PayloadType { .. })
        ));

        envelope.payload.insert(8, '!');
        let error = OpenedEnvelope::open(serde_json::to_vec(&envelope).unwrap()).unwrap_err();
        assert!(
            error.to_string().contains("payload is not base64"),
            "{error}"
        );
        let repeated = br#"{"payload":"","payload":"","payloadType":"t","signatures":[]}"#;
        assert!(matches!(
            OpenedEnvelope::open(repeated.to_vec()),
            Err(VerifyError::Malformed(_))
        ));
    }
}
