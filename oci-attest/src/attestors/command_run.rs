//! The `command-run` attestor (v0.1): the wrapped argv, its exit code, how it was traced, and
//! every traced process with its file operations.

use std::path::PathBuf;

use serde::Serialize;

use crate::attestors::{
    Attach, Attestation, Attestor, AttestorOptions, RunContext, Stage, COMMAND_RUN_TYPE_URI,
};
use crate::digest::{sha256_hex, sha256_set, DigestSet};
use crate::identity::CommandIdentity;
use crate::observed::{Incomplete, Observation, ObservedProcess, RaisedPrivileges, TraceMode};
use crate::pathtext;
use crate::redact::Redaction;
use crate::rfc3339::rfc3339_nano;
use crate::run_options::{RunOptions, Source};

#[derive(Debug, Serialize)]
struct CommandRun {
    cmd: Vec<String>,
    exitcode: i32,
    /// Who the command ran as (docs/format.md).
    identity: CommandIdentity,
    summary: Summary,
    /// Each [`Process`] already as JSON, moved in after the rest is converted (`attest`): a
    /// storm of execs with long argv must not be held as structs and as JSON, or twice as JSON.
    processes: Vec<serde_json::Value>,
    /// Every option that shaped the statement, with its source.
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<RunOptions>,
}

/// How command lines are recorded: redacted, and with `--argv-digests` only as the sha256 of
/// each redacted word (and of the redacted cmdline).
struct CommandLines<'a> {
    redaction: &'a Redaction,
    digests: bool,
}

impl CommandLines<'_> {
    fn argv(&self, argv: &[String]) -> Vec<String> {
        let words = self.redaction.argv(argv);
        if self.digests {
            words.iter().map(|word| digest_text(word)).collect()
        } else {
            words
        }
    }

    fn cmdline(&self, argv: &[String]) -> String {
        let line = self.redaction.argv(argv).join(" ");
        if self.digests {
            digest_text(&line)
        } else {
            line
        }
    }
}

fn digest_text(text: &str) -> String {
    format!("sha256:{}", sha256_hex(text.as_bytes()))
}

#[derive(Debug, Serialize)]
struct Summary {
    /// `ebpf` or `off`.
    trace: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    events: u64,
    lost: u64,
    execs: u64,
    forks: u64,
    fileops: u64,
    truncatedargvs: u64,
    unresolvedpaths: u64,
    durationms: u64,
    /// Why the trace is incomplete (empty when it is not).
    incomplete: Vec<Incomplete>,
}

#[derive(Debug, Serialize)]
struct Process {
    program: String,
    processid: u32,
    parentpid: u32,
    cmdline: String,
    programdigest: Option<DigestSet>,
    /// Every exec of this process, in order (the fields above are the last one's).
    execs: Vec<Exec>,
    #[serde(rename = "fileOps")]
    file_ops: FileOps,
    starttime: String,
    endtime: Option<String>,
    exitcode: Option<i32>,
}

#[derive(Debug, Serialize)]
struct Exec {
    program: String,
    cmdline: String,
    /// The arguments one by one (`cmdline` joins them with spaces).
    argv: Vec<String>,
    /// Only when the program's path still names the inode the kernel executed.
    programdigest: Option<DigestSet>,
    /// The credentials the exec gave the process, only when it raised its privileges
    /// (setuid, setgid, file capabilities).
    #[serde(skip_serializing_if = "Option::is_none")]
    privileges: Option<RaisedPrivileges>,
}

/// Every change the process made to files, wherever they are (the products are the subset in
/// scope). Paths are escaped losslessly (`crate::pathtext`).
#[derive(Debug, Serialize)]
struct FileOps {
    writes: Vec<Written>,
    renames: Vec<PathPair>,
    links: Vec<PathPair>,
    deletes: Vec<PathEntry>,
    truncates: Vec<PathEntry>,
}

#[derive(Debug, Serialize)]
struct Written {
    /// The path the kernel built at the first change.
    path: String,
    dev: u64,
    ino: u64,
}

#[derive(Debug, Serialize)]
struct PathEntry {
    path: String,
}

#[derive(Debug, Serialize)]
struct PathPair {
    #[serde(rename = "oldPath")]
    old_path: String,
    #[serde(rename = "newPath")]
    new_path: String,
}

fn path_entries(paths: &[PathBuf]) -> Vec<PathEntry> {
    paths
        .iter()
        .map(|path| PathEntry {
            path: pathtext::escape(path),
        })
        .collect()
}

fn path_pairs(pairs: &[(PathBuf, PathBuf)]) -> Vec<PathPair> {
    pairs
        .iter()
        .map(|(old, new)| PathPair {
            old_path: pathtext::escape(old),
            new_path: pathtext::escape(new),
        })
        .collect()
}

fn digest_set(digest: &Option<String>) -> Option<DigestSet> {
    digest.clone().map(sha256_set)
}

pub const ATTESTOR: Attestor = Attestor {
    name: "command-run",
    predicate_type: COMMAND_RUN_TYPE_URI,
    aliases: &["https://witness.dev/attestations/command-run/v0.1"],
    stage: Stage::Execute,
    attach: Attach::Always,
    summary: "argv, exit code, trace summary and every traced process with its file operations",
    fields: &[],
    attest: from_run,
};

fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let outcome = run.outcome(ATTESTOR.name)?;
    Ok(vec![attest(
        &outcome.observation,
        &run.late_gaps.borrow(),
        &run.options,
        run.default_step(),
    )?])
}

/// The command-run attestation for `observation`, with the gaps `late_gaps` found after the
/// command besides its own; every command line goes through the options' redaction. A step
/// left to the default is recorded as `default_step`, the name the collection gets.
pub fn attest(
    observation: &Observation,
    late_gaps: &[Incomplete],
    options: &AttestorOptions,
    default_step: &str,
) -> anyhow::Result<Attestation> {
    let lines = CommandLines {
        redaction: &options.redaction,
        digests: options.argv_digests,
    };
    let run_options = options.run_options.clone().map(|mut run_options| {
        if run_options.settings.step.source == Source::Default {
            default_step.clone_into(&mut run_options.settings.step.value);
        }
        run_options
    });
    let (trace, reason) = match &observation.trace {
        TraceMode::Ebpf => ("ebpf", None),
        TraceMode::Off { reason } => ("off", Some(reason.clone())),
    };
    let duration = observation
        .ended
        .duration_since(observation.started)
        .unwrap_or_default();
    let mut processes: Vec<&ObservedProcess> = observation.processes.iter().collect();
    processes.sort_by_key(|process| (process.started, process.pid));
    let processes = processes
        .into_iter()
        .map(|process| {
            serde_json::to_value(Process {
                program: process.program().to_owned(),
                processid: process.pid,
                parentpid: process.parent_pid,
                cmdline: lines.cmdline(process.argv()),
                programdigest: digest_set(
                    &process
                        .execs
                        .last()
                        .and_then(|exec| exec.program_digest.clone()),
                ),
                execs: process
                    .execs
                    .iter()
                    .map(|exec| Exec {
                        program: exec.program.clone(),
                        cmdline: lines.cmdline(&exec.argv),
                        argv: lines.argv(&exec.argv),
                        programdigest: digest_set(&exec.program_digest),
                        privileges: exec.privileges,
                    })
                    .collect(),
                file_ops: FileOps {
                    writes: process
                        .writes
                        .iter()
                        .map(|written| Written {
                            path: pathtext::escape(&written.path),
                            dev: written.dev,
                            ino: written.ino,
                        })
                        .collect(),
                    renames: path_pairs(&process.renames),
                    links: path_pairs(&process.links),
                    deletes: path_entries(&process.deletes),
                    truncates: path_entries(&process.truncates),
                },
                starttime: rfc3339_nano(process.started),
                endtime: process.ended.map(rfc3339_nano),
                exitcode: process.exit.map(|termination| termination.exit_code()),
            })
        })
        .collect::<Result<_, _>>()?;
    let predicate = CommandRun {
        cmd: lines.argv(&observation.argv),
        exitcode: observation.termination.exit_code(),
        identity: observation.identity.clone(),
        summary: Summary {
            trace,
            reason,
            events: observation.counts.events,
            lost: observation.counts.lost,
            execs: observation.counts.execs,
            forks: observation.counts.forks,
            fileops: observation.counts.file_ops,
            truncatedargvs: observation.counts.truncated_argvs,
            unresolvedpaths: observation.counts.unresolved_paths,
            durationms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            incomplete: observation
                .incomplete
                .iter()
                .chain(late_gaps)
                .map(|entry| Incomplete {
                    reason: entry.reason,
                    detail: options.redaction.text(&entry.detail),
                })
                .collect(),
        },
        processes: Vec::new(),
        options: run_options,
    };
    let mut predicate = serde_json::to_value(&predicate)?;
    // Moved into its place (the map keeps the key's position), not copied.
    predicate["processes"] = serde_json::Value::Array(processes);
    Ok(Attestation {
        type_uri: COMMAND_RUN_TYPE_URI,
        predicate,
        subjects: Vec::new(),
        backrefs: Vec::new(),
        started: observation.started,
        ended: observation.ended,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::observed::{
        ExecRecord, Incomplete, IncompleteReason, Termination, TraceCounts, WrittenFile,
    };

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn process(
        pid: u32,
        started: u64,
        program: &str,
        digest: Option<&str>,
        argv: &[&str],
    ) -> ObservedProcess {
        ObservedProcess {
            pid,
            parent_pid: 1,
            execs: vec![ExecRecord {
                program: program.to_owned(),
                program_id: crate::observed::ProgramId::default(),
                program_digest: digest.map(str::to_owned),
                argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
                time: at(started),
                privileges: None,
            }],
            started: at(started),
            ended: Some(at(started + 1)),
            exit: Some(Termination::Exited(0)),
            writes: vec![WrittenFile {
                path: PathBuf::from("/w/out\n.tar.tmp"),
                dev: 1,
                ino: 3,
            }],
            renames: vec![(PathBuf::from("/w/out.tar.tmp"), PathBuf::from("/w/out.tar"))],
            links: Vec::new(),
            deletes: Vec::new(),
            truncates: Vec::new(),
        }
    }

    #[test]
    fn renders_processes_sorted_with_secrets_redacted() {
        let redaction = Redaction::default().with_secret_values_of(&[
            ("REGISTRY_TOKEN".to_owned(), "s3cr3t-value".to_owned()),
            ("my_password".to_owned(), "short".to_owned()),
            ("HOME".to_owned(), "/root/home-dir".to_owned()),
        ]);
        let observation = Observation {
            identity: crate::identity::CommandIdentity::current(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "login -x s3cr3t-value short".into(),
            ],
            working_dir: PathBuf::from("/w"),
            started: at(0),
            ended: at(2),
            termination: Termination::Signalled(15),
            trace: TraceMode::Ebpf,
            counts: TraceCounts {
                events: 10,
                lost: 1,
                execs: 2,
                forks: 1,
                file_ops: 3,
                truncated_argvs: 4,
                unresolved_paths: 5,
                ..TraceCounts::default()
            },
            processes: vec![
                process(
                    20,
                    1,
                    "/nonexistent/login",
                    None,
                    &["login", "-x", "s3cr3t-value"],
                ),
                process(
                    10,
                    0,
                    "/bin/sh",
                    Some("ab"),
                    &["sh", "-c", "/root/home-dir"],
                ),
            ],
            written: Vec::new(),
            outside_writes: Vec::new(),
            incomplete: vec![Incomplete {
                reason: IncompleteReason::TreeStillRunning,
                detail: "pid 30 (/usr/bin/sleep) still running".into(),
            }],
        };
        let options = AttestorOptions {
            redaction,
            ..AttestorOptions::default()
        };
        let attestation = attest(&observation, &[], &options, "run").unwrap();
        let predicate = &attestation.predicate;
        assert_eq!(
            predicate["cmd"],
            serde_json::json!(["sh", "-c", "login -x ****** short"])
        );
        assert_eq!(predicate["exitcode"], 143);
        assert_eq!(
            crate::gojson::to_string(&predicate["summary"]).unwrap(),
            r#"{"trace":"ebpf","events":10,"lost":1,"execs":2,"forks":1,"fileops":3,"truncatedargvs":4,"unresolvedpaths":5,"durationms":2000,"incomplete":[{"reason":"tree-still-running","detail":"pid 30 (/usr/bin/sleep) still running"}]}"#
        );
        let processes = predicate["processes"].as_array().unwrap();
        assert_eq!(processes[0]["processid"], 10);
        assert_eq!(processes[0]["cmdline"], "sh -c /root/home-dir");
        assert_eq!(processes[0]["programdigest"]["sha256"], "ab");
        assert_eq!(processes[0]["execs"][0]["programdigest"]["sha256"], "ab");
        assert_eq!(
            processes[1]["execs"][0]["argv"],
            serde_json::json!(["login", "-x", "******"])
        );
        assert_eq!(processes[1]["cmdline"], "login -x ******");
        assert_eq!(processes[1]["programdigest"], serde_json::Value::Null);
        assert_eq!(
            crate::gojson::to_string(&processes[1]["fileOps"]).unwrap(),
            r#"{"writes":[{"path":"/w/out\\x0a.tar.tmp","dev":1,"ino":3}],"renames":[{"oldPath":"/w/out.tar.tmp","newPath":"/w/out.tar"}],"links":[],"deletes":[],"truncates":[]}"#
        );
        assert_eq!(processes[1]["starttime"], "2023-11-14T22:13:21Z");
    }

    /// `--argv-digests`: no argv text at all, only digests of the redacted words and lines.
    #[test]
    fn argv_digests_replace_every_command_line() {
        let mut observation = untraced(&["login", "--password", "pw-value-1", "reg"]);
        observation.processes = vec![process(10, 0, "/bin/login", None, &["login", "x"])];
        let options = AttestorOptions {
            argv_digests: true,
            ..AttestorOptions::default()
        };
        let predicate = attest(&observation, &[], &options, "run")
            .unwrap()
            .predicate;
        let digest = |text: &str| format!("sha256:{}", sha256_hex(text.as_bytes()));
        assert_eq!(
            predicate["cmd"],
            serde_json::json!([
                digest("login"),
                digest("--password"),
                digest("******"),
                digest("reg")
            ])
        );
        let process = &predicate["processes"][0];
        assert_eq!(process["cmdline"], digest("login x").as_str());
        assert_eq!(process["execs"][0]["cmdline"], digest("login x").as_str());
        assert_eq!(process["execs"][0]["argv"][1], digest("x").as_str());
        assert!(!predicate.to_string().contains("pw-value-1"));
    }

    fn untraced(argv: &[&str]) -> Observation {
        Observation {
            identity: crate::identity::CommandIdentity::current(),
            argv: argv.iter().map(|word| (*word).to_owned()).collect(),
            working_dir: PathBuf::from("/"),
            started: at(0),
            ended: at(0),
            termination: Termination::Exited(0),
            trace: TraceMode::Off {
                reason: "not root".into(),
            },
            counts: TraceCounts::default(),
            processes: Vec::new(),
            written: Vec::new(),
            outside_writes: Vec::new(),
            incomplete: Vec::new(),
        }
    }

    #[test]
    fn untraced_summary_records_the_reason() {
        let observation = untraced(&["true"]);
        let attestation = attest(&observation, &[], &AttestorOptions::default(), "run").unwrap();
        assert_eq!(attestation.predicate["summary"]["trace"], "off");
        assert_eq!(attestation.predicate["summary"]["reason"], "not root");
        assert_eq!(
            attestation.predicate["summary"]["incomplete"],
            serde_json::json!([])
        );
        assert_eq!(attestation.predicate["processes"], serde_json::json!([]));
    }
}
