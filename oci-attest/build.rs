/// Builds the kernel programs of `oci-attest-ebpf` (nightly, `-Z build-std=core`, bpf target)
/// and leaves the object in OUT_DIR, where `include_bytes_aligned!` embeds it in the binary.
/// Without the `tracer` feature (the fuzz crate) there is nothing to build.
fn main() -> anyhow::Result<()> {
    #[cfg(feature = "tracer")]
    build_ebpf()?;
    Ok(())
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
