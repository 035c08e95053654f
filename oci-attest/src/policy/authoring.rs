//! Writing policies (`oci-attest policy new`, `policy from-attestations`): the witness / cilock
//! document built from keys, Rego files and steps, with keyids computed and Rego embedded, so no
//! one base64-encodes anything by hand. Every document written is read back by
//! [`crate::policy::model::parse`] first: what `policy` writes, `verify -p` accepts.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::keys::PublicKey;
use crate::policy::evidence::{Evidence, Files};
use crate::policy::model::{self, RegoModule};

/// One step to write.
#[derive(Clone, Debug)]
pub struct StepDraft {
    pub name: String,
    pub functionaries: Vec<PublicKey>,
    /// Required attestation types, each with its Rego modules.
    pub attestations: Vec<(String, Vec<RegoModule>)>,
    pub artifacts_from: Vec<String>,
}

/// A new policy document holding `steps`.
pub fn document(expires: DateTime<Utc>, steps: &[StepDraft]) -> anyhow::Result<Value> {
    let mut policy = json!({
        "expires": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "publickeys": {},
        "steps": {},
    });
    for step in steps {
        add_step(&mut policy, step)?;
    }
    Ok(policy)
}

/// Adds `step` (and its keys) to a policy document; a step of that name must not exist yet.
pub fn add_step(policy: &mut Value, step: &StepDraft) -> anyhow::Result<()> {
    ensure!(!step.name.is_empty(), "a step needs a name");
    ensure!(
        !step.functionaries.is_empty(),
        "step {:?} needs at least one key (--key)",
        step.name
    );
    let keys = object(policy, "publickeys")?;
    for key in &step.functionaries {
        let keyid = key.keyid();
        keys.insert(
            keyid.clone(),
            json!({"keyid": keyid, "key": BASE64.encode(key.to_pem())}),
        );
    }
    let attestations: Vec<Value> = step
        .attestations
        .iter()
        .map(|(type_uri, modules)| {
            json!({
                "type": type_uri,
                "regopolicies": modules.iter().map(|module| json!({
                    "name": module.name,
                    "module": BASE64.encode(&module.source),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut written = json!({
        "name": step.name,
        "functionaries": step.functionaries.iter().map(|key| json!({
            "type": "publickey",
            "publickeyid": key.keyid(),
        })).collect::<Vec<_>>(),
        "attestations": attestations,
    });
    if !step.artifacts_from.is_empty() {
        written["artifactsFrom"] = json!(step.artifacts_from);
    }
    let steps = object(policy, "steps")?;
    if steps.contains_key(&step.name) {
        bail!("the policy already has a step {:?}", step.name);
    }
    steps.insert(step.name.clone(), written);
    Ok(())
}

fn object<'a>(policy: &'a mut Value, key: &str) -> anyhow::Result<&'a mut Map<String, Value>> {
    if policy[key].is_null() {
        policy[key] = json!({});
    }
    policy[key]
        .as_object_mut()
        .with_context(|| format!("the policy's `{key}` is not an object"))
}

/// The document as written: pretty JSON with a final newline, after checking `verify -p` would
/// accept it.
pub fn finish(policy: &Value) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(policy)?;
    model::parse(&bytes).context("the policy would not be usable")?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Drafts one step per step name found in `evidence` (verified attestations): the keys that
/// signed them as functionaries, the attestation types every run of the step carries as
/// required attestations, and `artifactsFrom` where a step read a file another step produced.
pub fn steps_from_evidence(
    evidence: &[Evidence],
    keys: &BTreeMap<String, PublicKey>,
) -> anyhow::Result<Vec<StepDraft>> {
    let mut names: Vec<&str> = evidence.iter().map(|item| item.step.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut steps = Vec::with_capacity(names.len());
    for name in &names {
        let runs: Vec<&Evidence> = evidence.iter().filter(|item| item.step == *name).collect();
        let mut functionaries: Vec<PublicKey> = Vec::new();
        for keyid in runs.iter().flat_map(|item| &item.signers) {
            if let Some(key) = keys.get(keyid) {
                if !functionaries.iter().any(|known| known.keyid() == *keyid) {
                    functionaries.push(key.clone());
                }
            }
        }
        // Types every run carries, in the order of the first run.
        let mut types: Vec<String> = Vec::new();
        for predicate in &runs[0].attestations {
            let type_uri = &predicate.type_uri;
            let in_every_run = runs.iter().all(|item| {
                item.attestations
                    .iter()
                    .any(|found| found.type_uri == *type_uri)
            });
            if in_every_run && !types.contains(type_uri) {
                types.push(type_uri.clone());
            }
        }
        let mut artifacts_from = Vec::new();
        for other in &names {
            if other == name || consumes(evidence, other, name) {
                // A step never depends on itself; of two steps that read each other's files
                // only the first in name order is linked, so the draft has no cycle.
                continue;
            }
            if consumes(evidence, name, other) {
                artifacts_from.push((*other).to_owned());
            }
        }
        steps.push(StepDraft {
            name: (*name).to_owned(),
            functionaries,
            attestations: types
                .into_iter()
                .map(|type_uri| (type_uri, Vec::new()))
                .collect(),
            artifacts_from,
        });
    }
    Ok(steps)
}

/// Whether a run of `reader` has a material with the path and digest of a product of a run of
/// `producer` (trees whose paths cannot be compared link nothing).
fn consumes(evidence: &[Evidence], reader: &str, producer: &str) -> bool {
    let known = |files: &Option<Files>| match files {
        Some(Files::Known(set)) => Some(set.clone()),
        _ => None,
    };
    evidence
        .iter()
        .filter(|item| item.step == reader)
        .filter_map(|item| known(&item.materials))
        .any(|materials| {
            evidence
                .iter()
                .filter(|item| item.step == producer)
                .filter_map(|item| known(&item.products))
                .any(|products| {
                    materials
                        .iter()
                        .any(|(path, digest)| products.get(path) == Some(digest))
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, PrivateKey};

    fn step(name: &str, key: &PublicKey, artifacts_from: &[&str]) -> StepDraft {
        StepDraft {
            name: name.to_owned(),
            functionaries: vec![key.clone()],
            attestations: vec![(
                "https://aflock.ai/attestations/command-run/v0.1".to_owned(),
                vec![RegoModule {
                    name: "exit".to_owned(),
                    source: "package x\ndeny[m] { input.exitcode != 0; m := \"failed\" }\n"
                        .to_owned(),
                }],
            )],
            artifacts_from: artifacts_from.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn written_policies_parse_with_keyids_and_rego_embedded() {
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        let expires = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut policy = document(expires, &[step("build", key.public(), &[])]).unwrap();
        add_step(&mut policy, &step("save", key.public(), &["build"])).unwrap();
        assert!(add_step(&mut policy, &step("save", key.public(), &[])).is_err());
        let bytes = finish(&policy).unwrap();
        let parsed = model::parse(&bytes).unwrap();
        assert_eq!(parsed.dependency_order().unwrap(), ["build", "save"]);
        assert_eq!(parsed.steps["save"].functionaries, [key.keyid()]);
        assert!(parsed.steps["build"].attestations[0].modules[0]
            .source
            .starts_with("package x"));
        assert_eq!(policy["expires"], "2030-01-01T00:00:00Z");

        let mut dangling = document(expires, &[]).unwrap();
        add_step(&mut dangling, &step("save", key.public(), &["build"])).unwrap();
        assert!(format!("{:#}", finish(&dangling).unwrap_err()).contains("unknown step"));
    }
}
