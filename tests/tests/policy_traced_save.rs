//! The example policies of `examples/policies/` against real traced saves: `skopeo copy` of the
//! fixture archive by the unprivileged test user under `oci-attest run --trace ebpf` (the
//! policies deny a root command), the policy written with `oci-attest policy new` from the
//! `.rego` files (the image tag given as a parameter), signed with `oci-attest sign` and checked
//! with `oci-attest verify -p`.
//!
//! Needs root (eBPF), the test user, skopeo and the fixtures `cargo xtask test` prepares.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use oci_attest_tests::command::{describe, output_text};
use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE, APP_IMAGE};
use oci_attest_tests::{oci_attest, paths, require};
use serde_json::Value;

/// The fixture docker-archive (written by skopeo), as the source of the saves.
fn source() -> anyhow::Result<String> {
    oci_attest::binary()?;
    let fixtures = Fixtures::from_env()?;
    Ok(format!(
        "docker-archive:{}",
        fixtures.path(fixtures.get(APP_ARCHIVE)?).display()
    ))
}

fn examples() -> PathBuf {
    paths::workspace_root().join("examples/policies")
}

/// `command` with `args` in `dir`, run to its end.
fn output_in(mut command: Command, dir: &Path, args: &[&str]) -> Output {
    command.args(args).current_dir(dir);
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run `{}`: {error}", describe(&command)))
}

/// A fresh working directory (where the saves run) and a directory for keys, attestations and
/// policies (never materials or products of the saves).
struct Setup {
    /// The command's user owns it.
    work: tempfile::TempDir,
    /// Root's: out of the command's reach.
    out: tempfile::TempDir,
}

impl Setup {
    /// `Err` when root or the test user is missing (a skip outside CI).
    fn new() -> anyhow::Result<Setup> {
        let setup = Setup {
            work: oci_attest::user_dir()?,
            out: tempfile::tempdir()?,
        };
        let output = setup.oci_attest(&["keygen", "--out", &setup.out("key.pem")]);
        assert!(output.status.success(), "{}", output_text(&output));
        Ok(setup)
    }

    fn out(&self, name: &str) -> String {
        self.out.path().join(name).display().to_string()
    }

    fn oci_attest(&self, args: &[&str]) -> Output {
        let binary = oci_attest::binary().unwrap_or_else(|error| panic!("{error:#}"));
        output_in(Command::new(binary), self.work.path(), args)
    }

    /// `oci-attest run --step STEP --trace TRACE -- COMMAND…`, attestation in `STEP.att.json`.
    fn run(&self, step: &str, trace: &str, command: &[&str]) -> Output {
        let (key, outfile) = (self.out("key.pem"), self.out(&format!("{step}.att.json")));
        let mut args = vec![
            "--step", step, "--trace", trace, "-k", &key, "-o", &outfile, "--",
        ];
        args.extend(command);
        let run = oci_attest::run().unwrap_or_else(|error| panic!("{error:#}"));
        output_in(run, self.work.path(), &args)
    }

    /// Writes a policy with `policy new`, one call per step (each `--rego`/`--attestation`
    /// argument list of `steps`, the key and the example directory filled in), and signs it.
    fn sign(&self, steps: &[(&str, &[&str])]) -> String {
        let (key, policy) = (self.out("key.pem.pub"), self.out("policy.json"));
        for (index, (step, extra)) in steps.iter().enumerate() {
            let mut args = vec![
                "policy", "new", "--step", step, "--key", &key, "-o", &policy,
            ];
            if index > 0 {
                args.extend(["--add-to", &policy]);
            }
            args.extend(extra.iter().copied());
            let binary = oci_attest::binary().unwrap_or_else(|error| panic!("{error:#}"));
            let output = output_in(Command::new(binary), &examples(), &args);
            assert!(output.status.success(), "{}", output_text(&output));
        }
        let signed = self.out("policy.signed.json");
        let output = self.oci_attest(&[
            "sign",
            "-k",
            &self.out("key.pem"),
            "--infile",
            &policy,
            "--outfile",
            &signed,
        ]);
        assert!(output.status.success(), "{}", output_text(&output));
        signed
    }

    fn verify(&self, policy: &str, steps: &[&str], artifact: &str) -> Output {
        let key = self.out("key.pem.pub");
        let attestations: Vec<String> = steps
            .iter()
            .map(|step| self.out(&format!("{step}.att.json")))
            .collect();
        let mut args = vec!["verify", "-p", policy, "-k", &key];
        for attestation in &attestations {
            args.extend(["-a", attestation.as_str()]);
        }
        let artifact = self.work.path().join(artifact).display().to_string();
        args.extend(["--artifactfile", &artifact]);
        self.oci_attest(&args)
    }
}

fn skopeo_save<'a>(archive: &'a str, source: &'a str) -> [&'a str; 4] {
    ["skopeo", "copy", source, archive]
}

#[test]
fn traced_save_policy_passes_a_traced_skopeo_copy_only() {
    let source = require!(source());
    let setup = require!(Setup::new());
    let archive = format!("docker-archive:app.tar:{APP_IMAGE}");
    let tag = format!("--param=image_tag={APP_IMAGE}");
    let policy = setup.sign(&[(
        "save",
        &[
            "--rego",
            "traced-save.rego",
            "--rego",
            "run-options.rego",
            "--rego",
            "oci=image-tag.rego",
            &tag,
        ],
    )]);

    let traced = setup.run("save", "ebpf", &skopeo_save(&archive, &source));
    assert!(traced.status.success(), "{}", output_text(&traced));
    let verified = setup.verify(&policy, &["save"], "app.tar");
    let report = output_text(&verified);
    assert!(verified.status.success(), "{report}");
    assert!(report.contains("step save: PASS"), "{report}");

    // The same save untraced.
    std::fs::remove_file(setup.work.path().join("app.tar")).unwrap();
    let untraced = setup.run("save", "off", &skopeo_save(&archive, &source));
    assert!(untraced.status.success(), "{}", output_text(&untraced));
    let verified = setup.verify(&policy, &["save"], "app.tar");
    let report = output_text(&verified);
    assert_eq!(verified.status.code(), Some(7), "{report}");
    assert!(
        report.contains("not traced with eBPF (summary.trace: off)"),
        "{report}"
    );

    // A save whose command then exits 1: the archive exists, the attestation records exit 1.
    std::fs::remove_file(setup.work.path().join("app.tar")).unwrap();
    let script = format!("skopeo copy {source} {archive} && exit 1");
    let failed = setup.run("save", "ebpf", &["sh", "-c", &script]);
    assert_eq!(failed.status.code(), Some(1), "{}", output_text(&failed));
    let verified = setup.verify(&policy, &["save"], "app.tar");
    let report = output_text(&verified);
    assert_eq!(verified.status.code(), Some(7), "{report}");
    assert!(report.contains("the command exited with 1"), "{report}");
}

#[test]
fn build_then_save_policy_follows_the_chain() {
    let source = require!(source());
    let setup = require!(Setup::new());
    let build = setup.run(
        "build",
        "ebpf",
        &["skopeo", "copy", &source, "oci:layout:app"],
    );
    assert!(build.status.success(), "{}", output_text(&build));
    let archive = format!("docker-archive:app.tar:{APP_IMAGE}");
    let save = setup.run("save", "ebpf", &skopeo_save(&archive, "oci:layout:app"));
    assert!(save.status.success(), "{}", output_text(&save));
    let policy = setup.sign(&[
        (
            "build",
            &["--rego", "build-succeeded.rego", "--attestation", "product"],
        ),
        (
            "save",
            &[
                "--artifacts-from",
                "build",
                "--rego",
                "traced-save.rego",
                "--attestation",
                "material",
            ],
        ),
    ]);
    let verified = setup.verify(&policy, &["build", "save"], "app.tar");
    let report = output_text(&verified);
    assert!(verified.status.success(), "{report}");
    assert!(report.contains("step build: PASS"), "{report}");

    // A layout blob changed after the build: the save's materials no longer match.
    let index = setup.work.path().join("layout/index.json");
    let mut text = std::fs::read_to_string(&index).unwrap();
    text.push('\n');
    std::fs::write(&index, text).unwrap();
    std::fs::remove_file(setup.work.path().join("app.tar")).unwrap();
    let save = setup.run("save", "ebpf", &skopeo_save(&archive, "oci:layout:app"));
    assert!(save.status.success(), "{}", output_text(&save));
    let verified = setup.verify(&policy, &["build", "save"], "app.tar");
    let report = output_text(&verified);
    assert_eq!(verified.status.code(), Some(7), "{report}");
    assert!(
        report.contains("material \"layout/index.json\""),
        "{report}"
    );
}

/// `policy new` embeds the `.rego` files byte for byte, with the image tag parameter filled in,
/// and refuses to write the tag rule without it.
#[test]
fn policy_new_embeds_the_example_rego_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("key.pem");
    let keygen = oci_attest::output([Path::new("keygen"), Path::new("--out"), &key]).unwrap();
    assert!(keygen.status.success(), "{}", output_text(&keygen));
    let public = format!("{}.pub", key.display());
    let new = |extra: &[&str]| {
        let mut command = oci_attest::command().unwrap();
        command
            .args([
                "policy",
                "new",
                "--step",
                "save",
                "--key",
                &public,
                "--rego",
                "traced-save.rego",
            ])
            .args(extra)
            .current_dir(examples());
        command.output().unwrap()
    };
    let unset = new(&["--rego", "oci=image-tag.rego"]);
    assert_eq!(unset.status.code(), Some(1), "{}", output_text(&unset));
    assert!(output_text(&unset).contains("--param image_tag=VALUE"));
    let written = new(&[
        "--rego",
        "oci=image-tag.rego",
        "--param",
        "image_tag=reg.example/app:7",
    ]);
    assert!(written.status.success(), "{}", output_text(&written));
    let policy: Value = serde_json::from_slice(&written.stdout).unwrap();
    let attestations = policy["steps"]["save"]["attestations"].as_array().unwrap();
    let module = |index: usize| {
        base64::engine::general_purpose::STANDARD
            .decode(
                attestations[index]["regopolicies"][0]["module"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
    };
    assert_eq!(
        module(0),
        std::fs::read(examples().join("traced-save.rego")).unwrap()
    );
    let tag_rule = String::from_utf8(module(1)).unwrap();
    let file = std::fs::read_to_string(examples().join("image-tag.rego")).unwrap();
    assert_eq!(tag_rule, file.replace("${image_tag}", "reg.example/app:7"));
    assert_eq!(
        attestations[1]["type"],
        "https://aflock.ai/attestations/oci/v0.1"
    );
}
