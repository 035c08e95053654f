//! The `product` attestor (v0.3): the Merkle tree over the files the command produced.

use std::time::SystemTime;

use crate::attestors::file_tree::{self, EmptyLeaves};
use crate::attestors::{Attach, Attestation, Attestor, RunContext, Stage, PRODUCT_TYPE_URI};
use crate::observed::{Incomplete, IncompleteReason};
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
/// `known_digests`. A product that cannot be hashed as the version the command left is a gap
/// (`product-unstable`), which `command-run` records.
fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let outcome = run.outcome(ATTESTOR.name)?;
    let started = SystemTime::now();
    let hashed = products::hash_files(
        &outcome.products,
        &run.known_digests.borrow(),
        &outcome.product_stamps,
        &run.working_dir,
    )?;
    run.late_gaps
        .borrow_mut()
        .extend(hashed.unstable.into_iter().map(|(path, why)| Incomplete {
            reason: IncompleteReason::ProductUnstable,
            detail: format!("{path}: {why}; it is not among the products"),
        }));
    Ok(vec![attest(&hashed.digests, started, SystemTime::now())?])
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
