//! Rego evaluation of a step's modules against one attestation, as witness and cilock do it:
//! every module's `data.<package>.deny` is queried, each element is a denial message.
//!
//! Fail closed: a module that does not parse, declares no `deny` rule, shares its package with
//! another module, or whose `deny` is not a set or array of messages is an error, never a pass.
//! Modules may be written in Rego v0 (`deny[msg] { … }`) or v1 (`deny contains msg if { … }`,
//! with or without `import rego.v1`); each module is parsed as v1 first, then as v0.
//!
//! Policies are signed, but a signer can still ship a module that loops or allocates without
//! bound. [`Sandbox`] runs every evaluation of a policy run in one child process (this binary,
//! hidden `rego-sandbox` subcommand) under an address-space limit, fed one input after another
//! over a pipe: each module set is compiled once, and each evaluation gets the same wall-clock
//! and CPU-time budget. A breach is a clear error that says which limit stopped it, and blames
//! the input, not the modules, when the input alone is too large.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::policy::model::RegoModule;

/// Wall-clock budget of one evaluation.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);
/// CPU-time budget of one evaluation in the sandbox.
const CPU_SECONDS: u64 = TIME_LIMIT.as_secs() + 2;
/// Address-space limit of the sandbox process.
pub const MEMORY_LIMIT_BYTES: u64 = 1 << 30;
/// Largest predicate (or `input.steps` document) handed to Rego. The evaluator holds its input
/// as a tree several times the size of the JSON text; this keeps any input that passes the cap
/// well inside [`MEMORY_LIMIT_BYTES`], so a memory breach is the modules' doing.
pub const MAX_INPUT_BYTES: usize = 64 << 20;
/// The hidden subcommand that runs [`serve_sandbox`].
pub const SANDBOX_SUBCOMMAND: &str = "rego-sandbox";
/// Largest sandbox answer read (denial messages).
const MAX_ANSWER_BYTES: u64 = 16 << 20;
/// Time the sandbox gets to read an input, on top of [`TIME_LIMIT`]: 1 s per 16 MiB.
const READ_BYTES_PER_SECOND: u64 = 16 << 20;

/// Why an evaluation could not decide: the policy (not the evidence) is at fault.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
#[error("{0}")]
pub struct RegoError(pub String);

/// Why an evaluation did not happen or did not finish.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvaluationError {
    /// The policy's modules are broken or exceeded a limit: the policy cannot be used.
    #[error(transparent)]
    Policy(#[from] RegoError),
    /// This input cannot be evaluated (too large, not representable): the collection it came
    /// from fails, the policy stays usable.
    #[error("{0}")]
    Input(String),
}

/// Evaluates `modules` against `input` (JSON text) in this process; returns the denials
/// (empty = allowed).
pub fn evaluate(
    modules: &[RegoModule],
    input_json: &str,
    time_limit: Duration,
) -> Result<Vec<String>, RegoError> {
    let mut compiled = Compiled::new(modules)?;
    let input = Value::from_json_str(input_json).map_err(|error| {
        RegoError(format!(
            "the attestation is not usable as Rego input: {error}"
        ))
    })?;
    compiled.evaluate(input, time_limit)
}

/// A module set loaded into one engine, evaluated against one input after another.
struct Compiled {
    engine: Engine,
    /// (package path, module name) of each module.
    packages: Vec<(String, String)>,
}

impl Compiled {
    fn new(modules: &[RegoModule]) -> Result<Compiled, RegoError> {
        let mut engine = Engine::new();
        engine.set_strict_builtin_errors(true);
        let mut packages: Vec<(String, String)> = Vec::with_capacity(modules.len());
        for module in modules {
            let package = add_module(&mut engine, module)?;
            if let Some((_, first)) = packages.iter().find(|(known, _)| known == &package) {
                return Err(RegoError(format!(
                    "Rego modules {first:?} and {:?} both declare {package}; each module needs \
                     its own package",
                    module.name
                )));
            }
            packages.push((package, module.name.clone()));
        }
        Ok(Compiled { engine, packages })
    }

    fn evaluate(&mut self, input: Value, time_limit: Duration) -> Result<Vec<String>, RegoError> {
        let fail = |what: String| RegoError(what);
        self.engine
            .set_execution_timer_config(ExecutionTimerConfig {
                limit: time_limit,
                check_interval: NonZeroU32::MIN,
            });
        self.engine.set_input(input);
        let mut denials = Vec::new();
        for (package, module) in &self.packages {
            let rule = format!("{package}.deny");
            let no_deny = || {
                fail(format!(
                    "Rego module {module:?} has no `deny` rule ({rule})"
                ))
            };
            let value = self.engine.eval_rule(rule.clone()).map_err(|error| {
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

// ---- the sandbox protocol --------------------------------------------------------------------
//
// Requests (parent → sandbox): a tag byte, a little-endian u64 length, that many bytes.
//   `M` a JSON list of modules: compile them as module set number k (k counts from 0);
//   `C` an `input.steps` document (JSON): parse it as context number k;
//   `E` u32 module set, u32 context (u32::MAX: none), u64 time limit in ms, then the
//       attestation's predicate (JSON): evaluate.
// Answers (sandbox → parent): a little-endian u64 length, then a JSON `Answer`, one per request.

const DEFINE_MODULES: u8 = b'M';
const DEFINE_CONTEXT: u8 = b'C';
const EVALUATE: u8 = b'E';
const NO_CONTEXT: u32 = u32::MAX;

#[derive(Serialize, Deserialize)]
enum Answer {
    Defined,
    Denials(Vec<String>),
    Failed(EvaluationError),
}

fn read_frame(reader: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut tag = [0u8; 1];
    if reader.read(&mut tag)? == 0 {
        return Ok(None);
    }
    let mut length = [0u8; 8];
    reader.read_exact(&mut length)?;
    let length = u64::from_le_bytes(length);
    let mut body = Vec::new();
    body.try_reserve_exact(length as usize)
        .map_err(|_| std::io::Error::other("memory allocation of the request failed"))?;
    reader.take(length).read_to_end(&mut body)?;
    if body.len() as u64 != length {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((tag[0], body)))
}

/// The sandbox side: answers requests on stdin until it closes.
pub fn serve_sandbox() -> anyhow::Result<()> {
    let mut requests = BufReader::new(std::io::stdin().lock());
    let mut answers = std::io::stdout().lock();
    let mut module_sets: Vec<Result<Compiled, RegoError>> = Vec::new();
    let mut contexts: Vec<Result<Value, String>> = Vec::new();
    while let Some((tag, body)) = read_frame(&mut requests)? {
        let answer = match tag {
            DEFINE_MODULES => {
                let compiled = serde_json::from_slice::<Vec<RegoModule>>(&body)
                    .map_err(|error| RegoError(format!("rego sandbox: malformed modules: {error}")))
                    .and_then(|modules| Compiled::new(&modules));
                let answer = match &compiled {
                    Ok(_) => Answer::Defined,
                    Err(error) => Answer::Failed(EvaluationError::Policy(error.clone())),
                };
                module_sets.push(compiled);
                answer
            }
            DEFINE_CONTEXT => {
                let context = parse_input(&body, "the attestationsFrom steps");
                let answer = match &context {
                    Ok(_) => Answer::Defined,
                    Err(error) => Answer::Failed(EvaluationError::Input(error.clone())),
                };
                contexts.push(context);
                answer
            }
            EVALUATE => evaluate_request(&body, &mut module_sets, &contexts),
            other => anyhow::bail!("rego sandbox: unknown request {other}"),
        };
        let answer = serde_json::to_vec(&answer)?;
        answers.write_all(&(answer.len() as u64).to_le_bytes())?;
        answers.write_all(&answer)?;
        answers.flush()?;
    }
    Ok(())
}

fn parse_input(json: &[u8], what: &str) -> Result<Value, String> {
    std::str::from_utf8(json)
        .map_err(|error| error.to_string())
        .and_then(|text| Value::from_json_str(text).map_err(|error| error.to_string()))
        .map_err(|error| format!("{what} cannot be given to Rego: {error}"))
}

fn evaluate_request(
    body: &[u8],
    module_sets: &mut [Result<Compiled, RegoError>],
    contexts: &[Result<Value, String>],
) -> Answer {
    let failed = |error: EvaluationError| Answer::Failed(error);
    let Some((header, predicate)) = body.split_at_checked(16) else {
        return failed(RegoError("rego sandbox: malformed request".to_owned()).into());
    };
    let number = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or_default());
    let time_limit = Duration::from_millis(u64::from_le_bytes(
        header[8..16].try_into().unwrap_or_default(),
    ));
    let Some(Ok(compiled)) = module_sets.get_mut(number(0) as usize) else {
        return failed(RegoError("rego sandbox: unknown module set".to_owned()).into());
    };
    let attestation = match parse_input(predicate, "the attestation") {
        Ok(value) => value,
        Err(error) => return failed(EvaluationError::Input(error)),
    };
    let input = match number(4) {
        NO_CONTEXT => attestation,
        context => match contexts.get(context as usize) {
            Some(Ok(steps)) => Value::from(BTreeMap::from([
                (Value::from("attestation"), attestation),
                (Value::from("steps"), steps.clone()),
            ])),
            _ => return failed(RegoError("rego sandbox: unknown context".to_owned()).into()),
        },
    };
    limit_cpu_from_now();
    match compiled.evaluate(input, time_limit) {
        Ok(denials) => Answer::Denials(denials),
        Err(error) => failed(error.into()),
    }
}

/// Gives the coming evaluation [`CPU_SECONDS`] of CPU time from now (the soft limit: the
/// kernel stops the sandbox with SIGXCPU past it).
fn limit_cpu_from_now() {
    let used = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|usage| (usage.user_time().tv_sec() + usage.system_time().tv_sec()) as u64)
        .unwrap_or(0);
    let _ =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CPU).map(|(_, hard)| {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_CPU,
                (used + CPU_SECONDS).min(hard),
                hard,
            )
        });
}

/// One sandbox process for a whole policy run: module sets and `input.steps` documents are
/// sent once and referred to by number; a sandbox that died (a limit breached) is started
/// afresh for the next evaluation.
#[derive(Default)]
pub struct Sandbox {
    running: Option<Running>,
}

struct Running {
    child: Child,
    /// Our end of the socket that is the sandbox's stdin (a socket, not a pipe: a write to a
    /// sandbox that died returns EPIPE instead of raising SIGPIPE, see [`send_all`]).
    requests: UnixStream,
    answers: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    module_sets: HashMap<Vec<RegoModule>, u32>,
    contexts: HashMap<[u8; 32], u32>,
}

impl Sandbox {
    /// Denials of `modules` for the predicate `attestation` (JSON), with `steps` (the
    /// `input.steps` JSON) when the step reads other steps' attestations; `what` names the
    /// evaluation in messages.
    pub fn evaluate(
        &mut self,
        modules: &[RegoModule],
        attestation: &str,
        steps: Option<&str>,
        what: &str,
    ) -> Result<Vec<String>, EvaluationError> {
        for (document, label) in [(Some(attestation), "predicate"), (steps, "input.steps")] {
            if let Some(document) = document.filter(|text| text.len() > MAX_INPUT_BYTES) {
                return Err(EvaluationError::Input(format!(
                    "{what}: its {label} is {} MiB, more than the {} MiB the Rego evaluator \
                     accepts as input",
                    document.len() >> 20,
                    MAX_INPUT_BYTES >> 20
                )));
            }
        }
        let input_bytes = attestation.len() + steps.map_or(0, str::len);
        let failure = match self.try_evaluate(modules, attestation, steps) {
            Ok(denials) => return Ok(denials),
            Err(failure) => failure,
        };
        Err(match failure {
            SandboxFailure::Evaluation(EvaluationError::Policy(error)) => {
                EvaluationError::Policy(RegoError(format!("{what}: {}", error.0)))
            }
            SandboxFailure::Evaluation(EvaluationError::Input(error)) => {
                EvaluationError::Input(format!("{what}: {error}"))
            }
            SandboxFailure::Start(error) => {
                EvaluationError::Policy(RegoError(format!("rego sandbox: cannot start: {error:#}")))
            }
            SandboxFailure::TimedOut => {
                self.stop();
                EvaluationError::Policy(RegoError(format!(
                    "{what}: Rego evaluation exceeded its time limit ({} s); the policy's \
                     modules loop or do too much work",
                    TIME_LIMIT.as_secs()
                )))
            }
            SandboxFailure::Died => {
                let (status, stderr) = self.stop();
                died(status, &stderr, input_bytes, what)
            }
        })
    }

    /// Stops the sandbox (the next evaluation starts a new one); its exit status and stderr.
    fn stop(&mut self) -> (Option<std::process::ExitStatus>, String) {
        let Some(mut running) = self.running.take() else {
            return (None, String::new());
        };
        let _ = running.child.kill();
        let status = running.child.wait().ok();
        let stderr = running
            .stderr
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        (status, stderr)
    }

    fn try_evaluate(
        &mut self,
        modules: &[RegoModule],
        attestation: &str,
        steps: Option<&str>,
    ) -> Result<Vec<String>, SandboxFailure> {
        if self.running.is_none() {
            self.running = Some(Running::start().map_err(SandboxFailure::Start)?);
        }
        let running = self.running.as_mut().expect("started above");
        let module_set = match running.module_sets.get(modules) {
            Some(number) => *number,
            None => {
                let body = serde_json::to_vec(modules).expect("modules serialise");
                running.define(DEFINE_MODULES, &[&body])?;
                let number = running.module_sets.len() as u32;
                running.module_sets.insert(modules.to_vec(), number);
                number
            }
        };
        let context = match steps {
            None => NO_CONTEXT,
            Some(steps) => {
                let key: [u8; 32] = sha2::Sha256::digest(steps.as_bytes()).into();
                match running.contexts.get(&key) {
                    Some(number) => *number,
                    None => {
                        running.define(DEFINE_CONTEXT, &[steps.as_bytes()])?;
                        let number = running.contexts.len() as u32;
                        running.contexts.insert(key, number);
                        number
                    }
                }
            }
        };
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&module_set.to_le_bytes());
        header[4..8].copy_from_slice(&context.to_le_bytes());
        header[8..].copy_from_slice(&(TIME_LIMIT.as_millis() as u64).to_le_bytes());
        match running.request(EVALUATE, &[&header, attestation.as_bytes()])? {
            Answer::Denials(denials) => Ok(denials),
            Answer::Failed(error) => Err(SandboxFailure::Evaluation(error)),
            Answer::Defined => Err(SandboxFailure::Died),
        }
    }
}

enum SandboxFailure {
    Start(anyhow::Error),
    Died,
    TimedOut,
    Evaluation(EvaluationError),
}

/// Why the sandbox died, in the caller's terms: a memory breach on an input large for the
/// evaluator is the input's fault, otherwise the modules'.
fn died(
    status: Option<std::process::ExitStatus>,
    stderr: &str,
    input_bytes: usize,
    what: &str,
) -> EvaluationError {
    let memory = stderr.contains("memory allocation")
        || stderr.contains("capacity overflow")
        || stderr.contains("out of memory");
    let limit_mib = MEMORY_LIMIT_BYTES >> 20;
    if memory {
        return EvaluationError::Policy(RegoError(format!(
            "{what}: Rego evaluation exceeded its memory limit ({limit_mib} MiB) on an input of \
             {} MiB; the policy's modules allocate without bound",
            input_bytes >> 20
        )));
    }
    let signal = status.and_then(|status| status.signal());
    if signal == Some(libc::SIGXCPU) {
        return EvaluationError::Policy(RegoError(format!(
            "{what}: Rego evaluation exceeded its CPU time limit ({CPU_SECONDS} s); the \
             policy's modules loop or do too much work"
        )));
    }
    let last_line = stderr.lines().last().unwrap_or_default();
    let status = status.map_or_else(|| "unknown status".to_owned(), |status| status.to_string());
    EvaluationError::Policy(RegoError(format!(
        "{what}: the Rego sandbox failed ({status}): {last_line}"
    )))
}

impl Running {
    fn start() -> anyhow::Result<Running> {
        use anyhow::Context as _;
        let executable = std::env::current_exe().context("cannot find this program")?;
        let (requests, sandbox_stdin) = UnixStream::pair().context("cannot create a socket")?;
        let mut command = Command::new(executable);
        command
            .arg(SANDBOX_SUBCOMMAND)
            // No configuration file of the caller's directory applies to the sandbox.
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(sandbox_stdin)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only getrlimit/setrlimit, which are async-signal-safe, run between fork and
        // exec.
        unsafe {
            command.pre_exec(|| {
                // The address space is bounded for good (the hard limit too); the CPU soft
                // limit is moved forward before each evaluation (`limit_cpu_from_now`).
                bound(Resource::RLIMIT_AS, MEMORY_LIMIT_BYTES, true)?;
                bound(Resource::RLIMIT_CPU, CPU_SECONDS, false)
            });
        }
        let mut child = command.spawn().context("cannot start")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            loop {
                let mut length = [0u8; 8];
                let answer = stdout.read_exact(&mut length).and_then(|()| {
                    let length = u64::from_le_bytes(length).min(MAX_ANSWER_BYTES);
                    let mut answer = Vec::new();
                    (&mut stdout).take(length).read_to_end(&mut answer)?;
                    Ok(answer)
                });
                let stop = answer.is_err();
                if sender.send(answer).is_err() || stop {
                    return;
                }
            }
        });
        let stderr = child.stderr.take().context("no stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.take(64 << 10).read_to_string(&mut text);
            text
        });
        Ok(Running {
            child,
            requests,
            answers,
            stderr: Some(stderr),
            module_sets: HashMap::new(),
            contexts: HashMap::new(),
        })
    }

    fn define(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), SandboxFailure> {
        match self.request(tag, parts)? {
            Answer::Defined => Ok(()),
            Answer::Failed(error) => Err(SandboxFailure::Evaluation(error)),
            Answer::Denials(_) => Err(SandboxFailure::Died),
        }
    }

    /// Sends one request and waits for its answer, within [`TIME_LIMIT`] plus the time to read
    /// the request.
    fn request(&mut self, tag: u8, parts: &[&[u8]]) -> Result<Answer, SandboxFailure> {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        let mut header = [0u8; 9];
        header[0] = tag;
        header[1..].copy_from_slice(&(length as u64).to_le_bytes());
        let sent = std::iter::once(&header[..])
            .chain(parts.iter().copied())
            .try_for_each(|part| send_all(&self.requests, part));
        if sent.is_err() {
            return Err(SandboxFailure::Died);
        }
        let reading = Duration::from_secs(length as u64 / READ_BYTES_PER_SECOND);
        let deadline = Instant::now() + TIME_LIMIT + Duration::from_secs(2) + reading;
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.answers.recv_timeout(timeout) {
            Ok(Ok(answer)) => serde_json::from_slice(&answer).map_err(|_| SandboxFailure::Died),
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => Err(SandboxFailure::Died),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(SandboxFailure::TimedOut),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lowers `resource`'s soft limit (and with `hard`, its hard limit) to `value`, never above
/// the hard limit the process already has. Async-signal-safe.
fn bound(resource: Resource, value: u64, hard: bool) -> std::io::Result<()> {
    let (_, current_hard) = getrlimit(resource)?;
    let value = value.min(current_hard);
    setrlimit(resource, value, if hard { value } else { current_hard })?;
    Ok(())
}

/// Writes all of `bytes` with `MSG_NOSIGNAL`: `verify` restores the default SIGPIPE action
/// (main.rs), which a write to a dead sandbox would otherwise trigger.
fn send_all(socket: &UnixStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer of `bytes.len()` bytes for the duration of the call.
        let sent = unsafe {
            libc::send(
                socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        bytes = &bytes[sent as usize..];
    }
    Ok(())
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
