//! `oci-attest inspect`. STUB.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn execute(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`inspect` is not implemented yet")
}
