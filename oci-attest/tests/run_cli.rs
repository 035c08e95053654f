//! `oci-attest run`, `verify` and `keygen` through the built binary: envelopes, exit codes,
//! key failures caught before the command starts, and an untouched `--outfile` on failure.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oci_attest_tests::require;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use oci_attest_tests::command::{assert_exit, assert_exit_saying};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// What every test here starts from: a working directory the command's user can write (the
/// harness's test user, see `oci_attest_tests::oci_attest`), where oci-attest runs.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// `Err` when root or the test user is missing (a skip outside CI).
    fn new() -> anyhow::Result<Workspace> {
        Ok(Workspace {
            dir: oci_attest_tests::oci_attest::user_dir()?,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `oci-attest run ARGS` here, started as the tests start it (the command runs as the
    /// test user).
    fn run_command(&self, args: &[&str]) -> Command {
        let mut command =
            oci_attest_tests::oci_attest::run_command(Path::new(BIN)).expect("checked by new()");
        command.args(args).current_dir(self.path());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_command(args).output().expect("run oci-attest run")
    }

    /// `run` with the arguments of `line`, split at whitespace, as a CI job would write them.
    fn run_line(&self, line: &str) -> Output {
        self.run(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// Any other subcommand, here.
    fn oci_attest(&self, args: &[&str]) -> Output {
        oci_attest(self.path(), args)
    }

    /// `key.pem` (root's, mode 0600: out of the command's reach) and `key.pem.pub`.
    fn keygen(&self, algorithm: &str) -> PathBuf {
        keygen(self.path(), algorithm)
    }
}

/// `enc.pem`: `key.pem` encrypted (PKCS#8) with `passphrase`.
fn encrypt_key(dir: &Path, passphrase: &str) {
    let status = Command::new("openssl")
        .args([
            "pkcs8", "-topk8", "-in", "key.pem", "-out", "enc.pem", "-passout",
        ])
        .arg(format!("pass:{passphrase}"))
        .current_dir(dir)
        .status()
        .expect("run openssl pkcs8");
    assert!(status.success(), "openssl pkcs8 failed: {status}");
}

fn oci_attest(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("OCI_ATTEST_KEY_PASSPHRASE")
        .output()
        .expect("run oci-attest")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn keygen(dir: &Path, algorithm: &str) -> PathBuf {
    let output = oci_attest(
        dir,
        &["keygen", "--algorithm", algorithm, "--out", "key.pem"],
    );
    assert_exit(&output, 0);
    dir.join("key.pem")
}

fn tar_member(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, data).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A minimal, valid docker-archive: one layer holding `content`, tagged `example.com/app:1`.
fn docker_archive(content: &[u8]) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    tar_member(&mut layer, "hello.txt", content);
    let layer = layer.into_inner().unwrap();
    let diff_id = sha256(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    let config_hex = sha256(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{config_hex}.json","RepoTags":["example.com/app:1"],"Layers":["{diff_id}/layer.tar"]}}]"#
    );
    let mut archive = tar::Builder::new(Vec::new());
    tar_member(
        &mut archive,
        &format!("{config_hex}.json"),
        config.as_bytes(),
    );
    tar_member(&mut archive, &format!("{diff_id}/layer.tar"), &layer);
    tar_member(&mut archive, "manifest.json", manifest.as_bytes());
    archive.into_inner().unwrap()
}

fn payload(envelope: &[u8]) -> Value {
    let envelope: Value = serde_json::from_slice(envelope).unwrap();
    let payload = BASE64
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[test]
fn cp_of_an_image_archive_is_attested_and_verifies_against_the_image() {
    let w = require!(Workspace::new());
    let d = w.path();
    w.keygen("ecdsa-p256");
    std::fs::write(d.join("image.tar"), docker_archive(b"hello")).unwrap();
    let output = w.run_line("-k key.pem -o att.json -a oci -- cp image.tar out.tar");
    assert_exit(&output, 0);
    let envelope = std::fs::read(d.join("att.json")).unwrap();
    assert!(!envelope.ends_with(b"\n"));
    let statement = payload(&envelope);
    let types: Vec<&str> = statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attestation| attestation["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "https://aflock.ai/attestations/material/v0.3",
            "https://aflock.ai/attestations/command-run/v0.1",
            "https://aflock.ai/attestations/product/v0.3",
            "https://aflock.ai/attestations/oci/v0.1",
        ]
    );
    let archive_digest = sha256(&std::fs::read(d.join("out.tar")).unwrap());
    let names: Vec<&str> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|subject| subject["name"].as_str().unwrap())
        .collect();
    let tardigest = format!("https://aflock.ai/attestations/oci/v0.1/tardigest:{archive_digest}");
    assert!(names.contains(&tardigest.as_str()), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let leaves = &statement["predicate"]["attestations"][2]["attestation"]["leaves"];
    assert_eq!(leaves[0]["path"], "out.tar");
    assert_eq!(leaves[0]["fileDigest"], archive_digest.as_str());

    let verified = w.oci_attest(&[
        "verify",
        "--key",
        "key.pem.pub",
        "att.json",
        "--image",
        "out.tar",
    ]);
    let report = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "{report}{}", stderr(&verified));
    assert!(report.contains("signature: ok"), "{report}");
    assert!(report.contains("imageid          ok"), "{report}");

    std::fs::write(d.join("other.tar"), docker_archive(b"tampered")).unwrap();
    let mismatch = w.oci_attest(&[
        "verify",
        "--key",
        "key.pem.pub",
        "att.json",
        "--image",
        "other.tar",
    ]);
    let report = String::from_utf8_lossy(&mismatch.stdout).into_owned();
    assert_eq!(mismatch.status.code(), Some(7), "{report}");
    for field in ["tardigest", "imageid", "diffids", "manifestdigest"] {
        assert!(
            report
                .lines()
                .any(|line| line.trim_start().starts_with(field) && line.contains("MISMATCH")),
            "{field}: {report}"
        );
    }
    assert!(report
        .lines()
        .any(|line| line.trim_start().starts_with("tags") && line.contains(" ok ")));

    // The same comparison as JSON: one entry per fact, attested and derived values as data.
    let mismatch = oci_attest(
        d,
        &[
            "verify",
            "--key",
            "key.pem.pub",
            "att.json",
            "--image",
            "other.tar",
            "--json",
        ],
    );
    assert_exit(&mismatch, 7);
    let report: Value = serde_json::from_slice(&mismatch.stdout).unwrap();
    let image = &report["image"];
    assert_eq!(image["path"], "other.tar");
    assert_eq!(image["matches"], false);
    let fields = image["fields"].as_array().unwrap();
    let field = |name: &str| {
        fields
            .iter()
            .find(|field| field["field"] == name)
            .unwrap_or_else(|| panic!("{name}: {image:#}"))
    };
    assert_eq!(field("imagetags")["matches"], true);
    let imageid = field("imageid");
    assert_eq!(imageid["matches"], false);
    assert_ne!(imageid["attested"]["sha256"], imageid["image"]["sha256"]);
    assert!(image["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|subject| subject["status"] == "missing"));
}

#[test]
fn a_failing_command_keeps_its_exit_code_and_is_still_attested() {
    let w = require!(Workspace::new());
    let d = w.path();
    w.keygen("ed25519");
    let output = w.run(&[
        "--trace",
        "off",
        "-k",
        "key.pem",
        "-o",
        "att.json",
        "--",
        "sh",
        "-c",
        "echo x > f; exit 42",
    ]);
    assert_exit(&output, 42);
    let statement = payload(&std::fs::read(d.join("att.json")).unwrap());
    let of_type = |type_uri: &str| {
        statement["predicate"]["attestations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|attestation| attestation["type"] == type_uri)
            .map(|attestation| attestation["attestation"].clone())
            .unwrap()
    };
    // witness's defaults: environment (and git, skipped outside a work tree) without -a.
    assert_eq!(
        of_type("https://aflock.ai/attestations/environment/v0.1")["os"],
        "linux"
    );
    let command_run = &of_type("https://aflock.ai/attestations/command-run/v0.1");
    assert_eq!(command_run["exitcode"], 42);
    assert_eq!(command_run["summary"]["trace"], "off");
    assert_eq!(
        command_run["summary"]["reason"],
        "disabled with --trace off"
    );
    let products = &of_type("https://aflock.ai/attestations/product/v0.3")["leaves"];
    assert_eq!(products[0]["path"], "f");
    // verify tells the truth about the run: a failed, untraced run does not pass by default.
    let refused = w.oci_attest(&["verify", "--key", "key.pem.pub", "att.json"]);
    assert_exit(&refused, 7);
    let report = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(report.contains("signature: ok"), "{report}");
    assert!(
        report
            .contains("run: command exit code 42, trace off (disabled with --trace off), complete"),
        "{report}"
    );
    assert!(
        stderr(&refused).contains("--allow-failed-command"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("--allow-untraced"),
        "{}",
        stderr(&refused)
    );
    let verified = w.oci_attest(&[
        "verify",
        "--key",
        "key.pem.pub",
        "--allow-failed-command",
        "--allow-untraced",
        "--json",
        "att.json",
    ]);
    assert_exit(&verified, 0);
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["run"]["exitcode"], 42);
    assert_eq!(report["run"]["trace"], "off");
    assert_eq!(report["problems"], serde_json::json!([]));

    // A statement written with --unsigned is called what it is.
    let unsigned = w.run_line("--trace off --unsigned -o bare.json -- true");
    assert_exit(&unsigned, 0);
    let output = w.oci_attest(&["verify", "--key", "key.pem.pub", "bare.json"]);
    assert_exit_saying(
        &output,
        7,
        "unsigned in-toto statement (written with --unsigned)",
    );
}

#[test]
fn unsigned_writes_the_bare_statement_and_no_key_is_an_error() {
    let w = require!(Workspace::new());
    let d = w.path();
    let output = w.run_line("--trace off --unsigned -o /dev/stdout -- true");
    assert_exit(&output, 0);
    let statement: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v0.1");
    assert_eq!(statement["predicate"]["name"], "run");

    let output = w.run_line("--trace off -- touch ran");
    assert_exit_saying(&output, 125, "no signing key");
    assert!(!d.join("ran").exists());
}

#[test]
fn unusable_keys_fail_before_the_command_starts() {
    let w = require!(Workspace::new());
    let d = w.path();
    w.keygen("ed25519");
    encrypt_key(d, "right");
    std::fs::write(d.join("garbage.pem"), "hello").unwrap();
    std::fs::write(d.join("pass"), "wrong\n").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["-k", "missing.pem"], "missing.pem: key file not found"),
        (&["-k", "key.pem.pub"], "key.pem.pub: holds a public key"),
        (&["-k", "garbage.pem"], "garbage.pem: not a PEM key file"),
        (
            &["-k", "enc.pem"],
            "enc.pem: encrypted private key but no passphrase given",
        ),
        (
            &["-k", "enc.pem", "--signer-file-key-passphrase-path", "pass"],
            "enc.pem: wrong passphrase",
        ),
    ];
    for (key_args, message) in cases {
        let mut args = vec!["--trace", "off", "-o", "att.json"];
        args.extend_from_slice(key_args);
        args.extend_from_slice(&["--", "touch", "ran"]);
        let output = w.run(&args);
        assert_eq!(
            output.status.code(),
            Some(125),
            "{key_args:?}: {}",
            stderr(&output)
        );
        let error = stderr(&output);
        assert!(error.contains(message), "{key_args:?}: {error}");
        assert!(error.contains("(reason: key-error)"), "{error}");
        assert_eq!(error.trim_end().lines().count(), 1, "{error}");
        assert!(!d.join("ran").exists(), "{key_args:?} ran the command");
        assert!(!d.join("att.json").exists());
    }
    std::fs::write(d.join("pass"), "right\n").unwrap();
    // The passphrase file was written with the umask's 0644: the command's user could read it.
    let refused = w.run_line(
        "--trace off -k enc.pem --signer-file-key-passphrase-path pass -o att.json -- touch ran",
    );
    assert_exit(&refused, 125);
    let error = stderr(&refused);
    assert!(
        error.contains("pass can be read by oci-attest-test"),
        "{error}"
    );
    assert!(
        error.contains("(reason: key-readable-by-command)"),
        "{error}"
    );
    assert!(!d.join("ran").exists());
    std::fs::set_permissions(d.join("pass"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = w.run_line(
        "--trace off -k enc.pem --signer-file-key-passphrase-path pass -o att.json -- true",
    );
    assert_exit(&output, 0);
}

#[test]
fn a_tampered_archive_fails_the_run_and_leaves_the_outfile_untouched() {
    let w = require!(Workspace::new());
    let d = w.path();
    w.keygen("ed25519");
    let mut archive = docker_archive(b"hello");
    // Flip a byte of the layer's file content: its diffID no longer matches the config.
    let position = archive
        .windows(5)
        .position(|window| window == b"hello")
        .unwrap();
    archive[position] = b'j';
    std::fs::write(d.join("image.tar"), archive).unwrap();
    std::fs::write(d.join("att.json"), "previous").unwrap();
    let output = w.run_line("--trace off -k key.pem -o att.json -a oci -- cp image.tar out.tar");
    assert_exit_saying(&output, 125, "out.tar");
    assert!(
        stderr(&output).contains("(reason: analysis-failed)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(d.join("att.json")).unwrap(), b"previous");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn verify_detects_a_tampered_envelope() {
    let w = require!(Workspace::new());
    let d = w.path();
    w.keygen("ed25519");
    let output = w.run_line("--trace off -k key.pem -o att.json -- true");
    assert_exit(&output, 0);
    let mut envelope: Value =
        serde_json::from_slice(&std::fs::read(d.join("att.json")).unwrap()).unwrap();
    let mut statement = payload(&std::fs::read(d.join("att.json")).unwrap());
    statement["predicate"]["name"] = "evil".into();
    envelope["payload"] = BASE64
        .encode(serde_json::to_vec(&statement).unwrap())
        .into();
    std::fs::write(
        d.join("tampered.json"),
        serde_json::to_vec(&envelope).unwrap(),
    )
    .unwrap();
    let output = w.oci_attest(&["verify", "--key", "key.pem.pub", "tampered.json"]);
    assert_eq!(output.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&output.stdout).contains("does not verify"));

    let other = tempfile::tempdir().unwrap();
    keygen(other.path(), "ed25519");
    let other_key = other.path().join("key.pem.pub");
    let output = w.oci_attest(&["verify", "--key", other_key.to_str().unwrap(), "att.json"]);
    assert_eq!(output.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&output.stdout).contains("no signature with keyid"));
}

/// A minimal OCI image layout directory holding one image with `content` in its layer.
fn oci_layout(dir: &Path, content: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest), bytes).unwrap();
        format!(r#"{{"digest":"sha256:{digest}","size":{}}}"#, bytes.len())
    };
    let mut layer = tar::Builder::new(Vec::new());
    tar_member(&mut layer, "hello.txt", content);
    let layer = layer.into_inner().unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        sha256(&layer)
    );
    let with_type = |descriptor: String, media_type: &str| {
        descriptor.replacen('{', &format!(r#"{{"mediaType":"{media_type}","#), 1)
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
        with_type(
            blob(config.as_bytes()),
            "application/vnd.oci.image.config.v1+json"
        ),
        with_type(blob(&layer), "application/vnd.oci.image.layer.v1.tar"),
    );
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
        with_type(
            blob(manifest.as_bytes()),
            "application/vnd.oci.image.manifest.v1+json"
        )
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn a_produced_oci_layout_dir_attaches_oci_and_is_analysed_as_one_image() {
    let w = require!(Workspace::new());
    let d = w.path();
    oci_layout(&d.join("src"), b"layout content");
    let output = w.run_line("--trace off --unsigned -o st.json -- cp -r src out");
    assert_exit(&output, 0);
    let statement: Value =
        serde_json::from_slice(&std::fs::read(d.join("st.json")).unwrap()).unwrap();
    assert_eq!(statement["predicate"]["name"], "oci-save");
    let oci: Vec<&Value> = statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|attestation| attestation["type"] == "https://aflock.ai/attestations/oci/v0.1")
        .collect();
    // One analysis of the layout, none of its blobs (the layer blob is a tar too).
    assert_eq!(oci.len(), 1, "{oci:?}");
    assert_eq!(oci[0]["attestation"]["format"], "oci-layout");
}

#[test]
fn requested_oci_without_an_archive_is_skipped_with_a_notice() {
    let w = require!(Workspace::new());
    let output = w.run_line("--trace off --unsigned -o /dev/stdout -a oci -- true");
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("oci attestor skipped"),
        "{}",
        stderr(&output)
    );
    let statement: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        statement["predicate"]["attestations"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn output_and_passphrase_problems_are_found_before_the_command_and_the_passphrase_is_not_inherited()
{
    let w = require!(Workspace::new());
    let d = w.path();
    let output = w.run_line("--trace off --unsigned -o no/such/dir/att.json -- touch ran");
    assert_exit_saying(&output, 125, "does not exist");
    assert!(!d.join("ran").exists());

    w.keygen("ed25519");
    encrypt_key(d, "from-env-123");
    let output = w
        .run_command(&[
            "--trace",
            "off",
            "-k",
            "enc.pem",
            "-o",
            "att.json",
            "--",
            "sh",
            "-c",
            "echo \"[$OCI_ATTEST_KEY_PASSPHRASE]\" > seen",
        ])
        .env("OCI_ATTEST_KEY_PASSPHRASE", "from-env-123")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(std::fs::read_to_string(d.join("seen")).unwrap(), "[]\n");
}

/// `run`'s own failures never collide with the command's codes: 127 not found, 126 not
/// executable, 125 oci-attest failed, the child's own code passed through.
#[test]
fn run_exit_codes_follow_env_and_timeout() {
    let w = require!(Workspace::new());
    let d = w.path();
    std::fs::write(d.join("not-executable"), "#!/bin/sh\n").unwrap();
    let base = ["--trace", "off", "--unsigned", "-o", "att.json", "--"];
    let cases: [(&[&str], i32, &str); 4] = [
        (&["no-such-command-xyz"], 127, "(reason: command-not-found)"),
        (&["./no-such-file"], 127, "(reason: command-not-found)"),
        (
            &["./not-executable"],
            126,
            "(reason: command-not-executable)",
        ),
        (&["sh", "-c", "exit 125"], 125, "exit code 125"),
    ];
    for (command, code, message) in cases {
        let args: Vec<&str> = base.iter().chain(command).copied().collect();
        let output = w.run(&args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{command:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{command:?}: {}",
            stderr(&output)
        );
    }
}

/// witness/cilock habits: unsupported witness flags get one clear line (exit 2, nothing runs);
/// a `.witness.yaml` `run:` section supplies options and flags override it.
#[test]
fn witness_flags_and_config_file() {
    let w = require!(Workspace::new());
    let d = w.path();
    for flag in [
        "--enable-archivista",
        "--archivista-server=https://archivista.example",
        "--signer-fulcio-url",
        "--signer-kms-ref",
    ] {
        let output = w.run(&["--unsigned", flag, "--", "touch", "ran"]);
        assert_eq!(output.status.code(), Some(2), "{flag}: {}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.starts_with("oci-attest: not supported by oci-attest yet: --"),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(!d.join("ran").exists());
    }

    std::fs::write(
        d.join(".witness.yaml"),
        "run:\n  step: from-config\n  outfile: config.json\n  trace: false\n  unsigned: true\n  \
         attestations: [environment]\n  env-exclude-sensitive-key: [MY_TOKEN]\n",
    )
    .unwrap();
    let output = w
        .run_command(&["--step", "from-flag", "--", "true"])
        .env("MY_TOKEN", "shown-because-excluded")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let statement: Value =
        serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    assert_eq!(statement["predicate"]["name"], "from-flag");
    let environment = &statement["predicate"]["attestations"][0];
    assert_eq!(
        environment["type"],
        "https://aflock.ai/attestations/environment/v0.1"
    );
    assert_eq!(
        environment["attestation"]["variables"]["MY_TOKEN"],
        "shown-because-excluded"
    );

    std::fs::write(d.join(".oci-attest.yaml"), "run:\n  no-such-option: 1\n").unwrap();
    let output = w.run_line("--unsigned -- touch ran");
    assert_exit_saying(
        &output,
        2,
        ".oci-attest.yaml: run.no-such-option: not an option",
    );
    assert!(!d.join("ran").exists());
}

/// Machine-readable output: `run --json` (success and failure), `tools --json`, `doctor
/// --json`, and `inspect` of a missing file is an I/O error (1), not a failed analysis (5).
#[test]
fn json_summaries_and_inspect_of_a_missing_file() {
    let w = require!(Workspace::new());
    w.keygen("ed25519");
    let output = w.run(&[
        "--trace",
        "off",
        "-k",
        "key.pem",
        "-o",
        "att.json",
        "--json",
        "--",
        "sh",
        "-c",
        "echo b > b.txt; echo a > a.txt; exit 3",
    ]);
    assert_exit(&output, 3);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["step"], "run");
    assert_eq!(summary["outfile"], "att.json");
    assert_eq!(summary["exitcode"], 3);
    assert_eq!(summary["signed"], true);
    assert_eq!(summary["products"], serde_json::json!(["a.txt", "b.txt"]));
    assert_eq!(summary["trace"]["trace"], "off");
    assert!(summary["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|subject| subject.as_str().unwrap().ends_with("tree:products")));

    let output = w.run_line("--trace off -k missing.pem -o x.json --json -- true");
    assert_eq!(output.status.code(), Some(125));
    let failure: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(failure["exitcode"], 125);
    assert_eq!(failure["reason"], "key-error");
    assert!(failure["error"].as_str().unwrap().contains("missing.pem"));

    for args in [
        &["tools", "list", "--json"][..],
        &["tools", "list", "--format", "json"],
        &["tools", "show", "oci", "--json"],
        &["doctor", "--json"],
    ] {
        let output = w.oci_attest(args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        serde_json::from_slice::<Value>(&output.stdout)
            .unwrap_or_else(|error| panic!("{args:?}: {error}"));
    }

    let output = w.oci_attest(&["inspect", "no-such.tar"]);
    assert_exit_saying(&output, 1, "no-such.tar: cannot read");
}

/// `--log-format json`: one object per line, with the facts as fields, not only in a message.
#[test]
fn json_logs_carry_structured_fields() {
    let w = require!(Workspace::new());
    let output = w.run(&[
        "--log-format",
        "json",
        "--trace",
        "off",
        "--unsigned",
        "-o",
        "att.json",
        "--",
        "sh",
        "-c",
        "echo p > p.txt",
    ]);
    assert_exit(&output, 0);
    let events: Vec<Value> = stderr(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect();
    assert!(
        events.iter().any(|event| event["path"] == "p.txt"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|event| event["outfile"] == "att.json"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|event| event["exitcode"] == 0),
        "{events:?}"
    );
}

/// `oci-attest tools list | head -1`: when the reader has gone, the listing ends quietly by
/// SIGPIPE, as other Unix tools do; it does not panic on the broken pipe.
#[test]
fn listing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    // The reading end is closed before the listing starts: its first write meets a broken pipe.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let output = Command::new(BIN)
        .args(["tools", "list"])
        .stdout(std::process::Stdio::from(writer))
        .output()
        .unwrap();
    let text = stderr(&output);
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{text}");
}
