//! DSSE interoperability with PyPI securesystemslib (installed by `cargo xtask setup` into
//! `.tools/venv`), the one suite that checks our signatures independently: envelopes it signs
//! must verify with `oci-attest verify`, envelopes `oci-attest run` signs must verify with it
//! (and tampered ones must not), and keys `oci-attest keygen` writes must load in OpenSSL.
//! Signed policies cross the same way: securesystemslib-signed ones pass `oci-attest verify -p`,
//! and `oci-attest sign` output verifies with securesystemslib.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use oci_attest_tests::{oci_attest, paths, require};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/dsse_interop.py");
const ALGORITHMS: [&str; 3] = ["ed25519", "ecdsa-p256", "rsa"];

/// A statement in the collection shape, as `oci-attest run` would sign it.
const STATEMENT: &str = r#"{"_type":"https://in-toto.io/Statement/v0.1","subject":[{"name":"https://aflock.ai/attestations/product/v0.3/tree:products","digest":{"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}],"predicateType":"https://aflock.ai/attestation-collection/v0.1","predicate":{"name":"interop","attestations":[]}}"#;

fn python() -> anyhow::Result<PathBuf> {
    let python =
        std::env::var_os("OCI_ATTEST_PYTHON").map_or_else(paths::venv_python, PathBuf::from);
    oci_attest_tests::command::run(
        Command::new(&python).args(["-c", "import securesystemslib.dsse"]),
    )
    .map_err(|error| {
        error.context("the securesystemslib venv is missing (run `cargo xtask setup`)")
    })?;
    Ok(python)
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

fn python_run(python: &Path, args: &[&Path]) -> Output {
    Command::new(python)
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()))
}

fn verify(public_key: &Path, envelope: &Path) -> Output {
    oci_attest::output([
        Path::new("verify"),
        Path::new("--key"),
        public_key,
        envelope,
    ])
    .unwrap_or_else(|error| panic!("{error:#}"))
}

/// `oci-attest keygen --algorithm ALGORITHM --out KEY`, which must succeed.
fn keygen(algorithm: &str, key: &Path) {
    let keygen = oci_attest::output([
        Path::new("keygen"),
        Path::new("--algorithm"),
        Path::new(algorithm),
        Path::new("--out"),
        key,
    ])
    .unwrap_or_else(|error| panic!("{error:#}"));
    assert!(
        keygen.status.success(),
        "keygen {algorithm}: {}",
        describe(&keygen)
    );
}

/// The same envelope with one word of the payload changed and the signature kept.
fn with_altered_payload(envelope: &Path, out: &Path) {
    let mut document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(envelope).expect("read envelope"))
            .expect("envelope JSON");
    let engine = base64::engine::general_purpose::STANDARD;
    let payload = engine
        .decode(document["payload"].as_str().expect("payload"))
        .expect("payload base64");
    let altered = String::from_utf8(payload)
        .expect("UTF-8 payload")
        .replacen("interop", "intrude", 1);
    document["payload"] = engine.encode(altered).into();
    std::fs::write(out, serde_json::to_vec(&document).expect("JSON")).expect("write");
}

#[test]
fn securesystemslib_envelopes_verify() {
    let python = require!(python());
    require!(oci_attest::binary());
    let dir = tempfile::tempdir().expect("temp dir");
    let statement = dir.path().join("statement.json");
    std::fs::write(&statement, STATEMENT).expect("write");
    for algorithm in ALGORITHMS {
        let envelope = dir.path().join(format!("{algorithm}.dsse.json"));
        let public_key = dir.path().join(format!("{algorithm}.pub.pem"));
        let signed = python_run(
            &python,
            &[
                Path::new("sign"),
                Path::new(algorithm),
                &statement,
                &envelope,
                &public_key,
            ],
        );
        assert!(
            signed.status.success(),
            "securesystemslib sign ({algorithm}): {}",
            describe(&signed)
        );

        let verified = verify(&public_key, &envelope);
        assert!(
            verified.status.success(),
            "{algorithm}: oci-attest verify rejected a securesystemslib envelope: {}",
            describe(&verified)
        );

        let altered = dir.path().join(format!("{algorithm}.altered.json"));
        with_altered_payload(&envelope, &altered);
        let rejected = verify(&public_key, &altered);
        assert_eq!(
            rejected.status.code(),
            Some(7),
            "{algorithm}: altered payload: {}",
            describe(&rejected)
        );
    }
}

#[test]
fn keygen_private_keys_load_in_openssl() {
    require!(oci_attest::binary());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut unreadable = Vec::new();
    for algorithm in ALGORITHMS {
        let key = dir.path().join(format!("{algorithm}.pem"));
        keygen(algorithm, &key);
        // docs/format.md: the .pub file is byte-identical to `openssl pkey -pubout` of the private key.
        let derived = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .output()
            .expect("run openssl");
        let written = std::fs::read(key.with_extension("pem.pub")).expect("read .pub");
        if !derived.status.success() || derived.stdout != written {
            unreadable.push(format!("{algorithm}: {}", describe(&derived)));
        }
    }
    assert!(
        unreadable.is_empty(),
        "keys OpenSSL cannot read or whose .pub differs:\n  {}",
        unreadable.join("\n  ")
    );
}

/// Envelopes `oci-attest run` signs, with a key of each algorithm, verify with securesystemslib
/// (the keyid recomputed in Python); one flipped bit in the payload or in the signature makes it
/// reject them.
#[test]
fn run_envelopes_verify_with_securesystemslib() {
    let python = require!(python());
    require!(oci_attest::binary());
    let engine = base64::engine::general_purpose::STANDARD;
    for algorithm in ALGORITHMS {
        let dir = require!(oci_attest::user_dir());
        let key = dir.path().join("key.pem");
        let envelope = dir.path().join("att.json");
        keygen(algorithm, &key);
        let mut run = oci_attest::run().unwrap_or_else(|error| panic!("{error:#}"));
        // Characters Go's JSON escapes, so the payload bytes are what witness would sign.
        let wrapped = run
            .args(["--trace", "off", "-k"])
            .arg(&key)
            .arg("-o")
            .arg(&envelope)
            .args(["--", "sh", "-c", "echo '<image & tag>' > out.txt"])
            .current_dir(dir.path())
            .output()
            .expect("run oci-attest");
        assert!(
            wrapped.status.success(),
            "{algorithm}: oci-attest run: {}",
            describe(&wrapped)
        );
        let public_key = key.with_extension("pem.pub");
        let verified = python_run(&python, &[Path::new("verify"), &public_key, &envelope]);
        assert!(
            verified.status.success(),
            "{algorithm}: securesystemslib rejected oci-attest's envelope: {}",
            describe(&verified)
        );

        let document: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&envelope).expect("read envelope"))
                .expect("envelope JSON");
        let flip = |field: &str, at: usize| {
            let mut bytes = engine
                .decode(
                    document
                        .pointer(field)
                        .and_then(|v| v.as_str())
                        .expect(field),
                )
                .expect("base64");
            let at = at.min(bytes.len() - 1);
            bytes[at] ^= 0x01;
            let mut tampered = document.clone();
            *tampered.pointer_mut(field).expect(field) = engine.encode(&bytes).into();
            tampered
        };
        let payload_len = document["payload"].as_str().map_or(0, str::len) * 3 / 4;
        for (name, tampered) in [
            ("payload", flip("/payload", payload_len.saturating_sub(2))),
            ("signature", flip("/signatures/0/sig", 10)),
        ] {
            let path = dir.path().join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_vec(&tampered).expect("JSON")).expect("write");
            let rejected = python_run(&python, &[Path::new("verify"), &public_key, &path]);
            assert!(
                !rejected.status.success()
                    && String::from_utf8_lossy(&rejected.stderr).contains("does not verify"),
                "{algorithm}: securesystemslib accepted a tampered {name}: {}",
                describe(&rejected)
            );
        }
    }
}

fn exit_zero_policy(functionary_pub: &Path) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let pem = std::fs::read(functionary_pub).expect("functionary key");
    let keyid = oci_attest_tests::command::sha256sum(functionary_pub).expect("sha256sum");
    let module = "package interop\ndeny[msg] { input.exitcode != 0; msg := \"failed\" }\n";
    serde_json::json!({
        "expires": "2099-01-01T00:00:00Z",
        "publickeys": {&keyid: {"keyid": &keyid, "key": engine.encode(&pem)}},
        "steps": {"interop": {
            "name": "interop",
            "functionaries": [{"type": "publickey", "publickeyid": &keyid}],
            "attestations": [{"type": "https://aflock.ai/attestations/command-run/v0.1",
                              "regopolicies": [{"name": "exit", "module": engine.encode(module)}]}],
        }},
    })
    .to_string()
}

#[test]
fn signed_policies_cross_between_securesystemslib_and_oci_attest() {
    let python = require!(python());
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let work = require!(oci_attest::user_dir());
    let work = work.path();
    let succeed = |mut command: Command, args: &[&str], cwd: &Path| {
        let output = command
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("oci-attest");
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
    };
    let plain = || oci_attest::command().unwrap_or_else(|error| panic!("{error:#}"));
    succeed(plain(), &["keygen", "--out", "functionary.pem"], d);
    let functionary = d.join("functionary.pem");
    let attestation = d.join("interop.att.json");
    succeed(
        oci_attest::run().unwrap_or_else(|error| panic!("{error:#}")),
        &[
            "--step",
            "interop",
            "--trace",
            "off",
            "-k",
            functionary.to_str().unwrap(),
            "-o",
            attestation.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "printf built > out.bin",
        ],
        work,
    );
    let policy = d.join("policy.json");
    std::fs::write(&policy, exit_zero_policy(&d.join("functionary.pem.pub"))).unwrap();

    for payload_type in [
        "https://aflock.ai/policy/v0.1",
        "https://witness.testifysec.com/policy/v0.1",
    ] {
        let (signed, public) = (d.join("policy.ssl.json"), d.join("policy-ssl.pub"));
        let output = Command::new(&python)
            .arg(SCRIPT)
            .args(["sign", "ed25519"])
            .args([&policy, &signed, &public])
            .arg(payload_type)
            .output()
            .expect("python");
        assert!(output.status.success(), "{}", describe(&output));
        let verified = oci_attest::output([
            Path::new("verify"),
            Path::new("-p"),
            &signed,
            Path::new("-k"),
            &public,
            Path::new("-a"),
            &attestation,
            Path::new("--artifactfile"),
            &work.join("out.bin"),
        ])
        .unwrap_or_else(|error| panic!("{error:#}"));
        assert!(
            verified.status.success(),
            "{payload_type}: {}",
            describe(&verified)
        );
    }

    succeed(plain(), &["keygen", "--out", "policy-key.pem"], d);
    let signed = d.join("policy.signed.json");
    succeed(
        plain(),
        &[
            "sign",
            "-k",
            "policy-key.pem",
            "-f",
            "policy.json",
            "-o",
            signed.to_str().unwrap(),
        ],
        d,
    );
    let output = Command::new(&python)
        .arg(SCRIPT)
        .arg("verify")
        .args([&d.join("policy-key.pem.pub"), &signed])
        .arg("https://aflock.ai/policy/v0.1")
        .output()
        .expect("python");
    assert!(output.status.success(), "{}", describe(&output));
}
