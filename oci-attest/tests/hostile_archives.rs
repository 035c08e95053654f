//! Adversarial archives against the real `oci-attest inspect` binary.
//!
//! Every case writes a crafted archive to a temp dir, runs the binary under a deadline and a
//! memory measurement, and asserts the exit code (5 for analysis errors), a single stderr line
//! naming the file and the specific problem, no panic, no stdout. Each test also runs the
//! well-formed archive the hostile ones were derived from, which must pass: a reader that
//! rejected everything would otherwise pass this suite.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_attest_tests::archive::{
    self, config_json, descriptor, gzip, sample_text, sha256_hex, ustar_header, Archive, Member,
    OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Running the binary

/// The time bounds tell a hang from slow work (speed is `cargo xtask bench`'s). They count the
/// child's CPU time, not the wall clock: on a shared 2-core machine at load 40 a case that needs
/// 3 s of CPU takes a minute of wall time, and it is still no hang.
/// A runaway loop: more CPU than any case needs in a debug build, by far.
const CPU_BUDGET: Duration = Duration::from_secs(60);
/// A deadlock: not one tick of CPU for this long while alive (a runnable process always gets
/// some, however loaded the machine).
const STALL: Duration = Duration::from_secs(30);
/// A process that wakes only now and then forever: the last resort.
const WALL_BACKSTOP: Duration = Duration::from_secs(600);
/// What a well-behaved analysis may use (the reader keeps at most a few MiB per worker, plus
/// JSON documents capped at 64 MiB each). A child going past it is killed at once, which
/// also keeps a memory bomb from taking the test machine down.
const RSS_LIMIT_KIB: i64 = 512 * 1024;
const ANALYSIS_FAILED: i32 = 5;

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    max_rss_kib: i64,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "status {:?}, {:.1?}, max RSS {} MiB\nstderr: {}\nstdout: {}",
            self.status,
            self.elapsed,
            self.max_rss_kib / 1024,
            self.stderr,
            self.stdout.chars().take(400).collect::<String>()
        )
    }
}

/// Runs `oci-attest inspect --json ARGS...`, killing it when it hangs (see [`CPU_BUDGET`]) so
/// that a hang fails the test instead of stalling the suite.
fn inspect(args: &[&str], path: &Path) -> Outcome {
    let scratch = tempfile::tempdir().unwrap();
    let stdout_path = scratch.path().join("stdout");
    let stderr_path = scratch.path().join("stderr");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oci-attest"))
        .arg("inspect")
        .arg("--json")
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut max_rss_kib = 0;
    let mut cpu = Duration::ZERO;
    let mut last_progress = Instant::now();
    let status = loop {
        // The child's rusage would include the test process's own memory (the child is
        // spawned sharing it until exec), so sample the high-water mark of the exec'd image.
        max_rss_kib = max_rss_kib.max(peak_rss_kib(child.id()).unwrap_or(0));
        if let Some(used) = cpu_time(child.id()) {
            if used > cpu {
                cpu = used;
                last_progress = Instant::now();
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let problem = if cpu > CPU_BUDGET {
            format!("used more than {CPU_BUDGET:?} of CPU")
        } else if last_progress.elapsed() > STALL {
            format!("used no CPU for {STALL:?}: hung")
        } else if started.elapsed() > WALL_BACKSTOP {
            format!("did not finish within {WALL_BACKSTOP:?}")
        } else if max_rss_kib > RSS_LIMIT_KIB {
            format!("went past {} MiB of memory", RSS_LIMIT_KIB / 1024)
        } else {
            String::new()
        };
        if !problem.is_empty() {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "inspect {} {problem} (after {:.1?}, {cpu:.1?} of CPU, peak RSS {} MiB); \
                 stderr so far: {}",
                path.display(),
                started.elapsed(),
                max_rss_kib / 1024,
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Outcome {
        status,
        stdout: String::from_utf8_lossy(&std::fs::read(&stdout_path).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap()).into_owned(),
        elapsed: started.elapsed(),
        max_rss_kib,
    }
}

/// User plus system CPU time of a running process, all its threads; `None` once it has exited.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, utime and stime are fields 14 and 15 (proc(5)).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(Duration::from_secs_f64(
        ticks as f64 / per_second.max(1) as f64,
    ))
}

/// `VmHWM` of a running process; `None` once it has exited.
fn peak_rss_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Exit 5, nothing on stdout, and exactly one stderr line: the program prefix, the path, and
/// a message containing every one of `expected` (member name and what was wrong).
fn assert_rejected(outcome: &Outcome, path: &Path, expected: &[&str]) {
    let context = outcome.describe();
    assert!(!outcome.stderr.contains("panicked"), "{context}");
    assert_eq!(outcome.status.code(), Some(ANALYSIS_FAILED), "{context}");
    assert!(outcome.stdout.is_empty(), "partial output: {context}");
    let line = outcome
        .stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stderr does not end in a newline: {context}"));
    assert!(!line.contains('\n'), "more than one line: {context}");
    let prefix = format!("oci-attest: error: {}: ", path.display());
    assert!(line.starts_with(&prefix), "{prefix:?} missing: {context}");
    for needle in expected {
        assert!(line.contains(needle), "{needle:?} missing: {context}");
    }
    assert!(
        outcome.max_rss_kib < RSS_LIMIT_KIB,
        "used too much memory: {context}"
    );
}

fn assert_rejected_with(args: &[&str], path: &Path, expected: &[&str]) -> Outcome {
    let outcome = inspect(args, path);
    assert_rejected(&outcome, path, expected);
    outcome
}

fn assert_accepted_with(args: &[&str], path: &Path) -> Value {
    let outcome = inspect(args, path);
    let context = outcome.describe();
    assert_eq!(outcome.status.code(), Some(0), "{context}");
    assert!(outcome.stderr.is_empty(), "{context}");
    assert!(
        outcome.max_rss_kib < RSS_LIMIT_KIB,
        "used too much memory: {context}"
    );
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|error| panic!("{error}: {context}"))
}

fn assert_rejected_file(path: &Path, expected: &[&str]) {
    assert_rejected_with(&[], path, expected);
}

fn assert_accepted(path: &Path) -> Value {
    assert_accepted_with(&[], path)
}

// ---------------------------------------------------------------------------------------------
// Building archives

fn write_file(dir: &Path, file: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A real, small layer tar holding one file.
fn layer_tar(seed: u32) -> Vec<u8> {
    archive::layer_tar(&format!("usr/share/file{seed}"), &sample_text(30_000, seed))
}

/// The `docker save` shape: `layerN/layer.tar`, `<config hex>.json`, manifest.json last.
/// Layer 0 is gzip-compressed, layer 1 plain. The config's member name is `config_name()`.
struct DockerImage {
    archive: Archive,
    config_name: String,
    diff_ids: Vec<String>,
}

fn docker_image(tags: &[&str]) -> DockerImage {
    let plain = [layer_tar(1), layer_tar(2)];
    let diff_ids: Vec<String> = plain.iter().map(|layer| sha256_hex(layer)).collect();
    let stored = [gzip(&plain[0]), plain[1].clone()];
    let config = config_json(&diff_ids);
    let config_name = format!("{}.json", sha256_hex(&config));
    let mut archive = Archive::default();
    archive
        .file("layer0/layer.tar", stored[0].clone())
        .file("layer1/layer.tar", stored[1].clone())
        .file(config_name.clone(), config);
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": ["layer0/layer.tar", "layer1/layer.tar"],
    }]);
    archive.file("manifest.json", serde_json::to_vec(&manifest).unwrap());
    DockerImage {
        archive,
        config_name,
        diff_ids,
    }
}

fn well_formed() -> DockerImage {
    docker_image(&["app:1"])
}

fn with_manifest(image: &DockerImage, manifest: &Value) -> Archive {
    let mut archive = image.archive.clone();
    archive.replace("manifest.json", serde_json::to_vec(manifest).unwrap());
    archive
}

fn blob_name(bytes: &[u8]) -> String {
    format!("blobs/sha256/{}", sha256_hex(bytes))
}

/// An OCI image layout tar (`skopeo copy ... oci-archive:`) with one image, one gzip layer.
struct OciImage {
    archive: Archive,
    manifest: Vec<u8>,
    layer: Vec<u8>,
}

fn oci_image(tag: &str) -> OciImage {
    let plain = layer_tar(7);
    let layer = gzip(&plain);
    let config = config_json(&[sha256_hex(&plain)]);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER_GZIP, &layer)],
    }))
    .unwrap();
    let mut top = descriptor(OCI_MANIFEST, &manifest);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let mut archive = Archive::default();
    archive
        .file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#)
        .file(blob_name(&layer), layer.clone())
        .file(blob_name(&config), config)
        .file(blob_name(&manifest), manifest.clone());
    archive.file("index.json", index_json(vec![top]));
    OciImage {
        archive,
        manifest,
        layer,
    }
}

fn index_json(manifests: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Cases

#[test]
fn control_archives_pass_and_report_their_digests() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let path = image.archive.write(dir.path(), "docker.tar");
    let predicate = assert_accepted(&path);
    assert_eq!(
        predicate["tardigest"]["sha256"],
        sha256_hex(&std::fs::read(&path).unwrap())
    );
    let diff_ids: Vec<&str> = predicate["diffids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|set| set["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(diff_ids, image.diff_ids);
    assert_eq!(predicate["imagetags"], json!(["app:1"]));

    let oci = oci_image("x:1");
    let predicate = assert_accepted(&oci.archive.write(dir.path(), "oci.tar"));
    assert_eq!(predicate["format"], "oci-layout");
    assert_eq!(
        predicate["manifestdigest"]["sha256"],
        sha256_hex(&oci.manifest)
    );
    let gzipped = write_file(dir.path(), "docker.tar.gz", &gzip(&image.archive.tar()));
    assert_accepted(&gzipped);
}

#[test]
fn no_manifest_and_no_index() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let mut archive = image.archive.clone();
    archive.remove("manifest.json");
    let path = archive.write(dir.path(), "no-manifest.tar");
    assert_rejected_file(
        &path,
        &["neither manifest.json (docker-archive) nor index.json (OCI layout)"],
    );
    let mut oci = oci_image("x:1").archive;
    oci.remove("index.json");
    let path = oci.write(dir.path(), "oci-without-index.tar");
    assert_rejected_file(&path, &["neither manifest.json", "nor index.json"]);
}

#[test]
fn manifest_that_is_not_a_list_of_images() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let cases: [(&str, &[u8], &[&str]); 8] = [
        (
            "not-json",
            b"this is not json",
            &[r#"member "manifest.json" is not valid JSON"#],
        ),
        (
            "truncated-json",
            br#"[{"Config":"#,
            &[r#"member "manifest.json" is not valid JSON"#, "EOF"],
        ),
        ("empty-list", b"[]", &["manifest.json lists no images"]),
        (
            "null",
            b"null",
            &["manifest.json is null, not a list of images"],
        ),
        (
            "number",
            b"42",
            &["manifest.json is a number, not a list of images"],
        ),
        (
            "deep",
            deep.as_bytes(),
            &[
                r#"member "manifest.json" is not valid JSON"#,
                "recursion limit exceeded",
            ],
        ),
        (
            "entry-not-object",
            b"[\"a\"]",
            &["manifest.json entry 1: is a string, not an object"],
        ),
        (
            "layers-not-strings",
            b"[{\"Config\":\"c.json\",\"Layers\":[1]}]",
            &["manifest.json entry 1: Layers holds a number, not a string"],
        ),
    ];
    for (name, manifest, expected) in cases {
        let mut archive = image.archive.clone();
        archive.replace("manifest.json", manifest);
        let path = archive.write(dir.path(), &format!("{name}.tar"));
        assert_rejected_file(&path, expected);
    }
}

#[test]
fn oversized_manifest_is_refused_without_keeping_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let mut huge = b"[".to_vec();
    huge.resize((64 << 20) + 1, b' ');
    huge.push(b']');
    let mut archive = image.archive.clone();
    archive.replace("manifest.json", huge);
    let path = archive.write(dir.path(), "oversized.tar");
    let outcome = assert_rejected_with(
        &[],
        &path,
        &[r#"member "manifest.json" is larger than the 64 MiB allowed for a JSON document"#],
    );
    // Kept up to the cap and then dropped: well under two copies of it.
    assert!(outcome.max_rss_kib < 200 * 1024, "{}", outcome.describe());
}

#[test]
fn config_that_is_not_an_image_config() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("list", b"[]".to_vec(), "is not a JSON object"),
        ("garbage", b"{ nope".to_vec(), "is not valid JSON"),
        (
            "diff-ids-not-a-list",
            br#"{"rootfs":{"diff_ids":"sha256:00"}}"#.to_vec(),
            "rootfs.diff_ids is not a list",
        ),
        (
            "diff-id-not-sha256",
            br#"{"rootfs":{"diff_ids":["md5:00","sha256:00"]}}"#.to_vec(),
            "rootfs.diff_ids holds \"md5:00\", not a sha256 digest",
        ),
    ];
    for (name, config, problem) in cases {
        // Named by its own digest, so only the content is wrong.
        let config_name = format!("{}.json", sha256_hex(&config));
        let mut manifest = image.archive.json("manifest.json");
        manifest[0]["Config"] = json!(config_name);
        let mut archive = with_manifest(&image, &manifest);
        archive
            .remove(&image.config_name)
            .file(&config_name, config);
        let path = archive.write(dir.path(), &format!("{name}.tar"));
        assert_rejected_file(&path, &[&format!("{config_name:?}"), problem]);
    }
}

#[test]
fn missing_config_or_layer() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let mut archive = image.archive.clone();
    archive.remove(&image.config_name);
    let path = archive.write(dir.path(), "no-config.tar");
    assert_rejected_file(
        &path,
        &[&format!("member {:?} is missing", image.config_name)],
    );

    let mut archive = image.archive.clone();
    archive.remove("layer1/layer.tar");
    let path = archive.write(dir.path(), "no-layer.tar");
    assert_rejected_file(&path, &[r#"member "layer1/layer.tar" is missing"#]);
}

#[test]
fn truncated_archives() {
    let dir = tempfile::tempdir().unwrap();
    let tar = well_formed().archive.tar();
    assert_accepted(&write_file(dir.path(), "control.tar", &tar));
    // Member 1's header is at 0, its 8-ish KiB of gzip data follow; member 2's header after.
    let first_size = well_formed().archive.bytes("layer0/layer.tar").len();
    let second_header = 512 + first_size.div_ceil(512) * 512;

    let in_member = write_file(dir.path(), "in-member.tar", &tar[..512 + 1000]);
    assert_rejected_file(
        &in_member,
        &[
            r#"truncated archive: member "layer0/layer.tar" has 1000 of its"#,
            &format!("{first_size} bytes"),
        ],
    );
    let in_header = write_file(dir.path(), "in-header.tar", &tar[..second_header + 100]);
    assert_rejected_file(
        &in_header,
        &[r#"truncated or corrupt tar after member "layer0/layer.tar""#],
    );
    // A member cut exactly at a block boundary, then nothing: still truncated.
    let at_boundary = write_file(dir.path(), "at-boundary.tar", &tar[..second_header + 512]);
    assert_rejected_file(
        &at_boundary,
        &[r#"truncated archive: member "layer1/layer.tar" has 0 of its"#],
    );
    let gzipped = gzip(&tar);
    let gz_cut = write_file(dir.path(), "cut.tar.gz", &gzipped[..gzipped.len() / 2]);
    assert_rejected_file(
        &gz_cut,
        &[r#"cannot read member "layer0/layer.tar": incomplete deflate stream"#],
    );
}

#[test]
fn header_claiming_a_multi_gib_member_in_a_short_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = ustar_header("layer0/layer.tar", tar::EntryType::Regular, 8 << 30, "")
        .as_bytes()
        .to_vec();
    bytes.extend(sample_text(4096, 3));
    let path = write_file(dir.path(), "claims-8-gib.tar", &bytes);
    assert_rejected_file(
        &path,
        &[r#"truncated archive: member "layer0/layer.tar" has 4096 of its 8589934592 bytes"#],
    );
    // The same lie with the largest size the octal field holds, in the middle of an archive.
    let image = well_formed();
    let mut tar = image.archive.tar();
    let manifest_at =
        tar.len() - 1024 - 512 - image.archive.bytes("manifest.json").len().div_ceil(512) * 512;
    tar.truncate(manifest_at);
    tar.extend_from_slice(
        ustar_header("manifest.json", tar::EntryType::Regular, 0o77777777777, "").as_bytes(),
    );
    tar.extend_from_slice(&image.archive.bytes("manifest.json"));
    let path = write_file(dir.path(), "claims-64-gib.tar", &tar);
    assert_rejected_file(&path, &[r#"truncated archive: member "manifest.json" has"#]);
}

#[test]
fn gzip_magic_followed_by_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let mut garbage = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    garbage.extend(sample_text(5000, 4));
    let mut archive = image.archive.clone();
    archive.replace("layer0/layer.tar", garbage.clone());
    let path = archive.write(dir.path(), "garbage-layer.tar");
    assert_rejected_file(
        &path,
        &[r#"layer "layer0/layer.tar" cannot be decompressed: gzip stream is corrupt"#],
    );
    // zstd magic likewise.
    let mut zstd_garbage = vec![0x28, 0xb5, 0x2f, 0xfd];
    zstd_garbage.extend(sample_text(5000, 5));
    archive.replace("layer0/layer.tar", zstd_garbage);
    let path = archive.write(dir.path(), "garbage-zstd-layer.tar");
    assert_rejected_file(
        &path,
        &[r#"layer "layer0/layer.tar" cannot be decompressed: zstd"#],
    );
    // As the outer file: not recognised as an archive at all.
    let path = write_file(dir.path(), "garbage.tar.gz", &garbage);
    assert_rejected_file(&path, &["not an image archive"]);
    // A valid outer gzip whose stream turns to garbage after the first tar blocks.
    let mut damaged = gzip(&image.archive.tar());
    let middle = damaged.len() / 2;
    damaged[middle..middle + 64].fill(0xa5);
    let path = write_file(dir.path(), "damaged.tar.gz", &damaged);
    assert_rejected_file(&path, &["corrupt"]);
}

#[test]
fn config_bytes_not_matching_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let original = image.archive.bytes(&image.config_name);
    let mut tampered: Value = serde_json::from_slice(&original).unwrap();
    tampered["config"]["Cmd"] = json!(["/bin/evil"]);
    let tampered = serde_json::to_vec(&tampered).unwrap();
    let claimed = image.config_name.trim_end_matches(".json");
    let mut archive = image.archive.clone();
    archive.replace(&image.config_name, tampered.clone());
    let path = archive.write(dir.path(), "config-json-name.tar");
    assert_rejected_file(
        &path,
        &[&format!(
            "config {:?} has digest sha256:{}, not the sha256:{claimed} its name claims",
            image.config_name,
            sha256_hex(&tampered)
        )],
    );
    // The crane shape (`sha256:<hex>`) and the docker ≥ 25 shape (`blobs/sha256/<hex>`).
    for (file, name) in [
        ("crane.tar", format!("sha256:{claimed}")),
        ("blobs.tar", format!("blobs/sha256/{claimed}")),
    ] {
        let mut control = image.archive.clone();
        control
            .remove(&image.config_name)
            .file(&name, original.clone());
        let mut manifest = control.json("manifest.json");
        manifest[0]["Config"] = json!(name);
        control.replace("manifest.json", serde_json::to_vec(&manifest).unwrap());
        assert_accepted(&control.write(dir.path(), &format!("control-{file}")));
        let mut archive = control.clone();
        archive.replace(&name, tampered.clone());
        assert_rejected_file(
            &archive.write(dir.path(), file),
            &[&format!(
                "{name:?} has digest sha256:{}",
                sha256_hex(&tampered)
            )],
        );
    }
}

#[test]
fn layer_content_not_matching_the_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    for (position, member) in ["layer0/layer.tar", "layer1/layer.tar"].iter().enumerate() {
        // Re-encode a changed layer validly: the stored bytes are fine, the content is not.
        let mut plain = layer_tar(position as u32 + 1);
        plain[600] ^= 0x20;
        let stored = if position == 0 {
            gzip(&plain)
        } else {
            plain.clone()
        };
        let mut archive = image.archive.clone();
        archive.replace(member, stored);
        let path = archive.write(dir.path(), &format!("tampered-{position}.tar"));
        assert_rejected_file(
            &path,
            &[&format!(
                "layer {} ({member:?}) has diffID sha256:{}, but config {:?} expects sha256:{}",
                position + 1,
                sha256_hex(&plain),
                image.config_name,
                image.diff_ids[position]
            )],
        );
    }
    // The layers swapped: each is a valid layer of the image, in the wrong place.
    let mut manifest = image.archive.json("manifest.json");
    manifest[0]["Layers"] = json!(["layer1/layer.tar", "layer0/layer.tar"]);
    let path = with_manifest(&image, &manifest).write(dir.path(), "swapped.tar");
    assert_rejected_file(&path, &["layer 1 (\"layer1/layer.tar\") has diffID"]);
}

#[test]
fn layer_count_differing_from_the_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    for (file, layers, listed) in [
        ("fewer.tar", json!(["layer0/layer.tar"]), 1),
        (
            "more.tar",
            json!(["layer0/layer.tar", "layer1/layer.tar", "layer1/layer.tar"]),
            3,
        ),
        ("none.tar", json!([]), 0),
    ] {
        let mut manifest = image.archive.json("manifest.json");
        manifest[0]["Layers"] = layers;
        let path = with_manifest(&image, &manifest).write(dir.path(), file);
        assert_rejected_file(
            &path,
            &[&format!(
                "image {:?} lists {listed} layers but its config has 2 rootfs.diff_ids",
                image.config_name
            )],
        );
    }
}

/// A symlink member: (name, target).
type Link<'a> = (&'a str, &'a str);

#[test]
fn symlinks_escaping_looping_or_dangling() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let layer = "layer1/layer.tar";
    // The podman/skopeo shape (a symlinked layer) is legitimate: the control.
    let mut control = image.archive.clone();
    control
        .remove(layer)
        .file("blobs/plain-layer", image.archive.bytes(layer))
        .symlink(layer, "../blobs/plain-layer");
    assert_accepted(&control.write(dir.path(), "control.tar"));

    // A host file whose digest would pass: reading it through the link would be a bug.
    let host_file = write_file(dir.path(), "host-layer.tar", &image.archive.bytes(layer));
    let cases: [(&str, Vec<Link>, &str); 6] = [
        (
            "escape-relative",
            vec![(layer, "../../../../../../../../../../../../../../..")],
            "is a link that points outside the archive",
        ),
        (
            "escape-absolute",
            vec![(layer, host_file.to_str().unwrap())],
            "is a link that points outside the archive",
        ),
        (
            "escape-via-chain",
            vec![(layer, "../hop"), ("hop", "../outside/layer.tar")],
            "is a link that points outside the archive",
        ),
        ("self-loop", vec![(layer, "layer.tar")], "is a link loop"),
        (
            "two-link-loop",
            vec![
                (layer, "../ping"),
                ("ping", "pong"),
                ("pong", "layer1/layer.tar"),
            ],
            "is a link loop",
        ),
        (
            "dangling",
            vec![(layer, "../nowhere/layer.tar")],
            r#"is a link to "nowhere/layer.tar", which is not in the archive"#,
        ),
    ];
    for (name, links, problem) in cases {
        let mut archive = image.archive.clone();
        archive.remove(layer);
        for (link, target) in links {
            archive.symlink(link, target);
        }
        let path = archive.write(dir.path(), &format!("{name}.tar"));
        assert_rejected_file(&path, &[&format!("member {layer:?}"), problem]);
    }
    // manifest.json itself a link out of the archive.
    let manifest_file = write_file(
        dir.path(),
        "host-manifest.json",
        &image.archive.bytes("manifest.json"),
    );
    let mut archive = image.archive.clone();
    archive.set(
        "manifest.json",
        Member::Symlink(manifest_file.display().to_string()),
    );
    let path = archive.write(dir.path(), "manifest-escape.tar");
    assert_rejected_file(
        &path,
        &[r#"member "manifest.json" is a link that points outside the archive"#],
    );
    // A chain longer than the hop limit of real filesystems (40) counts as a loop.
    let mut archive = image.archive.clone();
    let content = archive.bytes(layer);
    archive.remove(layer).file("hop50", content);
    for hop in (0..50).rev() {
        let link = if hop == 0 {
            layer.to_owned()
        } else {
            format!("hop{hop}")
        };
        let target = if hop == 0 {
            "../hop1".to_owned()
        } else {
            format!("hop{}", hop + 1)
        };
        archive.symlink(&link, &target);
    }
    let path = archive.write(dir.path(), "long-chain.tar");
    assert_rejected_file(&path, &[&format!("member {layer:?} is a link loop")]);
}

#[test]
fn hard_links_to_absent_members() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let layer = "layer0/layer.tar";
    let mut control = image.archive.clone();
    control
        .remove(layer)
        .file("shared/layer.tar", image.archive.bytes(layer))
        .hardlink(layer, "shared/layer.tar");
    assert_accepted(&control.write(dir.path(), "control.tar"));

    let mut archive = image.archive.clone();
    archive.set(layer, Member::Hardlink("shared/absent.tar".into()));
    assert_rejected_file(
        &archive.write(dir.path(), "absent.tar"),
        &[
            r#"member "layer0/layer.tar" is a link to "shared/absent.tar", which is not in the archive"#,
        ],
    );
    archive.set(layer, Member::Hardlink("../../etc/passwd".into()));
    assert_rejected_file(
        &archive.write(dir.path(), "escaping.tar"),
        &[r#"member "layer0/layer.tar" is a link that points outside the archive"#],
    );
    archive.set(layer, Member::Hardlink(layer.into()));
    assert_rejected_file(
        &archive.write(dir.path(), "self.tar"),
        &[r#"member "layer0/layer.tar" is a link loop"#],
    );
}

#[test]
fn two_different_manifest_members() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let manifest = image.archive.bytes("manifest.json");
    // The same bytes twice (some writers repeat members) is harmless.
    let mut control = image.archive.clone();
    control.file("./manifest.json", manifest.clone());
    assert_accepted(&control.write(dir.path(), "control.tar"));

    let mut other = image.archive.json("manifest.json");
    other[0]["RepoTags"] = json!(["evil:1"]);
    for (file, second_name, first_kept) in [
        ("later.tar", "manifest.json", true),
        ("dotted.tar", "./manifest.json", true),
        ("earlier.tar", "manifest.json", false),
    ] {
        let mut archive = image.archive.clone();
        let bytes = serde_json::to_vec(&other).unwrap();
        if first_kept {
            archive.file(second_name, bytes);
        } else {
            archive
                .members
                .insert(0, (second_name.to_owned(), Member::File(bytes)));
        }
        assert_rejected_file(
            &archive.write(dir.path(), file),
            &[r#"member "manifest.json" appears twice with different content"#],
        );
    }
}

#[test]
fn hostile_tags() {
    let dir = tempfile::tempdir().unwrap();
    let exactly_1024 = format!("registry.example/{}:1", "a".repeat(1024 - 19));
    assert_eq!(exactly_1024.len(), 1024);
    let control = docker_image(&[exactly_1024.as_str(), "ok:ü"]);
    assert_accepted(&control.archive.write(dir.path(), "control.tar"));

    let too_long = format!("{exactly_1024}x");
    for (file, tag, problem) in [
        (
            "newline.tar",
            "app:1\nforged",
            r#"image tag "app:1\nforged" contains control characters"#,
        ),
        ("escape.tar", "app:\u{1b}[2J", "contains control characters"),
        ("nul.tar", "app\u{0}:1", "contains control characters"),
        ("c1.tar", "app:\u{85}1", "contains control characters"),
        (
            "long.tar",
            too_long.as_str(),
            "image tag of 1025 bytes is longer than 1024 bytes",
        ),
    ] {
        let image = docker_image(&["fine:1", tag]);
        assert_rejected_file(
            &image.archive.write(dir.path(), file),
            &["manifest.json entry 1: ", problem],
        );
    }
    // The same through an OCI index annotation: the message must say which member held it.
    let oci = oci_image("oci:1\r\nforged");
    assert_rejected_file(
        &oci.archive.write(dir.path(), "oci-newline.tar"),
        &[
            "index.json",
            r#"image tag "oci:1\r\nforged" contains control characters"#,
        ],
    );
}

#[test]
fn oci_blobs_not_matching_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let oci = oci_image("x:1");
    assert_accepted(&oci.archive.write(dir.path(), "control.tar"));
    let layer_name = blob_name(&oci.layer);
    let mut flipped = oci.layer.clone();
    let near_end = flipped.len() - 12;
    flipped[near_end] ^= 0xff;
    let mut archive = oci.archive.clone();
    archive.replace(&layer_name, flipped.clone());
    assert_rejected_file(
        &archive.write(dir.path(), "tampered-layer.tar"),
        &[&format!(
            "blob {layer_name:?} has digest sha256:{}, not the one its name claims",
            sha256_hex(&flipped)
        )],
    );
    // Unreferenced blobs are checked too.
    let mut archive = oci.archive.clone();
    archive.file(format!("blobs/sha256/{}", "0".repeat(64)), "stray");
    assert_rejected_file(
        &archive.write(dir.path(), "stray-blob.tar"),
        &[&format!(
            "blob \"blobs/sha256/{}\" has digest",
            "0".repeat(64)
        )],
    );
    // A blob named correctly but described with the wrong size.
    let mut index: Value = oci.archive.json("index.json");
    index["manifests"][0]["size"] = json!(oci.manifest.len() - 1);
    let mut archive = oci.archive.clone();
    archive.replace("index.json", serde_json::to_vec(&index).unwrap());
    assert_rejected_file(
        &archive.write(dir.path(), "wrong-size.tar"),
        &[&format!(
            "index.json gives sha256:{} a size of {}, but the blob has {} bytes",
            sha256_hex(&oci.manifest),
            oci.manifest.len() - 1,
            oci.manifest.len()
        )],
    );
    // A blob that is a symlink to another blob: the content does not match the name.
    let manifest_name = blob_name(&oci.manifest);
    let mut archive = oci.archive.clone();
    archive.set(
        &layer_name,
        Member::Symlink(format!("../../{manifest_name}")),
    );
    assert_rejected_file(
        &archive.write(dir.path(), "symlinked-blob.tar"),
        &[&format!(
            "blob {layer_name:?} has digest sha256:{}",
            sha256_hex(&oci.manifest)
        )],
    );
}

#[test]
fn index_pointing_to_a_missing_blob() {
    let dir = tempfile::tempdir().unwrap();
    let oci = oci_image("x:1");
    assert_accepted(&oci.archive.write(dir.path(), "control.tar"));
    let manifest_hex = sha256_hex(&oci.manifest);
    let mut archive = oci.archive.clone();
    archive.remove(&blob_name(&oci.manifest));
    assert_rejected_file(
        &archive.write(dir.path(), "missing-manifest.tar"),
        &[&format!(
            "index.json refers to sha256:{manifest_hex}: member \"blobs/sha256/{manifest_hex}\" is missing"
        )],
    );
    let mut archive = oci.archive.clone();
    archive.remove(&blob_name(&oci.layer));
    assert_rejected_file(
        &archive.write(dir.path(), "missing-layer.tar"),
        &[
            &format!(
                "manifest \"blobs/sha256/{manifest_hex}\" layer 1 refers to sha256:{}",
                sha256_hex(&oci.layer)
            ),
            "is missing",
        ],
    );
    for (file, digest, problem) in [
        (
            "malformed-digest.tar",
            "sha256:XYZ",
            "malformed digest \"sha256:XYZ\"",
        ),
        (
            "other-algorithm.tar",
            "sha512:00",
            "unsupported or malformed digest \"sha512:00\"",
        ),
    ] {
        let mut index: Value = oci.archive.json("index.json");
        index["manifests"][0]["digest"] = json!(digest);
        let mut archive = oci.archive.clone();
        archive.replace("index.json", serde_json::to_vec(&index).unwrap());
        assert_rejected_file(&archive.write(dir.path(), file), &["index.json: ", problem]);
    }
}

/// Wraps `inner` (a descriptor) in `levels` nested indexes stored as blobs; returns the
/// descriptor of the outermost.
fn nest_indexes(archive: &mut Archive, inner: Value, levels: usize) -> Value {
    let mut current = inner;
    for _ in 0..levels {
        let index = index_json(vec![current]);
        archive.file(blob_name(&index), index.clone());
        current = descriptor(OCI_INDEX, &index);
    }
    current
}

#[test]
fn index_cycles_and_runaway_nesting() {
    let dir = tempfile::tempdir().unwrap();
    let oci = oci_image("x:1");
    let manifest_descriptor = descriptor(OCI_MANIFEST, &oci.manifest);
    // Multi-platform images nest an index or two: fine.
    let mut control = oci.archive.clone();
    let top = nest_indexes(&mut control, manifest_descriptor.clone(), 2);
    control.replace("index.json", index_json(vec![top]));
    assert_accepted(&control.write(dir.path(), "control.tar"));

    // A true cycle needs a blob containing its own digest, which content addressing rules
    // out; the closest an attacker gets is a blob whose name is a link back up the chain.
    let mut archive = oci.archive.clone();
    let inner = index_json(vec![manifest_descriptor.clone()]);
    let mut outer = index_json(vec![descriptor(OCI_INDEX, &inner)]);
    // The inner index's name now points at the outer index: A → B where B is A again.
    archive.file(blob_name(&outer), outer.clone());
    archive.symlink(&blob_name(&inner), &format!("../../{}", blob_name(&outer)));
    archive.replace(
        "index.json",
        index_json(vec![descriptor(OCI_INDEX, &outer)]),
    );
    assert_rejected_file(
        &archive.write(dir.path(), "cycle-by-link.tar"),
        &[&format!(
            "{:?} has digest sha256:{}",
            blob_name(&inner),
            sha256_hex(&outer)
        )],
    );
    // index.json naming itself through a link.
    let mut archive = oci.archive.clone();
    let fake = "f".repeat(64);
    archive.symlink(&format!("blobs/sha256/{fake}"), "../../index.json");
    outer = index_json(vec![
        json!({"mediaType": OCI_INDEX, "digest": format!("sha256:{fake}"), "size": 10}),
    ]);
    archive.replace("index.json", outer);
    assert_rejected_file(
        &archive.write(dir.path(), "self-index.tar"),
        &[&format!("\"blobs/sha256/{fake}\" has digest")],
    );
    // Deeper than any real image: refused before the stack is at risk.
    let mut archive = oci.archive.clone();
    let top = nest_indexes(&mut archive, manifest_descriptor, 50);
    archive.replace("index.json", index_json(vec![top]));
    assert_rejected_file(
        &archive.write(dir.path(), "deep.tar"),
        &["indexes nest deeper than"],
    );
}

#[test]
fn index_fan_out_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let oci = oci_image("x:1");
    // 1000 × 1000 references to one manifest through one inner index: a million visits if
    // nothing bounds the walk.
    let mut archive = oci.archive.clone();
    let inner = index_json(vec![descriptor(OCI_MANIFEST, &oci.manifest); 1000]);
    archive.file(blob_name(&inner), inner.clone());
    archive.replace(
        "index.json",
        index_json(vec![descriptor(OCI_INDEX, &inner); 1000]),
    );
    assert_rejected_with(
        &[],
        &archive.write(dir.path(), "fan-out.tar"),
        &["more than 100000 descriptors in the layout"],
    );
}

#[test]
fn not_an_archive_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let not_archive =
        "not an image archive (neither a tar, a gzip-compressed tar nor an OCI layout directory)";
    let random: Vec<u8> = {
        let mut state = 0x1234_5678_u64;
        (0..1 << 16)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                (state >> 56) as u8
            })
            .collect()
    };
    assert_rejected_file(
        &write_file(dir.path(), "random.bin", &random),
        &[not_archive],
    );
    assert_rejected_file(&write_file(dir.path(), "empty.tar", b""), &[not_archive]);
    assert_rejected_file(
        &write_file(dir.path(), "zeros.tar", &[0; 10240]),
        &[not_archive],
    );
    assert_rejected_file(
        &write_file(dir.path(), "gzip-of-nothing.gz", &gzip(b"")),
        &[not_archive],
    );
    // A lone header and nothing else, for a manifest of length 0 and for one of 1 KiB.
    let lone = ustar_header("manifest.json", tar::EntryType::Regular, 0, "");
    assert_rejected_file(
        &write_file(dir.path(), "lone-empty.tar", lone.as_bytes()),
        &[r#"member "manifest.json" is not valid JSON: EOF"#],
    );
    let lone = ustar_header("manifest.json", tar::EntryType::Regular, 1024, "");
    assert_rejected_file(
        &write_file(dir.path(), "lone.tar", lone.as_bytes()),
        &[r#"truncated archive: member "manifest.json" has 0 of its 1024 bytes"#],
    );
    // A v7 header (no magic) for a file that is not an image.
    let mut v7 = tar::Header::new_old();
    v7.set_path("notes.txt").unwrap();
    v7.set_size(0);
    v7.set_cksum();
    assert_rejected_file(
        &write_file(dir.path(), "v7.tar", v7.as_bytes()),
        &["neither manifest.json (docker-archive) nor index.json (OCI layout)"],
    );
}

#[test]
fn paths_that_are_not_archive_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.tar");
    // A missing file is an I/O error (exit 1), not a failed analysis.
    let outcome = inspect(&[], &missing);
    assert_eq!(outcome.status.code(), Some(1), "{}", outcome.describe());
    assert_eq!(outcome.stderr.lines().count(), 1, "{}", outcome.describe());
    assert!(
        outcome
            .stderr
            .contains("cannot read: No such file or directory"),
        "{}",
        outcome.describe()
    );
    let not_layout = dir.path().join("image.tar");
    std::fs::create_dir(&not_layout).unwrap();
    std::fs::write(not_layout.join("manifest.json"), "[]").unwrap();
    assert_rejected_file(&not_layout, &["not an image archive"]);
    // A FIFO nobody writes to: opening it for reading would block forever.
    let fifo = dir.path().join("fifo.tar");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_rejected_file(&fifo, &["not an image archive"]);
    assert_rejected_file(Path::new("/dev/zero"), &["not an image archive"]);
}

/// An OCI layout directory (`skopeo copy ... oci:DIR`), from the tar fixture.
fn write_layout_dir(archive: &Archive, dir: &Path) {
    for (name, member) in &archive.members {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match member {
            Member::File(bytes) => std::fs::write(&path, bytes).unwrap(),
            Member::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            Member::Hardlink(target) => std::fs::hard_link(dir.join(target), &path).unwrap(),
        }
    }
}

#[test]
fn layout_directories_with_hostile_entries() {
    let work = tempfile::tempdir().unwrap();
    let oci = oci_image("x:1");
    let control = work.path().join("control");
    write_layout_dir(&oci.archive, &control);
    let predicate = assert_accepted(&control);
    assert_eq!(predicate["tardigest"], json!({}));

    let layer_name = blob_name(&oci.layer);
    // The layer replaced by a link to an identical file outside the layout: must not be read.
    let outside = write_file(work.path(), "outside-layer", &oci.layer);
    let escaping = work.path().join("escaping");
    let mut archive = oci.archive.clone();
    archive.set(&layer_name, Member::Symlink(outside.display().to_string()));
    write_layout_dir(&archive, &escaping);
    assert_rejected_file(
        &escaping,
        &[&format!(
            "member {layer_name:?} is a link that points outside the archive"
        )],
    );
    // A FIFO where the layer should be: skipped (never opened), so the layer is missing.
    let fifo_dir = work.path().join("fifo");
    let mut archive = oci.archive.clone();
    archive.remove(&layer_name);
    write_layout_dir(&archive, &fifo_dir);
    nix::unistd::mkfifo(
        &fifo_dir.join(&layer_name),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    assert_rejected_file(&fifo_dir, &[&format!("member {layer_name:?} is missing")]);
    // A directory where the layer should be.
    let dir_dir = work.path().join("directory");
    write_layout_dir(&archive, &dir_dir);
    std::fs::create_dir(dir_dir.join(&layer_name)).unwrap();
    assert_rejected_file(&dir_dir, &[&format!("member {layer_name:?} is missing")]);
    // index.json a directory: not a layout.
    let no_index = work.path().join("index-dir");
    let mut archive = oci.archive.clone();
    archive.remove("index.json");
    write_layout_dir(&archive, &no_index);
    std::fs::create_dir(no_index.join("index.json")).unwrap();
    assert_rejected_file(&no_index, &["not an image archive"]);
}

#[test]
fn ten_thousand_layers_fail_clearly_by_default_and_work_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let layers: Vec<Vec<u8>> = (0..10_000)
        .map(|index| format!("layer content {index}").into_bytes())
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|layer| sha256_hex(layer)).collect();
    let config = config_json(&diff_ids);
    let config_name = format!("{}.json", sha256_hex(&config));
    let mut archive = Archive::default();
    let names: Vec<String> = (0..layers.len())
        .map(|index| format!("{index}/layer.tar"))
        .collect();
    for (name, layer) in names.iter().zip(&layers) {
        archive.file(name.clone(), layer.clone());
    }
    archive.file(config_name.clone(), config).file(
        "manifest.json",
        serde_json::to_vec(
            &json!([{"Config": config_name, "RepoTags": ["many:1"], "Layers": names}]),
        )
        .unwrap(),
    );
    let path = archive.write(dir.path(), "ten-thousand.tar");
    let rejected = assert_rejected_with(
        &[],
        &path,
        &[&format!(
            "image {config_name:?} has 10000 layers, more than the limit of 1024 (--max-layers)"
        )],
    );

    let outcome = inspect(&["--max-layers", "10000"], &path);
    assert_eq!(outcome.status.code(), Some(0), "{}", outcome.describe());
    let predicate: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let reported = predicate["diffids"].as_array().unwrap();
    assert_eq!(reported.len(), 10_000);
    assert_eq!(reported[9_999]["sha256"], diff_ids[9_999]);
    assert!(outcome.max_rss_kib < 256 * 1024, "{}", outcome.describe());
    eprintln!(
        "10 000 layers: rejected in {:.2?} ({} MiB), accepted in {:.2?} ({} MiB)",
        rejected.elapsed,
        rejected.max_rss_kib / 1024,
        outcome.elapsed,
        outcome.max_rss_kib / 1024
    );
}

// ---- decompression bombs -------------------------------------------------------------------

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
/// Small, because the tests run the debug build, which decompresses and hashes at only
/// 10-20 MB/s; what matters is that the limit is what stops a 20 GiB bomb.
const BOMB_LIMIT: &str = "16777216";

/// `total` zero bytes as a multi-member gzip: one member compressing `block` zeros, repeated.
/// Costs one compression of `block` bytes however large `total` is.
fn gzip_zeros(total: u64, block: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; block]).unwrap();
    let member = encoder.finish().unwrap();
    member.repeat((total / block as u64) as usize)
}

#[test]
fn layer_bomb_stops_at_the_ratio_and_total_limits() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    // 20 GiB of zeros in ~20 MiB of gzip.
    let mut archive = image.archive.clone();
    archive.replace("layer0/layer.tar", gzip_zeros(20 * GIB, 4 << 20));
    let path = archive.write(dir.path(), "bomb.tar");
    let by_total = assert_rejected_with(
        &[
            "--max-ratio",
            "1000000",
            "--max-decompressed-bytes",
            BOMB_LIMIT,
        ],
        &path,
        &[&format!(
            r#"layer "layer0/layer.tar" cannot be decompressed: decompressed layers exceed the limit of {BOMB_LIMIT} bytes in total (--max-decompressed-bytes)"#
        )],
    );
    // zstd reaches ratios deflate cannot (>30 000:1): the default ratio limit catches it.
    let frame = zstd::encode_all(vec![0u8; 64 << 20].as_slice(), 3).unwrap();
    archive.replace("layer0/layer.tar", frame.repeat(20 * 16));
    let path = archive.write(dir.path(), "zstd-bomb.tar");
    let by_ratio = assert_rejected_with(
        &[],
        &path,
        &[
            r#"layer "layer0/layer.tar" cannot be decompressed: zstd stream expands more than 1000x (--max-ratio): a decompression bomb?"#,
        ],
    );
    eprintln!(
        "layer bombs: total limit after {:.2?} ({} MiB), ratio limit after {:.2?} ({} MiB)",
        by_total.elapsed,
        by_total.max_rss_kib / 1024,
        by_ratio.elapsed,
        by_ratio.max_rss_kib / 1024
    );
}

/// The outer file is a gzip whose tar holds a 20 GiB member: the outer decompression is
/// decompression too, and must stop at the same configured limit.
#[test]
fn outer_gzip_bomb_stops_at_the_total_limit() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let mut tar = image.archive.tar();
    tar.truncate(tar.len() - 1024);
    let mut outer = gzip(&tar);
    outer.extend(gzip(
        ustar_header("padding", tar::EntryType::Regular, 20 * GIB, "").as_bytes(),
    ));
    outer.extend(gzip_zeros(20 * GIB + 1024, 4 << 20));
    let path = write_file(dir.path(), "outer-bomb.tar.gz", &outer);
    assert_rejected_with(
        &["--max-decompressed-bytes", BOMB_LIMIT],
        &path,
        &[BOMB_LIMIT, "--max-decompressed-bytes"],
    );
}

/// Past the tar's end-of-archive blocks an outer gzip may go on: that tail is decompressed
/// (to hash nothing) and must be bounded too.
#[test]
fn outer_gzip_bomb_after_the_end_of_the_archive_stops_at_the_total_limit() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let mut outer = gzip(&image.archive.tar());
    outer.extend(gzip_zeros(20 * GIB, 4 << 20));
    let path = write_file(dir.path(), "tail-bomb.tar.gz", &outer);
    assert_rejected_with(
        &["--max-decompressed-bytes", BOMB_LIMIT],
        &path,
        &[BOMB_LIMIT, "--max-decompressed-bytes"],
    );
}

/// A GNU long-name member (type `L`) holds the next member's name; a reader that keeps it
/// whole can be made to allocate whatever size the header claims (here through an outer
/// gzip, 4 GiB of name in 4 MiB).
#[test]
fn gnu_long_name_bomb_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(4 * GIB);
    header.set_mode(0o644);
    header.set_cksum();
    let mut outer = gzip(header.as_bytes());
    outer.extend(gzip_zeros(4 * GIB, 4 << 20));
    let path = write_file(dir.path(), "long-name-bomb.tar.gz", &outer);
    assert_rejected_file(&path, &["././@LongLink"]);

    // PAX extended headers likewise.
    let mut header = tar::Header::new_ustar();
    header.set_path("PaxHeaders/x").unwrap();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(4 * GIB);
    header.set_mode(0o644);
    header.set_cksum();
    let mut outer = gzip(header.as_bytes());
    outer.extend(gzip_zeros(4 * GIB, 4 << 20));
    let path = write_file(dir.path(), "pax-bomb.tar.gz", &outer);
    assert_rejected_file(&path, &["PaxHeaders/x"]);
}

/// A GNU sparse member describes holes that a reader expands to zeros: a 1.5 KiB file can
/// claim terabytes of content. Image tools never write sparse members.
#[test]
fn gnu_sparse_member_cannot_expand_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let mut header = tar::Header::new_gnu();
    header.set_path("layer0/layer.tar").unwrap();
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_mode(0o644);
    let gnu = header.as_gnu_mut().unwrap();
    // One 512-byte data block at the very end of a 1 TiB file: the rest is a hole.
    gnu.sparse[0].set_offset(TIB - 512);
    gnu.sparse[0].set_length(512);
    gnu.set_real_size(TIB);
    header.set_size(512);
    header.set_cksum();
    let mut archive_bytes = header.as_bytes().to_vec();
    archive_bytes.extend([0x55; 512]);
    let mut rest = image.archive.clone();
    rest.remove("layer0/layer.tar");
    archive_bytes.extend(rest.tar());
    let path = write_file(dir.path(), "sparse.tar", &archive_bytes);
    assert_rejected_file(&path, &["layer0/layer.tar"]);
}

#[test]
fn hundred_thousand_empty_members_stay_quick_and_small() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    let mut archive = Archive::default();
    for index in 0..100_000 {
        archive.file(format!("junk/{index}"), Vec::new());
    }
    archive
        .members
        .extend(image.archive.members.iter().cloned());
    let path = archive.write(dir.path(), "many-members.tar");
    let outcome = inspect(&[], &path);
    assert_eq!(outcome.status.code(), Some(0), "{}", outcome.describe());
    assert!(outcome.max_rss_kib < 256 * 1024, "{}", outcome.describe());
    eprintln!(
        "100 000 members: {:.2?}, {} MiB",
        outcome.elapsed,
        outcome.max_rss_kib / 1024
    );
}

/// Found by `cargo xtask fuzz` (target `archive`): the tar parser's errors quote raw header
/// fields, so a header can put a newline (or terminal escapes) into the error line, forging
/// a second line of output. The error must stay on one line.
#[test]
fn header_fields_cannot_forge_extra_error_lines() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let mut tar = image.archive.tar();
    let second_header = 512 + image.archive.bytes("layer0/layer.tar").len().div_ceil(512) * 512;
    assert_eq!(&tar[second_header..second_header + 16], b"layer1/layer.tar");
    // The checksum field (offset 148, 8 bytes) and the size field (offset 124, 12 bytes).
    let mut bad_checksum = tar.clone();
    bad_checksum[second_header + 148..second_header + 156].copy_from_slice(b"1\nforged");
    assert_rejected_file(
        &write_file(dir.path(), "checksum-newline.tar", &bad_checksum),
        &[
            r#"truncated or corrupt tar after member "layer0/layer.tar""#,
            "cksum",
        ],
    );
    tar[second_header + 124..second_header + 136].copy_from_slice(b"7\n\x1b[2Jforged");
    let path = write_file(dir.path(), "size-escape.tar", &tar);
    let outcome = assert_rejected_with(&[], &path, &["layer0/layer.tar"]);
    assert!(!outcome.stderr.contains('\u{1b}'), "{}", outcome.describe());
}

/// A 2.6 MB manifest.json listing the same 1024-layer image 500 times: half a million layer
/// references, each within every per-image limit. Reading it may succeed or fail, but within
/// bounded memory and time; it must not amplify a few MB of input into gigabytes.
#[test]
fn repeated_manifest_entries_do_not_amplify_memory() {
    let dir = tempfile::tempdir().unwrap();
    let layer = b"tiny layer".to_vec();
    let diff_ids = vec![sha256_hex(&layer); 1024];
    let config = config_json(&diff_ids);
    let config_name = format!("{}.json", sha256_hex(&config));
    let entry = json!({"Config": config_name, "RepoTags": null, "Layers": vec!["l"; 1024]});
    let mut archive = Archive::default();
    archive.file("l", layer).file(config_name, config).file(
        "manifest.json",
        serde_json::to_vec(&vec![entry; 500]).unwrap(),
    );
    let path = archive.write(dir.path(), "amplifier.tar");
    let outcome = inspect(&[], &path);
    match outcome.status.code() {
        Some(0) => assert!(
            outcome.max_rss_kib < RSS_LIMIT_KIB,
            "{}",
            outcome.describe()
        ),
        _ => assert_rejected(&outcome, &path, &["manifest.json"]),
    }
}

#[test]
fn index_and_oci_manifest_that_are_not_what_they_claim() {
    let dir = tempfile::tempdir().unwrap();
    let oci = oci_image("x:1");
    assert_accepted(&oci.archive.write(dir.path(), "control.tar"));
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let cases: [(&str, &[u8], &[&str]); 5] = [
        (
            "null",
            b"null",
            &["index.json is null, not an index object"],
        ),
        (
            "list",
            b"[1]",
            &["index.json is a list, not an index object"],
        ),
        (
            "manifests-number",
            br#"{"manifests":5}"#,
            &["index.json: manifests is a number, not a list"],
        ),
        (
            "deep",
            deep.as_bytes(),
            &[
                r#"member "index.json" is not valid JSON"#,
                "recursion limit",
            ],
        ),
        (
            "no-digest",
            br#"{"manifests":[{"size":3}]}"#,
            &["index.json: a descriptor has no digest"],
        ),
    ];
    for (name, index, expected) in cases {
        let mut archive = oci.archive.clone();
        archive.replace("index.json", index);
        assert_rejected_file(&archive.write(dir.path(), &format!("{name}.tar")), expected);
    }
    // The manifest blob (correctly named and sized) holding something other than a manifest.
    for (name, manifest, problem) in [
        ("manifest-list.tar", &b"[]"[..], "has no config"),
        (
            "manifest-no-config.tar",
            br#"{"layers":[]}"#,
            "has no config",
        ),
        (
            "manifest-layers-string.tar",
            br#"{"config":{},"layers":"x"}"#,
            "a descriptor has no digest",
        ),
    ] {
        let mut archive = oci.archive.clone();
        archive.remove(&blob_name(&oci.manifest));
        archive.file(blob_name(manifest), manifest);
        let mut top = descriptor(OCI_MANIFEST, manifest);
        top["annotations"] = json!({"org.opencontainers.image.ref.name": "x:1"});
        archive.replace("index.json", index_json(vec![top]));
        assert_rejected_file(
            &archive.write(dir.path(), name),
            &[&format!("{:?}", blob_name(manifest)), problem],
        );
    }
}

#[test]
fn names_outside_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let image = well_formed();
    assert_accepted(&image.archive.write(dir.path(), "control.tar"));
    let host_layer = write_file(
        dir.path(),
        "host-layer.tar",
        &image.archive.bytes("layer1/layer.tar"),
    );
    // manifest.json naming host paths for a layer: never opened on the host.
    for (file, name) in [
        ("absolute.tar", host_layer.display().to_string()),
        (
            "climbing.tar",
            "../../../../../../../..".to_owned() + &host_layer.display().to_string(),
        ),
    ] {
        let mut manifest = image.archive.json("manifest.json");
        manifest[0]["Layers"][1] = json!(name);
        assert_rejected_file(
            &with_manifest(&image, &manifest).write(dir.path(), file),
            &[&format!("{name:?} points outside the archive")],
        );
    }
    // Members whose own names climb out (a classic extraction attack) are refused outright.
    for (file, name) in [
        ("member-climbing.tar", "../manifest.json"),
        ("member-absolute.tar", "/etc/manifest.json"),
    ] {
        let mut archive = image.archive.clone();
        archive.file(name, "[]");
        assert_rejected_file(
            &archive.write(dir.path(), file),
            &[&format!("member {name:?} has a name outside the archive")],
        );
    }
}
