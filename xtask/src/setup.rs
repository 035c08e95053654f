//! `cargo xtask setup`: everything the build and the tests need, installed idempotently.
//! Prints one line per action taken (one line in all when nothing was missing) and fails with
//! the step and the reason when something cannot be installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};
use oci_attest_tests::command::{self, describe, stdout_of};
use oci_attest_tests::paths;

/// Debian packages the build, the fixtures, the end-to-end tests and the benchmarks use.
const APT_PACKAGES: &[&str] = &[
    "skopeo",
    "podman",
    "buildah",
    "umoci",
    "busybox-static",
    "runc",
    "containerd",
    "docker-registry",
    "curl",
    "pigz",
    "zstd",
    "jq",
    "hyperfine",
    "strace",
    "python3-venv",
    "make",
    "openssl",
    "time",
    "acl",
    // The static release build (`cargo xtask dist`): musl-gcc for the C in ring, aws-lc, zstd.
    "musl-tools",
    // The release's container image carries the CA bundle.
    "ca-certificates",
    // The action and GitLab template tests run `sudo -E oci-attest run` as a CI job user; the
    // isolation attacks try sudo, su, prlimit and a file-capability helper (setcap) inside it.
    "sudo",
    "util-linux",
    "libcap2-bin",
    // newuidmap/newgidmap: the setuid helpers rootless podman and buildah need.
    "uidmap",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-cyclonedx (CycloneDX, OWASP) writes the release's SBOM from the crate graph.
const CARGO_CYCLONEDX_VERSION: &str = "0.5.9";

/// PyPI packages of the independent checks: securesystemslib for DSSE (`crypto` pulls in
/// `cryptography` for the key types), in-toto-attestation for Statement v1, SLSA provenance and
/// VSAs, rfc3161-client for timestamp tokens (tests/python/).
const PYTHON_PACKAGES: &[&str] = &[
    "securesystemslib[crypto]",
    "in-toto-attestation==0.9.3",
    "rfc3161-client==1.0.9",
];

/// A set-up step: `Ok(Some(what it did))`, or `Ok(None)` when there was nothing to do.
type Step = fn() -> anyhow::Result<Option<String>>;

pub fn run() -> anyhow::Result<()> {
    let mut actions = Vec::new();
    let steps: [(&str, Step); 10] = [
        ("Debian packages", apt_packages),
        ("rust-src for nightly", rust_src),
        ("musl target", musl_target),
        ("bpf-linker", bpf_linker),
        ("tracefs", tracefs),
        ("docker.io (unpacked)", docker),
        ("python venv", python_venv),
        ("test user", test_user),
        ("cargo-cyclonedx", cargo_cyclonedx),
        ("CI job user", ci_job_user),
    ];
    for (name, step) in steps {
        if let Some(action) = step().with_context(|| format!("setup step `{name}` failed"))? {
            println!("setup: {action}");
            actions.push(action);
        }
    }
    if actions.is_empty() {
        println!("setup: everything present");
    }
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn require_root(what: &str) -> anyhow::Result<()> {
    ensure!(
        is_root(),
        "{what} needs root (run `sudo cargo xtask setup`)"
    );
    Ok(())
}

/// Runs a command with inherited output (long installs show their progress), failing loudly.
pub fn run_visible(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    ensure!(
        status.success(),
        "`{}` failed ({status})",
        describe(command)
    );
    Ok(())
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn apt_packages() -> anyhow::Result<Option<String>> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .map_or(true, |status| status != "install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    require_root(&format!("installing {}", missing.join(" ")))?;
    run_visible(apt_get().args(["update", "-qq"]))?;
    run_visible(
        apt_get()
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(Some(format!("installed {}", missing.join(" "))))
}

fn rust_src() -> anyhow::Result<Option<String>> {
    let installed = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("the nightly toolchain is required for the eBPF crate")?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(None);
    }
    run_visible(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    Ok(Some("added rust-src to the nightly toolchain".to_owned()))
}

/// The release binary's target: static, no glibc (`cargo xtask dist`).
fn musl_target() -> anyhow::Result<Option<String>> {
    let target = crate::dist::TARGET;
    let installed = stdout_of(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == target) {
        return Ok(None);
    }
    run_visible(Command::new("rustup").args(["target", "add", target]))?;
    Ok(Some(format!("added the {target} target")))
}

fn cargo_cyclonedx() -> anyhow::Result<Option<String>> {
    let tools = paths::tools_dir();
    let binary = tools.join("bin/cargo-cyclonedx");
    let works = || {
        stdout_of(Command::new(&binary).args(["cyclonedx", "--version"]))
            .is_ok_and(|version| version.ends_with(CARGO_CYCLONEDX_VERSION))
    };
    if works() {
        return Ok(None);
    }
    println!("setup: building cargo-cyclonedx {CARGO_CYCLONEDX_VERSION} (about a minute)");
    run_visible(
        Command::new("cargo")
            // Unoptimised: it reads one Cargo.lock per release, and builds in half the time.
            .args([
                "install",
                "cargo-cyclonedx",
                "--locked",
                "--quiet",
                "--debug",
            ])
            .args(["--version", CARGO_CYCLONEDX_VERSION])
            .arg("--root")
            .arg(&tools)
            // Outside the workspace, so its cargo config and target dir stay out of the way.
            .current_dir(&tools),
    )?;
    ensure!(
        works(),
        "{} was installed but does not run",
        binary.display()
    );
    Ok(Some(format!(
        "built cargo-cyclonedx {CARGO_CYCLONEDX_VERSION} into {}",
        binary.display()
    )))
}

/// The CI job user of the action and template tests, with a home and a sudoers rule like a CI runner's (`NOPASSWD`, `SETENV` for
/// `sudo -E`).
fn ci_job_user() -> anyhow::Result<Option<String>> {
    use oci_attest_tests::release::CI_JOB_USER;
    let sudoers = Path::new("/etc/sudoers.d/oci-attest-ci");
    let rule = format!("{CI_JOB_USER} ALL=(ALL) NOPASSWD:SETENV: ALL\n");
    let exists = nix::unistd::User::from_name(CI_JOB_USER)?.is_some();
    if exists && std::fs::read_to_string(sudoers).is_ok_and(|text| text == rule) {
        return Ok(None);
    }
    require_root(&format!("creating the CI job user {CI_JOB_USER}"))?;
    if !exists {
        command::run(Command::new("useradd").args([
            "--create-home",
            "--shell",
            "/bin/bash",
            CI_JOB_USER,
        ]))?;
    }
    let staged = sudoers.with_extension("new");
    std::fs::write(&staged, &rule).with_context(|| format!("cannot write {}", staged.display()))?;
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o440))?;
    command::run(Command::new("visudo").arg("-cf").arg(&staged))?;
    std::fs::rename(&staged, sudoers)
        .with_context(|| format!("cannot install {}", sudoers.display()))?;
    Ok(Some(format!(
        "CI job user {CI_JOB_USER} with passwordless sudo ({})",
        sudoers.display()
    )))
}

fn bpf_linker_works(binary: &Path) -> bool {
    command::run(Command::new(binary).arg("--version")).is_ok()
}

/// bpf-linker built against the nightly toolchain's own libLLVM (Debian's LLVM is too old):
/// a project-local prefix of two symlinks stands in for an LLVM install (docs/build.md).
fn bpf_linker() -> anyhow::Result<Option<String>> {
    let tools = paths::tools_dir();
    let binary = tools.join("bin/bpf-linker");
    if bpf_linker_works(&binary) {
        return Ok(None);
    }
    let sysroot = PathBuf::from(stdout_of(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
    )?);
    let version = stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_major = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|llvm| llvm.split('.').next())
        .with_context(|| format!("no LLVM version in `rustc +nightly -vV`:\n{version}"))?;
    let sysroot_lib = sysroot.join("lib");
    let llvm_so = std::fs::read_dir(&sysroot_lib)
        .with_context(|| format!("cannot list {}", sysroot_lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", sysroot_lib.display()))?;
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    for link in ["libLLVM.so", llvm_so.as_str()] {
        let link = prefix_lib.join(link);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)
                .with_context(|| format!("cannot replace {}", link.display()))?;
        }
        std::os::unix::fs::symlink(sysroot_lib.join(&llvm_so), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} (about 2 minutes)");
    run_visible(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
            ])
            .arg("--features")
            .arg(format!("llvm-{llvm_major}"))
            .arg("--root")
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix)
            // Outside the workspace, so its cargo config and target dir stay out of the way.
            .current_dir(&tools),
    )?;
    ensure!(
        bpf_linker_works(&binary),
        "{} was installed but `--version` fails",
        binary.display()
    );
    Ok(Some(format!(
        "built bpf-linker {BPF_LINKER_VERSION} into {}",
        binary.display()
    )))
}

fn tracefs() -> anyhow::Result<Option<String>> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if command::run(Command::new("mountpoint").args(["-q", TRACEFS])).is_ok() {
        return Ok(None);
    }
    require_root("mounting tracefs")?;
    command::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
    Ok(Some(format!("mounted tracefs on {TRACEFS}")))
}

/// Debian's docker.io conflicts with podman-docker, so it is unpacked into `.tools/docker`
/// rather than installed; the tests start its dockerd on private sockets.
fn docker() -> anyhow::Result<Option<String>> {
    let client_works = command::run(Command::new(paths::docker_client()).arg("--version")).is_ok();
    if client_works && paths::dockerd().is_file() {
        return Ok(None);
    }
    let download = tempfile::tempdir().context("cannot create a temp dir")?;
    let fetch = || {
        command::run(
            apt_get()
                .args([
                    "download",
                    "-qq",
                    "-o",
                    "APT::Sandbox::User=root",
                    "docker.io",
                ])
                .current_dir(download.path()),
        )
    };
    if fetch().is_err() {
        require_root("apt-get update")?;
        run_visible(apt_get().args(["update", "-qq"]))?;
        fetch()?;
    }
    let package = std::fs::read_dir(download.path())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("apt-get download docker.io wrote no .deb")?;
    let target = paths::docker_root();
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    command::run(Command::new("dpkg").arg("-x").arg(&package).arg(&target))?;
    let version = stdout_of(Command::new(paths::dockerd()).arg("--version"))?;
    Ok(Some(format!(
        "unpacked {version} into {}",
        target.display()
    )))
}

fn python_venv() -> anyhow::Result<Option<String>> {
    let python = paths::venv_python();
    let import_check =
        "import securesystemslib.signer, in_toto_attestation.v1.statement, rfc3161_client";
    if command::run(Command::new(&python).args(["-c", import_check])).is_ok() {
        return Ok(None);
    }
    let venv = paths::tools_dir().join("venv");
    // Debian's python (python3-venv), not whatever python3 comes first on PATH.
    let system_python = Path::new("/usr/bin/python3");
    if !system_python.is_file() {
        bail!(
            "{} is missing (apt-get install python3-venv)",
            system_python.display()
        );
    }
    if !python.is_file() {
        command::run(Command::new(system_python).args(["-m", "venv"]).arg(&venv))?;
    }
    run_visible(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
    )?;
    command::run(Command::new(&python).args(["-c", import_check]))?;
    Ok(Some(format!(
        "created {} with {}",
        venv.display(),
        PYTHON_PACKAGES.join(" ")
    )))
}

/// First id of the subordinate ranges given to the test user when useradd gave none.
const SUBORDINATE_START: u32 = 100_000;
/// Size of the subordinate uid and gid ranges (rootless podman maps 65536 ids).
const SUBORDINATE_COUNT: u32 = 65_536;

/// The unprivileged user the tests run commands as (oci_attest_tests::oci_attest::TEST_USER),
/// with a home and subordinate uid/gid ranges for rootless podman and buildah; a `docker`
/// group (the test user is not in it: the tests that need it say `--run-as USER:docker`); and
/// a second user in that group (`DOCKER_USER`), whom the docker tests run `docker save` as.
fn test_user() -> anyhow::Result<Option<String>> {
    let name = oci_attest_tests::oci_attest::TEST_USER;
    let mut actions = Vec::new();
    if nix::unistd::Group::from_name("docker")?.is_none() {
        require_root("creating the docker group")?;
        command::run(Command::new("groupadd").args(["--system", "docker"]))?;
        actions.push("created group docker".to_owned());
    }
    let docker_user = oci_attest_tests::oci_attest::DOCKER_USER;
    let in_docker_group = nix::unistd::Group::from_name("docker")?
        .is_some_and(|group| group.mem.iter().any(|member| member == docker_user));
    if nix::unistd::User::from_name(docker_user)?.is_none() {
        require_root(&format!("creating the docker user {docker_user}"))?;
        command::run(Command::new("useradd").args([
            "--create-home",
            "--shell",
            "/bin/sh",
            "--groups",
            "docker",
            docker_user,
        ]))?;
        actions.push(format!("created user {docker_user} in group docker"));
    } else if !in_docker_group {
        require_root(&format!("adding {docker_user} to group docker"))?;
        command::run(Command::new("usermod").args([
            "--append",
            "--groups",
            "docker",
            docker_user,
        ]))?;
        actions.push(format!("added {docker_user} to group docker"));
    }
    if nix::unistd::User::from_name(name)?.is_none() {
        require_root(&format!("creating the test user {name}"))?;
        command::run(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", name]))?;
        actions.push(format!("created user {name}"));
    }
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        let ranges = std::fs::read_to_string(file).unwrap_or_default();
        if ranges
            .lines()
            .any(|line| line.split(':').next() == Some(name))
        {
            continue;
        }
        require_root(&format!("giving {name} subordinate ids in {file}"))?;
        // After every range already given, so none overlaps.
        let start = ranges
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':').skip(1);
                let first: u32 = fields.next()?.parse().ok()?;
                let count: u32 = fields.next()?.parse().ok()?;
                first.checked_add(count)
            })
            .max()
            .unwrap_or(SUBORDINATE_START)
            .max(SUBORDINATE_START);
        let range = format!("{start}-{}", start + SUBORDINATE_COUNT - 1);
        command::run(Command::new("usermod").args([flag, &range, name]))?;
        actions.push(format!("{file}: {name} {range}"));
    }
    Ok((!actions.is_empty()).then(|| actions.join("; ")))
}
