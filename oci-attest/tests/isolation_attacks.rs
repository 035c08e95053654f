//! The command attacks oci-attest and its signing key, one route per test, as an attacker would
//! act: the real binary runs `oci-attest run --trace ebpf -k KEY` as root around the attacker
//! helper (`tests/attackers/attacker.c`, or a setuid / file-capability copy of it, or sudo and
//! su), which tries to read the key, gain privileges, signal, limit, trace or read oci-attest,
//! take its descriptors, walk the BPF maps, mount or take a loop device.
//!
//! Each route runs in up to three identities, with the outcome the trust model promises:
//! - as the unprivileged test user (no_new_privs), the kernel refuses every attempt, and the
//!   attestation is signed, complete and true (the command's product with its real digest);
//! - with `--run-as root`, the attempt succeeds, and the trace says so: exit 3, nothing written,
//!   with the reason (`tracer-tampered`, `key-accessed`) in the error and in the statement;
//! - with `--allow-new-privileges`, an exec that raises privileges ends with exit 3
//!   (`privilege-gained`).
//!
//! They need root; they fail instead of skipping under `cargo xtask test` and in CI.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;

use oci_attest_tests::attack::{Privilege, Run, Scenario, INCOMPLETE_EXIT, KEY};
use oci_attest_tests::require;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// How a run ends for one identity.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// The kernel refused every attempt (`tamper.log` says "denied" for each); the trace is
    /// complete and the product is listed with its real digest.
    Denied,
    /// Exit 3, nothing written; the error and the statement (signed again with
    /// `--allow-incomplete-trace`) give every one of these reasons.
    Refused(&'static [&'static str]),
    /// oci-attest was killed: nothing written.
    Killed,
}

/// One escape route.
struct Route {
    /// The attacker's steps after it wrote its product ([`KEY`] names the signing key).
    steps: &'static [&'static str],
    /// A copy of the attacker named `helper` that raises the privileges of whoever runs it.
    helper: Option<Privilege>,
    /// As the test user, with no_new_privs.
    unprivileged: Outcome,
    /// With `--run-as root` (`None`: the route proves nothing as root).
    as_root: Option<Outcome>,
    /// As the test user with `--allow-new-privileges` (`None`: no privilege to gain).
    new_privileges: Option<Outcome>,
    /// A line the root run's `tamper.log` must hold besides the attempt itself.
    as_root_log: Option<&'static str>,
}

const PRODUCT: &str = "product.txt";
const TAMPERED: &[&str] = &["tracer-tampered"];
const KEY_ACCESSED: &[&str] = &["key-accessed"];

impl Route {
    /// Refused to the test user; proves nothing as root, and has no privilege to gain.
    fn refused_to_the_user(steps: &'static [&'static str]) -> Self {
        Route {
            steps,
            helper: None,
            unprivileged: Outcome::Denied,
            as_root: None,
            new_privileges: None,
            as_root_log: None,
        }
    }

    /// An attempt on oci-attest: refused to the test user, `tracer-tampered` as root.
    fn on_the_tracer(steps: &'static [&'static str]) -> Self {
        Self::refused_to_the_user(steps).ending_as_root(Outcome::Refused(TAMPERED))
    }

    /// An attempt on the signing key: refused to the test user, `key-accessed` as root.
    fn on_the_key(steps: &'static [&'static str]) -> Self {
        Self::refused_to_the_user(steps).ending_as_root(Outcome::Refused(KEY_ACCESSED))
    }

    fn ending_as_root(self, outcome: Outcome) -> Self {
        Route {
            as_root: Some(outcome),
            ..self
        }
    }

    fn with_new_privileges(self, outcome: Outcome) -> Self {
        Route {
            new_privileges: Some(outcome),
            ..self
        }
    }

    /// Runs the steps through a copy of the attacker (`./helper`) that raises privileges.
    fn through(self, helper: Privilege) -> Self {
        Route {
            helper: Some(helper),
            ..self
        }
    }

    fn logging_as_root(self, line: &'static str) -> Self {
        Route {
            as_root_log: Some(line),
            ..self
        }
    }

    /// Runs the route in each of its identities; a missing environment (root, gcc, the test
    /// user) is a skip outside CI.
    fn check(&self) {
        require!(self.try_check());
    }

    fn try_check(&self) -> anyhow::Result<()> {
        let modes: [(&str, Option<Outcome>); 3] = [
            ("test user", Some(self.unprivileged)),
            ("--run-as root", self.as_root),
            ("--allow-new-privileges", self.new_privileges),
        ];
        for (mode, expected) in modes {
            let Some(expected) = expected else {
                continue;
            };
            // Only a missing environment (root, gcc, the test user) is an `Err` here.
            let scenario = self.scenario(mode)?;
            let log = check_outcome(&scenario, mode, expected);
            if mode == "--run-as root" {
                if let Some(line) = self.as_root_log {
                    assert!(log.contains(line), "{mode}: no {line:?} in\n{log}");
                }
            }
        }
        Ok(())
    }

    fn scenario(&self, mode: &str) -> anyhow::Result<Scenario> {
        let mut steps = vec!["write", PRODUCT, mode, "+"];
        steps.extend_from_slice(self.steps);
        let mut scenario = Scenario::new(Path::new(BIN), &steps)?.signed();
        if let Some(how) = self.helper {
            scenario = scenario.privileged_program("helper", how);
        }
        Ok(match mode {
            "--run-as root" => scenario.as_root("the attack as a root command would make it"),
            "--allow-new-privileges" => scenario.option("--allow-new-privileges"),
            _ => scenario,
        })
    }
}

/// `execs[].privileges` of every exec that raised privileges: (program, privileges).
fn raised(run: &Run) -> Vec<(String, serde_json::Value)> {
    run.statement()
        .processes()
        .iter()
        .flat_map(|process| process["execs"].as_array().cloned().unwrap_or_default())
        .filter(|exec| !exec["privileges"].is_null())
        .map(|exec| {
            (
                exec["program"].as_str().unwrap_or_default().to_owned(),
                exec["privileges"].clone(),
            )
        })
        .collect()
}

fn tamper_log(run: &Run) -> String {
    std::fs::read_to_string(run.work.join("tamper.log")).unwrap_or_default()
}

/// Runs `scenario` and checks that it ends as `expected`; returns the first run's `tamper.log`.
fn check_outcome(scenario: &Scenario, mode: &str, expected: Outcome) -> String {
    let first = scenario
        .run(false)
        .unwrap_or_else(|error| panic!("{mode}: {error:#}"));
    let log = tamper_log(&first);
    match expected {
        Outcome::Denied => {
            assert_eq!(
                first.exit_code(),
                Some(0),
                "{mode}: the run must complete: {}",
                first.stderr
            );
            assert!(
                !log.is_empty() && log.lines().all(|line| line.contains(": denied (")),
                "{mode}: an attempt was not refused by the kernel:\n{log}"
            );
            let products = first.statement().products();
            let digest = oci_attest_tests::command::sha256sum(&first.work.join(PRODUCT))
                .expect("sha256sum of the product");
            assert_eq!(
                products.get(PRODUCT),
                Some(&digest),
                "{mode}: the product is not listed with its real digest: {products:?}"
            );
            if mode == "--allow-new-privileges" {
                // A setuid id-mapping helper ran: recorded, and the trace is complete.
                assert!(
                    raised(&first)
                        .iter()
                        .any(|(program, privileges)| program.ends_with("/newuidmap")
                            && privileges["euid"] == 0),
                    "{mode}: no raised exec recorded: {:?}",
                    raised(&first)
                );
            }
        }
        Outcome::Refused(reasons) => {
            assert_eq!(
                first.exit_code(),
                Some(INCOMPLETE_EXIT),
                "{mode}: the run must end with exit 3 for {reasons:?}: {}\n{log}",
                first.stderr
            );
            assert!(first.statement.is_none(), "{mode}: something was written");
            if mode == "--run-as root" {
                assert!(
                    log.contains(": done"),
                    "{mode}: the attack did not happen:\n{log}"
                );
            }
            let again = scenario
                .run(true)
                .unwrap_or_else(|error| panic!("{mode}: {error:#}"));
            let listed = again.statement().incomplete();
            for reason in reasons {
                assert!(
                    first.stderr.contains(reason),
                    "{mode}: the error does not name {reason}: {}",
                    first.stderr
                );
                assert!(
                    listed.iter().any(|(listed, _)| listed == reason),
                    "{mode}: summary.incomplete lacks {reason}: {listed:?}"
                );
            }
            if reasons.contains(&"privilege-gained") {
                // setuid root: euid 0; file capabilities: an effective capability.
                assert!(
                    raised(&again)
                        .iter()
                        .any(|(_, privileges)| privileges["euid"] == 0
                            || privileges["capeffective"]
                                .as_u64()
                                .is_some_and(|caps| caps != 0)),
                    "{mode}: no exec recorded with the privileges it gained: {:?}",
                    raised(&again)
                );
            }
            if reasons.contains(&"key-accessed") {
                assert!(
                    first.stderr.contains("must be considered compromised"),
                    "{}",
                    first.stderr
                );
            }
        }
        Outcome::Killed => {
            assert_eq!(
                first.status.signal(),
                Some(libc::SIGKILL),
                "{mode}: oci-attest should have been killed: {}",
                first.status
            );
            assert!(first.statement.is_none(), "{mode}: something was written");
        }
    }
    log
}

#[test]
fn read_the_key() {
    Route::on_the_key(&["try-read", KEY]).check();
}

#[test]
fn sudo_inside_the_command() {
    Route::on_the_key(&["try-run", "/usr/bin/sudo", "-n", "/bin/cat", KEY])
        .with_new_privileges(Outcome::Refused(&["privilege-gained"]))
        .check();
}

#[test]
fn su_inside_the_command() {
    Route::on_the_key(&["try-run", "/usr/bin/su", "-c", "cat {key}", "root"])
        .with_new_privileges(Outcome::Refused(&["privilege-gained"]))
        .check();
}

#[test]
fn a_setuid_root_helper_reads_the_key() {
    Route::on_the_key(&["try-run", "./helper", "read-or-fail", KEY])
        .through(Privilege::SetuidRoot)
        .with_new_privileges(Outcome::Refused(&["privilege-gained", "key-accessed"]))
        .check();
}

#[test]
fn a_file_capability_helper_reads_the_key() {
    Route::on_the_key(&["try-run", "./helper", "read-or-fail", KEY])
        .through(Privilege::FileCapabilities("cap_dac_read_search+ep"))
        .with_new_privileges(Outcome::Refused(&["privilege-gained", "key-accessed"]))
        .check();
}

/// The uid-mapping helper rootless containers need: with `--allow-new-privileges` its exec is
/// recorded with the privileges it gained, and the trace stays complete.
#[test]
fn newuidmap_with_new_privileges() {
    Route::refused_to_the_user(&["try-run", "/usr/bin/newuidmap"])
        .with_new_privileges(Outcome::Denied)
        .check();
}

#[test]
fn sigstop_to_oci_attest() {
    Route::on_the_tracer(&["signal-parent", "STOP"]).check();
}

#[test]
fn sigkill_to_oci_attest() {
    Route::on_the_tracer(&["signal-parent", "KILL"])
        .ending_as_root(Outcome::Killed)
        .check();
}

#[test]
fn prlimit_on_oci_attest() {
    Route::on_the_tracer(&["prlimit-parent"]).check();
}

#[test]
fn ptrace_attach_to_oci_attest() {
    Route::on_the_tracer(&["ptrace-parent"]).check();
}

#[test]
fn process_vm_readv_of_oci_attest() {
    Route::on_the_tracer(&["vm-read-parent"]).check();
}

#[test]
fn proc_mem_of_oci_attest() {
    Route::on_the_tracer(&["try-read-parent", "mem"]).check();
}

#[test]
fn proc_environ_of_oci_attest() {
    Route::on_the_tracer(&["try-read-parent", "environ"]).check();
}

#[test]
fn pidfd_getfd_from_oci_attest() {
    Route::on_the_tracer(&["pidfd-getfd-parent"]).check();
}

/// As root the walk finds the tracer's record of attacks, and cannot edit it (frozen).
#[test]
fn bpf_map_walk() {
    Route::on_the_tracer(&["bpf-walk"])
        .logging_as_root("bpf-edit: denied (Operation not permitted)")
        .check();
}

#[test]
fn mount_and_loop_device() {
    Route::refused_to_the_user(&["mount-and-loop", "mnt"]).check();
}
