//! The attestation collection (`https://aflock.ai/attestation-collection/v0.1`) and the in-toto
//! Statement v0.1 around it, serialised byte-compatibly with witness/cilock (see SPEC section 2).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::attach::{self, Stage};
use crate::attestors::Attestation;
use crate::digest::DigestSet;

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

/// The stage an attestor's output belongs to, from the catalogue (unknown types run last).
pub fn stage_of(type_uri: &str) -> Stage {
    attach::catalogue()
        .into_iter()
        .find(|entry| entry.predicate_type == type_uri)
        .map_or(Stage::PostProduct, |entry| entry.stage)
}

/// The statement for one step: attestations in stage order (the given order within a stage),
/// subjects `<type URI>/<key>` deduplicated and sorted byte-wise by name.
pub fn statement<'a>(step: &'a str, attestations: &'a [Attestation]) -> Statement<'a> {
    let mut ordered: Vec<&Attestation> = attestations.iter().collect();
    ordered.sort_by_key(|attestation| stage_of(attestation.type_uri));

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
    Ok(crate::gojson::to_vec(&statement(step, attestations))?)
}

/// A UTC time as Go's `time.RFC3339Nano` writes it: nanoseconds with trailing zeros trimmed
/// (no fraction at all when zero), `Z` suffix.
///
/// Hand-written because no date crate is a dependency and the conversion is a dozen lines
/// (days → civil date after Howard Hinnant's `civil_from_days`).
pub fn rfc3339_nano(time: SystemTime) -> String {
    // Times before 1970 do not occur (clocks of running processes); clamp rather than fail.
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    let nanos = since_epoch.subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    let z = days_since_epoch + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::attestors;
    use crate::digest::sha256_set;

    fn at(seconds: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(seconds, nanos)
    }

    #[test]
    fn times_are_go_rfc3339nano_in_utc() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        // `date -u -d @1700000000` = 2023-11-14T22:13:20Z
        assert_eq!(rfc3339_nano(at(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_nano(at(1_700_000_000, 120_000_000)),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339_nano(at(1_700_000_000, 1)),
            "2023-11-14T22:13:20.000000001Z"
        );
        // Leap day and a far date: 2024-02-29T00:00:00Z = 1709164800; 2100-03-01 = 4107542400.
        assert_eq!(rfc3339_nano(at(1_709_164_800, 0)), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339_nano(at(4_107_542_400, 0)), "2100-03-01T00:00:00Z");
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
