//! Rego evaluation of a step's modules against one attestation, as witness and cilock do it:
//! every module's `data.<package>.deny` is queried, each element is a denial message.
//!
//! Fail closed: a module that does not parse, declares no `deny` rule, shares its package with
//! another module, or whose `deny` is not a set or array of messages is an error, never a pass.
//! Modules may be written in Rego v0 (`deny[msg] { … }`) or v1 (`deny contains msg if { … }`,
//! with or without `import rego.v1`); each module is parsed as v1 first, then as v0.
//!
//! Policies are signed, but a signer can still ship a module that loops or allocates without
//! bound; [`evaluate_isolated`] runs the evaluation in a child process (this binary, hidden
//! `rego-sandbox` subcommand) under an address-space limit, a CPU-time limit and a wall-clock
//! deadline, and turns a breach into a clear error.

use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde::{Deserialize, Serialize};

use crate::policy::model::RegoModule;

/// Wall-clock budget of one evaluation.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);
/// Address-space limit of the sandbox process.
pub const MEMORY_LIMIT_BYTES: u64 = 1 << 30;
/// The hidden subcommand that runs [`serve_sandbox`].
pub const SANDBOX_SUBCOMMAND: &str = "rego-sandbox";
/// Largest sandbox answer read (denial messages).
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Why an evaluation could not decide: the policy (not the evidence) is at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
#[error("{0}")]
pub struct RegoError(pub String);

/// Evaluates `modules` against `input` (JSON text) in this process; returns the denials
/// (empty = allowed).
pub fn evaluate(
    modules: &[RegoModule],
    input_json: &str,
    time_limit: Duration,
) -> Result<Vec<String>, RegoError> {
    let fail = |what: String| RegoError(what);
    let mut engine = Engine::new();
    engine.set_strict_builtin_errors(true);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: time_limit,
        check_interval: NonZeroU32::MIN,
    });
    let mut packages: Vec<(String, String)> = Vec::with_capacity(modules.len());
    for module in modules {
        let package = add_module(&mut engine, module)?;
        if let Some((_, first)) = packages.iter().find(|(known, _)| known == &package) {
            return Err(fail(format!(
                "Rego modules {first:?} and {:?} both declare {package}; each module needs its \
                 own package",
                module.name
            )));
        }
        packages.push((package, module.name.clone()));
    }
    let input = Value::from_json_str(input_json).map_err(|error| {
        fail(format!(
            "the attestation is not usable as Rego input: {error}"
        ))
    })?;
    engine.set_input(input);
    let mut denials = Vec::new();
    for (package, module) in &packages {
        let rule = format!("{package}.deny");
        let no_deny = || {
            fail(format!(
                "Rego module {module:?} has no `deny` rule ({rule})"
            ))
        };
        let value = engine.eval_rule(rule.clone()).map_err(|error| {
            // regorus reports a rule that no module defines as an invalid path.
            let text = error.to_string();
            if text.contains("not a valid rule path") {
                no_deny()
            } else if text.contains("exceeded time limit") {
                fail(format!(
                    "Rego module {module:?}: evaluation exceeded its time limit ({} s); the \
                     policy's modules loop or do too much work",
                    time_limit.as_secs_f32()
                ))
            } else {
                fail(format!("Rego module {module:?}: {rule}: {error:#}"))
            }
        })?;
        let elements: Vec<&Value> = match &value {
            Value::Undefined => return Err(no_deny()),
            Value::Set(set) => set.iter().collect(),
            Value::Array(array) => array.iter().collect(),
            other => {
                return Err(fail(format!(
                    "Rego module {module:?}: {rule} is {}, not a set or array of messages",
                    other.to_json_str().unwrap_or_default()
                )))
            }
        };
        denials.extend(elements.into_iter().map(|element| match element {
            Value::String(text) => text.to_string(),
            other => other.to_json_str().unwrap_or_default(),
        }));
    }
    Ok(denials)
}

/// Parses `module` as Rego v1, else as v0 (v0 would read v1 keywords as plain names);
/// returns its package path (`data.x.y`).
fn add_module(engine: &mut Engine, module: &RegoModule) -> Result<String, RegoError> {
    let mut errors = Vec::new();
    for rego_v0 in [false, true] {
        // A throwaway engine first: a failed parse must leave nothing behind in the real one.
        let mut probe = Engine::new();
        probe.set_rego_v0(rego_v0);
        match probe.add_policy(module.name.clone(), module.source.clone()) {
            Ok(_) => {
                engine.set_rego_v0(rego_v0);
                return engine
                    .add_policy(module.name.clone(), module.source.clone())
                    .map_err(|error| RegoError(format!("Rego module {:?}: {error}", module.name)));
            }
            Err(error) => errors.push(error.to_string()),
        }
    }
    Err(RegoError(format!(
        "Rego module {:?} does not parse (as v1: {}; as v0: {})",
        module.name,
        errors[0].lines().next().unwrap_or_default(),
        errors[1].lines().next().unwrap_or_default()
    )))
}

#[derive(Serialize, Deserialize)]
struct SandboxRequest {
    modules: Vec<RegoModule>,
    input: String,
    time_limit_ms: u64,
}

#[derive(Serialize, Deserialize)]
enum SandboxAnswer {
    Denials(Vec<String>),
    Error(RegoError),
}

/// The sandbox side: reads one request on stdin, writes the answer on stdout.
pub fn serve_sandbox() -> anyhow::Result<()> {
    let mut request = Vec::new();
    std::io::stdin().read_to_end(&mut request)?;
    let request: SandboxRequest =
        serde_json::from_slice(&request).context("rego sandbox: malformed request")?;
    let answer = match evaluate(
        &request.modules,
        &request.input,
        Duration::from_millis(request.time_limit_ms),
    ) {
        Ok(denials) => SandboxAnswer::Denials(denials),
        Err(error) => SandboxAnswer::Error(error),
    };
    serde_json::to_writer(std::io::stdout().lock(), &answer)?;
    Ok(())
}

/// [`evaluate`] in a child process bounded by [`TIME_LIMIT`] and [`MEMORY_LIMIT_BYTES`].
pub fn evaluate_isolated(
    modules: &[RegoModule],
    input_json: &str,
) -> Result<Vec<String>, RegoError> {
    run_sandbox(modules, input_json).unwrap_or_else(|error| Err(RegoError(format!("{error:#}"))))
}

fn run_sandbox(
    modules: &[RegoModule],
    input_json: &str,
) -> anyhow::Result<Result<Vec<String>, RegoError>> {
    let request = serde_json::to_vec(&SandboxRequest {
        modules: modules.to_vec(),
        input: input_json.to_owned(),
        time_limit_ms: TIME_LIMIT.as_millis() as u64,
    })?;
    let executable = std::env::current_exe().context("rego sandbox: cannot find this program")?;
    let cpu_seconds = TIME_LIMIT.as_secs() + 2;
    let mut command = Command::new(executable);
    command
        .arg(SANDBOX_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = |resource, value| {
                let bound = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &bound) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            limit(libc::RLIMIT_AS, MEMORY_LIMIT_BYTES)?;
            limit(libc::RLIMIT_CPU, cpu_seconds)
        });
    }
    let mut child = command.spawn().context("rego sandbox: cannot start")?;
    let mut stdin = child.stdin.take().context("rego sandbox: no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&request));
    let stdout = child.stdout.take().context("rego sandbox: no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut answer = Vec::new();
        stdout
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .map(|_| answer)
    });
    let stderr = child.stderr.take().context("rego sandbox: no stderr")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.take(64 << 10).read_to_string(&mut text);
        text
    });

    // The evaluator's own timer normally stops it; this deadline catches work it cannot
    // interrupt (a single huge builtin call).
    let deadline = Instant::now() + TIME_LIMIT + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "Rego evaluation exceeded its time limit ({} s); the policy's modules loop or do \
                 too much work",
                TIME_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A write error only means the child stopped reading; its status says why.
    let _ = writer.join();
    let answer = reader
        .join()
        .map_err(|_| anyhow::anyhow!("rego sandbox: reader panicked"))??;
    let stderr_text = errors.join().unwrap_or_default();
    if !status.success() {
        let memory = stderr_text.contains("memory allocation")
            || stderr_text.contains("capacity overflow")
            || stderr_text.contains("out of memory");
        if memory {
            bail!(
                "Rego evaluation exceeded its memory limit ({} MiB); the policy's modules \
                 allocate without bound",
                MEMORY_LIMIT_BYTES >> 20
            );
        }
        if status.signal() == Some(libc::SIGXCPU) || status.signal() == Some(libc::SIGKILL) {
            bail!(
                "Rego evaluation exceeded its CPU time limit ({cpu_seconds} s); the policy's \
                 modules loop or do too much work"
            );
        }
        let last_line = stderr_text.lines().last().unwrap_or_default();
        bail!("Rego evaluation failed ({status}): {last_line}");
    }
    match serde_json::from_slice(&answer).context("rego sandbox: malformed answer")? {
        SandboxAnswer::Denials(denials) => Ok(Ok(denials)),
        SandboxAnswer::Error(error) => Ok(Err(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, source: &str) -> RegoModule {
        RegoModule {
            name: name.to_owned(),
            source: source.to_owned(),
        }
    }

    const INPUT: &str = r#"{"exitcode": 1, "cmd": ["skopeo", "copy"]}"#;

    #[test]
    fn v0_and_v1_modules_deny_with_their_messages() {
        let v0 = module(
            "v0",
            "package exit\ndeny[msg] {\n  input.exitcode != 0\n  msg := sprintf(\"exit %d\", [input.exitcode])\n}",
        );
        let v1_import = module(
            "v1i",
            "package cmd\nimport rego.v1\ndeny contains \"not docker\" if input.cmd[0] != \"docker\"",
        );
        let v1 = module(
            "v1",
            "package quiet\ndeny contains msg if { input.exitcode > 5; msg := \"big\" }",
        );
        let denials = evaluate(&[v0, v1_import, v1], INPUT, TIME_LIMIT).unwrap();
        assert_eq!(denials, ["exit 1", "not docker"]);
        let allow = module(
            "ok",
            "package ok\ndeny[msg] { input.exitcode == 0; msg := \"x\" }",
        );
        assert_eq!(
            evaluate(&[allow], INPUT, TIME_LIMIT).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn broken_modules_fail_closed() {
        let no_deny = module("nodeny", "package nodeny\nallow := true");
        let error = evaluate(&[no_deny], INPUT, TIME_LIMIT).unwrap_err().0;
        assert!(error.contains("no `deny` rule"), "{error}");

        let a = module("a", "package same\ndeny[m] { false; m := 1 }");
        let b = module("b", "package same\nallow := true");
        let error = evaluate(&[a, b], INPUT, TIME_LIMIT).unwrap_err().0;
        assert!(error.contains("both declare data.same"), "{error}");

        let garbage = module("garbage", "package x\ndeny[ {");
        let error = evaluate(&[garbage], INPUT, TIME_LIMIT).unwrap_err().0;
        assert!(error.contains("does not parse"), "{error}");

        let boolean = module("bool", "package b\ndeny := true");
        let error = evaluate(&[boolean], INPUT, TIME_LIMIT).unwrap_err().0;
        assert!(error.contains("not a set or array"), "{error}");

        let unknown_builtin = module("net", "package n\ndeny[m] { http.send({}); m := 1 }");
        assert!(evaluate(&[unknown_builtin], INPUT, TIME_LIMIT).is_err());
    }

    #[test]
    fn a_looping_module_stops_at_the_time_limit() {
        let looping = module(
            "loop",
            "package spin\ndeny[m] { some i, j, k\n numbers.range(1, 100000)[i]\n numbers.range(1, 100000)[j]\n numbers.range(1, 100000)[k]\n i + j + k < 0\n m := \"never\" }",
        );
        let started = Instant::now();
        let error = evaluate(&[looping], INPUT, Duration::from_millis(300))
            .unwrap_err()
            .0;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(error.contains("exceeded its time limit (0.3 s)"), "{error}");
    }
}
