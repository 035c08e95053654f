//! Diagnostics on stderr through `tracing`: `--quiet`, `-v`/`-vv`, `-l/--log-level` (witness's
//! spelling), `--log-format json`.
//!
//! Text lines carry the message only: every message already says its facts in words, and the
//! structured fields (path, digest, ...) are for `--log-format json`, where they are top-level
//! keys.

use tracing_subscriber::filter::{LevelFilter, Targets};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `-l/--log-level` values: witness's (logrus) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    #[value(alias = "warning")]
    Warn,
    #[value(alias = "fatal", alias = "panic")]
    Error,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Only print errors: no progress or status lines, and `verify`, `keygen` and `sign` print
    /// nothing when they succeed (the exit code says it). `--json` output is still printed.
    #[arg(short, long, global = true, conflicts_with_all = ["verbose", "log_level"])]
    pub quiet: bool,
    /// More detail (-v: debug, including kernel-side aya-log messages; -vv: trace, and aya's
    /// program loading and relocation details).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "log_level")]
    pub verbose: u8,
    /// Level of diagnostics on stderr, as witness spells it (`-l debug` is `-v`, `-l error`
    /// is `-q`).
    #[arg(short = 'l', long, global = true, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Format of diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: LogFormat,
}

impl LogArgs {
    pub fn level(&self) -> LevelFilter {
        if let Some(level) = self.log_level {
            return match level {
                LogLevel::Trace => LevelFilter::TRACE,
                LogLevel::Debug => LevelFilter::DEBUG,
                LogLevel::Info => LevelFilter::INFO,
                LogLevel::Warn => LevelFilter::WARN,
                LogLevel::Error => LevelFilter::ERROR,
            };
        }
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
        if self.verbose >= 2 || self.log_level == Some(LogLevel::Trace) {
            self.level()
        } else {
            self.level().min(LevelFilter::INFO)
        }
    }

    /// Installs the global subscriber. `log` records (aya, aya-log) are bridged into it.
    /// `--log-format json` writes one object per event with its fields (path, digest, ...) at
    /// the top level next to `message`.
    pub fn init(&self) {
        // The TLS verifier logs each rejected certificate as an error of its own; the registry
        // error that follows already says it, so its lines are only shown with -v.
        let verifier = if self.level() >= LevelFilter::DEBUG {
            self.level()
        } else {
            LevelFilter::OFF
        };
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter = Targets::new()
            .with_default(self.level())
            .with_target("aya", self.loader_level())
            .with_target("aya_obj", self.loader_level())
            .with_target("rustls_platform_verifier", verifier);
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let registry = tracing_subscriber::registry().with(filter);
        let _ = match self.log_format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .fmt_fields(message_only())
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

/// Status output that is not a diagnostic (a command's result in words) is printed unless the
/// level was lowered below info (`-q`, `-l warn`, `-l error`).
pub fn quiet() -> bool {
    LevelFilter::current() < LevelFilter::INFO
}

/// Text lines: the message alone (the fields repeat what it says; JSON logs keep them).
fn message_only() -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() == "message" {
            write!(writer, "{value:?}")
        } else {
            Ok(())
        }
    })
}
