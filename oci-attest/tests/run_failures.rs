//! `oci-attest run` when things go wrong around the command: no eBPF privileges, signals sent to
//! oci-attest while the command runs, and a command that floods stdout.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use oci_attest_tests::oci_attest::{run_command, user_dir};
use oci_attest_tests::require;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// Root is needed to drop to `nobody`; a test that cannot run fails in CI and says why elsewhere.
fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    oci_attest_tests::skip(test, "needs root to switch to the nobody user");
    false
}

/// A temp dir the `nobody` user can write into.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn as_nobody(dir: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run setpriv")
}

fn statement(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    match document.get("payload").and_then(Value::as_str) {
        Some(payload) => serde_json::from_slice(&BASE64.decode(payload).unwrap()).unwrap(),
        None => document,
    }
}

fn command_run(statement: &Value) -> &Value {
    statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["type"] == "https://aflock.ai/attestations/command-run/v0.1")
        .map(|entry| &entry["attestation"])
        .expect("a command-run attestation")
}

#[test]
fn unprivileged_auto_runs_untraced_and_records_why() {
    if !require_root("unprivileged_auto_runs_untraced_and_records_why") {
        return;
    }
    let dir = shared_dir();
    let output = as_nobody(
        dir.path(),
        &[
            "run",
            "--unsigned",
            "-o",
            "att.json",
            "--",
            "sh",
            "-c",
            "echo made > product.txt",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("UNTRACED"), "no loud warning: {stderr}");
    let statement = statement(&dir.path().join("att.json"));
    let summary = &command_run(&statement)["summary"];
    assert_eq!(summary["trace"], "off");
    assert!(
        summary["reason"].as_str().unwrap().contains("not root"),
        "reason not recorded: {summary}"
    );
    // oci-attest is not root: the command ran as its own user, which said so and recorded it.
    assert!(stderr.contains("oci-attest is not root"), "{stderr}");
    let identity = &command_run(&statement)["identity"];
    assert_eq!(identity["user"], "nobody", "{identity}");
    assert_eq!(identity["source"], "same-user", "{identity}");
    assert_eq!(identity["nonewprivs"], true, "{identity}");
}

#[test]
fn unprivileged_trace_ebpf_refuses_before_starting_the_command() {
    if !require_root("unprivileged_trace_ebpf_refuses_before_starting_the_command") {
        return;
    }
    let dir = shared_dir();
    let output = as_nobody(
        dir.path(),
        &[
            "run",
            "--trace",
            "ebpf",
            "--unsigned",
            "-o",
            "att.json",
            "--",
            "touch",
            "started",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("--trace ebpf"), "{stderr}");
    assert!(stderr.contains("(reason: ebpf-unavailable)"), "{stderr}");
    assert!(!dir.path().join("started").exists(), "the command ran");
    assert!(
        !dir.path().join("att.json").exists(),
        "an attestation was written"
    );
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("oci-attest did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

#[test]
fn sigint_ignored_by_the_child_then_sigterm_is_forwarded_and_the_run_is_attested() {
    let dir = require!(user_dir());
    let mut child = require!(run_command(Path::new(BIN)))
        .args(["--trace", "off", "--unsigned", "-o", "att.json", "--"])
        .args([
            "sh",
            "-c",
            "trap '' INT; echo up > ready; while :; do sleep 0.05; done",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.path().join("ready").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, nix::sys::signal::Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGINT ended the run although the child ignores it"
    );
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(143), "exit code should be 128+SIGTERM");
    let statement = statement(&dir.path().join("att.json"));
    assert_eq!(command_run(&statement)["exitcode"], 143);
}

#[test]
fn a_command_flooding_stdout_does_not_grow_our_memory() {
    let dir = require!(user_dir());
    let output = require!(run_command(Path::new(BIN)))
        .args(["--trace", "off", "--unsigned", "-o", "att.json", "--"])
        .args(["sh", "-c", "head -c 400000000 /dev/zero"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Only this binary's children are reaped by this test process; ru_maxrss is in KiB.
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let peak_mib = usage.max_rss() / 1024;
    assert!(
        peak_mib < 64,
        "peak RSS {peak_mib} MiB while the command wrote 400 MB to stdout"
    );
}
