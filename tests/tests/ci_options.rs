//! A hostile working directory, as a malicious pull request would write it: a `.witness.yaml` in
//! the checkout that hides the products, renames the step, points the run at a pristine copy,
//! or lets secrets through. For each class the signed statement names the option and its file
//! (path and sha256), `oci-attest verify` prints it as weakening the run, and the example
//! policy (`examples/policies/run-options.rego`) fails the run; the same checkout without the
//! file passes it, and an exclusion from a config file outside the checkout (`-c`) is allowed.
//!
//! Needs root (eBPF): every run is traced.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use oci_attest_tests::command::output_text;
use oci_attest_tests::{oci_attest, paths, require};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const COMMAND_RUN: &str = "https://aflock.ai/attestations/command-run/v0.1";

/// A checkout with a source file, and a directory outside it for keys, attestations and
/// policies.
struct Job {
    checkout: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Job {
    fn new() -> anyhow::Result<Job> {
        oci_attest_tests::root()?;
        let job = Job {
            checkout: tempfile::tempdir()?,
            out: tempfile::tempdir()?,
        };
        std::fs::write(job.checkout.path().join("main.c"), "int main(void) {}\n")?;
        // The command may run as an unprivileged user: it writes its product here.
        open_to_all(job.checkout.path())?;
        let output = oci_attest::output(["keygen", "--out", job.out("key.pem").to_str().unwrap()])?;
        anyhow::ensure!(output.status.success(), "{}", output_text(&output));
        Ok(job)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    fn checkout(&self) -> PathBuf {
        self.checkout.path().canonicalize().unwrap()
    }

    /// Writes `.witness.yaml` into the checkout.
    fn config(&self, text: &str) -> PathBuf {
        let path = self.checkout().join(".witness.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A traced run in the checkout that builds `product.txt`; returns its output and the
    /// decoded statement.
    fn run(&self, extra: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
        let outfile = self.out("att.json");
        let _ = std::fs::remove_file(&outfile);
        let output = oci_attest::run()
            .unwrap()
            .current_dir(self.checkout.path())
            .envs(env.iter().copied())
            .args(["--trace", "ebpf", "-a", "environment", "-k"])
            .arg(self.out("key.pem"))
            .arg("-o")
            .arg(&outfile)
            .args(extra)
            .args(["--", "sh", "-c", "echo built > product.txt"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", output_text(&output));
        let envelope: Value = serde_json::from_slice(&std::fs::read(&outfile).unwrap()).unwrap();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        (output, serde_json::from_slice(&payload).unwrap())
    }

    /// `oci-attest verify --key` of the last attestation.
    fn verify(&self) -> String {
        let (key, attestation) = (self.out("key.pem.pub"), self.out("att.json"));
        let output = oci_attest::output([
            OsStr::new("verify"),
            OsStr::new("--key"),
            key.as_os_str(),
            attestation.as_os_str(),
        ])
        .unwrap();
        let text = output_text(&output);
        assert!(output.status.success(), "{text}");
        text
    }

    /// The example policy module as the one check of step `step`, signed; `verify -p` of the
    /// last attestation, by its materials subject.
    fn policy(&self, step: &str, statement: &Value) -> Output {
        let public = std::fs::read(self.out("key.pem.pub")).unwrap();
        let keyid = hex(&Sha256::digest(&public));
        let module =
            std::fs::read(paths::workspace_root().join("examples/policies/run-options.rego"))
                .unwrap();
        let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let policy = json!({
            "expires": "2030-01-01T00:00:00Z",
            "publickeys": {&keyid: {"keyid": &keyid, "key": base64(&public)}},
            "steps": {step: {
                "name": step,
                "functionaries": [{"type": "publickey", "publickeyid": &keyid}],
                "attestations": [{
                    "type": COMMAND_RUN,
                    "regopolicies": [{"name": "run-options", "module": base64(&module)}]
                }]
            }}
        });
        std::fs::write(self.out("policy.json"), policy.to_string()).unwrap();
        let (key, policy, signed) = (
            self.out("key.pem"),
            self.out("policy.json"),
            self.out("policy.signed.json"),
        );
        let output = oci_attest::output([
            OsStr::new("sign"),
            OsStr::new("-k"),
            key.as_os_str(),
            OsStr::new("--infile"),
            policy.as_os_str(),
            OsStr::new("--outfile"),
            signed.as_os_str(),
        ])
        .unwrap();
        assert!(output.status.success(), "{}", output_text(&output));
        let materials = statement["subject"]
            .as_array()
            .unwrap()
            .iter()
            .find(|subject| {
                subject["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("/tree:materials")
            })
            .expect("a materials subject");
        let subject = format!("sha256:{}", materials["digest"]["sha256"].as_str().unwrap());
        let (public_key, attestation) = (self.out("key.pem.pub"), self.out("att.json"));
        oci_attest::output([
            OsStr::new("verify"),
            OsStr::new("-p"),
            signed.as_os_str(),
            OsStr::new("-k"),
            public_key.as_os_str(),
            OsStr::new("-a"),
            attestation.as_os_str(),
            OsStr::new("-s"),
            OsStr::new(&subject),
        ])
        .unwrap()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn open_to_all(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
}

/// The command-run predicate's `options`.
fn options(statement: &Value) -> &Value {
    let command_run = statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["type"] == COMMAND_RUN)
        .unwrap();
    &command_run["attestation"]["options"]
}

/// The setting `name` came from `config`, whose path and sha256 the statement, the run's log
/// and `verify` name; the policy fails the run with `denial`.
fn assert_named_everywhere(
    job: &Job,
    (output, statement): &(Output, Value),
    config: &Path,
    name: &str,
    step: &str,
    denial: &str,
) {
    let digest = hex(&Sha256::digest(std::fs::read(config).unwrap()));
    let path = config.display().to_string();
    let setting = &options(statement)["settings"][name];
    assert_eq!(
        setting["source"],
        json!({"kind": "config-file", "path": path, "sha256": digest,
               "key": format!("run.{name}"), "inworkingdir": name != "workingdir"}),
        "{setting}"
    );
    assert!(
        options(statement)["configfiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|file| file["path"] == path.as_str() && file["sha256"] == digest.as_str()),
        "{}",
        options(statement)
    );
    let log = output_text(output);
    assert!(
        log.contains(&format!("options from {path} (sha256:{digest})")),
        "{log}"
    );
    let verified = job.verify();
    let line = verified
        .lines()
        .find(|line| line.trim_start().starts_with(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("verify does not name {name}:\n{verified}"));
    assert!(line.contains(&path) && line.contains(&digest), "{line}");
    let judged = job.policy(step, statement);
    let report = output_text(&judged);
    assert_eq!(judged.status.code(), Some(7), "{report}");
    assert!(report.contains(denial), "{report}");
}

#[test]
fn products_hidden_by_a_checkout_file_are_named_and_denied() {
    let job = require!(Job::new());
    // Control: the same job without the file passes the policy.
    let clean = job.run(&[], &[]);
    assert!(clean.1.to_string().contains("product.txt"));
    let judged = job.policy("run", &clean.1);
    assert!(judged.status.success(), "{}", output_text(&judged));
    assert!(job.verify().contains("options: defaults"));

    let config = job.config("run:\n  attestor-product-exclude-glob: ['**']\n");
    let hostile = job.run(&[], &[]);
    let products = hostile.1["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["type"] == "https://aflock.ai/attestations/product/v0.3")
        .unwrap();
    assert!(!products.to_string().contains("product.txt"), "{products}");
    assert_named_everywhere(
        &job,
        &hostile,
        &config,
        "attestor-product-exclude-glob",
        "run",
        "attestor-product-exclude-glob = [\"**\"] was set by",
    );

    // The platform team's file outside the checkout may exclude: named, not denied.
    std::fs::remove_file(&config).unwrap();
    let platform = job.out("platform.yaml");
    std::fs::write(
        &platform,
        "run:\n  attestor-product-exclude-glob: ['*.log']\n",
    )
    .unwrap();
    let (_, statement) = job.run(&["-c", platform.to_str().unwrap()], &[]);
    let source = &options(&statement)["settings"]["attestor-product-exclude-glob"]["source"];
    assert_eq!(source["inworkingdir"], false, "{source}");
    assert!(job
        .verify()
        .contains("attestor-product-exclude-glob = [\"*.log\"]"));
    let judged = job.policy("run", &statement);
    assert!(judged.status.success(), "{}", output_text(&judged));
}

#[test]
fn a_step_renamed_by_a_checkout_file_is_named_and_denied() {
    let job = require!(Job::new());
    let config = job.config("run:\n  step: build\n");
    let hostile = job.run(&[], &[]);
    assert_eq!(hostile.1["predicate"]["name"], "build");
    assert_named_everywhere(
        &job,
        &hostile,
        &config,
        "step",
        "build",
        "step = build was set by",
    );
}

#[test]
fn a_working_directory_redirected_by_a_checkout_file_is_named_and_denied() {
    let job = require!(Job::new());
    let pristine = tempfile::tempdir().unwrap();
    std::fs::write(
        pristine.path().join("main.c"),
        "int main(void) { return 0; }\n",
    )
    .unwrap();
    open_to_all(pristine.path()).unwrap();
    let pristine_path = pristine.path().canonicalize().unwrap();
    let config = job.config(&format!(
        "run:\n  workingdir: {}\n",
        pristine_path.display()
    ));
    let hostile = job.run(&[], &[]);
    let workingdir = &options(&hostile.1)["settings"]["workingdir"]["value"];
    assert_eq!(workingdir["path"], pristine_path.display().to_string());
    let metadata = std::fs::metadata(&pristine_path).unwrap();
    assert_eq!(
        workingdir["ino"],
        std::os::unix::fs::MetadataExt::ino(&metadata)
    );
    assert_eq!(
        options(&hostile.1)["invocationdir"]["path"],
        job.checkout().display().to_string()
    );
    assert_named_everywhere(
        &job,
        &hostile,
        &config,
        "workingdir",
        "run",
        "is not the checkout",
    );
}

#[test]
fn secrets_allowed_by_a_checkout_file_are_named_and_denied() {
    let job = require!(Job::new());
    let config = job.config("run:\n  env-allow-sensitive-key: ['*']\n");
    let hostile = job.run(&[], &[("GITHUB_TOKEN", "ghp-allowed-by-the-checkout")]);
    // What the option does: the token is in clear. The policy is what stops the run.
    assert!(hostile
        .1
        .to_string()
        .contains("ghp-allowed-by-the-checkout"));
    assert_named_everywhere(
        &job,
        &hostile,
        &config,
        "env-allow-sensitive-key",
        "run",
        "env-allow-sensitive-key = [\"*\"] was set by",
    );
}
