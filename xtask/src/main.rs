//! `cargo xtask <command>`: project automation. Each command lives in its own module; this file
//! only dispatches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_inspect;
mod bench_policy;
mod bench_trace;
mod demo;
mod dist;
mod fixtures;
mod fuzz;
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
        /// Also build the release (`cargo xtask dist`) for the tests that check it; the whole
        /// suite (no test arguments) always does.
        #[arg(long)]
        dist: bool,
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
    /// Build the release: static musl binary (attested by oci-attest), tarball, SBOM, image,
    /// SHA256SUMS.
    Dist(dist::Args),
    /// Build a small image offline, save it under oci-attest, verify the attestation.
    Demo,
    /// Run the cargo-fuzz targets of the archive reader (or write their seed corpus).
    Fuzz(fuzz::Args),
    /// Benchmarks (release build, real tools as baselines measured in the same run).
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// `oci-attest inspect` vs openssl and the standard-tools pipeline; peak RSS.
    Inspect(bench_inspect::Args),
    /// `verify -p` on 10 000 attestations (with and without Rego), a CI history, and the peak
    /// RSS of a 200 MB attestation.
    Policy(bench_policy::Args),
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
        Command::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        Command::Test {
            dist,
            cargo_test_args,
        } => test_run::run(&cargo_test_args, dist),
        Command::Dist(args) => dist::run(&args).map(|_| ExitCode::SUCCESS),
        Command::Fixtures { out } => fixtures::run(out).map(|()| ExitCode::SUCCESS),
        Command::Demo => demo::run().map(|()| ExitCode::SUCCESS),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Bench(Bench::Inspect(args)) => {
            bench_inspect::run(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(Bench::Policy(args)) => bench_policy::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Bench(Bench::Trace { rounds, image_mib }) => {
            bench_trace::run(workspace, &bench_trace::Options { rounds, image_mib })
                .map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("xtask: error: {error:#}");
        ExitCode::FAILURE
    })
}

/// The 1, 5 and 15-minute load averages, printed beside each measurement: these machines are
/// shared, and a number means little without the load it was taken under.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
