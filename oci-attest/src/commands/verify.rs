//! `oci-attest verify --key PUB.pem ENVELOPE [--image PATH]`: checks the envelope's signature
//! and keyid over the payload bytes as stored; with `--image`, re-derives the image facts from
//! the archive and compares them with what the attestation claims.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::attestors;
use crate::commands::verify_policy;
use crate::digest::DigestSet;
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::inspect;
use crate::keys;

/// Largest envelope read: attestations of even huge images are a few MiB.
const MAX_ENVELOPE_BYTES: u64 = 256 << 20;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  oci-attest verify --key key.pem.pub att.json\n  \
                        oci-attest verify --key key.pem.pub att.json --image image.tar\n  \
                        oci-attest verify -p policy.signed.json -k policy-key.pem.pub \
                        -a att.json --artifactfile image.tar"
)]
pub struct Args {
    /// Public key (PEM) the envelope must be signed with; with -p, the key of the policy.
    #[arg(short = 'k', long, value_name = "PUB.pem")]
    pub key: PathBuf,
    /// The DSSE envelope written by `oci-attest run`.
    #[arg(
        value_name = "ENVELOPE",
        required_unless_present_any = ["policy", "image_ref"],
        conflicts_with_all = ["policy", "image_ref"]
    )]
    pub envelope: Option<PathBuf>,
    /// Image archive (tar, gzip tar, OCI layout dir) to compare with the attested facts.
    #[arg(long, value_name = "PATH", conflicts_with = "policy")]
    pub image: Option<PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long, requires = "policy")]
    pub json: bool,
    #[command(flatten)]
    pub policy: verify_policy::PolicyArgs,
    /// Verify the attestations attached to this image in its registry instead of a file
    /// (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:…).
    #[arg(long, value_name = "IMAGE-REF", conflicts_with_all = ["image", "policy"])]
    pub image_ref: Option<String>,
    #[command(flatten)]
    pub registry: crate::registry::RegistryArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(policy) = &args.policy.policy {
        return verify_policy::execute(&args.key, policy, &args.policy, args.json);
    }
    if let Some(image_ref) = &args.image_ref {
        let key = keys::load_public_key(&args.key)?;
        return super::verify_image_ref::execute(&key, image_ref, &args.registry);
    }
    // clap requires ENVELOPE when neither -p nor --image-ref is given.
    let envelope = args
        .envelope
        .as_deref()
        .context("verify needs an ENVELOPE, --image-ref or -p POLICY")?;
    let key = keys::load_public_key(&args.key)?;
    let envelope_path = envelope.display();
    let size = std::fs::metadata(envelope)
        .with_context(|| format!("{envelope_path}: cannot read"))?
        .len();
    if size > MAX_ENVELOPE_BYTES {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!("{envelope_path}: {size} bytes is too large for an envelope"),
        ));
    }
    let bytes = std::fs::read(envelope).with_context(|| format!("{envelope_path}: cannot read"))?;
    let verified = dsse::parse(&bytes).and_then(|envelope| dsse::verify(&envelope, &key));
    let payload = match verified {
        Ok(payload) => payload,
        Err(error) => {
            println!("signature: FAILED: {error}");
            return Err(failure(
                FailureKind::VerificationFailed,
                format!("{envelope_path}: {error}"),
            ));
        }
    };
    println!("signature: ok ({} key {})", key.algorithm(), key.keyid());
    let statement: Value = serde_json::from_slice(&payload).map_err(|error| {
        failure(
            FailureKind::VerificationFailed,
            format!("{envelope_path}: the signed payload is not JSON: {error}"),
        )
    })?;
    let subjects = statement_subjects(&statement);
    println!(
        "statement: step {:?}, {} subjects",
        statement["predicate"]["name"].as_str().unwrap_or(""),
        subjects.len()
    );
    let Some(image) = args.image else {
        return Ok(ExitCode::SUCCESS);
    };

    let options = inspect::Options {
        progress: crate::progress::archive_bar(),
        ..inspect::Options::default()
    };
    let analysis = match inspect::analyze(&image, &options) {
        Ok(analysis) => analysis,
        Err(error) => {
            println!("image: FAILED: {error}");
            return Err(failure(
                FailureKind::VerificationFailed,
                format!("{}: the image does not verify: {error}", image.display()),
            ));
        }
    };
    let now = std::time::SystemTime::now();
    let derived = attestors::oci::attest(&analysis, now, now);
    let comparison = compare(&statement, &subjects, &derived);
    println!("image {}:", image.display());
    for line in &comparison.lines {
        println!("  {line}");
    }
    if comparison.mismatches > 0 {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!(
                "{}: {} of the attested image facts do not match {envelope_path}",
                image.display(),
                comparison.mismatches
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The statement's subjects, name → digest set (entries that are not well-formed are ignored;
/// they can only make the comparison fail).
fn statement_subjects(statement: &Value) -> BTreeMap<String, DigestSet> {
    statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|subject| {
            let name = subject["name"].as_str()?.to_owned();
            let digest = serde_json::from_value(subject["digest"].clone()).ok()?;
            Some((name, digest))
        })
        .collect()
}

#[derive(Debug, Default)]
struct Comparison {
    lines: Vec<String>,
    mismatches: usize,
}

impl Comparison {
    fn check(&mut self, what: &str, attested: &Value, derived: &Value) {
        if attested == derived {
            self.lines
                .push(format!("{what:<16} ok        {}", compact(derived)));
        } else {
            self.mismatches += 1;
            self.lines.push(format!(
                "{what:<16} MISMATCH  attested {}, image {}",
                compact(attested),
                compact(derived)
            ));
        }
    }
}

fn compact(value: &Value) -> String {
    match value {
        Value::Object(map) if map.len() == 1 => map
            .iter()
            .map(|(algorithm, digest)| format!("{algorithm}:{}", digest.as_str().unwrap_or("?")))
            .collect(),
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    }
}

/// The oci predicates in the collection (a run that produced several archives has several).
fn oci_predicates(statement: &Value) -> Vec<&Value> {
    statement["predicate"]["attestations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|attestation| attestation["type"] == attestors::oci::TYPE_URI)
        .map(|attestation| &attestation["attestation"])
        .collect()
}

const COMPARED_FIELDS: [(&str, &str); 5] = [
    ("tardigest", "tardigest"),
    ("imageid", "imageid"),
    ("diffids", "diffids"),
    ("tags", "imagetags"),
    ("manifestdigest", "manifestdigest"),
];

/// Compares the re-derived facts with the attested oci predicate describing the same archive
/// (the one sharing most fields with it), then checks every re-derived subject is signed.
fn compare(
    statement: &Value,
    subjects: &BTreeMap<String, DigestSet>,
    derived: &attestors::Attestation,
) -> Comparison {
    let mut comparison = Comparison::default();
    let candidates = oci_predicates(statement);
    let agreement = |attested: &&&Value| {
        COMPARED_FIELDS
            .iter()
            .filter(|(_, key)| attested[*key] == derived.predicate[*key])
            .count()
    };
    let Some(attested) = candidates.iter().max_by_key(agreement) else {
        comparison.mismatches += 1;
        comparison
            .lines
            .push("the attestation holds no oci attestation to compare with".to_owned());
        return comparison;
    };
    for (label, key) in COMPARED_FIELDS {
        comparison.check(label, &attested[key], &derived.predicate[key]);
    }
    for (key, digest) in &derived.subjects {
        let name = format!("{}/{key}", derived.type_uri);
        match subjects.get(&name) {
            Some(signed) if signed == digest => {}
            Some(signed) => {
                comparison.mismatches += 1;
                comparison.lines.push(format!(
                    "subject {key}: MISMATCH  signed {signed:?}, image {digest:?}"
                ));
            }
            None => {
                comparison.mismatches += 1;
                comparison
                    .lines
                    .push(format!("subject {key}: MISSING from the signed subjects"));
            }
        }
    }
    if comparison.mismatches == 0 {
        comparison.lines.push(format!(
            "all {} image subjects are signed",
            derived.subjects.len()
        ));
    }
    comparison
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::digest::sha256_set;

    fn derived() -> attestors::Attestation {
        attestors::Attestation {
            type_uri: attestors::oci::TYPE_URI,
            predicate: json!({
                "tardigest": {"sha256": "t1"}, "imageid": {"sha256": "i1"},
                "diffids": [{"sha256": "d1"}], "imagetags": ["a:1"],
                "manifestdigest": {"sha256": "m1"}
            }),
            subjects: vec![
                ("imageid:i1".to_owned(), sha256_set("i1")),
                ("tardigest:t1".to_owned(), sha256_set("t1")),
            ],
            backrefs: Vec::new(),
            started: SystemTime::now(),
            ended: SystemTime::now(),
        }
    }

    fn statement(predicates: &[Value], subjects: &[(&str, &str)]) -> Value {
        json!({
            "subject": subjects.iter().map(|(name, hex)| json!({
                "name": format!("{}/{name}", attestors::oci::TYPE_URI),
                "digest": {"sha256": hex}})).collect::<Vec<_>>(),
            "predicate": {"name": "s", "attestations": predicates.iter().map(|p| json!({
                "type": attestors::oci::TYPE_URI, "attestation": p})).collect::<Vec<_>>()}
        })
    }

    #[test]
    fn matching_image_passes_and_each_difference_is_reported() {
        let good = derived().predicate;
        let statement_ok = statement(
            std::slice::from_ref(&good),
            &[("imageid:i1", "i1"), ("tardigest:t1", "t1")],
        );
        let result = compare(
            &statement_ok,
            &statement_subjects(&statement_ok),
            &derived(),
        );
        assert_eq!(result.mismatches, 0, "{:?}", result.lines);

        let mut other_tags = good.clone();
        other_tags["imagetags"] = json!(["b:2"]);
        other_tags["diffids"] = json!([{"sha256": "d2"}]);
        let unrelated = json!({"tardigest": {"sha256": "zz"}});
        let tampered = statement(&[unrelated, other_tags], &[("imageid:i1", "i1")]);
        let result = compare(&tampered, &statement_subjects(&tampered), &derived());
        assert_eq!(result.mismatches, 3, "{:?}", result.lines);
        assert!(result
            .lines
            .iter()
            .any(|line| line.starts_with("tags") && line.contains("MISMATCH")));
        assert!(result
            .lines
            .iter()
            .any(|line| line.starts_with("diffids") && line.contains("MISMATCH")));
        assert!(result
            .lines
            .iter()
            .any(|line| line.contains("tardigest:t1: MISSING")));

        let empty = statement(&[], &[]);
        assert_eq!(compare(&empty, &BTreeMap::new(), &derived()).mismatches, 1);
    }
}
