//! `cargo xtask bench policy`: `oci-attest verify -p` at scale, on attestations written by
//! `oci-attest run` (release build):
//! - **many**: `--count` attestations of one step, every one tied to the artifact and evaluated
//!   by a Rego module, against the floor of the same attestations under a policy without
//!   modules (reading, verifying and linking alone);
//! - **history**: half builds, half saves, as a CI history passed with `-a` (`artifactsFrom` and
//!   `attestationsFrom`), one build → save chain tied to the artifact;
//! - **large**: one attestation of about `--large-mib` MB (a run over a working directory of
//!   many files with long names): peak RSS of `verify -p` and of `verify --key`, against the
//!   envelope's size.
//!
//! The variants of each real attestation differ in the recorded command line, re-signed here
//! with the same Ed25519 key (a run per attestation would take an hour): every one is a
//! distinct statement, none is a duplicate.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::Signer as _;
use oci_attest_tests::oci_attest::{give_to_test_user, run_command};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::bench_inspect::{build_release, measured, Sample};
use crate::load_average;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Attestations per `verify -p` in the many and history cases.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Approximate size of the large attestation, in MB.
    #[arg(long, default_value_t = 200)]
    large_mib: u64,
    /// Where the generated attestations go (the large working directory is kept between runs:
    /// making it is slow).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// Most seconds `verify -p` may take for `--count` attestations each evaluated by Rego.
const TARGET_MANY_SECONDS: f64 = 30.0;
/// Peak RSS of `verify -p` / `verify --key` against the envelope's size.
const TARGET_LARGE_RSS_RATIO: f64 = 2.5;

const COMMAND_RUN: &str = "https://aflock.ai/attestations/command-run/v0.1";
const MATERIAL: &str = "https://aflock.ai/attestations/material/v0.3";
const EXIT_ZERO: &str = "package bench.exit\nimport rego.v1\ndeny contains msg if {\n  input.exitcode != 0\n  msg := sprintf(\"exit code %v\", [input.exitcode])\n}\n";
const BUILD_SUCCEEDED: &str = "package bench.build\nimport rego.v1\nbuild := input.steps.build[\"https://aflock.ai/attestations/command-run/v0.1\"]\ndeny contains \"no build\" if not build\ndeny contains \"the build failed\" if build.exitcode != 0\n";

pub fn run(args: &Args) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives inside the workspace")?
        .to_owned();
    let oci_attest = build_release(&root)?;
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| root.join("target/bench-policy"));
    std::fs::create_dir_all(&work)?;
    let bench = Bench::new(&oci_attest, &work)?;
    let load_before = load_average();

    let many = bench.many(args.count)?;
    let history = bench.history(args.count)?;
    let large = bench.large(args.large_mib)?;

    println!();
    println!(
        "policy bench: {} cores; load average {load_before} before, {} after",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let per_evaluation =
        (many.rego.wall.as_secs_f64() - many.floor.wall.as_secs_f64()).max(0.0) / args.count as f64;
    println!(
        "many:    {} attestations, each evaluated: {:>7.2} s wall, {:>7.2} s cpu, {:>6.1} MiB peak \
         (target ≤ {TARGET_MANY_SECONDS} s: {})",
        args.count,
        many.rego.wall.as_secs_f64(),
        many.rego.cpu,
        many.rego.peak_rss_mib,
        verdict(many.rego.wall.as_secs_f64() <= TARGET_MANY_SECONDS)
    );
    println!(
        "         floor, no Rego module:     {:>7.2} s wall, {:>7.2} s cpu  (ratio {:.2}; {:.2} ms \
         per evaluation)",
        many.floor.wall.as_secs_f64(),
        many.floor.cpu,
        many.rego.wall.as_secs_f64() / many.floor.wall.as_secs_f64(),
        per_evaluation * 1000.0
    );
    println!(
        "history: {} builds and saves, one chain tied: {:>7.2} s wall, {:>7.2} s cpu, {:>6.1} MiB \
         peak",
        args.count,
        history.wall.as_secs_f64(),
        history.cpu,
        history.peak_rss_mib
    );
    let envelope_mib = large.envelope_bytes as f64 / f64::from(1 << 20);
    println!(
        "large:   one {envelope_mib:.1} MiB attestation ({} files), peak RSS (target ≤ \
         {TARGET_LARGE_RSS_RATIO}× its size):",
        large.files
    );
    for (label, sample) in [("verify -p", &large.policy), ("verify --key", &large.key)] {
        let ratio = sample.peak_rss_mib / envelope_mib;
        println!(
            "         {label:<13} {:>7.1} MiB ({ratio:.2}×), {:>6.2} s wall: {}",
            sample.peak_rss_mib,
            sample.wall.as_secs_f64(),
            verdict(ratio <= TARGET_LARGE_RSS_RATIO)
        );
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

struct Many {
    rego: Sample,
    floor: Sample,
}

struct Large {
    envelope_bytes: u64,
    files: usize,
    policy: Sample,
    key: Sample,
}

/// The release binary, a key pair made by `oci-attest keygen`, and a scratch directory.
struct Bench<'a> {
    oci_attest: &'a Path,
    work: &'a Path,
    key: ed25519_dalek::SigningKey,
    keyid: String,
    public_pem: String,
}

impl<'a> Bench<'a> {
    fn new(oci_attest: &'a Path, work: &'a Path) -> Result<Bench<'a>> {
        let private = work.join("key.pem");
        if !private.exists() {
            let status = Command::new(oci_attest)
                .args(["keygen", "--out"])
                .arg(&private)
                .status()?;
            ensure!(status.success(), "oci-attest keygen failed");
        }
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&private)?)
            .context("the bench key is not an Ed25519 PKCS#8 key")?;
        let public_pem = std::fs::read_to_string(work.join("key.pem.pub"))?;
        Ok(Bench {
            oci_attest,
            work,
            key,
            keyid: hex::encode(Sha256::digest(public_pem.as_bytes())),
            public_pem,
        })
    }

    /// `oci-attest run --trace off --step STEP -- sh -c SCRIPT` in `dir`, the command as the
    /// tests' unprivileged user (the harness's `run_command`); the statement.
    fn run(&self, dir: &Path, step: &str, script: &str) -> Result<Value> {
        let outfile = self.work.join(format!("{step}.template.json"));
        let output = run_command(self.oci_attest)?
            .args(["--trace", "off", "--step", step, "-k"])
            .arg(self.work.join("key.pem"))
            .arg("-o")
            .arg(&outfile)
            .args(["--", "sh", "-c", script])
            .current_dir(dir)
            .output()?;
        ensure!(
            output.status.success(),
            "oci-attest run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        statement_of(&std::fs::read(&outfile)?)
    }

    /// Writes `count` variants of `statement` (the recorded command line carries the variant's
    /// number), signed, as `NAME-<n>.json`; returns their paths.
    fn variants(&self, statement: &Value, name: &str, count: usize) -> Result<Vec<PathBuf>> {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut statement = statement.clone();
        let cmd = command_run(&mut statement)?["cmd"].clone();
        let mut paths = Vec::with_capacity(count);
        for number in 0..count {
            let mut variant = cmd.clone();
            if let Some(words) = variant.as_array_mut() {
                words.push(json!(format!("# variant {number}")));
            }
            command_run(&mut statement)?["cmd"] = variant;
            let path = dir.join(format!("{name}-{number}.json"));
            std::fs::write(&path, self.sign(&serde_json::to_vec(&statement)?))?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// A DSSE envelope of `payload` (an in-toto statement) under the bench key.
    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let payload_type = "application/vnd.in-toto+json";
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .into_bytes();
        pae.extend_from_slice(payload);
        let signature = self.key.sign(&pae);
        serde_json::to_vec(&json!({
            "payload": BASE64.encode(payload),
            "payloadType": payload_type,
            "signatures": [{"keyid": self.keyid, "sig": BASE64.encode(signature.to_bytes())}],
        }))
        .expect("serialising a json! literal")
    }

    /// A policy whose steps are `(name, required attestations, artifactsFrom,
    /// attestationsFrom)`, signed with `oci-attest sign`.
    fn policy(&self, name: &str, steps: &[(&str, Value, &[&str], &[&str])]) -> Result<PathBuf> {
        let steps: serde_json::Map<String, Value> = steps
            .iter()
            .map(|(step, attestations, artifacts_from, attestations_from)| {
                let body = json!({
                    "name": step,
                    "functionaries": [{"type": "publickey", "publickeyid": self.keyid}],
                    "attestations": attestations,
                    "artifactsFrom": artifacts_from,
                    "attestationsFrom": attestations_from,
                });
                ((*step).to_owned(), body)
            })
            .collect();
        let document = json!({
            "expires": "2099-01-01T00:00:00Z",
            "publickeys": {&self.keyid: {"keyid": self.keyid, "key": BASE64.encode(&self.public_pem)}},
            "steps": steps,
        });
        let plain = self.work.join(format!("{name}.policy.json"));
        std::fs::write(&plain, serde_json::to_vec(&document)?)?;
        let signed = self.work.join(format!("{name}.policy.signed.json"));
        let output = Command::new(self.oci_attest)
            .args(["sign", "-k"])
            .arg(self.work.join("key.pem"))
            .arg("-f")
            .arg(&plain)
            .arg("-o")
            .arg(&signed)
            .output()?;
        ensure!(
            output.status.success(),
            "oci-attest sign failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(signed)
    }

    /// `verify -p POLICY -a …` for `artifact`, timed; it must hold.
    fn verify(&self, policy: &Path, attestations: &[PathBuf], artifact: &str) -> Result<Sample> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "verify".into(),
            "-p".into(),
            policy.into(),
            "-k".into(),
            self.work.join("key.pem.pub").into(),
            "-s".into(),
            artifact.into(),
        ];
        for attestation in attestations {
            args.push("-a".into());
            args.push(attestation.into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|arg| arg.as_os_str()).collect();
        Ok(measured(self.oci_attest, &args)?.1)
    }

    fn many(&self, count: usize) -> Result<Many> {
        let dir = tempfile::tempdir_in(self.work)?;
        give_to_test_user(dir.path())?;
        let statement = self.run(dir.path(), "save", "printf image > image.tar")?;
        let attestations = self.variants(&statement, "many", count)?;
        let artifact = format!("sha256:{}", hex::encode(Sha256::digest(b"image")));
        let with_rego = json!([{"type": COMMAND_RUN, "regopolicies": [module("exit", EXIT_ZERO)]}]);
        let policy = self.policy("many", &[("save", with_rego, &[], &[])])?;
        let rego = self.verify(&policy, &attestations, &artifact)?;
        let policy = self.policy(
            "floor",
            &[("save", json!([{"type": COMMAND_RUN}]), &[], &[])],
        )?;
        let floor = self.verify(&policy, &attestations, &artifact)?;
        Ok(Many { rego, floor })
    }

    fn history(&self, count: usize) -> Result<Sample> {
        let mut attestations = Vec::with_capacity(count);
        for (name, binary) in [("old", "an older binary"), ("new", "the binary")] {
            let dir = tempfile::tempdir_in(self.work)?;
            give_to_test_user(dir.path())?;
            let build = self.run(dir.path(), "build", &format!("printf '{binary}' > app.bin"))?;
            let save = self.run(dir.path(), "save", "tar -cf image.tar app.bin")?;
            // The CI history: many older builds and saves, one of each for this artifact.
            let copies = if name == "old" { count / 2 - 1 } else { 1 };
            attestations.extend(self.variants(&build, &format!("{name}-build"), copies)?);
            attestations.extend(self.variants(&save, &format!("{name}-save"), copies)?);
            if name == "new" {
                let image = std::fs::read(dir.path().join("image.tar"))?;
                let artifact = format!("sha256:{}", hex::encode(Sha256::digest(&image)));
                let exit_zero =
                    json!([{"type": COMMAND_RUN, "regopolicies": [module("exit", EXIT_ZERO)]}]);
                let save_checks = json!([
                    {"type": COMMAND_RUN, "regopolicies": [module("build", BUILD_SUCCEEDED)]},
                    {"type": MATERIAL},
                ]);
                let policy = self.policy(
                    "history",
                    &[
                        ("build", exit_zero, &[], &[]),
                        ("save", save_checks, &["build"], &["build"]),
                    ],
                )?;
                return self.verify(&policy, &attestations, &artifact);
            }
        }
        unreachable!("the loop returns on its last round")
    }

    fn large(&self, target_mib: u64) -> Result<Large> {
        // A pilot tree says how many files make the envelope `target_mib` MB.
        let pilot_files = 2_000;
        let pilot = self.work.join("large-pilot");
        fill(&pilot, pilot_files)?;
        let pilot_bytes = envelope_size(&self.run(&pilot, "large", "true")?)?;
        let files =
            ((target_mib << 20) as f64 / (pilot_bytes as f64 / pilot_files as f64)) as usize;
        let dir = self.work.join(format!("large-{files}"));
        fill(&dir, files)?;
        let statement = self.run(&dir, "large", "true")?;
        let envelope = self.work.join("large.json");
        std::fs::write(&envelope, self.sign(&serde_json::to_vec(&statement)?))?;
        let envelope_bytes = std::fs::metadata(&envelope)?.len();
        let root = statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|subject| {
                subject["name"]
                    .as_str()
                    .is_some_and(|name| name.ends_with("tree:materials"))
            })
            .and_then(|subject| subject["digest"]["sha256"].as_str())
            .context("no tree:materials subject")?
            .to_owned();
        let steps = json!([
            {"type": COMMAND_RUN, "regopolicies": [module("exit", EXIT_ZERO)]},
            {"type": MATERIAL},
        ]);
        let policy = self.policy("large", &[("large", steps, &[], &[])])?;
        let policy_sample = self.verify(
            &policy,
            std::slice::from_ref(&envelope),
            &format!("sha256:{root}"),
        )?;
        let key = self.work.join("key.pem.pub");
        let key_sample = measured(
            self.oci_attest,
            &[
                "verify".as_ref(),
                "--allow-untraced".as_ref(),
                "-k".as_ref(),
                key.as_os_str(),
                envelope.as_os_str(),
            ],
        )?
        .1;
        Ok(Large {
            envelope_bytes,
            files,
            policy: policy_sample,
            key: key_sample,
        })
    }
}

fn module(name: &str, source: &str) -> Value {
    json!({"name": name, "module": BASE64.encode(source)})
}

fn statement_of(envelope: &[u8]) -> Result<Value> {
    let envelope: Value = serde_json::from_slice(envelope)?;
    let payload = BASE64.decode(envelope["payload"].as_str().context("no payload")?)?;
    Ok(serde_json::from_slice(&payload)?)
}

/// The command-run predicate of `statement`.
fn command_run(statement: &mut Value) -> Result<&mut Value> {
    statement["predicate"]["attestations"]
        .as_array_mut()
        .context("no attestations")?
        .iter_mut()
        .find(|attestation| attestation["type"] == COMMAND_RUN)
        .map(|attestation| &mut attestation["attestation"])
        .context("no command-run attestation")
}

/// The size of `statement` signed, as base64 in an envelope.
fn envelope_size(statement: &Value) -> Result<u64> {
    Ok((serde_json::to_vec(statement)?.len() as u64).div_ceil(3) * 4)
}

/// `count` small files of distinct content under `dir`, with long names (200-odd bytes of
/// path each), in directories of 1 000; kept when already complete.
fn fill(dir: &Path, count: usize) -> Result<()> {
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    let padding = "long-file-name-".repeat(12);
    for number in 0..count {
        let sub = dir.join(format!("directory-{:04}", number / 1000));
        if number % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::write(
            sub.join(format!("{padding}{number:07}")),
            format!("file {number}\n"),
        )?;
    }
    std::fs::write(marker, "")?;
    Ok(())
}
