//! `cargo xtask <command>`: project automation. Each command lives in its own module; this file
//! only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod fuzz;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "oci-attest project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the cargo-fuzz targets of the archive reader (or write their seed corpus).
    Fuzz(fuzz::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fuzz(args) => fuzz::run(&args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("xtask: error: {error:#}");
        ExitCode::FAILURE
    })
}
