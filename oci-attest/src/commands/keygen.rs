//! `oci-attest keygen`: a fresh signing key, written as PKCS#8 (mode 0600; encrypted with
//! `--passphrase-file`, as cosign encrypts its keys) with its public key next to it
//! (`KEY.pem.pub`). Existing files are never overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::exit::{failure, FailureKind};
use crate::keys::{self, Algorithm, PrivateKey};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  oci-attest keygen --out key.pem\n  \
    oci-attest keygen --algorithm ecdsa-p256 --out key.pem --passphrase-file pass.txt")]
pub struct Args {
    /// Signature algorithm of the new key.
    #[arg(long, value_enum, default_value = "ed25519")]
    pub algorithm: Algorithm,
    /// Where to write the private key; the public key goes to `<OUT>.pub`.
    #[arg(long, value_name = "KEY.pem")]
    pub out: PathBuf,
    /// Encrypt the private key with the passphrase in this file (one trailing newline is
    /// dropped); `run` and `sign` read it with --signer-file-key-passphrase-path.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn create_new(path: &Path, mode: u32, content: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            if path.exists() {
                format!("{}: already exists; not overwriting a key", path.display())
            } else {
                format!("{}: cannot create", path.display())
            }
        })?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let public_out = public_path(&args.out);
    for path in [&args.out, &public_out] {
        if path.exists() {
            return Err(failure(
                FailureKind::Key,
                format!("{}: already exists; not overwriting a key", path.display()),
            ));
        }
    }
    let passphrase = match &args.passphrase_file {
        Some(path) => keys::read_passphrase(Some(path))?,
        None => None,
    };
    let key = PrivateKey::generate(args.algorithm)?;
    let private_pem = match &passphrase {
        Some(passphrase) => key
            .to_encrypted_pkcs8_pem(passphrase)
            .map_err(|error| failure(FailureKind::Key, format!("{error:#}")))?,
        None => key.to_pkcs8_pem()?,
    };
    create_new(&args.out, 0o600, private_pem.as_bytes())?;
    if let Err(error) = create_new(&public_out, 0o644, key.public().to_pem().as_bytes()) {
        // Do not leave half a key pair behind.
        let _ = std::fs::remove_file(&args.out);
        return Err(error);
    }
    if crate::logging::quiet() {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "wrote {} ({}{}) and {}; keyid {}",
        args.out.display(),
        args.algorithm,
        if passphrase.is_some() {
            ", encrypted"
        } else {
            ""
        },
        public_out.display(),
        key.keyid()
    );
    Ok(ExitCode::SUCCESS)
}
