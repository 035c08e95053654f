//! Diagnostics on stderr through `tracing`: `--quiet`, `-v`/`-vv`, `--log-format json`.

use tracing_subscriber::filter::LevelFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Only print errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail (-v: debug, including kernel-side aya-log messages; -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Format of diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: LogFormat,
}

impl LogArgs {
    pub fn level(&self) -> LevelFilter {
        match (self.quiet, self.verbose) {
            (true, _) => LevelFilter::ERROR,
            (false, 0) => LevelFilter::INFO,
            (false, 1) => LevelFilter::DEBUG,
            (false, _) => LevelFilter::TRACE,
        }
    }

    /// Installs the global subscriber. `log` records (aya, aya-log) are bridged into it.
    pub fn init(&self) {
        // The TLS verifier logs each rejected certificate as an error of its own; the registry
        // error that follows already says it, so its lines are only shown with -v.
        let verifier = if self.verbose > 0 {
            self.level()
        } else {
            LevelFilter::OFF
        };
        let filter = tracing_subscriber::EnvFilter::builder().parse_lossy(format!(
            "{},rustls_platform_verifier={verifier}",
            self.level()
        ));
        let builder = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .without_time();
        let _ = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}
