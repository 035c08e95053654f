//! The `environment` attestor (v0.1): OS, host, user and the environment variables, redacted
//! by the run's [`Redaction`] (sensitive values replaced by `******`, URL userinfo removed).

use std::time::SystemTime;

use serde::Serialize;

use crate::attestors::{Attach, Attestation, Attestor, RunContext, Stage, ENVIRONMENT_TYPE_URI};
use crate::redact::Redaction;

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
    let redaction = &run.options.redaction;
    let variables = process_variables().into_iter().filter(|(name, _)| {
        !(run.options.env_filter_sensitive_vars && redaction.is_sensitive_name(name))
    });
    Ok(vec![attest(variables, redaction, SystemTime::now())?])
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
    redaction: &Redaction,
    started: SystemTime,
) -> anyhow::Result<Attestation> {
    let variables = variables
        .into_iter()
        .map(|(name, value)| {
            let value = redaction.variable(&name, &value);
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
        let policy = Redaction::new(&["MY_CUSTOM".into()], &["GITHUB_TOKEN".into()], true).unwrap();
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
}
