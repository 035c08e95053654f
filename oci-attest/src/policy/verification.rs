//! Checks a policy against attestations: per step, which collections are signed by one of its
//! functionaries, hold every required attestation and pass its Rego; then which of those are
//! tied to the artifact (a subject or product digest), following `artifactsFrom` back through
//! the chain (every material also produced upstream must carry the same digest). Semantics:
//! `docs/policy.md`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::policy::evidence::{Evidence, FileSet};
use crate::policy::model::{Policy, Step};
use crate::policy::rego::RegoError;

/// How the Rego modules of a required attestation are evaluated: `(modules, input JSON)` →
/// denials, or an error that makes the whole policy unusable.
pub type Evaluator<'a> =
    dyn Fn(&[crate::policy::model::RegoModule], &str) -> Result<Vec<String>, RegoError> + 'a;

#[derive(Debug, Serialize)]
pub struct Report {
    pub holds: bool,
    /// The artifact digests (sha256 hex) the policy was checked for.
    pub artifacts: Vec<String>,
    pub steps: Vec<StepReport>,
    /// Attestations for steps the policy does not name (not used).
    pub unused: Vec<String>,
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

/// A collection's state while the steps are checked.
struct Candidate<'a> {
    evidence: &'a Evidence,
    /// Signed by a functionary, every attestation present, every module allowed it.
    gate_passed: bool,
    /// Reachable from the artifact (directly or through the chain).
    linked: bool,
    /// Its `artifactsFrom` links hold.
    chain_ok: bool,
    reasons: Vec<String>,
}

/// Evaluates `policy` for `artifacts` (sha256 hex). A Rego error (module broken or over its
/// limits) aborts with that error: the policy, not the evidence, is at fault.
pub fn verify(
    policy: &Policy,
    evidence: &[Evidence],
    artifacts: &[String],
    evaluate: &Evaluator,
) -> Result<Report, RegoError> {
    let order = policy
        .dependency_order()
        .map_err(|error| RegoError(format!("{error:#}")))?;
    let mut candidates: BTreeMap<&str, Vec<Candidate>> = BTreeMap::new();
    for name in &order {
        let step = &policy.steps[*name];
        let mut checked = Vec::new();
        for item in evidence.iter().filter(|item| item.step == step.name) {
            let context = step_context(step, &candidates);
            checked.push(gate(step, item, context.as_ref(), evaluate)?);
        }
        candidates.insert(name, checked);
    }
    link(policy, &mut candidates, artifacts);

    let steps: Vec<StepReport> = order
        .iter()
        .map(|name| {
            let checked = &candidates[name];
            let collections: Vec<CollectionReport> = checked
                .iter()
                .map(|candidate| CollectionReport {
                    source: candidate.evidence.source.clone(),
                    passed: candidate.gate_passed && candidate.linked && candidate.chain_ok,
                    reasons: candidate.reasons.clone(),
                })
                .collect();
            let reasons = if checked.is_empty() {
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
    let unused = evidence
        .iter()
        .filter(|item| !policy.steps.contains_key(&item.step))
        .map(|item| format!("{} (step {:?})", item.source, item.step))
        .collect();
    Ok(Report {
        holds: steps.iter().all(|step| step.passed),
        artifacts: artifacts.to_vec(),
        steps,
        unused,
        rejected: Vec::new(),
    })
}

/// `input.steps` for a step with `attestationsFrom`: per dependency, its gate-passed
/// collections' predicates by type (the first of each type, as cilock does).
fn step_context(step: &Step, candidates: &BTreeMap<&str, Vec<Candidate>>) -> Option<Value> {
    if step.attestations_from.is_empty() {
        return None;
    }
    let mut steps = Map::new();
    for dependency in &step.attestations_from {
        let mut by_type = Map::new();
        let passed = candidates
            .get(dependency.as_str())
            .into_iter()
            .flatten()
            .filter(|candidate| candidate.gate_passed);
        for candidate in passed {
            for (type_uri, predicate) in &candidate.evidence.attestations {
                by_type
                    .entry(type_uri.clone())
                    .or_insert_with(|| predicate.clone());
            }
        }
        if !by_type.is_empty() {
            steps.insert(dependency.clone(), Value::Object(by_type));
        }
    }
    Some(Value::Object(steps))
}

fn gate<'a>(
    step: &Step,
    evidence: &'a Evidence,
    context: Option<&Value>,
    evaluate: &Evaluator,
) -> Result<Candidate<'a>, RegoError> {
    let mut reasons = Vec::new();
    if !evidence
        .signers
        .iter()
        .any(|signer| step.functionaries.contains(signer))
    {
        reasons.push(format!(
            "not signed by a functionary of step {:?} (signed by {:?}, functionaries {:?})",
            step.name, evidence.signers, step.functionaries
        ));
    }
    for required in &step.attestations {
        let predicates: Vec<&Value> = evidence.predicates(&required.type_uri).collect();
        if predicates.is_empty() {
            reasons.push(format!("missing attestation {}", required.type_uri));
            continue;
        }
        if required.modules.is_empty() {
            continue;
        }
        // Every attestation of the type is evaluated: a passing duplicate must not hide a
        // failing one.
        for predicate in predicates {
            let input = match context {
                Some(steps) => serde_json::json!({"attestation": predicate, "steps": steps}),
                None => predicate.clone(),
            };
            let denials = evaluate(&required.modules, &input.to_string()).map_err(|error| {
                RegoError(format!(
                    "step {:?}, {}: {}",
                    step.name, required.type_uri, error.0
                ))
            })?;
            reasons.extend(
                denials
                    .into_iter()
                    .map(|denial| format!("denied by {}: {denial}", required.type_uri)),
            );
        }
    }
    Ok(Candidate {
        evidence,
        gate_passed: reasons.is_empty(),
        linked: false,
        chain_ok: true,
        reasons,
    })
}

/// Marks the collections tied to the artifact: those naming an artifact digest, those whose
/// subjects carry a back-reference of a tied collection, and the upstream collections whose
/// files match a tied collection's materials through `artifactsFrom`.
fn link(policy: &Policy, candidates: &mut BTreeMap<&str, Vec<Candidate>>, artifacts: &[String]) {
    let mut queue: Vec<(String, usize)> = Vec::new();
    for (name, checked) in candidates.iter_mut() {
        for (index, candidate) in checked.iter_mut().enumerate() {
            if !candidate.gate_passed {
                continue;
            }
            match names_any(candidate.evidence, artifacts) {
                Ok(true) => {
                    candidate.linked = true;
                    queue.push(((*name).to_owned(), index));
                }
                Ok(false) => {}
                Err(error) => candidate.reasons.push(format!("{error:#}")),
            }
        }
    }
    while let Some((name, index)) = queue.pop() {
        let step = &policy.steps[&name];
        let downstream = candidates[name.as_str()][index].evidence;
        let mut chain_reasons = Vec::new();
        for upstream in &step.artifacts_from {
            let mut matched = Vec::new();
            for (up_index, candidate) in candidates[upstream.as_str()].iter().enumerate() {
                if !candidate.gate_passed {
                    continue;
                }
                match chained(downstream, candidate.evidence) {
                    Ok(()) => matched.push(up_index),
                    Err(reason) => chain_reasons.push(format!(
                        "artifactsFrom {upstream:?} ({}): {reason}",
                        candidate.evidence.source
                    )),
                }
            }
            if matched.is_empty() {
                let accepted = candidates[upstream.as_str()]
                    .iter()
                    .any(|candidate| candidate.gate_passed);
                if !accepted {
                    chain_reasons.push(format!(
                        "artifactsFrom {upstream:?}: no accepted attestation for that step"
                    ));
                }
                let candidate = &mut candidates.get_mut(name.as_str()).unwrap()[index];
                candidate.chain_ok = false;
            }
            for up_index in matched {
                let candidate = &mut candidates.get_mut(upstream.as_str()).unwrap()[up_index];
                if !candidate.linked {
                    candidate.linked = true;
                    queue.push((upstream.clone(), up_index));
                }
            }
        }
        let candidate = &mut candidates.get_mut(name.as_str()).unwrap()[index];
        if !candidate.chain_ok {
            candidate.reasons.extend(chain_reasons);
        }
        // Back-references widen the search as witness does: a collection whose subjects include
        // one of them belongs to the same artifact.
        let backrefs: BTreeSet<&String> = candidate.evidence.backrefs.iter().collect();
        for (other_name, checked) in candidates.iter_mut() {
            for (other_index, other) in checked.iter_mut().enumerate() {
                if other.gate_passed
                    && !other.linked
                    && other
                        .evidence
                        .subjects
                        .values()
                        .any(|s| backrefs.contains(s))
                {
                    other.linked = true;
                    queue.push(((*other_name).to_owned(), other_index));
                }
            }
        }
    }
    for checked in candidates.values_mut() {
        for candidate in checked.iter_mut() {
            if candidate.gate_passed && !candidate.linked {
                candidate.reasons.push(format!(
                    "not tied to the artifact: no subject or product has digest {}, and no \
                     artifactsFrom or back-reference leads to it",
                    artifacts
                        .iter()
                        .map(|digest| format!("sha256:{digest}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
        }
    }
}

fn names_any(evidence: &Evidence, artifacts: &[String]) -> anyhow::Result<bool> {
    for digest in artifacts {
        if evidence.names_digest(digest)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `artifactsFrom` link between a downstream collection and an upstream one: every
/// downstream material that the upstream step also recorded carries the same digest, and at
/// least one does (a chain through which nothing flowed proves nothing).
fn chained(downstream: &Evidence, upstream: &Evidence) -> Result<(), String> {
    let materials = match downstream.materials() {
        Ok(Some(materials)) => materials,
        Ok(None) => {
            return Err(format!(
                "{} carries no material leaves, so its materials cannot be checked",
                downstream.source
            ))
        }
        Err(error) => return Err(format!("{error:#}")),
    };
    let upstream_files: FileSet = upstream.artifacts().map_err(|error| format!("{error:#}"))?;
    let mut overlap = 0;
    for (path, digest) in &materials {
        if let Some(produced) = upstream_files.get(path) {
            if produced != digest {
                return Err(format!(
                    "material {path:?} has sha256:{digest} but the upstream step left \
                     sha256:{produced}"
                ));
            }
            overlap += 1;
        }
    }
    if !materials.is_empty() && overlap == 0 {
        return Err("none of the step's materials comes from the upstream step".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::json;

    use super::*;
    use crate::attestors::file_tree::{predicate, EmptyLeaves};
    use crate::attestors::{COMMAND_RUN_TYPE_URI, MATERIAL_TYPE_URI, PRODUCT_TYPE_URI};
    use crate::keys::{Algorithm, PrivateKey};
    use crate::policy::model::{RegoModule, RequiredAttestation};
    use crate::products::FileDigest;

    fn tree(files: &[(&str, &str)]) -> Value {
        let files: Vec<FileDigest> = files
            .iter()
            .map(|(path, digest)| FileDigest {
                path: (*path).to_owned(),
                sha256: (*digest).to_owned(),
            })
            .collect();
        serde_json::to_value(predicate(&files, EmptyLeaves::Write)).unwrap()
    }

    fn evidence(step: &str, subjects: &[&str], backrefs: &[&str], trees: [Value; 2]) -> Evidence {
        let [materials, products] = trees;
        Evidence {
            source: format!("{step}.json"),
            signers: vec!["k".to_owned()],
            step: step.to_owned(),
            subjects: subjects
                .iter()
                .map(|digest| (format!("s:{digest}"), (*digest).to_owned()))
                .collect(),
            attestations: vec![
                (MATERIAL_TYPE_URI.to_owned(), materials),
                (
                    COMMAND_RUN_TYPE_URI.to_owned(),
                    json!({"exitcode": 0, "step": step}),
                ),
                (PRODUCT_TYPE_URI.to_owned(), products),
            ],
            backrefs: backrefs.iter().map(|digest| (*digest).to_owned()).collect(),
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

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn back_references_tie_a_collection_to_the_artifact_and_attestations_from_feeds_rego() {
        // scan names the artifact only through save's back-reference to it.
        let policy = policy(vec![step("save", &[], &[]), step("scan", &[], &["save"])]);
        let items = [
            evidence("save", &[A], &[B], [tree(&[]), tree(&[("app.tar", A)])]),
            evidence("scan", &[B], &[], [tree(&[]), tree(&[])]),
            evidence("other", &[A], &[], [tree(&[]), tree(&[])]),
        ];
        let inputs = RefCell::new(Vec::new());
        let evaluate = |_: &[RegoModule], input: &str| {
            inputs
                .borrow_mut()
                .push(serde_json::from_str::<Value>(input).unwrap());
            Ok(Vec::new())
        };
        let report = verify(&policy, &items, &[A.to_owned()], &evaluate).unwrap();
        assert!(report.holds, "{report:?}");
        assert_eq!(report.unused, ["other.json (step \"other\")"]);
        let inputs = inputs.borrow().clone();
        assert_eq!(inputs[0]["step"], "save");
        assert_eq!(inputs[1]["attestation"]["step"], "scan");
        assert_eq!(
            inputs[1]["steps"]["save"][COMMAND_RUN_TYPE_URI]["step"],
            "save"
        );

        let report = verify(&policy, &items, &[C.to_owned()], &evaluate).unwrap();
        assert!(!report.holds);
        assert!(report.steps[1].collections[0].reasons[0].contains("not tied to the artifact"));
    }

    #[test]
    fn artifacts_from_needs_matching_files_and_some_overlap() {
        let policy = policy(vec![step("build", &[], &[]), step("save", &["build"], &[])]);
        let allow = |_: &[RegoModule], _: &str| Ok(Vec::new());
        let build = evidence(
            "build",
            &[],
            &[],
            [tree(&[("src.c", C)]), tree(&[("app", B)])],
        );
        let check = |materials: Value| {
            let save = evidence("save", &[A], &[], [materials, tree(&[("app.tar", A)])]);
            let items = [build.clone(), save];
            verify(&policy, &items, &[A.to_owned()], &allow).unwrap()
        };
        let report = check(tree(&[("app", B), ("other", A)]));
        assert!(report.holds, "{report:?}");
        // Materials overlaid on products: an upstream material counts too.
        assert!(check(tree(&[("src.c", C)])).holds);

        let report = check(tree(&[("app", C)]));
        assert!(!report.holds);
        let reasons = &report.steps[1].collections[0].reasons;
        assert!(
            reasons[0].contains("material \"app\" has sha256:"),
            "{reasons:?}"
        );

        let report = check(tree(&[("unrelated", C)]));
        assert!(report.steps[1].collections[0].reasons[0].contains("none of the step's materials"));

        let mut leafless = tree(&[("app", B)]);
        leafless.as_object_mut().unwrap().remove("leaves");
        let report = check(leafless);
        assert!(report.steps[1].collections[0].reasons[0].contains("no material leaves"));
        // The build step is then reached by nothing.
        assert!(!report.steps[0].passed);
    }
}
