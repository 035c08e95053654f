//! `cargo xtask demo`: the README's first command. Builds a small image offline, saves it under
//! `oci-attest run`, and verifies the signed attestation against the archive.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context as _};
use oci_attest_tests::command::describe;
use oci_attest_tests::fixtures::{build_images, APP_IMAGE};
use oci_attest_tests::paths;
use oci_attest_tests::storage::{remove_tree, ContainersStorage};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    let status = Command::new("cargo")
        .args(["build", "--quiet", "-p", "oci-attest"])
        .env("PATH", paths::search_path())
        .current_dir(paths::workspace_root())
        .status()
        .context("cannot start cargo build")?;
    ensure!(
        status.success(),
        "`cargo build -p oci-attest` failed ({status})"
    );
    let work = tempfile::Builder::new()
        .prefix("oci-attest-demo-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let result = build_and_attest(work.path());
    let cleanup = remove_tree(work.path());
    result?;
    cleanup
}

fn build_and_attest(work: &Path) -> anyhow::Result<()> {
    let storage = ContainersStorage::create(&work.join("storage"))?;
    build_images(&storage, &work.join("build"))?;
    println!("demo: built {APP_IMAGE} offline (busybox rootfs + 3 COPY layers)");
    let out = paths::workspace_root().join("target/demo");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    save_and_verify(&storage, APP_IMAGE, &out)
}

/// The wrapped save and the verification. Writes `demo-key.pem` (+ `.pub`), `demo.tar` and
/// `demo.att.json` into `out`.
fn save_and_verify(storage: &ContainersStorage, image: &str, out: &Path) -> anyhow::Result<()> {
    let key = out.join("demo-key.pem");
    let archive = out.join("demo.tar");
    let attestation = out.join("demo.att.json");
    let oci_attest = oci_attest_tests::oci_attest::binary()?;
    let step = |args: &mut Command| -> anyhow::Result<()> {
        args.envs(storage.env()).env("PATH", paths::search_path());
        println!("demo: $ {}", describe(args));
        let status = args
            .status()
            .with_context(|| format!("cannot start `{}`", describe(args)))?;
        ensure!(status.success(), "`{}` failed ({status})", describe(args));
        Ok(())
    };
    // skopeo refuses to add to an existing docker-archive: each demo run starts a fresh one.
    for stale in [&archive, &attestation] {
        if stale.exists() {
            std::fs::remove_file(stale)
                .with_context(|| format!("cannot remove {}", stale.display()))?;
        }
    }
    if !key.exists() {
        step(
            Command::new(&oci_attest)
                .arg("keygen")
                .arg("--out")
                .arg(&key),
        )?;
    }
    step(
        Command::new(&oci_attest)
            .arg("run")
            .arg("-k")
            .arg(&key)
            .arg("-o")
            .arg(&attestation)
            .args([
                "--",
                "skopeo",
                "copy",
                &format!("containers-storage:{image}"),
            ])
            .arg(format!("docker-archive:{}:{image}", archive.display())),
    )?;
    step(
        Command::new(&oci_attest)
            .arg("verify")
            .arg("--key")
            .arg(key.with_extension("pem.pub"))
            .arg("--image")
            .arg(&archive)
            .arg(&attestation),
    )?;
    println!(
        "demo: {} is signed and matches {}",
        attestation.display(),
        archive.display()
    );
    Ok(())
}
