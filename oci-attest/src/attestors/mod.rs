//! The attestors: each turns what a run observed into predicates of the collection.
//!
//! [`ATTESTORS`] is the one table that describes them: `-a` parsing, `oci-attest tools`,
//! `oci-attest doctor`, the run itself and the order of the collection all read it. Adding an
//! attestor means one module that defines its [`Attestor`] row and one line in the table.

pub mod ci_job;
pub mod command_run;
pub mod environment;
pub mod file_tree;
pub mod git;
pub mod github;
pub mod gitlab;
pub mod material;
pub mod oci;
pub mod product;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use crate::digest::DigestSet;
use crate::observed::{Incomplete, Observation};
use crate::redact::Redaction;
use crate::run_options::RunOptions;
use crate::snapshot::{FileStamp, Snapshot};

pub const COMMAND_RUN_TYPE_URI: &str = "https://aflock.ai/attestations/command-run/v0.1";
pub const ENVIRONMENT_TYPE_URI: &str = "https://aflock.ai/attestations/environment/v0.1";
pub const GIT_TYPE_URI: &str = "https://aflock.ai/attestations/git/v0.1";
pub const MATERIAL_TYPE_URI: &str = "https://aflock.ai/attestations/material/v0.3";
pub const PRODUCT_TYPE_URI: &str = "https://aflock.ai/attestations/product/v0.3";

/// Every attestor, in the order a run calls them. The collection lists their output in
/// [`Stage`] order instead: `oci` runs before `product` so that `product` reuses the digest of
/// each archive `oci` has just read (every archive is read once), yet appears after it.
/// `command-run` runs last: it records every gap of the run, also those found while the
/// products were read (`RunContext::late_gaps`).
pub const ATTESTORS: &[Attestor] = &[
    environment::ATTESTOR,
    git::ATTESTOR,
    github::ATTESTOR,
    gitlab::ATTESTOR,
    material::ATTESTOR,
    oci::ATTESTOR,
    product::ATTESTOR,
    command_run::ATTESTOR,
];

/// One attestor, described completely.
#[derive(Clone, Copy, Debug)]
pub struct Attestor {
    /// The name `-a` and `tools show` use.
    pub name: &'static str,
    pub predicate_type: &'static str,
    /// Other names `-a` accepts besides the name and the predicate type: the type the same
    /// attestor has in in-toto witness.
    pub aliases: &'static [&'static str],
    pub stage: Stage,
    pub attach: Attach,
    /// One line for `tools list`.
    pub summary: &'static str,
    /// The predicate's fields and what they hold, for `tools show` (empty: see `docs/format.md`).
    pub fields: &'static [PredicateField],
    /// The attestations of this run. Attestors of a stage before [`Stage::Execute`] are called
    /// before the command starts (`RunContext::outcome` is `None`), the others after it.
    pub attest: fn(&RunContext) -> anyhow::Result<Vec<Attestation>>,
}

/// Where an attestor's output sits in the collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    PreMaterial,
    Material,
    Execute,
    Product,
    PostProduct,
}

impl Stage {
    /// Attestors of this stage look at the world before the command runs.
    pub fn before_command(self) -> bool {
        self < Stage::Execute
    }
}

/// When an attestor is part of a run.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    Always,
    /// With `-a NAME`.
    OnRequest,
    /// With `-a NAME`, or when its rule fires.
    Auto(AutoRule),
}

/// The rule that attaches an attestor by itself.
#[derive(Clone, Copy, Debug)]
pub struct AutoRule {
    /// Why the attestor attaches to this run, if it does. Asked before the command
    /// (`RunContext::outcome` is `None`) and, if the answer was no, again after it.
    pub decide: fn(&RunContext) -> Option<String>,
    /// The rule in words, one line per condition, for `tools show`.
    pub describe: fn() -> Vec<String>,
    /// The step name of a run this rule attached the attestor to (when `--step` is not given).
    pub step: &'static str,
    /// Programs the rule recognises as the wrapped command (`doctor` says where they are).
    pub programs: fn() -> Vec<&'static str>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct PredicateField {
    pub name: &'static str,
    pub meaning: &'static str,
}

/// The table sorted by stage (stable), as `tools list` shows it.
pub fn catalogue() -> Vec<&'static Attestor> {
    let mut rows: Vec<&'static Attestor> = ATTESTORS.iter().collect();
    rows.sort_by_key(|row| row.stage);
    rows
}

/// The stage of the attestor that writes predicates of `predicate_type`.
pub fn stage_of(predicate_type: &str) -> Option<Stage> {
    ATTESTORS
        .iter()
        .find(|row| row.predicate_type == predicate_type)
        .map(|row| row.stage)
}

impl clap::ValueEnum for Attestor {
    fn value_variants<'a>() -> &'a [Self] {
        ATTESTORS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(
            clap::builder::PossibleValue::new(self.name)
                .alias(self.predicate_type)
                .aliases(self.aliases.iter().copied()),
        )
    }
}

/// Settings of individual attestors, from the command line.
#[derive(Clone, Debug, Default)]
pub struct AttestorOptions {
    /// Applied to every string an attestor records (environment, command lines, URLs).
    pub redaction: Redaction,
    /// Sensitive environment variables are left out rather than shown as `******`.
    pub env_filter_sensitive_vars: bool,
    /// Command lines are recorded only as digests of their redacted words.
    pub argv_digests: bool,
    /// Every option that shaped the run, with its source: signed by command-run.
    pub run_options: Option<RunOptions>,
    /// Claims of the job's OIDC token, for `github` (`--attestor-github-jwt-path`).
    pub github_jwt: Option<ci_job::Claims>,
    /// Claims of the job's ID token, for `gitlab` (`--attestor-gitlab-jwt-path`).
    pub gitlab_jwt: Option<ci_job::Claims>,
}

/// What the command did, known once it has run.
#[derive(Debug)]
pub struct Outcome {
    pub observation: Observation,
    /// The files it produced.
    pub products: Vec<PathBuf>,
    /// Their stamps when the command ended, where known: a product whose stamp moved since
    /// was changed by someone else before it was read.
    pub product_stamps: HashMap<PathBuf, FileStamp>,
}

/// Why an attestor is part of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachReason {
    Always,
    Requested,
    /// Its auto rule fired, for this reason.
    Rule(String),
}

impl AttachReason {
    /// The reason in words, for the attestor named `attestor`.
    pub fn describe(&self, attestor: &str) -> String {
        match self {
            AttachReason::Always => "always attached".to_owned(),
            AttachReason::Requested => format!("requested with -a {attestor}"),
            AttachReason::Rule(why) => why.clone(),
        }
    }
}

/// Everything an attestor may look at, and which attestors are attached.
#[derive(Debug)]
pub struct RunContext {
    pub working_dir: PathBuf,
    pub argv: Vec<String>,
    pub options: AttestorOptions,
    /// The regular files of the working directory before the command.
    pub before: Snapshot,
    /// `None` until the command has run.
    pub outcome: Option<Outcome>,
    /// Files already hashed during this run (archives `oci` read), by path.
    pub known_digests: RefCell<HashMap<PathBuf, String>>,
    /// Digests of the materials, taken before the command (the `material` attestor's): the
    /// content of a file before it, when its stamps alone cannot tell.
    pub material_digests: RefCell<HashMap<PathBuf, String>>,
    /// Gaps found after the command, while the products were read (`product-unstable`).
    pub late_gaps: RefCell<Vec<Incomplete>>,
    /// The registry reference the command pushed, when it is a recognised push (its image is
    /// then the oci subject, with or without an archive).
    pub pushed: Option<String>,
    attached: Vec<(&'static Attestor, AttachReason)>,
}

impl RunContext {
    /// The context before the command, with the attestors that attach already: always-on
    /// ones, the `requested` ones, and those whose rule fires on the command line.
    pub fn before_command(
        working_dir: PathBuf,
        argv: Vec<String>,
        options: AttestorOptions,
        before: Snapshot,
        requested: &[Attestor],
    ) -> RunContext {
        let mut context = RunContext {
            working_dir,
            argv,
            options,
            before,
            outcome: None,
            known_digests: RefCell::new(HashMap::new()),
            material_digests: RefCell::new(HashMap::new()),
            late_gaps: RefCell::new(Vec::new()),
            pushed: None,
            attached: Vec::new(),
        };
        for row in ATTESTORS {
            let reason = match row.attach {
                Attach::Always => Some(AttachReason::Always),
                _ if requested.iter().any(|wanted| wanted.name == row.name) => {
                    Some(AttachReason::Requested)
                }
                Attach::OnRequest => None,
                Attach::Auto(rule) => (rule.decide)(&context).map(AttachReason::Rule),
            };
            if let Some(reason) = reason {
                context.attach(row, reason);
            }
        }
        context
    }

    /// Records what the command did, and attaches the attestors whose rule fires on it.
    pub fn command_ran(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        for row in ATTESTORS {
            if let Attach::Auto(rule) = row.attach {
                if self.reason(row.name).is_none() {
                    if let Some(reason) = (rule.decide)(self) {
                        self.attach(row, AttachReason::Rule(reason));
                    }
                }
            }
        }
    }

    fn attach(&mut self, row: &'static Attestor, reason: AttachReason) {
        if let Attach::Auto(_) = row.attach {
            tracing::info!(
                "{} attestor attached: {}",
                row.name,
                reason.describe(row.name)
            );
        }
        self.attached.push((row, reason));
    }

    /// Why the attestor `name` is attached, or `None` when it is not.
    pub fn reason(&self, name: &str) -> Option<&AttachReason> {
        self.attached
            .iter()
            .find(|(row, _)| row.name == name)
            .map(|(_, reason)| reason)
    }

    /// The attestations of the attached attestors of this phase (before or after the
    /// command), in table order.
    pub fn attest(&self) -> anyhow::Result<Vec<Attestation>> {
        let before_command = self.outcome.is_none();
        let mut attestations = Vec::new();
        for row in ATTESTORS {
            if row.stage.before_command() == before_command && self.reason(row.name).is_some() {
                attestations.extend((row.attest)(self)?);
            }
        }
        Ok(attestations)
    }

    /// The step name when `--step` is not given: `oci-push` for a push (whichever tool made
    /// it), else the step of the first attestor a rule attached, else `run`.
    pub fn default_step(&self) -> &'static str {
        if self.pushed.is_some() {
            return PUSH_STEP;
        }
        self.attached
            .iter()
            .find_map(|(row, reason)| match (row.attach, reason) {
                (Attach::Auto(rule), AttachReason::Rule(_)) => Some(rule.step),
                _ => None,
            })
            .unwrap_or("run")
    }

    /// The outcome, for `user` (an attestor, or the run's summary) that needs the command to
    /// have run.
    pub fn outcome(&self, user: &str) -> anyhow::Result<&Outcome> {
        self.outcome.as_ref().ok_or_else(|| {
            anyhow::anyhow!("{user} needs the command's outcome, but it has not run yet")
        })
    }
}

/// The default step name of a run whose command pushes an image to a registry.
pub const PUSH_STEP: &str = "oci-push";

/// One attestor's contribution to the collection.
#[derive(Clone, Debug)]
pub struct Attestation {
    /// Predicate type URI, e.g. `https://aflock.ai/attestations/oci/v0.1`.
    pub type_uri: &'static str,
    /// The predicate, already in wire key order (serde_json with `preserve_order`).
    pub predicate: serde_json::Value,
    /// Subject keys without the type prefix (`imageid:<hex>`), with their digests.
    pub subjects: Vec<(String, DigestSet)>,
    /// Backref keys without the type prefix.
    pub backrefs: Vec<(String, DigestSet)>,
    pub started: SystemTime,
    pub ended: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_lists_every_attestor_in_stage_order() {
        let entries = catalogue();
        let names: Vec<_> = entries.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "environment",
                "git",
                "github",
                "gitlab",
                "material",
                "command-run",
                "product",
                "oci"
            ]
        );
        assert!(entries
            .windows(2)
            .all(|pair| pair[0].stage <= pair[1].stage));
        let oci = entries.last().unwrap();
        assert_eq!(
            oci.predicate_type,
            "https://aflock.ai/attestations/oci/v0.1"
        );
        assert_eq!(oci.fields.len(), 9);
    }
}
