//! Runs a command under the eBPF tracer only (no image analysis, no attestation) and prints a
//! one-line JSON summary on stderr. `cargo xtask bench trace` measures the tracer with it.
//!
//! Usage: trace_only [--ring-buffer-bytes N] -- CMD [ARGS...]

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use oci_attest::identity::CommandIdentity;
use oci_attest::launch::spawn_stopped;
use oci_attest::trace::{TraceConfig, Tracer};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("trace_only: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let mut config = TraceConfig::default();
    let command: Vec<OsString> = loop {
        match args.next() {
            Some(arg) if arg == "--ring-buffer-bytes" => {
                let value = args.next().context("--ring-buffer-bytes needs a value")?;
                config.ring_buffer_bytes = value
                    .to_str()
                    .and_then(|value| value.parse().ok())
                    .with_context(|| format!("bad --ring-buffer-bytes {value:?}"))?;
            }
            Some(arg) if arg == "--" => break args.collect(),
            Some(arg) => bail!(
                "unexpected argument {arg:?} (usage: trace_only [--ring-buffer-bytes N] -- CMD...)"
            ),
            None => bail!("no command (usage: trace_only [--ring-buffer-bytes N] -- CMD...)"),
        }
    };
    let mut tracer = Tracer::load(&config)?;
    let started = Instant::now();
    let working_dir = std::env::current_dir()?;
    let child = spawn_stopped(&command, &working_dir, &CommandIdentity::current())?;
    tracer.track(child.pid())?;
    let termination = child.release()?.wait()?;
    let command_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The tracer alone: the working-directory walk is measured by `run` (`-v` logs it).
    let outcome = tracer.finish(&working_dir, &oci_attest::snapshot::Snapshot::default())?;
    let counts = &outcome.counts;
    let ms = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
    eprintln!(
        "{}",
        serde_json::json!({
            "loadAttachMs": ms(outcome.phases.load + outcome.phases.attach),
            "loadMs": ms(outcome.phases.load),
            "attachMs": ms(outcome.phases.attach),
            "detachMs": ms(outcome.phases.detach),
            "commandMs": command_ms,
            "exitCode": termination.exit_code(),
            "processes": outcome.processes.len(),
            "events": counts.events,
            "execs": counts.execs,
            "fileOps": counts.file_ops,
            "lost": counts.lost,
            "incomplete": outcome
                .incomplete
                .iter()
                .map(|gap| format!("{}: {}", gap.reason.code(), gap.detail))
                .collect::<Vec<_>>(),
        })
    );
    Ok(ExitCode::from(
        u8::try_from(termination.exit_code()).unwrap_or(1),
    ))
}
