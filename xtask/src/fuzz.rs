//! `cargo xtask fuzz`: run the cargo-fuzz targets of `oci-attest/fuzz`, or (`--seed`) write
//! their seed corpus from the generators below.
//!
//! Fuzzing runs from two corpus directories: `corpus/<target>` (git-ignored, grows as the
//! fuzzer finds new paths) and the committed `seeds/<target>`, read-only to the fuzzer.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, ensure, Context as _};
use oci_attest_tests::archive::{
    config_json, descriptor, gzip, layer_tar, sha256_hex, Archive, Member, LAYOUT_MARKER,
    OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use serde_json::{json, Value};

pub const TARGETS: [&str; 2] = ["archive", "documents"];

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
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        eprintln!("xtask: fuzzing {target} for {} s", args.seconds);
        let status = Command::new("cargo")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "run", target])
            // Safe Rust: the sanitizer would halve the executions and find nothing the
            // debug assertions (overflow checks) and libFuzzer's own limits do not.
            .args(["--sanitizer", "none", "--debug-assertions"])
            .arg(&corpus)
            .arg(dir.join("seeds").join(target))
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

fn write_seeds(seeds: &Path) -> anyhow::Result<()> {
    let mut total = 0;
    for (target, files) in [
        ("archive", archive_seeds()),
        ("documents", document_seeds()),
    ] {
        let dir = seeds.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, bytes) in files {
            total += bytes.len();
            std::fs::write(dir.join(name), bytes)
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
