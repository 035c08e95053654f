use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use oci_attest::{cli_compat, commands, config, exit, logging::LogArgs};

#[derive(Debug, Parser)]
#[command(
    name = "oci-attest",
    version,
    long_version = oci_attest::version::long(),
    about = "Attest the container images a save command produced: trace it with eBPF, \
             verify the archives, sign an in-toto attestation",
    after_help = oci_attest::exit_codes_help!()
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    config: config::ConfigArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a save command under the tracer and write a signed attestation.
    Run(Box<commands::run::Args>),
    /// Analyse an image archive (tar, gzip tar, OCI layout dir) and print what it holds.
    Inspect(commands::inspect::Args),
    /// Check an envelope's signature, optionally against an image archive.
    Verify(Box<commands::verify::Args>),
    /// The attestor catalogue: which attestors exist and when they attach (`attestors list`
    /// as in witness).
    #[command(visible_alias = "attestors")]
    Tools(commands::tools::Args),
    /// What this host supports: eBPF programs, BTF, tracefs, privileges, save tools.
    Doctor(commands::doctor::Args),
    /// Print the version, the commit, the target, whether the tracer is built in and what the
    /// kernel must offer (the same as `--version`; witness's spelling).
    Version,
    /// Generate a signing key pair (private PEM + `.pub`).
    Keygen(commands::keygen::Args),
    /// Write and check policies: `policy new`, `policy from-attestations`, `policy check`.
    Policy(commands::policy::Args),
    /// Sign a policy (DSSE) for `verify -p`.
    Sign(commands::sign::Args),
    /// Internal: evaluates Rego for `verify -p` inside resource limits.
    #[command(name = "rego-sandbox", hide = true)]
    RegoSandbox,
    /// Attach a signed attestation to an image in its OCI registry.
    Attach(commands::attach::Args),
    /// List the attestations attached to an image in its OCI registry.
    Discover(commands::discover::Args),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(message) = cli_compat::unsupported_flag(&args) {
        eprintln!("oci-attest: {message}");
        return ExitCode::from(exit::USAGE);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let applied = match config::apply(args, &cwd) {
        Ok(applied) => applied,
        Err(error) => {
            eprintln!("oci-attest: error: {error:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let matches = Cli::command().get_matches_from(&applied.args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    cli.log.init();
    applied.provenance.log();
    if let (Command::Run(run), Some(("run", run_matches))) =
        (&mut cli.command, matches.subcommand())
    {
        let command = Cli::command();
        let run_command = command.find_subcommand("run").expect("run is a subcommand");
        run.provenance = applied.provenance.with_matches(run_command, run_matches);
    }
    let is_run = matches!(cli.command, Command::Run(_));
    if !is_run {
        restore_default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(args) => commands::run::execute(*args),
        Command::Inspect(args) => commands::inspect::execute(args),
        Command::Verify(args) => commands::verify::execute(*args),
        Command::Tools(args) => commands::tools::execute(args),
        Command::Doctor(args) => commands::doctor::execute(args),
        Command::Version => {
            println!("oci-attest {}", oci_attest::version::long());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen(args) => commands::keygen::execute(args),
        Command::Policy(args) => commands::policy::execute(args),
        Command::Sign(args) => commands::sign::execute(args),
        Command::RegoSandbox => {
            oci_attest::policy::rego::serve_sandbox().map(|()| ExitCode::SUCCESS)
        }
        Command::Attach(args) => commands::attach::execute(args),
        Command::Discover(args) => commands::discover::execute(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            let kind = exit::kind_of(&error);
            if is_run {
                // One exit code (125) covers most of run's failures: name the reason.
                eprintln!("oci-attest: error: {error:#} (reason: {})", kind.reason());
                ExitCode::from(kind.run_code())
            } else {
                eprintln!("oci-attest: error: {error:#}");
                ExitCode::from(kind.code())
            }
        }
    }
}

/// A reader that stops early (`oci-attest tools list | head`) ends the command quietly, as it
/// ends other Unix tools: Rust ignores SIGPIPE, which would turn it into a panic at the next
/// print. `run` keeps ignoring it, so a closed stdout never stops it before the attestation is
/// written (its child gets the default disposition back in `launch.rs`).
fn restore_default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installs the default disposition, no handler code runs.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
