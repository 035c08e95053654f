//! Registry credentials, found where skopeo, podman and docker users already keep them
//! (containers-auth.json(5)): `--creds`, else the first auth file that exists of `--authfile`,
//! `REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `~/.config/containers/auth.json`, `~/.docker/config.json`. Credential helpers (`credHelpers`,
//! `credsStore`) are not run: a helper is an arbitrary program, and CI passes `--creds` instead.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde::Deserialize;

/// Largest auth file read (real ones are a few KiB).
const MAX_AUTH_FILE_BYTES: u64 = 1 << 20;

/// A user name and password (or token) for one registry. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// `USER:PASSWORD`, as skopeo's `--creds` takes it.
    pub fn parse(creds: &str) -> anyhow::Result<Self> {
        match creds.split_once(':') {
            Some((username, password)) if !username.is_empty() => Ok(Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
            }),
            _ => bail!("--creds must be USER:PASSWORD"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
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
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        files.push(home.join(".config/containers/auth.json"));
        files.push(home.join(".docker/config.json"));
    }
    files
}

/// Credentials for `registry` (`host[:port]`) and `repository`, or `None` for anonymous access.
/// An explicit `--authfile` must exist; the default locations are skipped when absent.
pub fn lookup(
    registry: &str,
    repository: &str,
    creds: Option<&str>,
    authfile: Option<&Path>,
) -> anyhow::Result<Option<Credentials>> {
    if let Some(creds) = creds {
        return Credentials::parse(creds).map(Some);
    }
    for path in auth_files(authfile) {
        let file = match read_auth_file(&path) {
            Ok(Some(file)) => file,
            Ok(None) if authfile.is_none() => continue,
            Ok(None) => bail!("{}: no such auth file", path.display()),
            Err(error) => return Err(error),
        };
        if let Some(credentials) = find(&file, registry, repository)
            .with_context(|| format!("{}: bad entry for {registry}", path.display()))?
        {
            return Ok(Some(credentials));
        }
    }
    Ok(None)
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

/// The most specific entry: `host/ns/repo`, then `host/ns`, …, then `host`; docker's keys may
/// carry a scheme and a path (`https://host/v1/`).
fn find(file: &AuthFile, registry: &str, repository: &str) -> anyhow::Result<Option<Credentials>> {
    let full = format!("{registry}/{repository}");
    let mut scope = full.as_str();
    loop {
        let entry = file
            .auths
            .iter()
            .find(|(key, _)| normalise_key(key, scope == registry) == scope);
        if let Some((_, entry)) = entry {
            return entry.auth.as_deref().map(decode).transpose();
        }
        match scope.rsplit_once('/') {
            Some((parent, _)) => scope = parent,
            None => return Ok(None),
        }
    }
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

fn decode(auth: &str) -> anyhow::Result<Credentials> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .context("`auth` is not base64")?;
    let text = String::from_utf8(bytes).context("`auth` is not UTF-8")?;
    Credentials::parse(&text).context("`auth` is not base64 of USER:PASSWORD")
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

    #[test]
    fn the_most_specific_entry_wins_and_docker_keys_are_normalised() {
        let auths = file(&format!(
            r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{host}"}},
                "reg.example:5000/team": {{"auth": "{team}"}}}}}}"#,
            host = b64("h:1"),
            team = b64("t:2:3"),
        ));
        let team = find(&auths, "reg.example:5000", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!(
            (team.username.as_str(), team.password.as_str()),
            ("t", "2:3")
        );
        let other = find(&auths, "reg.example:5000", "other/app")
            .unwrap()
            .unwrap();
        assert_eq!(other.username, "h");
        assert_eq!(find(&auths, "elsewhere", "team/app").unwrap(), None);
        assert!(format!("{team:?}").contains("redacted"));
        assert!(!format!("{team:?}").contains("2:3"));
    }

    #[test]
    fn malformed_entries_and_creds_are_errors() {
        let auths = file(r#"{"auths": {"reg": {"auth": "%%%"}}}"#);
        assert!(find(&auths, "reg", "app").is_err());
        assert!(Credentials::parse("no-colon").is_err());
        assert!(Credentials::parse(":pw").is_err());
    }

    #[test]
    fn an_explicit_auth_file_must_exist_and_be_valid() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let error = lookup("reg", "app", None, Some(&missing)).unwrap_err();
        assert!(
            format!("{error:#}").contains("no such auth file"),
            "{error:#}"
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        assert!(lookup("reg", "app", None, Some(&bad)).is_err());
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            format!(r#"{{"auths": {{"reg": {{"auth": "{}"}}}}}}"#, b64("u:p")),
        )
        .unwrap();
        let found = lookup("reg", "app", None, Some(&good)).unwrap().unwrap();
        assert_eq!(found.username, "u");
        let explicit = lookup("reg", "app", Some("x:y"), Some(&good))
            .unwrap()
            .unwrap();
        assert_eq!(explicit.username, "x");
    }
}
