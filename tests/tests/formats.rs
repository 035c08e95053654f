//! The ecosystem formats, each checked by an independent implementation: SLSA provenance v1
//! from `run --slsa-out` (PyPI in-toto-attestation parses and validates the Statement v1 and the
//! predicate, securesystemslib verifies the envelope), attached to a real registry beside the
//! collection and listed by `discover --predicate-type`; RFC 3161 timestamps from a real TSA
//! (`openssl ts -reply` behind the `tsa-http` handler), verified here, by `openssl ts -verify`
//! and by PyPI rfc3161-client, and refused when the TSA certificate is not for timestamping
//! alone; signed VSAs from `verify -p --vsa-outfile`, validated by in-toto-attestation.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use oci_attest_tests::archive::sha256_hex as sha256;
use oci_attest_tests::command::{assert_exit, output_text, run, sha256sum};
use oci_attest_tests::fixtures::Fixtures;
use oci_attest_tests::registry::RegistryEnv;
use oci_attest_tests::tsa::{Tsa, MISISSUED, POLICY};
use oci_attest_tests::{oci_attest, paths, require};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/formats_check.py");
const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const VSA: &str = "https://slsa.dev/verification_summary/v1";
/// Exit code of a verification that does not pass (`oci-attest --help`).
const EXIT_MISMATCH: i32 = 7;

fn tsa() -> anyhow::Result<Tsa> {
    Tsa::start(Path::new(env!("CARGO_BIN_EXE_tsa-http")))
}

/// The venv `cargo xtask setup` builds, with the in-toto-attestation and rfc3161-client
/// packages this file needs.
fn python() -> anyhow::Result<PathBuf> {
    let python =
        std::env::var_os("OCI_ATTEST_PYTHON").map_or_else(paths::venv_python, PathBuf::from);
    run(Command::new(&python).args([
        "-c",
        "import in_toto_attestation.v1.statement, rfc3161_client, securesystemslib.dsse",
    ]))
    .map_err(|error| error.context("the formats venv is missing (run `cargo xtask setup`)"))?;
    Ok(python)
}

/// `formats_check.py ARGS…`, which must succeed; its stdout.
fn python_check(python: &Path, args: &[&Path]) -> String {
    let mut command = Command::new(python);
    command.arg(SCRIPT).args(args);
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "formats_check.py {args:?}: {}",
        output_text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every `oci-attest run` of this file, in `dir`: the one place that says how the tests start
/// the attested command.
fn run_attested(dir: &Path, args: &[&str]) -> Output {
    output_in(oci_attest::run(), dir, args)
}

/// Any other oci-attest command, in `dir`.
fn oci_attest_in(dir: &Path, args: &[&str]) -> Output {
    output_in(oci_attest::command(), dir, args)
}

fn output_in(command: anyhow::Result<Command>, dir: &Path, args: &[&str]) -> Output {
    command
        .unwrap_or_else(|error| panic!("{error:#}"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run oci-attest: {error}"))
}

/// A fresh directory with a key pair (`key.pem`, `key.pem.pub`) and a `work/` directory for the
/// commands.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        // The command's user passes through to `work/`, its own; the key stays root's.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        oci_attest::give_to_test_user(&dir.path().join("work")).unwrap_or_else(|error| {
            panic!("{error:#} (root and the test user of `cargo xtask setup` are needed)")
        });
        let keygen = oci_attest_in(dir.path(), &["keygen", "--out", "key.pem"]);
        assert_exit(&keygen, 0);
        Workspace { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn work(&self) -> PathBuf {
        self.path("work")
    }

    /// `run --trace off -k key.pem -o OUT EXTRA… -- COMMAND…` in `work/`.
    fn attest_untraced(&self, out: &str, extra: &[&str], command: &[&str]) -> Output {
        let key = self.arg("key.pem");
        let mut args = vec!["--trace", "off", "-k", &key, "-o", out];
        args.extend(extra);
        args.push("--");
        args.extend(command);
        run_attested(&self.work(), &args)
    }

    /// `sign -k KEY -f policy.json -o policy.signed.json EXTRA…`, which must succeed.
    fn sign_policy(&self, key: &str, extra: &[&str]) {
        let mut args = vec![
            "sign",
            "-k",
            key,
            "-f",
            "policy.json",
            "-o",
            "policy.signed.json",
        ];
        args.extend(extra);
        assert_exit(&oci_attest_in(self.dir.path(), &args), 0);
    }
}

/// `formats_check.py statement key.pem.pub ENVELOPE KIND`: the envelope verifies with the
/// workspace's key and its statement validates as KIND; the statement as the library read it.
fn check_statement(python: &Path, space: &Workspace, envelope: &Path, kind: &str) -> String {
    python_check(
        python,
        &[
            Path::new("statement"),
            &space.path("key.pem.pub"),
            envelope,
            Path::new(kind),
        ],
    )
}

/// The statement inside an envelope file.
fn statement(envelope: &Path) -> Value {
    let envelope: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// `(name, sha256)` of a statement's subjects (or of any list of resource descriptors).
fn descriptors(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|descriptor| {
            (
                descriptor["name"].as_str().unwrap_or_default().to_owned(),
                descriptor["digest"]["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// A traced `skopeo copy` push to the plain registry under `run --slsa-out --attach
/// --cosign-tag`: the provenance names the pushed manifest digest (as skopeo reads it back),
/// the executed skopeo binary with its digest, the collection envelope as byproduct; both
/// envelopes are attached and `discover --predicate-type` lists the provenance alone.
#[test]
fn slsa_provenance_of_a_traced_push_validates_and_is_attached() {
    let python = require!(python());
    require!(oci_attest_tests::root());
    let registries = require!(RegistryEnv::from_env());
    let fixtures = require!(Fixtures::from_env());
    let archive = fixtures.path(require!(fixtures.get("skopeo-docker-archive")));
    let space = Workspace::new();
    let image = format!("{}/slsa-{}:1", registries.plain, std::process::id());
    let source = format!("docker-archive:{}", archive.display());
    let destination = format!("docker://{image}");
    let (key, att, slsa) = (
        space.arg("key.pem"),
        space.arg("att.json"),
        space.arg("slsa.json"),
    );
    let pushed = run_attested(
        &space.work(),
        &[
            "--trace",
            "ebpf",
            "-k",
            &key,
            "-o",
            &att,
            "--slsa-out",
            &slsa,
            "--slsa-builder-id",
            "https://ci.example/jobs/42",
            "--attach",
            "--cosign-tag",
            "--plain-http",
            "--",
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &source,
            &destination,
        ],
    );
    assert_exit(&pushed, 0);

    let printed = check_statement(&python, &space, &space.path("slsa.json"), "provenance");
    let provenance: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(provenance, statement(&space.path("slsa.json")));

    let manifest =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &destination]))
            .unwrap_or_else(|error| panic!("{error:#}"))
            .stdout;
    let manifest_digest = sha256(&manifest);
    let repository = image.rsplit_once(':').unwrap().0.to_owned();
    let subjects = descriptors(&provenance["subject"]);
    assert!(
        subjects.contains(&(repository.clone(), manifest_digest.clone())),
        "{subjects:?}"
    );
    let predicate = &provenance["predicate"];
    let definition = &predicate["buildDefinition"];
    assert_eq!(definition["externalParameters"]["command"][0], "skopeo");
    assert_eq!(definition["internalParameters"]["trace"]["trace"], "ebpf");
    let skopeo = run(Command::new("sh").args(["-c", "command -v skopeo"]))
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap();
    let skopeo = std::fs::canonicalize(skopeo).unwrap();
    let skopeo_digest = sha256sum(&skopeo).unwrap();
    let dependencies = descriptors(&definition["resolvedDependencies"]);
    assert!(
        dependencies.contains(&(skopeo.display().to_string(), skopeo_digest)),
        "{dependencies:?}"
    );
    let details = &predicate["runDetails"];
    assert_eq!(details["builder"]["id"], "https://ci.example/jobs/42");
    assert_eq!(
        details["byproducts"][0]["digest"]["sha256"],
        sha256(&std::fs::read(space.path("att.json")).unwrap())
    );

    let discover = |extra: &[&str]| {
        let mut args = vec!["discover", "--json", "--plain-http"];
        args.extend(extra);
        args.push(&image);
        let output = oci_attest_in(&space.work(), &args);
        assert_exit(&output, 0);
        let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
        listed["attestations"].as_array().unwrap().clone()
    };
    assert_eq!(discover(&[]).len(), 2);
    let provenance_only = discover(&["--predicate-type", PROVENANCE]);
    assert_eq!(provenance_only.len(), 1, "{provenance_only:?}");
    assert_eq!(
        provenance_only[0]["envelopeDigest"],
        format!(
            "sha256:{}",
            sha256(&std::fs::read(space.path("slsa.json")).unwrap())
        )
    );
    let cosign_layers: Value = serde_json::from_slice(
        &run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{repository}:sha256-{manifest_digest}.att"),
        ]))
        .unwrap_or_else(|error| panic!("{error:#}"))
        .stdout,
    )
    .unwrap();
    let predicate_types: Vec<&str> = cosign_layers["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|layer| layer["annotations"]["predicateType"].as_str())
        .collect();
    assert!(predicate_types.contains(&PROVENANCE), "{cosign_layers:#}");

    // A policy drafted from this very run gates the image straight from the registry: the
    // attached collection is the evidence, the image's manifest digest the artifact.
    let (public, policy) = (space.arg("key.pem.pub"), space.arg("policy.json"));
    let drafted = oci_attest_in(
        &space.work(),
        &[
            "policy",
            "from-attestations",
            "--key",
            &public,
            &att,
            "-o",
            &policy,
        ],
    );
    assert_exit(&drafted, 0);
    let signed_policy = space.arg("policy.signed.json");
    let sign = oci_attest_in(
        &space.work(),
        &["sign", "-k", &key, "-f", &policy, "-o", &signed_policy],
    );
    assert_exit(&sign, 0);
    let gate = oci_attest_in(
        &space.work(),
        &[
            "verify",
            "-p",
            &signed_policy,
            "-k",
            &public,
            "--image-ref",
            &image,
            "--plain-http",
        ],
    );
    assert_exit(&gate, 0);
    assert!(
        output_text(&gate).contains("policy: PASS"),
        "{}",
        output_text(&gate)
    );
    // Another image (the same content as an OCI manifest: another digest) is not what these
    // attestations describe, even with them attached to it.
    let other = format!("{}/slsa-other-{}:1", registries.plain, std::process::id());
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!(
            "oci-archive:{}",
            fixtures
                .path(require!(fixtures.get("skopeo-oci-archive")))
                .display()
        ),
        &format!("docker://{other}"),
    ]))
    .unwrap_or_else(|error| panic!("{error:#}"));
    let attach_elsewhere = oci_attest_in(
        &space.work(),
        &["attach", "--force", "--plain-http", &att, &other],
    );
    assert!(
        attach_elsewhere.status.success(),
        "{}",
        output_text(&attach_elsewhere)
    );
    let refused = oci_attest_in(
        &space.work(),
        &[
            "verify",
            "-p",
            &signed_policy,
            "-k",
            &public,
            "--image-ref",
            &other,
            "--plain-http",
        ],
    );
    assert_exit(&refused, EXIT_MISMATCH);
}

/// witness's spelling writes `<OUTFILE>-slsa.json`; a save to an OCI archive names the image's
/// OCI manifest (as `oci-attest inspect` reads it) and the archive; a failed command gets no
/// provenance; the provenance may not replace the attestation.
#[test]
fn slsa_export_names_saved_manifests_and_never_describes_a_failure() {
    let python = require!(python());
    let fixtures = require!(Fixtures::from_env());
    let archive = fixtures.path(require!(fixtures.get("skopeo-oci-archive")));
    let space = Workspace::new();
    let att = space.arg("save.json");
    let copy = format!("cp {} app.oci.tar", archive.display());
    let saved = space.attest_untraced(&att, &["--attestor-slsa-export"], &["sh", "-c", &copy]);
    assert_exit(&saved, 0);
    let exported = space.path("save.json-slsa.json");
    check_statement(&python, &space, &exported, "provenance");
    let inspected = oci_attest::inspect_json(&space.work().join("app.oci.tar")).unwrap();
    let manifest = inspected["images"][0]["manifestdigest"]["sha256"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest digest in {inspected:#}"))
        .to_owned();
    let subjects = descriptors(&statement(&exported)["subject"]);
    assert!(
        subjects.contains(&("localhost/fx/app".to_owned(), manifest)),
        "{subjects:?}"
    );
    let archive_digest = sha256sum(&space.work().join("app.oci.tar")).unwrap();
    assert!(
        subjects.contains(&("app.oci.tar".to_owned(), archive_digest)),
        "{subjects:?}"
    );

    let slsa = space.arg("failed-slsa.json");
    let failed = space.attest_untraced(
        &space.arg("failed.json"),
        &["--slsa-out", &slsa],
        &["sh", "-c", "printf x > out.bin; exit 3"],
    );
    assert_exit(&failed, 3);
    assert!(space.path("failed.json").is_file());
    assert!(
        !space.path("failed-slsa.json").exists(),
        "{}",
        output_text(&failed)
    );

    let same = space.attest_untraced(&att, &["--slsa-out", &att], &["true"]);
    assert_exit(&same, 125);
    assert!(oci_attest::stderr(&same).contains("cannot go to the same file"));
}

/// The raw signature and the first timestamp token of an envelope's first signature.
fn signature_and_token(envelope: &Path) -> (Vec<u8>, Vec<u8>) {
    let document: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let signature = &document["signatures"][0];
    assert_eq!(signature["timestamps"][0]["type"], "tsp", "{document:#}");
    (
        engine.decode(signature["sig"].as_str().unwrap()).unwrap(),
        engine
            .decode(signature["timestamps"][0]["data"].as_str().unwrap())
            .unwrap(),
    )
}

/// The same envelope with its first signature's timestamps replaced by `token`.
fn with_token(envelope: &Path, token: &[u8], out: &Path) {
    let mut document: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    document["signatures"][0]["timestamps"] = serde_json::json!([{
        "type": "tsp",
        "data": base64::engine::general_purpose::STANDARD.encode(token),
    }]);
    std::fs::write(out, serde_json::to_vec(&document).unwrap()).unwrap();
}

/// `oci-attest verify --key key.pem.pub --allow-untraced --json ARGS… ENVELOPE`.
fn verify_json(space: &Workspace, envelope: &Path, args: &[&str]) -> (Output, Value) {
    let public = space.arg("key.pem.pub");
    let envelope = envelope.display().to_string();
    let mut all = vec!["verify", "--key", &public, "--allow-untraced", "--json"];
    all.extend(args);
    all.push(&envelope);
    let output = oci_attest_in(space.dir.path(), &all);
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output, report)
}

/// `run --timestamp-servers` against a real TSA: the token sits in the signature as witness
/// stores it, `openssl ts -verify` and rfc3161-client accept it over the signature bytes, and
/// `verify --tsa-ca` reports its time and policy; another policy, a token moved to another
/// signature, and `sign --timestamp-servers` for policies are covered too.
#[test]
fn rfc3161_timestamps_from_a_real_tsa_verify_everywhere() {
    let python = require!(python());
    let tsa = require!(tsa());
    let space = Workspace::new();
    let (key, att) = (space.arg("key.pem"), space.arg("att.json"));
    let signed = space.attest_untraced(
        &att,
        &["--timestamp-servers", &tsa.url],
        &["sh", "-c", "printf built > out.bin"],
    );
    assert_exit(&signed, 0);
    let (signature, token) = signature_and_token(&space.path("att.json"));
    std::fs::write(space.path("sig.bin"), &signature).unwrap();
    std::fs::write(space.path("token.der"), &token).unwrap();

    let root = tsa.file("root.pem");
    let openssl = run(Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(space.path("token.der"))
        .arg("-data")
        .arg(space.path("sig.bin"))
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(tsa.file("tsa.pem")));
    assert!(openssl.is_ok(), "openssl ts -verify: {openssl:?}");
    let python_time = python_check(
        &python,
        &[
            Path::new("timestamp"),
            &space.path("token.der"),
            &space.path("sig.bin"),
            &root,
        ],
    );

    let (output, report) = verify_json(
        &space,
        &space.path("att.json"),
        &["--tsa-ca", &root.display().to_string()],
    );
    assert_exit(&output, 0);
    let timestamp = &report["timestamps"][0];
    assert_eq!(timestamp["policy"], POLICY, "{report:#}");
    assert_eq!(timestamp["tsa"], "CN=oci-attest test tsa");
    // rfc3161-client prints 2026-01-02T03:04:05+00:00; oci-attest writes …05Z.
    let seconds = timestamp["time"].as_str().unwrap().trim_end_matches('Z');
    assert!(
        python_time.trim().starts_with(seconds),
        "{python_time} vs {seconds}"
    );

    let (output, _) = verify_json(
        &space,
        &space.path("att.json"),
        &[
            "--tsa-cert",
            &tsa.file("tsa.pem").display().to_string(),
            "--tsa-policy",
            "1.2.3.4.5",
        ],
    );
    assert_exit(&output, EXIT_MISMATCH);
    assert!(oci_attest::stderr(&output).contains("not the required 1.2.3.4.5"));

    // The token of this signature pasted onto another run's signature proves nothing.
    let other = space.attest_untraced(&space.arg("other.json"), &[], &["true"]);
    assert_exit(&other, 0);
    with_token(&space.path("other.json"), &token, &space.path("moved.json"));
    let (output, _) = verify_json(
        &space,
        &space.path("moved.json"),
        &["--tsa-ca", &root.display().to_string()],
    );
    assert_exit(&output, EXIT_MISMATCH);
    assert!(oci_attest::stderr(&output).contains("message imprint"));
    // With TSA trust given, an envelope without a timestamp does not pass.
    let (output, _) = verify_json(
        &space,
        &space.path("other.json"),
        &["--tsa-ca", &root.display().to_string()],
    );
    assert_exit(&output, EXIT_MISMATCH);

    std::fs::write(
        space.path("policy.json"),
        exit_zero_policy(&space, "interop"),
    )
    .unwrap();
    space.sign_policy(&key, &["--timestamp-servers", &tsa.url]);
    let (signature, token) = signature_and_token(&space.path("policy.signed.json"));
    std::fs::write(space.path("policy-sig.bin"), &signature).unwrap();
    std::fs::write(space.path("policy-token.der"), &token).unwrap();
    python_check(
        &python,
        &[
            Path::new("timestamp"),
            &space.path("policy-token.der"),
            &space.path("policy-sig.bin"),
            &root,
        ],
    );
}

/// go-witness PR #784's class: a token signed by a certificate the trusted root issued for
/// another purpose (timeStamping not critical, timeStamping beside serverAuth, no EKU at all).
/// The attacker re-signs a genuine TSTInfo with `openssl cms -sign` and such a certificate;
/// the same re-signing with the real TSA certificate passes, so only the EKU decides.
#[test]
fn a_tsa_certificate_without_a_sole_critical_time_stamping_eku_is_refused() {
    let tsa = require!(tsa());
    let space = Workspace::new();
    let att = space.arg("att.json");
    let signed = space.attest_untraced(&att, &["--timestamp-servers", &tsa.url], &["true"]);
    assert_exit(&signed, 0);
    let (_, token) = signature_and_token(&space.path("att.json"));
    std::fs::write(space.path("token.der"), &token).unwrap();
    run(Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-noverify",
            "-inform",
            "DER",
            "-binary",
            "-in",
        ])
        .arg(space.path("token.der"))
        .arg("-out")
        .arg(space.path("tstinfo.der")))
    .unwrap_or_else(|error| panic!("{error:#}"));
    let root = tsa.file("root.pem").display().to_string();
    let expectations = [
        ("tsa", None),
        ("noncritical", Some("not marked critical")),
        ("multipurpose", Some("id-kp-timeStamping alone")),
        ("noeku", Some("has no extended key usage")),
    ];
    assert_eq!(expectations.len(), MISISSUED.len() + 1);
    for (certificate, refusal) in expectations {
        let forged = space.path(&format!("{certificate}.token.der"));
        run(Command::new("openssl")
            .args([
                "cms",
                "-sign",
                "-binary",
                "-nodetach",
                "-nosmimecap",
                "-md",
                "sha256",
            ])
            .args([
                "-econtent_type",
                "id-smime-ct-TSTInfo",
                "-outform",
                "DER",
                "-in",
            ])
            .arg(space.path("tstinfo.der"))
            .arg("-signer")
            .arg(tsa.file(&format!("{certificate}.pem")))
            .arg("-inkey")
            .arg(tsa.file(&format!("{certificate}.key")))
            .arg("-out")
            .arg(&forged))
        .unwrap_or_else(|error| panic!("{error:#}"));
        let envelope = space.path(&format!("{certificate}.json"));
        with_token(
            &space.path("att.json"),
            &std::fs::read(&forged).unwrap(),
            &envelope,
        );
        let (output, report) = verify_json(&space, &envelope, &["--tsa-ca", &root]);
        match refusal {
            None => assert!(
                output.status.success(),
                "{certificate}: {}",
                output_text(&output)
            ),
            Some(reason) => {
                assert_eq!(
                    output.status.code(),
                    Some(EXIT_MISMATCH),
                    "{certificate}: {}",
                    output_text(&output)
                );
                assert!(
                    report["problems"][0]
                        .as_str()
                        .unwrap_or_default()
                        .contains(reason),
                    "{certificate}: {report:#}"
                );
                let openssl = run(Command::new("openssl")
                    .args(["ts", "-verify", "-token_in", "-in"])
                    .arg(&forged)
                    .arg("-data")
                    .arg(space.path("att.json"))
                    .args(["-CAfile", &root]));
                assert!(openssl.is_err(), "{certificate}: openssl accepted it too");
            }
        }
    }
}

/// A policy for step `step`: the key.pem functionary, command-run required, exit code 0.
fn exit_zero_policy(space: &Workspace, step: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let pem = std::fs::read(space.path("key.pem.pub")).unwrap();
    let keyid = sha256(&pem);
    let module = "package gate\ndeny[msg] { input.exitcode != 0; msg := \"the command failed\" }\n";
    serde_json::json!({
        "expires": "2099-01-01T00:00:00Z",
        "publickeys": {&keyid: {"keyid": &keyid, "key": engine.encode(&pem)}},
        "steps": {step: {
            "name": step,
            "functionaries": [{"type": "publickey", "publickeyid": &keyid}],
            "attestations": [{"type": "https://aflock.ai/attestations/command-run/v0.1",
                              "regopolicies": [{"name": "exit", "module": engine.encode(module)}]}],
        }},
    })
    .to_string()
}

/// `verify -p --vsa-outfile`: a signed VSA that in-toto-attestation validates, PASSED with the
/// artifact as subject, the policy and input digests; with `--tsa-ca`, an attestation without a
/// trusted timestamp is rejected and the summary says FAILED.
#[test]
fn verify_policy_writes_signed_vsas_and_requires_trusted_time() {
    let python = require!(python());
    let tsa = require!(tsa());
    let space = Workspace::new();
    let key = space.arg("key.pem");
    let stamped = space.attest_untraced(
        &space.arg("build.json"),
        &["--step", "build", "--timestamp-servers", &tsa.url],
        &["sh", "-c", "printf app > app.bin"],
    );
    assert_exit(&stamped, 0);
    std::fs::write(space.path("policy.json"), exit_zero_policy(&space, "build")).unwrap();
    space.sign_policy(&key, &[]);
    let root = tsa.file("root.pem").display().to_string();
    let gate = |attestation: &str, vsa: &str| {
        oci_attest_in(
            space.dir.path(),
            &[
                "verify",
                "-p",
                "policy.signed.json",
                "-k",
                "key.pem.pub",
                "-a",
                attestation,
                "--artifactfile",
                "work/app.bin",
                "--tsa-ca",
                &root,
                "--vsa-outfile",
                vsa,
                "--signer-file-key-path",
                "key.pem",
            ],
        )
    };
    let passed = gate("build.json", "vsa.json");
    assert_exit(&passed, 0);
    let printed = check_statement(&python, &space, &space.path("vsa.json"), "vsa");
    let summary: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(summary["predicateType"], VSA);
    let artifact = sha256sum(&space.work().join("app.bin")).unwrap();
    assert_eq!(
        descriptors(&summary["subject"]),
        [("app.bin".to_owned(), artifact)]
    );
    let predicate = &summary["predicate"];
    assert_eq!(predicate["verificationResult"], "PASSED");
    assert_eq!(predicate["verifiedLevels"][0], "SLSA_BUILD_LEVEL_1");
    assert_eq!(
        predicate["policy"]["digest"]["sha256"],
        sha256(&std::fs::read(space.path("policy.json")).unwrap())
    );
    assert_eq!(
        predicate["inputAttestations"][0]["digest"]["sha256"],
        sha256(&std::fs::read(space.path("build.json")).unwrap())
    );

    let unstamped = space.attest_untraced(
        &space.arg("unstamped.json"),
        &["--step", "build"],
        &["true"],
    );
    assert_exit(&unstamped, 0);
    let failed = gate("unstamped.json", "failed-vsa.json");
    assert_exit(&failed, EXIT_MISMATCH);
    assert!(
        output_text(&failed).contains("no RFC 3161 timestamp"),
        "{}",
        output_text(&failed)
    );
    let printed = check_statement(&python, &space, &space.path("failed-vsa.json"), "vsa");
    let summary: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(summary["predicate"]["verificationResult"], "FAILED");
}

/// `keygen --passphrase-file` writes encrypted PKCS#8 that OpenSSL opens with the passphrase;
/// `run` and `sign` sign with it given the passphrase file, and refuse it (key error, nothing
/// run) with a wrong one.
#[test]
fn encrypted_keys_from_keygen_sign_runs_and_policies() {
    let space = Workspace::new();
    std::fs::write(space.path("pass.txt"), "correct horse\n").unwrap();
    // Root's, mode 0600: run refuses a passphrase file the command's user could read.
    std::fs::set_permissions(
        space.path("pass.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(space.path("wrong.txt"), "battery staple\n").unwrap();
    let keygen = oci_attest_in(
        space.dir.path(),
        &[
            "keygen",
            "--algorithm",
            "ecdsa-p256",
            "--out",
            "enc.pem",
            "--passphrase-file",
            "pass.txt",
        ],
    );
    assert_exit(&keygen, 0);
    let pem = std::fs::read_to_string(space.path("enc.pem")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    let public = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-passin", "pass:correct horse", "-in"])
        .arg(space.path("enc.pem")))
    .unwrap_or_else(|error| panic!("{error:#}"));
    assert_eq!(
        public.stdout,
        std::fs::read(space.path("enc.pem.pub")).unwrap()
    );

    let (key, pass, wrong) = (
        space.arg("enc.pem"),
        space.arg("pass.txt"),
        space.arg("wrong.txt"),
    );
    let attested = |passphrase: &str, out: &str| {
        run_attested(
            &space.work(),
            &[
                "--trace",
                "off",
                "-k",
                &key,
                "--signer-file-key-passphrase-path",
                passphrase,
                "-o",
                out,
                "--",
                "sh",
                "-c",
                "printf x > ran.txt",
            ],
        )
    };
    let refused = attested(&wrong, &space.arg("refused.json"));
    assert_exit(&refused, 125);
    assert!(oci_attest::stderr(&refused).contains("wrong passphrase"));
    assert!(
        !space.work().join("ran.txt").exists(),
        "the command ran with an unusable key"
    );
    let signed = attested(&pass, &space.arg("att.json"));
    assert_exit(&signed, 0);
    let verified = oci_attest_in(
        space.dir.path(),
        &[
            "verify",
            "--key",
            "enc.pem.pub",
            "--allow-untraced",
            "att.json",
        ],
    );
    assert_exit(&verified, 0);

    std::fs::write(space.path("policy.json"), exit_zero_policy(&space, "build")).unwrap();
    space.sign_policy(
        "enc.pem",
        &["--signer-file-key-passphrase-path", "pass.txt"],
    );
}
