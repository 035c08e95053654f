//! `cargo xtask dist`: the release directory. A static x86_64 musl binary with the eBPF object
//! embedded, built from an export of the committed tree under `oci-attest run` (the release
//! build is attested by oci-attest itself), plus the tarball users download, the license, a
//! CycloneDX SBOM of the crate graph (cargo-cyclonedx), a container image (buildah, FROM
//! scratch + CA certificates) and `SHA256SUMS` over all of it.
//!
//! The layout under `--out` (default `target/dist`):
//! - `build/src`: the exported tree (the run's working directory, so its files are the
//!   attestation's materials); it builds into the workspace's target dir (outside the working
//!   dir, so only the binary is a product), where the dependencies compiled for the musl target
//!   stay between runs;
//! - `release/`: what a GitHub release holds (see [`build`]).

use std::fs::File;
use std::io::{BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};
use base64::Engine as _;
use oci_attest_tests::command::{self, describe, stdout_of};
use oci_attest_tests::paths;
use oci_attest_tests::storage::{remove_tree, ContainersStorage};
use sha2::{Digest as _, Sha256};

pub use oci_attest_tests::release::TARGET;

/// The version of the workspace (xtask shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the CA bundle of Debian's ca-certificates lives; copied into the image.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Output directory (default: target/dist); the release goes to OUT/release.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sign the release build's attestation with this key (default: a key made for this run,
    /// whose public half goes into the release).
    #[arg(long, value_name = "KEY.pem")]
    pub key: Option<PathBuf>,
}

/// The tarball's name (and its top directory's, without `.tar.gz`): what the action and the
/// GitLab template download.
pub fn archive_stem() -> String {
    format!("oci-attest-{VERSION}-{TARGET}")
}

/// `cargo xtask dist`: set up, build the host oci-attest that attests the release build, then
/// the release.
pub fn run(args: &Args) -> anyhow::Result<PathBuf> {
    crate::setup::run()?;
    let wrapper = crate::test_run::build_host_binary()?;
    build(args, &wrapper)
}

/// The release directory, with `wrapper` (an oci-attest built for the host) attesting the
/// build. It holds `oci-attest` (the static binary), `oci-attest-VERSION-TARGET.tar.gz` (a
/// directory with the binary, LICENSE and README.md), `LICENSE`, `oci-attest-VERSION.cdx.json`
/// (the SBOM), `oci-attest-VERSION-release.att.json` and `.pub.pem` (the attested build and its
/// key), `oci-attest-VERSION-image.oci.tar` (the container image) and `SHA256SUMS`.
pub fn build(args: &Args, wrapper: &Path) -> anyhow::Result<PathBuf> {
    let out = std::path::absolute(
        args.out
            .clone()
            .unwrap_or_else(|| paths::workspace_root().join("target/dist")),
    )?;
    let build_dir = out.join("build");
    let source = build_dir.join("src");
    let commit = export_tree(&source)?;
    println!("dist: building {VERSION} ({commit}) for {TARGET} under oci-attest run");

    let dir = out.join("release");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let keys = tempfile::Builder::new()
        .prefix("oci-attest-dist-key.")
        .tempdir()
        .context("cannot create a temp dir for the signing key")?;
    let (key, public_key) = signing_key(args.key.as_deref(), wrapper, keys.path(), &dir)?;

    let attestation = dir.join(format!("oci-attest-{VERSION}-release.att.json"));
    let built = attested_build(
        wrapper,
        &key,
        &source,
        &crate::test_run::target_dir(),
        &commit,
        &attestation,
    )?;
    let binary = dir.join("oci-attest");
    std::fs::copy(&built, &binary).with_context(|| format!("cannot copy {}", built.display()))?;
    check_attested(&attestation, &binary)?;

    let license = dir.join("LICENSE");
    std::fs::copy(source.join("LICENSE"), &license).context("cannot copy LICENSE")?;
    let tarball = dir.join(format!("{}.tar.gz", archive_stem()));
    write_tarball(
        &tarball,
        &[
            ("oci-attest", &binary, 0o755),
            ("LICENSE", &license, 0o644),
            ("README.md", &source.join("README.md"), 0o644),
        ],
        commit_time(&commit)?,
    )?;
    let sbom = dir.join(format!("oci-attest-{VERSION}.cdx.json"));
    write_sbom(&source, &sbom)?;
    let image = dir.join(format!("oci-attest-{VERSION}-image.oci.tar"));
    build_image(&binary, &commit, &image, &out)?;
    let sha256sums = dir.join("SHA256SUMS");
    write_sha256sums(
        &sha256sums,
        &[
            &binary,
            &tarball,
            &license,
            &sbom,
            &attestation,
            &public_key,
            &image,
        ],
    )?;
    println!("dist: release in {}", dir.display());
    Ok(dir)
}

/// Exports the tracked files as they are now (committed, or with their uncommitted changes
/// through `git stash create`) into `dest`, replacing what was there; returns the commit the
/// binary reports (`-dirty` when there were changes). A release holds what git holds: no
/// untracked or ignored file can slip into it.
fn export_tree(dest: &Path) -> anyhow::Result<String> {
    let root = paths::workspace_root();
    let git = |args: &[&str]| stdout_of(Command::new("git").args(args).current_dir(&root));
    let head = git(&["rev-parse", "HEAD"]).context("the release is built from a git checkout")?;
    let stash = git(&["stash", "create"])?;
    let (tree, commit) = if stash.is_empty() {
        (head.clone(), head)
    } else {
        (stash, format!("{head}-dirty"))
    };
    let fresh = dest.with_extension("new");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)
            .with_context(|| format!("cannot empty {}", fresh.display()))?;
    }
    std::fs::create_dir_all(&fresh)
        .with_context(|| format!("cannot create {}", fresh.display()))?;
    let mut archive = Command::new("git")
        .args(["archive", "--format=tar", &tree])
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start git archive")?;
    let stdout = archive.stdout.take().context("git archive stdout")?;
    let mut unpacker = tar::Archive::new(stdout);
    // Files dated now: cargo rebuilds a path crate only when a source file is newer than its
    // last build, and a commit's own dates can be older than that.
    unpacker.set_preserve_mtime(false);
    unpacker
        .unpack(&fresh)
        .with_context(|| format!("cannot unpack the tree into {}", fresh.display()))?;
    let status = archive.wait()?;
    ensure!(status.success(), "git archive {tree} failed ({status})");
    keep_unchanged_dates(&fresh, dest)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest)
            .with_context(|| format!("cannot empty {}", dest.display()))?;
    }
    std::fs::rename(&fresh, dest)
        .with_context(|| format!("cannot move {} to {}", fresh.display(), dest.display()))?;
    Ok(commit)
}

/// Gives each file of `fresh` whose bytes equal those of the same path in the previous export
/// `old` that file's date, so cargo rebuilds only the crates that changed.
fn keep_unchanged_dates(fresh: &Path, old: &Path) -> anyhow::Result<()> {
    let mut pending = vec![fresh.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let kind = path.symlink_metadata()?.file_type();
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let previous = old.join(path.strip_prefix(fresh)?);
            let Ok(previous_meta) = previous.symlink_metadata() else {
                continue;
            };
            if previous_meta.is_file() && std::fs::read(&previous)? == std::fs::read(&path)? {
                File::options()
                    .write(true)
                    .open(&path)?
                    .set_modified(previous_meta.modified()?)?;
            }
        }
    }
    Ok(())
}

/// The commit's time (seconds since the epoch): the tarball's file times, so the same commit
/// gives the same tarball.
fn commit_time(commit: &str) -> anyhow::Result<u64> {
    let commit = commit.trim_end_matches("-dirty");
    stdout_of(
        Command::new("git")
            .args(["show", "-s", "--format=%ct", commit])
            .current_dir(paths::workspace_root()),
    )?
    .parse()
    .context("git show --format=%ct printed no number")
}

/// The private key to sign with and the public key shipped beside the attestation: `given`, or
/// a new Ed25519 key in `scratch` (a root-only temp dir) for this release only.
fn signing_key(
    given: Option<&Path>,
    wrapper: &Path,
    scratch: &Path,
    release: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key = match given {
        Some(key) => key.to_path_buf(),
        None => {
            let key = scratch.join("release-key.pem");
            command::run(
                Command::new(wrapper)
                    .args(["keygen", "--algorithm", "ed25519", "--out"])
                    .arg(&key),
            )?;
            key
        }
    };
    let public = PathBuf::from(format!("{}.pub", key.display()));
    ensure!(
        public.is_file(),
        "{} has no public key beside it ({})",
        key.display(),
        public.display()
    );
    let shipped = release.join(format!("oci-attest-{VERSION}-release.pub.pem"));
    std::fs::copy(&public, &shipped)
        .with_context(|| format!("cannot copy {}", public.display()))?;
    Ok((key, shipped))
}

/// `cargo build --release --target musl` of the exported tree, wrapped by `oci-attest run`;
/// returns the built binary.
fn attested_build(
    wrapper: &Path,
    key: &Path,
    source: &Path,
    target_dir: &Path,
    commit: &str,
    attestation: &Path,
) -> anyhow::Result<PathBuf> {
    let built = target_dir.join(TARGET).join("release/oci-attest");
    let mut run = Command::new(wrapper);
    // The Rust toolchain (rustup under root's home) and the target dir are root's here, so the
    // build runs as root, said explicitly; the attestation records it (identity.root) and
    // verifying it takes --allow-root-command.
    run.arg("run")
        .args(["--run-as", "root"])
        .args([
            "--step",
            "release-build",
            "--trace",
            "ebpf",
            "-a",
            "environment",
        ])
        .arg("-k")
        .arg(key)
        .arg("-o")
        .arg(attestation)
        .arg("--workingdir")
        .arg(source)
        // The target dir is outside the working dir, so only the binary is a product.
        .arg("--attestor-product-include-glob")
        .arg(&built)
        .args([
            "--",
            "cargo",
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            // A download needs no symbol table (25.3 MB → 21.4 MB, gzip 9.1 → 8.0 MB, measured
            // on this build); panic messages still name the file and line.
            "--config",
            "profile.release.strip=\"symbols\"",
        ])
        .args(["-p", "oci-attest"])
        .current_dir(source)
        .env("PATH", paths::search_path())
        .env("CARGO_TARGET_DIR", target_dir)
        .env("OCI_ATTEST_GIT_COMMIT", commit)
        .stdin(Stdio::null());
    let status = run
        .status()
        .with_context(|| format!("cannot start `{}`", describe(&run)))?;
    ensure!(
        status.success(),
        "the attested release build failed ({status}): `{}`",
        describe(&run)
    );
    ensure!(built.is_file(), "the build left no {}", built.display());
    Ok(built)
}

/// The shipped binary must be the product the attestation names.
fn check_attested(attestation: &Path, binary: &Path) -> anyhow::Result<()> {
    let envelope: serde_json::Value = serde_json::from_reader(BufReader::new(
        File::open(attestation)
            .with_context(|| format!("cannot open {}", attestation.display()))?,
    ))?;
    let payload = envelope["payload"]
        .as_str()
        .context("the attestation has no payload")?;
    let statement: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(payload)
            .context("the attestation's payload is not base64")?,
    )?;
    let digest = sha256_file(binary)?;
    // Products are a Merkle tree (the subject is its root); the files are its leaves.
    let named = statement["predicate"]["attestations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| {
            entry["type"]
                .as_str()
                .is_some_and(|uri| uri.contains("/product/"))
        })
        .flat_map(|entry| {
            entry["attestation"]["leaves"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .any(|leaf| {
            leaf["fileDigest"].as_str() == Some(digest.as_str())
                && leaf["path"]
                    .as_str()
                    .is_some_and(|path| path.ends_with("/oci-attest"))
        });
    ensure!(
        named,
        "the attestation {} does not name the built binary (sha256:{digest}) as a product",
        attestation.display()
    );
    Ok(())
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A gzip tar of `files` under one top directory, owned by root, dated `mtime`.
fn write_tarball(path: &Path, files: &[(&str, &Path, u32)], mtime: u64) -> anyhow::Result<()> {
    let stem = archive_stem();
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    let mut builder = tar::Builder::new(gzip);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_mtime(mtime);
    header.set_size(0);
    builder.append_data(&mut header, format!("{stem}/"), std::io::empty())?;
    for (name, source, mode) in files {
        let data =
            std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(*mode);
        header.set_mtime(mtime);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, format!("{stem}/{name}"), data.as_slice())?;
    }
    builder.into_inner()?.finish()?.sync_all()?;
    Ok(())
}

/// CycloneDX JSON of oci-attest's dependency graph for the release target, made by
/// cargo-cyclonedx (installed by setup) from the exported tree's Cargo.lock.
fn write_sbom(source: &Path, dest: &Path) -> anyhow::Result<()> {
    let name = "oci-attest.cdx";
    command::run(
        Command::new("cargo")
            .args(["cyclonedx", "--format", "json", "--target", TARGET])
            .args(["--spec-version", "1.5", "--override-filename", name])
            .arg("--manifest-path")
            .arg(source.join("oci-attest/Cargo.toml"))
            .current_dir(source)
            .env("PATH", paths::search_path()),
    )?;
    let written = source.join("oci-attest").join(format!("{name}.json"));
    std::fs::rename(&written, dest)
        .or_else(|_| std::fs::copy(&written, dest).map(drop))
        .with_context(|| format!("cargo cyclonedx wrote no {}", written.display()))?;
    Ok(())
}

/// The container image: `FROM scratch` + the binary + the CA bundle, built with buildah in a
/// private storage under `scratch_root`, written as an OCI archive tagged `oci-attest:VERSION`.
fn build_image(
    binary: &Path,
    commit: &str,
    dest: &Path,
    scratch_root: &Path,
) -> anyhow::Result<()> {
    let scratch = scratch_root.join("image-build");
    remove_tree(&scratch)?;
    let storage = ContainersStorage::create(&scratch)?;
    let result = (|| -> anyhow::Result<()> {
        let buildah = |args: &[&std::ffi::OsStr]| stdout_of(storage.command("buildah").args(args));
        let container = buildah(&["from".as_ref(), "scratch".as_ref()])?;
        let container = container.as_str();
        for (source, dest, mode) in [
            (binary, "/usr/local/bin/oci-attest", "0755"),
            (Path::new(CA_BUNDLE), CA_BUNDLE, "0644"),
        ] {
            buildah(&[
                "copy".as_ref(),
                "--chmod".as_ref(),
                mode.as_ref(),
                container.as_ref(),
                source.as_os_str(),
                dest.as_ref(),
            ])?;
        }
        let labels = [
            format!("org.opencontainers.image.version={VERSION}"),
            format!("org.opencontainers.image.revision={commit}"),
            "org.opencontainers.image.licenses=Apache-2.0".to_owned(),
            "org.opencontainers.image.title=oci-attest".to_owned(),
        ];
        let mut config: Vec<std::ffi::OsString> = vec![
            "config".into(),
            "--entrypoint".into(),
            r#"["/usr/local/bin/oci-attest"]"#.into(),
            "--cmd".into(),
            r#"["--help"]"#.into(),
            "--env".into(),
            format!("SSL_CERT_FILE={CA_BUNDLE}").into(),
            "--workingdir".into(),
            "/work".into(),
        ];
        for label in &labels {
            config.extend(["--label".into(), label.into()]);
        }
        config.push(container.into());
        let config: Vec<&std::ffi::OsStr> = config.iter().map(|arg| arg.as_os_str()).collect();
        buildah(&config)?;
        let name = format!("localhost/oci-attest:{VERSION}");
        buildah(&[
            "commit".as_ref(),
            "--quiet".as_ref(),
            container.as_ref(),
            name.as_ref(),
        ])?;
        let archive = format!("oci-archive:{}:{name}", dest.display());
        buildah(&[
            "push".as_ref(),
            "--quiet".as_ref(),
            name.as_ref(),
            archive.as_ref(),
        ])?;
        Ok(())
    })();
    let cleanup = remove_tree(&scratch);
    result.context("building the container image with buildah")?;
    cleanup
}

/// `SHA256SUMS` as `sha256sum` writes it (and `sha256sum -c` reads it): `HEX  NAME`.
fn write_sha256sums(path: &Path, files: &[&Path]) -> anyhow::Result<()> {
    let mut text = String::new();
    for file in files {
        let name = file
            .file_name()
            .with_context(|| format!("{} has no file name", file.display()))?;
        text.push_str(&format!(
            "{}  {}\n",
            sha256_file(file)?,
            name.to_string_lossy()
        ));
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
