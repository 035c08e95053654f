//! The `github` attestor (v0.1): the GitHub Actions job's identity from the runner's
//! environment, with the fields and subjects of witness's and cilock's github attestor, plus
//! `ref` and `sha` (which witness only has inside the token's claims).

use std::time::SystemTime;

use crate::attestors::ci_job::{self, Env};
use crate::attestors::{Attach, Attestation, Attestor, PredicateField, RunContext, Stage};

pub const TYPE_URI: &str = "https://aflock.ai/attestations/github/v0.1";

pub const ATTESTOR: Attestor = Attestor {
    name: "github",
    predicate_type: TYPE_URI,
    aliases: &["https://witness.dev/attestations/github/v0.1"],
    stage: Stage::PreMaterial,
    attach: Attach::OnRequest,
    summary: "the GitHub Actions job: repository, workflow, run, runner (no network access)",
    fields: FIELDS,
    attest: from_run,
};

const FIELDS: &[PredicateField] = &[
    PredicateField {
        name: "jwt",
        meaning: "{claims} of the OIDC token in --attestor-github-jwt-path (decoded, not verified)",
    },
    PredicateField {
        name: "ciconfigpath",
        meaning: "GITHUB_ACTION_PATH",
    },
    PredicateField {
        name: "pipelineid",
        meaning: "the run id (GITHUB_RUN_ID)",
    },
    PredicateField {
        name: "pipelinename",
        meaning: "the workflow (GITHUB_WORKFLOW)",
    },
    PredicateField {
        name: "pipelineurl",
        meaning: "projecturl/actions/runs/<run id>; a subject and the backref",
    },
    PredicateField {
        name: "projecturl",
        meaning: "GITHUB_SERVER_URL/GITHUB_REPOSITORY; a subject",
    },
    PredicateField {
        name: "runnerid",
        meaning: "the runner (RUNNER_NAME)",
    },
    PredicateField {
        name: "cihost",
        meaning: "empty, as witness writes it",
    },
    PredicateField {
        name: "ciserverurl",
        meaning: "GITHUB_SERVER_URL",
    },
    PredicateField {
        name: "runnerarch",
        meaning: "RUNNER_ARCH",
    },
    PredicateField {
        name: "runneros",
        meaning: "RUNNER_OS",
    },
    PredicateField {
        name: "ref",
        meaning: "GITHUB_REF (oci-attest's addition)",
    },
    PredicateField {
        name: "sha",
        meaning: "GITHUB_SHA (oci-attest's addition)",
    },
];

fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let options = &run.options;
    Ok(vec![attest(
        &ci_job::process_env,
        options.github_jwt.as_ref(),
        &options.redaction,
        SystemTime::now(),
    )?])
}

/// The github attestation from `env`; fails outside GitHub Actions.
pub fn attest(
    env: Env<'_>,
    claims: Option<&ci_job::Claims>,
    redaction: &crate::redact::Redaction,
    started: SystemTime,
) -> anyhow::Result<Attestation> {
    ci_job::require_marker(env, "GITHUB_ACTIONS", ATTESTOR.name, "GitHub Actions")?;
    let var = |name: &str| env(name).unwrap_or_default();
    let server = var("GITHUB_SERVER_URL");
    let run_id = var("GITHUB_RUN_ID");
    let project = format!("{server}/{}", var("GITHUB_REPOSITORY"));
    let fields = vec![
        ("ciconfigpath", var("GITHUB_ACTION_PATH")),
        ("pipelineid", run_id.clone()),
        ("pipelinename", var("GITHUB_WORKFLOW")),
        ("pipelineurl", format!("{project}/actions/runs/{run_id}")),
        ("projecturl", project),
        ("runnerid", var("RUNNER_NAME")),
        ("cihost", String::new()),
        ("ciserverurl", server),
        ("runnerarch", var("RUNNER_ARCH")),
        ("runneros", var("RUNNER_OS")),
        ("ref", var("GITHUB_REF")),
        ("sha", var("GITHUB_SHA")),
    ];
    Ok(ci_job::attest(
        TYPE_URI,
        claims,
        fields,
        &["pipelineurl", "projecturl"],
        redaction,
        started,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::redact::Redaction;

    #[test]
    fn records_the_job_as_witness_does_and_refuses_outside_actions() {
        let vars = HashMap::from([
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "org/app"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_WORKFLOW", "release"),
            ("RUNNER_NAME", "runner-7"),
            ("GITHUB_REF", "refs/heads/main"),
        ]);
        let env = |name: &str| vars.get(name).map(|value| (*value).to_owned());
        let attestation = attest(&env, None, &Redaction::default(), SystemTime::now()).unwrap();
        let predicate = &attestation.predicate;
        let keys: Vec<&str> = predicate
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let documented: Vec<&str> = FIELDS.iter().skip(1).map(|field| field.name).collect();
        assert_eq!(keys, documented, "field order is witness's, then ours");
        assert_eq!(
            predicate["pipelineurl"],
            "https://github.com/org/app/actions/runs/42"
        );
        assert_eq!(predicate["projecturl"], "https://github.com/org/app");
        let names: Vec<&str> = attestation
            .subjects
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "pipelineurl:https://github.com/org/app/actions/runs/42",
                "projecturl:https://github.com/org/app"
            ]
        );
        assert_eq!(attestation.backrefs, attestation.subjects[..1]);

        let outside = |_: &str| None;
        let error = attest(&outside, None, &Redaction::default(), SystemTime::now()).unwrap_err();
        assert!(error.to_string().contains("GITHUB_ACTIONS"), "{error}");
    }
}
