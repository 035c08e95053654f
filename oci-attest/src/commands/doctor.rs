//! `oci-attest doctor`: what this host supports. It really loads and attaches the kernel
//! programs and traces one short command, so "ok" means tracing works, not that it might.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::attestors::{Attach, ATTESTORS};
use crate::exit::{failure, FailureKind};
use crate::identity::CommandIdentity;
use crate::trace::{layout, Privileges, ProgramStatus, TraceConfig, Tracer, MINIMUM_KERNEL};
use crate::{launch, program_path};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Ring buffer size to try, in bytes (a power of two).
    #[arg(long, default_value_t = crate::trace::DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_bytes: u32,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let config = TraceConfig {
        ring_buffer_bytes: args.ring_buffer_bytes,
    };
    let (report, unavailable) = build_report(&config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    match unavailable {
        Some(reason) => Err(failure(
            FailureKind::TraceUnavailable,
            format!("eBPF tracing unavailable: {reason}"),
        )),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The report, and the reason tracing is impossible (if it is).
fn build_report(config: &TraceConfig) -> (Value, Option<String>) {
    let privileges = Privileges::current();
    let (programs, trace, unavailable) = match Tracer::load(config) {
        Ok(tracer) => {
            let programs = tracer.programs().to_vec();
            let load_ms = tracer.load_duration().as_secs_f64() * 1000.0;
            match self_test(tracer) {
                Ok(observed) => (
                    programs,
                    json!({
                        "available": true,
                        "loadAttachMs": (load_ms * 10.0).round() / 10.0,
                        "selfTest": observed,
                    }),
                    None,
                ),
                Err(error) => {
                    let reason =
                        format!("the programs loaded but tracing `true` failed: {error:#}");
                    (
                        programs,
                        json!({"available": false, "reason": reason}),
                        Some(reason),
                    )
                }
            }
        }
        Err(unavailable) => (
            unavailable.programs,
            json!({"available": false, "reason": unavailable.reason}),
            Some(unavailable.reason),
        ),
    };
    // The programs the attestors' auto rules recognise as the wrapped command.
    let tools: serde_json::Map<String, Value> = ATTESTORS
        .iter()
        .filter_map(|row| match row.attach {
            Attach::Auto(rule) => Some((rule.programs)()),
            _ => None,
        })
        .flatten()
        .map(|tool| {
            let found = program_path::resolve_program(tool.as_ref()).ok();
            (
                tool.to_string(),
                found.map_or(Value::Null, |path| path.display().to_string().into()),
            )
        })
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_string())
        .unwrap_or_default();
    let report = json!({
        "minimumKernel": {
            "required": MINIMUM_KERNEL,
            "met": kernel_at_least(&kernel, MINIMUM_KERNEL),
        },
        "kernel": kernel,
        "architecture": std::env::consts::ARCH,
        "btf": Path::new(layout::VMLINUX_BTF).exists(),
        "privileges": {
            "root": privileges.root,
            "capBpf": privileges.cap_bpf,
            "capPerfmon": privileges.cap_perfmon,
            "capSysAdmin": privileges.cap_sys_admin,
        },
        "ringBufferBytes": config.ring_buffer_bytes,
        "trace": trace,
        "programs": programs.iter().map(program_json).collect::<Vec<_>>(),
        "saveTools": tools,
    });
    (report, unavailable)
}

fn program_json(program: &ProgramStatus) -> Value {
    let mut value = json!({
        "name": program.name,
        "tracepoint": program.tracepoint,
        "loaded": program.loaded,
        "attached": program.attached,
    });
    if let Some(error) = &program.error {
        value["error"] = error.clone().into();
    }
    value
}

/// Traces `true` and reports what the kernel programs saw of it.
fn self_test(mut tracer: Tracer) -> anyhow::Result<Value> {
    let argv = [OsString::from("true")];
    let child = launch::spawn_stopped(
        &argv,
        &std::env::current_dir()?,
        &CommandIdentity::current(),
    )?;
    tracer.track(child.pid())?;
    child.release()?.wait()?;
    // `true` writes nothing: no working directory to look through.
    let outcome = tracer.finish(
        &std::env::current_dir()?,
        &crate::snapshot::Snapshot::default(),
    )?;
    let exec_observed = outcome
        .processes
        .iter()
        .flat_map(|process| &process.execs)
        .any(|exec| exec.argv == ["true"]);
    if !exec_observed {
        anyhow::bail!("the exec of `true` was not observed");
    }
    Ok(json!({
        "command": "true",
        "execObserved": exec_observed,
        "events": outcome.counts.events,
        "lost": outcome.counts.lost,
        "incomplete": outcome.incomplete.iter().map(|gap| json!({
            "reason": gap.reason.code(),
            "detail": gap.detail,
        })).collect::<Vec<_>>(),
        "detachMs": (outcome.phases.detach.as_secs_f64() * 10_000.0).round() / 10.0,
    }))
}

/// Whether `release` (`6.18.4-foo`) is at least `minimum` (`5.17`).
fn kernel_at_least(release: &str, minimum: &str) -> bool {
    let version = |text: &str| -> Vec<u32> {
        text.split(['.', '-', '+'])
            .take(2)
            .map_while(|part| part.parse().ok())
            .collect()
    };
    version(release) >= version(minimum)
}

fn render_text(report: &Value) -> String {
    let yes_no = |value: &Value| {
        if value.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let mut text = String::new();
    let mut line = |label: &str, value: String| text.push_str(&format!("{label:<18}{value}\n"));
    line(
        "kernel",
        report["kernel"].as_str().unwrap_or("?").to_string(),
    );
    let minimum = &report["minimumKernel"];
    line(
        "minimum kernel",
        format!(
            "{} (bpf_loop): {}",
            minimum["required"].as_str().unwrap_or("?"),
            if minimum["met"].as_bool() == Some(true) {
                "met"
            } else {
                "NOT MET"
            }
        ),
    );
    line(
        "architecture",
        report["architecture"].as_str().unwrap_or("?").to_string(),
    );
    line("BTF", yes_no(&report["btf"]).to_string());
    let privileges = &report["privileges"];
    line(
        "privileges",
        format!(
            "root={} CAP_BPF={} CAP_PERFMON={} CAP_SYS_ADMIN={}",
            yes_no(&privileges["root"]),
            yes_no(&privileges["capBpf"]),
            yes_no(&privileges["capPerfmon"]),
            yes_no(&privileges["capSysAdmin"]),
        ),
    );
    line(
        "ring buffer",
        format!("{} bytes", report["ringBufferBytes"]),
    );
    let trace = &report["trace"];
    if trace["available"].as_bool() == Some(true) {
        line(
            "eBPF tracing",
            format!(
                "available (load+attach {} ms, detach {} ms, self-test: exec observed, {} events, {} lost, {} gaps)",
                trace["loadAttachMs"],
                trace["selfTest"]["detachMs"],
                trace["selfTest"]["events"],
                trace["selfTest"]["lost"],
                trace["selfTest"]["incomplete"].as_array().map_or(0, Vec::len)
            ),
        );
    } else {
        line(
            "eBPF tracing",
            format!("UNAVAILABLE: {}", trace["reason"].as_str().unwrap_or("?")),
        );
    }
    for program in report["programs"].as_array().into_iter().flatten() {
        let state = match (program["loaded"].as_bool(), program["attached"].as_bool()) {
            (_, Some(true)) => "loaded, attached".to_string(),
            (Some(true), _) => "loaded, NOT attached".to_string(),
            _ => "not loaded".to_string(),
        };
        let error = program["error"]
            .as_str()
            .map(|error| format!(" ({error})"))
            .unwrap_or_default();
        line(
            "  program",
            format!(
                "{:<22}{state}{error}",
                program["name"].as_str().unwrap_or("?")
            ),
        );
    }
    for (tool, path) in report["saveTools"].as_object().into_iter().flatten() {
        line(
            "  save tool",
            format!("{tool:<10}{}", path.as_str().unwrap_or("not on PATH")),
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_shows_failures_and_missing_tools() {
        let programs = [
            ProgramStatus {
                name: "sched_process_exec".into(),
                tracepoint: "raw_tp/sched_process_exec".into(),
                loaded: true,
                attached: true,
                error: None,
            },
            ProgramStatus {
                name: "sys_exit".into(),
                tracepoint: "raw_tp/sys_exit".into(),
                loaded: true,
                attached: false,
                error: Some("EPERM".into()),
            },
        ];
        let report = json!({
            "kernel": "6.1.0",
            "btf": false,
            "minimumKernel": {"required": "5.17", "met": true},
            "architecture": "x86_64",
            "privileges": {"root": true, "capBpf": true, "capPerfmon": true, "capSysAdmin": true},
            "ringBufferBytes": 4096,
            "trace": {"available": false, "reason": "program sys_exit did not load/attach: EPERM"},
            "programs": programs.iter().map(program_json).collect::<Vec<_>>(),
            "saveTools": {"docker": null, "skopeo": "/usr/bin/skopeo"},
        });
        let text = render_text(&report);
        assert!(text.contains("BTF               no\n"), "{text}");
        assert!(
            text.contains("minimum kernel    5.17 (bpf_loop): met\n"),
            "{text}"
        );
        assert!(text.contains("UNAVAILABLE: program sys_exit"), "{text}");
        assert!(
            text.contains("sched_process_exec    loaded, attached\n"),
            "{text}"
        );
        assert!(
            text.contains("sys_exit              loaded, NOT attached (EPERM)\n"),
            "{text}"
        );
        assert!(text.contains("docker    not on PATH\n"), "{text}");
        assert!(text.contains("skopeo    /usr/bin/skopeo\n"), "{text}");
        assert_eq!(report["programs"][1]["attached"], false);
        assert_eq!(report["programs"][0].get("error"), None);
    }

    #[test]
    fn compares_kernel_releases() {
        assert!(kernel_at_least("6.18.44-fc-v782", "5.17"));
        assert!(kernel_at_least("5.17.0", "5.17"));
        assert!(!kernel_at_least("5.15.0-91-generic", "5.17"));
        assert!(!kernel_at_least("garbage", "5.17"));
    }
}
