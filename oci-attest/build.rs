/// Builds the kernel programs of `oci-attest-ebpf` (nightly, `-Z build-std=core`, bpf target)
/// and leaves the object in OUT_DIR, where `include_bytes_aligned!` embeds it in the binary.
/// Without the `tracer` feature (the fuzz crate) there is nothing to build.
/// Also records what `--version` says about the build (src/version.rs).
fn main() -> anyhow::Result<()> {
    #[cfg(feature = "tracer")]
    build_ebpf()?;
    println!(
        "cargo:rustc-env=OCI_ATTEST_TARGET={}",
        std::env::var("TARGET")?
    );
    println!("cargo:rustc-env=OCI_ATTEST_GIT_COMMIT={}", git_commit());
    Ok(())
}

/// `OCI_ATTEST_GIT_COMMIT` when set (`cargo xtask dist` builds an exported tree, which has no
/// `.git`), else `git rev-parse HEAD` with `-dirty` when tracked files have changed.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=OCI_ATTEST_GIT_COMMIT");
    if let Ok(commit) = std::env::var("OCI_ATTEST_GIT_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // A new commit or a change to the index (every `git add`, `git commit`) rebuilds this.
    for path in ["HEAD", "index"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = git(&["rev-parse", "--git-path", &head_ref]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

#[cfg(feature = "tracer")]
fn build_ebpf() -> anyhow::Result<()> {
    use anyhow::{anyhow, Context as _};
    use aya_build::{Package, Toolchain};

    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "oci-attest-ebpf")
        .ok_or_else(|| anyhow!("oci-attest-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // aya-build forwards every stderr line of the nested cargo as a `cargo:warning`, so each
    // build of this crate printed the nested build's `Compiling ...`/`Finished ...` status lines
    // as warnings. Quiet cargo prints no status lines; compiler diagnostics and errors of the
    // kernel programs still come through (they travel as JSON messages on stdout).
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
