//! Checks a policy against attestations, failing closed. Per step, a collection is accepted
//! when it is signed by one of the step's functionaries, holds every required attestation, is
//! tied to the artifact, its `artifactsFrom` links hold, and every Rego module allows every
//! attestation of the required type. Semantics: `docs/policy.md`.
//!
//! Everything a step is judged on comes from collections tied to the artifact: a collection is
//! tied when it names the artifact (subject or product leaf), when a tied collection's
//! `artifactsFrom` link matches it file by file, or when one of its subjects is a
//! back-reference of a tied collection. `input.steps` (`attestationsFrom`) is built only from
//! accepted, tied collections — an old successful build cannot stand in for this artifact's
//! failed one. Since accepting a collection can depend on another step's Rego and vice versa,
//! the accepted set is narrowed until it no longer changes: every collection finally accepted
//! passed its Rego with `input.steps` taken from the final accepted set.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sha2::Digest as _;

use crate::policy::evidence::{empty_digest, Digest, Evidence, FileSet, Files};
use crate::policy::model::{Policy, RegoModule, Step};
use crate::policy::rego::{EvaluationError, RegoError};

/// Evaluates Rego modules for [`verify`]: the denials of `modules` for a predicate (JSON) and,
/// for a step with `attestationsFrom`, its `input.steps` document (JSON); `what` names the
/// evaluation in messages.
pub trait Evaluator {
    fn evaluate(
        &mut self,
        modules: &[RegoModule],
        attestation: &str,
        steps: Option<&str>,
        what: &str,
    ) -> Result<Vec<String>, EvaluationError>;
}

impl Evaluator for crate::policy::rego::Sandbox {
    fn evaluate(
        &mut self,
        modules: &[RegoModule],
        attestation: &str,
        steps: Option<&str>,
        what: &str,
    ) -> Result<Vec<String>, EvaluationError> {
        crate::policy::rego::Sandbox::evaluate(self, modules, attestation, steps, what)
    }
}

/// Most combinations of `attestationsFrom` collections one collection's Rego is evaluated
/// with (each tied, accepted collection of each step it reads is one choice).
pub const MAX_CONTEXTS: usize = 64;

/// Upstream attestations named in the reasons of a failed `artifactsFrom` link (the rest are
/// counted).
const MAX_LINK_REASONS: usize = 10;

#[derive(Debug, Serialize)]
pub struct Report {
    pub holds: bool,
    /// The artifact digests (sha256 hex) the policy was checked for.
    pub artifacts: Vec<String>,
    pub steps: Vec<StepReport>,
    /// Attestations for steps the policy does not name (not used).
    pub unused: Vec<String>,
    /// Attestation files holding the same statement, signed by the same keys, as one given
    /// before them: counted once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<Duplicate>,
    /// Attestation files that could not be used at all (unreadable, not signed by a policy
    /// key, not a collection); the caller fills this in.
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Duplicate {
    pub source: String,
    pub same_as: String,
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub name: String,
    pub passed: bool,
    /// Why the step failed when no collection was even offered for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    pub collections: Vec<CollectionReport>,
}

#[derive(Debug, Serialize)]
pub struct CollectionReport {
    pub source: String,
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// Evaluates `policy` for `artifacts`. A Rego error (module broken or over its limits) aborts
/// with that error: the policy, not the evidence, is at fault.
pub fn verify(
    policy: &Policy,
    evidence: &[Evidence],
    artifacts: &[Digest],
    evaluator: &mut dyn Evaluator,
) -> Result<Report, RegoError> {
    let order = policy
        .dependency_order()
        .map_err(|error| RegoError(format!("{error:#}")))?;
    let (distinct, duplicates) = distinct(evidence);
    let mut run = Run::new(policy, &distinct, artifacts);
    run.settle(&order, evaluator)?;

    let steps: Vec<StepReport> = order
        .iter()
        .map(|name| {
            let collections: Vec<CollectionReport> = run.by_step[*name]
                .iter()
                .map(|&index| CollectionReport {
                    source: run.evidence[index].source.clone(),
                    passed: run.accepted[index],
                    reasons: run.reasons(index),
                })
                .collect();
            let reasons = if collections.is_empty() {
                vec![format!(
                    "no attestation for step {name:?} signed by a key of the policy was given"
                )]
            } else {
                Vec::new()
            };
            StepReport {
                name: (*name).to_owned(),
                passed: collections.iter().any(|collection| collection.passed),
                reasons,
                collections,
            }
        })
        .collect();
    let unused = distinct
        .iter()
        .filter(|item| !policy.steps.contains_key(&item.step))
        .map(|item| format!("{} (step {:?})", item.source, item.step))
        .collect();
    Ok(Report {
        // A policy without steps requires nothing and so proves nothing.
        holds: !steps.is_empty() && steps.iter().all(|step| step.passed),
        artifacts: artifacts.iter().map(hex::encode).collect(),
        steps,
        unused,
        duplicates,
        rejected: Vec::new(),
    })
}

/// The evidence with repeats removed: the same statement under the same signers is one
/// collection however many files hold it.
fn distinct(evidence: &[Evidence]) -> (Vec<&Evidence>, Vec<Duplicate>) {
    let mut seen: HashMap<(Digest, &[String]), &str> = HashMap::new();
    let mut kept = Vec::new();
    let mut duplicates = Vec::new();
    for item in evidence {
        match seen.get(&(item.statement_digest, item.signers.as_slice())) {
            Some(first) => duplicates.push(Duplicate {
                source: item.source.clone(),
                same_as: (*first).to_owned(),
            }),
            None => {
                seen.insert((item.statement_digest, &item.signers), &item.source);
                kept.push(item);
            }
        }
    }
    (kept, duplicates)
}

/// The state of one verification: collections by step, and what is known of each.
struct Run<'a> {
    policy: &'a Policy,
    evidence: &'a [&'a Evidence],
    artifacts: &'a [Digest],
    /// Collection indexes by step name (exact match on the collection's `name`).
    by_step: BTreeMap<&'a str, Vec<usize>>,
    /// Why a collection cannot pass whatever the others do (signature, missing attestation).
    structural: Vec<Vec<String>>,
    accepted: Vec<bool>,
    /// From the last round: why a collection was not tied, its chain failed, or Rego denied it.
    round_reasons: Vec<Vec<String>>,
    /// Tied to the artifact in some round (so, if not in the last, only through collections
    /// that failed).
    ever_tied: Vec<bool>,
    /// Rego results by (collection, required attestation, predicate, SHA-256 of the
    /// input.steps document).
    rego_cache: HashMap<RegoKey, Result<Vec<String>, EvaluationError>>,
}

impl<'a> Run<'a> {
    fn new(policy: &'a Policy, evidence: &'a [&'a Evidence], artifacts: &'a [Digest]) -> Self {
        let mut by_step: BTreeMap<&str, Vec<usize>> = policy
            .steps
            .keys()
            .map(|name| (name.as_str(), Vec::new()))
            .collect();
        let mut structural = vec![Vec::new(); evidence.len()];
        // Collections of steps the policy does not name are never accepted.
        let mut accepted = vec![false; evidence.len()];
        for (index, item) in evidence.iter().enumerate() {
            let Some((name, step)) = policy.steps.get_key_value(&item.step) else {
                continue;
            };
            by_step
                .get_mut(name.as_str())
                .expect("every step has an entry")
                .push(index);
            structural[index] = structural_reasons(step, item);
            accepted[index] = structural[index].is_empty();
        }
        Run {
            policy,
            evidence,
            artifacts,
            by_step,
            structural,
            accepted,
            round_reasons: vec![Vec::new(); evidence.len()],
            ever_tied: vec![false; evidence.len()],
            rego_cache: HashMap::new(),
        }
    }

    /// Narrows the accepted set until it is stable (it only ever shrinks, so this ends).
    fn settle(&mut self, order: &[&str], evaluator: &mut dyn Evaluator) -> Result<(), RegoError> {
        loop {
            let tied = self.tie();
            let mut next = vec![false; self.evidence.len()];
            let mut reasons = vec![Vec::new(); self.evidence.len()];
            for name in order {
                let step = &self.policy.steps[*name];
                let collections = self.by_step[*name].clone();
                for index in collections {
                    if !self.accepted[index] {
                        continue;
                    }
                    match &tied[index] {
                        Tie::Not => {
                            reasons[index].push(self.untied_reason(index));
                            continue;
                        }
                        Tie::ChainBroken(why) => {
                            reasons[index].extend(why.iter().cloned());
                            continue;
                        }
                        Tie::Tied => self.ever_tied[index] = true,
                    }
                    let denials = self.rego(step, index, &next, evaluator)?;
                    next[index] = denials.is_empty();
                    reasons[index] = denials;
                }
            }
            for (index, accepted) in self.accepted.iter().enumerate() {
                if *accepted {
                    self.round_reasons[index] = std::mem::take(&mut reasons[index]);
                }
            }
            if next == self.accepted {
                return Ok(());
            }
            self.accepted = next;
        }
    }

    fn untied_reason(&self, index: usize) -> String {
        if self.ever_tied[index] {
            return "tied to the artifact only through attestations that failed (see the steps \
                    that link to it)"
                .to_owned();
        }
        let artifacts: Vec<String> = self
            .artifacts
            .iter()
            .map(|digest| format!("sha256:{}", hex::encode(digest)))
            .collect();
        format!(
            "not tied to the artifact: no subject or product has digest {}, and no \
             artifactsFrom or back-reference leads to it",
            artifacts.join(" or ")
        )
    }

    fn reasons(&self, index: usize) -> Vec<String> {
        let mut reasons = self.structural[index].clone();
        reasons.extend(self.round_reasons[index].iter().cloned());
        // The same reason found through several candidates is said once.
        let mut seen = HashSet::new();
        reasons.retain(|reason| seen.insert(reason.clone()));
        reasons
    }

    /// Which accepted collections are tied to the artifact and whose chain holds.
    fn tie(&self) -> Vec<Tie> {
        let mut tied = vec![Tie::Not; self.evidence.len()];
        let mut by_subject: HashMap<&Digest, Vec<usize>> = HashMap::new();
        for (index, item) in self.evidence.iter().enumerate() {
            if self.accepted[index] {
                for (_, digest) in &item.subjects {
                    by_subject.entry(digest).or_default().push(index);
                }
            }
        }
        // Upstream candidates by what they left: a link is compared once per distinct file
        // set, however many collections recorded it (a CI history of identical builds).
        let mut groups: HashMap<&str, Vec<Vec<usize>>> = HashMap::new();
        for (name, collections) in &self.by_step {
            let mut by_files: HashMap<Digest, Vec<usize>> = HashMap::new();
            for &index in collections.iter().filter(|&&index| self.accepted[index]) {
                by_files
                    .entry(self.evidence[index].files_digest())
                    .or_default()
                    .push(index);
            }
            // In the order the collections were given, so messages do not change between runs.
            let mut in_order: Vec<Vec<usize>> = by_files.into_values().collect();
            in_order.sort_unstable();
            groups.insert(name, in_order);
        }
        let mut queue: Vec<usize> = (0..self.evidence.len())
            .filter(|&index| self.accepted[index])
            .filter(|&index| self.artifacts.iter().any(|a| self.evidence[index].names(a)))
            .collect();
        let mut reached: HashSet<usize> = queue.iter().copied().collect();
        // Each group and each back-reference is followed once, so ties spread in time linear
        // in the collections, not quadratic.
        let mut followed_groups: HashSet<(&str, usize)> = HashSet::new();
        let mut followed_backrefs: HashSet<&Digest> = HashSet::new();
        while let Some(index) = queue.pop() {
            let item = self.evidence[index];
            let step = &self.policy.steps[&item.step];
            let mut broken = Vec::new();
            let mut next = Vec::new();
            for upstream in &step.artifacts_from {
                let mut reasons = Vec::new();
                let mut matched = false;
                for (group, members) in groups[upstream.as_str()].iter().enumerate() {
                    match chained(item, self.evidence[members[0]]) {
                        Ok(()) => {
                            matched = true;
                            if followed_groups.insert((upstream.as_str(), group)) {
                                next.extend(members.iter().copied());
                            }
                        }
                        Err(reason) => reasons.push(format!(
                            "artifactsFrom {upstream:?} ({}{}): {reason}",
                            self.evidence[members[0]].source,
                            match members.len() {
                                1 => String::new(),
                                count => format!(" and {} more with the same files", count - 1),
                            }
                        )),
                    }
                }
                if matched {
                    continue;
                }
                if reasons.is_empty() {
                    reasons.push(format!(
                        "artifactsFrom {upstream:?}: no accepted attestation for that step"
                    ));
                }
                let more = reasons.len().saturating_sub(MAX_LINK_REASONS);
                reasons.truncate(MAX_LINK_REASONS);
                if more > 0 {
                    reasons.push(format!(
                        "artifactsFrom {upstream:?}: and {more} more attestations that do not match"
                    ));
                }
                broken.extend(reasons);
            }
            if !broken.is_empty() {
                tied[index] = Tie::ChainBroken(broken);
                continue;
            }
            tied[index] = Tie::Tied;
            // Back-references widen the search as witness does: a collection whose subjects
            // include one of them belongs to the same artifact. The empty digest is every
            // empty tree's root and leads nowhere.
            for digest in &item.backrefs {
                if *digest != empty_digest() && followed_backrefs.insert(digest) {
                    next.extend(by_subject.get(digest).into_iter().flatten().copied());
                }
            }
            for other in next {
                if reached.insert(other) {
                    queue.push(other);
                }
            }
        }
        tied
    }

    /// The Rego denials of collection `index`, with `input.steps` from the accepted, tied
    /// collections (`accepted_now`) of the steps it reads.
    fn rego(
        &mut self,
        step: &Step,
        index: usize,
        accepted_now: &[bool],
        evaluator: &mut dyn Evaluator,
    ) -> Result<Vec<String>, RegoError> {
        if step
            .attestations
            .iter()
            .all(|required| required.modules.is_empty())
        {
            return Ok(Vec::new());
        }
        let contexts = match self.contexts(step, accepted_now) {
            Ok(contexts) => contexts,
            Err(reason) => return Ok(vec![reason]),
        };
        let item = self.evidence[index];
        let mut denials = Vec::new();
        for (required_index, required) in step.attestations.iter().enumerate() {
            if required.modules.is_empty() {
                continue;
            }
            // Every attestation of the type is evaluated: a passing duplicate must not hide a
            // failing one.
            for (predicate_index, predicate) in
                item.attestations.iter().enumerate().filter(|(_, p)| {
                    crate::policy::predicate_types::same(&p.type_uri, &required.type_uri)
                })
            {
                let json = predicate
                    .json
                    .as_deref()
                    .expect("evidence keeps every predicate the policy evaluates");
                for context in &contexts {
                    let key = (
                        index,
                        required_index,
                        predicate_index,
                        context
                            .as_deref()
                            .map(|text| sha2::Sha256::digest(text.as_bytes()).into()),
                    );
                    let result = self.rego_cache.entry(key).or_insert_with(|| {
                        let what = format!(
                            "step {:?}, {} of {}",
                            step.name, required.type_uri, item.source
                        );
                        evaluator.evaluate(&required.modules, json, context.as_deref(), &what)
                    });
                    match result {
                        Ok(found) => denials.extend(
                            found
                                .iter()
                                .map(|denial| format!("denied by {}: {denial}", required.type_uri)),
                        ),
                        Err(EvaluationError::Input(reason)) => denials.push(reason.clone()),
                        Err(EvaluationError::Policy(error)) => return Err(error.clone()),
                    }
                }
            }
        }
        Ok(denials)
    }

    /// The `input.steps` documents (JSON) a collection of `step` is evaluated with: `[None]`
    /// without `attestationsFrom`, else one per combination of accepted, tied collections of
    /// the steps it reads (a step with none is absent from the document, as in cilock).
    fn contexts(&self, step: &Step, accepted_now: &[bool]) -> Result<Vec<Option<String>>, String> {
        if step.attestations_from.is_empty() {
            return Ok(vec![None]);
        }
        let mut combinations: Vec<Vec<(&str, usize)>> = vec![Vec::new()];
        for dependency in &step.attestations_from {
            let choices: Vec<usize> = self.by_step[dependency.as_str()]
                .iter()
                .copied()
                .filter(|&index| accepted_now[index])
                .collect();
            if choices.is_empty() {
                continue;
            }
            if combinations.len() * choices.len() > MAX_CONTEXTS {
                return Err(format!(
                    "attestationsFrom: more than {MAX_CONTEXTS} combinations of accepted \
                     attestations of {:?} are tied to the artifact; give only the attestations \
                     of this artifact",
                    step.attestations_from
                ));
            }
            combinations = combinations
                .into_iter()
                .flat_map(|chosen| {
                    choices.iter().map(move |&choice| {
                        let mut chosen = chosen.clone();
                        chosen.push((dependency.as_str(), choice));
                        chosen
                    })
                })
                .collect();
        }
        Ok(combinations
            .into_iter()
            .map(|chosen| Some(self.steps_document(&chosen)))
            .collect())
    }

    /// `{"<step>": {"<type>": <predicate>, …}, …}`: per chosen collection, its predicates by
    /// type (the first of each type, as cilock does), written from the signed JSON text.
    fn steps_document(&self, chosen: &[(&str, usize)]) -> String {
        let quoted = |text: &str| serde_json::to_string(text).expect("strings serialise");
        let steps: Vec<String> = chosen
            .iter()
            .map(|(name, index)| {
                let mut types: Vec<&str> = Vec::new();
                let mut entries = Vec::new();
                for predicate in &self.evidence[*index].attestations {
                    if types.contains(&predicate.type_uri.as_str()) {
                        continue;
                    }
                    types.push(&predicate.type_uri);
                    let json = predicate
                        .json
                        .as_deref()
                        .expect("evidence keeps every predicate of an attestationsFrom step");
                    entries.push(format!("{}:{json}", quoted(&predicate.type_uri)));
                }
                format!("{}:{{{}}}", quoted(name), entries.join(","))
            })
            .collect();
        format!("{{{}}}", steps.join(","))
    }
}

type RegoKey = (usize, usize, usize, Option<Digest>);

#[derive(Clone, Debug)]
enum Tie {
    Not,
    ChainBroken(Vec<String>),
    Tied,
}

/// Why `item` cannot pass `step` whatever else holds: not signed by a functionary, a required
/// attestation missing.
fn structural_reasons(step: &Step, item: &Evidence) -> Vec<String> {
    let mut reasons = Vec::new();
    if !item
        .signers
        .iter()
        .any(|signer| step.functionaries.contains(signer))
    {
        reasons.push(format!(
            "not signed by a functionary of step {:?} (signed by {:?}, functionaries {:?})",
            step.name, item.signers, step.functionaries
        ));
    }
    // A gate that requires nothing would accept any collection the functionary signed.
    if step.attestations.is_empty() {
        reasons.push(format!("step {:?} requires no attestations", step.name));
    }
    for required in &step.attestations {
        if item.predicates(&required.type_uri).next().is_none() {
            reasons.push(format!("missing attestation {}", required.type_uri));
        }
    }
    reasons
}

/// The `artifactsFrom` link between a downstream collection and an upstream one: every
/// downstream material that the upstream step also recorded (its materials overlaid with its
/// products) carries the same digest, compared path by path, and at least one does (a chain
/// through which nothing flowed proves nothing).
fn chained(downstream: &Evidence, upstream: &Evidence) -> Result<(), String> {
    let materials = match &downstream.materials {
        Some(Files::Known(materials)) => materials,
        Some(Files::Unknown(reason)) => {
            return Err(format!("its materials cannot be compared: {reason}"))
        }
        None => {
            return Err(format!(
                "{} carries no material attestation, so its materials cannot be checked",
                downstream.source
            ))
        }
    };
    if materials.is_empty() {
        return Err("its material set is empty: nothing flowed from the upstream step".to_owned());
    }
    let upstream_products = comparable(&upstream.products, "products")?;
    let upstream_materials = comparable(&upstream.materials, "materials")?;
    let mut overlap = 0;
    for (path, digest) in materials {
        let left = upstream_products
            .and_then(|products| products.get(path))
            .or_else(|| upstream_materials.and_then(|materials| materials.get(path)));
        if let Some(left) = left {
            if left != digest {
                return Err(format!(
                    "material {path:?} has sha256:{} but the upstream step left sha256:{}",
                    hex::encode(digest),
                    hex::encode(left)
                ));
            }
            overlap += 1;
        }
    }
    if overlap == 0 {
        return Err("none of the step's materials comes from the upstream step".to_owned());
    }
    Ok(())
}

/// An upstream tree's files: `None` when the collection has no such tree (it recorded
/// nothing of that kind), an error when it has one whose paths cannot be compared.
fn comparable<'e>(files: &'e Option<Files>, what: &str) -> Result<Option<&'e FileSet>, String> {
    match files {
        None => Ok(None),
        Some(Files::Known(files)) => Ok(Some(files)),
        Some(Files::Unknown(reason)) => {
            Err(format!("the upstream {what} cannot be compared: {reason}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{json, Value};

    use super::*;
    use crate::attestors::{COMMAND_RUN_TYPE_URI, MATERIAL_TYPE_URI, PRODUCT_TYPE_URI};
    use crate::keys::{Algorithm, PrivateKey};
    use crate::policy::evidence::Predicate;
    use crate::policy::model::RequiredAttestation;

    /// Rego stand-in: denies when `decide(attestation, steps)` says so, and records each input.
    struct Fake<F: FnMut(&Value, Option<&Value>) -> Vec<String>> {
        decide: F,
        inputs: Vec<(Value, Option<Value>)>,
    }

    impl<F: FnMut(&Value, Option<&Value>) -> Vec<String>> Evaluator for Fake<F> {
        fn evaluate(
            &mut self,
            _: &[RegoModule],
            attestation: &str,
            steps: Option<&str>,
            _: &str,
        ) -> Result<Vec<String>, EvaluationError> {
            let attestation: Value = serde_json::from_str(attestation).unwrap();
            let steps: Option<Value> = steps.map(|text| serde_json::from_str(text).unwrap());
            self.inputs.push((attestation.clone(), steps.clone()));
            Ok((self.decide)(&attestation, steps.as_ref()))
        }
    }

    fn fake<F: FnMut(&Value, Option<&Value>) -> Vec<String>>(decide: F) -> Fake<F> {
        Fake {
            decide,
            inputs: Vec::new(),
        }
    }

    fn digest(name: &str) -> Digest {
        sha2::Sha256::digest(name.as_bytes()).into()
    }

    fn files(entries: &[(&str, &str)]) -> Option<Files> {
        Some(Files::Known(
            entries
                .iter()
                .map(|(path, content)| ((*path).to_owned(), digest(content)))
                .collect(),
        ))
    }

    /// A collection of `step` naming `subjects`, with back-references, materials and products
    /// (path → content) and a command-run predicate with `exitcode`.
    fn evidence(
        source: &str,
        step: &str,
        subjects: &[&str],
        backrefs: &[&str],
        materials: Option<Files>,
        products: Option<Files>,
        exitcode: i64,
    ) -> Evidence {
        let product_digests: BTreeSet<Digest> = match &products {
            Some(Files::Known(files)) => files.values().copied().collect(),
            _ => BTreeSet::new(),
        };
        let predicate = |type_uri: &str, json: Value| Predicate {
            type_uri: type_uri.to_owned(),
            json: Some(json.to_string().into()),
        };
        Evidence {
            source: source.to_owned(),
            signers: vec!["k".to_owned()],
            step: step.to_owned(),
            subjects: subjects
                .iter()
                .map(|content| (format!("s:{content}"), digest(content)))
                .collect(),
            backrefs: backrefs.iter().map(|content| digest(content)).collect(),
            attestations: vec![
                predicate(MATERIAL_TYPE_URI, json!({})),
                predicate(
                    COMMAND_RUN_TYPE_URI,
                    json!({"exitcode": exitcode, "source": source}),
                ),
                predicate(PRODUCT_TYPE_URI, json!({})),
            ],
            materials,
            products,
            product_digests,
            statement_digest: digest(source),
        }
    }

    fn step(name: &str, artifacts_from: &[&str], attestations_from: &[&str]) -> Step {
        Step {
            name: name.to_owned(),
            functionaries: vec!["k".to_owned()],
            attestations: vec![RequiredAttestation {
                type_uri: COMMAND_RUN_TYPE_URI.to_owned(),
                modules: vec![RegoModule {
                    name: "m".to_owned(),
                    source: String::new(),
                }],
            }],
            artifacts_from: artifacts_from.iter().map(|s| (*s).to_owned()).collect(),
            attestations_from: attestations_from.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn policy(steps: Vec<Step>) -> Policy {
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        Policy {
            expires: chrono::Utc::now(),
            keys: BTreeMap::from([("k".to_owned(), key.public().clone())]),
            steps: steps.into_iter().map(|s| (s.name.clone(), s)).collect(),
        }
    }

    fn allow(_: &Value, _: Option<&Value>) -> Vec<String> {
        Vec::new()
    }

    fn exit_zero(attestation: &Value, _: Option<&Value>) -> Vec<String> {
        if attestation["exitcode"] == 0 {
            Vec::new()
        } else {
            vec![format!("exit {}", attestation["exitcode"])]
        }
    }

    fn reasons(report: &Report, step: usize, collection: usize) -> &[String] {
        &report.steps[step].collections[collection].reasons
    }

    #[test]
    fn back_references_tie_a_collection_to_the_artifact_and_attestations_from_feeds_rego() {
        // scan names the artifact only through save's back-reference to it.
        let policy = policy(vec![step("save", &[], &[]), step("scan", &[], &["save"])]);
        let items = [
            evidence("save.json", "save", &["image"], &["scan-id"], None, None, 0),
            evidence("scan.json", "scan", &["scan-id"], &[], None, None, 0),
            evidence("other.json", "other", &["image"], &[], None, None, 0),
        ];
        let mut rego = fake(allow);
        let report = verify(&policy, &items, &[digest("image")], &mut rego).unwrap();
        assert!(report.holds, "{report:?}");
        assert_eq!(report.unused, ["other.json (step \"other\")"]);
        let (scan_input, steps) = rego.inputs.last().unwrap();
        assert_eq!(scan_input["source"], "scan.json");
        assert_eq!(
            steps.as_ref().unwrap()["save"][COMMAND_RUN_TYPE_URI]["source"],
            "save.json"
        );

        let report = verify(&policy, &items, &[digest("other")], &mut fake(allow)).unwrap();
        assert!(!report.holds);
        assert!(reasons(&report, 1, 0)[0].contains("not tied to the artifact"));
    }

    /// An old successful build, not tied to this artifact, must not feed `input.steps` of the
    /// step that reads the build: the failed build that is tied to it does.
    #[test]
    fn input_steps_come_only_from_collections_tied_to_the_artifact() {
        let policy = policy(vec![
            step("build", &[], &[]),
            step("save", &["build"], &["build"]),
        ]);
        let build_ok = |attestation: &Value, steps: Option<&Value>| match steps {
            Some(steps) if steps["build"][COMMAND_RUN_TYPE_URI]["exitcode"] != 0 => {
                vec![format!(
                    "build {} failed",
                    steps["build"][COMMAND_RUN_TYPE_URI]["source"]
                )]
            }
            Some(_) => Vec::new(),
            None => exit_zero(attestation, None).into_iter().take(0).collect(),
        };
        let items = [
            // Given first: a naive "first accepted build" would pick it.
            evidence(
                "old-build.json",
                "build",
                &[],
                &[],
                files(&[("main.c", "v1")]),
                files(&[("app", "old binary")]),
                0,
            ),
            evidence(
                "new-build.json",
                "build",
                &[],
                &[],
                files(&[("main.c", "v2")]),
                files(&[("app", "new binary")]),
                2,
            ),
            evidence(
                "save.json",
                "save",
                &[],
                &[],
                files(&[("app", "new binary")]),
                files(&[("image.tar", "image")]),
                0,
            ),
        ];
        let mut rego = fake(build_ok);
        let report = verify(&policy, &items, &[digest("image")], &mut rego).unwrap();
        assert!(!report.holds, "{report:?}");
        assert!(
            reasons(&report, 1, 0)
                .iter()
                .any(|reason| reason.contains("build \"new-build.json\" failed")),
            "{report:?}"
        );
        // Only the tied build was ever shown to the save step's Rego.
        assert!(rego
            .inputs
            .iter()
            .all(
                |(_, steps)| steps.as_ref().is_none_or(|steps| steps["build"]
                    [COMMAND_RUN_TYPE_URI]["source"]
                    == "new-build.json")
            ));
    }

    /// A collection accepted in a first round can lose its tie when the only collection that
    /// tied it fails its Rego; the steps reading it must then not see it either.
    #[test]
    fn a_collection_tied_only_through_a_rejected_one_is_not_accepted() {
        let policy = policy(vec![step("build", &[], &[]), step("save", &["build"], &[])]);
        let items = [
            evidence(
                "build.json",
                "build",
                &[],
                &[],
                files(&[("main.c", "v1")]),
                files(&[("app", "binary")]),
                0,
            ),
            evidence(
                "save.json",
                "save",
                &[],
                &[],
                files(&[("app", "binary")]),
                files(&[("image.tar", "image")]),
                1,
            ),
        ];
        let report = verify(&policy, &items, &[digest("image")], &mut fake(exit_zero)).unwrap();
        assert!(!report.holds);
        assert!(!report.steps[0].passed, "{report:?}");
        assert!(
            reasons(&report, 0, 0)[0].contains("only through attestations that failed"),
            "{report:?}"
        );
        assert!(reasons(&report, 1, 0)[0].contains("exit 1"), "{report:?}");
    }

    #[test]
    fn artifacts_from_compares_every_path_and_needs_some_overlap() {
        let policy = policy(vec![step("build", &[], &[]), step("save", &["build"], &[])]);
        let build = || {
            evidence(
                "build.json",
                "build",
                &[],
                &[],
                files(&[("src.c", "source")]),
                files(&[("app", "binary"), ("copy", "binary")]),
                0,
            )
        };
        let check = |materials: Option<Files>| {
            let save = evidence("save.json", "save", &["image"], &[], materials, None, 0);
            let items = [build(), save];
            verify(&policy, &items, &[digest("image")], &mut fake(allow)).unwrap()
        };
        assert!(check(files(&[("app", "binary"), ("other", "x")])).holds);
        // Materials overlaid on products: an upstream material counts too.
        assert!(check(files(&[("src.c", "source")])).holds);

        let report = check(files(&[("app", "evil")]));
        assert!(!report.holds);
        assert!(
            reasons(&report, 1, 0)[0].contains("material \"app\" has sha256:"),
            "{report:?}"
        );
        // A swapped file hidden behind another with the upstream content: both compared.
        let report = check(files(&[("app", "binary"), ("copy", "evil")]));
        assert!(
            reasons(&report, 1, 0)[0].contains("material \"copy\""),
            "{report:?}"
        );
        let report = check(files(&[("unrelated", "x")]));
        assert!(reasons(&report, 1, 0)[0].contains("none of the step's materials"));
        let report = check(files(&[]));
        assert!(reasons(&report, 1, 0)[0].contains("material set is empty"));
        let report = check(Some(Files::Unknown("no full path list".to_owned())));
        assert!(reasons(&report, 1, 0)[0].contains("no full path list"));
        let report = check(None);
        assert!(reasons(&report, 1, 0)[0].contains("carries no material attestation"));
        // The build step is then reached by nothing.
        assert!(!report.steps[0].passed);
    }

    #[test]
    fn empty_trees_and_empty_files_tie_nothing() {
        let policy = policy(vec![step("save", &[], &[]), step("build", &[], &[])]);
        let empty = hex::encode(empty_digest());
        let mut save = evidence("save.json", "save", &["image"], &[], None, None, 0);
        save.backrefs = vec![empty_digest()];
        let mut build = evidence(
            "build.json",
            "build",
            &[],
            &[],
            None,
            files(&[("lock", "")]),
            0,
        );
        build.subjects = vec![("tree:products".to_owned(), empty_digest())];
        let items = [save, build];
        let report = verify(&policy, &items, &[digest("image")], &mut fake(allow)).unwrap();
        assert!(!report.steps[0].passed, "{report:?}");
        assert!(report.steps[1].passed);
        let report = verify(&policy, &items, &[empty_digest()], &mut fake(allow)).unwrap();
        assert!(!report.holds, "{empty}: {report:?}");
    }

    #[test]
    fn every_attestation_of_a_required_type_is_evaluated() {
        let policy = policy(vec![step("build", &[], &[])]);
        let mut build = evidence("build.json", "build", &["image"], &[], None, None, 0);
        build.attestations.push(Predicate {
            type_uri: "https://witness.dev/attestations/command-run/v0.1".to_owned(),
            json: Some(json!({"exitcode": 3}).to_string().into()),
        });
        let report = verify(&policy, &[build], &[digest("image")], &mut fake(exit_zero)).unwrap();
        assert!(!report.holds);
        assert!(reasons(&report, 0, 0)[0].contains("exit 3"), "{report:?}");
    }

    #[test]
    fn names_match_exactly_duplicates_count_once_and_no_steps_prove_nothing() {
        let policy_with_build = policy(vec![step("build", &[], &[])]);
        let items: Vec<Evidence> = ["", "Build", "build "]
            .iter()
            .map(|name| {
                evidence(
                    &format!("{name}.json"),
                    name,
                    &["image"],
                    &[],
                    None,
                    None,
                    0,
                )
            })
            .collect();
        let report = verify(
            &policy_with_build,
            &items,
            &[digest("image")],
            &mut fake(allow),
        )
        .unwrap();
        assert!(!report.holds);
        assert_eq!(report.unused.len(), 3, "{report:?}");

        let one = evidence("a.json", "build", &["image"], &[], None, None, 0);
        let mut again = evidence("a.json", "build", &["image"], &[], None, None, 0);
        again.source = "copy-of-a.json".to_owned();
        let report = verify(
            &policy_with_build,
            &[one, again],
            &[digest("image")],
            &mut fake(allow),
        )
        .unwrap();
        assert!(report.holds);
        assert_eq!(report.steps[0].collections.len(), 1);
        assert_eq!(report.duplicates[0].same_as, "a.json");

        let empty = policy(Vec::new());
        let report = verify(&empty, &[], &[digest("image")], &mut fake(allow)).unwrap();
        assert!(!report.holds);
    }
}
