use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// Builds the kernel programs of `oci-attest-ebpf` (nightly, `-Z build-std=core`, bpf target)
/// and leaves the object in OUT_DIR, where `include_bytes_aligned!` embeds it in the binary.
fn main() -> anyhow::Result<()> {
    if aya_build_skipped() {
        // Fuzz builds set AYA_BUILD_SKIP: their sanitizer RUSTFLAGS would leak into the nested
        // eBPF build. The binary still needs an object to embed; an empty one makes the tracer
        // report that it was built without kernel programs.
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?;
        let object = std::path::Path::new(&out_dir).join("oci-attest");
        return std::fs::write(&object, [])
            .with_context(|| format!("writing {}", object.display()));
    }
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

/// The same test aya-build applies to AYA_BUILD_SKIP.
fn aya_build_skipped() -> bool {
    std::env::var_os("AYA_BUILD_SKIP")
        .is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
}
