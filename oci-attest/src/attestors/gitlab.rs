//! The `gitlab` attestor (v0.1): the GitLab CI job's identity from the runner's environment,
//! with the fields and subjects of witness's and cilock's gitlab attestor, plus `ref` and `sha`
//! (which witness only has inside the token's claims).

use std::time::SystemTime;

use crate::attestors::ci_job::{self, Env};
use crate::attestors::{Attach, Attestation, Attestor, PredicateField, RunContext, Stage};

pub const TYPE_URI: &str = "https://aflock.ai/attestations/gitlab/v0.1";

pub const ATTESTOR: Attestor = Attestor {
    name: "gitlab",
    predicate_type: TYPE_URI,
    aliases: &["https://witness.dev/attestations/gitlab/v0.1"],
    stage: Stage::PreMaterial,
    attach: Attach::OnRequest,
    summary: "the GitLab CI job: project, pipeline, job, runner (no network access)",
    fields: FIELDS,
    attest: from_run,
};

/// Predicate fields after `jwt`, in witness's order, and the variable each comes from.
const FROM_ENV: &[(&str, &str)] = &[
    ("ciconfigpath", "CI_CONFIG_PATH"),
    ("jobid", "CI_JOB_ID"),
    ("jobimage", "CI_JOB_IMAGE"),
    ("jobname", "CI_JOB_NAME"),
    ("jobstage", "CI_JOB_STAGE"),
    ("joburl", "CI_JOB_URL"),
    ("pipelineid", "CI_PIPELINE_ID"),
    ("pipelineurl", "CI_PIPELINE_URL"),
    ("projectid", "CI_PROJECT_ID"),
    ("projecturl", "CI_PROJECT_URL"),
    ("runnerid", "CI_RUNNER_ID"),
    ("cihost", "CI_SERVER_HOST"),
    ("ciserverurl", "CI_SERVER_URL"),
    ("ref", "CI_COMMIT_REF_NAME"),
    ("sha", "CI_COMMIT_SHA"),
];

const FIELDS: &[PredicateField] = &[
    PredicateField {
        name: "jwt",
        meaning: "{claims} of the ID token in --attestor-gitlab-jwt-path (decoded, not verified)",
    },
    PredicateField {
        name: "<field>",
        meaning: "ciconfigpath jobid jobimage jobname jobstage joburl pipelineid pipelineurl \
                  projectid projecturl runnerid cihost ciserverurl from CI_*, as witness; \
                  ref, sha (CI_COMMIT_REF_NAME, CI_COMMIT_SHA) are oci-attest's additions",
    },
    PredicateField {
        name: "subjects",
        meaning: "pipelineurl (also the backref), joburl, projecturl",
    },
];

fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let options = &run.options;
    Ok(vec![attest(
        &ci_job::process_env,
        options.gitlab_jwt.as_ref(),
        &options.redaction,
        SystemTime::now(),
    )?])
}

/// The gitlab attestation from `env`; fails outside GitLab CI.
pub fn attest(
    env: Env<'_>,
    claims: Option<&ci_job::Claims>,
    redaction: &crate::redact::Redaction,
    started: SystemTime,
) -> anyhow::Result<Attestation> {
    ci_job::require_marker(env, "GITLAB_CI", ATTESTOR.name, "GitLab CI")?;
    let fields = FROM_ENV
        .iter()
        .map(|(field, variable)| (*field, env(variable).unwrap_or_default()))
        .collect();
    Ok(ci_job::attest(
        TYPE_URI,
        claims,
        fields,
        &["pipelineurl", "joburl", "projecturl"],
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
    fn records_the_job_and_hides_url_credentials() {
        let vars = HashMap::from([
            ("GITLAB_CI", "true"),
            ("CI_JOB_URL", "https://gitlab.example/g/app/-/jobs/9"),
            (
                "CI_PIPELINE_URL",
                "https://gitlab.example/g/app/-/pipelines/3",
            ),
            ("CI_PROJECT_URL", "https://gitlab.example/g/app"),
            ("CI_SERVER_URL", "https://user:secret@gitlab.example"),
        ]);
        let env = |name: &str| vars.get(name).map(|value| (*value).to_owned());
        let claims = ci_job::Claims::decode("e30.eyJyZWYiOiJtYWluIn0.c2ln").unwrap();
        let attestation = attest(
            &env,
            Some(&claims),
            &Redaction::default(),
            SystemTime::now(),
        )
        .unwrap();
        let predicate = &attestation.predicate;
        assert_eq!(predicate["jwt"]["claims"]["ref"], "main");
        let keys: Vec<&str> = predicate
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .skip(1)
            .collect();
        let expected: Vec<&str> = FROM_ENV.iter().map(|(field, _)| *field).collect();
        assert_eq!(keys, expected);
        assert!(!predicate["ciserverurl"].to_string().contains("secret"));
        assert_eq!(attestation.subjects.len(), 3);
        assert_eq!(
            attestation.backrefs[0].0,
            "pipelineurl:https://gitlab.example/g/app/-/pipelines/3"
        );
    }
}
