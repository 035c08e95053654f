//! The kernel programs on the real kernel: each test loads them, runs a real command under
//! them through `launch`, and checks what the trace saw. They need root (or CAP_BPF and
//! CAP_PERFMON); without it they fail when CI=true and otherwise say they were skipped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oci_attest::launch::spawn_stopped;
use oci_attest::observed::{ObservedProcess, Termination};
use oci_attest::trace::{Privileges, TraceConfig, TraceOutcome, Tracer};

/// Whether the eBPF tests can run; panics in CI when they cannot.
fn can_trace(test: &str) -> bool {
    if Privileges::current().can_trace() {
        return true;
    }
    let reason = "needs root or CAP_BPF+CAP_PERFMON to load eBPF programs";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {reason} (CI=true: eBPF tests must run)");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// Runs `argv` in `dir` under a freshly loaded tracer.
fn run_traced(argv: &[&str], dir: &Path) -> (Termination, TraceOutcome) {
    let mut tracer = Tracer::load(&TraceConfig::default()).expect("load the kernel programs");
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    let child = spawn_stopped(&argv, dir).expect("fork the command");
    tracer.track(child.pid()).expect("track the child");
    let termination = child.release().expect("release").wait().expect("wait");
    let outcome = tracer.finish().expect("finish the trace");
    (termination, outcome)
}

fn sh(script: &str, dir: &Path) -> (Termination, TraceOutcome) {
    run_traced(&["sh", "-c", script], dir)
}

fn all_writes(outcome: &TraceOutcome) -> Vec<PathBuf> {
    outcome
        .processes
        .iter()
        .flat_map(|process| process.writes.iter().cloned())
        .collect()
}

fn exec_of<'a>(outcome: &'a TraceOutcome, program_suffix: &str) -> Vec<&'a ObservedProcess> {
    outcome
        .processes
        .iter()
        .filter(|process| {
            process
                .execs
                .iter()
                .any(|exec| exec.program.ends_with(program_suffix))
        })
        .collect()
}

#[test]
fn tar_exec_argv_and_creat_are_observed_without_loss() {
    if !can_trace("tar_exec_argv_and_creat_are_observed_without_loss") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (termination, outcome) = sh("tar cf x.tar /etc/hostname", dir.path());
    assert_eq!(termination, Termination::Exited(0));
    assert_eq!(outcome.counts.lost, 0);
    let tars = exec_of(&outcome, "/tar");
    assert_eq!(tars.len(), 1, "{:#?}", outcome.processes);
    assert_eq!(tars[0].argv(), ["tar", "cf", "x.tar", "/etc/hostname"]);
    let archive = dir.path().canonicalize().unwrap().join("x.tar");
    assert!(tars[0].writes.contains(&archive), "{:#?}", tars[0]);
    assert!(
        tars[0].reads.contains(&PathBuf::from("/etc/hostname")),
        "{:#?}",
        tars[0]
    );
    // dash may exec tar in place of itself: the shell's exec is the first of its process.
    let shell = &outcome.processes[0];
    assert_eq!(
        shell.execs[0].argv,
        ["sh", "-c", "tar cf x.tar /etc/hostname"]
    );
    assert_eq!(shell.exit, Some(Termination::Exited(0)));
}
