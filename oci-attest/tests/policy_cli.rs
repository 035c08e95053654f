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
        let dir = work_dir();
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

/// `oci-attest run --trace off` of `sh -c SCRIPT` in `work` as step `step`, signed by `signer`,
/// whatever the script's exit status: the one place these tests start `run`.
fn run_attested(
    work: &Path,
    keys: &Keys,
    signer: &str,
    step: &str,
    outfile: &Path,
    script: &str,
) -> Output {
    oci_attest_tests::oci_attest::run_command(Path::new(BIN))
        .expect("root and the test user (cargo xtask setup): the command runs as that user")
        .current_dir(work)
        .args([
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
        ])
        .output()
        .expect("run oci-attest")
}

/// A temp dir the command's user (the harness's test user) can write: every directory here may
/// be a step's working directory.
fn work_dir() -> tempfile::TempDir {
    oci_attest_tests::oci_attest::user_dir().expect("root and the test user (cargo xtask setup)")
}

fn run_step(work: &Path, keys: &Keys, signer: &str, step: &str, outfile: &Path, script: &str) {
    let output = run_attested(work, keys, signer, step, outfile, script);
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
        Chain::run_scripts(
            keys,
            signer,
            "printf 'binary' > app.bin",
            between,
            "tar -cf image.tar app.bin",
        )
    }

    /// `build`, then `between` (outside oci-attest), then `save`, each `sh -c` in a fresh
    /// working directory holding `main.c`.
    fn run_scripts(keys: &Keys, signer: &str, build: &str, between: &str, save: &str) -> Chain {
        let chain = Chain {
            // The scripts run as the test user and write here.
            work: work_dir(),
            out: work_dir(),
        };
        let w = chain.work.path();
        std::fs::write(w.join("main.c"), "int main(void) { return 0; }\n").unwrap();
        let outfile = |step: &str| PathBuf::from(chain.attestation(step));
        run_step(w, keys, signer, "build", &outfile("build"), build);
        let status = Command::new("sh")
            .args(["-c", between])
            .current_dir(w)
            .status()
            .unwrap();
        assert!(status.success(), "{between}");
        run_step(w, keys, signer, "save", &outfile("save"), save);
        chain
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

/// Asserts that the report lists the attestation file `name` as failed with a reason holding
/// `expected`.
fn assert_rejected_for(output: &Output, name: &str, expected: &str) {
    let report = text(output);
    let mut lines = report.lines().skip_while(|line| {
        !(line.trim_start().starts_with("FAIL ") && line.ends_with(&format!("/{name}")))
    });
    assert!(
        lines.next().is_some(),
        "{name} is not listed as failed:\n{report}"
    );
    let reasons: Vec<&str> = lines
        .take_while(|line| line.trim_start().starts_with("- "))
        .collect();
    assert!(
        reasons.iter().any(|reason| reason.contains(expected)),
        "expected {expected:?} among the reasons of {name}:\n{report}"
    );
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
    resign_text(envelope_path, key, |text| {
        let mut statement: Value = serde_json::from_str(&text).unwrap();
        change(&mut statement);
        statement.to_string()
    });
}

/// Decodes an envelope's statement, lets `change` rewrite its text, and re-signs it with `key`.
fn resign_text(envelope_path: &str, key: &str, change: impl FnOnce(String) -> String) {
    let envelope: Value = serde_json::from_slice(&std::fs::read(envelope_path).unwrap()).unwrap();
    let payload = BASE64
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement = change(String::from_utf8(payload).unwrap());
    let key = keys::load_private_key(Path::new(key), None).unwrap();
    let signed = dsse::sign(statement.as_bytes(), &key).unwrap();
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
    let dir = work_dir();
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
        "identity": {"user": "builder", "uid": 1000, "root": false, "keyreadable": false},
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
    let mut root = good.clone();
    root["identity"] = json!({"user": "root", "uid": 0, "root": true, "keyreadable": true});
    cases.push((root, "the command ran as root"));
    let mut anonymous = good.clone();
    anonymous.as_object_mut().unwrap().remove("identity");
    cases.push((anonymous, "does not say whom it ran as"));
    let mut readable = good.clone();
    readable["identity"]["keyreadable"] = json!(true);
    cases.push((readable, "builder could read the signing key"));
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

    // The tag is the policy's parameter (`policy new --param image_tag=…`).
    let mut tag_rule = load("image-tag");
    tag_rule.source = tag_rule
        .source
        .replace("${image_tag}", "localhost/fx/app:1");
    let tag = [tag_rule];
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

// ---- the gate, tried as an attacker would ----------------------------------------------------

/// Rego for a step that reads its build through `attestationsFrom`: the build must have
/// succeeded.
const BUILD_SUCCEEDED: &str = "package save.build_succeeded\nimport rego.v1\nbuild := input.steps.build[\"https://aflock.ai/attestations/command-run/v0.1\"]\ndeny contains \"no build attestation\" if not build\ndeny contains msg if {\n  build.exitcode != 0\n  msg := sprintf(\"the build exited %v\", [build.exitcode])\n}\n";

/// A new build fails, after an older one succeeded in the same directory; the save step's
/// Rego checks its build through `input.steps`. The old build's attestation, given among the
/// others, must not answer for the failed one that produced what was saved.
#[test]
fn a_failed_build_cannot_borrow_an_older_successful_builds_attestation() {
    let keys = Keys::new(&["policy", "build"]);
    let work = work_dir();
    let out = work_dir();
    let attestation = |name: &str| out.path().join(name);
    run_step(
        work.path(),
        &keys,
        "build",
        "build",
        &attestation("old-build.json"),
        "printf 'binary v1' > app.bin",
    );
    let failed = run_attested(
        work.path(),
        &keys,
        "build",
        "build",
        &attestation("new-build.json"),
        "printf 'binary v2' > app.bin; exit 2",
    );
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed));
    run_step(
        work.path(),
        &keys,
        "build",
        "save",
        &attestation("save.json"),
        "tar -cf image.tar app.bin",
    );
    let mut document = policy(
        &keys,
        &["policy", "build"],
        &[
            (
                "build",
                "build",
                json!([command_run(&[]), {"type": PRODUCT}]),
                &[],
            ),
            (
                "save",
                "build",
                json!([command_run(&[module("build", BUILD_SUCCEEDED)]), {"type": MATERIAL}]),
                &["build"],
            ),
        ],
    );
    document["steps"]["save"]["attestationsFrom"] = json!(["build"]);
    let policy = sign_policy(out.path(), &keys, "policy", &document);
    let sources: Vec<String> = ["old-build.json", "new-build.json", "save.json"]
        .iter()
        .map(|name| attestation(name).display().to_string())
        .collect();
    let artifact = work.path().join("image.tar").display().to_string();
    let output = verify(
        out.path(),
        &policy,
        &keys.public("policy"),
        &sources,
        &["--artifactfile", &artifact],
    );
    assert_fails(&output, 7, "the build exited 2");
    assert_fails(&output, 7, "step save: FAIL");
    // Both builds are tied to the artifact (the new one read the old one's app.bin) only
    // through the save that failed.
    for build in ["old-build.json", "new-build.json"] {
        assert_rejected_for(&output, build, "only through attestations that failed");
    }
}

/// Both ways a file swapped between two steps can hide behind another file with the same
/// content (the Merkle leaves keep one path per content): upstream, where the swapped file's
/// original content was also another product's; downstream, where it was replaced by a copy
/// of another material.
#[test]
fn a_file_swapped_between_steps_behind_a_same_content_file_fails() {
    let keys = Keys::new(&["policy", "build"]);
    let document = chain_policy(&keys, "build");
    let cases = [
        (
            "printf binary > app.bin; printf binary > app.copy",
            "printf evil > app.copy",
        ),
        (
            "printf binary > app.bin; printf other > app.copy",
            "cp app.bin app.copy",
        ),
    ];
    for (build, between) in cases {
        let chain = Chain::run_scripts(&keys, "build", build, between, "tar -cf image.tar app.*");
        let output = chain.check(&keys, "policy", &document);
        assert_fails(&output, 7, "material \"app.copy\" has sha256:");
    }

    // A statement without the full path list (cilock's, an older oci-attest's) cannot link:
    // its leaves alone cannot say which paths hold the same content.
    let chain = Chain::run(&keys, "build", "");
    resign(
        &chain.attestation("build"),
        &keys.private("build"),
        |statement| {
            for attestation in statement["predicate"]["attestations"]
                .as_array_mut()
                .unwrap()
            {
                if let Some(tree) = attestation["attestation"].as_object_mut() {
                    tree.remove("files");
                }
            }
        },
    );
    let output = chain.check(&keys, "policy", &document);
    assert_fails(&output, 7, "has no full path list (`files`");
}

/// The empty digest (an empty file, the root of every empty tree) and an empty material set
/// tie nothing.
#[test]
fn empty_artifacts_trees_and_material_sets_tie_nothing() {
    let keys = Keys::new(&["policy", "build"]);
    let out = work_dir();
    let attestation = |name: &str| out.path().join(name).display().to_string();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| work_dir()).collect();
    // save runs in an empty directory: its material tree is empty and back-references the
    // empty root. scan, elsewhere, wrote nothing: its product tree's subject is that root.
    let script = "printf image > image.tar";
    run_step(
        dirs[0].path(),
        &keys,
        "build",
        "save",
        Path::new(&attestation("save.json")),
        script,
    );
    run_step(
        dirs[1].path(),
        &keys,
        "build",
        "scan",
        Path::new(&attestation("scan.json")),
        "true",
    );
    run_step(
        dirs[2].path(),
        &keys,
        "build",
        "build",
        Path::new(&attestation("build.json")),
        "printf binary > app.bin",
    );
    let artifact = dirs[0].path().join("image.tar").display().to_string();
    let check = |steps: &[(&str, &str, Value, &[&str])], sources: &[&str], artifact: &str| {
        let policy = sign_policy(
            out.path(),
            &keys,
            "policy",
            &policy(&keys, &["policy", "build"], steps),
        );
        let sources: Vec<String> = sources.iter().map(|name| attestation(name)).collect();
        verify(
            out.path(),
            &policy,
            &keys.public("policy"),
            &sources,
            &["--artifactfile", artifact],
        )
    };
    let exit_zero = || json!([command_run(&[module("exit", EXIT_ZERO_V0)])]);

    let output = check(
        &[
            ("save", "build", exit_zero(), &[]),
            ("scan", "build", exit_zero(), &[]),
        ],
        &["save.json", "scan.json"],
        &artifact,
    );
    assert_fails(&output, 7, "step scan: FAIL");
    assert_rejected_for(&output, "scan.json", "not tied to the artifact");

    let output = check(
        &[
            ("build", "build", exit_zero(), &[]),
            (
                "save",
                "build",
                json!([command_run(&[]), {"type": MATERIAL}]),
                &["build"],
            ),
        ],
        &["build.json", "save.json"],
        &artifact,
    );
    assert_fails(&output, 7, "its material set is empty");

    let empty = out.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let output = check(
        &[("scan", "build", exit_zero(), &[])],
        &["scan.json"],
        empty.to_str().unwrap(),
    );
    assert_fails(&output, 1, "the artifact is empty (sha256 of no bytes)");
}

/// `{"exitcode":1,"exitcode":0}` reads as 0 to some readers and 1 to others: a repeated key is
/// an error wherever it is signed, and `sign` signs no such policy.
#[test]
fn repeated_keys_are_refused_in_policies_and_statements() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let dir = chain.out.path();
    let document = chain_policy(&keys, "build").to_string();
    let twice = format!("{},\"steps\":{{}}}}", document.strip_suffix('}').unwrap());
    std::fs::write(dir.join("twice.json"), &twice).unwrap();
    let output = oci_attest(
        dir,
        &[
            "sign",
            "-k",
            &keys.private("policy"),
            "-f",
            "twice.json",
            "-o",
            "twice.signed.json",
        ],
    );
    assert_fails(&output, 1, "repeats the key \"steps\"");
    assert!(!dir.join("twice.signed.json").exists());
    let output = verify_chain(&chain, &keys, &sign_raw(dir, &keys, twice.as_bytes()));
    assert_fails(&output, 8, "repeats the key \"steps\"");

    resign_text(
        &chain.attestation("build"),
        &keys.private("build"),
        |text| {
            assert!(text.contains("\"exitcode\":0"), "{text}");
            text.replacen("\"exitcode\":0", "\"exitcode\":1,\"exitcode\":0", 1)
        },
    );
    let output = chain.check(&keys, "policy", &chain_policy(&keys, "build"));
    assert_fails(&output, 7, "repeats the key \"exitcode\"");
    let output = oci_attest(
        dir,
        &[
            "verify",
            "-k",
            &keys.public("build"),
            &chain.attestation("build"),
        ],
    );
    assert_fails(&output, 7, "repeats the key \"exitcode\"");
}

// ---- the classes of go-witness PR #784 -------------------------------------------------------
// (The TSA certificate class belongs to the RFC 3161 timestamps, which are not read here.)

/// A policy with no steps, a step that requires no attestation, an x509 functionary whose
/// constraints are explicitly empty: each would accept anything, so `sign` refuses them and
/// `verify -p` cannot use them.
#[test]
fn policies_that_require_nothing_are_refused() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let dir = chain.out.path();
    let mut no_steps = chain_policy(&keys, "build");
    no_steps["steps"] = json!({});
    let mut nothing_required = chain_policy(&keys, "build");
    nothing_required["steps"]["save"]["attestations"] = json!([]);
    let mut empty_x509 = chain_policy(&keys, "build");
    empty_x509["steps"]["save"]["functionaries"] = json!([{"type": "root",
        "certConstraint": {"commonname": "", "dnsnames": [], "emails": [], "organizations": [],
                           "uris": [], "roots": [], "extensions": {}}}]);
    for (document, expected) in [
        (no_steps, "the policy has no steps"),
        (nothing_required, "step \"save\" requires no attestations"),
        (empty_x509, "functionary type \"root\" is not supported"),
    ] {
        std::fs::write(dir.join("p.json"), document.to_string()).unwrap();
        let output = oci_attest(
            dir,
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
        assert_fails(&output, 1, expected);
        assert!(!dir.join("p.signed.json").exists());
        let signed = sign_raw(dir, &keys, document.to_string().as_bytes());
        assert_fails(&verify_chain(&chain, &keys, &signed), 8, expected);
    }
}

/// One save that wrote two archives has two oci attestations; a module that allows the last
/// one must still see, and deny, the first.
#[test]
fn every_attestation_of_a_required_type_is_evaluated() {
    use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE};
    let fixtures = oci_attest_tests::require!(Fixtures::from_env());
    let keys = Keys::new(&["policy", "build"]);
    let work = work_dir();
    let out = work_dir();
    let app = fixtures.path(fixtures.get(APP_ARCHIVE).unwrap());
    let zero = fixtures.path(fixtures.get("zero-layer-docker-archive").unwrap());
    let outfile = out.path().join("save.json");
    run_step(
        work.path(),
        &keys,
        "build",
        "save",
        &outfile,
        // Named so that the oci attestor attaches by the product rule.
        &format!(
            "cp {} a.oci.tar && cp {} b.oci.tar",
            zero.display(),
            app.display()
        ),
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    // The tag is the policy's parameter (`policy new --param image_tag=…`).
    let image_tag = std::fs::read_to_string(examples.join("image-tag.rego"))
        .unwrap()
        .replace("${image_tag}", "localhost/fx/app:1");
    let oci = json!([{"type": "https://aflock.ai/attestations/oci/v0.1",
                      "regopolicies": [module("image-tag", &image_tag)]}]);
    let document = policy(&keys, &["policy", "build"], &[("save", "build", oci, &[])]);
    let policy = sign_policy(out.path(), &keys, "policy", &document);
    let artifact = work.path().join("b.oci.tar").display().to_string();
    let output = verify(
        out.path(),
        &policy,
        &keys.public("policy"),
        &[outfile.display().to_string()],
        &["--artifactfile", &artifact],
    );
    assert_fails(
        &output,
        7,
        "the image is not tagged localhost/fx/app:1 (tags: [\"localhost/fx/zero:1\"])",
    );
}

/// Only a collection whose `name` is the step, exactly, speaks for the step.
#[test]
fn collection_names_must_match_the_step_exactly() {
    let keys = Keys::new(&["policy", "build"]);
    for name in ["Build", "build ", "build/"] {
        let chain = Chain::run(&keys, "build", "");
        resign(
            &chain.attestation("build"),
            &keys.private("build"),
            |statement| {
                statement["predicate"]["name"] = json!(name);
            },
        );
        let output = chain.check(&keys, "policy", &chain_policy(&keys, "build"));
        assert_fails(&output, 7, "no attestation for step \"build\"");
        assert_fails(
            &output,
            7,
            &format!("(step {name:?}): not a step of the policy"),
        );
    }
}

/// The same attestation given twice (and a copy of it) is one collection.
#[test]
fn the_same_attestation_given_twice_counts_once() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let copy = chain.out.path().join("copy.json");
    std::fs::copy(chain.attestation("build"), &copy).unwrap();
    let policy = sign_policy(
        chain.out.path(),
        &keys,
        "policy",
        &chain_policy(&keys, "build"),
    );
    let build = chain.attestation("build");
    let sources = [
        build.clone(),
        build.clone(),
        copy.display().to_string(),
        chain.attestation("save"),
    ];
    let output = verify(
        chain.out.path(),
        &policy,
        &keys.public("policy"),
        &sources,
        &["--artifactfile", &chain.artifact(), "--json"],
    );
    assert!(output.status.success(), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["steps"][0]["name"], "build");
    assert_eq!(
        report["steps"][0]["collections"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        report["duplicates"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(report["duplicates"][1]["same_as"], build.as_str());
}

/// Adds a signature entry with `keyid` and bytes that sign nothing to the envelope at `path`.
fn add_forged_signature(path: &Path, keyid: &str) {
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let signatures = envelope["signatures"].as_array_mut().unwrap();
    signatures.insert(0, json!({"keyid": keyid, "sig": BASE64.encode([7u8; 64])}));
    std::fs::write(path, envelope.to_string()).unwrap();
}

/// A signature entry that claims a trusted keyid but does not verify confers nothing, beside
/// a valid signature by some other key: on an attestation (the functionary's keyid) and on
/// the policy (the `-k` key's keyid).
#[test]
fn a_signature_that_does_not_verify_confers_nothing() {
    let keys = Keys::new(&["policy", "build", "intruder"]);
    let chain = Chain::run(&keys, "intruder", "");
    for step in ["build", "save"] {
        add_forged_signature(Path::new(&chain.attestation(step)), &keys.keyid("build"));
    }
    let mut document = chain_policy(&keys, "build");
    let intruder = keys.keyid("intruder");
    document["publickeys"][&intruder] =
        json!({"keyid": intruder, "key": BASE64.encode(keys.pem("intruder"))});
    let output = chain.check(&keys, "policy", &document);
    assert_fails(&output, 7, "not signed by a functionary of step \"build\"");

    let policy = sign_policy(chain.out.path(), &keys, "intruder", &document);
    add_forged_signature(&policy, &keys.keyid("policy"));
    let output = verify_chain(&chain, &keys, &policy);
    assert_fails(&output, 8, "the policy signature does not verify");
}

/// A subject names the artifact only by its sha256: a digest set offering only a weaker
/// algorithm (or the right hex under another algorithm's name) ties nothing.
#[test]
fn subjects_name_the_artifact_only_by_sha256() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let image = std::fs::read(chain.artifact()).unwrap();
    let sha1 = Command::new("sha1sum")
        .arg(chain.artifact())
        .output()
        .unwrap();
    let sha1 = String::from_utf8(sha1.stdout).unwrap();
    let sha1 = sha1.split_whitespace().next().unwrap().to_owned();
    resign(
        &chain.attestation("save"),
        &keys.private("build"),
        |statement| {
            statement["subject"] = json!([{"name": "image.tar", "digest": {
            "sha1": sha1, "gitoid:sha256": hex::encode(Sha256::digest(&image))}}]);
            // Without the product tree, only the subjects could tie the save to the image.
            let attestations = statement["predicate"]["attestations"]
                .as_array_mut()
                .unwrap();
            attestations.retain(|attestation| attestation["type"] != PRODUCT);
        },
    );
    let output = chain.check(&keys, "policy", &chain_policy(&keys, "build"));
    assert_fails(&output, 7, "step save: FAIL");
    assert_rejected_for(&output, "save.att.json", "not tied to the artifact");
}

/// A build and a save in different directories: nothing the save read came from the build.
#[test]
fn a_chain_through_which_nothing_flowed_fails() {
    let keys = Keys::new(&["policy", "build"]);
    let chain = Chain::run(&keys, "build", "");
    let elsewhere = work_dir();
    std::fs::write(elsewhere.path().join("app.bin"), "binary").unwrap();
    std::fs::rename(
        elsewhere.path().join("app.bin"),
        elsewhere.path().join("other.bin"),
    )
    .unwrap();
    run_step(
        elsewhere.path(),
        &keys,
        "build",
        "save",
        Path::new(&chain.attestation("save")),
        "tar -cf image.tar other.bin",
    );
    let policy = sign_policy(
        chain.out.path(),
        &keys,
        "policy",
        &chain_policy(&keys, "build"),
    );
    let artifact = elsewhere.path().join("image.tar").display().to_string();
    let output = verify(
        chain.out.path(),
        &policy,
        &keys.public("policy"),
        &[chain.attestation("build"), chain.attestation("save")],
        &["--artifactfile", &artifact],
    );
    assert_rejected_for(
        &output,
        "save.att.json",
        "none of the step's materials comes from",
    );
}

/// The command plants symlinks to a file outside its tree (one a file, one a directory): the
/// file's content is read by no attestor, its digest is nowhere in what was signed.
#[test]
fn run_never_reads_a_file_outside_its_tree_through_a_symlink() {
    let keys = Keys::new(&["build"]);
    let outside = work_dir();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "the secret outside the tree").unwrap();
    let work = work_dir();
    std::os::unix::fs::symlink(&secret, work.path().join("material-link")).unwrap();
    let out = work_dir();
    let outfile = out.path().join("att.json");
    let script = format!(
        "ln -s {} product-link && ln -s {} dir-link && printf ok > real",
        secret.display(),
        outside.path().display()
    );
    run_step(work.path(), &keys, "build", "build", &outfile, &script);
    let envelope: Value = serde_json::from_slice(&std::fs::read(&outfile).unwrap()).unwrap();
    let statement = BASE64
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement = String::from_utf8(statement).unwrap();
    let secret_digest = hex::encode(Sha256::digest(std::fs::read(&secret).unwrap()));
    assert!(!statement.contains(&secret_digest), "{statement}");
    assert!(
        statement.contains(&hex::encode(Sha256::digest(b"ok"))),
        "{statement}"
    );
}

/// A `git` first on PATH in a directory the build could write is never run: the git attestor
/// takes the first one only root could have put there.
#[test]
fn the_git_attestor_runs_no_git_the_build_could_have_planted() {
    use std::os::unix::fs::PermissionsExt as _;
    let keys = Keys::new(&["build"]);
    // Root's, like the checkout the git attestor (root) reads without a safe.directory.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(w)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(w.join("README"), "x").unwrap();
    git(&["add", "README"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-qm",
        "one",
    ]);

    let planted = tempfile::tempdir().unwrap();
    let marker = planted.path().join("ran");
    let fake = planted.path().join("git");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(planted.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = format!(
        "{}:{}",
        planted.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = work_dir();
    let outfile = out.path().join("att.json");
    // The command (`true`, as the test user) only needs to enter the repository.
    std::fs::set_permissions(w, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = oci_attest_tests::oci_attest::run_command(Path::new(BIN))
        .expect("root and the test user (cargo xtask setup)")
        .args(["--trace", "off", "-a", "git", "--step", "build", "-k"])
        .arg(keys.private("build"))
        .arg("-o")
        .arg(&outfile)
        .args(["--", "true"])
        .current_dir(w)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(!marker.exists(), "the planted git ran: {}", text(&output));
    assert!(
        text(&output).contains("is writable by its group or by others"),
        "{}",
        text(&output)
    );
    let envelope: Value = serde_json::from_slice(&std::fs::read(&outfile).unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(
        &BASE64
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let git_predicate = statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|attestation| attestation["type"] == "https://aflock.ai/attestations/git/v0.1")
        .map(|attestation| &attestation["attestation"])
        .unwrap_or_else(|| panic!("no git attestation: {statement}"));
    let used = git_predicate["gitbinpath"].as_str().unwrap();
    assert!(
        !used.starts_with(&planted.path().display().to_string()),
        "{used}"
    );
}

// ---- many and large attestations ---------------------------------------------------------------

/// A CI history passed whole to `verify -p`: 200 distinct attestations of the step (a real
/// run re-signed with other command lines), each tied to the artifact and each evaluated by a
/// Rego module. One sandbox process evaluates them all — strace counts the execs of
/// `rego-sandbox` — and the run ends within a generous bound; `cargo xtask bench policy` times
/// 10 000 precisely.
#[test]
fn many_attestations_are_evaluated_by_one_sandbox() {
    const COUNT: usize = 200;
    let keys = Keys::new(&["policy", "build"]);
    let work = work_dir();
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("build-0.json");
    run_step(
        work.path(),
        &keys,
        "build",
        "build",
        &first,
        "printf binary > app.bin",
    );
    let mut attestations = vec![first.display().to_string()];
    for number in 1..COUNT {
        let copy = out.path().join(format!("build-{number}.json"));
        std::fs::copy(&first, &copy).unwrap();
        let copy = copy.display().to_string();
        resign(&copy, &keys.private("build"), |statement| {
            let attestations = statement["predicate"]["attestations"]
                .as_array_mut()
                .unwrap();
            let run = attestations
                .iter_mut()
                .find(|attestation| attestation["type"] == COMMAND_RUN)
                .unwrap();
            run["attestation"]["cmd"]
                .as_array_mut()
                .unwrap()
                .push(json!(format!("run {number}")));
        });
        attestations.push(copy);
    }
    let steps = json!([command_run(&[module("exit", EXIT_ZERO_V0)])]);
    let document = policy(
        &keys,
        &["policy", "build"],
        &[("build", "build", steps, &[])],
    );
    let policy = sign_policy(out.path(), &keys, "policy", &document);
    let trace = out.path().join("execs.strace");
    let mut args: Vec<String> = [
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-e",
        "trace=execve",
        "-e",
        "signal=none",
        "-o",
        trace.to_str().unwrap(),
        BIN,
        "verify",
        "-p",
        policy.to_str().unwrap(),
        "-k",
        &keys.public("policy"),
        "-s",
        &format!("sha256:{}", hex::encode(Sha256::digest(b"binary"))),
    ]
    .map(str::to_owned)
    .to_vec();
    for attestation in &attestations {
        args.extend(["-a".to_owned(), attestation.clone()]);
    }
    let started = Instant::now();
    let output = Command::new("strace")
        .args(&args)
        .current_dir(out.path())
        .output()
        .expect("run strace (cargo xtask setup installs it)");
    let elapsed = started.elapsed();
    eprintln!("verify -p of {COUNT} attestations under strace: {elapsed:?}");
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("policy: PASS"), "{}", text(&output));
    let execs = std::fs::read_to_string(&trace).unwrap();
    let sandboxes = execs
        .lines()
        .filter(|line| line.contains("execve(") && line.contains("\"rego-sandbox\""))
        .count();
    assert_eq!(sandboxes, 1, "sandbox processes started:\n{execs}");
    assert!(
        elapsed < Duration::from_secs(120),
        "{COUNT} attestations took {elapsed:?}"
    );
}

/// A real attestation of tens of MB (a run over a working directory of 7 000 files with
/// paths of 3 700 bytes: hard links to one file deep down, cheap to make and to hash) is
/// verified by `verify -p` and `verify --key` with their address space bounded to 64 MiB plus
/// three times the envelope's size (`prlimit --as`): the envelope is decoded in place and its
/// trees read without a JSON tree, where holding the file, the payload text, the payload, the
/// signed message and a JSON tree of it would take several times that.
#[test]
fn a_large_attestation_is_verified_in_memory_proportional_to_its_size() {
    let keys = Keys::new(&["policy", "build"]);
    let work = tempfile::tempdir().unwrap();
    let component = "d".repeat(250);
    let deep = work.path().join(vec![component.as_str(); 14].join("/"));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("seed"), "the same content").unwrap();
    let name = "f".repeat(240);
    for number in 0..7_000 {
        std::fs::hard_link(deep.join("seed"), deep.join(format!("{name}{number:06}"))).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let envelope = out.path().join("large.json");
    run_step(work.path(), &keys, "build", "build", &envelope, "true");
    let size = std::fs::metadata(&envelope).unwrap().len();
    assert!(size > 32 << 20, "the envelope is only {size} bytes");

    let statement: Value = {
        let envelope: Value = serde_json::from_slice(&std::fs::read(&envelope).unwrap()).unwrap();
        serde_json::from_slice(
            &BASE64
                .decode(envelope["payload"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let root = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .find(|subject| {
            subject["name"]
                .as_str()
                .unwrap()
                .ends_with("tree:materials")
        })
        .map(|subject| subject["digest"]["sha256"].as_str().unwrap().to_owned())
        .unwrap();
    drop(statement);
    let steps = json!([command_run(&[module("exit", EXIT_ZERO_V0)]), {"type": MATERIAL}]);
    let document = policy(
        &keys,
        &["policy", "build"],
        &[("build", "build", steps, &[])],
    );
    let policy = sign_policy(out.path(), &keys, "policy", &document);

    let limit = (64 << 20) + 3 * size;
    let bounded = |args: &[&str]| {
        let started = Instant::now();
        let output = Command::new("prlimit")
            .arg(format!("--as={limit}"))
            .arg(BIN)
            .args(args)
            .current_dir(out.path())
            .output()
            .expect("run prlimit");
        (output, started.elapsed())
    };
    let (output, elapsed) = bounded(&[
        "verify",
        "-p",
        policy.to_str().unwrap(),
        "-k",
        &keys.public("policy"),
        "-a",
        envelope.to_str().unwrap(),
        "-s",
        &format!("sha256:{root}"),
    ]);
    assert!(
        output.status.success(),
        "within {limit} bytes: {}",
        text(&output)
    );
    assert!(text(&output).contains("policy: PASS"), "{}", text(&output));
    assert!(
        elapsed < Duration::from_secs(120),
        "verify -p took {elapsed:?}"
    );
    let (output, elapsed) = bounded(&[
        "verify",
        "--allow-untraced",
        "-k",
        &keys.public("build"),
        envelope.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "within {limit} bytes: {}",
        text(&output)
    );
    assert!(
        elapsed < Duration::from_secs(120),
        "verify took {elapsed:?}"
    );
}
