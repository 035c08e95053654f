//! The release `cargo xtask dist` writes: a static binary that needs no libc (it runs in a
//! chroot holding nothing but itself and busybox, and traces from there), a release directory
//! whose checksums, tarball, license, SBOM and self-attestation check out, and a container image
//! that podman runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};
use base64::Engine as _;
use object::read::elf::{Dyn as _, ElfFile64, FileHeader as _, ProgramHeader as _};
use object::Endianness;
use oci_attest_tests::command::{output_text, run, sh, sha256sum, stdout_of};
use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE};
use oci_attest_tests::release::{Release, TARGET};
use oci_attest_tests::storage::ContainersStorage;
use oci_attest_tests::{oci_attest, paths, require, root};
use serde_json::Value;

#[test]
fn release_binary_has_no_interpreter_and_no_shared_libraries() {
    let release = require!(Release::from_env());
    let data = std::fs::read(release.binary()).expect("reading the release binary");
    let elf = ElfFile64::<Endianness>::parse(data.as_slice()).expect("an ELF64 file");
    let endian = elf.endian();
    let segments = elf
        .elf_header()
        .program_headers(endian, data.as_slice())
        .expect("program headers");
    assert!(!segments.is_empty());
    assert!(
        segments
            .iter()
            .all(|segment| segment.p_type(endian) != object::elf::PT_INTERP),
        "the release binary asks for a program interpreter (PT_INTERP): it is not static"
    );
    let sections = elf.elf_section_table();
    if let Some((dynamic, index)) = sections
        .dynamic(endian, data.as_slice())
        .expect("reading the dynamic section")
    {
        let needed = dynamic
            .iter()
            .filter(|entry| i64::from(entry.tag32(endian).unwrap_or(-1)) == object::elf::DT_NEEDED)
            .count();
        assert_eq!(
            needed, 0,
            "the release binary needs {needed} shared libraries (dynamic section {index:?})"
        );
    }
    // The same verdict from file(1), which users run.
    let described = stdout_of(Command::new("file").arg("-b").arg(release.binary()))
        .expect("file(1) on the release binary");
    assert!(
        described.contains("statically linked") || described.contains("static-pie linked"),
        "{described}"
    );
    assert!(described.contains("x86-64"), "{described}");
}

/// A root directory holding only the release binary and busybox-static (`/bin`), `/tmp`, and
/// mount points for `/proc` and `/sys`; no libc, no loader.
struct BareRoot {
    dir: tempfile::TempDir,
}

impl BareRoot {
    fn new(release: &Release) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("oci-attest-chroot.")
            .tempdir()?;
        let root = dir.path();
        for sub in ["bin", "proc", "sys", "tmp", "work"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::copy(release.binary(), root.join("bin/oci-attest"))?;
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .context("busybox-static is missing (cargo xtask setup installs it)")?;
        for applet in ["sh", "true", "echo", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        let bare = BareRoot { dir };
        let mut files = bare.files()?;
        files.sort();
        ensure!(
            files
                == [
                    "bin/busybox",
                    "bin/cat",
                    "bin/echo",
                    "bin/oci-attest",
                    "bin/sh",
                    "bin/true"
                ],
            "the chroot holds more than busybox and oci-attest: {files:?}"
        );
        Ok(bare)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every non-directory under the root, relative.
    fn files(&self) -> anyhow::Result<Vec<String>> {
        let mut found = Vec::new();
        let mut pending = vec![self.path().to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.symlink_metadata()?.is_dir() {
                    pending.push(path);
                } else {
                    found.push(
                        path.strip_prefix(self.path())?
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        Ok(found)
    }

    /// `/bin/oci-attest ARGS` inside the root, in a private mount namespace with `/proc` and
    /// `/sys` (BTF, tracefs) mounted, as the kernel programs need; the mounts end with it.
    fn oci_attest(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let script = r#"root="$1"; shift
            mount -t proc proc "$root/proc"
            mount --rbind /sys "$root/sys"
            exec chroot "$root" /bin/oci-attest "$@""#;
        let output = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(self.path())
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .context("cannot start unshare")?;
        Ok(output)
    }
}

#[test]
fn release_binary_runs_inspect_and_doctor_in_a_chroot_without_libc() {
    require!(root());
    let release = require!(Release::from_env());
    let fixtures = require!(Fixtures::from_env());
    let archive = fixtures.path(require!(fixtures.get(APP_ARCHIVE)));
    let bare = BareRoot::new(&release).expect("making the chroot");

    let version = bare.oci_attest(&["--version"]).unwrap();
    assert!(version.status.success(), "{}", output_text(&version));
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(&format!("target: {TARGET} (statically linked)")),
        "{version}"
    );

    std::fs::copy(&archive, bare.path().join("work/app.tar")).unwrap();
    let inspected = bare
        .oci_attest(&["inspect", "--json", "/work/app.tar"])
        .unwrap();
    assert!(inspected.status.success(), "{}", output_text(&inspected));
    let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    let expected = oci_attest::inspect_json(&archive).unwrap();
    assert_eq!(
        inspected, expected,
        "the static binary reads the archive differently"
    );

    let doctor = bare.oci_attest(&["doctor", "--json"]).unwrap();
    assert!(doctor.status.success(), "{}", output_text(&doctor));
    let doctor: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert_eq!(doctor["trace"]["available"], true, "{doctor:#}");
    assert_eq!(
        doctor["trace"]["selfTest"]["execObserved"], true,
        "{doctor:#}"
    );
    assert_eq!(doctor["trace"]["selfTest"]["lost"], 0, "{doctor:#}");
}

/// A run traced by the static binary: the trace sees the exec and the write. It runs on the
/// host, not in the bare root: the kernel programs build paths from the system's root, so a
/// traced program inside a chroot is reported under the host path of the chroot, which
/// oci-attest inside it cannot open (docs/tracing.md).
#[test]
fn release_binary_traces_a_run() {
    require!(root());
    let release = require!(Release::from_env());
    let work = require!(oci_attest::user_dir());
    let mut command = require!(oci_attest::run_command(&release.binary()));
    command
        .args(["--trace", "ebpf", "--unsigned", "-a", "command-run", "-o"])
        .arg(work.path().join("att.json"))
        .arg("--workingdir")
        .arg(work.path())
        .args(["--", "sh", "-c", "echo traced > written.txt"]);
    let traced = command.output().unwrap();
    assert!(traced.status.success(), "{}", output_text(&traced));
    let statement: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("att.json")).unwrap()).unwrap();
    let command_run = attestation(&statement, "command-run");
    assert_eq!(command_run["summary"]["trace"], "ebpf", "{command_run:#}");
    let execs: Vec<&Value> = command_run["processes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|process| process["execs"].as_array().into_iter().flatten())
        .collect();
    assert!(
        execs.iter().any(|exec| exec["argv"][0] == "sh"),
        "{command_run:#}"
    );
    let products = attestation(&statement, "product");
    assert!(
        products["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .any(|leaf| leaf["path"] == "written.txt"),
        "the traced write is no product: {products:#}"
    );
}

/// The predicate of the attestation whose type URI ends with `/NAME/v...`.
fn attestation<'a>(statement: &'a Value, name: &str) -> &'a Value {
    statement["predicate"]["attestations"]
        .as_array()
        .expect("a collection")
        .iter()
        .find(|entry| {
            entry["type"]
                .as_str()
                .is_some_and(|uri| uri.contains(&format!("/{name}/")))
        })
        .map(|entry| &entry["attestation"])
        .unwrap_or_else(|| panic!("no {name} attestation in {statement:#}"))
}

#[test]
fn release_directory_checksums_tarball_license_and_sbom_check_out() {
    let release = require!(Release::from_env());
    let checked = run(Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&release.dir))
    .expect("sha256sum --check SHA256SUMS");
    let listed: Vec<String> = String::from_utf8_lossy(&checked.stdout)
        .lines()
        .map(|line| line.trim_end_matches(": OK").to_owned())
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(&release.dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "SHA256SUMS")
        .collect();
    present.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, present, "SHA256SUMS must cover every file");

    let stem = release.stem();
    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(release.tarball())
        .arg("-C")
        .arg(unpacked.path()))
    .unwrap();
    let top = unpacked.path().join(&stem);
    assert_eq!(
        sha256sum(&top.join("oci-attest")).unwrap(),
        sha256sum(&release.binary()).unwrap()
    );
    let license = std::fs::read_to_string(paths::workspace_root().join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
    assert_eq!(
        std::fs::read_to_string(top.join("LICENSE")).unwrap(),
        license
    );
    assert_eq!(
        std::fs::read_to_string(release.file("LICENSE")).unwrap(),
        license
    );
    assert!(top.join("README.md").is_file());

    // The SBOM: CycloneDX from cargo-cyclonedx, with the crates Cargo.lock pins.
    let sbom_path = release.file(&format!("oci-attest-{}.cdx.json", release.version));
    let sbom: Value = serde_json::from_slice(&std::fs::read(&sbom_path).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(
        sbom["metadata"]["component"]["name"], "oci-attest",
        "{:#}",
        sbom["metadata"]
    );
    assert!(
        sbom["metadata"]["tools"]
            .to_string()
            .contains("cargo-cyclonedx"),
        "{:#}",
        sbom["metadata"]
    );
    let components: Vec<(String, String)> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|component| {
            (
                component["name"].as_str().unwrap_or_default().to_owned(),
                component["version"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let lock = std::fs::read_to_string(paths::workspace_root().join("Cargo.lock")).unwrap();
    for name in ["aya", "ring", "zstd-sys", "sha2", "regorus"] {
        let (_, version) = components
            .iter()
            .find(|(component, _)| component == name)
            .unwrap_or_else(|| panic!("the SBOM lists no {name}"));
        assert!(
            lock.contains(&format!("name = \"{name}\"\nversion = \"{version}\"")),
            "the SBOM's {name} {version} is not in Cargo.lock"
        );
    }
}

/// The statement inside a DSSE envelope.
fn payload(envelope: &Value) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().expect("a payload"))
        .expect("base64");
    serde_json::from_slice(&bytes).expect("a JSON statement")
}

#[test]
fn release_build_is_attested_by_oci_attest_and_names_the_binary() {
    let release = require!(Release::from_env());
    let envelope_path = release.file(&format!("oci-attest-{}-release.att.json", release.version));
    let public_key = release.file(&format!("oci-attest-{}-release.pub.pem", release.version));
    // The release build runs as root (`cargo xtask dist`: the toolchain is root's).
    let verified = oci_attest::output([
        Path::new("verify"),
        Path::new("--allow-root-command"),
        Path::new("--key"),
        &public_key,
        &envelope_path,
    ])
    .unwrap();
    assert!(verified.status.success(), "{}", output_text(&verified));

    let envelope: Value = serde_json::from_slice(&std::fs::read(&envelope_path).unwrap()).unwrap();
    let statement = payload(&envelope);
    let binary = sha256sum(&release.binary()).unwrap();
    let products = attestation(&statement, "product");
    assert!(
        products["leaves"].as_array().unwrap().iter().any(|leaf| {
            leaf["fileDigest"] == binary.as_str()
                && leaf["path"]
                    .as_str()
                    .is_some_and(|path| path.ends_with("/oci-attest"))
        }),
        "the release binary (sha256:{binary}) is no product: {products:#}"
    );
    let command_run = attestation(&statement, "command-run");
    let cmd = command_run["cmd"].to_string();
    assert!(
        cmd.contains("cargo") && cmd.contains(TARGET) && cmd.contains("--locked"),
        "{cmd}"
    );
    assert_eq!(command_run["exitcode"], 0);
    assert_eq!(
        command_run["summary"]["trace"], "ebpf",
        "{:#}",
        command_run["summary"]
    );
    assert_eq!(command_run["summary"]["lost"], 0);
    assert_eq!(
        command_run["summary"]["incomplete"],
        serde_json::json!([]),
        "{:#}",
        command_run["summary"]
    );
    // The trace saw cargo itself exec'd with the release target (what it compiled depends on
    // what was already built).
    let cargo_seen = command_run["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|process| {
            process["execs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|exec| {
                    let argv = exec["argv"].to_string();
                    exec["program"]
                        .as_str()
                        .is_some_and(|program| program.ends_with("/cargo"))
                        && argv.contains(TARGET)
                })
        });
    assert!(cargo_seen, "the trace did not see cargo build for {TARGET}");
    // The materials are the exported source tree: its Cargo.lock is the checkout's.
    let materials = attestation(&statement, "material");
    let lock = sha256sum(&paths::workspace_root().join("Cargo.lock")).unwrap();
    let leaves = materials["leaves"].as_array().expect("material leaves");
    assert!(
        leaves
            .iter()
            .any(|leaf| leaf["path"] == "Cargo.lock" && leaf["fileDigest"] == lock.as_str()),
        "no Cargo.lock with sha256:{lock} among {} materials",
        leaves.len()
    );
}

#[test]
fn release_version_names_the_commit_the_target_and_the_tracer() {
    let release = require!(Release::from_env());
    let version = stdout_of(Command::new(release.binary()).arg("--version")).unwrap();
    let subcommand = stdout_of(Command::new(release.binary()).arg("version")).unwrap();
    assert_eq!(version, subcommand, "--version and `version` differ");
    let head = sh("git -C \"$1\" rev-parse HEAD", [paths::workspace_root()]).unwrap();
    let lines: Vec<&str> = version.lines().collect();
    assert_eq!(
        lines[0],
        format!("oci-attest {}", release.version),
        "{version}"
    );
    assert!(
        lines[1] == format!("commit: {head}") || lines[1] == format!("commit: {head}-dirty"),
        "{version}"
    );
    assert_eq!(
        lines[2],
        format!("target: {TARGET} (statically linked)"),
        "{version}"
    );
    assert!(lines[3].starts_with("tracer: built in"), "{version}");
    assert!(
        lines[4].starts_with("kernel: Linux 5.17 or later"),
        "{version}"
    );
}

#[test]
fn release_image_runs_inspect_under_podman() {
    require!(root());
    let release = require!(Release::from_env());
    let fixtures = require!(Fixtures::from_env());
    let storage = require!(ContainersStorage::from_env());
    let archive = fixtures.path(require!(fixtures.get(APP_ARCHIVE)));
    let image_archive = release.file(&format!("oci-attest-{}-image.oci.tar", release.version));
    let image = format!("localhost/oci-attest:{}", release.version);

    // FROM scratch: one layer holding the binary and the CA bundle, nothing else.
    let layers = image_files(&image_archive).unwrap();
    assert_eq!(
        layers,
        [
            "etc/ssl/certs/ca-certificates.crt".to_owned(),
            "usr/local/bin/oci-attest".to_owned()
        ],
        "the image holds more than the binary and the CA bundle"
    );

    run(storage
        .command("podman")
        .args(["load", "--quiet", "--input"])
        .arg(&image_archive))
    .expect("podman load");
    let input = tempfile::tempdir().unwrap();
    std::fs::copy(&archive, input.path().join("app.tar")).unwrap();
    let mut podman = storage.command("podman");
    podman
        .args(["run", "--rm", "--network", "none", "--volume"])
        .arg(format!("{}:/in:ro", input.path().display()))
        .args([image.as_str(), "inspect", "--json", "/in/app.tar"]);
    let output = podman.output().unwrap();
    let _ = storage
        .command("podman")
        .args(["rmi", "--force", &image])
        .output();
    assert!(output.status.success(), "{}", output_text(&output));
    let inspected: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspected, oci_attest::inspect_json(&archive).unwrap());
}

/// The regular files of every layer of the OCI archive's image, sorted.
fn image_files(archive: &Path) -> anyhow::Result<Vec<String>> {
    let manifest: Value = serde_json::from_str(&stdout_of(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", archive.display())),
    )?)?;
    let mut files = Vec::new();
    for layer in manifest["layers"].as_array().context("no layers")? {
        let digest = layer["digest"].as_str().context("a layer without digest")?;
        let blob = PathBuf::from("blobs").join(digest.replace(':', "/"));
        let listing = sh(
            r#"tar -xOf "$1" "$2" | tar -tvz | awk '$1 ~ /^-/ {print $NF}'"#,
            [archive.as_os_str(), blob.as_os_str()],
        )?;
        files.extend(
            listing
                .lines()
                .map(|line| line.trim_start_matches("./").to_owned()),
        );
    }
    files.sort();
    Ok(files)
}
