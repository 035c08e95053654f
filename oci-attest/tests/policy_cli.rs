//! `oci-attest sign` and `verify -p` through the built binary, on attestations written by real
//! (untraced) `oci-attest run`s: the build → save chain, every way the policy or the evidence
//! can fail, and hostile policies that must fail within time and memory limits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use oci_attest::{dsse, keys};
use oci_attest_tests::command::output_text as text;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");
const COMMAND_RUN: &str = "https://aflock.ai/attestations/command-run/v0.1";
const MATERIAL: &str = "https://aflock.ai/attestations/material/v0.3";
const PRODUCT: &str = "https://aflock.ai/attestations/product/v0.3";

fn oci_attest(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("OCI_ATTEST_KEY_PASSPHRASE")
        .output()
        .expect("run oci-attest")
}

/// Keys live outside the working directory, so they are never materials or products.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new(names: &[&str]) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            let out = format!("{name}.pem");
            let output = oci_attest(dir.path(), &["keygen", "--out", &out]);
            assert!(output.status.success(), "{}", text(&output));
        }
        Keys { dir }
    }

    fn private(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.pem"))
            .display()
            .to_string()
    }

    fn public(&self, name: &str) -> String {
        format!("{}.pub", self.private(name))
    }

    fn pem(&self, name: &str) -> String {
        std::fs::read_to_string(self.public(name)).unwrap()
    }

    fn keyid(&self, name: &str) -> String {
        hex::encode(Sha256::digest(self.pem(name)))
    }
}

fn module(name: &str, source: &str) -> Value {
    json!({"name": name, "module": BASE64.encode(source)})
}

const EXIT_ZERO_V0: &str =
    "package policy.exit\ndeny[msg] {\n  input.exitcode != 0\n  msg := sprintf(\"exit code %v\", [input.exitcode])\n}\n";

/// A policy with `steps` (name → (functionary key name, required attestations, artifactsFrom)).
fn policy(keys: &Keys, trusted: &[&str], steps: &[(&str, &str, Value, &[&str])]) -> Value {
    let publickeys: serde_json::Map<String, Value> = trusted
        .iter()
        .map(|name| {
            let id = keys.keyid(name);
            (
                id.clone(),
                json!({"keyid": id, "key": BASE64.encode(keys.pem(name))}),
            )
        })
        .collect();
    let steps: serde_json::Map<String, Value> = steps
        .iter()
        .map(|(name, signer, attestations, from)| {
            (
                (*name).to_owned(),
                json!({
                    "name": name,
                    "functionaries": [{"type": "publickey", "publickeyid": keys.keyid(signer)}],
                    "attestations": attestations,
                    "artifactsFrom": from,
                }),
            )
        })
        .collect();
    json!({"expires": "2099-01-01T00:00:00Z", "publickeys": publickeys, "steps": steps})
}

fn command_run(modules: &[Value]) -> Value {
    json!({"type": COMMAND_RUN, "regopolicies": modules})
}

/// The standard two steps: build (exit 0, products) → save (exit 0, materials from build).
fn chain_policy(keys: &Keys, signer: &str) -> Value {
    let build = json!([command_run(&[module("exit", EXIT_ZERO_V0)]), {"type": PRODUCT}]);
    let save = json!([command_run(&[module("exit", EXIT_ZERO_V0)]), {"type": MATERIAL}]);
    policy(
        keys,
        &["policy", signer],
        &[
            ("build", signer, build, &[]),
            ("save", signer, save, &["build"]),
        ],
    )
}

/// Writes `document` and signs it with `oci-attest sign` under key `signer`.
fn sign_policy(work: &Path, keys: &Keys, signer: &str, document: &Value) -> PathBuf {
    let plain = work.join("policy.json");
    std::fs::write(&plain, serde_json::to_vec_pretty(document).unwrap()).unwrap();
    let signed = work.join("policy.signed.json");
    let output = oci_attest(
        work,
        &[
            "sign",
            "-k",
            &keys.private(signer),
            "--infile",
            plain.to_str().unwrap(),
            "--outfile",
            signed.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    std::fs::remove_file(plain).unwrap();
    signed
}

fn run_step(work: &Path, keys: &Keys, signer: &str, step: &str, outfile: &Path, script: &str) {
    let output = oci_attest(
        work,
        &[
            "run",
            "--trace",
            "off",
            "--step",
            step,
            "-k",
            &keys.private(signer),
            "-o",
            outfile.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
}

/// A working directory holding attestations of `build` (writes app.bin) then `save` (tars it
/// into image.tar), signed by `signer`. Attestations go to a separate directory so they are
/// not materials.
struct Chain {
    work: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Chain {
    fn run(keys: &Keys, signer: &str, between: &str) -> Chain {
        let work = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let w = work.path();
        std::fs::write(w.join("main.c"), "int main(void) { return 0; }\n").unwrap();
        let build_out = out.path().join("build.att.json");
        let save_out = out.path().join("save.att.json");
        run_step(
            w,
            keys,
            signer,
            "build",
            &build_out,
            "printf 'binary' > app.bin",
        );
        if !between.is_empty() {
            std::process::Command::new("sh")
                .args(["-c", between])
                .current_dir(w)
                .status()
                .unwrap();
        }
        run_step(
            w,
            keys,
            signer,
            "save",
            &save_out,
            "tar -cf image.tar app.bin",
        );
        Chain { work, out }
    }

    fn attestation(&self, step: &str) -> String {
        let path = self.out.path().join(format!("{step}.att.json"));
        path.display().to_string()
    }

    fn artifact(&self) -> String {
        self.work.path().join("image.tar").display().to_string()
    }
}

fn verify(dir: &Path, policy: &Path, key: &str, attestations: &[String], extra: &[&str]) -> Output {
    let mut args = vec!["verify", "-p", policy.to_str().unwrap(), "-k", key];
    for attestation in attestations {
        args.extend(["-a", attestation.as_str()]);
    }
    args.extend(extra);
    oci_attest(dir, &args)
}

#[test]
fn the_build_then_save_chain_passes() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let policy = sign_policy(
        chain.out.path(),
        &keys,
        "policy",
        &chain_policy(&keys, "build"),
    );
    let attestations = [chain.attestation("build"), chain.attestation("save")];
    let artifact = chain.artifact();
    let output = verify(
        chain.out.path(),
        &policy,
        &keys.public("policy"),
        &attestations,
        &["--artifactfile", &artifact],
    );
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("step build: PASS"), "{report}");
    assert!(report.contains("step save: PASS"), "{report}");
    assert!(report.contains("policy: PASS"), "{report}");

    // witness's spellings (`--publickey`, `-f`); `-q` leaves the verdict to the exit code;
    // without the artifact the command line is incomplete (2), as in witness.
    let policy_text = policy.display().to_string();
    let witness_args = [
        "verify",
        "-q",
        "-p",
        &policy_text,
        "--publickey",
        &keys.public("policy"),
        "-a",
        &attestations[0],
        "-a",
        &attestations[1],
    ];
    let output = oci_attest(
        chain.out.path(),
        &[&witness_args[..], &["-f", &artifact]].concat(),
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(output.stdout.is_empty(), "{}", text(&output));
    let output = oci_attest(chain.out.path(), &witness_args);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("--artifactfile <FILE>|--subjects"),
        "{}",
        text(&output)
    );

    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(&artifact).unwrap()))
    );
    // The same by digest, as JSON, with an unusable file among the attestations.
    let junk = chain.out.path().join("junk.json");
    std::fs::write(&junk, "not json").unwrap();
    let mut with_junk = attestations.to_vec();
    with_junk.push(junk.display().to_string());
    let output = verify(
        chain.out.path(),
        &policy,
        &keys.public("policy"),
        &with_junk,
        &["-s", &digest, "--json"],
    );
    assert!(output.status.success(), "{}", text(&output));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["holds"], true);
    assert_eq!(document["steps"].as_array().unwrap().len(), 2);
    assert_eq!(document["steps"][1]["collections"][0]["passed"], true);
    assert!(document["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not a DSSE envelope"));

    // Another artifact is not covered by the attestations.
    let output = verify(
        chain.out.path(),
        &policy,
        &keys.public("policy"),
        &attestations,
        &["-s", &format!("sha256:{}", "ab".repeat(32))],
    );
    assert_eq!(output.status.code(), Some(7), "{}", text(&output));
    assert!(
        text(&output).contains("not tied to the artifact"),
        "{}",
        text(&output)
    );

    // Without the upstream attestation the chain cannot be followed.
    let output = verify(
        chain.out.path(),
        &policy,
        &keys.public("policy"),
        &[chain.attestation("save")],
        &["--artifactfile", &artifact],
    );
    assert_eq!(output.status.code(), Some(7), "{}", text(&output));
    assert!(
        text(&output).contains("no attestation for step \"build\""),
        "{}",
        text(&output)
    );
}

impl Chain {
    /// Signs `document` with key `signer` and checks the chain against it (policy key
    /// `policy`).
    fn check(&self, keys: &Keys, signer: &str, document: &Value) -> Output {
        let policy = sign_policy(self.out.path(), keys, signer, document);
        verify_chain(self, keys, &policy)
    }
}

/// Runs `verify -p` (policy key `policy`) for the standard chain.
fn verify_chain(chain: &Chain, keys: &Keys, policy: &Path) -> Output {
    verify(
        chain.out.path(),
        policy,
        &keys.public("policy"),
        &[chain.attestation("build"), chain.attestation("save")],
        &["--artifactfile", &chain.artifact()],
    )
}

fn assert_fails(output: &Output, code: i32, expected: &str) {
    let report = text(output);
    assert_eq!(output.status.code(), Some(code), "{report}");
    assert!(
        report.contains(expected),
        "expected {expected:?} in:\n{report}"
    );
}

#[test]
fn a_material_that_differs_from_the_upstream_product_fails() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "printf 'evil' > app.bin");
    let output = chain.check(&keys, "policy", &chain_policy(&keys, "build"));
    assert_fails(&output, 7, "material \"app.bin\" has sha256:");
    assert!(
        text(&output).contains("step save: FAIL"),
        "{}",
        text(&output)
    );
}

/// Decodes an envelope's statement, lets `change` edit it, and re-signs it with `key`.
fn resign(envelope_path: &str, key: &str, change: impl FnOnce(&mut Value)) {
    let envelope: Value = serde_json::from_slice(&std::fs::read(envelope_path).unwrap()).unwrap();
    let payload = BASE64
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let mut statement: Value = serde_json::from_slice(&payload).unwrap();
    change(&mut statement);
    let key = keys::load_private_key(Path::new(key), None).unwrap();
    let signed = dsse::sign(&serde_json::to_vec(&statement).unwrap(), &key).unwrap();
    std::fs::write(envelope_path, signed).unwrap();
}

#[test]
fn a_forged_leaf_that_no_longer_reproduces_the_merkle_root_fails() {
    let keys = Keys::new(&["policy", "build"]);
    // app.bin changed between the steps; the signer then rewrites the save step's material
    // leaf to the digest the build produced, so that the chain would look intact.
    let chain = Chain::run(&keys, "build", "printf 'evil' > app.bin");
    let produced = hex::encode(Sha256::digest(b"binary"));
    resign(
        &chain.attestation("save"),
        &keys.private("build"),
        |statement| {
            let attestations = statement["predicate"]["attestations"]
                .as_array_mut()
                .unwrap();
            let material = attestations
                .iter_mut()
                .find(|attestation| attestation["type"] == MATERIAL)
                .unwrap();
            let leaves = material["attestation"]["leaves"].as_array_mut().unwrap();
            let leaf = leaves
                .iter_mut()
                .find(|leaf| leaf["path"] == "app.bin")
                .unwrap();
            leaf["fileDigest"] = json!(produced);
            leaf["leafHash"] = json!(hex::encode(Sha256::digest(hex::decode(&produced).unwrap())));
        },
    );
    let output = chain.check(&keys, "policy", &chain_policy(&keys, "build"));
    assert_fails(&output, 7, "do not reproduce merkleRoot");
}

#[test]
fn attestations_signed_by_a_key_that_is_not_the_functionary_fail() {
    let keys = Keys::new(&["policy", "build", "intruder"]);
    let chain = Chain::run(&keys, "intruder", "");
    // The intruder's key is in the policy, but not a functionary of the steps.
    let mut document = chain_policy(&keys, "build");
    let intruder = keys.keyid("intruder");
    document["publickeys"][&intruder] =
        json!({"keyid": intruder, "key": BASE64.encode(keys.pem("intruder"))});
    let output = chain.check(&keys, "policy", &document);
    assert_fails(&output, 7, "not signed by a functionary of step \"build\"");

    // A key the policy does not know at all: the envelopes are rejected outright.
    let output = chain.check(&keys, "policy", &chain_policy(&keys, "build"));
    assert_fails(&output, 7, "no signature verifies with a key of the policy");
}

#[test]
fn an_expired_policy_fails() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let mut document = chain_policy(&keys, "build");
    document["expires"] = json!("2020-01-01T00:00:00Z");
    let output = chain.check(&keys, "policy", &document);
    assert_fails(&output, 8, "the policy expired at 2020-01-01");
}

#[test]
fn a_policy_signed_by_another_key_fails() {
    let keys = Keys::new(&["policy", "build", "other"]);
    let chain = Chain::run(&keys, "build", "");
    let output = chain.check(&keys, "other", &chain_policy(&keys, "build"));
    assert_fails(&output, 8, "the policy signature does not verify");
}

#[test]
fn rego_denials_fail_with_their_message_and_modules_without_deny_fail_closed() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let v1_deny = module(
        "cmd",
        "package policy.cmd\nimport rego.v1\ndeny contains msg if {\n  input.cmd[2] != \"make\"\n  msg := sprintf(\"unexpected build command %v\", [input.cmd[2]])\n}\n",
    );
    let mut document = chain_policy(&keys, "build");
    document["steps"]["build"]["attestations"][0]["regopolicies"] =
        json!([module("exit", EXIT_ZERO_V0), v1_deny]);
    let output = chain.check(&keys, "policy", &document);
    assert_fails(
        &output,
        7,
        "unexpected build command printf 'binary' > app.bin",
    );
    assert!(
        text(&output).contains("step build: FAIL"),
        "{}",
        text(&output)
    );

    // Witness-style URIs name the same attestations.
    let mut aliased = chain_policy(&keys, "build");
    aliased["steps"]["build"]["attestations"][0]["type"] =
        json!("https://witness.dev/attestations/command-run/v0.1");
    let output = chain.check(&keys, "policy", &aliased);
    assert!(output.status.success(), "{}", text(&output));

    let mut no_deny = chain_policy(&keys, "build");
    no_deny["steps"]["build"]["attestations"][0]["regopolicies"] = json!([module(
        "allow-only",
        "package policy.allow\nallow := true\n"
    )]);
    let output = chain.check(&keys, "policy", &no_deny);
    assert_fails(&output, 8, "has no `deny` rule");
}

#[test]
fn unsupported_policy_features_are_refused_not_ignored() {
    let keys = Keys::new(&["policy", "build"]);
    let dir = tempfile::tempdir().unwrap();
    let mut document = chain_policy(&keys, "build");
    document["steps"]["save"]["functionaries"] =
        json!([{"type": "root", "certConstraint": {"commonname": "*", "roots": ["ca"]}}]);
    std::fs::write(dir.path().join("p.json"), document.to_string()).unwrap();
    let output = oci_attest(
        dir.path(),
        &[
            "sign",
            "-k",
            &keys.private("policy"),
            "-f",
            "p.json",
            "-o",
            "p.signed.json",
        ],
    );
    assert_fails(&output, 1, "certConstraint");
    assert!(!dir.path().join("p.signed.json").exists());
}

/// Signs `document` (any bytes) as a policy with the library, bypassing `sign`'s checks.
fn sign_raw(dir: &Path, keys: &Keys, document: &[u8]) -> PathBuf {
    let key = keys::load_private_key(Path::new(&keys.private("policy")), None).unwrap();
    let signed = dsse::sign_as("https://aflock.ai/policy/v0.1", document, &key).unwrap();
    let path = dir.join("hostile.signed.json");
    std::fs::write(&path, signed).unwrap();
    path
}

fn children_max_rss_bytes() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn hostile_policies_fail_within_time_and_memory_limits() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let dir = chain.out.path();

    // Larger than the policy cap: refused before it is read.
    let huge = dir.join("huge.signed.json");
    std::fs::write(&huge, vec![b' '; 17 << 20]).unwrap();
    let started = Instant::now();
    let output = verify_chain(&chain, &keys, &huge);
    assert_fails(&output, 8, "more than the 16 MiB allowed");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Nested 100 000 levels deep.
    let deep = format!(
        r#"{{"expires":"2099-01-01T00:00:00Z","roots":{{"r":{}{}}},"steps":{{}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let policy = sign_raw(dir, &keys, deep.as_bytes());
    let output = verify_chain(&chain, &keys, &policy);
    assert_fails(&output, 8, "recursion limit exceeded");

    let hostile_rego = [
        (
            "loop",
            "package hostile.spin\nimport rego.v1\ndeny contains \"never\" if {\n  some i, j, k\n  numbers.range(1, 100000)[i]\n  numbers.range(1, 100000)[j]\n  numbers.range(1, 100000)[k]\n  i + j + k < 0\n}\n",
            "exceeded its time limit (10 s); the policy's modules loop",
        ),
        (
            "allocate",
            "package hostile.grow\nimport rego.v1\nhuge := numbers.range(1, 400000000)\ndeny contains \"never\" if count(huge) < 0\n",
            "exceeded its",
        ),
    ];
    for (name, source, expected) in hostile_rego {
        let mut document = chain_policy(&keys, "build");
        document["steps"]["build"]["attestations"][0]["regopolicies"] =
            json!([module(name, source)]);
        let policy = sign_raw(dir, &keys, &serde_json::to_vec(&document).unwrap());
        let started = Instant::now();
        let output = verify_chain(&chain, &keys, &policy);
        let elapsed = started.elapsed();
        assert_fails(&output, 8, expected);
        assert!(elapsed < Duration::from_secs(20), "{name}: {elapsed:?}");
    }
    // The sandbox's address-space limit bounds every process this test started.
    let peak = children_max_rss_bytes();
    assert!(peak < 3 << 29, "peak RSS of the children: {peak} bytes");
}

/// Every rule of the example traced-save and image-tag modules, on the predicates they read.
#[test]
fn example_rego_modules_deny_each_documented_condition() {
    use oci_attest::policy::model::RegoModule;
    use oci_attest::policy::rego::{evaluate, TIME_LIMIT};

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let load = |name: &str| RegoModule {
        name: name.to_owned(),
        source: std::fs::read_to_string(examples.join(format!("{name}.rego"))).unwrap(),
    };
    let traced = [load("traced-save")];
    let good = json!({
        "cmd": ["skopeo", "copy", "a", "b"], "exitcode": 0,
        "summary": {"trace": "ebpf", "lost": 0},
        "processes": [{"program": "/usr/bin/skopeo", "processid": 10}]
    });
    let denials = |input: &Value| evaluate(&traced, &input.to_string(), TIME_LIMIT).unwrap();
    assert_eq!(denials(&good), Vec::<String>::new());

    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut failed = good.clone();
    failed["exitcode"] = json!(1);
    cases.push((failed, "the command exited with 1"));
    let mut untraced = good.clone();
    untraced["summary"] = json!({"trace": "off", "reason": "not root"});
    cases.push((untraced, "not traced with eBPF (summary.trace: off)"));
    let mut no_summary = good.clone();
    no_summary.as_object_mut().unwrap().remove("summary");
    cases.push((no_summary, "summary.trace: missing"));
    let mut lost = good.clone();
    lost["summary"]["lost"] = json!(3);
    cases.push((lost, "the kernel lost 3 trace events"));
    let mut incomplete = good.clone();
    incomplete["summary"]["incomplete"] = json!([{"reason": "argv-truncated", "detail": "pid 12"}]);
    cases.push((
        incomplete,
        "the trace is incomplete: argv-truncated (pid 12)",
    ));
    let mut intruder = good.clone();
    intruder["processes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"program": "/usr/bin/curl", "processid": 11}));
    cases.push((intruder, "/usr/bin/curl (pid 11) is not an allowed program"));
    for (input, expected) in cases {
        let found = denials(&input);
        assert!(
            found.iter().any(|denial| denial.contains(expected)),
            "{expected}: {found:?}"
        );
    }

    let tag = [load("image-tag")];
    let tagged = json!({"imagetags": ["localhost/fx/app:1"]});
    assert!(evaluate(&tag, &tagged.to_string(), TIME_LIMIT)
        .unwrap()
        .is_empty());
    for untagged in [
        json!({"imagetags": ["localhost/fx/other:1"]}),
        json!({"imagetags": null}),
    ] {
        let found = evaluate(&tag, &untagged.to_string(), TIME_LIMIT).unwrap();
        assert!(
            found[0].starts_with("the image is not tagged localhost/fx/app:1"),
            "{found:?}"
        );
    }
}
