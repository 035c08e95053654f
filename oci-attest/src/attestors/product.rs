//! The `product` attestor (v0.3): the Merkle tree over the files the command produced.

use std::time::SystemTime;

use crate::attestors::file_tree::{self, EmptyLeaves, FileDigest};
use crate::attestors::{Attestation, PRODUCT_TYPE_URI};

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
