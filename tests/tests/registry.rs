//! Attestations in OCI registries, end to end against the real `docker-registry` instances that
//! `cargo xtask test` starts (plain HTTP, and TLS + basic auth): `run --attach` around a real
//! `skopeo copy` push, `discover`, `verify --image-ref`, `attach` refusals and `--cosign-tag`,
//! with `skopeo inspect --raw` as the independent client; pushes by podman and buildah as
//! subjects; 1 000 attestations on one image; and a hostile registry served by this test.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_attest_tests::command::run;
use oci_attest_tests::fixtures::Fixtures;
use oci_attest_tests::registry::RegistryEnv;
use oci_attest_tests::storage::ContainersStorage;
use oci_attest_tests::{oci_attest, require};
use serde_json::{json, Value};
use sha2::Digest as _;

const OCI_PREDICATE: &str = "https://aflock.ai/attestations/oci/v0.1";
const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Exit codes from `oci-attest --help`.
const EXIT_MISMATCH: i32 = 7;
const EXIT_REGISTRY: i32 = 9;

/// Each test pushes to its own repository, so they can run in parallel.
static REPOSITORY_SERIAL: AtomicUsize = AtomicUsize::new(0);

fn repository(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        REPOSITORY_SERIAL.fetch_add(1, Ordering::Relaxed)
    )
}

struct Environment {
    registries: RegistryEnv,
    fixtures: Fixtures,
    work: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
    /// A containers cert dir holding the TLS registry's CA (skopeo's `--dest-cert-dir`).
    cert_dir: PathBuf,
}

impl Environment {
    fn prepare() -> anyhow::Result<Self> {
        oci_attest::binary()?;
        let registries = RegistryEnv::from_env()?;
        let fixtures = Fixtures::from_env()?;
        let work = tempfile::tempdir()?;
        let key = work.path().join("key.pem");
        let out = oci_attest::output([Path::new("keygen"), Path::new("--out"), &key])?;
        anyhow::ensure!(out.status.success(), "keygen failed: {}", text(&out));
        let cert_dir = work.path().join("certs");
        std::fs::create_dir(&cert_dir)?;
        std::fs::copy(&registries.ca, cert_dir.join("ca.crt"))?;
        Ok(Environment {
            public: work.path().join("key.pem.pub"),
            registries,
            fixtures,
            key,
            cert_dir,
            work,
        })
    }

    fn fixture(&self, name: &str) -> PathBuf {
        let fixture = self
            .fixtures
            .get(name)
            .unwrap_or_else(|error| panic!("{error:#}"));
        self.fixtures.path(fixture)
    }

    /// oci-attest options for the TLS registry (credentials and CA).
    fn tls_options(&self) -> Vec<String> {
        vec![
            format!("--creds={}", self.registries.creds()),
            format!("--ca-file={}", self.registries.ca.display()),
        ]
    }

    /// `skopeo copy` of a fixture archive to `docker://DEST` (TLS registry when `tls`).
    fn skopeo_push_args(&self, fixture: &str, destination: &str, tls: bool) -> Vec<String> {
        let mut args = vec!["skopeo".to_owned(), "copy".to_owned(), "--quiet".to_owned()];
        if tls {
            args.push(format!("--dest-creds={}", self.registries.creds()));
            args.push(format!("--dest-cert-dir={}", self.cert_dir.display()));
        } else {
            args.push("--dest-tls-verify=false".to_owned());
        }
        args.push(format!(
            "docker-archive:{}",
            self.fixture(fixture).display()
        ));
        args.push(format!("docker://{destination}"));
        args
    }

    fn push(&self, fixture: &str, destination: &str, tls: bool) {
        let args = self.skopeo_push_args(fixture, destination, tls);
        run(Command::new(&args[0]).args(&args[1..])).unwrap_or_else(|error| panic!("{error:#}"));
    }

    /// The raw bytes `skopeo inspect --raw` reads for `reference` (independent client).
    fn inspect_raw(&self, reference: &str, tls: bool) -> Vec<u8> {
        let mut command = Command::new("skopeo");
        command.args(["inspect", "--raw"]);
        if tls {
            command
                .arg(format!("--creds={}", self.registries.creds()))
                .arg(format!("--cert-dir={}", self.cert_dir.display()));
        } else {
            command.arg("--tls-verify=false");
        }
        command.arg(format!("docker://{reference}"));
        run(&mut command)
            .unwrap_or_else(|error| panic!("{error:#}"))
            .stdout
    }

    fn oci_attest(&self, args: &[String]) -> Output {
        let mut command = oci_attest::command().unwrap_or_else(|error| panic!("{error:#}"));
        command
            .args(args)
            .current_dir(self.work.path())
            .stdin(std::process::Stdio::null());
        command
            .output()
            .unwrap_or_else(|error| panic!("cannot run oci-attest: {error}"))
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The statement inside an envelope file.
fn statement(envelope: &Path) -> Value {
    let envelope: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The run failed with the registry exit code and a one-line message containing `needle`.
fn assert_registry_failure(output: &Output, needle: &str) {
    assert_eq!(
        output.status.code(),
        Some(EXIT_REGISTRY),
        "{}",
        text(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains(needle), "{}", text(output));
    assert_eq!(stderr.trim().lines().count(), 1, "{}", text(output));
}

fn subject_digest(statement: &Value, name: &str) -> Option<String> {
    statement["subject"]
        .as_array()?
        .iter()
        .find(|subject| subject["name"] == name)
        .and_then(|subject| subject["digest"]["sha256"].as_str().map(str::to_owned))
}

#[test]
fn skopeo_push_under_run_attach_is_found_by_discover_verify_and_skopeo() {
    let env = require!(Environment::prepare());
    let registry = &env.registries.tls;
    let image = format!("{registry}/{}:1", repository("app"));
    let out = env.work.path().join("push.att.json");

    let mut args = strings(&["run", "-k"]);
    args.push(env.key.display().to_string());
    args.push("-o".to_owned());
    args.push(out.display().to_string());
    args.push("--attach".to_owned());
    args.extend(env.tls_options());
    args.push("--".to_owned());
    args.extend(env.skopeo_push_args("skopeo-docker-archive", &image, true));
    let result = env.oci_attest(&args);
    assert!(result.status.success(), "{}", text(&result));

    // The subject is the digest of the manifest bytes as skopeo reads them back.
    let manifest = env.inspect_raw(&image, true);
    let digest = sha256(&manifest);
    let statement = statement(&out);
    assert_eq!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
        ),
        Some(digest.clone()),
        "{statement:#}"
    );
    assert_eq!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/imagereference:{image}")
        ),
        Some(sha256(image.as_bytes()))
    );
    let recorded = statement.to_string();
    assert!(
        !recorded.contains(&env.registries.password),
        "the registry password is in the attestation"
    );

    // The tag-schema index (distribution 2.8 has no referrers API) lists one DSSE referrer
    // whose manifest names the image and carries the envelope file's bytes.
    let repository = image.rsplit_once(':').unwrap().0.to_owned();
    let index: Value =
        serde_json::from_slice(&env.inspect_raw(&format!("{repository}:sha256-{digest}"), true))
            .unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index:#}");
    assert_eq!(entries[0]["artifactType"], DSSE_MEDIA_TYPE);
    let referrer_digest = entries[0]["digest"].as_str().unwrap().to_owned();
    let referrer_bytes = env.inspect_raw(&format!("{repository}@{referrer_digest}"), true);
    assert_eq!(
        format!("sha256:{}", sha256(&referrer_bytes)),
        referrer_digest
    );
    let referrer: Value = serde_json::from_slice(&referrer_bytes).unwrap();
    assert_eq!(referrer["subject"]["digest"], format!("sha256:{digest}"));
    assert_eq!(referrer["subject"]["size"], manifest.len());
    assert_eq!(referrer["layers"][0]["mediaType"], DSSE_MEDIA_TYPE);
    assert_eq!(
        referrer["layers"][0]["digest"],
        format!("sha256:{}", sha256(&std::fs::read(&out).unwrap()))
    );

    // discover and verify --image-ref find it with no file on disk.
    let mut discover = strings(&["discover", "--json", &image]);
    discover.extend(env.tls_options());
    let found = env.oci_attest(&discover);
    assert!(found.status.success(), "{}", text(&found));
    let found: Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(found["subject"], format!("sha256:{digest}"));
    assert_eq!(
        found["attestations"].as_array().unwrap().len(),
        1,
        "{found:#}"
    );
    assert_eq!(found["attestations"][0]["step"], "oci-save");

    let mut verify = strings(&["verify", "--key"]);
    verify.push(env.public.display().to_string());
    verify.push("--image-ref".to_owned());
    verify.push(image.clone());
    verify.extend(env.tls_options());
    let verified = env.oci_attest(&verify);
    assert!(verified.status.success(), "{}", text(&verified));
    let report = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(
        report.starts_with(&format!(
            "{image} (sha256:{digest}): 1 attestation attached\n"
        )),
        "{report}"
    );
    // --json: one object, each attachment with its verdict.
    verify.push("--json".to_owned());
    let verified = env.oci_attest(&verify);
    assert!(verified.status.success(), "{}", text(&verified));
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["image"], image.as_str());
    assert_eq!(report["subject"], format!("sha256:{digest}"));
    assert_eq!(report["verified"], true);
    let attached = report["attestations"].as_array().unwrap();
    assert_eq!(attached.len(), 1, "{report:#}");
    assert_eq!(attached[0]["verified"], true);
    assert_eq!(attached[0]["step"], "oci-save");
    assert_eq!(
        attached[0]["envelopeDigest"],
        found["attestations"][0]["envelopeDigest"]
    );

    // Another key does not verify it.
    let other = env.work.path().join("other.pem");
    assert!(
        oci_attest::output([Path::new("keygen"), Path::new("--out"), &other])
            .unwrap()
            .status
            .success()
    );
    verify[2] = env.work.path().join("other.pem.pub").display().to_string();
    let refused = env.oci_attest(&verify);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_MISMATCH),
        "{}",
        text(&refused)
    );
    let report: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(report["verified"], false);
    assert!(
        report["attestations"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("no signature with keyid"),
        "{report:#}"
    );

    // Attaching the same envelope again changes nothing; --cosign-tag writes the .att image.
    let mut again = strings(&["attach", "--cosign-tag"]);
    again.push(out.display().to_string());
    again.push(image.clone());
    again.extend(env.tls_options());
    let attached = env.oci_attest(&again);
    assert!(attached.status.success(), "{}", text(&attached));
    assert!(String::from_utf8_lossy(&attached.stdout).contains("already attached"));
    let index: Value =
        serde_json::from_slice(&env.inspect_raw(&format!("{repository}:sha256-{digest}"), true))
            .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    let att: Value = serde_json::from_slice(
        &env.inspect_raw(&format!("{repository}:sha256-{digest}.att"), true),
    )
    .unwrap();
    assert_eq!(att["layers"].as_array().unwrap().len(), 1, "{att:#}");
    assert_eq!(att["layers"][0]["mediaType"], DSSE_MEDIA_TYPE);
    assert_eq!(att["layers"][0]["digest"], referrer["layers"][0]["digest"]);
    let again = env.oci_attest(&again);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("cosign tag: already in"));
}

#[test]
fn attach_refuses_an_image_the_attestation_does_not_name() {
    let env = require!(Environment::prepare());
    let registry = &env.registries.plain;
    let app = format!("{registry}/{}:1", repository("named"));
    let zero = format!("{registry}/{}:1", repository("unnamed"));
    let out = env.work.path().join("named.att.json");
    let mut args = strings(&["run", "--plain-http", "-k"]);
    args.push(env.key.display().to_string());
    args.push("-o".to_owned());
    args.push(out.display().to_string());
    args.push("--".to_owned());
    args.extend(env.skopeo_push_args("skopeo-docker-archive", &app, false));
    let result = env.oci_attest(&args);
    assert!(result.status.success(), "{}", text(&result));
    env.push("zero-layer-docker-archive", &zero, false);

    let attach = |image: &str, force: bool| {
        let mut args = strings(&["attach", "--plain-http"]);
        if force {
            args.push("--force".to_owned());
        }
        args.push(out.display().to_string());
        args.push(image.to_owned());
        env.oci_attest(&args)
    };
    let refused = attach(&zero, false);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_MISMATCH),
        "{}",
        text(&refused)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("names no subject"),
        "{}",
        text(&refused)
    );
    let discover = env.oci_attest(&strings(&["discover", "--json", "--plain-http", &zero]));
    let listed: Value = serde_json::from_slice(&discover.stdout).unwrap();
    assert_eq!(listed["attestations"].as_array().unwrap().len(), 0);

    let forced = attach(&zero, true);
    assert!(forced.status.success(), "{}", text(&forced));
    let by_digest = format!(
        "{}@sha256:{}",
        app.rsplit_once(':').unwrap().0,
        sha256(&env.inspect_raw(&app, false))
    );
    let named = attach(&by_digest, false);
    assert!(named.status.success(), "{}", text(&named));
}

#[test]
fn wrong_credentials_and_a_registry_that_is_down_fail_clearly_and_fast() {
    let env = require!(Environment::prepare());
    let image = format!("{}/{}:1", env.registries.tls, repository("creds"));
    env.push("skopeo-docker-archive", &image, true);
    let wrong = env.oci_attest(&[
        "discover".to_owned(),
        image.clone(),
        format!("--creds={}:wrong", env.registries.user),
        format!("--ca-file={}", env.registries.ca.display()),
    ]);
    assert_registry_failure(&wrong, "refused the credentials");

    // The credentials also come from an auth file, named by --authfile or REGISTRY_AUTH_FILE
    // (containers auth.json format), and the CA from a containers-style cert dir.
    let auth_file = env
        .work
        .path()
        .join(format!("auth-{}.json", std::process::id()));
    let encoded = base64::engine::general_purpose::STANDARD.encode(env.registries.creds());
    std::fs::write(
        &auth_file,
        json!({"auths": {env.registries.tls.clone(): {"auth": encoded}}}).to_string(),
    )
    .unwrap();
    let cert_dir = format!("--cert-dir={}", env.cert_dir.display());
    let by_flag = env.oci_attest(&[
        "discover".to_owned(),
        image.clone(),
        format!("--authfile={}", auth_file.display()),
        cert_dir.clone(),
    ]);
    assert!(by_flag.status.success(), "{}", text(&by_flag));
    let mut by_env = oci_attest::command().unwrap();
    let by_env = by_env
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["discover", &image, &cert_dir])
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{}", text(&by_env));

    // Without the CA the TLS registry's certificate is not trusted.
    let untrusted = env.oci_attest(&[
        "discover".to_owned(),
        image,
        format!("--creds={}", env.registries.creds()),
    ]);
    assert_registry_failure(&untrusted, "certificate");

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let down = env.oci_attest(&strings(&[
        "discover",
        "--plain-http",
        &format!("127.0.0.1:{port}/app:1"),
    ]));
    assert_registry_failure(&down, "127.0.0.1");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_failed_attach_after_run_keeps_the_signed_envelope() {
    let env = require!(Environment::prepare());
    let image = format!("{}/{}:1", env.registries.tls, repository("kept"));
    let out = env.work.path().join("kept.att.json");
    // skopeo pushes with the right credentials; oci-attest's own are wrong, so attach fails.
    let mut args = strings(&["run", "--attach", "-k"]);
    args.push(env.key.display().to_string());
    args.push("-o".to_owned());
    args.push(out.display().to_string());
    args.push(format!("--creds={}:wrong", env.registries.user));
    args.push(format!("--ca-file={}", env.registries.ca.display()));
    args.push("--".to_owned());
    args.extend(env.skopeo_push_args("skopeo-docker-archive", &image, true));
    let result = env.oci_attest(&args);
    assert_eq!(
        result.status.code(),
        Some(EXIT_REGISTRY),
        "{}",
        text(&result)
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("kept at"), "{}", text(&result));
    let digest = sha256(&env.inspect_raw(&image, true));
    let statement = statement(&out);
    assert!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
        )
        .is_some(),
        "{statement:#}"
    );
    let verify =
        oci_attest::output([Path::new("verify"), Path::new("--key"), &env.public, &out]).unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
}

/// podman and buildah push from a private containers-storage; their `--digestfile` (added by
/// oci-attest) gives the subject, which must equal what the registry serves.
#[test]
fn podman_and_buildah_pushes_are_subjects() {
    let env = require!(Environment::prepare());
    let storage = require!(ContainersStorage::from_env());
    run(storage
        .command("podman")
        .args(["load", "-q", "-i"])
        .arg(env.fixture("podman-save-docker-archive")))
    .unwrap_or_else(|error| panic!("{error:#}"));
    for tool in ["podman", "buildah"] {
        let image = format!("{}/{}:1", env.registries.plain, repository(tool));
        let out = env.work.path().join(format!("{tool}.att.json"));
        let mut command = oci_attest::command().unwrap();
        command
            .envs(storage.env())
            .current_dir(env.work.path())
            .args(["run", "-k"])
            .arg(&env.key)
            .arg("-o")
            .arg(&out)
            .args([
                "--",
                tool,
                "push",
                "--tls-verify=false",
                "localhost/fx/app:1",
            ])
            .arg(format!("docker://{image}"));
        let result = command.output().unwrap();
        assert!(result.status.success(), "{tool}: {}", text(&result));
        let digest = sha256(&env.inspect_raw(&image, false));
        let statement = statement(&out);
        assert!(
            subject_digest(
                &statement,
                &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
            )
            .is_some(),
            "{tool}: {statement:#}"
        );
        assert!(
            subject_digest(
                &statement,
                &format!("{OCI_PREDICATE}/imagereference:{image}")
            )
            .is_some(),
            "{tool}: {statement:#}"
        );
    }
}

/// A push inside a script is seen by the trace (eBPF, as root in CI) and resolved against the
/// registry after the run.
#[test]
fn a_push_inside_a_script_is_a_subject() {
    let env = require!(Environment::prepare());
    let image = format!("{}/{}:1", env.registries.plain, repository("script"));
    let out = env.work.path().join("script.att.json");
    let script = env
        .skopeo_push_args("skopeo-docker-archive", &image, false)
        .join(" ");
    let mut args = strings(&["run", "--trace", "ebpf", "--plain-http", "-k"]);
    args.push(env.key.display().to_string());
    args.push("-o".to_owned());
    args.push(out.display().to_string());
    args.extend(strings(&["--", "sh", "-c"]));
    args.push(format!("true && {script}"));
    let result = env.oci_attest(&args);
    assert!(result.status.success(), "{}", text(&result));
    let digest = sha256(&env.inspect_raw(&image, false));
    let statement = statement(&out);
    assert!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
        )
        .is_some(),
        "{statement:#}"
    );
}

/// A push tool that lies in its `--digestfile` (a stand-in that runs the real skopeo, then
/// writes another digest there): the registry's answer is asked after the push, they disagree,
/// and nothing is signed: exit 3, `pushed-digest-mismatch`, even with --allow-missing-subjects.
#[test]
fn a_digestfile_the_registry_contradicts_is_never_signed() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = require!(Environment::prepare());
    let real = std::env::split_paths(&oci_attest_tests::paths::search_path())
        .map(|dir| dir.join("skopeo"))
        .find(|path| path.is_file())
        .expect("skopeo on PATH");
    let bin = env.work.path().join("lying-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let skopeo = bin.join("skopeo");
    std::fs::write(
        &skopeo,
        format!(
            "#!/bin/sh\n{} \"$@\" || exit\nprevious=\nfor word in \"$@\"; do\n  \
             [ \"$previous\" = --digestfile ] && echo sha256:{} > \"$word\"\n  \
             previous=$word\ndone\n",
            real.display(),
            "0".repeat(64)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&skopeo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("{}/{}:1", env.registries.plain, repository("lying"));
    let out = env.work.path().join("lying.att.json");
    let mut args = strings(&["run", "--trace", "off", "--plain-http", "-k"]);
    args.push(env.key.display().to_string());
    args.push("-o".to_owned());
    args.push(out.display().to_string());
    args.push("--allow-missing-subjects".to_owned());
    args.push("--".to_owned());
    let mut push = env.skopeo_push_args("skopeo-docker-archive", &image, false);
    push[0] = skopeo.display().to_string();
    args.extend(push);
    let result = env.oci_attest(&args);
    assert_eq!(result.status.code(), Some(3), "{}", text(&result));
    assert!(
        String::from_utf8_lossy(&result.stderr).contains("pushed-digest-mismatch"),
        "{}",
        text(&result)
    );
    assert!(!out.exists(), "an attestation was written over a lie");
}

/// A push whose digest cannot be found (a `crane` stand-in that pushes nothing, so the
/// reference does not resolve) fails the run unless `--allow-missing-subjects`.
#[test]
fn a_push_without_a_digest_fails_unless_allowed() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = require!(Environment::prepare());
    let bin = env.work.path().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let crane = bin.join("crane");
    std::fs::write(&crane, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&crane, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("{}/{}:1", env.registries.plain, repository("missing"));
    let out = env.work.path().join("missing.att.json");
    let attempt = |allow: bool| {
        let mut args = strings(&["run", "--trace", "off", "--plain-http", "-k"]);
        args.push(env.key.display().to_string());
        args.push("-o".to_owned());
        args.push(out.display().to_string());
        if allow {
            args.push("--allow-missing-subjects".to_owned());
        }
        args.push("--".to_owned());
        args.push(crane.display().to_string());
        args.extend(strings(&["push", "image.tar", &image]));
        env.oci_attest(&args)
    };
    let refused = attempt(false);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("manifest digest is unknown"),
        "{}",
        text(&refused)
    );
    assert!(
        !out.exists(),
        "an attestation was written without its subject"
    );
    let allowed = attempt(true);
    assert!(allowed.status.success(), "{}", text(&allowed));
    let statement = statement(&out);
    let names: Vec<&str> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|subject| subject["name"].as_str())
        .collect();
    assert!(
        !names.iter().any(|name| name.contains("manifestdigest:")),
        "{names:?}"
    );
}

/// An envelope whose statement names `digest`; the signature is not checked by attach or
/// discover, so a placeholder keeps 1 000 of them cheap to make.
fn placeholder_envelope(digest: &str, step: usize) -> Vec<u8> {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"name": format!("{OCI_PREDICATE}/manifestdigest:{digest}"), "digest": {"sha256": digest}}],
        "predicateType": "https://aflock.ai/attestation-collection/v0.1",
        "predicate": {"name": format!("step-{step}"), "attestations": []},
    });
    let payload = base64::engine::general_purpose::STANDARD.encode(statement.to_string());
    json!({"payload": payload, "payloadType": "application/vnd.in-toto+json",
           "signatures": [{"keyid": "placeholder", "sig": "AA=="}]})
    .to_string()
    .into_bytes()
}

#[test]
fn a_thousand_attestations_on_one_image_are_all_discovered() {
    const COUNT: usize = 1000;
    /// Attached one `oci-attest attach` process each; the rest in one batch.
    const SINGLY: usize = 50;
    let env = require!(Environment::prepare());
    let image = format!("{}/{}:1", env.registries.plain, repository("many"));
    env.push("skopeo-docker-archive", &image, false);
    let digest = sha256(&env.inspect_raw(&image, false));
    let dir = env.work.path().join("many");
    std::fs::create_dir(&dir).unwrap();
    let paths: Vec<String> = (0..COUNT)
        .map(|step| {
            let path = dir.join(format!("{step}.json"));
            std::fs::write(&path, placeholder_envelope(&digest, step)).unwrap();
            path.display().to_string()
        })
        .collect();
    let attach = |paths: &[String]| {
        let mut args = strings(&["attach", "--plain-http"]);
        args.extend(paths.iter().cloned());
        args.push(image.clone());
        let result = env.oci_attest(&args);
        assert!(result.status.success(), "{}", text(&result));
    };
    let started = Instant::now();
    for path in &paths[..SINGLY] {
        attach(std::slice::from_ref(path));
    }
    let single_time = started.elapsed();
    let started = Instant::now();
    attach(&paths[SINGLY..]);
    let batch_time = started.elapsed();

    let started = Instant::now();
    let found = env.oci_attest(&strings(&["discover", "--json", "--plain-http", &image]));
    let discover_time = started.elapsed();
    assert!(found.status.success(), "{}", text(&found));
    let found: Value = serde_json::from_slice(&found.stdout).unwrap();
    let mut steps: Vec<String> = found["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attestation| attestation["step"].as_str().unwrap().to_owned())
        .collect();
    steps.sort();
    steps.dedup();
    assert_eq!(steps.len(), COUNT);
    let index: Value = serde_json::from_slice(&env.inspect_raw(
        &format!("{}:sha256-{digest}", image.rsplit_once(':').unwrap().0),
        false,
    ))
    .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), COUNT);
    // Printed for the record (`--nocapture`); speed is measured, not asserted.
    println!(
        "{COUNT} attestations on one image: {SINGLY} single attaches {:.1}s ({:.0} ms each), \
         {} in one attach {:.1}s, discover of all {COUNT} {:.1}s",
        single_time.as_secs_f64(),
        single_time.as_secs_f64() * 1000.0 / SINGLY as f64,
        COUNT - SINGLY,
        batch_time.as_secs_f64(),
        discover_time.as_secs_f64()
    );
}

/// What the hostile registry does with a manifest request.
#[derive(Clone, Copy)]
enum Hostility {
    /// A manifest larger than any client should read.
    Oversized,
    /// A manifest whose bytes do not match the digest it is requested by.
    WrongDigest,
    /// Accepts the request and never answers.
    Silent,
    /// Asks for basic auth, then redirects manifest requests to another port.
    RedirectElsewhere,
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 that plays a registry badly. Requests it saw are
/// kept (head only) for the test to inspect.
struct HostileRegistry {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HostileRegistry {
    fn start(hostility: Hostility, redirect_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve(stream, hostility, redirect_port, &seen));
            }
        });
        HostileRegistry { port, requests }
    }
}

fn serve(
    mut stream: TcpStream,
    hostility: Hostility,
    redirect_port: u16,
    seen: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        seen.lock().unwrap().push(head.clone());
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let authorised = head.to_ascii_lowercase().contains("authorization:");
        let reply = |stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        };
        if path == "/v2/" {
            if matches!(hostility, Hostility::RedirectElsewhere) && !authorised {
                reply(
                    &mut stream,
                    "401 Unauthorized",
                    "WWW-Authenticate: Basic realm=\"hostile\"\r\n",
                    b"",
                );
            } else {
                reply(&mut stream, "200 OK", "", b"{}");
            }
            continue;
        }
        match hostility {
            Hostility::Oversized => {
                let body = vec![b' '; 16 << 20];
                reply(
                    &mut stream,
                    "200 OK",
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                    &body,
                );
            }
            Hostility::WrongDigest => {
                let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#;
                let forged = format!("sha256:{}", "0".repeat(64));
                reply(
                    &mut stream,
                    "200 OK",
                    &format!("Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {forged}\r\n"),
                    body,
                );
            }
            Hostility::Silent => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
            Hostility::RedirectElsewhere => {
                reply(
                    &mut stream,
                    "307 Temporary Redirect",
                    &format!("Location: http://127.0.0.1:{redirect_port}{path}\r\n"),
                    b"",
                );
            }
        }
        let _ = stream.flush();
    }
}

#[test]
fn hostile_registry_answers_fail_cleanly() {
    require!(oci_attest::binary());
    let discover = |port: u16, extra: &[&str]| {
        let started = Instant::now();
        let mut args = vec![
            "discover".to_owned(),
            "--plain-http".to_owned(),
            "--registry-timeout=3".to_owned(),
            format!("127.0.0.1:{port}/app:1"),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let output = oci_attest::output(&args).unwrap();
        (output, started.elapsed())
    };

    let oversized = HostileRegistry::start(Hostility::Oversized, 0);
    let (output, _) = discover(oversized.port, &[]);
    assert_registry_failure(&output, "limit");

    let forged = HostileRegistry::start(Hostility::WrongDigest, 0);
    let (output, _) = discover(forged.port, &[]);
    assert_registry_failure(&output, "digest");

    let silent = HostileRegistry::start(Hostility::Silent, 0);
    let (output, elapsed) = discover(silent.port, &[]);
    assert_registry_failure(&output, "no answer within");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");

    // The redirect target records what it is sent: the credentials must not reach it.
    let elsewhere = HostileRegistry::start(Hostility::WrongDigest, 0);
    let redirecting = HostileRegistry::start(Hostility::RedirectElsewhere, elsewhere.port);
    let (output, _) = discover(redirecting.port, &["--creds=user:secret-password"]);
    assert_ne!(output.status.code(), Some(0), "{}", text(&output));
    let redirected = elsewhere.requests.lock().unwrap().clone();
    let leaked: Vec<&String> = redirected
        .iter()
        .filter(|head| head.to_ascii_lowercase().contains("authorization"))
        .collect();
    assert!(
        leaked.is_empty(),
        "credentials followed the redirect: {leaked:?}"
    );
    let first = redirecting.requests.lock().unwrap().clone();
    assert!(
        first
            .iter()
            .any(|head| head.to_ascii_lowercase().contains("authorization")),
        "the registry itself never got the credentials: {first:?}"
    );
}
