//! Private instances of Debian's `docker-registry` (distribution 2.8) on 127.0.0.1: one speaking
//! plain HTTP, one speaking TLS (a throw-away CA signs the server certificate) with htpasswd basic
//! auth. Started by `cargo xtask test`, which exports their addresses to the tests; stopped by pid.
//! Tests that need another kind (a self-signed `CA:TRUE` certificate, bearer-token auth from a
//! [`TokenServer`]) start a [`PrivateRegistry`] of their own.

use std::ffi::OsString;
use std::io::Read as _;

use base64::Engine as _;
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
        plain.wait_ready(|| {
            probe(&format!("http://{plain_addr}/v2/"), &[]).as_deref() == Some("200")
        })?;

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
            .as_deref()
                == Some("200")
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
        if probe(&format!("http://{}/v2/", handles.plain), &[]).as_deref() != Some("200") {
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

/// The HTTP status `GET url` answers with, if any (curl, so that the TLS set-up is checked by a
/// client that is not the one under test).
fn probe(url: &str, args: &[&std::ffi::OsStr]) -> Option<String> {
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
    .ok()
    .filter(|code| code != "000")
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

/// A registry a test starts for itself (stopped when dropped): TLS with the given certificate
/// and key or plain HTTP, and the given `auth:` section (YAML, may be empty).
pub struct PrivateRegistry {
    daemon: Daemon,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl PrivateRegistry {
    /// Starts it with its storage and config under `dir/stem*`; ready when `GET /v2/` answers
    /// (curl trusts `tls`'s certificate).
    pub fn start(
        dir: &Path,
        stem: &str,
        tls: Option<(&Path, &Path)>,
        auth: &str,
    ) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut extra = String::new();
        if let Some((certificate, key)) = tls {
            extra.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certificate.display(),
                key.display()
            ));
        }
        extra.push_str(auth);
        let config_text = config(&dir.join(format!("{stem}-storage")), &addr, &extra);
        let mut daemon = spawn(
            dir,
            stem,
            "docker-registry (private to a test)",
            &config_text,
        )?;
        let (url, curl_args): (String, Vec<&std::ffi::OsStr>) = match tls {
            Some((certificate, _)) => (
                format!("https://{addr}/v2/"),
                vec!["--cacert".as_ref(), certificate.as_os_str()],
            ),
            None => (format!("http://{addr}/v2/"), Vec::new()),
        };
        daemon.wait_ready(|| probe(&url, &curl_args).is_some())?;
        Ok(PrivateRegistry { daemon, addr })
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        if let Err(error) = self.daemon.stop() {
            eprintln!("stopping a test registry: {error:#}");
        }
    }
}

/// A self-signed server certificate for 127.0.0.1 made the way the registry docs say
/// (`openssl req -x509`, which marks it `CA:TRUE`). Returns (certificate, key).
pub fn self_signed_certificate(dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let certificate = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&certificate))?;
    Ok((certificate, key))
}

/// What a [`TokenServer`] was asked: `GET` (basic credentials) or `POST` (OAuth2
/// `refresh_token` grant), and the scopes requested.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub grant_type: Option<String>,
    pub scopes: Vec<String>,
}

/// A bearer-token realm on 127.0.0.1 as distribution's token authentication specifies it: it
/// issues RS256 JWTs (signed by `openssl dgst`) granting the requested repository actions to
/// the one user with the right basic credentials or refresh token, and refuses anyone else.
/// The registry trusts its certificate (`auth.token.rootcertbundle`); the key id is libtrust's
/// fingerprint of the public key, as distribution 2.8 looks keys up.
pub struct TokenServer {
    pub realm: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<TokenRequest>>>,
    certificate: PathBuf,
}

/// The token service and issuer names the registry and the server agree on.
const TOKEN_SERVICE: &str = "oci-attest-token-test";
const TOKEN_ISSUER: &str = "oci-attest-test-issuer";

impl TokenServer {
    /// Starts it; `credentials` is `user:password`, `refresh_token` the identity token it
    /// accepts. Key and certificate go under `dir`.
    pub fn start(dir: &Path, credentials: &str, refresh_token: &str) -> anyhow::Result<Self> {
        let key = dir.join("token-signer.key");
        let certificate = dir.join("token-signer.crt");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=oci-attest token signer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate))?;
        let public_der = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key))?
        .stdout;
        let kid = libtrust_key_id(&public_der);
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the token server")?;
        let realm = format!("http://{}/token", listener.local_addr()?);
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let issuer = Issuer {
            key,
            kid,
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            refresh_token: refresh_token.to_owned(),
            requests: std::sync::Arc::clone(&requests),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = issuer.serve(stream);
            }
        });
        Ok(TokenServer {
            realm,
            requests,
            certificate,
        })
    }

    /// The registry's `auth:` section for this realm.
    pub fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: \
             {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.certificate.display()
        )
    }
}

struct Issuer {
    key: PathBuf,
    kid: String,
    basic: String,
    refresh_token: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<TokenRequest>>>,
}

impl Issuer {
    /// One request per connection.
    fn serve(&self, stream: std::net::TcpStream) -> anyhow::Result<()> {
        use std::io::{BufRead as _, Read as _, Write as _};
        let mut reader = std::io::BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut authorization = None;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "authorization" => authorization = Some(value.trim().to_owned()),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length.min(1 << 16)];
        reader.read_exact(&mut body)?;
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default();
        let query = target.split_once('?').map_or("", |(_, query)| query);
        let form = if method == "POST" {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            query.to_owned()
        };
        let pairs = form_pairs(&form);
        let value = |key: &str| {
            pairs
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.clone())
        };
        let scopes: Vec<String> = pairs
            .iter()
            .filter(|(name, _)| name == "scope")
            .flat_map(|(_, value)| value.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .filter(|scope| !scope.is_empty())
            .collect();
        let grant_type = value("grant_type");
        self.requests
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(TokenRequest {
                method: method.clone(),
                grant_type: grant_type.clone(),
                scopes: scopes.clone(),
            });
        let allowed = match method.as_str() {
            "POST" => {
                grant_type.as_deref() == Some("refresh_token")
                    && value("refresh_token").as_deref() == Some(&self.refresh_token)
            }
            _ => authorization.as_deref() == Some(&self.basic),
        };
        let mut stream = stream;
        if !allowed {
            let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
            write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
            return Ok(());
        }
        let token = self.jwt(&scopes)?;
        let answer = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": 300,
        })
        .to_string();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )?;
        Ok(())
    }

    /// A JWT granting every requested `repository:NAME:ACTIONS` scope.
    fn jwt(&self, scopes: &[String]) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({
                    "type": kind,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": "oci-attest",
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", access.len()),
            "access": access,
        });
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signed = format!(
            "{}.{}",
            url.encode(header.to_string()),
            url.encode(claims.to_string())
        );
        let mut openssl = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot run openssl dgst")?;
        {
            use std::io::Write as _;
            openssl
                .stdin
                .take()
                .context("no stdin")?
                .write_all(signed.as_bytes())?;
        }
        let signature = openssl.wait_with_output()?;
        anyhow::ensure!(signature.status.success(), "openssl dgst -sign failed");
        Ok(format!("{signed}.{}", url.encode(signature.stdout)))
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    let decode = |part: &str| {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            match bytes[index] {
                b'+' => out.push(b' '),
                b'%' if index + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(byte) => {
                            out.push(byte);
                            index += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                byte => out.push(byte),
            }
            index += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// libtrust's key id, which distribution 2.8 uses to find a token's signing key: the SHA-256 of
/// the DER public key, truncated to 240 bits, base32 without padding, in 4-character groups.
fn libtrust_key_id(public_der: &[u8]) -> String {
    use sha2::Digest as _;
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = sha2::Sha256::digest(public_der);
    let mut bits = 0u32;
    let mut count = 0;
    let mut encoded = String::new();
    for byte in &digest[..30] {
        bits = (bits << 8) | u32::from(*byte);
        count += 8;
        while count >= 5 {
            count -= 5;
            encoded.push(char::from(ALPHABET[((bits >> count) & 31) as usize]));
        }
    }
    encoded
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_key_ids_group_by_four() {
        assert_eq!(
            form_pairs("scope=repository%3Aa%2Fb%3Apull+x&grant_type=refresh_token"),
            vec![
                ("scope".to_owned(), "repository:a/b:pull x".to_owned()),
                ("grant_type".to_owned(), "refresh_token".to_owned())
            ]
        );
        let kid = libtrust_key_id(b"key");
        assert_eq!(kid.len(), 48 + 11);
        assert!(kid.split(':').all(|group| group.len() == 4));
    }
}
