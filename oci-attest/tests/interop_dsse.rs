//! Independent verification: envelopes written by `oci-attest run` verify with the DSSE
//! implementation of PyPI `securesystemslib` (pyca/cryptography underneath), with the keyid
//! recomputed in Python as sha256 of the public PEM; tampered envelopes are rejected.
//!
//! The Python comes from env `OCI_ATTEST_PYTHON`, else `.tools/venv/bin/python` at the workspace
//! root (the set-up installs securesystemslib there). Without it the test fails in CI
//! (`CI=true`) and is skipped with the reason elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

const VERIFY_PY: &str = r#"
import hashlib, json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

pem = open(sys.argv[1], "rb").read()
key = SSlibKey.from_crypto(load_pem_public_key(pem), keyid=hashlib.sha256(pem).hexdigest())
envelope = Envelope.from_dict(json.load(open(sys.argv[2])))
try:
    envelope.verify([key], 1)
except VerificationError as error:
    print("REJECTED", error)
    sys.exit(3)
print("VERIFIED", key.scheme, len(envelope.payload))
"#;

/// The Python with securesystemslib, or `None` (after saying why) when it is not installed
/// and this is not CI.
fn python() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace");
    let python = std::env::var_os("OCI_ATTEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".tools/venv/bin/python"));
    let usable = Command::new(&python)
        .args(["-c", "import securesystemslib.dsse, cryptography"])
        .output()
        .is_ok_and(|output| output.status.success());
    if usable {
        return Some(python);
    }
    let reason = format!(
        "{} with securesystemslib is not available (set OCI_ATTEST_PYTHON or run the README set-up)",
        python.display()
    );
    oci_attest_tests::skip("interop_dsse", &reason);
    None
}

fn run(dir: &Path, program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("start process")
}

fn python_verify(python: &Path, dir: &Path, envelope: &str) -> Output {
    run(dir, python, &["-c", VERIFY_PY, "key.pem.pub", envelope])
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn securesystemslib_verifies_our_envelopes_and_rejects_tampered_ones() {
    let Some(python) = python() else {
        return;
    };
    for algorithm in ["ed25519", "ecdsa-p256", "rsa"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bin = Path::new(BIN);
        let keygen = run(
            d,
            bin,
            &["keygen", "--algorithm", algorithm, "--out", "key.pem"],
        );
        assert!(keygen.status.success(), "{}", text(&keygen));
        let attested = run(
            d,
            bin,
            &[
                "run",
                "--trace",
                "off",
                "-k",
                "key.pem",
                "-o",
                "att.json",
                "--",
                "sh",
                "-c",
                "echo '<image & tag>' > out.txt",
            ],
        );
        assert!(attested.status.success(), "{}", text(&attested));

        let verified = python_verify(&python, d, "att.json");
        assert!(
            verified.status.success(),
            "{algorithm}: {}",
            text(&verified)
        );
        assert!(
            text(&verified).starts_with("VERIFIED"),
            "{}",
            text(&verified)
        );

        let envelope: Value =
            serde_json::from_slice(&std::fs::read(d.join("att.json")).unwrap()).unwrap();
        let mut payload = BASE64
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        let last = payload.len() - 2;
        payload[last] ^= 0x01;
        let mut tampered_payload = envelope.clone();
        tampered_payload["payload"] = BASE64.encode(&payload).into();
        let mut sig = BASE64
            .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        sig[10] ^= 0x01;
        let mut tampered_signature = envelope.clone();
        tampered_signature["signatures"][0]["sig"] = BASE64.encode(&sig).into();
        for (name, tampered) in [
            ("payload.json", tampered_payload),
            ("signature.json", tampered_signature),
        ] {
            std::fs::write(d.join(name), serde_json::to_vec(&tampered).unwrap()).unwrap();
            let rejected = python_verify(&python, d, name);
            assert_eq!(
                rejected.status.code(),
                Some(3),
                "{algorithm} {name}: {}",
                text(&rejected)
            );
            assert!(
                text(&rejected).starts_with("REJECTED"),
                "{}",
                text(&rejected)
            );
        }
    }
}
