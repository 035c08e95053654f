//! Exit codes of oci-attest, and the error type that carries one.
//!
//! `run` exits with the wrapped command's own code when the command failed; the codes below
//! are oci-attest's own failures. They are listed in `--help` (see `main.rs`).

use std::fmt;

/// The table shown in `--help` (top level and `run`); keep it in step with [`FailureKind::code`].
#[macro_export]
macro_rules! exit_codes_help {
    () => {
        "\
Exit codes:
  0   success (for `run`: the command succeeded and the attestation was written)
  N   `run`: the wrapped command's own non-zero exit code (128+signal if it was killed);
      the attestation recording it is still written
  1   general error (I/O, output file, invalid arguments)
  2   command-line usage error
  3   trace incomplete: reasons in summary.incomplete (see --allow-incomplete-trace)
  4   key or signing error (detected before the command starts)
  5   image archive analysis failed (malformed or tampered archive): nothing is signed
  6   --trace ebpf requested but eBPF tracing is unavailable on this host
  7   verify: signature or image does not match; verify -p: the policy does not hold;
      attach: the attestation does not name the image
  8   verify -p: the policy cannot be used (bad signature, expired, malformed, unsupported
      feature, broken Rego or Rego over its time/memory limit)
  9   registry operation failed (attach, discover, verify --image-ref; `run --attach`:
      the signed attestation was written to --outfile and is kept)"
    };
}

/// The failures that have their own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Anything not listed below (I/O, output file, bad arguments found after parsing).
    General,
    /// The trace lost events and `--allow-incomplete-trace` was not given.
    TraceIncomplete,
    /// A key could not be read, parsed, used or a signature could not be made.
    Key,
    /// An image archive failed analysis (malformed, tampered, unreadable).
    Analysis,
    /// `--trace ebpf` was requested and eBPF tracing cannot run on this host.
    TraceUnavailable,
    /// `verify`: the signature or the image does not match the envelope; `verify -p`: the
    /// policy does not hold.
    VerificationFailed,
    /// `verify -p`: the policy itself cannot be used (signature, expiry, format, Rego).
    PolicyUnusable,
    /// A registry could not be reached or refused an operation (attach, discover, fetch).
    Registry,
}

impl FailureKind {
    pub const fn code(self) -> u8 {
        match self {
            FailureKind::General => 1,
            FailureKind::TraceIncomplete => 3,
            FailureKind::Key => 4,
            FailureKind::Analysis => 5,
            FailureKind::TraceUnavailable => 6,
            FailureKind::VerificationFailed => 7,
            FailureKind::PolicyUnusable => 8,
            FailureKind::Registry => 9,
        }
    }
}

/// An error with the exit code it maps to. Wrap it in `anyhow::Error`; `main` finds it in the
/// chain and exits with its code.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Shorthand: `bail_with(FailureKind::Key, "...")` as an `anyhow::Error`.
pub fn failure(kind: FailureKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure::new(kind, message))
}

/// The exit code for an error chain: the first [`Failure`] in it, else `General`.
pub fn code_for(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(FailureKind::General.code(), |failure| failure.kind.code())
}
