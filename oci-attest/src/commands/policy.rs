//! `oci-attest policy new | from-attestations | check`: write witness / cilock policies without
//! hand-made base64 (keyids computed, Rego embedded) and validate them without signing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, Utc};

use crate::attestors::ATTESTORS;
use crate::commands::sign::MAX_POLICY_BYTES;
use crate::dsse;
use crate::exit::{failure, FailureKind};
use crate::keys::{self, PublicKey};
use crate::policy::authoring::{self, StepDraft};
use crate::policy::model::{self, RegoModule};
use crate::policy::{self, evidence, rego};

/// Largest attestation read by `from-attestations`, as for `verify`.
const MAX_ENVELOPE_BYTES: u64 = 256 << 20;
/// Largest Rego file embedded.
const MAX_REGO_BYTES: u64 = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Write a policy step: keyids computed from the keys, Rego files embedded.
    #[command(after_help = "Examples:\n  \
        oci-attest policy new --step build --key build-key.pem.pub --rego exit-zero.rego -o policy.json\n  \
        oci-attest policy new --add-to policy.json --step save --key build-key.pem.pub \\\n      \
        --artifacts-from build --rego command-run=traced-save.rego --rego oci=image-tag.rego -o policy.json")]
    New(NewArgs),
    /// Draft a policy from real attestations: one step per step name, the keys that signed them,
    /// the attestation types every run carries, artifactsFrom where a step read another's
    /// products.
    #[command(after_help = "Example:\n  \
        oci-attest policy from-attestations --key build-key.pem.pub build.att.json save.att.json -o policy.json")]
    FromAttestations(FromArgs),
    /// Validate a policy (JSON, or a signed envelope with -k) without signing it: structure,
    /// keys, step links, and every Rego module compiled and evaluated once.
    #[command(after_help = "Examples:\n  oci-attest policy check policy.json\n  \
        oci-attest policy check -k policy-key.pem.pub policy.signed.json")]
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The step's name (the `--step` of the runs it accepts).
    #[arg(long, value_name = "NAME")]
    pub step: String,
    /// Public key (PEM) of a functionary of the step (repeatable).
    #[arg(long = "key", value_name = "PUB.pem", required = true)]
    pub keys: Vec<PathBuf>,
    /// Rego module to embed: `FILE` applies to the command-run attestation, `TYPE=FILE` to the
    /// attestation TYPE (an attestor name such as `oci`, or a predicate type URI). Repeatable.
    #[arg(long, value_name = "[TYPE=]FILE")]
    pub rego: Vec<String>,
    /// Attestation types the step must carry besides those with Rego (attestor name or URI;
    /// repeatable). Default: command-run.
    #[arg(long = "attestation", value_name = "TYPE")]
    pub attestations: Vec<String>,
    /// Value of a `${NAME}` placeholder in the Rego files (repeatable), e.g.
    /// `--param image_tag=registry.example/team/app:1`; a placeholder left unset is an error.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Step whose products this step's materials must match (repeatable).
    #[arg(long, value_name = "STEP")]
    pub artifacts_from: Vec<String>,
    /// When the policy expires: RFC 3339 or YYYY-MM-DD (default: one year from now). With
    /// --add-to, replaces the policy's expiry only when given.
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
    /// Add the step to this existing (unsigned) policy instead of starting a new one.
    #[arg(long, value_name = "POLICY.json")]
    pub add_to: Option<PathBuf>,
    /// Where to write the policy (atomically); stdout when absent.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub outfile: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct FromArgs {
    /// The attestations (DSSE envelopes from `oci-attest run`, witness or cilock).
    #[arg(value_name = "ATT", required = true)]
    pub attestations: Vec<PathBuf>,
    /// Public key (PEM) that may have signed them (repeatable); each attestation must verify
    /// with one of them.
    #[arg(long = "key", value_name = "PUB.pem", required = true)]
    pub keys: Vec<PathBuf>,
    /// When the policy expires: RFC 3339 or YYYY-MM-DD (default: one year from now).
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
    /// Where to write the policy (atomically); stdout when absent.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub outfile: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policy: JSON, or a signed envelope (`oci-attest sign`, witness, cilock).
    #[arg(value_name = "POLICY")]
    pub policy: PathBuf,
    /// The key a signed policy must verify with.
    #[arg(short = 'k', long, value_name = "PUB.pem")]
    pub key: Option<PathBuf>,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::New(args) => new(&args),
        PolicyCommand::FromAttestations(args) => from_attestations(&args),
        PolicyCommand::Check(args) => check(&args),
    }
}

fn new(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let functionaries = load_keys(&args.keys)?;
    let mut attestations: Vec<(String, Vec<RegoModule>)> = Vec::new();
    let mut require = |type_uri: String| -> usize {
        match attestations
            .iter()
            .position(|(known, _)| *known == type_uri)
        {
            Some(index) => index,
            None => {
                attestations.push((type_uri, Vec::new()));
                attestations.len() - 1
            }
        }
    };
    let command_run = crate::attestors::COMMAND_RUN_TYPE_URI.to_owned();
    if args.attestations.is_empty() {
        require(command_run.clone());
    }
    for name in &args.attestations {
        require(attestation_type(name)?);
    }
    let params = args
        .params
        .iter()
        .map(|param| {
            param
                .split_once('=')
                .filter(|(name, _)| is_param_name(name))
                .ok_or_else(|| anyhow::anyhow!("--param {param:?} is not NAME=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut modules: Vec<(usize, RegoModule)> = Vec::new();
    for spec in &args.rego {
        let (type_uri, file) = match spec.split_once('=') {
            Some((name, file)) if is_type(name) => (attestation_type(name)?, file),
            _ => (command_run.clone(), spec.as_str()),
        };
        let index = require(type_uri);
        modules.push((index, rego_module(Path::new(file), &params)?));
    }
    for (index, module) in modules {
        attestations[index].1.push(module);
    }
    let step = StepDraft {
        name: args.step.clone(),
        functionaries,
        attestations,
        artifacts_from: args.artifacts_from.clone(),
    };
    let policy = match &args.add_to {
        Some(existing) => {
            let text = policy::read_capped(existing, MAX_POLICY_BYTES)?;
            let mut policy: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{}: not a policy JSON document", existing.display()))?;
            if let Some(expires) = &args.expires {
                policy["expires"] = serde_json::json!(
                    parse_expiry(expires)?.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
            authoring::add_step(&mut policy, &step)
                .with_context(|| format!("{}", existing.display()))?;
            policy
        }
        None => authoring::document(expiry(args.expires.as_deref())?, &[step])?,
    };
    write(&authoring::finish(&policy)?, args.outfile.as_deref())
}

fn from_attestations(args: &FromArgs) -> anyhow::Result<ExitCode> {
    let keys: BTreeMap<String, PublicKey> = load_keys(&args.keys)?
        .into_iter()
        .map(|key| (key.keyid(), key))
        .collect();
    let mut evidence = Vec::with_capacity(args.attestations.len());
    for path in &args.attestations {
        let source = path.display().to_string();
        let bytes = policy::read_capped(path, MAX_ENVELOPE_BYTES)?;
        let keep = |_: &str, _: &str| false;
        evidence
            .push(evidence::load(&source, bytes, &keys, &keep).with_context(|| source.clone())?);
    }
    let steps = authoring::steps_from_evidence(&evidence, &keys)?;
    for step in &steps {
        eprintln!(
            "step {}: {} key(s), {} attestation type(s){}",
            step.name,
            step.functionaries.len(),
            step.attestations.len(),
            if step.artifacts_from.is_empty() {
                String::new()
            } else {
                format!(", artifactsFrom {}", step.artifacts_from.join(", "))
            }
        );
    }
    let policy = authoring::document(expiry(args.expires.as_deref())?, &steps)?;
    write(&authoring::finish(&policy)?, args.outfile.as_deref())
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let unusable = |message: String| failure(FailureKind::PolicyUnusable, message);
    let name = args.policy.display().to_string();
    let bytes = policy::read_capped(&args.policy, MAX_POLICY_BYTES)?;
    let document = match dsse::parse(&bytes) {
        Ok(envelope) => {
            let Some(key_path) = &args.key else {
                return Err(unusable(format!(
                    "{name}: a signed policy; give -k PUB.pem to check its signature"
                )));
            };
            let key = keys::load_public_key(key_path)?;
            let payload = dsse::verify_as(
                &[
                    model::POLICY_PAYLOAD_TYPE,
                    model::LEGACY_POLICY_PAYLOAD_TYPE,
                ],
                &envelope,
                &key,
            )
            .map_err(|error| unusable(format!("{name}: the signature does not verify: {error}")))?;
            println!("signature: ok ({} key {})", key.algorithm(), key.keyid());
            payload
        }
        Err(_) => bytes,
    };
    let parsed = model::parse(&document).map_err(|error| unusable(format!("{name}: {error:#}")))?;
    let order = parsed
        .dependency_order()
        .map_err(|error| unusable(format!("{name}: {error:#}")))?;
    let mut sandbox = rego::Sandbox::default();
    for step_name in order {
        let step = &parsed.steps[step_name];
        println!(
            "step {step_name}: {} functionar{}, requires {}",
            step.functionaries.len(),
            if step.functionaries.len() == 1 {
                "y"
            } else {
                "ies"
            },
            step.attestations
                .iter()
                .map(|attestation| attestation.type_uri.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for attestation in &step.attestations {
            if attestation.modules.is_empty() {
                continue;
            }
            let what = format!("step {step_name:?}, {}", attestation.type_uri);
            sandbox
                .evaluate(&attestation.modules, "{}", None, &what)
                .map_err(|error| {
                    unusable(format!(
                        "{name}: step {step_name:?}, {}: {error}",
                        attestation.type_uri
                    ))
                })?;
            println!(
                "  {}: {} Rego module(s) compile and evaluate",
                attestation.type_uri,
                attestation.modules.len()
            );
        }
    }
    let expired = Utc::now() > parsed.expires;
    println!(
        "policy: OK, expires {}{}",
        parsed.expires.to_rfc3339(),
        if expired { " (EXPIRED)" } else { "" }
    );
    if expired {
        return Err(unusable(format!(
            "{name}: the policy expired at {}",
            parsed.expires.to_rfc3339()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|path| keys::load_public_key(path))
        .collect()
}

/// Whether `name` names an attestation type (an attestor of the table, one of its aliases, or a
/// URI) rather than being part of a file name.
fn is_type(name: &str) -> bool {
    name.contains("://")
        || ATTESTORS
            .iter()
            .any(|row| row.name == name || row.predicate_type == name)
}

/// The predicate type URI an attestor name or URI stands for.
fn attestation_type(name: &str) -> anyhow::Result<String> {
    if let Some(row) = ATTESTORS.iter().find(|row| row.name == name) {
        return Ok(row.predicate_type.to_owned());
    }
    if name.contains("://") {
        return Ok(name.to_owned());
    }
    let known: Vec<&str> = ATTESTORS.iter().map(|row| row.name).collect();
    bail!(
        "{name:?} is not an attestation type: use an attestor name ({}) or a predicate type URI",
        known.join(", ")
    )
}

fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// `source` with every `${NAME}` replaced by its value, escaped for a Rego (JSON) string
/// literal, which is where the example modules put them; an unset placeholder is an error.
fn substitute(source: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}').filter(|end| is_param_name(&after[..*end])) else {
            out.push_str(&rest[..start + 2]);
            rest = after;
            continue;
        };
        let name = &after[..end];
        let value = params
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                anyhow::anyhow!("placeholder ${{{name}}} is not set: add --param {name}=VALUE")
            })?;
        let quoted = serde_json::to_string(value)?;
        out.push_str(&rest[..start]);
        out.push_str(&quoted[1..quoted.len() - 1]);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A Rego file as a module named after the file, its placeholders filled from `params`.
fn rego_module(path: &Path, params: &[(&str, &str)]) -> anyhow::Result<RegoModule> {
    let bytes = policy::read_capped(path, MAX_REGO_BYTES)?;
    let source = String::from_utf8(bytes)
        .with_context(|| format!("{}: a Rego file must be UTF-8", path.display()))?;
    let source = substitute(&source, params).with_context(|| format!("{}", path.display()))?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(RegoModule { name, source })
}

/// `--expires`, else one year from now.
fn expiry(text: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match text {
        Some(text) => parse_expiry(text),
        None => Ok(Utc::now() + chrono::Duration::days(365)),
    }
}

fn parse_expiry(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        anyhow::anyhow!("--expires {text:?}: not an RFC 3339 time or a YYYY-MM-DD date")
    })?;
    Ok(date
        .and_hms_opt(0, 0, 0)
        .context("midnight exists")?
        .and_utc())
}

fn write(bytes: &[u8], outfile: Option<&Path>) -> anyhow::Result<ExitCode> {
    match outfile {
        Some(path) => crate::output::write_atomically(path, bytes)?,
        None => std::io::stdout()
            .lock()
            .write_all(bytes)
            .context("cannot write the policy to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates_and_types_are_read() {
        assert_eq!(
            parse_expiry("2030-01-02").unwrap().to_rfc3339(),
            "2030-01-02T00:00:00+00:00"
        );
        assert!(parse_expiry("tomorrow").is_err());
        assert_eq!(
            attestation_type("oci").unwrap(),
            "https://aflock.ai/attestations/oci/v0.1"
        );
        assert!(attestation_type("nope").is_err());
        assert!(is_type("command-run") && !is_type("rules/exit") && is_type("https://x/y"));
    }

    #[test]
    fn placeholders_are_filled_escaped_or_refused() {
        let params = [("image_tag", "reg/app:1\"")];
        assert_eq!(
            substitute(r#"t := "${image_tag}" # ${ not a placeholder"#, &params).unwrap(),
            r#"t := "reg/app:1\"" # ${ not a placeholder"#
        );
        assert!(substitute("x := \"${other}\"", &params)
            .unwrap_err()
            .to_string()
            .contains("--param other=VALUE"));
    }
}
