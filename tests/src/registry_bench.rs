//! What the registry tests share: the registries `cargo xtask test` started, a signing key, a
//! work directory, skopeo as the independent client, and oci-attest run against them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;

use crate::command::run;
use crate::fixtures::Fixtures;
use crate::oci_attest;
use crate::registry::RegistryEnv;

/// The oci predicate type, the prefix of the image subjects.
pub const OCI_PREDICATE: &str = "https://aflock.ai/attestations/oci/v0.1";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Exit codes from `oci-attest --help`.
pub const EXIT_MISMATCH: i32 = 7;
pub const EXIT_REGISTRY: i32 = 9;

/// Each test pushes to its own repository, so they can run in parallel.
static REPOSITORY_SERIAL: AtomicUsize = AtomicUsize::new(0);

/// A repository name no other test (or run) uses.
pub fn repository(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        REPOSITORY_SERIAL.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Bench {
    pub registries: RegistryEnv,
    pub fixtures: Fixtures,
    pub work: tempfile::TempDir,
    pub key: PathBuf,
    pub public: PathBuf,
    /// A containers cert dir holding the TLS registry's CA (skopeo's `--dest-cert-dir`).
    pub cert_dir: PathBuf,
}

impl Bench {
    pub fn prepare() -> anyhow::Result<Self> {
        oci_attest::binary()?;
        let registries = RegistryEnv::from_env()?;
        let fixtures = Fixtures::from_env()?;
        // The command's user writes here; the key in it is root's (mode 0600).
        let work = oci_attest::user_dir()?;
        let key = work.path().join("key.pem");
        let out = oci_attest::output([Path::new("keygen"), Path::new("--out"), &key])?;
        anyhow::ensure!(out.status.success(), "keygen failed: {}", text(&out));
        let cert_dir = work.path().join("certs");
        std::fs::create_dir(&cert_dir)?;
        std::fs::copy(&registries.ca, cert_dir.join("ca.crt"))?;
        Ok(Bench {
            public: work.path().join("key.pem.pub"),
            registries,
            fixtures,
            key,
            cert_dir,
            work,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    pub fn fixture(&self, name: &str) -> PathBuf {
        let fixture = self
            .fixtures
            .get(name)
            .unwrap_or_else(|error| panic!("{error:#}"));
        self.fixtures.path(fixture)
    }

    /// oci-attest options for the TLS registry (credentials and CA).
    pub fn tls_options(&self) -> Vec<String> {
        vec![
            format!("--creds={}", self.registries.creds()),
            format!("--ca-file={}", self.registries.ca.display()),
        ]
    }

    /// `skopeo copy` of a fixture archive to `docker://DEST` (TLS registry when `tls`).
    pub fn skopeo_push_args(&self, fixture: &str, destination: &str, tls: bool) -> Vec<String> {
        self.skopeo_copy_args(
            &format!("docker-archive:{}", self.fixture(fixture).display()),
            destination,
            tls,
        )
    }

    /// `skopeo copy SOURCE docker://DEST` with the options the registry needs.
    pub fn skopeo_copy_args(&self, source: &str, destination: &str, tls: bool) -> Vec<String> {
        let mut args = vec!["skopeo".to_owned(), "copy".to_owned(), "--quiet".to_owned()];
        if tls {
            args.push(format!("--dest-creds={}", self.registries.creds()));
            args.push(format!("--dest-cert-dir={}", self.cert_dir.display()));
        } else {
            args.push("--dest-tls-verify=false".to_owned());
        }
        args.push(source.to_owned());
        args.push(format!("docker://{destination}"));
        args
    }

    pub fn push(&self, fixture: &str, destination: &str, tls: bool) {
        run_args(&self.skopeo_push_args(fixture, destination, tls));
    }

    /// The raw bytes `skopeo inspect --raw` reads for `reference` (independent client).
    pub fn inspect_raw(&self, reference: &str, tls: bool) -> Vec<u8> {
        let options = if tls {
            vec![
                format!("--creds={}", self.registries.creds()),
                format!("--cert-dir={}", self.cert_dir.display()),
            ]
        } else {
            vec!["--tls-verify=false".to_owned()]
        };
        skopeo_inspect_raw(reference, &options)
    }

    /// The manifest digest (hex) of `reference`, as skopeo reads it.
    pub fn digest_of(&self, reference: &str, tls: bool) -> String {
        sha256(&self.inspect_raw(reference, tls))
    }

    /// oci-attest (not `run`: see [`Bench::run`]) with `args`, in the work directory.
    pub fn oci_attest(&self, args: &[String]) -> Output {
        self.oci_attest_with(args, |_| {})
    }

    /// [`Bench::oci_attest`], with the command adjusted first (environment, …).
    pub fn oci_attest_with(&self, args: &[String], adjust: impl FnOnce(&mut Command)) -> Output {
        self.output(oci_attest::command(), args, adjust)
    }

    fn output(
        &self,
        command: anyhow::Result<Command>,
        args: &[String],
        adjust: impl FnOnce(&mut Command),
    ) -> Output {
        let mut command = command.unwrap_or_else(|error| panic!("{error:#}"));
        command
            .args(args)
            .current_dir(self.work.path())
            .stdin(std::process::Stdio::null());
        adjust(&mut command);
        command
            .output()
            .unwrap_or_else(|error| panic!("cannot run oci-attest: {error}"))
    }

    /// `oci-attest run -k KEY -o OUT OPTIONS -- COMMAND`: every registry test starts `run`
    /// here, through the harness's [`oci_attest::run`] (the command runs as the test user).
    pub fn run(&self, out: &Path, options: &[String], command: &[String]) -> Output {
        self.run_with(out, options, command, |_| {})
    }

    /// [`Bench::run`], with the command adjusted first.
    pub fn run_with(
        &self,
        out: &Path,
        options: &[String],
        command: &[String],
        adjust: impl FnOnce(&mut Command),
    ) -> Output {
        let mut args = vec!["-k".to_owned()];
        args.push(self.key.display().to_string());
        args.push("-o".to_owned());
        args.push(out.display().to_string());
        args.extend(options.iter().cloned());
        args.push("--".to_owned());
        args.extend(command.iter().cloned());
        self.output(oci_attest::run(), &args, adjust)
    }
}

/// The raw bytes `skopeo inspect --raw OPTIONS docker://REFERENCE` reads (the independent
/// client).
pub fn skopeo_inspect_raw(reference: &str, options: &[String]) -> Vec<u8> {
    run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(options)
        .arg(format!("docker://{reference}")))
    .unwrap_or_else(|error| panic!("{error:#}"))
    .stdout
}

/// Runs `args[0]` with the rest; panics with its output unless it exits 0.
pub fn run_args(args: &[String]) -> Output {
    run(Command::new(&args[0]).args(&args[1..])).unwrap_or_else(|error| panic!("{error:#}"))
}

pub fn text(output: &Output) -> String {
    crate::command::output_text(output)
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The statement inside an envelope file.
pub fn statement(envelope: &Path) -> Value {
    let envelope: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The digest of the statement's subject called `name`.
pub fn subject_digest(statement: &Value, name: &str) -> Option<String> {
    statement["subject"]
        .as_array()?
        .iter()
        .find(|subject| subject["name"] == name)
        .and_then(|subject| subject["digest"]["sha256"].as_str().map(str::to_owned))
}

/// The command failed with the registry exit code and a one-line message containing `needle`.
pub fn assert_registry_failure(output: &Output, needle: &str) {
    assert_eq!(
        output.status.code(),
        Some(EXIT_REGISTRY),
        "{}",
        text(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(needle),
        "{needle:?} not in:\n{}",
        text(output)
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{}", text(output));
}

/// The command succeeded.
pub fn assert_success(output: &Output) {
    assert!(output.status.success(), "{}", text(output));
}
