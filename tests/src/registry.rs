//! Private instances of Debian's `docker-registry` (distribution 2.8) on 127.0.0.1: one speaking
//! plain HTTP, one speaking TLS (a throw-away CA signs the server certificate) with htpasswd basic
//! auth. Started by `cargo xtask test`, which exports their addresses to the tests; stopped by pid.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::command::{run, stdout_of};
use crate::daemons::Daemon;

/// The user name in the TLS registry's htpasswd file.
const USER: &str = "oci-attest";
/// bcrypt cost of the htpasswd entry: the registry checks it on every request, and the default
/// cost (12, about 0.25 s per check) would dominate tests that make thousands of requests.
const HTPASSWD_COST: u32 = 5;

/// Both registries; dropping it stops them.
pub struct Registries {
    plain: Option<Daemon>,
    tls: Option<Daemon>,
    pub handles: RegistryEnv,
}

/// How tests reach the registries (exported by `cargo xtask test` as `OCI_ATTEST_REGISTRY_*`).
#[derive(Clone, Debug)]
pub struct RegistryEnv {
    /// `127.0.0.1:PORT` of the plain-HTTP registry (no auth).
    pub plain: String,
    /// `127.0.0.1:PORT` of the TLS registry (basic auth).
    pub tls: String,
    /// The PEM CA certificate that signed the TLS registry's certificate.
    pub ca: PathBuf,
    pub user: String,
    pub password: String,
}

impl Registries {
    /// Starts both registries with their storage, certificates and htpasswd file under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let ca = make_certificates(&dir)?;
        let password = random_password()?;
        let htpasswd = dir.join("htpasswd");
        let hash = bcrypt::hash(&password, HTPASSWD_COST).context("bcrypt of the password")?;
        std::fs::write(&htpasswd, format!("{USER}:{hash}\n"))
            .with_context(|| format!("cannot write {}", htpasswd.display()))?;

        let plain_addr = format!("127.0.0.1:{}", free_port()?);
        let tls_addr = format!("127.0.0.1:{}", free_port()?);
        let mut registries = Registries {
            plain: None,
            tls: None,
            handles: RegistryEnv {
                plain: plain_addr.clone(),
                tls: tls_addr.clone(),
                ca,
                user: USER.to_owned(),
                password,
            },
        };

        let plain_config = config(&dir.join("plain-storage"), &plain_addr, "");
        let plain = registries.plain.insert(spawn(
            &dir,
            "plain",
            "docker-registry (plain HTTP)",
            &plain_config,
        )?);
        plain.wait_ready(|| probe(&format!("http://{plain_addr}/v2/"), &[]))?;

        let tls_extra = format!(
            "  tls:\n    certificate: {cert}\n    key: {key}\n\
             auth:\n  htpasswd:\n    realm: oci-attest-test\n    path: {htpasswd}\n",
            cert = dir.join("server.pem").display(),
            key = dir.join("server-key.pem").display(),
            htpasswd = htpasswd.display(),
        );
        let tls_config = config(&dir.join("tls-storage"), &tls_addr, &tls_extra);
        let handles = registries.handles.clone();
        let tls = registries
            .tls
            .insert(spawn(&dir, "tls", "docker-registry (TLS)", &tls_config)?);
        let credentials = format!("{}:{}", handles.user, handles.password);
        tls.wait_ready(|| {
            probe(
                &format!("https://{tls_addr}/v2/"),
                &[
                    "--cacert".as_ref(),
                    handles.ca.as_os_str(),
                    "--user".as_ref(),
                    credentials.as_ref(),
                ],
            )
        })?;
        Ok(registries)
    }

    /// Environment for the tests.
    pub fn env(&self) -> [(&'static str, OsString); 5] {
        self.handles.env()
    }

    /// Stops both registries.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for daemon in [self.plain.take(), self.tls.take()].into_iter().flatten() {
            let mut daemon = daemon;
            if let Err(error) = daemon.stop() {
                result = Err(error);
            }
        }
        result
    }
}

impl Drop for Registries {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("stopping the test registries: {error:#}");
        }
    }
}

impl RegistryEnv {
    /// The registries started by `cargo xtask test`, checked to answer.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set (run the tests with `cargo xtask test`)")
            })
        };
        let handles = RegistryEnv {
            plain: var("OCI_ATTEST_REGISTRY_PLAIN")?,
            tls: var("OCI_ATTEST_REGISTRY_TLS")?,
            ca: PathBuf::from(var("OCI_ATTEST_REGISTRY_CA")?),
            user: var("OCI_ATTEST_REGISTRY_USER")?,
            password: var("OCI_ATTEST_REGISTRY_PASSWORD")?,
        };
        if !probe(&format!("http://{}/v2/", handles.plain), &[]) {
            bail!("the registry at {} does not answer", handles.plain);
        }
        Ok(handles)
    }

    pub fn env(&self) -> [(&'static str, OsString); 5] {
        [
            ("OCI_ATTEST_REGISTRY_PLAIN", self.plain.clone().into()),
            ("OCI_ATTEST_REGISTRY_TLS", self.tls.clone().into()),
            ("OCI_ATTEST_REGISTRY_CA", self.ca.clone().into()),
            ("OCI_ATTEST_REGISTRY_USER", self.user.clone().into()),
            ("OCI_ATTEST_REGISTRY_PASSWORD", self.password.clone().into()),
        ]
    }

    /// `user:password`, as skopeo's `--creds` and oci-attest's `--creds` take it.
    pub fn creds(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }
}

fn config(storage: &Path, addr: &str, extra: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  \
         delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra}",
        storage = storage.display(),
    )
}

/// Writes `DIR/STEM.yml` and serves it, logging to `DIR/STEM.log`.
fn spawn(dir: &Path, stem: &str, name: &'static str, config: &str) -> anyhow::Result<Daemon> {
    let path = dir.join(format!("{stem}.yml"));
    std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    let mut command = Command::new("docker-registry");
    command.arg("serve").arg(&path);
    Daemon::spawn(name, command, dir.join(format!("{stem}.log")))
}

/// True when `GET url` answers 200 (curl, so that the TLS set-up is checked by a client that is
/// not the one under test).
fn probe(url: &str, args: &[&std::ffi::OsStr]) -> bool {
    stdout_of(
        Command::new("curl")
            .args([
                "--silent",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code}",
            ])
            .args(["--max-time", "2"])
            .args(args)
            .arg(url),
    )
    .is_ok_and(|code| code == "200")
}

/// A port that was free a moment ago (the registry binds it right after).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A CA and a server certificate for 127.0.0.1 signed by it (a self-signed leaf would be refused
/// by webpki-based clients, which do not accept a CA certificate as the server's own). Returns
/// the CA certificate's path.
fn make_certificates(dir: &Path) -> anyhow::Result<PathBuf> {
    let ca_key = dir.join("ca-key.pem");
    let ca = dir.join("ca.pem");
    let key = dir.join("server-key.pem");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.pem");
    let extensions = dir.join("server.ext");
    std::fs::write(
        &extensions,
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n\
         basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n",
    )?;
    let openssl = || {
        let mut command = Command::new("openssl");
        command.current_dir(dir);
        command
    };
    run(openssl()
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=oci-attest test CA"])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca))?;
    run(openssl()
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr))?;
    run(openssl()
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&extensions)
        .arg("-out")
        .arg(&cert))?;
    Ok(ca)
}
