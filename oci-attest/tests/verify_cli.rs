//! `verify` against hostile inputs: a FIFO or `/dev/zero` as envelope or key fails at once
//! (regular files only, size checked before reading), and an envelope stuffed with bad RSA-PSS
//! signatures under the right keyid is rejected without trying each one.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use oci_attest_tests::command::{assert_exit, assert_exit_saying};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// Runs oci-attest, killing it if it takes longer than a minute (a FIFO that blocks).
fn oci_attest(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("oci-attest {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn signed_run(dir: &Path, algorithm: &str) {
    let keygen = oci_attest(
        dir,
        &["keygen", "--algorithm", algorithm, "--out", "key.pem"],
    );
    assert_exit(&keygen, 0);
    let run = oci_attest_tests::oci_attest::run_command(Path::new(BIN))
        .expect("checked by the caller's user_dir")
        .args([
            "--trace", "off", "-k", "key.pem", "-o", "att.json", "--", "true",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_exit(&run, 0);
}

#[test]
fn fifo_and_dev_zero_as_envelope_or_key_fail_at_once() {
    let dir = oci_attest_tests::require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    signed_run(d, "ed25519");
    nix::unistd::mkfifo(
        &d.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for (args, code, message) in [
        (
            ["verify", "--key", "key.pem.pub", "fifo"],
            1,
            "fifo: not a regular file",
        ),
        (
            ["verify", "--key", "key.pem.pub", "/dev/zero"],
            1,
            "/dev/zero: not a regular file",
        ),
        (
            ["verify", "--key", "fifo", "att.json"],
            4,
            "fifo: not a regular file",
        ),
        (
            ["verify", "--key", "/dev/zero", "att.json"],
            4,
            "/dev/zero: not a regular file",
        ),
    ] {
        let output = oci_attest(d, &args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn many_bad_rsa_signatures_are_rejected() {
    let dir = oci_attest_tests::require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    signed_run(d, "rsa");
    let mut envelope: Value =
        serde_json::from_slice(&std::fs::read(d.join("att.json")).unwrap()).unwrap();
    let good = envelope["signatures"][0].clone();
    let good_sig = BASE64.decode(good["sig"].as_str().unwrap()).unwrap();
    let last = good_sig.len() - 1;
    let signatures: Vec<Value> = (1..=100u8)
        .map(|flip| {
            let mut bad_sig = good_sig.clone();
            bad_sig[last] ^= flip;
            serde_json::json!({"keyid": good["keyid"], "sig": BASE64.encode(&bad_sig)})
        })
        .collect();
    envelope["signatures"] = Value::Array(signatures);
    std::fs::write(d.join("stuffed.json"), envelope.to_string()).unwrap();
    let output = oci_attest(d, &["verify", "--key", "key.pem.pub", "stuffed.json"]);
    assert_exit_saying(&output, 7, "does not verify");

    // The good signature after the stuffing is beyond the cap; first it is found.
    let mut with_good = envelope.clone();
    with_good["signatures"]
        .as_array_mut()
        .unwrap()
        .insert(0, good);
    std::fs::write(d.join("good-first.json"), with_good.to_string()).unwrap();
    let output = oci_attest(
        d,
        &[
            "verify",
            "--allow-untraced",
            "--key",
            "key.pem.pub",
            "good-first.json",
        ],
    );
    assert_exit(&output, 0);
}
