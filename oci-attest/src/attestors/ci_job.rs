//! What the `github` and `gitlab` attestors share: the CI job's identity read from the
//! runner's environment, URL subjects, and the claims of an OIDC token given in a file.
//!
//! witness fetches the job's OIDC token over the network and checks it against the issuer's
//! JWKS. oci-attest makes no network call here: the token is read from a file the job wrote
//! (`--attestor-github-jwt-path`, `--attestor-gitlab-jwt-path`) and its claims are recorded as
//! the token states them, with no `verifiedBy`: its signature is not checked, so a policy must
//! not take the claims as the issuer's word. The run's signature covers them like every field.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::attestors::Attestation;
use crate::digest::{sha256_hex, sha256_set};
use crate::redact::Redaction;

/// Largest token file read: OIDC tokens are a few KiB.
const MAX_TOKEN_BYTES: u64 = 64 << 10;

/// The claims of a JWT, decoded but not verified.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// Reads the JWT in `path` (surrounding whitespace ignored) and decodes its claims; also
    /// returns the token itself, which the run hides wherever it would be recorded.
    pub fn read(path: &Path) -> anyhow::Result<(Claims, String)> {
        let display = path.display();
        let metadata =
            std::fs::metadata(path).with_context(|| format!("{display}: cannot read"))?;
        if !metadata.is_file() || metadata.len() > MAX_TOKEN_BYTES {
            anyhow::bail!("{display}: not a regular file of at most {MAX_TOKEN_BYTES} bytes");
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{display}: cannot read"))?;
        let token = text.trim().to_owned();
        let claims = Claims::decode(&token).with_context(|| format!("{display}: not a JWT"))?;
        Ok((claims, token))
    }

    /// The payload of a compact JWS (`header.payload.signature`, base64url): by hand, since
    /// decoding without verifying is all that is done and it takes two calls of crates already
    /// here.
    pub fn decode(token: &str) -> anyhow::Result<Claims> {
        let parts: Vec<&str> = token.split('.').collect();
        let [_, payload, _] = parts.as_slice() else {
            anyhow::bail!("expected three base64url parts separated by dots");
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .context("the payload is not base64url")?;
        match serde_json::from_slice(&bytes).context("the payload is not JSON")? {
            Value::Object(claims) => Ok(Claims(claims)),
            _ => anyhow::bail!("the payload is not a JSON object"),
        }
    }
}

/// The environment of the run, as the CI attestors read it.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// This process's environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Fails unless `marker` is `true` in `env` (`GITHUB_ACTIONS`, `GITLAB_CI`): the attestor was
/// asked for outside the CI it describes.
pub fn require_marker(env: Env<'_>, marker: &str, attestor: &str, ci: &str) -> anyhow::Result<()> {
    if env(marker).as_deref() == Some("true") {
        return Ok(());
    }
    anyhow::bail!(
        "{attestor} attestor: not in a {ci} job ({marker} is not \"true\"); the command was not \
         started (leave out -a {attestor} outside {ci})"
    )
}

/// The attestation of a CI job: `jwt` first (as witness orders it), then `fields` in order,
/// each value redacted like any recorded text; `url_subjects` name the fields whose values are
/// subjects (`<field>:<url>`, SHA-256 of the URL), the first of them also the backref.
pub fn attest(
    type_uri: &'static str,
    claims: Option<&Claims>,
    fields: Vec<(&'static str, String)>,
    url_subjects: &[&str],
    redaction: &Redaction,
    started: SystemTime,
) -> Attestation {
    let mut predicate = Map::new();
    if let Some(Claims(claims)) = claims {
        predicate.insert(
            "jwt".to_owned(),
            serde_json::json!({ "claims": Value::Object(claims.clone()) }),
        );
    }
    for (name, value) in fields {
        predicate.insert(name.to_owned(), Value::String(redaction.text(&value)));
    }
    let subjects: Vec<(String, crate::digest::DigestSet)> = url_subjects
        .iter()
        .map(|field| {
            let url = predicate[*field].as_str().unwrap_or_default();
            (
                format!("{field}:{url}"),
                sha256_set(sha256_hex(url.as_bytes())),
            )
        })
        .collect();
    let backrefs = subjects.first().cloned().into_iter().collect();
    Attestation {
        type_uri,
        predicate: Value::Object(predicate),
        subjects,
        backrefs,
        started,
        ended: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_decoded_and_malformed_tokens_named() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"repository":"org/app","ref":"refs/heads/main"}"#);
        let claims = Claims::decode(&format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")).unwrap();
        assert_eq!(claims.0["ref"], "refs/heads/main");
        for (token, expected) in [
            ("only.two", "three base64url parts"),
            ("a.!!!.c", "not base64url"),
            ("a.bm90IGpzb24.c", "not JSON"),
            ("a.WzFd.c", "not a JSON object"),
        ] {
            let error = format!("{:#}", Claims::decode(token).unwrap_err());
            assert!(error.contains(expected), "{token}: {error}");
        }
    }
}
