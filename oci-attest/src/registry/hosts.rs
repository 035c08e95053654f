//! Per-registry settings that live outside oci-attest's options, read as the containers tools
//! read them: `insecure = true` in registries.conf (containers-registries.conf(5)), and which
//! hosts are the local machine (where, as with crane and cosign, HTTPS falls back to HTTP).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// Largest registries.conf read.
const MAX_CONF_BYTES: u64 = 1 << 20;

/// True for `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                registry
            }
        }),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// registries.conf, version 2 (`[[registry]]` tables) and version 1 (`[registries.insecure]`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistriesConf {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    #[serde(default)]
    registries: Option<V1Registries>,
}

#[derive(Debug, Default, Deserialize)]
struct RegistryEntry {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct V1Registries {
    #[serde(default)]
    insecure: Option<V1List>,
}

#[derive(Debug, Default, Deserialize)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

/// The registries.conf files in effect: `CONTAINERS_REGISTRIES_CONF` alone when set; else
/// `~/.config/containers/registries.conf` when it exists, else `/etc/containers/registries.conf`;
/// then the `*.conf` drop-ins of `/etc/containers/registries.conf.d` and
/// `~/.config/containers/registries.conf.d`, in name order (later files win).
fn conf_files() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return vec![PathBuf::from(path)];
    }
    let home = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/containers"));
    let user = home.as_ref().map(|dir| dir.join("registries.conf"));
    let mut files = vec![match user {
        Some(user) if user.is_file() => user,
        _ => PathBuf::from("/etc/containers/registries.conf"),
    }];
    let dirs = std::iter::once(PathBuf::from("/etc/containers/registries.conf.d"))
        .chain(home.map(|dir| dir.join("registries.conf.d")));
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut drop_ins: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "conf"))
            .collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    files
}

/// Whether registries.conf marks `image` (`host[:port]/repository`) insecure, and the file that
/// says so. The most specific matching entry across the files decides (a later file wins a tie).
pub fn insecure_in_registries_conf(image: &str) -> anyhow::Result<Option<PathBuf>> {
    insecure_in(&conf_files(), image)
}

fn insecure_in(files: &[PathBuf], image: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut best: Option<(usize, bool, PathBuf)> = None;
    for path in files {
        let Some(conf) = read_conf(path)? else {
            continue;
        };
        let v1 = conf
            .registries
            .iter()
            .filter_map(|registries| registries.insecure.as_ref())
            .flat_map(|list| list.registries.iter())
            .map(|location| (location.as_str(), Some(true)));
        let v2 = conf.registry.iter().flat_map(|entry| {
            [entry.prefix.as_deref(), entry.location.as_deref()]
                .into_iter()
                .flatten()
                .map(|pattern| (pattern, entry.insecure))
        });
        for (pattern, insecure) in v1.chain(v2) {
            let Some(insecure) = insecure else { continue };
            if let Some(length) = match_length(pattern, image) {
                if best
                    .as_ref()
                    .is_none_or(|(best_length, _, _)| length >= *best_length)
                {
                    best = Some((length, insecure, path.to_path_buf()));
                }
            }
        }
    }
    Ok(best.and_then(|(_, insecure, path)| insecure.then_some(path)))
}

fn read_conf(path: &Path) -> anyhow::Result<Option<RegistriesConf>> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("{}: cannot read", path.display()))
        }
    };
    if !metadata.is_file() || metadata.len() > MAX_CONF_BYTES {
        anyhow::bail!(
            "{}: not a regular file of at most {MAX_CONF_BYTES} bytes",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    toml::from_str(&text)
        .map(Some)
        .with_context(|| format!("{}: not a valid registries.conf", path.display()))
}

/// How much of `image` the registries.conf pattern covers: a `host[:port][/path]` prefix ending
/// at a component boundary, or `*.domain` for any subdomain of the host. `None` when it does not
/// match.
fn match_length(pattern: &str, image: &str) -> Option<usize> {
    let pattern = pattern.trim_end_matches('/');
    if let Some(domain) = pattern.strip_prefix("*.") {
        let host = image.split('/').next()?;
        let host = host.split(':').next()?;
        return host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
            .then_some(domain.len());
    }
    let rest = image.strip_prefix(pattern)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(pattern.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:1",
            "127.0.0.1:5000",
            "127.9.8.7",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "localhost.example",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn patterns_match_at_component_boundaries() {
        assert!(match_length("reg:5000", "reg:5000/team/app").is_some());
        assert!(match_length("reg:5000/team", "reg:5000/team/app").is_some());
        assert!(match_length("reg:5000/te", "reg:5000/team/app").is_none());
        assert!(match_length("reg:50", "reg:5000/app").is_none());
        assert!(match_length("*.example.com", "reg.example.com/app").is_some());
        assert!(match_length("*.example.com", "example.com/app").is_none());
        assert!(
            match_length("reg:5000/team", "reg:5000/team/app")
                > match_length("reg:5000", "reg:5000/team/app")
        );
    }

    #[test]
    fn both_formats_are_read_and_the_most_specific_entry_wins() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("registries.conf");
        std::fs::write(
            &v2,
            r#"
            unqualified-search-registries = ["docker.io"]
            [[registry]]
            location = "reg:5000"
            insecure = true
            [[registry.mirror]]
            location = "mirror:1"
            [[registry]]
            prefix = "reg:5000/secure"
            location = "reg:5000/secure"
            insecure = false
            "#,
        )
        .unwrap();
        let v1 = dir.path().join("v1.conf");
        std::fs::write(&v1, "[registries.insecure]\nregistries = [\"old:1\"]\n").unwrap();
        let missing = dir.path().join("missing.conf");
        let files = [missing, v2.clone(), v1.clone()];
        assert_eq!(insecure_in(&files, "reg:5000/app").unwrap(), Some(v2));
        assert_eq!(insecure_in(&files, "reg:5000/secure/app").unwrap(), None);
        assert_eq!(insecure_in(&files, "old:1/app").unwrap(), Some(v1));
        assert_eq!(insecure_in(&files, "other:1/app").unwrap(), None);
        let bad = dir.path().join("bad.conf");
        std::fs::write(&bad, "[[registry]]\nlocation = \"reg:5000\"\ninsecure = [").unwrap();
        let error = insecure_in(&[bad], "reg:5000/app").unwrap_err();
        assert!(format!("{error:#}").contains("bad.conf: not a valid registries.conf"));
    }
}
