//! `cargo xtask <command>`: project automation.

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_trace;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "oci-attest project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Tracing overhead: untraced vs oci-attest eBPF vs strace; load+attach time; lost events.
    Trace {
        /// Rounds per workload (the table shows medians).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Size of the generated image copied by skopeo (0 skips the skopeo workload).
        #[arg(long, default_value_t = 1024)]
        image_mib: u64,
    },
}

fn main() -> ExitCode {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let result = match Cli::parse().command {
        Command::Bench {
            bench: Bench::Trace { rounds, image_mib },
        } => bench_trace::run(workspace, &bench_trace::Options { rounds, image_mib }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
