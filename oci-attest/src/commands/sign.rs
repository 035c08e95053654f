//! `oci-attest sign -k KEY --infile policy.json --outfile policy.signed.json`: wraps a policy
//! in a DSSE envelope (payloadType `https://aflock.ai/policy/v0.1` unless `--datatype` says
//! otherwise), as `witness sign` and `cilock sign` do. The policy is parsed first, so a policy
//! `verify -p` would refuse is never signed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::dsse;
use crate::keys;
use crate::output;
use crate::policy::{self, model};

/// Largest policy read: policies are a few KiB, their Rego modules included.
pub const MAX_POLICY_BYTES: u64 = 16 << 20;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  oci-attest sign -k policy-key.pem --infile policy.json \
                        --outfile policy.signed.json"
)]
pub struct Args {
    /// Private key (PEM) to sign with.
    #[arg(short = 'k', long = "signer-file-key-path", value_name = "KEY.pem")]
    pub key: PathBuf,
    /// File holding the passphrase of an encrypted key (else env OCI_ATTEST_KEY_PASSPHRASE).
    #[arg(long = "signer-file-key-passphrase-path", value_name = "FILE")]
    pub passphrase: Option<PathBuf>,
    #[command(flatten)]
    pub certificate: crate::certificate::CertArgs,
    /// The policy JSON to sign.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub infile: PathBuf,
    /// Where to write the signed policy (written atomically); stdout when absent.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub outfile: Option<PathBuf>,
    /// The envelope's payloadType.
    #[arg(short = 't', long, value_name = "URI", default_value = model::POLICY_PAYLOAD_TYPE,
          value_parser = [model::POLICY_PAYLOAD_TYPE, model::LEGACY_POLICY_PAYLOAD_TYPE])]
    pub datatype: String,
    /// RFC 3161 timestamp servers (comma separated or repeated) that timestamp the signature.
    #[arg(long = "timestamp-servers", value_name = "URL", value_delimiter = ',')]
    pub timestamp_servers: Vec<String>,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let passphrase = keys::read_passphrase(args.passphrase.as_deref())?;
    let key = keys::load_private_key(&args.key, passphrase.as_deref())?;
    let document = policy::read_capped(&args.infile, MAX_POLICY_BYTES)?;
    model::parse(&document).with_context(|| format!("{}: not signing", args.infile.display()))?;
    let chain = args.certificate.load(key.public())?;
    crate::timestamp::check_servers(&args.timestamp_servers)?;
    let stamp = |signature: &[u8]| crate::timestamp::tokens(&args.timestamp_servers, signature);
    let envelope = dsse::sign_with_chain(&args.datatype, &document, &key, chain.as_ref(), &stamp)?;
    // No command's output to mix with here: without -o the envelope goes to stdout as is.
    match args.outfile.as_deref() {
        Some(outfile) => {
            output::Destination::choose(Some(outfile))?.write(&envelope, Path::new("."))?;
        }
        None => std::io::stdout()
            .lock()
            .write_all(&envelope)
            .context("cannot write the envelope to stdout")?,
    }
    tracing::info!(
        "signed {} with {} key {}",
        args.infile.display(),
        key.public().algorithm(),
        key.keyid()
    );
    Ok(ExitCode::SUCCESS)
}
