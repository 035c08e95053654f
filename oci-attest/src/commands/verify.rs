//! `oci-attest verify --key PUB.pem ENVELOPE [--image PATH]`: checks the envelope's signature
//! and keyid over the payload bytes as stored; with `--image`, re-derives the image facts from
//! the archive and compares them with what the attestation claims.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::attestors;
use crate::certificate::CertFacts;
use crate::commands::{plural, verify_policy};
use crate::digest::DigestSet;
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::inspect;
use crate::keys;
use crate::run_options::{RunOptions, Weakening};

/// Largest envelope read: attestations of even huge images are a few MiB.
const MAX_ENVELOPE_BYTES: u64 = 256 << 20;

/// The statement and collection types oci-attest writes (and witness/cilock read).
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
const COLLECTION_TYPE: &str = "https://aflock.ai/attestation-collection/v0.1";
/// The Statement v1 predicates oci-attest writes beside the collection.
const STATEMENT_V1_PREDICATES: [&str; 2] = [
    crate::attest::slsa::PROVENANCE_TYPE,
    crate::verify::vsa::VSA_TYPE,
];

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("evidence").args(["attestations", "image_ref"]).multiple(true)))]
#[command(group(
    clap::ArgGroup::new("target")
        .args(["artifactfile", "subjects", "image_ref"])
        .multiple(true)
))]
#[command(
    after_help = "Examples:\n  oci-attest verify --key key.pem.pub att.json\n  \
                        oci-attest verify --key key.pem.pub att.json --image image.tar\n  \
                        oci-attest verify -p policy.signed.json -k policy-key.pem.pub \
                        -a att.json --artifactfile image.tar\n  \
                        oci-attest verify -p policy.signed.json -k policy-key.pem.pub \
                        --image-ref reg.example/app:1\n  \
                        oci-attest verify -k key.pem.pub --image-ref reg.example/app:1 --json\n\n\
                        Exit codes: 0 verified; 7 signature, statement, run or image does not \
                        pass; 1 unreadable input; 4 unusable key."
)]
pub struct Args {
    /// Public key (PEM) the envelope must be signed with; with -p, the key of the policy
    /// (`--publickey` as in witness).
    #[arg(short = 'k', long, visible_alias = "publickey", value_name = "PUB.pem")]
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
    /// Accept an attestation whose command exited non-zero.
    #[arg(long)]
    pub allow_failed_command: bool,
    /// Accept an attestation of a run that was not traced (`--trace off`, no eBPF).
    #[arg(long)]
    pub allow_untraced: bool,
    /// Accept an attestation whose trace lost events or is otherwise incomplete.
    #[arg(long)]
    pub allow_incomplete_trace: bool,
    /// Accept an attestation whose command ran as root (`run --run-as root`), or that does not
    /// say whom it ran as: such a command could have read the key and forged the attestation.
    #[arg(long)]
    pub allow_root_command: bool,
    /// Accept an attestation whose command's user could read the signing key
    /// (`run --allow-readable-key`).
    #[arg(long)]
    pub allow_readable_key: bool,
    /// Print the result as one JSON object on stdout (`docs/json.md`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub policy: verify_policy::PolicyArgs,
    #[command(flatten)]
    pub timestamps: crate::timestamp::TrustArgs,
    /// Verify the attestations attached to this image in its registry instead of a file
    /// (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:…); with -p, check the policy against them
    /// (and any -a files), the image's manifest digest being the artifact unless -f/-s say.
    #[arg(long, value_name = "IMAGE-REF", conflicts_with = "image")]
    pub image_ref: Option<String>,
    #[command(flatten)]
    pub registry: crate::registry::RegistryArgs,
}

/// What `verify` found, printed as text or (`--json`) as one object; `docs/json.md`
/// describes the object.
#[derive(Debug, Default, Serialize)]
struct Report {
    envelope: String,
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statement: Option<StatementFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<RunFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<Comparison>,
    /// RFC 3161 timestamps of the signature that verified under `--tsa-ca`/`--tsa-cert`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timestamps: Vec<crate::timestamp::Verified>,
    /// Timestamps present but not checked (no TSA trust given).
    #[serde(rename = "uncheckedTimestamps", skip_serializing_if = "is_zero")]
    unchecked_timestamps: usize,
    problems: Vec<String>,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// The key that verified the envelope, and the certificate the signer recorded with it.
#[derive(Debug, Serialize)]
struct SignatureFacts {
    algorithm: String,
    keyid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<CertFacts>,
}

/// The facts of a signature's `certificate` field (base64 of the leaf's PEM).
fn recorded_certificate(
    encoded: &str,
    intermediates: usize,
    key: &keys::PublicKey,
) -> anyhow::Result<CertFacts> {
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .context("not base64")?;
    CertFacts::of(&pem, intermediates, key)
}

/// The signed statement's header.
#[derive(Debug, Serialize)]
struct StatementFacts {
    #[serde(rename = "predicateType")]
    predicate_type: Value,
    step: String,
    /// Subject name → digest set, as signed.
    subjects: BTreeMap<String, DigestSet>,
}

/// What the attestation says about the wrapped command (its command-run predicate).
#[derive(Debug, Serialize)]
pub(super) struct RunFacts {
    exitcode: Option<i64>,
    trace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    lost: u64,
    incomplete: Vec<String>,
    /// `identity` of the command-run predicate (null when the attestor did not record it).
    identity: Value,
    /// The options that weakened the run, from the signed options record; `None` when the
    /// attestation has none (another tool, an older oci-attest).
    weakening: Option<Vec<Weakening>>,
}

impl Report {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        if crate::logging::quiet() {
            return Ok(());
        }
        if let Some(signature) = &self.signature {
            println!(
                "signature: ok ({} key {})",
                signature.algorithm, signature.keyid
            );
            if let Some(certificate) = &signature.certificate {
                println!(
                    "certificate: {} (issuer {}, valid {} to {}, {} {})",
                    certificate.subject,
                    certificate.issuer,
                    certificate.not_before,
                    certificate.not_after,
                    certificate.intermediates,
                    plural(certificate.intermediates, "intermediate", "intermediates")
                );
            }
        }
        for timestamp in &self.timestamps {
            println!(
                "timestamp: {} (TSA {}, policy {})",
                timestamp.time, timestamp.tsa, timestamp.policy
            );
        }
        if self.unchecked_timestamps > 0 {
            println!(
                "timestamp: {} present, not checked (give --tsa-ca or --tsa-cert)",
                self.unchecked_timestamps
            );
        }
        if let Some(statement) = &self.statement {
            let count = statement.subjects.len();
            println!(
                "statement: step {:?}, {count} {}",
                statement.step,
                plural(count, "subject", "subjects")
            );
        }
        if let Some(run) = &self.run {
            let exit = run
                .exitcode
                .map_or_else(|| "unknown".to_owned(), |code| code.to_string());
            let trace = match &run.reason {
                Some(reason) => format!("{} ({reason})", run.trace),
                None => run.trace.clone(),
            };
            let completeness = if run.lost == 0 && run.incomplete.is_empty() {
                "complete".to_owned()
            } else {
                let mut reasons = run.incomplete.clone();
                if run.lost > 0 {
                    reasons.insert(0, format!("{} events lost", run.lost));
                }
                format!("INCOMPLETE ({})", reasons.join(", "))
            };
            println!("run: command exit code {exit}, trace {trace}, {completeness}");
            println!("run: {}", describe_identity(&run.identity));
            match &run.weakening {
                None => println!("options: not recorded (no signed options record)"),
                Some(weakening) if weakening.is_empty() => {
                    println!("options: defaults for tracing, products and secrets");
                }
                Some(weakening) => {
                    println!("options that weakened the run:");
                    for entry in weakening {
                        println!(
                            "  {} = {} from {}: {}",
                            entry.option,
                            entry.value,
                            entry.source.describe(),
                            entry.why
                        );
                    }
                }
            }
        }
        if let Some(image) = &self.image {
            for line in image.lines() {
                println!("  {line}");
            }
        }
        for problem in &self.problems {
            println!("FAILED: {problem}");
        }
        Ok(())
    }
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let trust = args
        .timestamps
        .load()
        .map_err(|error| failure(FailureKind::Key, format!("{error:#}")))?;
    if let Some(policy) = &args.policy.policy {
        let image = args
            .image_ref
            .as_deref()
            .map(|image| verify_policy::ImageSource {
                image,
                registry: &args.registry,
            });
        return verify_policy::execute(
            &args.key,
            policy,
            &args.policy,
            image,
            trust.as_ref(),
            args.json,
        );
    }
    if let Some(image_ref) = &args.image_ref {
        let key = keys::load_public_key(&args.key)?;
        return super::verify_image_ref::execute(
            &key,
            image_ref,
            &args.registry,
            &Allowances::of(&args),
            args.json,
        );
    }
    // clap requires ENVELOPE when neither -p nor --image-ref is given.
    let envelope = args
        .envelope
        .as_deref()
        .context("verify needs an ENVELOPE, -p POLICY or --image-ref IMAGE-REF")?;
    let key = keys::load_public_key(&args.key)?;
    let envelope_path = envelope.display().to_string();
    let bytes = read_envelope(envelope)?;
    let mut report = Report {
        envelope: envelope_path.clone(),
        ..Report::default()
    };
    let outcome = check(&args, &key, trust.as_ref(), bytes, &mut report);
    report.verified = outcome.is_ok() && report.problems.is_empty();
    report.print(args.json)?;
    outcome?;
    if !report.problems.is_empty() {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!("{envelope_path}: {}", report.problems.join("; ")),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the envelope: a regular file of bounded size (a FIFO or a device is refused before it
/// is opened, so it can neither block nor stream forever).
fn read_envelope(path: &Path) -> anyhow::Result<Vec<u8>> {
    let display = path.display();
    let metadata = std::fs::metadata(path).with_context(|| format!("{display}: cannot read"))?;
    if !metadata.is_file() {
        anyhow::bail!("{display}: not a regular file");
    }
    if metadata.len() > MAX_ENVELOPE_BYTES {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!(
                "{display}: {} bytes is too large for an envelope",
                metadata.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_ENVELOPE_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("{display}: cannot read"))?;
    if bytes.len() as u64 > MAX_ENVELOPE_BYTES {
        return Err(failure(
            FailureKind::VerificationFailed,
            format!("{display}: too large for an envelope"),
        ));
    }
    Ok(bytes)
}

/// Fills `report`; an `Err` is a failure that stops the checks (bad signature, unreadable
/// statement), `report.problems` the ones found while reading a good statement.
fn check(
    args: &Args,
    key: &keys::PublicKey,
    trust: Option<&crate::timestamp::Trust>,
    bytes: Vec<u8>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let envelope_path = report.envelope.clone();
    let unsigned = is_unsigned_statement(&bytes);
    let verified = dsse::OpenedEnvelope::open(bytes).and_then(|envelope| {
        let signature = envelope.verify(&[dsse::IN_TOTO_PAYLOAD_TYPE], key)?.clone();
        Ok((envelope.into_payload(), signature))
    });
    let (payload, signature) = match verified {
        Ok(verified) => verified,
        Err(error) => {
            let message = if unsigned {
                "this is an unsigned in-toto statement (written with --unsigned): it carries no \
                 signature, so nothing in it is verified"
                    .to_owned()
            } else {
                error.to_string()
            };
            report.problems.push(message.clone());
            return Err(failure(
                FailureKind::VerificationFailed,
                format!("{envelope_path}: {message}"),
            ));
        }
    };
    let certificate = match signature.certificate.as_deref() {
        None => None,
        Some(encoded) => match recorded_certificate(encoded, signature.intermediates.len(), key) {
            Ok(facts) => {
                if !facts.certifies_key {
                    report.problems.push(
                        "the certificate recorded with the signature is for another key".to_owned(),
                    );
                }
                Some(facts)
            }
            Err(error) => {
                report.problems.push(format!(
                    "the certificate recorded with the signature cannot be read: {error:#}"
                ));
                None
            }
        },
    };
    report.signature = Some(SignatureFacts {
        algorithm: key.algorithm().to_string(),
        keyid: key.keyid(),
        certificate,
    });
    check_timestamps(&signature, trust, report);
    let statement = slim_statement(&payload).map_err(|error| {
        failure(
            FailureKind::VerificationFailed,
            format!("{envelope_path}: the signed payload is not a readable statement: {error}"),
        )
    })?;
    drop(payload);
    if statement["_type"] == crate::attest::statement::STATEMENT_V1_TYPE {
        // Provenance and VSAs (Statement v1) carry no collection: their signature, timestamps
        // and subjects are what `verify` checks.
        let predicate_type = statement["predicateType"].as_str().unwrap_or_default();
        if !STATEMENT_V1_PREDICATES.contains(&predicate_type) {
            report.problems.push(format!(
                "predicateType {predicate_type:?} is not one oci-attest writes"
            ));
        }
        if args.image.is_some() {
            report.problems.push(format!(
                "--image compares a collection's image facts; this is a {predicate_type} statement"
            ));
        }
        report.statement = Some(StatementFacts {
            predicate_type: statement["predicateType"].clone(),
            step: String::new(),
            subjects: statement_subjects(&statement),
        });
        return Ok(());
    }
    for (field, expected) in [
        ("_type", STATEMENT_TYPE),
        ("predicateType", COLLECTION_TYPE),
    ] {
        if statement[field] != expected {
            report.problems.push(format!(
                "{field} is {}, expected {expected:?}",
                statement[field]
            ));
        }
    }
    let subjects = statement_subjects(&statement);
    report.statement = Some(StatementFacts {
        predicate_type: statement["predicateType"].clone(),
        step: statement["predicate"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        subjects: subjects.clone(),
    });
    report.run = run_facts(&statement);
    if let Some(run) = &report.run {
        judge_run(&Allowances::of(args), run, &mut report.problems);
    }
    let Some(image) = &args.image else {
        return Ok(());
    };
    let options = inspect::Options {
        progress: crate::progress::archive_bar(),
        ..inspect::Options::default()
    };
    let analysis = match inspect::analyze(image, &options) {
        Ok(analysis) => analysis,
        Err(error) => {
            report.problems.push(format!("image: {error}"));
            return Err(failure(
                FailureKind::VerificationFailed,
                format!("{}: the image does not verify: {error}", image.display()),
            ));
        }
    };
    let now = std::time::SystemTime::now();
    let derived = attestors::oci::attest(&analysis, now, now);
    let mut comparison = compare(&statement, &subjects, &derived);
    comparison.path = image.display().to_string();
    let mismatches = comparison.mismatches();
    if mismatches > 0 {
        report.problems.push(format!(
            "{mismatches} of the attested image facts do not match {}",
            image.display()
        ));
    }
    report.image = Some(comparison);
    Ok(())
}

/// With TSA trust, at least one timestamp of the verified signature must verify (each is
/// reported); without it, timestamps are only counted.
fn check_timestamps(
    signature: &dsse::Signature,
    trust: Option<&crate::timestamp::Trust>,
    report: &mut Report,
) {
    let tokens = signature.timestamp_tokens();
    let Some(trust) = trust else {
        report.unchecked_timestamps = tokens.len();
        return;
    };
    let signed = signature.bytes().unwrap_or_default();
    let mut refused = Vec::new();
    for token in &tokens {
        match crate::timestamp::verify(token, &signed, trust) {
            Ok(timestamp) => report.timestamps.push(timestamp),
            Err(error) => refused.push(error.to_string()),
        }
    }
    if report.timestamps.is_empty() {
        report.problems.push(if refused.is_empty() {
            "the signature carries no RFC 3161 timestamp (--tsa-ca/--tsa-cert require one)"
                .to_owned()
        } else {
            format!("no timestamp verifies: {}", refused.join("; "))
        });
    }
}

/// Whether `bytes` is an in-toto statement rather than an envelope (read without building a
/// JSON tree: an envelope may be hundreds of MB).
fn is_unsigned_statement(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "_type")]
        statement_type: Option<serde::de::IgnoredAny>,
        payload: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .is_ok_and(|probe| probe.statement_type.is_some() && probe.payload.is_none())
}

/// The statement with only the predicates `verify` reads (command-run, oci) parsed; the others
/// (file trees, environment: most of a large statement) are `null`. A repeated object key
/// anywhere is an error (`crate::strict_json`).
fn slim_statement(payload: &[u8]) -> anyhow::Result<Value> {
    #[derive(serde::Deserialize)]
    struct Statement<'a> {
        #[serde(rename = "_type", default)]
        statement_type: Value,
        #[serde(default)]
        subject: Value,
        #[serde(rename = "predicateType", default)]
        predicate_type: Value,
        #[serde(borrow)]
        predicate: Option<Collection<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Collection<'a> {
        #[serde(default)]
        name: Value,
        #[serde(borrow, default)]
        attestations: Option<Vec<Entry<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        #[serde(rename = "type", default)]
        type_uri: Value,
        #[serde(borrow)]
        attestation: Option<&'a serde_json::value::RawValue>,
    }
    let statement: Statement = crate::strict_json::from_slice(payload)?;
    let predicate = match statement.predicate {
        None => Value::Null,
        Some(collection) => {
            let attestations = match collection.attestations {
                None => Value::Null,
                Some(entries) => entries
                    .into_iter()
                    .map(|entry| {
                        let read = [attestors::COMMAND_RUN_TYPE_URI, attestors::oci::TYPE_URI]
                            .iter()
                            .any(|type_uri| entry.type_uri == *type_uri);
                        let attestation = match entry.attestation {
                            Some(raw) if read => serde_json::from_str(raw.get())?,
                            _ => Value::Null,
                        };
                        Ok(serde_json::json!({"type": entry.type_uri, "attestation": attestation}))
                    })
                    .collect::<serde_json::Result<Vec<Value>>>()?
                    .into(),
            };
            serde_json::json!({"name": collection.name, "attestations": attestations})
        }
    };
    Ok(serde_json::json!({
        "_type": statement.statement_type,
        "subject": statement.subject,
        "predicateType": statement.predicate_type,
        "predicate": predicate,
    }))
}

/// The facts of the command-run predicate, if the collection has one.
pub(super) fn run_facts(statement: &Value) -> Option<RunFacts> {
    let command_run = statement["predicate"]["attestations"]
        .as_array()?
        .iter()
        .find(|attestation| attestation["type"] == attestors::COMMAND_RUN_TYPE_URI)?;
    let predicate = &command_run["attestation"];
    let summary = &predicate["summary"];
    // Recomputed from the signed settings rather than read from `weakening`, so the judgement is
    // this verifier's.
    let weakening = serde_json::from_value::<RunOptions>(predicate["options"].clone())
        .ok()
        .map(|options| options.weakening(crate::trace::DEFAULT_RING_BUFFER_BYTES));
    Some(RunFacts {
        weakening,
        exitcode: predicate["exitcode"].as_i64(),
        trace: summary["trace"].as_str().unwrap_or("unknown").to_owned(),
        reason: summary["reason"].as_str().map(str::to_owned),
        lost: summary["lost"].as_u64().unwrap_or(0),
        incomplete: summary["incomplete"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|reason| match reason.as_str() {
                Some(text) => text.to_owned(),
                None => reason.to_string(),
            })
            .collect(),
        identity: predicate["identity"].clone(),
    })
}

/// `command ran as alice (uid 1000, gid 1000, groups 1000,27), no_new_privs`.
fn describe_identity(identity: &Value) -> String {
    if identity.is_null() {
        return "the attestation does not say whom the command ran as".to_owned();
    }
    let groups: Vec<String> = identity["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    let mut text = format!(
        "command ran as {}{} (uid {}, gid {}, groups {})",
        if identity["root"] == true {
            "ROOT "
        } else {
            ""
        },
        identity["user"].as_str().unwrap_or("?"),
        identity["uid"],
        identity["gid"],
        groups.join(",")
    );
    text.push_str(if identity["nonewprivs"] == true {
        ", no_new_privs"
    } else {
        ", new privileges allowed"
    });
    if identity["keyreadable"] == true {
        text.push_str(", the signing key was readable by it");
    }
    text
}

/// The `--allow-*` flags: which runs a pipeline accepts besides complete, traced, successful
/// ones. The same for an envelope file and for attestations read from a registry.
pub(super) struct Allowances {
    failed_command: bool,
    untraced: bool,
    incomplete_trace: bool,
    root_command: bool,
    readable_key: bool,
}

impl Allowances {
    fn of(args: &Args) -> Self {
        Allowances {
            failed_command: args.allow_failed_command,
            untraced: args.allow_untraced,
            incomplete_trace: args.allow_incomplete_trace,
            root_command: args.allow_root_command,
            readable_key: args.allow_readable_key,
        }
    }
}

/// A signed attestation of a failed, untraced or incompletely traced run is not what a
/// pipeline should accept by default.
pub(super) fn judge_run(allow: &Allowances, run: &RunFacts, problems: &mut Vec<String>) {
    if run.exitcode != Some(0) && !allow.failed_command {
        problems.push(format!(
            "the command failed (exit code {}); pass --allow-failed-command to accept it",
            run.exitcode
                .map_or_else(|| "unknown".to_owned(), |code| code.to_string())
        ));
    }
    if run.trace != "ebpf" && !allow.untraced {
        problems.push(format!(
            "the run was not traced (trace {}); pass --allow-untraced to accept it",
            run.trace
        ));
    }
    // A missing `root` field proves nothing either way: treated as root.
    let root = run.identity["root"] != false;
    if root && !allow.root_command {
        problems.push(format!(
            "{}: it could have read the signing key and forged this attestation; pass \
             --allow-root-command to accept it",
            if run.identity.is_null() {
                "the attestation does not say whom the command ran as".to_owned()
            } else {
                "the command ran as root".to_owned()
            }
        ));
    }
    if !root && run.identity["keyreadable"] != false && !allow.readable_key {
        problems.push(
            "the command's user could read the signing key (run --allow-readable-key): it could \
             have forged this attestation; pass --allow-readable-key to accept it"
                .to_owned(),
        );
    }
    if (run.lost > 0 || !run.incomplete.is_empty()) && !allow.incomplete_trace {
        problems
            .push("the trace is incomplete; pass --allow-incomplete-trace to accept it".to_owned());
    }
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

/// The image archive compared with the attestation: each re-derived fact and each subject.
#[derive(Debug, Default, Serialize)]
struct Comparison {
    path: String,
    matches: bool,
    /// `false` when the collection holds no oci attestation at all.
    attested: bool,
    fields: Vec<FieldCheck>,
    subjects: Vec<SubjectCheck>,
}

/// One fact of the oci predicate: as signed, and as the archive gives it.
#[derive(Debug, Serialize)]
struct FieldCheck {
    field: String,
    matches: bool,
    attested: Value,
    image: Value,
}

/// One subject the archive gives, and whether the statement signs it.
#[derive(Debug, Serialize)]
struct SubjectCheck {
    name: String,
    status: SubjectStatus,
    image: DigestSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed: Option<DigestSet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum SubjectStatus {
    Signed,
    Mismatch,
    Missing,
}

impl Comparison {
    fn check(&mut self, what: &str, attested: &Value, derived: &Value) {
        self.fields.push(FieldCheck {
            field: what.to_owned(),
            matches: attested == derived,
            attested: attested.clone(),
            image: derived.clone(),
        });
    }

    fn mismatches(&self) -> usize {
        usize::from(!self.attested)
            + self.fields.iter().filter(|field| !field.matches).count()
            + self
                .subjects
                .iter()
                .filter(|subject| subject.status != SubjectStatus::Signed)
                .count()
    }

    /// The comparison as text lines, one per fact.
    fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!("image {}:", self.path)];
        if !self.attested {
            lines.push("the attestation holds no oci attestation to compare with".to_owned());
        }
        for field in &self.fields {
            let name = label(&field.field);
            lines.push(if field.matches {
                format!("{name:<16} ok        {}", compact(&field.image))
            } else {
                format!(
                    "{name:<16} MISMATCH  attested {}, image {}",
                    compact(&field.attested),
                    compact(&field.image)
                )
            });
        }
        for subject in &self.subjects {
            match subject.status {
                SubjectStatus::Signed => {}
                SubjectStatus::Mismatch => lines.push(format!(
                    "subject {}: MISMATCH  signed {:?}, image {:?}",
                    subject.name, subject.signed, subject.image
                )),
                SubjectStatus::Missing => lines.push(format!(
                    "subject {}: MISSING from the signed subjects",
                    subject.name
                )),
            }
        }
        if self.matches {
            let count = self.subjects.len();
            lines.push(format!(
                "all {count} image {} signed",
                plural(count, "subject is", "subjects are")
            ));
        }
        lines
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

/// Labels for the fields whose predicate key reads badly; every other field is shown by its key.
fn label(key: &str) -> &str {
    match key {
        "imagetags" => "tags",
        other => other,
    }
}

/// Compares the re-derived facts with the attested oci predicate describing the same archive
/// (the one sharing most fields with it), then checks every re-derived subject is signed.
fn compare(
    statement: &Value,
    subjects: &BTreeMap<String, DigestSet>,
    derived: &attestors::Attestation,
) -> Comparison {
    let mut comparison = Comparison::default();
    let candidates = oci_predicates(statement);
    // Every field the archive lets us derive again is compared, none is skipped.
    let fields: Vec<&str> = derived
        .predicate
        .as_object()
        .map(|fields| fields.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let agreement = |attested: &&&Value| {
        fields
            .iter()
            .filter(|key| attested[**key] == derived.predicate[**key])
            .count()
    };
    if let Some(attested) = candidates.iter().max_by_key(agreement) {
        comparison.attested = true;
        for key in &fields {
            comparison.check(key, &attested[*key], &derived.predicate[*key]);
        }
    }
    for (key, digest) in &derived.subjects {
        let signed = subjects.get(&format!("{}/{key}", derived.type_uri));
        let status = match signed {
            Some(signed) if signed == digest => SubjectStatus::Signed,
            Some(_) => SubjectStatus::Mismatch,
            None => SubjectStatus::Missing,
        };
        comparison.subjects.push(SubjectCheck {
            name: key.clone(),
            status,
            image: digest.clone(),
            signed: signed.cloned(),
        });
    }
    comparison.matches = comparison.mismatches() == 0;
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
        assert_eq!(result.mismatches(), 0, "{:?}", result.lines());
        assert!(result.matches);

        let mut other_tags = good.clone();
        other_tags["imagetags"] = json!(["b:2"]);
        other_tags["diffids"] = json!([{"sha256": "d2"}]);
        let unrelated = json!({"tardigest": {"sha256": "zz"}});
        let tampered = statement(&[unrelated, other_tags], &[("imageid:i1", "i1")]);
        let result = compare(&tampered, &statement_subjects(&tampered), &derived());
        assert_eq!(result.mismatches(), 3, "{:?}", result.lines());
        let failed: Vec<&str> = result
            .fields
            .iter()
            .filter(|field| !field.matches)
            .map(|field| field.field.as_str())
            .collect();
        assert_eq!(failed, ["diffids", "imagetags"]);
        let lines = result.lines();
        assert!(lines
            .iter()
            .any(|line| line.starts_with("tags") && line.contains("MISMATCH")));
        assert!(lines
            .iter()
            .any(|line| line.contains("tardigest:t1: MISSING")));
        let missing = &result.subjects[1];
        assert_eq!(
            (missing.name.as_str(), missing.status),
            ("tardigest:t1", SubjectStatus::Missing)
        );

        let empty = statement(&[], &[]);
        let nothing = compare(&empty, &BTreeMap::new(), &derived());
        assert!(!nothing.attested);
        assert_eq!(nothing.mismatches(), 3);
    }
}
