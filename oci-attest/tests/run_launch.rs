//! How `oci-attest run` starts and waits for the command, through the built binary: the child
//! starts with default signal state, SIGTERM after the command ended stops oci-attest, and the
//! whole process tree is waited for (`--wait-for-tree`). Untraced (`--trace off`): none of this
//! depends on eBPF; root is needed only to run the command as the test user.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use oci_attest_tests::oci_attest::user_dir;
use oci_attest_tests::require;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// `oci-attest run --trace off --unsigned -o att.json [options] -- command...` in `dir`, as
/// the tests start it (the command runs as the test user; `Err` without root or that user).
fn run_command(dir: &Path, options: &[&str], command: &[&str]) -> anyhow::Result<Command> {
    let mut run = oci_attest_tests::oci_attest::run_command(Path::new(BIN))?;
    run.args(["--trace", "off", "--unsigned", "-o", "att.json"])
        .args(options)
        .arg("--")
        .args(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(run)
}

/// Polls every 20 ms until `done` holds; after `limit`, kills `child` (by its pid) and fails
/// saying what did not happen.
fn poll_until(
    child: &mut Child,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&mut Child) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(child) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` at most `limit`; kills it and fails when it takes longer.
fn finish_within(mut child: Child, limit: Duration) -> Output {
    poll_until(&mut child, limit, "oci-attest did not end", |child| {
        child.try_wait().unwrap().is_some()
    });
    child.wait_with_output().unwrap()
}

fn statement(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("att.json")).unwrap()).unwrap()
}

fn attestation<'a>(statement: &'a Value, kind: &str) -> &'a Value {
    let all = statement["predicate"]["attestations"].as_array().unwrap();
    let entry = all
        .iter()
        .find(|entry| entry["type"].as_str().unwrap().contains(kind))
        .unwrap();
    &entry["attestation"]
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_command_starts_with_sigpipe_default_and_no_signal_blocked() {
    let dir = require!(user_dir());
    let mut run = require!(run_command(
        dir.path(),
        &[],
        &["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"],
    ));
    // oci-attest itself starts with SIGPIPE ignored and two signals blocked, as under a
    // careless CI runner; its child must not inherit either.
    // SAFETY: signal-mask and disposition changes only, both async-signal-safe.
    unsafe {
        run.pre_exec(|| {
            let mut blocked = SigSet::empty();
            blocked.add(Signal::SIGUSR1);
            blocked.add(Signal::SIGHUP);
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)?;
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        });
    }
    let output = finish_within(run.spawn().unwrap(), Duration::from_secs(30));
    assert!(output.status.success(), "{}", stderr(&output));
    let status = String::from_utf8(output.stdout).unwrap();
    let mask = |name: &str| {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "signals still blocked in the command");
    let sigpipe_bit = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(mask("SigIgn:") & sigpipe_bit, 0, "SIGPIPE still ignored");
}

#[test]
fn yes_piped_into_head_ends_by_sigpipe() {
    let dir = require!(user_dir());
    let mut run = require!(run_command(
        dir.path(),
        &[],
        &["sh", "-c", "yes | head -n 1"]
    ));
    let output = finish_within(run.spawn().unwrap(), Duration::from_secs(30));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, b"y\n");
    // With SIGPIPE ignored, `yes` dies of EPIPE instead and says so.
    assert!(
        !stderr(&output).contains("Broken pipe"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn sigterm_during_the_analysis_stops_oci_attest() {
    let dir = require!(user_dir());
    // A 4 GiB sparse product takes the debug build far longer to hash than this test waits.
    let mut run = require!(run_command(
        dir.path(),
        &[],
        &["sh", "-c", "truncate -s 4G big && touch command-done"],
    ));
    let child = run_spawn_and_wait_for(&mut run, &dir.path().join("command-done"));
    // The command has exited (or is about to): let oci-attest reap it and start hashing.
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let output = finish_within(child, Duration::from_secs(20));
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGTERM),
        "oci-attest went on after SIGTERM: {:?} {}",
        output.status,
        stderr(&output)
    );
    assert!(!dir.path().join("att.json").exists());
}

/// Starts `run` and returns once `marker` exists.
fn run_spawn_and_wait_for(run: &mut Command, marker: &Path) -> Child {
    let mut child = run.spawn().unwrap();
    let what = format!("the command did not write {}", marker.display());
    poll_until(&mut child, Duration::from_secs(30), &what, |child| {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("oci-attest ended ({status}) before the command wrote its marker");
        }
        marker.exists()
    });
    child
}

#[test]
fn an_orphan_writing_after_the_command_exited_is_waited_for() {
    let dir = require!(user_dir());
    let mut run = require!(run_command(
        dir.path(),
        &[],
        &["sh", "-c", "(sleep 1; echo late > late.out) & echo started"],
    ));
    let output = finish_within(run.spawn().unwrap(), Duration::from_secs(30));
    assert!(output.status.success(), "{}", stderr(&output));
    let statement = statement(dir.path());
    let leaves = &attestation(&statement, "/product/")["leaves"];
    assert_eq!(leaves[0]["path"], "late.out", "{leaves}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("late.out")).unwrap(),
        "late\n"
    );
}

/// Runs a command leaving a `sleep 30` behind with `--wait-for-tree 1`; returns the result and
/// the sleep's pid (killed before returning).
fn leave_a_sleeper(dir: &Path, options: &[&str]) -> (ExitStatus, String, String) {
    let mut all = vec!["--wait-for-tree", "1"];
    all.extend_from_slice(options);
    let mut run = run_command(
        dir,
        &all,
        &[
            "sh",
            "-c",
            "sleep 30 >/dev/null 2>&1 & echo $! > sleeper.pid",
        ],
    )
    .expect("checked by the caller's user_dir");
    let started = Instant::now();
    let output = finish_within(run.spawn().unwrap(), Duration::from_secs(20));
    let pid = std::fs::read_to_string(dir.join("sleeper.pid")).unwrap();
    let pid = pid.trim().to_owned();
    let _ = kill(Pid::from_raw(pid.parse().unwrap()), Signal::SIGKILL);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "--wait-for-tree 1 waited {:?}",
        started.elapsed()
    );
    (output.status, stderr(&output), pid)
}

#[test]
fn a_process_outliving_wait_for_tree_makes_the_run_incomplete() {
    let dir = require!(user_dir());
    let (status, stderr, pid) = leave_a_sleeper(dir.path(), &[]);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("tree-still-running"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid} ")), "{stderr}");
    assert!(!dir.path().join("att.json").exists());

    let dir = require!(user_dir());
    let (status, stderr, pid) = leave_a_sleeper(dir.path(), &["--allow-incomplete-trace"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let statement = statement(dir.path());
    let incomplete = &attestation(&statement, "/command-run/")["summary"]["incomplete"];
    let entries = incomplete.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{incomplete}");
    assert_eq!(entries[0]["reason"], "tree-still-running");
    let detail = entries[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("pid {pid} ")) && detail.contains("sleep"),
        "{detail}"
    );
}
