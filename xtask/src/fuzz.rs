//! `cargo xtask fuzz`: run the cargo-fuzz targets of `oci-attest/fuzz`, or (`--seed`) write
//! their seed corpus from the generators below.
//!
//! Fuzzing runs from the corpus directories `corpus/<target>` (git-ignored, grows as the fuzzer
//! finds new paths), the committed `seeds/<target>` and `regressions/<target>` (inputs that once
//! crashed it), read-only to the fuzzer.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, ensure, Context as _};
use oci_attest_tests::archive::{
    config_json, descriptor, gzip, layer_tar, sha256_hex, Archive, Member, LAYOUT_MARKER,
    OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use serde_json::{json, Value};

pub const TARGETS: [&str; 6] = [
    "archive",
    "documents",
    "policy",
    "envelope",
    "registry",
    "config",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Fuzz only this target (default: all, one after the other).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
    /// Write the seed corpus (`oci-attest/fuzz/seeds/`) instead of fuzzing.
    #[arg(long)]
    seed: bool,
    /// Go on after a crash, timeout or out-of-memory (libFuzzer fork mode) and keep every
    /// reproducer, instead of stopping at the first.
    #[arg(long)]
    keep_going: bool,
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../oci-attest/fuzz")
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let dir = fuzz_dir();
    if args.seed {
        write_seeds(&dir.join("seeds"))?;
        return Ok(ExitCode::SUCCESS);
    }
    ensure_cargo_fuzz()?;
    let targets: Vec<&str> = match &args.target {
        Some(target) => vec![target.as_str()],
        None => TARGETS.to_vec(),
    };
    let mut failed = Vec::new();
    for target in targets {
        let corpus = dir.join("corpus").join(target);
        // Inputs that once crashed a target (kept apart: `--seed` rewrites `seeds/`).
        let regressions = dir.join("regressions").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        eprintln!("xtask: fuzzing {target} for {} s", args.seconds);
        let status = Command::new("cargo")
            .current_dir(&dir)
            // bpf-linker, for the eBPF build of oci-attest's tracer.
            .env("PATH", oci_attest_tests::paths::search_path())
            .args(["+nightly", "fuzz", "run", target])
            // Safe Rust: the sanitizer would halve the executions and find nothing the
            // debug assertions (overflow checks) and libFuzzer's own limits do not.
            .args(["--sanitizer", "none", "--debug-assertions"])
            .arg(&corpus)
            .arg(dir.join("seeds").join(target))
            .args(regressions.exists().then_some(&regressions))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .args(["-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1"])
            .args(if args.keep_going {
                &[
                    "-fork=1",
                    "-ignore_crashes=1",
                    "-ignore_timeouts=1",
                    "-ignore_ooms=1",
                ][..]
            } else {
                &[]
            })
            .status()
            .context("running cargo +nightly fuzz")?;
        if !status.success() {
            failed.push(target);
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "xtask: fuzzing found a failure in {} (reproducer under oci-attest/fuzz/artifacts/)",
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    ensure!(status.success(), "cargo install cargo-fuzz failed");
    Ok(())
}

// ---- seeds ------------------------------------------------------------------------------------

/// Separates documents in a `documents` seed (see `documents_archive` in the fuzz crate).
const PART_SEPARATOR: &[u8] = b"\0";
/// Ends a `registry` seed's control section (see `check_registry` in the fuzz crate).
const CONTROL_END: u8 = 1;

fn write_seeds(seeds: &Path) -> anyhow::Result<()> {
    let mut total = 0;
    let binary = oci_attest_tests::oci_attest::binary()?;
    let envelopes = envelope_seeds(&binary)?;
    let named = |seeds: Vec<(&str, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        seeds
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), bytes))
            .collect()
    };
    for (target, files) in [
        ("archive", named(archive_seeds())),
        ("documents", named(document_seeds())),
        ("policy", named(policy_seeds(&binary)?)),
        ("registry", named(registry_seeds(&envelopes))),
        ("envelope", named(envelopes)),
        ("config", config_seeds()?),
    ] {
        let dir = seeds.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, bytes) in files {
            total += bytes.len();
            std::fs::write(dir.join(&name), bytes)
                .with_context(|| format!("writing seed {target}/{name}"))?;
        }
    }
    // Committed to the repository: keep it small.
    if total > 200 << 10 {
        bail!("the seed corpus is {total} bytes, over the 200 KiB budget");
    }
    eprintln!("xtask: wrote {total} bytes of seeds to {}", seeds.display());
    Ok(())
}

/// A fixed Ed25519 public key as `oci-attest keygen` writes it, and its keyid.
fn seed_key() -> anyhow::Result<(String, String)> {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let pem = key
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .context("encoding the seed key")?;
    use sha2::Digest as _;
    Ok((hex::encode(sha2::Sha256::digest(pem.as_bytes())), pem))
}

/// Runs `oci-attest ARGS` (the debug build, `cargo build -p oci-attest`) in `cwd` with an empty
/// environment; a wrapped command may fail (the failed-build seed), oci-attest itself may not.
fn oci_attest(binary: &Path, cwd: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .context("running oci-attest")?;
    let wrapped_failed = args.first() == Some(&"run".as_ref()) && output.status.code() == Some(3);
    ensure!(
        output.status.success() || wrapped_failed,
        "oci-attest {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Policies as people write them: the example policies put together by `oci-attest policy new`
/// as docs/policy.md shows (a build step with Rego and a traced save reading its products), a
/// witness-style document with every optional field present and empty (`null` lists, unset
/// constraints), and a step reading another through `attestationsFrom`.
fn policy_seeds(binary: &Path) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    use base64::Engine as _;
    let (keyid, pem) = seed_key()?;
    let dir = tempfile::tempdir()?;
    let public = dir.path().join("key.pem.pub");
    std::fs::write(&public, &pem)?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let example = |name: &str| examples.join(name).into_os_string();
    let written = dir.path().join("policy.json");
    let new_step = |step: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "policy".as_ref(),
            "new".as_ref(),
            "--key".as_ref(),
            public.as_os_str(),
            "--expires".as_ref(),
            "2035-01-01".as_ref(),
            "-o".as_ref(),
            written.as_os_str(),
        ];
        args.extend_from_slice(step);
        oci_attest(binary, dir.path(), &args)
    };
    let (succeeded, traced, image_tag) = (
        example("build-succeeded.rego"),
        example("traced-save.rego"),
        example("image-tag.rego"),
    );
    new_step(&[
        "--step".as_ref(),
        "build".as_ref(),
        "--rego".as_ref(),
        &succeeded,
        "--attestation".as_ref(),
        "product".as_ref(),
    ])?;
    let oci_rego = {
        let mut text = std::ffi::OsString::from("oci=");
        text.push(&image_tag);
        text
    };
    new_step(&[
        "--add-to".as_ref(),
        written.as_os_str(),
        "--step".as_ref(),
        "save".as_ref(),
        "--artifacts-from".as_ref(),
        "build".as_ref(),
        "--rego".as_ref(),
        &traced,
        "--rego".as_ref(),
        &oci_rego,
        "--param".as_ref(),
        "image_tag=reg.example/team/app:1".as_ref(),
    ])?;
    let mut seeds = vec![(
        "build-then-save.json",
        std::fs::read(&written).context("reading the policy `policy new` wrote")?,
    )];
    let key = base64::engine::general_purpose::STANDARD.encode(&pem);
    let module = |source: &str| base64::engine::general_purpose::STANDARD.encode(source);
    let functionary = json!([{"type": "publickey", "publickeyid": keyid,
        "certConstraint": {"commonname": "", "dnsnames": [], "emails": [], "organizations": [],
                           "uris": [], "roots": [], "extensions": {}}}]);
    let witness = json!({
        "expires": "2035-01-01T00:00:00Z",
        "roots": {}, "timestampauthorities": {},
        "publickeys": {&keyid: {"keyid": keyid, "key": key}},
        "steps": {
            "build": {"name": "build", "functionaries": functionary,
                      "attestations": [{"type": "https://witness.dev/attestations/command-run/v0.1",
                                        "regopolicies": null}],
                      "artifactsFrom": null, "attestationsFrom": null},
            "scan": {"name": "scan", "functionaries": functionary,
                     "attestations": [{"type": "https://aflock.ai/attestations/material/v0.3",
                                       "regopolicies": [{"name": "from-build", "module": module(
                         "package scan\nimport rego.v1\ndeny contains \"failed\" if input.steps.build[\"https://aflock.ai/attestations/command-run/v0.1\"].exitcode != 0\n")}]}],
                     "artifactsFrom": ["build"], "attestationsFrom": ["build"]},
        },
    });
    seeds.push(("witness-style.json", to_json(&witness)));
    Ok(seeds)
}

/// Envelopes written by `oci-attest run --run-as root --trace off` (no tracer needed, as root
/// like the tests): a build whose two products share their content (the `files` list), a failed
/// command, and a save of a small docker archive (an oci attestation).
fn envelope_seeds(binary: &Path) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("key.pem");
    oci_attest(
        binary,
        dir.path(),
        &["keygen".as_ref(), "--out".as_ref(), key.as_os_str()],
    )?;
    let work = tempfile::tempdir()?;
    let plain = layer(1);
    let image_config = config(&[&plain]);
    let config_hex = sha256_hex(&image_config);
    let archive = tar(vec![
        file("1/layer.tar", plain),
        file(&format!("{config_hex}.json"), image_config),
        file(
            "manifest.json",
            to_json(&json!([{"Config": format!("{config_hex}.json"),
                             "RepoTags": ["seed:1"], "Layers": ["1/layer.tar"]}])),
        ),
    ]);
    std::fs::write(work.path().join("image.oci.tar.in"), archive)?;
    let mut seeds = Vec::new();
    for (name, step, script) in [
        (
            "build.json",
            "build",
            "printf binary > app.bin; printf binary > app.copy",
        ),
        ("failed.json", "build", "printf partial > app.bin; exit 3"),
        ("save.json", "save", "cp image.oci.tar.in image.oci.tar"),
    ] {
        let outfile = dir.path().join(name);
        oci_attest(
            binary,
            work.path(),
            &[
                "run".as_ref(),
                "--run-as".as_ref(),
                "root".as_ref(),
                "--trace".as_ref(),
                "off".as_ref(),
                "--step".as_ref(),
                step.as_ref(),
                "-k".as_ref(),
                key.as_os_str(),
                "-o".as_ref(),
                outfile.as_os_str(),
                "--".as_ref(),
                "sh".as_ref(),
                "-c".as_ref(),
                script.as_ref(),
            ],
        )?;
        let bytes =
            std::fs::read(&outfile).with_context(|| format!("oci-attest run wrote no {name}"))?;
        seeds.push((name, bytes));
    }
    Ok(seeds)
}

/// Registries as `attach` leaves them (docs/registry.md), in the `registry` target's input
/// format (parts at NUL; `@k`/`#k` the digest and size of part k; `@@` the digest of part 0,
/// the image): an image manifest with one referrer and a cosign `.att` image, an index of two
/// platform manifests, a docker manifest list without the referrers API. The envelopes are
/// those of [`envelope_seeds`]. The same registries again behind the authentication of Docker
/// Hub, GHCR, ACR, ECR, Quay and a distribution registry with htpasswd (a control section
/// before the parts: challenges, token answers, credentials, no referrers API).
fn registry_seeds(envelopes: &[(&'static str, Vec<u8>)]) -> Vec<(&'static str, Vec<u8>)> {
    const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
    const EMPTY: &str = "application/vnd.oci.empty.v1+json";
    let empty_config =
        json!({"mediaType": EMPTY, "digest": format!("sha256:{}", sha256_hex(b"{}")), "size": 2});
    let image_manifest = |media_type: &str, seed: u8| {
        let plain = layer(seed);
        to_json(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(OCI_CONFIG, &config(&[&plain])),
            "layers": [descriptor(OCI_LAYER_GZIP, &gzip(&plain))],
        }))
    };
    // Placeholders are resolved by the fuzz harness: json! would escape nothing in them, but
    // sizes must be bare numbers, so they are spliced in as text.
    let referrer = |envelope: usize| {
        String::from_utf8(to_json(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": DSSE,
            "config": empty_config,
            "layers": [{"mediaType": DSSE, "digest": format!("sha256:@{envelope}"), "size": "SIZE"}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": "sha256:@@", "size": 1},
            "annotations": {"in-toto.io/predicate-type": "https://aflock.ai/attestation-collection/v0.1",
                            "ai.aflock.attestation.step": "build"},
        })))
        .expect("JSON is UTF-8")
        .replace("\"SIZE\"", &format!("#{envelope}"))
    };
    let referrers = |manifests: &[usize], cosign_envelope: Option<usize>| {
        let entries: Vec<String> = manifests
            .iter()
            .map(|part| {
                format!(
                    r#"{{"mediaType":"{OCI_MANIFEST}","artifactType":"{DSSE}","digest":"sha256:@{part}","size":#{part}}}"#
                )
            })
            .collect();
        let layers = cosign_envelope.map_or(String::new(), |part| {
            format!(
                r#","layers":[{{"mediaType":"{DSSE}","digest":"sha256:@{part}","size":#{part}}}]"#
            )
        });
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]{layers}}}"#,
            entries.join(",")
        )
    };
    let envelope = |name: &str| -> &[u8] {
        &envelopes
            .iter()
            .find(|(seed, _)| *seed == name)
            .expect("an envelope seed")
            .1
    };
    let join = |parts: &[&[u8]]| parts.join(PART_SEPARATOR);
    let manifest = image_manifest(OCI_MANIFEST, 1);
    let platform = |part: usize, architecture: &str| {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:@{part}","size":#{part},"platform":{{"os":"linux","architecture":"{architecture}"}}}}"#
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        platform(2, "amd64"),
        platform(3, "arm64")
    );
    let docker_list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{}]}}"#,
        platform(2, "amd64").replace(
            OCI_MANIFEST,
            "application/vnd.docker.distribution.manifest.v2+json"
        )
    );
    let with_referrer_and_cosign = join(&[
        &manifest,
        referrers(&[2], Some(4)).as_bytes(),
        referrer(3).as_bytes(),
        envelope("build.json"),
        envelope("failed.json"),
    ]);
    let index_of_platforms = join(&[
        index.as_bytes(),
        referrers(&[4], None).as_bytes(),
        &manifest,
        &image_manifest(OCI_MANIFEST, 2),
        referrer(5).as_bytes(),
        envelope("save.json"),
    ]);
    let docker_list_only = join(&[
        docker_list.as_bytes(),
        b"",
        &image_manifest("application/vnd.docker.distribution.manifest.v2+json", 1),
    ]);
    // Challenges and token answers as these registries send them (realms point at the fuzz
    // registry's token endpoint, `$REALM`).
    let controlled = |control: &[&str], documents: &[u8]| {
        let mut seed = control.join("\n").into_bytes();
        seed.push(CONTROL_END);
        seed.extend_from_slice(documents);
        seed
    };
    const JWT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjRZNk4ifQ.\
                       eyJhY2Nlc3MiOlt7InR5cGUiOiJyZXBvc2l0b3J5IiwibmFtZSI6ImZ1enoiLCJhY3Rpb25zIjpbInB1bGwiXX1dfQ.\
                       c2lnbmF0dXJl";
    let docker_hub_token = format!(
        r#"token: 200 {{"token":"{JWT}","access_token":"{JWT}","expires_in":300,"issued_at":"2026-12-06T11:43:00.123456789Z"}}"#
    );
    let acr_token = format!(r#"token: 200 {{"access_token":"{JWT}","refresh_token":"{JWT}"}}"#);
    vec![
        ("manifest-referrer-cosign.seed", with_referrer_and_cosign.clone()),
        ("index-platforms.seed", index_of_platforms.clone()),
        ("docker-list-no-referrers-api.seed", docker_list_only.clone()),
        (
            "docker-hub-token-reissued.seed",
            controlled(
                &[
                    r#"ping: Bearer realm="$REALM",service="registry.docker.io""#,
                    &docker_hub_token,
                    r#"challenge: Bearer realm="$REALM",service="registry.docker.io",scope="repository:fuzz:pull",error="invalid_token""#,
                ],
                &with_referrer_and_cosign,
            ),
        ),
        (
            "ghcr-anonymous.seed",
            controlled(
                &[
                    r#"ping: Bearer realm="$REALM",service="ghcr.io",scope="repository:user/image:pull""#,
                    r#"token: 200 {"token":"djE6ZnV6ei9mdXp6OjE3NjUwMjE3ODA="}"#,
                    "creds: none",
                ],
                &index_of_platforms,
            ),
        ),
        (
            "acr-identity-token.seed",
            controlled(
                &[
                    r#"ping: Bearer realm="$REALM",service="fuzzreg.azurecr.io""#,
                    &acr_token,
                    "creds: identitytoken eyJhbGciOiJSUzI1NiJ9.eyJncmFudF90eXBlIjoicmVmcmVzaF90b2tlbiJ9.c2ln",
                ],
                &docker_list_only,
            ),
        ),
        (
            "distribution-basic-referrers-tag.seed",
            controlled(
                &[r#"ping: Basic realm="Registry Realm""#, "referrers-api: absent"],
                &with_referrer_and_cosign,
            ),
        ),
        (
            "ecr-basic-auth-entry.seed",
            controlled(
                &[
                    r#"ping: Basic realm="https://012345678910.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com""#,
                    "creds: auth QVdTOmV5SndZWGxzYjJGa0lqb2labloxZWlKOQ==",
                ],
                &docker_list_only,
            ),
        ),
        (
            "quay-registry-token.seed",
            controlled(
                &[
                    r#"ping: Bearer realm="$REALM",service="quay.io""#,
                    "creds: registrytoken cXVheS1yZWdpc3RyeS10b2tlbg",
                ],
                &index_of_platforms,
            ),
        ),
    ]
}

/// Config files: the examples in `examples/config/` (a CI job's `.oci-attest.yaml`, witness's
/// tutorial `.witness.yaml`), anchors and aliases, flow style, an empty document, and a
/// checkout's file that tries to run the command as root (`refused-*`: `run` refuses it).
fn config_seeds() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut seeds = Vec::new();
    for entry in
        std::fs::read_dir(&examples).with_context(|| format!("reading {}", examples.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        seeds.push((format!("example-{name}"), bytes));
    }
    seeds.extend(
        [
            (
                "anchors.yaml",
                "run:\n  step: build\n  signer-file-key-path: &key ./key.pem\n  \
                 attestor-product-include-glob:\n    - \"dist/**\"\n    - 'out/*.tar'\n\
                 verify:\n  policy: policy.signed.json\n  publickey: *key\n  \
                 artifactfile: app.tar\n",
            ),
            (
                "flow.yaml",
                "{run: {step: save, trace: auto, allow-incomplete-trace: true, hashes: [sha256]}, \
                 verify: null}\n",
            ),
            ("empty.yaml", "---\n"),
            (
                "refused-run-as.yaml",
                "run:\n  step: build\n  run-as: root\n  allow-new-privileges: true\n",
            ),
        ]
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text.as_bytes().to_vec())),
    );
    Ok(seeds)
}

fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialising a json! literal")
}

fn tar(members: Vec<(String, Member)>) -> Vec<u8> {
    Archive { members }.tar()
}

/// GNU headers: paths over 100 bytes become long-name (`L`) members, and a PAX extended
/// header (`x`) precedes the last member, so the fuzzer starts from both extensions.
fn gnu_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (position, (name, bytes)) in members.iter().enumerate() {
        if position + 1 == members.len() {
            builder
                .append_pax_extensions([("comment", &b"a PAX extended header"[..])])
                .expect("writing a tar to memory");
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, *bytes)
            .expect("writing a tar to memory");
    }
    builder.into_inner().expect("writing a tar to memory")
}

/// A one-file layer tar (uncompressed).
fn layer(seed: u8) -> Vec<u8> {
    layer_tar(
        &format!("etc/file{seed}"),
        format!("content of layer {seed}\n").repeat(4).as_bytes(),
    )
}

/// The config of an image made of these uncompressed layers.
fn config(plain_layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = plain_layers.iter().map(|plain| sha256_hex(plain)).collect();
    config_json(&diff_ids)
}

fn blob(bytes: &[u8]) -> (String, Member) {
    (
        format!("blobs/sha256/{}", sha256_hex(bytes)),
        Member::File(bytes.to_vec()),
    )
}

fn file(name: &str, bytes: Vec<u8>) -> (String, Member) {
    (name.to_owned(), Member::File(bytes))
}

/// Real archive shapes (docs/format.md), small: docker save, gzip-wrapped, OCI layout with a
/// nested index, the docker ≥ 25 hybrid, podman's symlinked layers, crane's names.
fn archive_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (plain1, plain2) = (layer(1), layer(2));
    let gzip1 = gzip(&plain1);
    let image_config = config(&[&plain1, &plain2]);
    let config_hex = sha256_hex(&image_config);
    let docker_manifest = to_json(&json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["seed:1"],
        "Layers": ["1/layer.tar", "2/layer.tar"],
    }]));
    let docker = tar(vec![
        file("1/layer.tar", gzip1.clone()),
        file("2/layer.tar", plain2.clone()),
        file(&format!("{config_hex}.json"), image_config.clone()),
        file("manifest.json", docker_manifest.clone()),
    ]);

    let oci_manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &image_config),
        "layers": [descriptor(OCI_LAYER_GZIP, &gzip1), descriptor(OCI_LAYER_GZIP, &plain2)],
    }));
    let mut platform_manifest = descriptor(OCI_MANIFEST, &oci_manifest);
    platform_manifest["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let inner_index = to_json(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [platform_manifest]}),
    );
    let mut top = descriptor(OCI_INDEX, &inner_index);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": "seed:1"});
    let oci_blobs = || {
        vec![
            blob(&gzip1),
            blob(&plain2),
            blob(&image_config),
            blob(&oci_manifest),
        ]
    };
    let mut oci = oci_blobs();
    oci.extend([
        blob(&inner_index),
        file("oci-layout", LAYOUT_MARKER.to_vec()),
        file(
            "index.json",
            to_json(&json!({"schemaVersion": 2, "manifests": [top]})),
        ),
    ]);

    let mut named = descriptor(OCI_MANIFEST, &oci_manifest);
    named["annotations"] = json!({"io.containerd.image.name": "docker.io/library/seed:1"});
    let mut hybrid = oci_blobs();
    hybrid.extend([
        file("oci-layout", LAYOUT_MARKER.to_vec()),
        file(
            "index.json",
            to_json(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [named]})),
        ),
        file(
            "manifest.json",
            to_json(&json!([{
                "Config": format!("blobs/sha256/{config_hex}"),
                "RepoTags": ["seed:1"],
                "Layers": [
                    format!("blobs/sha256/{}", sha256_hex(&gzip1)),
                    format!("blobs/sha256/{}", sha256_hex(&plain2)),
                ],
            }])),
        ),
    ]);

    let links = tar(vec![
        file("./blobs/one", gzip1.clone()),
        (
            "./1/layer.tar".to_owned(),
            Member::Symlink("../blobs/one".to_owned()),
        ),
        file("./blobs/two", plain2.clone()),
        (
            "./2/layer.tar".to_owned(),
            Member::Hardlink("blobs/two".to_owned()),
        ),
        file(&format!("./{config_hex}.json"), image_config.clone()),
        file("./manifest.json", docker_manifest),
    ]);

    let crane = tar(vec![
        file(&format!("sha256:{config_hex}"), image_config.clone()),
        file(&format!("{}.tar.gz", sha256_hex(&gzip1)), gzip1.clone()),
        file(&format!("{}.tar.gz", sha256_hex(&plain2)), plain2.clone()),
        file(
            "manifest.json",
            to_json(&json!([{
                "config": format!("sha256:{config_hex}"),
                "repoTags": null,
                "layers": [
                    format!("{}.tar.gz", sha256_hex(&gzip1)),
                    format!("{}.tar.gz", sha256_hex(&plain2)),
                ],
            }])),
        ),
    ]);

    let long_layer = format!("{}/layer.tar", "long-directory-name".repeat(8));
    let gnu_manifest = to_json(&json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["seed:1"],
        "Layers": [long_layer, "2/layer.tar"],
    }]));
    let gnu = gnu_tar(&[
        (&long_layer, &gzip1),
        ("2/layer.tar", &plain2),
        (&format!("{config_hex}.json"), &image_config),
        ("manifest.json", &gnu_manifest),
    ]);

    vec![
        ("gnu-long-names-pax.tar", gnu),
        ("docker-archive.tar", docker.clone()),
        ("docker-archive.tar.gz", gzip(&docker)),
        ("oci-nested-index.tar", tar(oci)),
        ("hybrid.tar", tar(hybrid)),
        ("podman-links.tar", links),
        ("crane.tar", crane),
    ]
}

/// Inputs in the `documents` format: NUL-separated parts (manifest.json, index.json, then
/// blobs); `@k`/`#k` stand for the digest/size of blob part k.
fn document_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let config = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:@4"]}}"#;
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:@3","size":#3},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:@4","size":#4}]}"#;
    let seeds: [(&str, [&str; 6]); 5] = [
        (
            "docker.seed",
            [
                r#"[{"Config":"blobs/sha256/@2","RepoTags":["seed:1","seed:latest"],"Layers":["blobs/sha256/@3","blobs/sha256/@3"]}]"#,
                "",
                r#"{"architecture":"arm64","variant":"v8","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:@3","sha256:@3"]}}"#,
                "layer bytes",
                "",
                "",
            ],
        ),
        (
            "oci.seed",
            [
                "",
                r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:@2","size":#2,"annotations":{"org.opencontainers.image.ref.name":"seed:1"}}]}"#,
                manifest,
                config,
                "layer bytes",
                "",
            ],
        ),
        (
            "nested-index.seed",
            [
                "",
                r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:@2","size":#2,"annotations":{"io.containerd.image.name":"docker.io/library/seed:1"}}]}"#,
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:@3","size":#3,"platform":{"os":"linux","architecture":"amd64"}},{"mediaType":"application/vnd.example.signature","digest":"sha256:@5","size":#5}]}"#,
                r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:@4","size":#4},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:@5","size":#5}]}"#,
                r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:@5"]}}"#,
                "layer bytes",
            ],
        ),
        (
            "hybrid.seed",
            [
                r#"[{"Config":"blobs/sha256/@3","RepoTags":null,"Layers":["blobs/sha256/@4"]}]"#,
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:@2","size":#2}]}"#,
                manifest,
                config,
                "layer bytes",
                "",
            ],
        ),
        (
            "no-layers.seed",
            [
                r#"[{"config":"blobs/sha256/@2","repoTags":["a:1"],"layers":[]}]"#,
                "",
                r#"{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}"#,
                "",
                "",
                "",
            ],
        ),
    ];
    seeds
        .into_iter()
        .map(|(name, parts)| {
            let used = parts
                .iter()
                .rposition(|part| !part.is_empty())
                .map_or(0, |last| last + 1);
            let bytes = parts[..used]
                .iter()
                .map(|part| part.as_bytes())
                .collect::<Vec<_>>()
                .join(PART_SEPARATOR);
            (name, bytes)
        })
        .collect()
}
