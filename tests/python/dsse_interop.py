"""DSSE interop with PyPI securesystemslib, independent of oci-attest's own code.

sign KEYTYPE PAYLOAD ENVELOPE PUBLIC_PEM [PAYLOAD_TYPE]
    Generate a key (ed25519, ecdsa-p256, rsa), write its public key as PEM, sign PAYLOAD into a
    DSSE envelope. The keyid is the SHA-256 of the public PEM, as oci-attest and witness use.
verify PUBLIC_PEM ENVELOPE [PAYLOAD_TYPE]
    Verify an envelope (exit 0) or print why it does not verify (exit 1).

PAYLOAD_TYPE defaults to the in-toto statement type; signed policies use their own.
"""

import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def public_pem(public_key):
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate(key_type):
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise SystemExit(f"unknown key type {key_type}")


def sign(key_type, payload_path, envelope_path, public_path, payload_type=PAYLOAD_TYPE):
    private = generate(key_type)
    pem = public_pem(private.public_key())
    with open(public_path, "wb") as out:
        out.write(pem)
    keyid = hashlib.sha256(pem).hexdigest()
    signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), keyid=keyid))
    with open(payload_path, "rb") as payload:
        envelope = Envelope(payload.read(), payload_type, {})
    envelope.sign(signer)
    with open(envelope_path, "w") as out:
        json.dump(envelope.to_dict(), out)


def verify(public_path, envelope_path, payload_type=PAYLOAD_TYPE):
    with open(public_path, "rb") as pem_file:
        pem = pem_file.read()
    public = serialization.load_pem_public_key(pem)
    key = SSlibKey.from_crypto(public, keyid=hashlib.sha256(pem).hexdigest())
    with open(envelope_path, "rb") as envelope_file:
        envelope = Envelope.from_dict(json.load(envelope_file))
    if envelope.payload_type != payload_type:
        raise SystemExit(f"payloadType is {envelope.payload_type!r}")
    try:
        envelope.verify([key], 1)
    except Exception as error:  # securesystemslib raises several error types
        raise SystemExit(f"{envelope_path}: does not verify: {error}")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"sign": sign, "verify": verify}[command](*args)
