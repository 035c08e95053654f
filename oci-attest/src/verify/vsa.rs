//! SLSA verification summary attestations v1
//! (<https://slsa.dev/spec/v1.0/verification_summary>): what `verify -p --vsa-outfile` decided
//! about an artifact, as an in-toto Statement v1 whose subject is the artifact (see
//! `docs/policy.md`, "Verification summaries").

use std::time::SystemTime;

use serde::Serialize;

use crate::attest::statement::{self, ResourceDescriptor};
use crate::digest::DigestSet;
use crate::rfc3339::rfc3339_nano;

pub const VSA_TYPE: &str = "https://slsa.dev/verification_summary/v1";
/// `verifier.id` unless `--vsa-verifier-id` says otherwise.
pub const DEFAULT_VERIFIER_ID: &str = "https://oci-attest.dev/verifiers/verify-policy/v1";
/// The level a passing policy verification claims unless `--vsa-level` says otherwise: the
/// artifact has signed, verified provenance (SLSA Build L1); higher levels depend on the build
/// platform, which the policy alone cannot show.
pub const DEFAULT_LEVEL: &str = "SLSA_BUILD_LEVEL_1";

/// The verification being summarised.
#[derive(Debug)]
pub struct Verification<'a> {
    /// The artifact(s): the statement's subjects.
    pub subjects: Vec<ResourceDescriptor>,
    pub resource_uri: String,
    pub verifier_id: &'a str,
    pub time: SystemTime,
    pub policy_uri: String,
    /// Digest of the policy document (the signed payload).
    pub policy_digest: DigestSet,
    /// Every attestation the policy was evaluated against: source and envelope digest.
    pub inputs: Vec<ResourceDescriptor>,
    pub passed: bool,
    /// The levels claimed when `passed` (none are claimed otherwise).
    pub levels: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    verifier: Verifier<'a>,
    #[serde(rename = "timeVerified")]
    time_verified: String,
    #[serde(rename = "resourceUri")]
    resource_uri: &'a str,
    policy: ResourceDescriptor,
    #[serde(rename = "inputAttestations")]
    input_attestations: &'a [ResourceDescriptor],
    #[serde(rename = "verificationResult")]
    verification_result: &'static str,
    #[serde(rename = "verifiedLevels")]
    verified_levels: &'a [String],
    #[serde(rename = "slsaVersion")]
    slsa_version: &'static str,
}

/// Only `id`: in-toto's VSA v1 message has no `version` (its parser refuses one).
#[derive(Debug, Serialize)]
struct Verifier<'a> {
    id: &'a str,
}

/// Checks a `--vsa-level` value: `SLSA_<TRACK>_LEVEL_<N>` as the VSA spec spells levels.
pub fn check_level(level: &str) -> anyhow::Result<()> {
    let valid = level
        .strip_prefix("SLSA_")
        .and_then(|rest| rest.rsplit_once("_LEVEL_"))
        .is_some_and(|(track, number)| {
            !track.is_empty()
                && track.bytes().all(|byte| byte.is_ascii_uppercase())
                && !number.is_empty()
                && number.bytes().all(|byte| byte.is_ascii_digit())
        });
    anyhow::ensure!(
        valid,
        "--vsa-level {level:?} is not a SLSA level (e.g. SLSA_BUILD_LEVEL_1)"
    );
    Ok(())
}

/// The VSA statement's JSON bytes (the DSSE payload).
pub fn statement_json(verification: &Verification<'_>) -> anyhow::Result<Vec<u8>> {
    let no_levels = Vec::new();
    let summary = Summary {
        verifier: Verifier {
            id: verification.verifier_id,
        },
        time_verified: rfc3339_nano(verification.time),
        resource_uri: &verification.resource_uri,
        policy: ResourceDescriptor {
            uri: Some(verification.policy_uri.clone()),
            digest: verification.policy_digest.clone(),
            ..ResourceDescriptor::default()
        },
        input_attestations: &verification.inputs,
        verification_result: if verification.passed {
            "PASSED"
        } else {
            "FAILED"
        },
        verified_levels: if verification.passed {
            &verification.levels
        } else {
            &no_levels
        },
        slsa_version: "1.0",
    };
    statement::to_json(&verification.subjects, VSA_TYPE, &summary)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::Value;

    use super::*;
    use crate::digest::sha256_set;

    fn verification(passed: bool) -> Verification<'static> {
        Verification {
            subjects: vec![ResourceDescriptor::named("app.tar", sha256_set("aa"))],
            resource_uri: "app.tar".to_owned(),
            verifier_id: DEFAULT_VERIFIER_ID,
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            policy_uri: "policy.signed.json".to_owned(),
            policy_digest: sha256_set("bb"),
            inputs: vec![ResourceDescriptor {
                uri: Some("save.att.json".to_owned()),
                digest: sha256_set("cc"),
                ..ResourceDescriptor::default()
            }],
            passed,
            levels: vec![DEFAULT_LEVEL.to_owned()],
        }
    }

    #[test]
    fn a_summary_names_the_artifact_policy_inputs_and_result() {
        let passed: Value =
            serde_json::from_slice(&statement_json(&verification(true)).unwrap()).unwrap();
        assert_eq!(passed["predicateType"], VSA_TYPE);
        assert_eq!(passed["subject"][0]["digest"]["sha256"], "aa");
        let predicate = &passed["predicate"];
        assert_eq!(predicate["verificationResult"], "PASSED");
        assert_eq!(predicate["verifiedLevels"][0], DEFAULT_LEVEL);
        assert_eq!(predicate["policy"]["uri"], "policy.signed.json");
        assert_eq!(predicate["inputAttestations"][0]["digest"]["sha256"], "cc");
        assert_eq!(predicate["timeVerified"], "2023-11-14T22:13:20Z");
        let failed: Value =
            serde_json::from_slice(&statement_json(&verification(false)).unwrap()).unwrap();
        assert_eq!(failed["predicate"]["verificationResult"], "FAILED");
        assert_eq!(failed["predicate"]["verifiedLevels"], serde_json::json!([]));
    }

    #[test]
    fn levels_are_checked() {
        assert!(check_level("SLSA_BUILD_LEVEL_2").is_ok());
        for bad in [
            "L2",
            "SLSA_BUILD_LEVEL_",
            "SLSA__LEVEL_1",
            "slsa_build_level_1",
        ] {
            assert!(check_level(bad).is_err(), "{bad}");
        }
    }
}
