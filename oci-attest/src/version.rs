//! What `oci-attest --version` (and `oci-attest version`) says about this build: the version,
//! the commit it was built from, the target it was built for, whether the eBPF tracer is built
//! in and what the kernel must offer for it. A CI log then shows which binary ran and why
//! tracing may be unavailable on that runner.

use std::sync::LazyLock;

/// The commit the binary was built from, set by `build.rs` (`-dirty` when the work tree had
/// uncommitted changes; `unknown` outside a git checkout without `OCI_ATTEST_GIT_COMMIT`).
pub const GIT_COMMIT: &str = env!("OCI_ATTEST_GIT_COMMIT");

/// The target triple the binary was built for.
pub const TARGET: &str = env!("OCI_ATTEST_TARGET");

static LONG: LazyLock<String> = LazyLock::new(|| {
    let linking = if cfg!(target_feature = "crt-static") {
        "statically linked"
    } else {
        "dynamically linked"
    };
    format!(
        "{version}\ncommit: {GIT_COMMIT}\ntarget: {TARGET} ({linking})\ntracer: {tracer}\nkernel: {kernel}",
        version = env!("CARGO_PKG_VERSION"),
        tracer = tracer(),
        kernel = kernel_requirements(),
    )
});

/// The text after the program name: clap prints `oci-attest ` before it for `--version`.
pub fn long() -> &'static str {
    LONG.as_str()
}

#[cfg(feature = "tracer")]
fn tracer() -> String {
    format!(
        "built in (eBPF programs on the raw tracepoints {})",
        crate::trace::TRACEPOINTS.join(", ")
    )
}

#[cfg(not(feature = "tracer"))]
fn tracer() -> String {
    "not built in (no run, no doctor)".to_owned()
}

#[cfg(feature = "tracer")]
fn kernel_requirements() -> String {
    format!(
        "Linux {} or later (bpf_loop) on x86_64, BTF ({}), tracefs, raw tracepoints; root or \
         CAP_BPF+CAP_PERFMON to trace (`oci-attest doctor` checks this host)",
        crate::trace::MINIMUM_KERNEL,
        crate::trace::layout::VMLINUX_BTF,
    )
}

#[cfg(not(feature = "tracer"))]
fn kernel_requirements() -> String {
    "none (no tracer)".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_version_names_commit_target_tracer_and_kernel() {
        let text = long();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], env!("CARGO_PKG_VERSION"), "{text}");
        assert!(lines[1].starts_with("commit: "), "{text}");
        assert_ne!(GIT_COMMIT, "", "{text}");
        assert!(
            lines[2].starts_with(&format!("target: {TARGET} (")),
            "{text}"
        );
        assert!(lines[3].starts_with("tracer: "), "{text}");
        assert!(lines[4].starts_with("kernel: "), "{text}");
    }
}
