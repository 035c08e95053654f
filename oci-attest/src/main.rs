use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oci_attest::{commands, exit, logging::LogArgs};

#[derive(Debug, Parser)]
#[command(
    name = "oci-attest",
    version,
    about = "Attest the container images a save command produced: trace it with eBPF, \
             verify the archives, sign an in-toto attestation",
    after_help = oci_attest::exit_codes_help!()
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
    /// Attach a signed attestation to an image in its OCI registry.
    Attach(commands::attach::Args),
    /// List the attestations attached to an image in its OCI registry.
    Discover(commands::discover::Args),
    /// Sign a policy (DSSE) for `verify -p`.
    Sign(commands::sign::Args),
    /// Internal: evaluates Rego for `verify -p` inside resource limits.
    #[command(name = "rego-sandbox", hide = true)]
    RegoSandbox,
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
        Command::Attach(args) => commands::attach::execute(args),
        Command::Discover(args) => commands::discover::execute(args),
        Command::Sign(args) => commands::sign::execute(args),
        Command::RegoSandbox => {
            oci_attest::policy::rego::serve_sandbox().map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("oci-attest: error: {error:#}");
            ExitCode::from(exit::code_for(&error))
        }
    }
}
