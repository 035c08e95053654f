#!/bin/sh
# Usage: fill-key.sh KEY.pem.pub TEMPLATE.policy.json > policy.json
# Puts the public key (PEM, as `oci-attest keygen` writes it) into a policy template: its keyid
# is the SHA-256 of the PEM file, its `key` the base64 of the file.
set -eu
pub=$1
template=$2
keyid=$(sha256sum "$pub" | cut -d' ' -f1)
key=$(base64 -w0 "$pub")
sed -e "s/KEYID/$keyid/g" -e "s|PUBLIC_KEY_PEM_BASE64|$key|g" "$template"
