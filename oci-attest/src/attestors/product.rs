//! The `product` attestor (v0.3): the Merkle tree over the files the command produced.

use std::time::SystemTime;

use crate::attestors::file_tree::{self, EmptyLeaves};
use crate::attestors::{Attach, Attestation, Attestor, RunContext, Stage, PRODUCT_TYPE_URI};
use crate::products::{self, FileDigest};

pub const ATTESTOR: Attestor = Attestor {
    name: "product",
    predicate_type: PRODUCT_TYPE_URI,
    aliases: &["https://witness.dev/attestations/product/v0.1"],
    stage: Stage::Product,
    attach: Attach::Always,
    summary: "files the command produced: Merkle tree of their digests",
    fields: &[],
    attest: from_run,
};

/// Archives the `oci` attestor read are not read again: their digests are in
/// `known_digests`.
fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let outcome = run.outcome(ATTESTOR.name)?;
    let started = SystemTime::now();
    let digests = products::hash_files(
        &outcome.products,
        &run.known_digests.borrow(),
        &run.working_dir,
    )?;
    Ok(vec![attest(&digests, started, SystemTime::now())?])
}

/// Subject `tree:products`; `leaves` is left out when nothing was produced.
pub fn attest(
    products: &[FileDigest],
    started: SystemTime,
    ended: SystemTime,
) -> anyhow::Result<Attestation> {
    file_tree::attestation(
        PRODUCT_TYPE_URI,
        "products",
        products,
        EmptyLeaves::Omit,
        started,
        ended,
    )
}
