//! `cargo xtask demo`: the README's first command. Builds a small image offline, saves it under
//! `oci-attest run` as an unprivileged user (the test user `cargo xtask setup` makes, with
//! `--run-as`) that cannot read the root-owned key, and verifies the signed attestation
//! against the archive.

use std::os::unix::fs::PermissionsExt as _;
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
    // Root's containers-storage is out of the unprivileged user's reach: the image is handed
    // over as an OCI layout, which skopeo reads without privileges.
    let layout = work.join("layout");
    crate::setup::run_visible(
        storage
            .command("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("containers-storage:{APP_IMAGE}"))
            .arg(format!("oci:{}:app", layout.display())),
    )?;
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755))?;
    let out = paths::workspace_root().join("target/demo");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // The save writes demo.tar here as the user; the key here stays root's, mode 0600.
    oci_attest_tests::oci_attest::give_to_test_user(&out)?;
    save_and_verify(&layout, APP_IMAGE, &out)
}

/// The wrapped save and the verification. Writes `demo-key.pem` (+ `.pub`), `demo.tar` and
/// `demo.att.json` into `out`.
fn save_and_verify(layout: &Path, image: &str, out: &Path) -> anyhow::Result<()> {
    let key = out.join("demo-key.pem");
    let archive = out.join("demo.tar");
    let attestation = out.join("demo.att.json");
    let oci_attest = oci_attest_tests::oci_attest::binary()?;
    let step = |args: &mut Command| -> anyhow::Result<()> {
        args.env("PATH", paths::search_path());
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
            .args(["--run-as", oci_attest_tests::oci_attest::TEST_USER])
            .arg("-k")
            .arg(&key)
            .arg("-o")
            .arg(&attestation)
            .args(["--", "skopeo", "copy"])
            .arg(format!("oci:{}:app", layout.display()))
            .arg(format!("docker-archive:{}:{image}", archive.display()))
            .current_dir(out),
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
