//! Harness for oci-attest's end-to-end tests: image fixtures made and saved by the real tools
//! (podman, buildah, skopeo, umoci, docker, ctr), independent expectations computed with
//! standard tools (`tar`, `sha256sum`, `gzip`, `zstd`), private containerd/dockerd instances and
//! registries,
//! and the oci-attest binary under test.
//!
//! `cargo xtask test` prepares everything and exports the environment; the tests also run under a
//! plain `cargo test` and then report what is missing (see [`require!`]).

pub mod archive;
pub mod attack;
pub mod attested;
pub mod command;
pub mod credentials;
pub mod daemons;
pub mod expect;
pub mod fixtures;
pub mod oci_attest;
pub mod paths;
pub mod registry;
pub mod registry_bench;
pub mod release;
pub mod rootless;
pub mod storage;
pub mod tamper;
pub mod tsa;

/// Set by `cargo xtask test`: every test that would skip for a missing environment fails.
pub const REQUIRE_ALL_ENV: &str = "OCI_ATTEST_REQUIRE_ALL";

/// True in CI (`CI=true`) and under `cargo xtask test` ([`REQUIRE_ALL_ENV`]): a missing piece
/// of the environment is then a failure, never a skip.
pub fn in_ci() -> bool {
    let set = |name| std::env::var(name).is_ok_and(|value| value == "true" || value == "1");
    set("CI") || set(REQUIRE_ALL_ENV)
}

/// Says that `test` is skipped because of `reason` (the "SKIPPED" line `cargo xtask test`
/// counts); panics instead when skips are failures ([`in_ci`]).
pub fn skip(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: {reason} (CI=true or {REQUIRE_ALL_ENV}=1: not skipping)");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a skip
    // must be visible.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Root is what eBPF tracing (and `mknod`) need; as a `Result` for [`require!`].
pub fn root() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (eBPF tracing)"
    );
    Ok(())
}

/// Unwraps a `Result` describing a piece of the test environment (a daemon, a fixture, the
/// binary). On error: panics under CI, otherwise reports the test as skipped and returns.
#[macro_export]
macro_rules! require {
    ($environment:expr) => {
        match $environment {
            Ok(value) => value,
            Err(error) => {
                $crate::skip(
                    // libtest names each test's thread after the test.
                    std::thread::current().name().unwrap_or(module_path!()),
                    &format!("test environment incomplete: {error:#}"),
                );
                return;
            }
        }
    };
}
