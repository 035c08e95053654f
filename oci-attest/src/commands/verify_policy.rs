//! `oci-attest verify -p policy.signed.json -k POLICY-PUB.pem (-a ATT… | --image-ref REF)
//! (--artifactfile FILE | -s sha256:HEX…)`: checks the policy's signature and expiry, then the
//! policy against the attestations (files, or those attached to the image in its registry, the
//! image's manifest digest then being the artifact by default); prints a summary per step (or
//! `--json`) and exits 0 only if the policy holds; `--vsa-outfile` signs a summary of the result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;

use crate::attest::statement::ResourceDescriptor;
use crate::commands::sign::MAX_POLICY_BYTES;
use crate::digest::{sha256_hex, sha256_reader, sha256_set};
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::keys::PublicKey;
use crate::policy::evidence::{self, Digest, Evidence};
use crate::policy::model::{self, Policy};
use crate::policy::verification::{self, Rejected, Report};
use crate::policy::{self, rego};
use crate::timestamp::Trust;
use crate::verify::vsa;

/// Largest attestation read, as for `verify --key`.
const MAX_ENVELOPE_BYTES: u64 = 256 << 20;

/// The policy form of `verify` (flattened into its arguments). `-p` without the artifact
/// (`-f FILE`, `-s sha256:HEX`, or `--image-ref`) is a usage error, as in witness.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("artifact").args(["artifactfile", "subjects"])))]
pub struct PolicyArgs {
    /// Signed policy (DSSE, from `oci-attest sign`, `witness sign` or `cilock sign`).
    #[arg(
        short = 'p',
        long,
        value_name = "POLICY",
        requires_all = ["evidence", "target"]
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
    #[command(flatten)]
    pub vsa: VsaArgs,
}

/// `--vsa-outfile`: a signed SLSA verification summary of the decision.
#[derive(Debug, clap::Args)]
pub struct VsaArgs {
    /// Also write a signed SLSA verification summary (VSA v1) of the result, PASSED or FAILED,
    /// to PATH (needs --signer-file-key-path).
    #[arg(long, value_name = "PATH", requires_all = ["policy", "vsa_key"])]
    pub vsa_outfile: Option<PathBuf>,
    /// Private key that signs the VSA.
    #[arg(
        long = "signer-file-key-path",
        value_name = "KEY.pem",
        requires = "vsa_outfile"
    )]
    pub vsa_key: Option<PathBuf>,
    /// Passphrase file of an encrypted --signer-file-key-path.
    #[arg(
        long = "signer-file-key-passphrase-path",
        value_name = "FILE",
        requires = "vsa_key"
    )]
    pub vsa_passphrase: Option<PathBuf>,
    /// The VSA's `verifier.id`.
    #[arg(long, value_name = "URI", default_value = vsa::DEFAULT_VERIFIER_ID, requires = "vsa_outfile")]
    pub vsa_verifier_id: String,
    /// The SLSA level a PASSED summary claims (`verifiedLevels`).
    #[arg(long, value_name = "LEVEL", default_value = vsa::DEFAULT_LEVEL, requires = "vsa_outfile")]
    pub vsa_level: String,
    /// The VSA's `resourceUri` (default: the --artifactfile path, else the first -s digest).
    #[arg(long, value_name = "URI", requires = "vsa_outfile")]
    pub vsa_resource_uri: Option<String>,
    /// The VSA's `policy.uri` (default: the -p path as given).
    #[arg(long, value_name = "URI", requires = "vsa_outfile")]
    pub vsa_policy_uri: Option<String>,
}

/// Where `verify -p` takes attestations from besides `-a` files.
pub struct ImageSource<'a> {
    pub image: &'a str,
    pub registry: &'a crate::registry::RegistryArgs,
}

pub fn execute(
    key_path: &Path,
    policy_path: &Path,
    args: &PolicyArgs,
    image: Option<ImageSource<'_>>,
    trust: Option<&Trust>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let unusable = |message: String| failure(FailureKind::PolicyUnusable, message);
    let key = crate::keys::load_public_key(key_path)?;
    let vsa_signer = prepare_vsa(&args.vsa)?;
    let mut envelopes: Vec<(String, anyhow::Result<Vec<u8>>)> = args
        .attestations
        .iter()
        .map(|path| {
            (
                path.display().to_string(),
                policy::read_capped(path, MAX_ENVELOPE_BYTES),
            )
        })
        .collect();
    let mut image_digest = None;
    if let Some(source) = &image {
        let (subject, attached) = attached_envelopes(source)?;
        envelopes.extend(attached.into_iter().map(|(name, bytes)| (name, Ok(bytes))));
        image_digest = Some(subject);
    }
    let artifacts = match image_digest {
        Some(subject) if args.artifactfile.is_none() && args.subjects.is_empty() => {
            let hex = subject.strip_prefix("sha256:").unwrap_or(&subject);
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex, &mut digest).with_context(|| {
                format!(
                    "{}: manifest digest {subject}",
                    image.as_ref().map_or("", |source| source.image)
                )
            })?;
            vec![digest]
        }
        _ => artifact_digests(args)?,
    };
    let (policy, policy_payload) =
        load_policy(policy_path, &key).map_err(|error| unusable(format!("{error:#}")))?;
    if Utc::now() > policy.expires {
        return Err(unusable(format!(
            "{}: the policy expired at {}",
            policy_path.display(),
            policy.expires.to_rfc3339()
        )));
    }
    let mut inputs = Vec::new();
    let attestations = envelopes.into_iter().map(|(source, read)| {
        let checked = read.and_then(|bytes| {
            inputs.push(ResourceDescriptor {
                uri: Some(source.clone()),
                digest: sha256_set(sha256_hex(&bytes)),
                ..ResourceDescriptor::default()
            });
            if let Some(trust) = trust {
                let timestamp = timestamped_within(&bytes, &policy, trust)?;
                if !json && !crate::logging::quiet() {
                    println!(
                        "attestation {source}: timestamped {} by {}",
                        timestamp.time, timestamp.tsa
                    );
                }
            }
            Ok(bytes)
        });
        (source, checked)
    });
    let report = check(&policy, attestations, &artifacts)
        .map_err(|error| unusable(format!("{}: {error}", policy_path.display())))?;
    if json {
        println!("{:#}", serde_json::to_value(&report)?);
    } else if !crate::logging::quiet() {
        print_summary(&report);
    }
    if let (Some(outfile), Some(signer)) = (&args.vsa.vsa_outfile, &vsa_signer) {
        let resource_uri = match (&args.artifactfile, &image) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(source)) if args.subjects.is_empty() => source.image.to_owned(),
            _ => format!("sha256:{}", hex::encode(artifacts[0])),
        };
        let verification = vsa::Verification {
            subjects: artifact_subjects(args, image.as_ref(), &artifacts),
            resource_uri: args.vsa.vsa_resource_uri.clone().unwrap_or(resource_uri),
            verifier_id: &args.vsa.vsa_verifier_id,
            time: std::time::SystemTime::now(),
            policy_uri: args
                .vsa
                .vsa_policy_uri
                .clone()
                .unwrap_or_else(|| policy_path.display().to_string()),
            policy_digest: sha256_set(sha256_hex(&policy_payload)),
            inputs,
            passed: report.holds,
            levels: vec![args.vsa.vsa_level.clone()],
        };
        let envelope = dsse::sign(&vsa::statement_json(&verification)?, signer)?;
        crate::output::Destination::choose(Some(outfile))?.write(&envelope, Path::new("."))?;
        if !json && !crate::logging::quiet() {
            println!(
                "wrote verification summary ({}) to {}",
                if report.holds { "PASSED" } else { "FAILED" },
                outfile.display()
            );
        }
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

/// The VSA's signing key, loaded (and the level checked) before anything is verified.
fn prepare_vsa(args: &VsaArgs) -> anyhow::Result<Option<crate::keys::PrivateKey>> {
    let Some(path) = &args.vsa_key else {
        return Ok(None);
    };
    vsa::check_level(&args.vsa_level)?;
    let passphrase = crate::keys::read_passphrase(args.vsa_passphrase.as_deref())?;
    Ok(Some(crate::keys::load_private_key(
        path,
        passphrase.as_deref(),
    )?))
}

/// Envelope bytes with the name messages give them.
type NamedEnvelope = (String, Vec<u8>);

/// The envelopes attached to the image (named `IMAGE@<envelope digest>`) and the image's
/// manifest digest.
fn attached_envelopes(source: &ImageSource<'_>) -> anyhow::Result<(String, Vec<NamedEnvelope>)> {
    let image = crate::registry::ImageRef::parse(source.image)?;
    let mut envelopes = Vec::new();
    let discovered = crate::registry::discover(&image, source.registry, false, |_, found| {
        envelopes.push((
            format!("{}@{}", image.text, found.envelope_digest),
            found.envelope,
        ));
        Ok(())
    })
    .map_err(|error| {
        super::attach::as_registry_failure(
            error,
            &format!("{}: cannot fetch the attestations", image.text),
        )
    })?;
    Ok((discovered.identity.subject.digest, envelopes))
}

/// The artifact as VSA subjects: the file's name, the image's repository, else each `-s` digest.
fn artifact_subjects(
    args: &PolicyArgs,
    image: Option<&ImageSource<'_>>,
    artifacts: &[Digest],
) -> Vec<ResourceDescriptor> {
    artifacts
        .iter()
        .map(|digest| {
            let hex = hex::encode(digest);
            let fallback = || match image {
                Some(source) if args.subjects.is_empty() => source.image.to_owned(),
                _ => format!("sha256:{hex}"),
            };
            let name = args.artifactfile.as_ref().map_or_else(fallback, |path| {
                path.file_name().map_or_else(
                    || path.display().to_string(),
                    |name| name.to_string_lossy().into_owned(),
                )
            });
            ResourceDescriptor::named(name, sha256_set(hex.clone()))
        })
        .collect()
}

/// With TSA trust: a signature by a key of the policy carries a timestamp that verifies, and it
/// was made before the policy expired. Returns the first such timestamp.
fn timestamped_within(
    bytes: &[u8],
    policy: &Policy,
    trust: &Trust,
) -> anyhow::Result<crate::timestamp::Verified> {
    let envelope = dsse::parse(bytes)?;
    let mut refused = Vec::new();
    for key in policy.keys.values() {
        let Ok((_, signature)) =
            dsse::verify_signature(&[dsse::IN_TOTO_PAYLOAD_TYPE], &envelope, key)
        else {
            continue;
        };
        let signed = signature.bytes().unwrap_or_default();
        for token in &signature.timestamp_tokens() {
            match crate::timestamp::verify(token, &signed, trust) {
                Ok(timestamp) if chrono::DateTime::<Utc>::from(timestamp.at) <= policy.expires => {
                    return Ok(timestamp)
                }
                Ok(timestamp) => refused.push(format!(
                    "timestamped {}, after the policy expired ({})",
                    timestamp.time,
                    policy.expires.to_rfc3339()
                )),
                Err(error) => refused.push(error.to_string()),
            }
        }
    }
    anyhow::ensure!(
        !refused.is_empty(),
        "no RFC 3161 timestamp on a policy signer's signature (--tsa-ca/--tsa-cert require one)"
    );
    anyhow::bail!("no trusted timestamp: {}", refused.join("; "))
}

fn load_policy(path: &Path, key: &PublicKey) -> anyhow::Result<(Policy, Vec<u8>)> {
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
    let policy = model::parse(&payload).with_context(|| format!("{name}"))?;
    Ok((policy, payload))
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
