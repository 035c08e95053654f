//! `oci-attest doctor`. STUB.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn execute(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`doctor` is not implemented yet")
}
