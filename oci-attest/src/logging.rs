//! Diagnostics on stderr through `tracing`: `--quiet`, `-v`/`-vv`, `--log-format json`.

use tracing_subscriber::filter::{LevelFilter, Targets};

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
    /// More detail (-v: debug, including kernel-side aya-log messages; -vv: trace, and aya's
    /// program loading and relocation details).
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

    /// aya's own loader chatter (hundreds of relocation lines per program load) is shown from
    /// `-vv` on; `-v` keeps it at info.
    pub fn loader_level(&self) -> LevelFilter {
        if self.verbose >= 2 {
            self.level()
        } else {
            self.level().min(LevelFilter::INFO)
        }
    }

    /// Installs the global subscriber. `log` records (aya, aya-log) are bridged into it.
    /// `--log-format json` writes one object per event with its fields (path, digest, ...) at
    /// the top level next to `message`.
    pub fn init(&self) {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter = Targets::new()
            .with_default(self.level())
            .with_target("aya", self.loader_level())
            .with_target("aya_obj", self.loader_level());
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let registry = tracing_subscriber::registry().with(filter);
        let _ = match self.log_format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_target(false)
                        .with_ansi(ansi)
                        .without_time(),
                )
                .try_init(),
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(std::io::stderr)
                        .with_target(false)
                        .without_time(),
                )
                .try_init(),
        };
    }
}
