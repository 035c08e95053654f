//! Output that never destroys anything, end to end with real tools: a redirected stdout is
//! refused before `podman save` starts, `-o` through a symlink, into a character device made by
//! `mknod`, through `/dev/stdout` and `-o -`, into a directory removed during the run, and from
//! concurrent runs sharing one `-o`; the `--json` summary apart from skopeo's progress lines.

use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE};
use oci_attest_tests::oci_attest::stderr;
use oci_attest_tests::storage::ContainersStorage;
use oci_attest_tests::{oci_attest, require};
use serde_json::Value;

/// A key pair in `dir` (`key.pem`, `key.pem.pub`).
fn keygen(dir: &Path) -> anyhow::Result<PathBuf> {
    let key = dir.join("key.pem");
    let output = oci_attest::output([Path::new("keygen"), Path::new("--out"), key.as_path()])?;
    anyhow::ensure!(output.status.success(), "keygen: {}", stderr(&output));
    Ok(key)
}

/// The docker-archive fixture written by skopeo, as the input of a real `skopeo copy`.
fn source_archive() -> anyhow::Result<PathBuf> {
    let fixtures = Fixtures::from_env()?;
    Ok(fixtures.path(fixtures.get(APP_ARCHIVE)?))
}

/// `oci-attest run --trace off -k KEY -o OUT OPTIONS -- skopeo copy [--quiet]
/// docker-archive:SRC oci-archive:DEST` in `dir`.
fn skopeo_run(
    dir: &Path,
    key: &Path,
    out: &Path,
    options: &[&str],
    quiet: bool,
    source: &Path,
    dest: &str,
) -> Command {
    let mut command = oci_attest::run().expect("checked by user_dir");
    command
        .current_dir(dir)
        .args(["--trace", "off", "-k"])
        .arg(key)
        .arg("-o")
        .arg(out)
        .args(options)
        .args(["--", "skopeo", "copy"])
        .args(quiet.then_some("--quiet"))
        .arg(format!("docker-archive:{}", source.display()))
        .arg(format!("oci-archive:{dest}"))
        .stdin(Stdio::null());
    command
}

/// `oci-attest run -k KEY -o OUT -- skopeo copy --quiet docker-archive:SRC oci-archive:DEST`.
fn skopeo_copy_run(dir: &Path, key: &Path, out: &Path, source: &Path, dest: &str) -> Command {
    skopeo_run(dir, key, out, &[], true, source, dest)
}

fn verify(dir: &Path, key: &Path, envelope: &Path) -> Output {
    oci_attest::command()
        .unwrap()
        .current_dir(dir)
        .args(["verify", "--allow-untraced", "--key"])
        .arg(key.with_extension("pem.pub"))
        .arg(envelope)
        .output()
        .unwrap()
}

fn statement(envelope: &[u8]) -> Value {
    let envelope: Value = serde_json::from_slice(envelope).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The classic mistake: `run -- podman save IMG > img.tar`. The envelope would land inside the
/// archive, so the run is refused before podman starts (podman never creates its storage).
#[test]
fn redirected_stdout_is_refused_before_podman_save_starts() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    let storage = ContainersStorage::create(&d.join("storage")).unwrap();
    std::fs::remove_dir_all(storage.root.join("graph")).unwrap();
    let archive = std::fs::File::create(d.join("img.tar")).unwrap();
    let output = oci_attest::run()
        .unwrap()
        .current_dir(d)
        .envs(storage.env())
        .args(["--trace", "off", "-k"])
        .arg(&key)
        .args(["--", "podman", "save", "localhost/fx/app:1"])
        .stdout(archive)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("pass -o/--outfile"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert_eq!(std::fs::metadata(d.join("img.tar")).unwrap().len(), 0);
    assert!(
        !storage.root.join("graph").exists(),
        "podman ran although the run was refused"
    );
}

/// `-o link.json` where link.json → real/att.json: the target gets the envelope, the link stays.
#[test]
fn symlinked_outfile_is_written_through() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    let source = require!(source_archive());
    std::fs::create_dir(d.join("real")).unwrap();
    std::fs::write(d.join("real/att.json"), "previous").unwrap();
    symlink("real/att.json", d.join("link.json")).unwrap();
    let output = skopeo_copy_run(d, &key, Path::new("link.json"), &source, "img.oci.tar")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::symlink_metadata(d.join("link.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    let verified = verify(d, &key, Path::new("link.json"));
    assert!(verified.status.success(), "{}", stderr(&verified));
    let statement = statement(&std::fs::read(d.join("real/att.json")).unwrap());
    let products: Vec<&str> = statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "https://aflock.ai/attestations/product/v0.3")
        .flat_map(|a| a["attestation"]["leaves"].as_array().unwrap())
        .map(|leaf| leaf["path"].as_str().unwrap())
        .collect();
    assert_eq!(products, ["img.oci.tar"], "the outfile is not a product");
}

/// `-o NULL` where NULL is a scratch character device (major 1, minor 3, like /dev/null) made
/// by `mknod`: it stays a device, and the run succeeds.
#[test]
fn character_device_outfile_is_written_in_place() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    let source = require!(source_archive());
    let made = Command::new("mknod")
        .arg(d.join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    require!(if made.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("mknod needs root"))
    });
    let output = skopeo_copy_run(d, &key, &d.join("null"), &source, "img.oci.tar")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let kind = std::fs::symlink_metadata(d.join("null"))
        .unwrap()
        .file_type();
    assert!(kind.is_char_device(), "{kind:?}");
    assert!(d.join("img.oci.tar").is_file());
}

/// `-o /dev/stdout` is an explicit choice: the envelope goes to the (redirected) stdout.
#[test]
fn dev_stdout_outfile_is_written_to_the_inherited_descriptor() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    let source = require!(source_archive());
    let output = skopeo_copy_run(d, &key, Path::new("/dev/stdout"), &source, "img.oci.tar")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::write(d.join("att.json"), &output.stdout).unwrap();
    let verified = verify(d, &key, Path::new("att.json"));
    assert!(verified.status.success(), "{}", stderr(&verified));
}

/// The command removes the outfile's directory: the envelope lands in the working directory
/// and the path is printed, also with `--quiet`.
#[test]
fn vanished_outfile_directory_falls_back_to_the_working_dir() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    std::fs::create_dir(d.join("out")).unwrap();
    let output = oci_attest::run()
        .unwrap()
        .current_dir(d)
        .args(["--quiet", "--trace", "off", "-k"])
        .arg(&key)
        .args(["-o", "out/att.json", "--", "rm", "-r", "out"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let fallback: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".fallback"))
        .collect();
    assert_eq!(fallback.len(), 1, "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&*fallback[0].to_string_lossy()),
        "{}",
        stderr(&output)
    );
    let verified = verify(d, &key, &fallback[0]);
    assert!(verified.status.success(), "{}", stderr(&verified));
}

/// Four runs race to the same `-o`: all succeed and what is left is one complete envelope.
#[test]
fn concurrent_runs_with_one_outfile_leave_a_complete_envelope() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    let source = require!(source_archive());
    let children: Vec<_> = (0..4)
        .map(|index| {
            skopeo_copy_run(
                d,
                &key,
                Path::new("att.json"),
                &source,
                &format!("img{index}.oci.tar"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let verified = verify(d, &key, Path::new("att.json"));
    assert!(verified.status.success(), "{}", stderr(&verified));
    let leftovers: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `-o -` is the explicit choice of stdout, whatever stdout is (here a pipe).
#[test]
fn dash_outfile_writes_the_envelope_to_stdout() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    let source = require!(source_archive());
    let output = skopeo_copy_run(d, &key, Path::new("-"), &source, "img.oci.tar")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::write(d.join("att.json"), &output.stdout).unwrap();
    let verified = verify(d, &key, Path::new("att.json"));
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(!d.join("-").exists());
}

/// A real `skopeo copy` printing its progress ("Copying blob ...") on stdout: with `--json`
/// stdout holds the summary alone and skopeo's lines are on stderr; with `--json-out FILE`
/// skopeo's lines stay on stdout untouched and the summary is in the file. A summary consumer
/// (`| jq`) parses both.
#[test]
fn json_summary_never_shares_stdout_with_skopeo_progress() {
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let key = require!(keygen(d));
    let source = require!(source_archive());
    let progress = "Copying blob";

    let output = skopeo_run(
        d,
        &key,
        Path::new("a.json"),
        &["--json"],
        false,
        &source,
        "a.tar",
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["products"], serde_json::json!(["a.tar"]));
    assert_eq!(summary["exitcode"], 0);
    assert!(stderr(&output).contains(progress), "{}", stderr(&output));

    let output = skopeo_run(
        d,
        &key,
        Path::new("b.json"),
        &["--json-out", "summary.json"],
        false,
        &source,
        "b.tar",
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(stdout.contains(progress), "{stdout}");
    assert!(
        stdout.lines().all(|line| !line.starts_with('{')),
        "{stdout}"
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["products"], serde_json::json!(["b.tar"]));
    assert_eq!(summary["outfile"], "b.json");
    for envelope in ["a.json", "b.json"] {
        let verified = verify(d, &key, Path::new(envelope));
        assert!(verified.status.success(), "{}", stderr(&verified));
    }
}
