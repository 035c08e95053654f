//! `cargo xtask <command>`: project automation. Each command lives in its own module; this file
//! only dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod fixtures;
mod setup;
mod test_run;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "oci-attest project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install everything the build and the tests need (idempotent; quiet when nothing is missing).
    Setup,
    /// Set up, build, start private daemons, build fixtures and run every test.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_test_args: Vec<String>,
    },
    /// Build the image fixtures with the real save tools and write fixtures.json.
    Fixtures {
        /// Output directory (default: .fixtures in the workspace).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build a small image offline, save it under oci-attest, verify the attestation.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        Command::Test { cargo_test_args } => test_run::run(&cargo_test_args),
        Command::Fixtures { out } => fixtures::run(out).map(|()| ExitCode::SUCCESS),
        Command::Demo => demo::run().map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|error| {
        eprintln!("xtask: error: {error:#}");
        ExitCode::FAILURE
    })
}
