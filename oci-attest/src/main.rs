use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oci_attest::{commands, exit, logging::LogArgs};

const EXIT_CODES: &str = "\
Exit codes:
  0   success (for `run`: the command succeeded and the attestation was written)
  N   `run`: the wrapped command's own non-zero exit code (128+signal if it was killed);
      the attestation recording it is still written
  1   general error (I/O, output file, invalid arguments)
  2   command-line usage error
  3   trace incomplete: the kernel lost events (see --allow-incomplete-trace)
  4   key or signing error (detected before the command starts)
  5   image archive analysis failed (malformed or tampered archive): nothing is signed
  6   --trace ebpf requested but eBPF tracing is unavailable on this host
  7   verify: signature or image does not match";

#[derive(Debug, Parser)]
#[command(
    name = "oci-attest",
    version,
    about = "Attest the container images a save command produced: trace it with eBPF, \
             verify the archives, sign an in-toto attestation",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a save command under the tracer and write a signed attestation.
    Run(commands::run::Args),
    /// Analyse an image archive (tar, gzip tar, OCI layout dir) and print what it holds.
    Inspect(commands::inspect::Args),
    /// Check an envelope's signature, optionally against an image archive.
    Verify(commands::verify::Args),
    /// The attestor catalogue: which attestors exist and when they attach.
    Tools(commands::tools::Args),
    /// What this host supports: eBPF programs, BTF, tracefs, privileges, save tools.
    Doctor(commands::doctor::Args),
    /// Generate a signing key pair (private PEM + `.pub`).
    Keygen(commands::keygen::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    let result = match cli.command {
        Command::Run(args) => commands::run::execute(args),
        Command::Inspect(args) => commands::inspect::execute(args),
        Command::Verify(args) => commands::verify::execute(args),
        Command::Tools(args) => commands::tools::execute(args),
        Command::Doctor(args) => commands::doctor::execute(args),
        Command::Keygen(args) => commands::keygen::execute(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("oci-attest: error: {error:#}");
            ExitCode::from(exit::code_for(&error))
        }
    }
}
