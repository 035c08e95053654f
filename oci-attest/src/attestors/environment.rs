//! The `environment` attestor (v0.1): OS, host, user and the environment variables, with the
//! values of sensitive ones replaced by `******`.

use std::time::SystemTime;

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::attestors::{Attach, Attestation, Attestor, RunContext, Stage, ENVIRONMENT_TYPE_URI};

pub const ATTESTOR: Attestor = Attestor {
    name: "environment",
    predicate_type: ENVIRONMENT_TYPE_URI,
    aliases: &["https://witness.dev/attestations/environment/v0.1"],
    stage: Stage::PreMaterial,
    attach: Attach::OnRequest,
    summary: "OS, hostname, user and environment variables (secrets hidden)",
    fields: &[],
    attest: from_run,
};

fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let policy = SensitivePolicy::new(
        &run.options.env_add_sensitive_key,
        &run.options.env_allow_sensitive_key,
    )?;
    Ok(vec![attest(
        process_variables(),
        &policy,
        SystemTime::now(),
    )?])
}

/// Name globs (matched case-insensitively) whose values are hidden. Unlike cilock there is no
/// `*PAT*` or `*PWD*`, which hide PATH, PWD and OLDPWD by accident.
const SENSITIVE_GLOBS: &[&str] = &[
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*PASSPHRASE*",
    "*API_KEY*",
    "*APIKEY*",
    "*CREDENTIAL*",
    "*PRIVATE*",
    "*SIGNING*",
    "*ACCESS_KEY*",
    "*AUTH*",
    "*BEARER*",
    "*JWT*",
    "*DSN*",
    "*DATABASE_URL*",
    "*CONNECTION_STRING*",
    "*WEBHOOK*",
    "*_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "DOCKER_PASSWORD",
    "VAULT_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_RUNTIME_TOKEN",
];

const HIDDEN: &str = "******";

/// Which variable names are sensitive: the built-in globs plus `--env-add-sensitive-key`,
/// minus `--env-allow-sensitive-key`.
#[derive(Clone, Debug)]
pub struct SensitivePolicy {
    sensitive: GlobSet,
    allowed: GlobSet,
}

fn glob_set<'a>(patterns: impl IntoIterator<Item = &'a str>) -> anyhow::Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .with_context(|| format!("invalid environment key pattern {pattern:?}"))?;
        builder.add(glob);
    }
    Ok(builder.build()?)
}

impl SensitivePolicy {
    pub fn new(added: &[String], allowed: &[String]) -> anyhow::Result<SensitivePolicy> {
        Ok(SensitivePolicy {
            sensitive: glob_set(
                SENSITIVE_GLOBS
                    .iter()
                    .copied()
                    .chain(added.iter().map(String::as_str)),
            )?,
            allowed: glob_set(allowed.iter().map(String::as_str))?,
        })
    }

    pub fn is_sensitive(&self, name: &str) -> bool {
        self.sensitive.is_match(name) && !self.allowed.is_match(name)
    }
}

#[derive(Debug, Serialize)]
struct Environment {
    os: &'static str,
    hostname: String,
    username: String,
    variables: std::collections::BTreeMap<String, String>,
}

fn username() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// The environment attestation over `variables` (pass this process's environment).
pub fn attest(
    variables: impl IntoIterator<Item = (String, String)>,
    policy: &SensitivePolicy,
    started: SystemTime,
) -> anyhow::Result<Attestation> {
    let variables = variables
        .into_iter()
        .map(|(name, value)| {
            let value = if policy.is_sensitive(&name) {
                HIDDEN.to_owned()
            } else {
                value
            };
            (name, value)
        })
        .collect();
    let predicate = Environment {
        os: std::env::consts::OS,
        hostname: nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        username: username(),
        variables,
    };
    Ok(Attestation {
        type_uri: ENVIRONMENT_TYPE_URI,
        predicate: serde_json::to_value(&predicate)?,
        subjects: Vec::new(),
        backrefs: Vec::new(),
        started,
        ended: SystemTime::now(),
    })
}

/// This process's environment as UTF-8 pairs (invalid bytes replaced).
pub fn process_variables() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|name| ((*name).to_owned(), format!("value-of-{name}")))
            .collect()
    }

    #[test]
    fn hides_secrets_but_not_path_or_pwd() {
        let policy = SensitivePolicy::new(&["MY_CUSTOM".into()], &["GITHUB_TOKEN".into()]).unwrap();
        let names = [
            "PATH",
            "PWD",
            "OLDPWD",
            "HOME",
            "github_token",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "NPM_AUTH",
            "SENTRY_DSN",
            "DEPLOY_KEY",
            "KEYBOARD",
            "my_custom",
            "SLACK_WEBHOOK_URL",
            "x_jwt",
        ];
        let attestation = attest(pairs(&names), &policy, SystemTime::now()).unwrap();
        let variables = &attestation.predicate["variables"];
        let shown: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| variables[*name] == format!("value-of-{name}").as_str())
            .collect();
        assert_eq!(
            shown,
            [
                "PATH",
                "PWD",
                "OLDPWD",
                "HOME",
                "github_token",
                "GITHUB_TOKEN",
                "KEYBOARD"
            ]
        );
        for name in names.iter().filter(|name| !shown.contains(name)) {
            assert_eq!(variables[*name], "******", "{name}");
        }
        let keys: Vec<&String> = variables.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(attestation.predicate["os"], "linux");
    }

    #[test]
    fn bad_pattern_is_an_error() {
        let error = SensitivePolicy::new(&["[".into()], &[]).unwrap_err();
        assert!(format!("{error:#}").contains("invalid environment key pattern"));
    }
}
