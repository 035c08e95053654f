//! Registry credentials, found where CI jobs and desktops already keep them, in the order skopeo,
//! docker and crane look:
//!
//! 1. `--creds USER:PASSWORD` (or, for `run --attach`, the push command's own `--dest-creds`).
//! 2. The first auth file that exists of `--authfile`, `REGISTRY_AUTH_FILE`,
//!    `${XDG_RUNTIME_DIR}/containers/auth.json`, `~/.config/containers/auth.json`,
//!    `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`); in each: a `credHelpers`
//!    entry for the registry, else the most specific `auths` entry (`host/ns/repo` … `host`) with
//!    `auth` (base64 `user:password`), `identitytoken` or `registrytoken`, else `credsStore`.
//! 3. Credential helpers (`credHelpers`, `credsStore`) are run as docker runs them:
//!    `docker-credential-<name> get` from `PATH`, the registry on stdin, JSON on stdout
//!    (`{"Username", "Secret"}`; user `<token>` means the secret is an identity token).
//!
//! Every place looked at is remembered, so "the registry wants credentials" can say what was
//! tried and what was not.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde::Deserialize;

/// Largest auth file read (real ones are a few KiB).
const MAX_AUTH_FILE_BYTES: u64 = 1 << 20;
/// Largest answer read from a credential helper.
const MAX_HELPER_OUTPUT: u64 = 64 << 10;
/// What docker-credential-helpers print when a store has nothing for the server.
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// A secret for one registry. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// HTTP basic credentials (also sent to a bearer-token realm).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user): exchanged at the
    /// registry's token realm with `grant_type=refresh_token`.
    IdentityToken(String),
    /// A bearer token for the registry itself (`registrytoken`).
    RegistryToken(String),
}

/// A secret and where it came from (for messages; never the secret itself).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub secret: Secret,
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.secret {
            Secret::Basic { username, .. } => format!("basic user {username}"),
            Secret::IdentityToken(_) => "identity token".to_owned(),
            Secret::RegistryToken(_) => "registry token".to_owned(),
        };
        write!(f, "Credentials({kind} from {}, <redacted>)", self.source)
    }
}

impl Credentials {
    /// `USER:PASSWORD`, as skopeo's `--creds` takes it.
    pub fn parse(creds: &str, source: &str) -> anyhow::Result<Self> {
        match creds.split_once(':') {
            Some((username, password)) if !username.is_empty() => Ok(Credentials {
                secret: Secret::Basic {
                    username: username.to_owned(),
                    password: password.to_owned(),
                },
                source: source.to_owned(),
            }),
            _ => bail!("{source} must be USER:PASSWORD"),
        }
    }

    /// What kind of secret, from where: `basic credentials for user u from --creds`.
    pub fn describe(&self) -> String {
        match &self.secret {
            Secret::Basic { username, .. } => {
                format!("the credentials of user {username:?} from {}", self.source)
            }
            Secret::IdentityToken(_) => format!("the identity token from {}", self.source),
            Secret::RegistryToken(_) => format!("the registry token from {}", self.source),
        }
    }
}

/// The credentials found (if any) and every place looked at, in order.
#[derive(Debug, Default)]
pub struct Lookup {
    pub found: Option<Credentials>,
    pub tried: Vec<String>,
}

impl Lookup {
    /// "looked at: …" for a message saying no credentials were sent.
    pub fn tried_text(&self) -> String {
        if self.tried.is_empty() {
            "no credential source was configured".to_owned()
        } else {
            format!("looked at: {}", self.tried.join("; "))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The auth files to consult, most specific first.
fn auth_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return vec![PathBuf::from(path)];
    }
    let mut files = Vec::new();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(runtime).join("containers/auth.json"));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if let Some(home) = &home {
        files.push(home.join(".config/containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => files.push(PathBuf::from(dir).join("config.json")),
        None => files.extend(home.map(|home| home.join(".docker/config.json"))),
    }
    files
}

/// Credentials for `registry` (`host[:port]`, as resolved: `index.docker.io` for Docker Hub)
/// and `repository`. An explicit `--authfile` must exist; the default locations are skipped
/// when absent. A helper gets until `deadline`.
pub fn lookup(
    registry: &str,
    repository: &str,
    creds: Option<(&str, &str)>,
    authfile: Option<&Path>,
    deadline: Instant,
) -> anyhow::Result<Lookup> {
    let mut lookup = Lookup::default();
    if let Some((creds, source)) = creds {
        lookup.found = Some(Credentials::parse(creds, source)?);
        return Ok(lookup);
    }
    for path in auth_files(authfile) {
        let display = path.display().to_string();
        let file = match read_auth_file(&path)? {
            Some(file) => file,
            None if authfile.is_some() => bail!("{display}: no such auth file"),
            None => {
                lookup.tried.push(format!("{display} (absent)"));
                continue;
            }
        };
        if let Some(helper) = file.cred_helpers.get(registry) {
            let found = run_helper(helper, registry, &display, "credHelpers", deadline)?;
            lookup
                .tried
                .push(helper_tried(helper, &display, "credHelpers", &found));
            if found.is_some() {
                lookup.found = found;
                return Ok(lookup);
            }
            continue;
        }
        if let Some(found) = find(&file, registry, repository, &display)? {
            lookup.found = Some(found);
            return Ok(lookup);
        }
        match &file.creds_store {
            Some(store) if !store.is_empty() => {
                let found = run_helper(store, registry, &display, "credsStore", deadline)?;
                lookup
                    .tried
                    .push(helper_tried(store, &display, "credsStore", &found));
                if found.is_some() {
                    lookup.found = found;
                    return Ok(lookup);
                }
            }
            _ => lookup
                .tried
                .push(format!("{display} (no entry for {registry})")),
        }
    }
    Ok(lookup)
}

fn helper_tried(helper: &str, file: &str, key: &str, found: &Option<Credentials>) -> String {
    let outcome = if found.is_some() { "found" } else { "has none" };
    format!("docker-credential-{helper} ({key} in {file}): {outcome}")
}

fn read_auth_file(path: &Path) -> anyhow::Result<Option<AuthFile>> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("{}: cannot read", path.display()))
        }
    };
    if !metadata.is_file() || metadata.len() > MAX_AUTH_FILE_BYTES {
        bail!(
            "{}: not a regular file of at most {MAX_AUTH_FILE_BYTES} bytes",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .with_context(|| format!("{}: not a valid auth file", path.display()))
}

/// The most specific `auths` entry with a usable secret: `host/ns/repo`, then `host/ns`, …,
/// then `host`; docker's keys may carry a scheme and a path (`https://host/v1/`). An entry
/// with nothing usable (docker writes `{}` when a helper holds the secret) is passed over.
fn find(
    file: &AuthFile,
    registry: &str,
    repository: &str,
    path: &str,
) -> anyhow::Result<Option<Credentials>> {
    let full = format!("{registry}/{repository}");
    let mut scope = full.as_str();
    loop {
        for (key, entry) in &file.auths {
            if normalise_key(key, scope == registry) != scope {
                continue;
            }
            let source = format!("{path} (auths entry {key:?})");
            if let Some(credentials) =
                entry_credentials(entry, &source).with_context(|| source.clone())?
            {
                return Ok(Some(credentials));
            }
        }
        match scope.rsplit_once('/') {
            Some((parent, _)) => scope = parent,
            None => return Ok(None),
        }
    }
}

fn entry_credentials(entry: &AuthEntry, source: &str) -> anyhow::Result<Option<Credentials>> {
    let non_empty = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
    let secret = if let Some(token) = non_empty(&entry.identitytoken) {
        Secret::IdentityToken(token)
    } else if let Some(token) = non_empty(&entry.registrytoken) {
        Secret::RegistryToken(token)
    } else if let Some(auth) = non_empty(&entry.auth) {
        return decode(&auth, source).map(Some);
    } else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        secret,
        source: source.to_owned(),
    }))
}

/// `https://host/v1/` → `host` (docker's legacy keys name only a host); `host/ns` stays.
fn normalise_key(key: &str, host_only: bool) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    if host_only {
        key.split('/').next().unwrap_or(key)
    } else {
        key
    }
}

fn decode(auth: &str, source: &str) -> anyhow::Result<Credentials> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .context("`auth` is not base64")?;
    let text = String::from_utf8(bytes).context("`auth` is not UTF-8")?;
    Credentials::parse(&text, source).context("`auth` is not base64 of USER:PASSWORD")
}

/// A helper's answer to `get`.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The server a helper is asked about: the registry host, or Docker Hub's legacy URL (the key
/// `docker login` stores Hub credentials under).
fn helper_server(registry: &str) -> &str {
    match registry {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

/// Runs `docker-credential-<name> get`. `None` when the helper has nothing for the registry
/// (it says `credentials not found`); any other failure is an error naming the helper.
fn run_helper(
    name: &str,
    registry: &str,
    file: &str,
    key: &str,
    deadline: Instant,
) -> anyhow::Result<Option<Credentials>> {
    if name.is_empty() || name.contains('/') {
        bail!("{file}: {key} names {name:?}, not a credential helper name");
    }
    let program = format!("docker-credential-{name}");
    let context = || format!("{program} ({key} in {file})");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("{}: not found on PATH", context())
            } else {
                anyhow::anyhow!("{}: cannot run: {error}", context())
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is not an error here; its answer is.
        let _ = stdin.write_all(helper_server(registry).as_bytes());
    }
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(MAX_HELPER_OUTPUT).read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(status) = child.try_wait().with_context(context)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{}: no answer before --registry-timeout", context());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    if !status.success() {
        let message = [said(&stdout), said(&stderr)]
            .into_iter()
            .find(|text| !text.is_empty())
            .unwrap_or_else(|| status.to_string());
        if message.contains(HELPER_NOT_FOUND) {
            return Ok(None);
        }
        let first_line = message.lines().next().unwrap_or_default().to_owned();
        bail!("{}: `get` failed: {first_line}", context());
    }
    let answer: HelperAnswer = serde_json::from_slice(&stdout)
        .with_context(|| format!("{}: `get` did not print credentials JSON", context()))?;
    let source = format!("docker-credential-{name} ({key} in {file})");
    let secret = match answer.username.as_str() {
        _ if answer.secret.is_empty() => return Ok(None),
        "<token>" => Secret::IdentityToken(answer.secret),
        "" => bail!("{}: `get` printed no Username", context()),
        _ => Secret::Basic {
            username: answer.username,
            password: answer.secret,
        },
    };
    Ok(Some(Credentials { secret, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> AuthFile {
        serde_json::from_str(json).unwrap()
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn basic(credentials: &Credentials) -> (&str, &str) {
        match &credentials.secret {
            Secret::Basic { username, password } => (username, password),
            _ => panic!("not basic credentials: {credentials:?}"),
        }
    }

    #[test]
    fn the_most_specific_entry_wins_and_docker_keys_are_normalised() {
        let auths = file(&format!(
            r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{host}"}},
                "reg.example:5000/team": {{"auth": "{team}"}},
                "reg.example:5000/helper-held": {{}}}}}}"#,
            host = b64("h:1"),
            team = b64("t:2:3"),
        ));
        let team = find(&auths, "reg.example:5000", "team/app", "f")
            .unwrap()
            .unwrap();
        assert_eq!(basic(&team), ("t", "2:3"));
        let other = find(&auths, "reg.example:5000", "other/app", "f")
            .unwrap()
            .unwrap();
        assert_eq!(basic(&other).0, "h");
        let placeholder = find(&auths, "reg.example:5000", "helper-held", "f")
            .unwrap()
            .unwrap();
        assert_eq!(basic(&placeholder).0, "h");
        assert_eq!(find(&auths, "elsewhere", "team/app", "f").unwrap(), None);
        assert!(format!("{team:?}").contains("redacted"));
        assert!(!format!("{team:?}").contains("2:3"));
    }

    #[test]
    fn tokens_in_auth_entries_are_read() {
        let auths = file(
            r#"{"auths": {"a": {"identitytoken": "refresh"}, "b": {"registrytoken": "bearer"}}}"#,
        );
        let a = find(&auths, "a", "app", "f").unwrap().unwrap();
        assert!(a.secret == Secret::IdentityToken("refresh".into()));
        let b = find(&auths, "b", "app", "f").unwrap().unwrap();
        assert!(b.secret == Secret::RegistryToken("bearer".into()));
        assert!(!format!("{a:?}").contains("refresh"));
    }

    #[test]
    fn malformed_entries_and_creds_are_errors() {
        let auths = file(r#"{"auths": {"reg": {"auth": "%%%"}}}"#);
        assert!(find(&auths, "reg", "app", "f").is_err());
        assert!(Credentials::parse("no-colon", "--creds").is_err());
        assert!(Credentials::parse(":pw", "--creds").is_err());
    }

    #[test]
    fn an_explicit_auth_file_must_exist_and_be_valid() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let error = lookup("reg", "app", None, Some(&missing), soon()).unwrap_err();
        assert!(
            format!("{error:#}").contains("no such auth file"),
            "{error:#}"
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        assert!(lookup("reg", "app", None, Some(&bad), soon()).is_err());
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            format!(r#"{{"auths": {{"reg": {{"auth": "{}"}}}}}}"#, b64("u:p")),
        )
        .unwrap();
        let found = lookup("reg", "app", None, Some(&good), soon()).unwrap();
        assert_eq!(basic(found.found.as_ref().unwrap()).0, "u");
        let explicit = lookup("reg", "app", Some(("x:y", "--creds")), Some(&good), soon())
            .unwrap()
            .found
            .unwrap();
        assert_eq!(basic(&explicit).0, "x");
        let nothing = lookup("other", "app", None, Some(&good), soon()).unwrap();
        assert!(nothing.found.is_none());
        assert!(nothing.tried_text().contains("no entry for other"));
    }

    #[test]
    fn helper_names_cannot_be_paths_and_missing_helpers_are_named() {
        let error = run_helper("../x", "reg", "f", "credsStore", soon()).unwrap_err();
        assert!(format!("{error:#}").contains("not a credential helper name"));
        let error = run_helper(
            "oci-attest-no-such-helper",
            "reg",
            "f",
            "credsStore",
            soon(),
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("docker-credential-oci-attest-no-such-helper"),
            "{error:#}"
        );
        assert_eq!(
            helper_server("index.docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(helper_server("reg:5000"), "reg:5000");
    }
}
