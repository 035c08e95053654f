//! `cargo xtask bench trace`: the cost of tracing a command with oci-attest's eBPF programs,
//! against the same command untraced and under strace.
//!
//! Workloads: (b) a loop of 100k file opens; (a) `skopeo copy` of a generated image to a
//! docker-archive. Modes alternate inside each round (so drifting machine load hits every mode
//! alike); the table shows medians. The traced mode runs the `trace_only` example of oci-attest
//! (load + attach + trace, no image analysis), which also reports its load+attach time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};

pub struct Options {
    /// Rounds per workload (≥ 3).
    pub rounds: usize,
    /// Size of the generated image for the skopeo workload; 0 skips it.
    pub image_mib: u64,
}

const OPENS: u32 = 100_000;
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
    /// From releasing the child to its exit, measured inside the tracer: the traced run
    /// without the fixed costs (load+attach before, detach after).
    command_ms: f64,
    lost: u64,
    events: u64,
}

pub fn run(workspace: &Path, options: &Options) -> anyhow::Result<()> {
    ensure!(
        options.rounds >= 3,
        "--rounds must be at least 3 for a median"
    );
    let tracer = build_tracer(workspace)?;
    let python = real_python()?;
    let scratch = Scratch::create()?;

    let mut workloads = vec![Workload {
        name: format!("{OPENS} opens (python loop)"),
        command: vec![
            python.clone(),
            "-c".into(),
            format!(
                "import os\nfor i in range({OPENS}):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"
            ),
        ],
        cleanup: None,
    }];
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
         | eBPF overhead | strace overhead | strace/eBPF overhead | lost |\n\
         |---|---|---|---|---|---|---|---|---|\n",
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
            "| {} | {untraced:.0} ms | {traced:.0} ms | {fixed:.0} ms | {strace:.0} ms | {} | {} | {ratio} | {lost} ({events} events/run) |\n",
            workload.name,
            percent(traced),
            percent(strace),
        ));
    }

    let mut loaded_with_burners = 0;
    {
        let _burners = [CpuBurner::start()?, CpuBurner::start()?];
        let (_, traced) = run_once(&tracer, Mode::Traced, &workloads[0])?;
        if let Some(traced) = traced {
            loaded_with_burners = traced.lost;
        }
    }
    let load = median(&mut load_times);
    println!("{report}");
    println!(
        "load+attach (median of {} traced runs): {load:.0} ms (target ≤ 200 ms)",
        load_times.len()
    );
    println!(
        "lost events, {OPENS} opens beside two CPU-bound processes: {loaded_with_burners} (target 0)"
    );
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
        ])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building the trace_only example failed");
    Ok(workspace.join("target/release/examples/trace_only"))
}

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
            command_ms: json_number(summary, "commandMs")?,
            lost: json_number(summary, "lost")? as u64,
            events: json_number(summary, "events")? as u64,
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
