//! `oci-attest doctor`: what this host supports. It really loads and attaches the kernel
//! programs and traces one short command, so "ok" means tracing works, not that it might. It
//! also says whom `run` would run the command as, and whether that user could read the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::attestors::{Attach, ATTESTORS};
use crate::exit::{failure, FailureKind};
use crate::identity::{self, CommandIdentity};
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
    /// Check whether the command's user could read this signing key, as `run -k` does.
    #[arg(short = 'k', long = "signer-file-key-path", value_name = "KEY.pem")]
    pub key: Option<PathBuf>,
    /// Check the passphrase file too.
    #[arg(long = "signer-file-key-passphrase-path", value_name = "FILE")]
    pub passphrase: Option<PathBuf>,
    /// The identity `run --run-as USER[:GROUP]` would give the command.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub run_as: Option<String>,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let config = TraceConfig {
        ring_buffer_bytes: args.ring_buffer_bytes,
        ..TraceConfig::default()
    };
    let (mut report, unavailable) = build_report(&config);
    report["command"] = command_report(&args);
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

/// Whom `run` would run the command as (or why it would refuse to), whether that identity is
/// in the root-equivalent docker group, and whether it can open the key and passphrase files.
fn command_report(args: &Args) -> Value {
    let request = identity::Request {
        run_as: args.run_as.clone(),
        allow_new_privileges: false,
    };
    let identity = match identity::resolve(&request, &identity::Invoker::current()) {
        Ok(identity) => identity,
        Err(error) => return json!({"identity": null, "refused": format!("{error:#}")}),
    };
    let files: Vec<Value> = [args.key.as_deref(), args.passphrase.as_deref()]
        .into_iter()
        .flatten()
        .map(|path| {
            let readable = if identity.root {
                Ok(true)
            } else {
                identity.can_open(path)
            };
            match readable {
                Ok(readable) => json!({"path": path, "readableByCommand": readable}),
                Err(error) => json!({"path": path, "error": format!("{error:#}")}),
            }
        })
        .collect();
    json!({
        "identity": {
            "user": identity.user,
            "uid": identity.uid,
            "gid": identity.gid,
            "groups": identity.groups,
            "root": identity.root,
            "source": identity.source,
        },
        "dockerGroup": identity.docker_group(),
        "files": files,
    })
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
    render_command(&report["command"], &mut line);
    text
}

fn render_command(command: &Value, line: &mut impl FnMut(&str, String)) {
    if command.is_null() {
        return;
    }
    if let Some(refused) = command["refused"].as_str() {
        line("command runs as", format!("REFUSED by run: {refused}"));
        return;
    }
    let identity = &command["identity"];
    let groups: Vec<String> = identity["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    let why = match identity["source"].as_str() {
        _ if identity["root"] == true => {
            "ROOT (--run-as root): it could read the key and tamper with the tracer"
        }
        Some("sudo") => "the user who invoked sudo",
        Some("run-as") => "--run-as",
        _ => "oci-attest's own user (not root): it can reach oci-attest and what it reads",
    };
    line(
        "command runs as",
        format!(
            "{} (uid {}, gid {}, groups {}): {why}",
            identity["user"].as_str().unwrap_or("?"),
            identity["uid"],
            identity["gid"],
            groups.join(",")
        ),
    );
    if let Some(docker) = command["dockerGroup"].as_u64() {
        line(
            "",
            format!(
                "WARNING: in the docker group (gid {docker}), which is root-equivalent: through \
                 the docker daemon the command can read any file, the key included (SECURITY.md)"
            ),
        );
    }
    for file in command["files"].as_array().into_iter().flatten() {
        let path = file["path"].as_str().unwrap_or("?");
        let verdict = match (file["readableByCommand"].as_bool(), file["error"].as_str()) {
            (Some(false), _) => "not readable by the command".to_string(),
            (Some(true), _) if identity["root"] == true => {
                "READABLE by the command (it runs as root)".to_string()
            }
            (Some(true), _) => "READABLE by the command: run refuses it (exit 125, \
                                key-readable-by-command); make it root's, mode 0600"
                .to_string(),
            (None, error) => format!("cannot check: {}", error.unwrap_or("?")),
        };
        line("key file", format!("{path}: {verdict}"));
    }
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
