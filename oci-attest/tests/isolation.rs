//! The command never runs with oci-attest's privileges, through the built binary: oci-attest as
//! root refuses to run a command as root unless told to; started as sudo starts it, the command
//! runs as the invoking user with no capability, no_new_privs, none of oci-attest's descriptors
//! or variables; `--run-as` names another identity; a signing key or passphrase file the
//! command's user could open is refused before anything starts; the identity is recorded,
//! printed by `verify`, and a root command fails verification unless allowed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use oci_attest_tests::oci_attest::{run_command, test_user, user_dir, TestUser};
use oci_attest_tests::require;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// What the command sees of itself, written into its working directory: its status (ids,
/// capabilities, no_new_privs), its open descriptors, its environment and its umask.
const SELF_REPORT: &str = "grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' \
     /proc/$$/status > status; ls -l /proc/$$/fd > fds; env > env; umask > umask";

/// A working directory of the test user with a signing key (root's, mode 0600) in it.
struct Setup {
    dir: tempfile::TempDir,
    user: TestUser,
}

impl Setup {
    fn new() -> anyhow::Result<Setup> {
        let setup = Setup {
            dir: user_dir()?,
            user: test_user()?,
        };
        let keygen = oci_attest(setup.path(), &["keygen", "--out", "key.pem"]);
        anyhow::ensure!(keygen.status.success(), "{}", stderr(&keygen));
        Ok(setup)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `oci-attest run --trace off -k key.pem -o att.json OPTIONS -- sh -c SCRIPT`, as the
    /// tests start it (SUDO_UID/SUDO_GID of the test user).
    fn run(&self, options: &[&str], script: &str) -> Output {
        self.run_with(options, script, |_| {})
    }

    fn run_with(
        &self,
        options: &[&str],
        script: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Output {
        let mut command = run_command(Path::new(BIN)).expect("checked by Setup::new");
        command
            .args(["--trace", "off", "-k", "key.pem", "-o", "att.json"])
            .args(options)
            .args(["--", "sh", "-c", script])
            .current_dir(self.path());
        adjust(&mut command);
        command.output().expect("run oci-attest")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name))
            .unwrap_or_else(|error| panic!("{name}: {error}"))
    }

    /// The `Name:` line of the command's status report, without the name.
    fn status(&self, name: &str) -> String {
        let status = self.read("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `identity` of the command-run predicate in `att.json`.
    fn identity(&self) -> Value {
        let envelope: Value =
            serde_json::from_slice(&std::fs::read(self.path().join("att.json")).unwrap()).unwrap();
        let payload = BASE64
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        statement["predicate"]["attestations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["type"] == "https://aflock.ai/attestations/command-run/v0.1")
            .map(|entry| entry["attestation"]["identity"].clone())
            .expect("a command-run attestation")
    }

    fn verify(&self, options: &[&str]) -> Output {
        let mut args = vec!["verify", "--key", "key.pem.pub", "--allow-untraced"];
        args.extend_from_slice(options);
        args.push("att.json");
        oci_attest(self.path(), &args)
    }
}

fn oci_attest(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run oci-attest")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn root_without_sudo_or_run_as_refuses_before_anything_starts() {
    let setup = require!(Setup::new());
    let output = Command::new(BIN)
        .args(["run", "--trace", "off", "-k", "key.pem", "-o", "att.json"])
        .args(["--", "touch", "ran"])
        .current_dir(setup.path())
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .output()
        .unwrap();
    let error = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{error}");
    assert!(
        error.contains("(reason: command-would-run-as-root)"),
        "{error}"
    );
    assert!(error.contains("--run-as USER"), "{error}");
    assert!(error.contains("--run-as root"), "{error}");
    assert_eq!(error.trim_end().lines().count(), 1, "{error}");
    assert!(!setup.path().join("ran").exists());
    assert!(!setup.path().join("att.json").exists());
}

#[test]
fn under_sudo_the_command_runs_as_the_invoking_user_with_nothing_of_oci_attests() {
    let setup = require!(Setup::new());
    // A descriptor oci-attest inherits (as from a CI runner) and a variable of its own.
    let inherited = std::fs::File::open(setup.path().join("key.pem")).unwrap();
    let output = setup.run_with(&[], SELF_REPORT, |command| {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::process::CommandExt as _;
        let fd = inherited.as_raw_fd();
        command
            .env("OCI_ATTEST_SOMETHING", "internal")
            .env("HOME", "/root")
            .env("KEPT_VARIABLE", "kept");
        // SAFETY: dup2 is async-signal-safe; it also clears close-on-exec on fd 9.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(fd, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::umask(0o027);
                Ok(())
            });
        }
    });
    assert!(output.status.success(), "{}", stderr(&output));
    let user = &setup.user;
    assert!(
        stderr(&output).contains(&format!(
            "the command runs as {} (uid {}",
            user.name, user.uid
        )),
        "{}",
        stderr(&output)
    );
    let ids = format!("{0} {0} {0} {0}", user.uid);
    assert_eq!(setup.status("Uid"), ids);
    assert_eq!(setup.status("Gid"), format!("{0} {0} {0} {0}", user.gid));
    assert_eq!(setup.status("Groups"), user.gid.to_string());
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(setup.status(set), "0000000000000000", "{set}");
    }
    assert_eq!(setup.status("NoNewPrivs"), "1");
    // The shell's descriptors (0, 1, 2 and dash's own copies of them): nothing of oci-attest's,
    // neither the inherited fd 9 nor a BPF map, ring buffer or pidfd.
    let fds = setup.read("fds");
    let targets: Vec<(&str, &str)> = fds
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .map(|(left, target)| (left.rsplit(' ').next().unwrap_or(""), target))
        .collect();
    assert!(targets.len() >= 3, "{fds}");
    for (fd, target) in targets {
        assert!(
            fd != "9" && !target.contains("key.pem") && !target.starts_with("anon_inode:"),
            "a descriptor of oci-attest reached the command: {fd} -> {target}"
        );
    }
    let env = setup.read("env");
    assert!(!env.contains("OCI_ATTEST_"), "{env}");
    assert!(env.contains("KEPT_VARIABLE=kept"), "{env}");
    for line in [
        format!("HOME={}", user.home.display()),
        format!("USER={}", user.name),
        format!("LOGNAME={}", user.name),
    ] {
        assert!(env.lines().any(|kept| kept == line), "{line}: {env}");
    }
    assert_eq!(setup.read("umask").trim(), "0027");

    let identity = setup.identity();
    assert_eq!(identity["user"], user.name.as_str());
    assert_eq!(identity["uid"], user.uid);
    assert_eq!(identity["gid"], user.gid);
    assert_eq!(identity["groups"], serde_json::json!([user.gid]));
    assert_eq!(identity["root"], false);
    assert_eq!(identity["nonewprivs"], true);
    assert_eq!(identity["keyreadable"], false);
    assert_eq!(identity["source"], "sudo");
    let verified = setup.verify(&[]);
    let report = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "{report}{}", stderr(&verified));
    assert!(
        report.contains(&format!(
            "run: command ran as {} (uid {}, gid {}, groups {}), no_new_privs",
            user.name, user.uid, user.gid, user.gid
        )),
        "{report}"
    );
}

#[test]
fn run_as_names_the_identity_and_allow_new_privileges_lifts_no_new_privs() {
    let setup = require!(Setup::new());
    let run_as = format!("{}:root", setup.user.name);
    let output = setup.run(
        &["--run-as", &run_as, "--allow-new-privileges"],
        SELF_REPORT,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(setup.status("Gid"), "0 0 0 0");
    assert_eq!(setup.status("NoNewPrivs"), "0");
    assert_eq!(setup.status("CapEff"), "0000000000000000");
    let identity = setup.identity();
    assert_eq!(identity["gid"], 0);
    assert_eq!(identity["nonewprivs"], false);
    assert_eq!(identity["source"], "run-as");
    let report = setup.verify(&[]);
    assert!(
        String::from_utf8_lossy(&report.stdout).contains(", new privileges allowed"),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );
}

#[test]
fn a_root_command_is_said_recorded_and_fails_verify_unless_allowed() {
    let setup = require!(Setup::new());
    let output = setup.run(
        &["--run-as", "root"],
        "cat key.pem > /dev/null && id -u > uid",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("runs as ROOT"),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.read("uid").trim(), "0");
    let identity = setup.identity();
    assert_eq!(identity["root"], true);
    assert_eq!(identity["uid"], 0);
    assert_eq!(identity["keyreadable"], true);
    let refused = setup.verify(&[]);
    assert_eq!(refused.status.code(), Some(7), "{}", stderr(&refused));
    let report = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(
        report.contains("command ran as ROOT root (uid 0"),
        "{report}"
    );
    assert!(
        stderr(&refused).contains("--allow-root-command"),
        "{}",
        stderr(&refused)
    );
    let allowed = setup.verify(&["--allow-root-command"]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
}

#[test]
fn a_key_the_command_could_read_is_refused_before_it_starts() {
    let setup = require!(Setup::new());
    let key = setup.path().join("key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = setup.run(&[], "touch ran");
    let error = stderr(&output);
    assert_eq!(output.status.code(), Some(125), "{error}");
    assert!(
        error.contains("(reason: key-readable-by-command)"),
        "{error}"
    );
    assert!(error.contains("mode 0600"), "{error}");
    assert!(!setup.path().join("ran").exists());

    // The probe asks the kernel, not the mode bits: a readable key in a directory the user
    // cannot enter is out of reach.
    let vault = tempfile::tempdir().unwrap();
    std::fs::set_permissions(vault.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = vault.path().join("key.pem");
    std::fs::copy(&key, &hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hidden = hidden.display().to_string();
    let mut command = run_command(Path::new(BIN)).unwrap();
    let output = command
        .args([
            "--trace", "off", "-k", &hidden, "-o", "att.json", "--", "true",
        ])
        .current_dir(setup.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    // And an ACL granting the user read access is seen although the mode says 0600.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let acl = Command::new("setfacl")
        .args(["-m", &format!("u:{}:r", setup.user.name)])
        .arg(&key)
        .status()
        .expect("setfacl (cargo xtask setup installs acl)");
    assert!(acl.success());
    let output = setup.run(&[], "touch ran");
    assert_eq!(output.status.code(), Some(125), "{}", stderr(&output));
    assert!(!setup.path().join("ran").exists());
    assert!(Command::new("setfacl")
        .arg("-b")
        .arg(&key)
        .status()
        .unwrap()
        .success());

    // --allow-readable-key runs anyway, records it, and verify wants the same flag.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = setup.run(&["--allow-readable-key"], "cat key.pem > stolen");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--allow-readable-key"),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.identity()["keyreadable"], true);
    let refused = setup.verify(&[]);
    assert_eq!(refused.status.code(), Some(7), "{}", stderr(&refused));
    let allowed = setup.verify(&["--allow-readable-key"]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
}

#[test]
fn the_command_cannot_read_a_root_only_key_or_passphrase() {
    let setup = require!(Setup::new());
    std::fs::write(setup.path().join("pass"), "unused\n").unwrap();
    std::fs::set_permissions(
        setup.path().join("pass"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let output = setup.run(
        &["--signer-file-key-passphrase-path", "pass"],
        "cat key.pem > stolen 2> key.err; cat pass >> stolen 2> pass.err; true",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(setup.read("stolen"), "");
    assert!(setup.read("key.err").contains("Permission denied"));
    assert!(setup.read("pass.err").contains("Permission denied"));
}

/// `oci-attest doctor` as the tests start `run` (root, the test user as sudo's invoker).
fn doctor(setup: &Setup, options: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    oci_attest_tests::oci_attest::invoked_by_test_user(&mut command).unwrap();
    command
        .arg("doctor")
        .args(options)
        .current_dir(setup.path())
        .output()
        .expect("run oci-attest doctor")
}

#[test]
fn doctor_shows_whom_run_would_run_the_command_as_and_whether_it_can_read_the_key() {
    let setup = require!(Setup::new());
    let user = &setup.user;
    let report = doctor(&setup, &["--json", "-k", "key.pem"]);
    assert!(report.status.success(), "{}", stderr(&report));
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    let command = &report["command"];
    assert_eq!(command["identity"]["user"], user.name.as_str(), "{command}");
    assert_eq!(command["identity"]["uid"], user.uid);
    assert_eq!(command["identity"]["source"], "sudo");
    assert_eq!(command["dockerGroup"], Value::Null);
    assert_eq!(command["files"][0]["path"], "key.pem");
    assert_eq!(command["files"][0]["readableByCommand"], false, "{command}");

    std::fs::set_permissions(
        setup.path().join("key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let text = doctor(&setup, &["-k", "key.pem"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "command runs as   {} (uid {}, gid {}, groups {}): the user who invoked sudo",
            user.name, user.uid, user.gid, user.gid
        )),
        "{text}"
    );
    assert!(
        text.contains("key.pem: READABLE by the command: run refuses it"),
        "{text}"
    );

    // Without sudo's variables or --run-as, run would refuse; doctor says so and why.
    let refused = Command::new(BIN)
        .args(["doctor", "--json"])
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .output()
        .unwrap();
    let refused: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(
        refused["command"]["refused"]
            .as_str()
            .is_some_and(|why| why.contains("--run-as")),
        "{}",
        refused["command"]
    );
}

/// The docker group is root-equivalent: `doctor` and `run` say so when the command's identity
/// is in it (`cargo xtask setup` creates the group; the test user joins it through --run-as).
#[test]
fn doctor_and_run_warn_about_the_docker_group() {
    let setup = require!(Setup::new());
    let docker = nix::unistd::Group::from_name("docker")
        .unwrap()
        .expect("a docker group (cargo xtask setup creates it)")
        .gid
        .as_raw();
    let run_as = format!("{}:docker", setup.user.name);
    let report = doctor(&setup, &["--json", "--run-as", &run_as]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(
        report["command"]["dockerGroup"], docker,
        "{}",
        report["command"]
    );
    let text = doctor(&setup, &["--run-as", &run_as]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "WARNING: in the docker group (gid {docker}), which is root-equivalent"
        )),
        "{text}"
    );
    let output = setup.run(&["--run-as", &run_as], "true");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!(
            "is in the docker group (gid {docker}), which is root-equivalent"
        )),
        "{}",
        stderr(&output)
    );
}
