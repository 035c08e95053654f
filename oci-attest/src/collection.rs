//! The attestation collection (`https://aflock.ai/attestation-collection/v0.1`) and the in-toto
//! Statement v0.1 around it, serialised byte-compatibly with witness/cilock (see docs/format.md).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::attestors::{self, Attestation};
use crate::digest::DigestSet;
use crate::rfc3339::rfc3339_nano;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
pub const COLLECTION_TYPE: &str = "https://aflock.ai/attestation-collection/v0.1";

#[derive(Debug, Serialize)]
pub struct Statement<'a> {
    #[serde(rename = "_type")]
    pub statement_type: &'static str,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: &'static str,
    pub predicate: Collection<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Subject {
    pub name: String,
    pub digest: DigestSet,
}

#[derive(Debug, Serialize)]
pub struct Collection<'a> {
    pub name: &'a str,
    pub attestations: Vec<CollectionAttestation<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backrefs: BTreeMap<String, DigestSet>,
}

#[derive(Debug, Serialize)]
pub struct CollectionAttestation<'a> {
    #[serde(rename = "type")]
    pub type_uri: &'a str,
    pub attestation: &'a serde_json::Value,
    pub starttime: String,
    pub endtime: String,
}

/// The statement for one step: attestations in stage order (the given order within a stage),
/// subjects `<type URI>/<key>` deduplicated and sorted byte-wise by name.
pub fn statement<'a>(step: &'a str, attestations: &'a [Attestation]) -> Statement<'a> {
    let mut ordered: Vec<&Attestation> = attestations.iter().collect();
    // Stable: the caller's order holds within a stage (environment before git). A type outside
    // the attestor table has no stage; `statement_json` refuses it.
    ordered.sort_by_cached_key(|attestation| attestors::stage_of(attestation.type_uri));

    let prefixed = |attestation: &&Attestation, entries: &[(String, DigestSet)]| {
        entries
            .iter()
            .map(|(key, digest)| (format!("{}/{key}", attestation.type_uri), digest.clone()))
            .collect::<Vec<_>>()
    };
    let mut subject: Vec<Subject> = ordered
        .iter()
        .flat_map(|attestation| prefixed(attestation, &attestation.subjects))
        .map(|(name, digest)| Subject { name, digest })
        .collect();
    // Byte-wise order of names (String's Ord), then digest, so duplicates are adjacent.
    subject.sort();
    subject.dedup();
    let backrefs = ordered
        .iter()
        .flat_map(|attestation| prefixed(attestation, &attestation.backrefs))
        .collect();

    Statement {
        statement_type: STATEMENT_TYPE,
        subject,
        predicate_type: COLLECTION_TYPE,
        predicate: Collection {
            name: step,
            attestations: ordered
                .iter()
                .map(|attestation| CollectionAttestation {
                    type_uri: attestation.type_uri,
                    attestation: &attestation.predicate,
                    starttime: rfc3339_nano(attestation.started),
                    endtime: rfc3339_nano(attestation.ended),
                })
                .collect(),
            backrefs,
        },
    }
}

/// The statement's JSON bytes (Go-compatible compact JSON): the DSSE payload.
pub fn statement_json(step: &str, attestations: &[Attestation]) -> anyhow::Result<Vec<u8>> {
    if let Some(stray) = attestations
        .iter()
        .find(|attestation| attestors::stage_of(attestation.type_uri).is_none())
    {
        anyhow::bail!(
            "attestation type {} belongs to no attestor of the table",
            stray.type_uri
        );
    }
    Ok(crate::gojson::to_vec(&statement(step, attestations))?)
}

/// The subjects of a statement read back (`verify -p`, `discover`) that carry a sha256 digest:
/// (name, hex) in statement order; subjects without one are left out.
pub fn sha256_subjects(
    statement: &serde_json::Value,
) -> impl Iterator<Item = (String, String)> + '_ {
    statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|subject| {
            Some((
                subject["name"].as_str()?.to_owned(),
                subject["digest"]["sha256"].as_str()?.to_owned(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::attestors;
    use crate::digest::sha256_set;

    fn at(seconds: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(seconds, nanos)
    }

    fn attestation(type_uri: &'static str, subjects: &[(&str, &str)]) -> Attestation {
        Attestation {
            type_uri,
            predicate: json!({"z": 1, "a": "<x>"}),
            subjects: subjects
                .iter()
                .map(|(key, hex)| ((*key).to_owned(), sha256_set(*hex)))
                .collect(),
            backrefs: Vec::new(),
            started: at(1_700_000_000, 500_000_000),
            ended: at(1_700_000_001, 0),
        }
    }

    #[test]
    fn statement_orders_stages_and_sorts_subjects() {
        let mut oci = attestation(
            attestors::oci::TYPE_URI,
            &[("tardigest:bb", "bb"), ("imageid:aa", "aa")],
        );
        oci.backrefs = vec![("imageid:aa".to_owned(), sha256_set("aa"))];
        let attestations = vec![
            oci,
            attestation(attestors::PRODUCT_TYPE_URI, &[("tree:products", "cc")]),
            attestation(attestors::COMMAND_RUN_TYPE_URI, &[]),
            attestation(attestors::MATERIAL_TYPE_URI, &[("tree:materials", "dd")]),
            attestation(attestors::ENVIRONMENT_TYPE_URI, &[]),
            // A duplicate subject (the same archive attested twice) appears once.
            attestation(attestors::oci::TYPE_URI, &[("imageid:aa", "aa")]),
        ];
        let json = String::from_utf8(statement_json("oci-save", &attestations).unwrap()).unwrap();
        let expected_subjects = concat!(
            r#"[{"name":"https://aflock.ai/attestations/material/v0.3/tree:materials","digest":{"sha256":"dd"}},"#,
            r#"{"name":"https://aflock.ai/attestations/oci/v0.1/imageid:aa","digest":{"sha256":"aa"}},"#,
            r#"{"name":"https://aflock.ai/attestations/oci/v0.1/tardigest:bb","digest":{"sha256":"bb"}},"#,
            r#"{"name":"https://aflock.ai/attestations/product/v0.3/tree:products","digest":{"sha256":"cc"}}]"#
        );
        let attestation_json = |uri: &str| {
            format!(
                r#"{{"type":"{uri}","attestation":{{"z":1,"a":"\u003cx\u003e"}},"starttime":"2023-11-14T22:13:20.5Z","endtime":"2023-11-14T22:13:21Z"}}"#
            )
        };
        let expected = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v0.1","subject":{expected_subjects},"predicateType":"https://aflock.ai/attestation-collection/v0.1","predicate":{{"name":"oci-save","attestations":[{}],"backrefs":{{"https://aflock.ai/attestations/oci/v0.1/imageid:aa":{{"sha256":"aa"}}}}}}}}"#,
            [
                attestors::ENVIRONMENT_TYPE_URI,
                attestors::MATERIAL_TYPE_URI,
                attestors::COMMAND_RUN_TYPE_URI,
                attestors::PRODUCT_TYPE_URI,
                attestors::oci::TYPE_URI,
                attestors::oci::TYPE_URI,
            ]
            .map(attestation_json)
            .join(",")
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn backrefs_are_omitted_when_empty() {
        let attestations = vec![attestation(attestors::PRODUCT_TYPE_URI, &[])];
        let json = String::from_utf8(statement_json("s", &attestations).unwrap()).unwrap();
        assert!(!json.contains("backrefs"), "{json}");
        assert!(json.contains(r#""subject":[],"#), "{json}");
    }
}
