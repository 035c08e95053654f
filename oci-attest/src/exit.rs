//! Exit codes of oci-attest, and the error type that carries one.
//!
//! `run` exits with the wrapped command's own code, so its own failures use the codes of `env`,
//! `nohup` and `timeout` (125, 126, 127) that build tools do not use; the one exception is an
//! incomplete trace (3). `inspect`, `verify` and the other commands use the detailed codes.
//! Every failure also has a reason name, printed on stderr and in `--json` output. The tables
//! are in `--help` (see `main.rs`) and `README.md`.

use std::fmt;

/// The table shown in `--help` (top level and `run`); keep it in step with [`FailureKind::code`].
#[macro_export]
macro_rules! exit_codes_help {
    () => {
        "\
Exit codes of `run`:
  0   the command succeeded and the attestation was written
  N   the wrapped command's own non-zero exit code (128+signal if it was killed);
      the attestation recording it is still written
  2   command-line usage error
  3   trace incomplete: reasons in summary.incomplete (see --allow-incomplete-trace)
  125 oci-attest itself failed; the reason (key, analysis, trace-unavailable, output,
      command-would-run-as-root, key-readable-by-command, ...) is on stderr and in the
      --json summary
  126 the command was found but cannot be executed
  127 the command was not found
  9   --attach: the attestation was signed and written, but attaching it to the image failed
Exit codes of the other commands:
  0   success
  1   general error (I/O, invalid arguments, missing file)
  2   command-line usage error
  4   key error
  5   image archive analysis failed (malformed or tampered archive)
  7   verify: signature, image or run does not pass; verify -p: the policy does not hold
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
    /// The trace is incomplete (reasons in `summary.incomplete`) and `--allow-incomplete-trace`
    /// was not given.
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
    /// `run`: the command is not on PATH or its path does not exist.
    CommandNotFound,
    /// `run`: the command exists but cannot be executed (permissions, format).
    CommandNotExecutable,
    /// A registry could not be reached or refused an operation (attach, discover, fetch).
    Registry,
    /// `run`: oci-attest is root and neither sudo nor `--run-as` says whom to run the command
    /// as.
    CommandWouldRunAsRoot,
    /// `run`: the command's identity can open the signing key or its passphrase file.
    KeyReadableByCommand,
    /// `run`: the digest the push tool reported is not what the registry holds for the
    /// reference.
    PushedDigestMismatch,
}

impl FailureKind {
    pub const fn code(self) -> u8 {
        match self {
            FailureKind::General => 1,
            FailureKind::TraceIncomplete | FailureKind::PushedDigestMismatch => 3,
            FailureKind::Key => 4,
            FailureKind::Analysis => 5,
            FailureKind::TraceUnavailable => 6,
            FailureKind::VerificationFailed => 7,
            FailureKind::PolicyUnusable => 8,
            FailureKind::Registry => 9,
            FailureKind::CommandWouldRunAsRoot | FailureKind::KeyReadableByCommand => RUN_FAILED,
            FailureKind::CommandNotFound => 127,
            FailureKind::CommandNotExecutable => 126,
        }
    }

    /// The code `run` exits with: only an incomplete trace and the command's own start-up
    /// failures keep a code of their own; everything else is 125.
    pub const fn run_code(self) -> u8 {
        match self {
            FailureKind::TraceIncomplete
            | FailureKind::PushedDigestMismatch
            | FailureKind::Registry
            | FailureKind::CommandNotFound
            | FailureKind::CommandNotExecutable => self.code(),
            _ => RUN_FAILED,
        }
    }

    /// The name of the reason, on stderr and in `--json` output.
    pub const fn reason(self) -> &'static str {
        match self {
            FailureKind::General => "error",
            FailureKind::TraceIncomplete => "trace-incomplete",
            FailureKind::Key => "key-error",
            FailureKind::Analysis => "analysis-failed",
            FailureKind::TraceUnavailable => "ebpf-unavailable",
            FailureKind::VerificationFailed => "verification-failed",
            FailureKind::CommandNotFound => "command-not-found",
            FailureKind::CommandNotExecutable => "command-not-executable",
            FailureKind::PolicyUnusable => "policy-unusable",
            FailureKind::Registry => "registry-error",
            FailureKind::CommandWouldRunAsRoot => "command-would-run-as-root",
            FailureKind::KeyReadableByCommand => "key-readable-by-command",
            FailureKind::PushedDigestMismatch => "pushed-digest-mismatch",
        }
    }
}

/// Command-line usage error (also what the argument parser exits with).
pub const USAGE: u8 = 2;

/// `run`: oci-attest itself failed (the convention of `env`, `nohup`, `timeout`).
pub const RUN_FAILED: u8 = 125;

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

/// The kind of an error chain: that of the first [`Failure`] in it, else `General`.
pub fn kind_of(error: &anyhow::Error) -> FailureKind {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(FailureKind::General, |failure| failure.kind)
}
