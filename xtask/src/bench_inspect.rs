//! `cargo xtask bench inspect`: how close `oci-attest inspect` gets to the hardware limit.
//!
//! Generates a synthetic image (random, text, zeros, thousands of small files, mixed; five
//! layers) at two sizes, writes it as an uncompressed docker-archive and as a gzip OCI
//! archive, then times, alternating and taking the median of `--runs`:
//! - docker-archive: `oci-attest inspect` vs `openssl dgst -sha256 FILE` (the floor: one hash
//!   of the file);
//! - OCI gzip: `oci-attest inspect` vs the standard-tools pipeline (openssl of the file, then
//!   per layer `tar -xO | pigz -dc | openssl dgst -sha256`);
//!
//! and the peak RSS of `oci-attest inspect` (from `/usr/bin/time`) at both sizes.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use oci_attest_tests::archive::{
    descriptor, sha256_hex, LAYOUT_MARKER, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use sha2::{Digest, Sha256};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the large image, in MiB (timed and measured).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Size of the small image, in MiB (peak RSS only, to show memory stays flat).
    #[arg(long, default_value_t = 256)]
    small_size_mib: u64,
    /// Timed runs per command (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the generated archives go (kept between runs: generation is slow).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Benchmark this oci-attest binary instead of a fresh `cargo build --release`.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Also time this second oci-attest binary in the same rounds (e.g. the static release
    /// build of `cargo xtask dist` against the glibc one) and print its ratio to the first.
    #[arg(long, value_name = "PATH")]
    compare: Option<PathBuf>,
}

const TARGET_PLAIN_RATIO: f64 = 1.3;
const TARGET_GZIP_RATIO: f64 = 0.75;
const TARGET_RSS_MIB: f64 = 64.0;

pub fn run(args: Args) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives inside the workspace")?
        .to_owned();
    for tool in ["openssl", "pigz", "tar", "/usr/bin/time"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()?
                .success(),
            "the bench needs `{tool}` (apt-get install openssl pigz tar time)"
        );
    }
    let oci_attest = match &args.binary {
        Some(binary) => binary.clone(),
        None => build_release(&root)?,
    };
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| root.join("target/bench-inspect"));
    std::fs::create_dir_all(&work_dir)?;

    let small = Image::generate(&work_dir, args.small_size_mib)?;
    let large = Image::generate(&work_dir, args.size_mib)?;

    let load_before = crate::load_average();
    let mut rss = Vec::new();
    for image in [&small, &large] {
        for archive in [&image.docker, &image.oci] {
            let sample = run_inspect(&oci_attest, archive, image)?;
            rss.push((image.size_mib, archive.clone(), sample.peak_rss_mib));
        }
    }

    let openssl = Path::new("openssl");
    let bash = Path::new("bash");
    let pipeline_script = large.pipeline_script();
    let mut plain = (Vec::new(), Vec::new());
    let mut gzip = (Vec::new(), Vec::new());
    let mut compared = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        if let Some(other) = &args.compare {
            compared.0.push(run_inspect(other, &large.docker, &large)?);
            compared.1.push(run_inspect(other, &large.oci, &large)?);
        }
        plain
            .0
            .push(run_inspect(&oci_attest, &large.docker, &large)?);
        plain.1.push(
            measured(
                openssl,
                &[
                    "dgst".as_ref(),
                    "-sha256".as_ref(),
                    large.docker.as_os_str(),
                ],
            )?
            .1,
        );
        gzip.0.push(run_inspect(&oci_attest, &large.oci, &large)?);
        gzip.1
            .push(measured(bash, &["-c".as_ref(), pipeline_script.as_ref()])?.1);
    }

    println!();
    println!(
        "inspect bench: {} MiB image, {} runs each, alternating, medians; {} cores; load average {} before, {} after",
        args.size_mib,
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        crate::load_average()
    );
    println!(
        "{:<32} {:>9} {:>9} {:>6} {:>7} | {:>8} {:>8} {:>6}",
        "archive", "inspect", "baseline", "ratio", "target", "cpu", "cpu base", "ratio"
    );
    let rows = [
        (
            format!("docker-archive plain ({} MiB)", mib(&large.docker)?),
            &plain,
            TARGET_PLAIN_RATIO,
            "openssl dgst -sha256 FILE",
        ),
        (
            format!("oci-archive gzip ({} MiB)", mib(&large.oci)?),
            &gzip,
            TARGET_GZIP_RATIO,
            "openssl FILE; per layer tar -xO | pigz -dc | openssl",
        ),
    ];
    let mut time_met = Vec::new();
    for (label, (ours, baseline), target, baseline_label) in rows {
        let wall = (
            median(ours, |s| s.wall.as_secs_f64()),
            median(baseline, |s| s.wall.as_secs_f64()),
        );
        let cpu = (median(ours, |s| s.cpu), median(baseline, |s| s.cpu));
        println!(
            "{label:<32} {:>8.2}s {:>8.2}s {:>6.2} {:>7} | {:>7.2}s {:>7.2}s {:>6.2}",
            wall.0,
            wall.1,
            wall.0 / wall.1,
            format!("≤{target}"),
            cpu.0,
            cpu.1,
            cpu.0 / cpu.1
        );
        println!("{:<32} baseline: {baseline_label}", "");
        time_met.push(wall.0 / wall.1 <= target);
    }
    if let Some(other) = &args.compare {
        println!();
        println!(
            "compared: {} vs {} (wall and cpu medians, ratio compared/benchmarked)",
            other.display(),
            oci_attest.display()
        );
        for (label, ours, theirs) in [
            ("docker-archive plain", &plain.0, &compared.0),
            ("oci-archive gzip", &gzip.0, &compared.1),
        ] {
            let wall = (
                median(theirs, |s| s.wall.as_secs_f64()),
                median(ours, |s| s.wall.as_secs_f64()),
            );
            let cpu = (median(theirs, |s| s.cpu), median(ours, |s| s.cpu));
            println!(
                "{label:<32} {:>8.2}s {:>8.2}s {:>6.2} | {:>7.2}s {:>7.2}s {:>6.2}",
                wall.0,
                wall.1,
                wall.0 / wall.1,
                cpu.0,
                cpu.1,
                cpu.0 / cpu.1
            );
        }
    }
    println!();
    println!("peak RSS of oci-attest inspect (target ≤ {TARGET_RSS_MIB} MiB):");
    let mut rss_ok = true;
    for (size, archive, peak) in &rss {
        let name = archive
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        println!("  {size:>5} MiB image  {name:<24} {peak:>6.1} MiB");
        rss_ok &= *peak <= TARGET_RSS_MIB;
    }
    println!();
    println!(
        "targets (wall clock): plain {} gzip {} rss {}",
        verdict(time_met[0]),
        verdict(time_met[1]),
        verdict(rss_ok)
    );
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn mib(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)?.len() >> 20)
}

fn median(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(value).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn build_release(root: &Path) -> Result<PathBuf> {
    // The build script links the eBPF object with bpf-linker from the project's tools dir.
    let tools = root.join(".tools/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(tools).chain(std::env::split_paths(&path)))?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "oci-attest"])
        .current_dir(root)
        .env("PATH", path)
        .status()?;
    ensure!(
        status.success(),
        "cargo build --release -p oci-attest failed"
    );
    Ok(root.join("target/release/oci-attest"))
}

/// One run of a command: wall time, CPU time (user + system, children included) and peak RSS.
/// CPU time is reported too because these machines are shared: under load, wall-clock ratios
/// say more about the neighbours than about the code.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    pub(crate) cpu: f64,
    pub(crate) peak_rss_mib: f64,
}

/// Runs `program args` under `/usr/bin/time`, returning its stdout and the sample.
pub(crate) fn measured(program: &Path, args: &[&std::ffi::OsStr]) -> Result<(Vec<u8>, Sample)> {
    let report = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(report.path())
        .arg(program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    let wall = started.elapsed();
    ensure!(
        output.status.success(),
        "{} {args:?} failed",
        program.display()
    );
    let report = std::fs::read_to_string(report.path())?;
    let fields: Vec<f64> = report
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected /usr/bin/time output {report:?}"))?;
    ensure!(
        fields.len() == 3,
        "unexpected /usr/bin/time output {report:?}"
    );
    let sample = Sample {
        wall,
        cpu: fields[0] + fields[1],
        peak_rss_mib: fields[2] / 1024.0,
    };
    Ok((output.stdout, sample))
}

/// Runs `oci-attest inspect --json` and checks its diffIDs against the generator's.
fn run_inspect(oci_attest: &Path, archive: &Path, image: &Image) -> Result<Sample> {
    let (stdout, sample) = measured(
        oci_attest,
        &["inspect".as_ref(), "--json".as_ref(), archive.as_os_str()],
    )?;
    let predicate: serde_json::Value = serde_json::from_slice(&stdout)?;
    let diff_ids: Vec<&str> = predicate["diffids"]
        .as_array()
        .context("no diffids")?
        .iter()
        .filter_map(|set| set["sha256"].as_str())
        .collect();
    ensure!(
        diff_ids
            == image
                .diff_ids
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        "oci-attest reported wrong diffIDs for {}",
        archive.display()
    );
    Ok(sample)
}

/// What the five synthetic layers hold.
#[derive(Clone, Copy)]
enum Content {
    Random,
    Text,
    Zeros,
    SmallFiles,
    Mixed,
}

const LAYERS: [(Content, u64); 5] = [
    // (content, share of the image in percent)
    (Content::Random, 25),
    (Content::Text, 25),
    (Content::Zeros, 15),
    (Content::SmallFiles, 15),
    (Content::Mixed, 20),
];

/// xorshift64*: fast, deterministic filler (the bench must not measure the generator's quality).
struct Filler {
    state: u64,
}

impl Filler {
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn random(&mut self, out: &mut [u8]) {
        for piece in out.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            piece.copy_from_slice(&bytes[..piece.len()]);
        }
    }

    fn text(&mut self, out: &mut [u8]) {
        const WORDS: [&[u8]; 16] = [
            b"layer ",
            b"image ",
            b"the ",
            b"container ",
            b"digest ",
            b"of ",
            b"a ",
            b"build\n",
            b"config ",
            b"archive ",
            b"and ",
            b"manifest ",
            b"to ",
            b"sha256 ",
            b"tar ",
            b"oci\n",
        ];
        let mut filled = 0;
        while filled < out.len() {
            let word = WORDS[(self.next() % 16) as usize];
            let count = word.len().min(out.len() - filled);
            out[filled..filled + count].copy_from_slice(&word[..count]);
            filled += count;
        }
    }

    fn fill(&mut self, content: Content, out: &mut [u8]) {
        match content {
            Content::Random => self.random(out),
            Content::Text | Content::SmallFiles => self.text(out),
            Content::Zeros => out.fill(0),
            Content::Mixed => {
                for (index, block) in out.chunks_mut(64 * 1024).enumerate() {
                    if index % 2 == 0 {
                        self.random(block);
                    } else {
                        self.text(block);
                    }
                }
            }
        }
    }
}

/// A `Read` of `remaining` generated bytes.
struct Generated<'a> {
    filler: &'a mut Filler,
    content: Content,
    remaining: u64,
}

impl Read for Generated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        self.filler.fill(self.content, &mut buf[..count]);
        self.remaining -= count as u64;
        Ok(count)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(buf)?;
        self.hasher.update(&buf[..count]);
        self.written += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing_file(path: &Path) -> Result<HashingWriter<BufWriter<File>>> {
    Ok(HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, File::create(path)?),
        hasher: Sha256::new(),
        written: 0,
    })
}

fn finish(writer: HashingWriter<BufWriter<File>>) -> Result<(String, u64)> {
    let mut inner = writer.inner;
    inner.flush()?;
    Ok((hex::encode(writer.hasher.finalize()), writer.written))
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header
}

/// Writes layer `index` as a tar; returns its diffID.
fn write_layer(path: &Path, content: Content, bytes: u64, seed: u64) -> Result<String> {
    let mut filler = Filler { state: seed | 1 };
    let mut builder = tar::Builder::new(hashing_file(path)?);
    match content {
        Content::SmallFiles => {
            let file_size = 4096;
            for number in 0..bytes / (file_size + 512) {
                let mut header = file_header(file_size);
                let reader = Generated {
                    filler: &mut filler,
                    content,
                    remaining: file_size,
                };
                builder.append_data(
                    &mut header,
                    format!("usr/share/doc/f{number:06}.txt"),
                    reader,
                )?;
            }
        }
        _ => {
            let mut header = file_header(bytes);
            let reader = Generated {
                filler: &mut filler,
                content,
                remaining: bytes,
            };
            builder.append_data(&mut header, "data.bin", reader)?;
        }
    }
    let (diff_id, _) = finish(builder.into_inner()?)?;
    Ok(diff_id)
}

/// A generated image at one size, as both archives.
struct Image {
    size_mib: u64,
    docker: PathBuf,
    oci: PathBuf,
    diff_ids: Vec<String>,
    /// Member names of the gzip layers inside the OCI archive.
    oci_layers: Vec<String>,
}

impl Image {
    fn generate(work_dir: &Path, size_mib: u64) -> Result<Image> {
        let docker = work_dir.join(format!("docker-{size_mib}m.tar"));
        let oci = work_dir.join(format!("oci-gzip-{size_mib}m.tar"));
        let stamp = work_dir.join(format!("done-{size_mib}m.json"));
        if let Ok(saved) = std::fs::read(&stamp) {
            let (diff_ids, oci_layers): (Vec<String>, Vec<String>) =
                serde_json::from_slice(&saved)?;
            if docker.exists() && oci.exists() {
                eprintln!(
                    "reusing the {size_mib} MiB archives in {}",
                    work_dir.display()
                );
                return Ok(Image {
                    size_mib,
                    docker,
                    oci,
                    diff_ids,
                    oci_layers,
                });
            }
        }
        eprintln!(
            "generating a {size_mib} MiB image in {} ...",
            work_dir.display()
        );
        let total = size_mib << 20;
        let mut layers = Vec::new();
        for (index, (content, share)) in LAYERS.iter().enumerate() {
            let plain = work_dir.join(format!("layer{index}.tar"));
            let diff_id = write_layer(&plain, *content, total * share / 100, index as u64 + 1)?;
            layers.push((plain, diff_id));
        }
        // pigz: what registries and skopeo produce (default level), on every core.
        let mut gzipped = Vec::new();
        for (plain, _) in &layers {
            let compressed = plain.with_extension("tar.gz");
            let status = Command::new("pigz")
                .arg("-6")
                .arg("-c")
                .arg(plain)
                .stdout(File::create(&compressed)?)
                .status()?;
            ensure!(status.success(), "pigz failed");
            gzipped.push(compressed);
        }
        let diff_ids: Vec<String> = layers.iter().map(|(_, diff_id)| diff_id.clone()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|hex| format!("sha256:{hex}")).collect::<Vec<_>>()},
        }))?;
        let config_hex = sha256_hex(&config);

        // docker-archive: `<diffID>/layer.tar`, `<config>.json`, manifest.json.
        let mut builder =
            tar::Builder::new(BufWriter::with_capacity(1 << 20, File::create(&docker)?));
        let mut names = Vec::new();
        for (plain, diff_id) in &layers {
            let name = format!("{diff_id}/layer.tar");
            builder.append_data(
                &mut file_header(std::fs::metadata(plain)?.len()),
                &name,
                File::open(plain)?,
            )?;
            names.push(name);
        }
        let config_name = format!("{config_hex}.json");
        builder.append_data(
            &mut file_header(config.len() as u64),
            &config_name,
            config.as_slice(),
        )?;
        let manifest = serde_json::to_vec(
            &serde_json::json!([{"Config": config_name, "RepoTags": [format!("bench:{size_mib}m")], "Layers": names}]),
        )?;
        builder.append_data(
            &mut file_header(manifest.len() as u64),
            "manifest.json",
            manifest.as_slice(),
        )?;
        builder.into_inner()?.flush()?;

        // OCI archive with gzip layers.
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, File::create(&oci)?));
        builder.append_data(
            &mut file_header(LAYOUT_MARKER.len() as u64),
            "oci-layout",
            LAYOUT_MARKER,
        )?;
        let mut descriptors = Vec::new();
        let mut oci_layers = Vec::new();
        for compressed in &gzipped {
            let mut hasher = Sha256::new();
            io::copy(&mut File::open(compressed)?, &mut hasher)?;
            let hex = hex::encode(hasher.finalize());
            let size = std::fs::metadata(compressed)?.len();
            let name = format!("blobs/sha256/{hex}");
            builder.append_data(&mut file_header(size), &name, File::open(compressed)?)?;
            descriptors.push(serde_json::json!({"mediaType": OCI_LAYER_GZIP, "digest": format!("sha256:{hex}"), "size": size}));
            oci_layers.push(name);
        }
        builder.append_data(
            &mut file_header(config.len() as u64),
            format!("blobs/sha256/{config_hex}"),
            config.as_slice(),
        )?;
        let oci_manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": descriptors,
        }))?;
        let manifest_hex = sha256_hex(&oci_manifest);
        builder.append_data(
            &mut file_header(oci_manifest.len() as u64),
            format!("blobs/sha256/{manifest_hex}"),
            oci_manifest.as_slice(),
        )?;
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": format!("sha256:{manifest_hex}"), "size": oci_manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": format!("bench:{size_mib}m")}}],
        }))?;
        builder.append_data(
            &mut file_header(index.len() as u64),
            "index.json",
            index.as_slice(),
        )?;
        builder.into_inner()?.flush()?;

        for path in layers.iter().map(|(plain, _)| plain).chain(&gzipped) {
            std::fs::remove_file(path)?;
        }
        std::fs::write(&stamp, serde_json::to_vec(&(&diff_ids, &oci_layers))?)?;
        Ok(Image {
            size_mib,
            docker,
            oci,
            diff_ids,
            oci_layers,
        })
    }

    /// The standard tools doing the same job: hash the file, then decompress and hash each layer.
    fn pipeline_script(&self) -> String {
        let file = shell_quote(&self.oci);
        let mut script = format!("set -eo pipefail; openssl dgst -sha256 {file} >/dev/null");
        for layer in &self.oci_layers {
            script.push_str(&format!(
                "; tar -xOf {file} {layer} | pigz -dc | openssl dgst -sha256 >/dev/null"
            ));
        }
        script
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
