//! Predicate type URIs under their older names: witness wrote `https://witness.dev/...` and,
//! before that, `https://witness.testifysec.com/...`; cilock writes `https://aflock.ai/...`.
//! A policy written with any of them matches attestations written with any other, as cilock
//! resolves them.

/// Collection predicate types accepted in a statement.
pub const COLLECTION_TYPES: [&str; 2] = [
    crate::collection::COLLECTION_TYPE,
    "https://witness.testifysec.com/attestation-collection/v0.1",
];

const CANONICAL_PREFIX: &str = "https://aflock.ai/attestations/";
const LEGACY_PREFIXES: [&str; 2] = [
    "https://witness.dev/attestations/",
    "https://witness.testifysec.com/attestations/",
];

/// The `https://aflock.ai/attestations/...` name of a predicate type.
pub fn canonical(type_uri: &str) -> String {
    LEGACY_PREFIXES
        .iter()
        .find_map(|prefix| type_uri.strip_prefix(prefix))
        .map_or_else(
            || type_uri.to_owned(),
            |rest| format!("{CANONICAL_PREFIX}{rest}"),
        )
}

/// Whether two predicate type URIs name the same predicate.
pub fn same(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_and_testifysec_names_alias_the_aflock_ones() {
        let current = "https://aflock.ai/attestations/command-run/v0.1";
        assert!(same(
            "https://witness.dev/attestations/command-run/v0.1",
            current
        ));
        assert!(same(
            current,
            "https://witness.testifysec.com/attestations/command-run/v0.1"
        ));
        assert!(same(current, current));
        assert!(!same(
            "https://witness.dev/attestations/command-run/v0.2",
            current
        ));
        assert!(!same(
            "https://example.com/attestations/command-run/v0.1",
            current
        ));
    }
}
