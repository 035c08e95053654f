"""The ecosystem formats oci-attest writes, checked with independent implementations.

statement PUBLIC_PEM ENVELOPE {provenance|vsa}
    Verify the DSSE envelope with securesystemslib, then parse the payload as an in-toto
    Statement v1 with the PyPI in-toto-attestation bindings (protobuf ParseDict, unknown fields
    refused) and validate it, and parse the predicate into the SLSA provenance v1 or VSA v1
    message. Prints the statement as JSON on stdout (exit 0) or why it failed (exit 1).
timestamp TOKEN_DER SIGNED_FILE ROOT_PEM [TSA_PEM]
    Verify an RFC 3161 timestamp token (as stored in an envelope's signature) over the bytes of
    SIGNED_FILE with rfc3161-client, chaining to ROOT_PEM. Prints the token's time.
"""

import base64
import json
import sys

import cryptography.x509
import google.protobuf.json_format as pb_json
import rfc3161_client
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.vsa.v1 import vsa_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

from dsse_interop import verify as verify_envelope

PREDICATES = {
    "provenance": ("https://slsa.dev/provenance/v1", provenance_pb2.Provenance),
    "vsa": ("https://slsa.dev/verification_summary/v1", vsa_pb2.VerificationSummary),
}


def statement(public_path, envelope_path, kind):
    verify_envelope(public_path, envelope_path)
    with open(envelope_path, "rb") as envelope_file:
        payload = base64.b64decode(json.load(envelope_file)["payload"])
    document = json.loads(payload)
    parsed = pb_json.ParseDict(document, statement_pb2.Statement())
    wrapper = Statement.copy_from_pb(parsed)
    wrapper.validate()
    predicate_type, message = PREDICATES[kind]
    if parsed.predicate_type != predicate_type:
        raise SystemExit(f"predicateType is {parsed.predicate_type!r}, not {predicate_type!r}")
    for predicate in proto_shaped(kind, document["predicate"]):
        pb_json.ParseDict(predicate, message())
    print(json.dumps(document))


def proto_shaped(kind, predicate):
    """The predicate as the bindings' messages read it. The SLSA VSA v1 spec makes
    `verifiedLevels` an array (slsa-verifier reads one), but in-toto-attestation 0.9.3's message
    declares a single string: each level is checked in its own copy, everything else as is."""
    if kind != "vsa" or not isinstance(predicate.get("verifiedLevels"), list):
        return [predicate]
    levels = predicate["verifiedLevels"]
    copies = []
    for level in levels or [None]:
        copy = dict(predicate)
        if level is None:
            del copy["verifiedLevels"]
        else:
            copy["verifiedLevels"] = level
        copies.append(copy)
    return copies


def timestamp(token_path, signed_path, root_path, tsa_path=None):
    with open(token_path, "rb") as token_file:
        token = token_file.read()
    # The envelope stores the TimeStampToken alone (as witness does); rfc3161-client reads a
    # TimeStampResp: status granted (SEQUENCE { INTEGER 0 }) followed by the token.
    status = bytes([0x30, 0x03, 0x02, 0x01, 0x00])
    body = status + token
    response = rfc3161_client.decode_timestamp_response(der_sequence(body))
    with open(root_path, "rb") as root_file:
        root = cryptography.x509.load_pem_x509_certificate(root_file.read())
    builder = rfc3161_client.VerifierBuilder().add_root_certificate(root)
    if tsa_path:
        with open(tsa_path, "rb") as tsa_file:
            builder = builder.tsa_certificate(
                cryptography.x509.load_pem_x509_certificate(tsa_file.read())
            )
    with open(signed_path, "rb") as signed_file:
        signed = signed_file.read()
    try:
        builder.build().verify_message(response, signed)
    except Exception as error:  # rfc3161-client raises several error types
        raise SystemExit(f"{token_path}: does not verify: {error}")
    print(response.tst_info.gen_time.isoformat())


def der_sequence(body):
    if len(body) < 0x80:
        return bytes([0x30, len(body)]) + body
    length = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([0x30, 0x80 | len(length)]) + length + body


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"statement": statement, "timestamp": timestamp}[command](*args)
