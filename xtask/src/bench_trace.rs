//! `cargo xtask bench trace`: the cost of tracing a command with oci-attest's eBPF programs.
//!
//! 1. The tracer alone (the `trace_only` example: load + attach + trace + detach, no image
//!    analysis) against the same command untraced and under strace: a loop of 100k file opens,
//!    200k writes of 512 bytes, and `skopeo copy` of a generated image to a docker-archive. Modes alternate inside each
//!    round (drifting machine load hits every mode alike); the table shows medians.
//! 2. The whole `oci-attest run` process, `--trace ebpf` against `--trace off`, on `true` (the
//!    fixed cost) and on the skopeo copy (the ratio), with the tracer's load / attach / detach
//!    phases.
//! 3. Loss: 100k opens and 20k new files beside two CPU burners must lose nothing; a flood
//!    into a 4 KiB ring buffer must lose events and make `run` exit 3.
//! 4. The exec storm (20 000 processes exec'd with 200 arguments of 100 bytes): peak RSS of
//!    `run` and how it ends; the walk of a working directory of 20 000 files that compares it
//!    with the trace after the command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use oci_attest_tests::oci_attest::{give_to_test_user, invoked_by_test_user, run_command};

pub struct Options {
    /// Rounds per workload (≥ 3).
    pub rounds: usize,
    /// Size of the generated image for the skopeo workload; 0 skips it.
    pub image_mib: u64,
}

const OPENS: u32 = 100_000;
/// Small writes: one syscall each, where finding the written file costs most.
const SMALL_WRITES: u32 = 200_000;
const STRACE_FILTER: &str = "trace=execve,openat,creat,rename";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Untraced,
    Traced,
    Strace,
}

impl Mode {
    /// The order inside each round.
    const ALL: [Mode; 3] = [Mode::Untraced, Mode::Traced, Mode::Strace];

    fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Traced => "oci-attest eBPF",
            Mode::Strace => "strace -f",
        }
    }
}

struct Workload {
    name: String,
    command: Vec<String>,
    /// Runs after each measured run (e.g. remove the output), untimed.
    cleanup: Option<PathBuf>,
}

/// What one traced run reported.
struct TracedRun {
    load_attach_ms: f64,
    load_ms: f64,
    attach_ms: f64,
    detach_ms: f64,
    /// From releasing the child to its exit, measured inside the tracer: the traced run
    /// without the fixed costs (load+attach before, detach after).
    command_ms: f64,
    lost: u64,
    events: u64,
    /// The reasons of an incomplete trace, joined.
    incomplete: String,
}

pub fn run(workspace: &Path, options: &Options) -> anyhow::Result<()> {
    ensure!(
        options.rounds >= 3,
        "--rounds must be at least 3 for a median"
    );
    let tracer = build_tracer(workspace)?;
    let python = real_python()?;
    let scratch = Scratch::create()?;

    let small_writes = scratch.0.join("small-writes");
    let mut workloads = vec![
        Workload {
            name: format!("{OPENS} opens (python loop)"),
            command: vec![
                python.clone(),
                "-c".into(),
                format!(
                    "import os\nfor i in range({OPENS}):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"
                ),
            ],
            cleanup: None,
        },
        Workload {
            name: format!("{SMALL_WRITES} writes of 512 B (dd)"),
            command: vec![
                "dd".into(),
                "if=/dev/zero".into(),
                format!("of={}", small_writes.display()),
                "bs=512".into(),
                format!("count={SMALL_WRITES}"),
                "status=none".into(),
            ],
            cleanup: Some(small_writes),
        },
    ];
    if options.image_mib > 0 {
        let layout = scratch.0.join("image");
        eprintln!("bench: generating a {} MiB OCI image", options.image_mib);
        generate_image(&python, &layout, options.image_mib)?;
        let archive = scratch.0.join("out.tar");
        workloads.push(Workload {
            name: format!("skopeo copy {} MiB → docker-archive", options.image_mib),
            command: vec![
                "skopeo".into(),
                "copy".into(),
                "--quiet".into(),
                format!("oci:{}:bench", layout.display()),
                format!("docker-archive:{}:bench:latest", archive.display()),
            ],
            cleanup: Some(archive),
        });
    }

    let mut report = String::from(
        "| workload | untraced | eBPF, command phase | eBPF fixed (load+attach+detach) | strace -f \
         | eBPF overhead | strace overhead | strace/eBPF overhead | lost | load |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut load_times = Vec::new();
    for workload in &workloads {
        let mut untraced = Vec::new();
        let mut traced_command = Vec::new();
        let mut traced_fixed = Vec::new();
        let mut strace = Vec::new();
        let mut lost = 0;
        let mut events = 0;
        for round in 0..options.rounds {
            for mode in Mode::ALL {
                let (elapsed, traced) = run_once(&tracer, mode, workload)?;
                match (mode, traced) {
                    (Mode::Untraced, _) => untraced.push(elapsed),
                    (Mode::Strace, _) => strace.push(elapsed),
                    (Mode::Traced, Some(traced)) => {
                        load_times.push(traced.load_attach_ms);
                        traced_command.push(traced.command_ms);
                        traced_fixed.push(elapsed - traced.command_ms);
                        lost += traced.lost;
                        events = traced.events;
                    }
                    (Mode::Traced, None) => bail!("no summary from the traced run"),
                }
                eprintln!(
                    "bench: {} round {} {}: {elapsed:.0} ms",
                    workload.name,
                    round + 1,
                    mode.label()
                );
            }
        }
        let untraced = median(&mut untraced);
        let traced = median(&mut traced_command);
        let fixed = median(&mut traced_fixed);
        let strace = median(&mut strace);
        let percent = |value: f64| format!("{:+.1}%", (value / untraced - 1.0) * 100.0);
        let ratio = if traced > untraced {
            format!("{:.1}×", (strace - untraced) / (traced - untraced))
        } else {
            "eBPF overhead within noise".to_string()
        };
        report.push_str(&format!(
            "| {} | {untraced:.0} ms | {traced:.0} ms | {fixed:.0} ms | {strace:.0} ms | {} | {} | {ratio} | {lost} ({events} events/run) | {} |\n",
            workload.name,
            percent(traced),
            percent(strace),
            crate::load_average(),
        ));
    }

    let mut loaded_with_burners = (0, String::new(), String::new());
    {
        let _burners = [CpuBurner::start()?, CpuBurner::start()?];
        let files = scratch.0.join("files");
        std::fs::create_dir(&files)?;
        let churn = Workload {
            name: "opens and new files".into(),
            command: vec![
                python.clone(),
                "-c".into(),
                format!(
                    "import os\nfor i in range({OPENS}):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n\
                     for i in range({NEW_FILES}):\n    os.close(os.open('{}/f%d' % i, os.O_WRONLY | os.O_CREAT, 0o644))\n",
                    files.display()
                ),
            ],
            cleanup: None,
        };
        let (_, traced) = run_once(&tracer, Mode::Traced, &churn)?;
        if let Some(traced) = traced {
            loaded_with_burners = (traced.lost, traced.incomplete, crate::load_average());
        }
        std::fs::remove_dir_all(&files)?;
    }
    let load = median(&mut load_times);
    println!("{report}");
    println!(
        "load+attach (median of {} traced runs): {load:.0} ms (target ≤ 200 ms); load {}",
        load_times.len(),
        crate::load_average()
    );
    println!(
        "lost events, {OPENS} opens + {NEW_FILES} new files beside two CPU-bound processes: {} (target 0); incomplete: [{}]; load {}",
        loaded_with_burners.0, loaded_with_burners.1, loaded_with_burners.2
    );
    let binary = workspace.join("target/release/oci-attest");
    // `run` runs the commands as the unprivileged test user, as the tests do: the scratch dir
    // is theirs.
    give_to_test_user(&scratch.0)?;
    whole_run(&binary, &tracer, &scratch.0, &workloads, options.rounds)?;
    // The flood runs as the test user, who cannot reach a python under root's home.
    flood(&binary, SYSTEM_PYTHON, &scratch.0)?;
    exec_storm(workspace, &binary, &scratch.0)?;
    working_dir_walk(&binary, &scratch.0, options.rounds)?;
    Ok(())
}

/// Exec storm: 20 000 processes, 2 at a time, each exec'd with 200 arguments of 100 bytes (the
/// attack helper's `exec-storm`). Reports peak RSS (`/usr/bin/time -v`), wall time and exit code.
fn exec_storm(workspace: &Path, binary: &Path, scratch: &Path) -> anyhow::Result<()> {
    let attacker = scratch.join("attacker");
    let status = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&attacker)
        .arg(workspace.join("tests/attackers/attacker.c"))
        .arg("-lpthread")
        .status()
        .context("compiling the attacker helper (gcc)")?;
    ensure!(status.success(), "compiling the attacker helper failed");
    let dir = scratch.join("storm");
    std::fs::create_dir(&dir)?;
    give_to_test_user(&dir)?;
    let started = Instant::now();
    let mut time = Command::new("/usr/bin/time");
    invoked_by_test_user(&mut time)?;
    let output = time
        .arg("-v")
        .arg(binary)
        .args(["--quiet", "run", "--unsigned", "--trace", "ebpf", "-o"])
        .arg(scratch.join("storm.json"))
        .arg("--")
        .arg(&attacker)
        .args(["exec-storm", "20000", "2", "200", "100"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .output()
        .context("running the exec storm under /usr/bin/time")?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let peak_kib = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|value| value.trim().parse::<u64>().ok())
        .context("no peak RSS from /usr/bin/time")?;
    let exit = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("Exit status: "))
        .unwrap_or("?");
    let reasons: Vec<&str> = ["argv-limit", "lost-events"]
        .into_iter()
        .filter(|reason| stderr.contains(reason))
        .collect();
    println!(
        "exec storm, 20000 execs × 200 args × 100 B: peak RSS {} MiB (target ≤ 256), {seconds:.1} s, exit {exit} ({}); load {}",
        peak_kib / 1024,
        reasons.join(", "),
        crate::load_average()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The working-directory comparison on 20 000 files: `run -v -- true` in such a directory, the
/// walk after the command and the comparison with the trace as `run` logs them (medians).
fn working_dir_walk(binary: &Path, scratch: &Path, rounds: usize) -> anyhow::Result<()> {
    const FILES: usize = 20_000;
    let dir = scratch.join("walk");
    for index in 0..FILES {
        let sub = dir.join(format!("d{}", index / 500));
        if index % 500 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::write(sub.join(format!("f{index}")), index.to_string())?;
    }
    let (mut walks, mut compares) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let output = run_command(binary)?
            .args(["-v", "--unsigned", "--trace", "ebpf", "-o"])
            .arg(scratch.join("walk.json"))
            .args(["--", "true"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .output()
            .context("running oci-attest in the 20 000-file directory")?;
        ensure!(
            output.status.success(),
            "oci-attest run -- true in the 20 000-file directory failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        walks.push(logged_ms(&stderr, "files in ")?);
        compares.push(logged_ms(&stderr, "compared in ")?);
    }
    println!(
        "working directory of {FILES} files: walk after the command {:.1} ms, comparison with the trace {:.1} ms (medians of {rounds}); load {}",
        median(&mut walks),
        median(&mut compares),
        crate::load_average()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The duration `run -v` logged right after `marker` (Rust's `Debug` of a `Duration`).
fn logged_ms(stderr: &str, marker: &str) -> anyhow::Result<f64> {
    let text = stderr
        .split_once(marker)
        .map(|(_, rest)| rest.split([':', ' ', '\n']).next().unwrap_or_default())
        .with_context(|| format!("`run -v` did not log \"{marker}\": {stderr}"))?;
    let (number, scale) = if let Some(value) = text.strip_suffix("ms") {
        (value, 1.0)
    } else if let Some(value) = text.strip_suffix("µs") {
        (value, 0.001)
    } else if let Some(value) = text.strip_suffix("ns") {
        (value, 0.000_001)
    } else if let Some(value) = text.strip_suffix('s') {
        (value, 1000.0)
    } else {
        bail!("cannot read the duration {text:?}")
    };
    Ok(number.parse::<f64>().context("bad duration")? * scale)
}

/// New files created beside the burners: each is one event (reads cost none).
const NEW_FILES: u32 = 20_000;

/// `oci-attest run --trace ebpf` against `--trace off`, whole process, on `true` and on the
/// workloads; with the phases of the tracer's fixed cost measured by `trace_only` on `true`.
fn whole_run(
    binary: &Path,
    tracer: &Path,
    scratch: &Path,
    workloads: &[Workload],
    rounds: usize,
) -> anyhow::Result<()> {
    let truth = Workload {
        name: "true".into(),
        command: vec!["true".into()],
        cleanup: None,
    };
    let mut phases = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        if let (_, Some(traced)) = run_once(tracer, Mode::Traced, &truth)? {
            phases.0.push(traced.load_ms);
            phases.1.push(traced.attach_ms);
            phases.2.push(traced.detach_ms);
        }
    }
    println!(
        "\ntracer phases on `true` (medians): load {:.1} ms, attach {:.2} ms, detach {:.2} ms; load average {}",
        median(&mut phases.0),
        median(&mut phases.1),
        median(&mut phases.2),
        crate::load_average()
    );
    println!(
        "\n| `oci-attest run` whole process | --trace off | --trace ebpf | difference | ratio | load |\n|---|---|---|---|---|---|"
    );
    let outfile = scratch.join("attestation.json");
    // `true` in an empty directory is the tracer's whole fixed cost; beside the generated image,
    // which is hashed as a material meanwhile, it shows how much of it the load hides.
    let empty = scratch.join("empty");
    std::fs::create_dir_all(&empty).context("creating an empty working directory")?;
    let mut cases = vec![
        (
            "true, empty working directory".to_owned(),
            &truth,
            empty.as_path(),
        ),
        (
            "true, beside the generated image".to_owned(),
            &truth,
            scratch,
        ),
    ];
    // The skopeo copy (the opens and small writes are measured above).
    cases.extend(
        workloads
            .iter()
            .skip(2)
            .map(|workload| (workload.name.clone(), workload, scratch)),
    );
    for (name, workload, working_dir) in cases {
        let mut off = Vec::new();
        let mut ebpf = Vec::new();
        for _ in 0..rounds {
            for (trace, samples) in [("off", &mut off), ("ebpf", &mut ebpf)] {
                let started = Instant::now();
                let status = run_command(binary)?
                    .args(["--quiet", "--unsigned", "--trace", trace, "-o"])
                    .arg(&outfile)
                    .arg("--")
                    .args(&workload.command)
                    .current_dir(working_dir)
                    .stdout(Stdio::null())
                    .status()
                    .context("running oci-attest run")?;
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
                ensure!(
                    status.success(),
                    "oci-attest run --trace {trace} -- {name} failed: {status}"
                );
                if let Some(cleanup) = &workload.cleanup {
                    let _ = std::fs::remove_file(cleanup);
                }
            }
        }
        let (off, ebpf) = (median(&mut off), median(&mut ebpf));
        println!(
            "| {name} | {off:.0} ms | {ebpf:.0} ms | {:+.0} ms | {:.3}× | {} |",
            ebpf - off,
            ebpf / off,
            crate::load_average()
        );
    }
    println!("targets: `true` (empty working directory) ≤ +150 ms; skopeo copy of 400 MiB ≤ 1.05×");
    Ok(())
}

/// A flood of new files into a one-page ring buffer must lose events, and `run` must refuse
/// to sign (exit 3).
fn flood(binary: &Path, python: &str, scratch: &Path) -> anyhow::Result<()> {
    let dir = scratch.join("flood");
    std::fs::create_dir(&dir)?;
    give_to_test_user(&dir)?;
    let status = run_command(binary)?
        .args([
            "--quiet",
            "--unsigned",
            "--trace",
            "ebpf",
            "--trace-buffer-bytes",
            "4096",
            "-o",
        ])
        .arg(scratch.join("flood.json"))
        .arg("--")
        .args([
            python,
            "-c",
            "import os\nfor i in range(20000):\n    os.close(os.open('f%d' % i, os.O_WRONLY | os.O_CREAT, 0o644))\n",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running the flood")?;
    println!(
        "flood of 20000 new files into a 4 KiB ring buffer: exit {} (target 3); load {}",
        status.code().unwrap_or(-1),
        crate::load_average()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Builds the `trace_only` example in release mode and returns its path.
fn build_tracer(workspace: &Path) -> anyhow::Result<PathBuf> {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    let tools = workspace.join(".tools/bin");
    if tools.is_dir() {
        let mut joined = std::ffi::OsString::from(tools);
        joined.push(":");
        joined.push(&path);
        path = joined;
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .env("PATH", path)
        .args([
            "build",
            "--release",
            "-p",
            "oci-attest",
            "--example",
            "trace_only",
            "--bin",
            "oci-attest",
        ])
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "building oci-attest and the trace_only example failed"
    );
    Ok(workspace.join("target/release/examples/trace_only"))
}

/// Debian's python (`cargo xtask setup` installs it), for commands `run` starts as the test user.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The python interpreter itself, not a version-manager shim (a shim adds its own startup).
fn real_python() -> anyhow::Result<String> {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("python3 is needed for the open loop")?;
    ensure!(output.status.success(), "python3 failed");
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// One measured run: wall time in ms, and for the traced mode what the tracer reported.
fn run_once(
    tracer: &Path,
    mode: Mode,
    workload: &Workload,
) -> anyhow::Result<(f64, Option<TracedRun>)> {
    let mut command = match mode {
        Mode::Untraced => Command::new(&workload.command[0]),
        Mode::Traced => {
            let mut command = Command::new(tracer);
            command.arg("--").arg(&workload.command[0]);
            command
        }
        Mode::Strace => {
            let mut command = Command::new("strace");
            command
                .args(["-f", "-qq", "-o", "/dev/null", "-e", STRACE_FILTER])
                .arg(&workload.command[0]);
            command
        }
    };
    command
        .args(&workload.command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("running {}", workload.command[0]))?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{} ({}) failed: {stderr}", workload.name, mode.label());
    }
    if let Some(cleanup) = &workload.cleanup {
        let _ = std::fs::remove_file(cleanup);
    }
    let traced = if mode == Mode::Traced {
        let summary = stderr
            .lines()
            .rev()
            .find(|line| line.contains("\"loadAttachMs\""))
            .with_context(|| format!("no summary from trace_only: {stderr}"))?;
        Some(TracedRun {
            load_attach_ms: json_number(summary, "loadAttachMs")?,
            load_ms: json_number(summary, "loadMs")?,
            attach_ms: json_number(summary, "attachMs")?,
            detach_ms: json_number(summary, "detachMs")?,
            command_ms: json_number(summary, "commandMs")?,
            lost: json_number(summary, "lost")? as u64,
            events: json_number(summary, "events")? as u64,
            incomplete: summary
                .split_once("\"incomplete\":[")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(list, _)| list.to_string())
                .unwrap_or_default(),
        })
    } else {
        None
    };
    Ok((elapsed, traced))
}

/// A number field of the one-line JSON summary (flat object, no nesting, no strings with
/// quotes: a JSON parser would be a dependency for three numbers).
fn json_number(line: &str, key: &str) -> anyhow::Result<f64> {
    let pattern = format!("\"{key}\":");
    let start = line
        .find(&pattern)
        .with_context(|| format!("no {key} in {line}"))?
        + pattern.len();
    let value: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
        .collect();
    value
        .parse()
        .with_context(|| format!("bad {key} in {line}"))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Writes an OCI image layout with one uncompressed layer holding `mib` MiB of random bytes.
fn generate_image(python: &str, layout: &Path, mib: u64) -> anyhow::Result<()> {
    const SCRIPT: &str = r#"
import hashlib, json, os, sys, tarfile
layout, mib = sys.argv[1], int(sys.argv[2])
blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}
layer_path = os.path.join(layout, "layer.tar")
with tarfile.open(layer_path, "w") as tar:
    info = tarfile.TarInfo("data.bin"); info.size = mib << 20
    with open("/dev/urandom", "rb") as random:
        tar.addfile(info, random)
hasher = hashlib.sha256()
with open(layer_path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        hasher.update(chunk)
layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar",
         "digest": "sha256:" + hasher.hexdigest(), "size": os.path.getsize(layer_path)}
os.rename(layer_path, os.path.join(blobs, hasher.hexdigest()))
config = put(json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode())
config["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = put(json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config, "layers": [layer]}).encode())
manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
manifest["annotations"] = {"org.opencontainers.image.ref.name": "bench"}
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [manifest]}, f)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
"#;
    let status = Command::new(python)
        .args(["-c", SCRIPT])
        .arg(layout)
        .arg(mib.to_string())
        .status()
        .context("running python3 to generate the image")?;
    ensure!(status.success(), "generating the bench image failed");
    Ok(())
}

/// Burns one CPU until dropped.
struct CpuBurner(std::process::Child);

impl CpuBurner {
    fn start() -> anyhow::Result<Self> {
        Ok(CpuBurner(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .context("starting a CPU burner")?,
        ))
    }
}

impl Drop for CpuBurner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private directory under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("bench-trace-{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
