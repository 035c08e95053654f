//! `oci-attest verify -p policy.signed.json -k POLICY-PUB.pem -a ATT… (--artifactfile FILE |
//! -s sha256:HEX…)`: checks the policy's signature and expiry, then the policy against the
//! attestations; prints a summary per step (or `--json`) and exits 0 only if the policy holds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;

use crate::commands::sign::MAX_POLICY_BYTES;
use crate::digest::sha256_reader;
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::keys::PublicKey;
use crate::policy::evidence::{self, Digest, Evidence};
use crate::policy::model::{self, Policy};
use crate::policy::verification::{self, Rejected, Report};
use crate::policy::{self, rego};

/// Largest attestation read, as for `verify --key`.
const MAX_ENVELOPE_BYTES: u64 = 256 << 20;

/// The policy form of `verify` (flattened into its arguments). `-p` without the artifact
/// (`-f FILE` or `-s sha256:HEX`) is a usage error, as in witness.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("artifact").args(["artifactfile", "subjects"])))]
pub struct PolicyArgs {
    /// Signed policy (DSSE, from `oci-attest sign`, `witness sign` or `cilock sign`).
    #[arg(
        short = 'p',
        long,
        value_name = "POLICY",
        requires_all = ["attestations", "artifact"]
    )]
    pub policy: Option<PathBuf>,
    /// Attestation envelope to check against the policy (repeatable).
    #[arg(
        short = 'a',
        long = "attestations",
        value_name = "ATT",
        requires = "policy"
    )]
    pub attestations: Vec<PathBuf>,
    /// The artifact the policy is about: its SHA-256 must be a subject or product of a step.
    #[arg(
        short = 'f',
        long,
        value_name = "FILE",
        requires = "policy",
        conflicts_with = "subjects"
    )]
    pub artifactfile: Option<PathBuf>,
    /// The artifact's digest instead of the file (`sha256:HEX`, repeatable).
    #[arg(
        short = 's',
        long = "subjects",
        value_name = "sha256:HEX",
        requires = "policy"
    )]
    pub subjects: Vec<String>,
}

pub fn execute(
    key_path: &Path,
    policy_path: &Path,
    args: &PolicyArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let unusable = |message: String| failure(FailureKind::PolicyUnusable, message);
    let key = crate::keys::load_public_key(key_path)?;
    let artifacts = artifact_digests(args)?;
    let policy = load_policy(policy_path, &key).map_err(|error| unusable(format!("{error:#}")))?;
    if Utc::now() > policy.expires {
        return Err(unusable(format!(
            "{}: the policy expired at {}",
            policy_path.display(),
            policy.expires.to_rfc3339()
        )));
    }
    let attestations = args.attestations.iter().map(|path| {
        let bytes = policy::read_capped(path, MAX_ENVELOPE_BYTES);
        (path.display().to_string(), bytes)
    });
    let report = check(&policy, attestations, &artifacts)
        .map_err(|error| unusable(format!("{}: {error}", policy_path.display())))?;
    if json {
        println!("{:#}", serde_json::to_value(&report)?);
    } else if !crate::logging::quiet() {
        print_summary(&report);
    }
    if report.holds {
        Ok(ExitCode::SUCCESS)
    } else {
        let failed: Vec<&str> = report
            .steps
            .iter()
            .filter(|step| !step.passed)
            .map(|step| step.name.as_str())
            .collect();
        Err(failure(
            FailureKind::VerificationFailed,
            format!(
                "{}: the policy does not hold (failed steps: {})",
                policy_path.display(),
                failed.join(", ")
            ),
        ))
    }
}

/// Checks `policy` (signature and expiry already checked) against attestation envelopes
/// (source name, bytes) for the artifacts: every envelope is verified and read one at a time,
/// only what the policy needs is kept, and every Rego evaluation runs in one sandbox process.
/// An `Err` means the policy cannot be used (a Rego module is broken or over its limits).
pub fn check(
    policy: &Policy,
    attestations: impl IntoIterator<Item = (String, anyhow::Result<Vec<u8>>)>,
    artifacts: &[Digest],
) -> Result<Report, rego::RegoError> {
    let mut rejected = Vec::new();
    let mut evidence: Vec<Evidence> = Vec::new();
    let keep = |step: &str, type_uri: &str| policy.feeds_rego(step, type_uri);
    for (source, bytes) in attestations {
        match bytes.and_then(|bytes| evidence::load(&source, bytes, &policy.keys, &keep)) {
            Ok(item) => evidence.push(item),
            Err(error) => rejected.push(Rejected {
                source,
                reason: format!("{error:#}"),
            }),
        }
    }
    let mut sandbox = rego::Sandbox::default();
    let mut report = verification::verify(policy, &evidence, artifacts, &mut sandbox)?;
    report.rejected = rejected;
    Ok(report)
}

fn load_policy(path: &Path, key: &PublicKey) -> anyhow::Result<Policy> {
    let name = path.display();
    let bytes = policy::read_capped(path, MAX_POLICY_BYTES)?;
    let envelope = dsse::parse(&bytes).with_context(|| format!("{name}"))?;
    let payload = dsse::verify_as(
        &[
            model::POLICY_PAYLOAD_TYPE,
            model::LEGACY_POLICY_PAYLOAD_TYPE,
        ],
        &envelope,
        key,
    )
    .with_context(|| format!("{name}: the policy signature does not verify"))?;
    model::parse(&payload).with_context(|| format!("{name}"))
}

fn artifact_digests(args: &PolicyArgs) -> anyhow::Result<Vec<Digest>> {
    let digests = if let Some(path) = &args.artifactfile {
        let file = std::fs::File::open(path)
            .with_context(|| format!("{}: cannot open the artifact", path.display()))?;
        let digest = sha256_reader(std::io::BufReader::new(file))
            .with_context(|| format!("{}: cannot read the artifact", path.display()))?;
        vec![(path.display().to_string(), digest)]
    } else {
        anyhow::ensure!(
            !args.subjects.is_empty(),
            "verify -p needs the artifact: --artifactfile FILE or -s sha256:HEX"
        );
        args.subjects
            .iter()
            .map(|subject| {
                let hex = subject.strip_prefix("sha256:").unwrap_or(subject);
                anyhow::ensure!(
                    hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()),
                    "-s {subject:?} is not a sha256:HEX digest"
                );
                Ok((format!("-s {subject}"), hex.to_ascii_lowercase()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    digests
        .into_iter()
        .map(|(name, hex_digest)| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&hex_digest, &mut digest)?;
            anyhow::ensure!(
                digest != evidence::empty_digest(),
                "{name}: the artifact is empty (sha256 of no bytes), the digest every empty tree \
                 and empty file carries: nothing can be tied to it"
            );
            Ok(digest)
        })
        .collect()
}

fn print_summary(report: &Report) {
    for rejected in &report.rejected {
        println!(
            "attestation {}: REJECTED: {}",
            rejected.source, rejected.reason
        );
    }
    for source in &report.unused {
        println!("attestation {source}: not a step of the policy, not used");
    }
    for duplicate in &report.duplicates {
        println!(
            "attestation {}: the same statement as {}, counted once",
            duplicate.source, duplicate.same_as
        );
    }
    for step in &report.steps {
        println!(
            "step {}: {}",
            step.name,
            if step.passed { "PASS" } else { "FAIL" }
        );
        for reason in &step.reasons {
            println!("  - {reason}");
        }
        for collection in &step.collections {
            println!(
                "  {} {}",
                if collection.passed { "ok  " } else { "FAIL" },
                collection.source
            );
            for reason in &collection.reasons {
                println!("      - {reason}");
            }
        }
    }
    println!("policy: {}", if report.holds { "PASS" } else { "FAIL" });
}
