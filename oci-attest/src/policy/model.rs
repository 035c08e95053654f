//! The policy document (witness / cilock format): parsing under size and nesting limits,
//! structural validation, and refusal of the features oci-attest does not implement (a policy
//! that relies on one fails instead of being half-enforced). Semantics: `docs/policy.md`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, ensure, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::keys::PublicKey;

/// `payloadType` of a signed policy; the second is the name older witness releases sign with.
pub const POLICY_PAYLOAD_TYPE: &str = "https://aflock.ai/policy/v0.1";
pub const LEGACY_POLICY_PAYLOAD_TYPE: &str = "https://witness.testifysec.com/policy/v0.1";

/// A validated policy, ready to be checked against attestations.
#[derive(Debug)]
pub struct Policy {
    pub expires: DateTime<Utc>,
    /// keyid → key; every keyid is the SHA-256 of the key's PEM.
    pub keys: BTreeMap<String, PublicKey>,
    pub steps: BTreeMap<String, Step>,
}

#[derive(Debug)]
pub struct Step {
    pub name: String,
    /// Key ids (into [`Policy::keys`]) of the signers accepted for this step.
    pub functionaries: Vec<String>,
    pub attestations: Vec<RequiredAttestation>,
    pub artifacts_from: Vec<String>,
    pub attestations_from: Vec<String>,
}

#[derive(Debug)]
pub struct RequiredAttestation {
    pub type_uri: String,
    pub modules: Vec<RegoModule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub struct RegoModule {
    pub name: String,
    pub source: String,
}

/// Go writes a nil slice or map as `null`: read it as empty.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct RawPolicy {
    expires: String,
    #[serde(default, deserialize_with = "null_as_default")]
    roots: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    timestampauthorities: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    publickeys: BTreeMap<String, RawPublicKey>,
    #[serde(default, deserialize_with = "null_as_default")]
    steps: BTreeMap<String, RawStep>,
    #[serde(
        default,
        rename = "externalAttestations",
        deserialize_with = "null_as_default"
    )]
    external_attestations: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct RawPublicKey {
    keyid: String,
    /// Base64 of the PEM (Go `[]byte`).
    key: String,
}

#[derive(Deserialize)]
struct RawStep {
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    functionaries: Vec<RawFunctionary>,
    #[serde(default, deserialize_with = "null_as_default")]
    attestations: Vec<RawAttestation>,
    #[serde(
        default,
        rename = "artifactsFrom",
        deserialize_with = "null_as_default"
    )]
    artifacts_from: Vec<String>,
    #[serde(
        default,
        rename = "attestationsFrom",
        deserialize_with = "null_as_default"
    )]
    attestations_from: Vec<String>,
    #[serde(default, rename = "externalFrom", deserialize_with = "null_as_default")]
    external_from: Vec<String>,
    #[serde(
        default,
        rename = "allowedUntracked",
        deserialize_with = "null_as_default"
    )]
    allowed_untracked: Vec<String>,
    #[serde(default, rename = "timestampConstraint")]
    timestamp_constraint: Value,
}

#[derive(Deserialize)]
struct RawFunctionary {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, rename = "publickeyid")]
    public_key_id: String,
    #[serde(default, rename = "certConstraint")]
    cert_constraint: Value,
}

#[derive(Deserialize)]
struct RawAttestation {
    #[serde(rename = "type")]
    type_uri: String,
    #[serde(default, deserialize_with = "null_as_default")]
    regopolicies: Vec<RawRegoPolicy>,
    #[serde(default, deserialize_with = "null_as_default")]
    aipolicies: Vec<Value>,
}

#[derive(Deserialize)]
struct RawRegoPolicy {
    #[serde(default)]
    name: String,
    /// Base64 of the Rego source (Go `[]byte`).
    module: String,
}

/// Whether a JSON value says anything: witness writes unset constraints as objects of empty
/// strings and lists, which must not count as "set".
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(set) => *set,
        Value::Number(_) => true,
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => items.iter().any(is_set),
        Value::Object(fields) => fields.values().any(is_set),
    }
}

/// Parses and validates a policy document (the DSSE payload). serde_json refuses nesting deeper
/// than 128 levels, so a deeply nested document fails here with that message; an object that
/// repeats a key fails too (`crate::strict_json`).
pub fn parse(bytes: &[u8]) -> anyhow::Result<Policy> {
    let raw: RawPolicy =
        crate::strict_json::from_slice(bytes).context("not a valid policy document")?;
    let expires = DateTime::parse_from_rfc3339(&raw.expires)
        .with_context(|| format!("`expires` {:?} is not an RFC 3339 time", raw.expires))?
        .with_timezone(&Utc);
    refuse_unsupported(&raw)?;
    let keys = raw
        .publickeys
        .iter()
        .map(|(id, key)| Ok((id.clone(), policy_key(id, key)?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    ensure!(!raw.steps.is_empty(), "the policy has no steps");
    let steps = raw
        .steps
        .into_iter()
        .map(|(name, step)| Ok((name.clone(), policy_step(&name, step, &keys)?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let policy = Policy {
        expires,
        keys,
        steps,
    };
    policy.dependency_order()?;
    Ok(policy)
}

fn refuse_unsupported(raw: &RawPolicy) -> anyhow::Result<()> {
    let refused = |what: &str| {
        anyhow::anyhow!("uses {what}, which oci-attest does not support (see docs/policy.md)")
    };
    if raw.roots.values().any(is_set) {
        return Err(refused("`roots` (x509 trust roots)"));
    }
    if raw.timestampauthorities.values().any(is_set) {
        return Err(refused("`timestampauthorities`"));
    }
    if !raw.external_attestations.is_empty() {
        return Err(refused("`externalAttestations`"));
    }
    for (name, step) in &raw.steps {
        if step
            .functionaries
            .iter()
            .any(|functionary| is_set(&functionary.cert_constraint))
        {
            return Err(refused(&format!(
                "a `certConstraint` (x509) functionary in step {name:?}"
            )));
        }
        if is_set(&step.timestamp_constraint) {
            return Err(refused(&format!(
                "a `timestampConstraint` in step {name:?}"
            )));
        }
        if !step.external_from.is_empty() {
            return Err(refused(&format!("`externalFrom` in step {name:?}")));
        }
        if !step.allowed_untracked.is_empty() {
            return Err(refused(&format!("`allowedUntracked` in step {name:?}")));
        }
        if step.attestations.iter().any(|a| !a.aipolicies.is_empty()) {
            return Err(refused(&format!("`aipolicies` in step {name:?}")));
        }
    }
    Ok(())
}

fn policy_key(id: &str, raw: &RawPublicKey) -> anyhow::Result<PublicKey> {
    ensure!(
        raw.keyid == id,
        "publickeys entry {id:?} has keyid {:?}",
        raw.keyid
    );
    let pem = BASE64
        .decode(raw.key.trim())
        .with_context(|| format!("publickeys {id:?}: `key` is not base64"))?;
    let key = PublicKey::from_pem(&pem)
        .map_err(|problem| anyhow::anyhow!("publickeys {id:?}: {problem}"))?;
    let actual = key.keyid();
    ensure!(
        actual == id,
        "publickeys {id:?}: the key's id (SHA-256 of its PEM) is {actual}"
    );
    Ok(key)
}

fn policy_step(
    name: &str,
    raw: RawStep,
    keys: &BTreeMap<String, PublicKey>,
) -> anyhow::Result<Step> {
    ensure!(
        raw.name == name,
        "step keyed {name:?} is named {:?}; the two must agree",
        raw.name
    );
    ensure!(
        !raw.functionaries.is_empty(),
        "step {name:?} has no functionaries"
    );
    let functionaries = raw
        .functionaries
        .into_iter()
        .map(|functionary| {
            ensure!(
                functionary.kind == "publickey",
                "step {name:?}: functionary type {:?} is not supported (only \"publickey\"; \
                 see docs/policy.md)",
                functionary.kind
            );
            ensure!(
                keys.contains_key(&functionary.public_key_id),
                "step {name:?}: functionary key {:?} is not in `publickeys`",
                functionary.public_key_id
            );
            Ok(functionary.public_key_id)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A gate that requires nothing would accept any collection signed by the functionary.
    ensure!(
        !raw.attestations.is_empty(),
        "step {name:?} requires no attestations"
    );
    let attestations = raw
        .attestations
        .into_iter()
        .map(|attestation| {
            let modules = attestation
                .regopolicies
                .into_iter()
                .enumerate()
                .map(|(index, policy)| {
                    let label = if policy.name.is_empty() {
                        format!("#{}", index + 1)
                    } else {
                        policy.name.clone()
                    };
                    let bytes = BASE64.decode(policy.module.trim()).with_context(|| {
                        format!("step {name:?}: Rego module {label} is not base64")
                    })?;
                    let source = String::from_utf8(bytes).with_context(|| {
                        format!("step {name:?}: Rego module {label} is not UTF-8")
                    })?;
                    Ok(RegoModule {
                        name: label,
                        source,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(RequiredAttestation {
                type_uri: attestation.type_uri,
                modules,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Step {
        name: raw.name,
        functionaries,
        attestations,
        artifacts_from: raw.artifacts_from,
        attestations_from: raw.attestations_from,
    })
}

impl Step {
    /// The steps this one depends on: `artifactsFrom` and `attestationsFrom`.
    pub fn dependencies(&self) -> impl Iterator<Item = &String> {
        self.artifacts_from.iter().chain(&self.attestations_from)
    }
}

impl Policy {
    /// Whether the policy can hand a `type_uri` attestation of a `step` collection to Rego: a
    /// required attestation of that type with modules, or any attestation of a step another
    /// step reads through `attestationsFrom`.
    pub fn feeds_rego(&self, step: &str, type_uri: &str) -> bool {
        let read_by_another = self
            .steps
            .values()
            .any(|other| other.attestations_from.iter().any(|name| name == step));
        let evaluated = self.steps.get(step).is_some_and(|step| {
            step.attestations.iter().any(|required| {
                !required.modules.is_empty()
                    && crate::policy::predicate_types::same(&required.type_uri, type_uri)
            })
        });
        read_by_another || evaluated
    }

    /// Step names, each after the steps it depends on; an unknown step, a self-reference or a
    /// cycle is an error.
    pub fn dependency_order(&self) -> anyhow::Result<Vec<&str>> {
        for step in self.steps.values() {
            for dependency in step.dependencies() {
                ensure!(
                    dependency != &step.name,
                    "step {:?} depends on itself",
                    step.name
                );
                ensure!(
                    self.steps.contains_key(dependency),
                    "step {:?} depends on unknown step {dependency:?}",
                    step.name
                );
            }
        }
        let mut ordered: Vec<&str> = Vec::with_capacity(self.steps.len());
        let mut placed = BTreeSet::new();
        while ordered.len() < self.steps.len() {
            let ready: Vec<&str> = self
                .steps
                .values()
                .filter(|step| !placed.contains(step.name.as_str()))
                .filter(|step| step.dependencies().all(|d| placed.contains(d.as_str())))
                .map(|step| step.name.as_str())
                .collect();
            if ready.is_empty() {
                let cycle: Vec<&str> = self
                    .steps
                    .keys()
                    .map(String::as_str)
                    .filter(|name| !placed.contains(name))
                    .collect();
                bail!("steps {cycle:?} depend on each other in a cycle");
            }
            placed.extend(ready.iter().copied());
            ordered.extend(ready);
        }
        Ok(ordered)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::{Algorithm, PrivateKey};

    fn policy_json(key: &PublicKey, steps: Value) -> Value {
        json!({
            "expires": "2099-01-01T00:00:00Z",
            "publickeys": {key.keyid(): {"keyid": key.keyid(), "key": BASE64.encode(key.to_pem())}},
            "steps": steps,
        })
    }

    fn step(name: &str, keyid: &str, extra: Value) -> Value {
        let mut step = json!({
            "name": name,
            "functionaries": [{"type": "publickey", "publickeyid": keyid,
                               "certConstraint": {"commonname": "", "roots": [], "emails": []}}],
            "attestations": [{"type": "https://aflock.ai/attestations/command-run/v0.1",
                              "regopolicies": [{"name": "r", "module": BASE64.encode("package x\ndeny[m] { false; m := 1 }")}]}],
        });
        for (field, value) in extra.as_object().unwrap() {
            step[field] = value.clone();
        }
        step
    }

    fn parse_value(value: &Value) -> anyhow::Result<Policy> {
        parse(&serde_json::to_vec(value).unwrap())
    }

    #[test]
    fn a_witness_style_policy_parses_in_dependency_order() {
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        let id = key.keyid();
        let document = policy_json(
            key.public(),
            json!({
                "save": step("save", &id, json!({"artifactsFrom": ["build"]})),
                "build": step("build", &id, json!({"artifactsFrom": null})),
            }),
        );
        let policy = parse_value(&document).unwrap();
        assert_eq!(policy.dependency_order().unwrap(), ["build", "save"]);
        let build = &policy.steps["build"];
        assert_eq!(build.functionaries, [id]);
        assert_eq!(build.attestations[0].modules[0].name, "r");
        assert!(build.attestations[0].modules[0]
            .source
            .starts_with("package x"));
    }

    #[test]
    fn structural_errors_and_unsupported_features_are_refused() {
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        let id = key.keyid();
        let with_steps = |steps: Value| policy_json(key.public(), steps);
        let cases: Vec<(Value, &str)> = vec![
            (
                with_steps(json!({"a": step("a", &id, json!({"artifactsFrom": ["b"]})),
                                  "b": step("b", &id, json!({"attestationsFrom": ["a"]}))})),
                "cycle",
            ),
            (
                with_steps(json!({"a": step("a", &id, json!({"artifactsFrom": ["zz"]}))})),
                "unknown step",
            ),
            (
                with_steps(json!({"a": step("b", &id, json!({}))})),
                "must agree",
            ),
            (
                with_steps(json!({"a": step("a", "nope", json!({}))})),
                "not in `publickeys`",
            ),
            (
                with_steps(json!({"a": step("a", &id, json!({"attestations": []}))})),
                "requires no attestations",
            ),
            (
                with_steps(json!({"a": step("a", &id, json!({"functionaries": [
                    {"type": "root", "certConstraint": {"roots": ["r1"]}}]}))})),
                "certConstraint",
            ),
            (
                with_steps(
                    json!({"a": step("a", &id, json!({"timestampConstraint": {"maxAge": "1h"}}))}),
                ),
                "timestampConstraint",
            ),
            (
                with_steps(json!({"a": step("a", &id, json!({"attestations": [
                    {"type": "t", "aipolicies": [{"name": "n", "prompt": "p"}]}]}))})),
                "aipolicies",
            ),
            (with_steps(json!({})), "no steps"),
        ];
        for (document, expected) in cases {
            let error = format!("{:#}", parse_value(&document).unwrap_err());
            assert!(error.contains(expected), "{expected}: {error}");
        }

        let mut roots = with_steps(json!({"a": step("a", &id, json!({}))}));
        roots["roots"] = json!({"r": {"certificate": "Zm9v"}});
        assert!(format!("{:#}", parse_value(&roots).unwrap_err()).contains("roots"));
        let mut external = with_steps(json!({"a": step("a", &id, json!({}))}));
        external["externalAttestations"] = json!({"slsa": {}});
        assert!(
            format!("{:#}", parse_value(&external).unwrap_err()).contains("externalAttestations")
        );

        let mut wrong_id = with_steps(json!({"a": step("a", &id, json!({}))}));
        let entry = wrong_id["publickeys"][&id].clone();
        wrong_id["publickeys"] = json!({"deadbeef": {"keyid": "deadbeef", "key": entry["key"]}});
        wrong_id["steps"]["a"]["functionaries"][0]["publickeyid"] = json!("deadbeef");
        assert!(format!("{:#}", parse_value(&wrong_id).unwrap_err()).contains("SHA-256"));
    }

    #[test]
    fn deep_nesting_is_refused_by_the_parser() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let document = format!(r#"{{"expires":"2099-01-01T00:00:00Z","roots":{{"r":{deep}}}}}"#);
        let error = format!("{:#}", parse(document.as_bytes()).unwrap_err());
        assert!(error.contains("recursion limit"), "{error}");
    }
}
