//! in-toto Statement v1 (<https://github.com/in-toto/attestation/blob/main/spec/v1>): subjects
//! and other artifacts are resource descriptors; the JSON is written as Go writes it
//! ([`crate::gojson`]), like the collection.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::digest::DigestSet;

pub const STATEMENT_V1_TYPE: &str = "https://in-toto.io/Statement/v1";

/// A resource descriptor: at least one of `name`, `uri`, `digest` is set. Fields left empty are
/// not written (the spec's JSON form omits unset fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ResourceDescriptor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "DigestSet::is_empty")]
    pub digest: DigestSet,
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ResourceDescriptor {
    /// A named artifact with its digests.
    pub fn named(name: impl Into<String>, digest: DigestSet) -> Self {
        ResourceDescriptor {
            name: Some(name.into()),
            digest,
            ..ResourceDescriptor::default()
        }
    }

    /// The same descriptor with one annotation added.
    pub fn annotated(mut self, key: &str, value: impl Into<String>) -> Self {
        self.annotations.insert(key.to_owned(), value.into());
        self
    }
}

#[derive(Debug, Serialize)]
struct Statement<'a, P: Serialize> {
    #[serde(rename = "_type")]
    statement_type: &'static str,
    subject: &'a [ResourceDescriptor],
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    predicate: &'a P,
}

/// The statement's JSON bytes (the DSSE payload). A statement without a subject describes
/// nothing a verifier can match, so it is refused here rather than written.
pub fn to_json<P: Serialize>(
    subject: &[ResourceDescriptor],
    predicate_type: &str,
    predicate: &P,
) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        !subject.is_empty(),
        "an in-toto Statement v1 ({predicate_type}) needs at least one subject with a digest"
    );
    if let Some(bare) = subject.iter().find(|subject| subject.digest.is_empty()) {
        anyhow::bail!(
            "subject {:?} of the {predicate_type} statement has no digest",
            bare.name.as_deref().unwrap_or("")
        );
    }
    Ok(crate::gojson::to_vec(&Statement {
        statement_type: STATEMENT_V1_TYPE,
        subject,
        predicate_type,
        predicate,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_set;

    #[test]
    fn statement_v1_is_compact_and_leaves_unset_fields_out() {
        let subject = [ResourceDescriptor::named("app", sha256_set("ab")).annotated("k", "v")];
        let json = to_json(
            &subject,
            "https://example/p",
            &serde_json::json!({"a": "<"}),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app","digest":{"sha256":"ab"},"annotations":{"k":"v"}}],"predicateType":"https://example/p","predicate":{"a":"\u003c"}}"#
        );
    }

    #[test]
    fn subjects_are_required_with_digests() {
        let predicate = serde_json::json!({});
        assert!(to_json(&[], "p", &predicate).is_err());
        let bare = [ResourceDescriptor {
            name: Some("x".into()),
            ..ResourceDescriptor::default()
        }];
        assert!(to_json(&bare, "p", &predicate).is_err());
    }
}
