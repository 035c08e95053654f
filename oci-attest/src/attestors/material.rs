//! The `material` attestor (v0.3): the Merkle tree over the files present before the command.

use std::time::SystemTime;

use crate::attestors::file_tree::{self, EmptyLeaves, FileDigest};
use crate::attestors::{Attestation, MATERIAL_TYPE_URI};

/// Subject `tree:materials`; `leaves` is always written, empty or not.
pub fn attest(
    materials: &[FileDigest],
    started: SystemTime,
    ended: SystemTime,
) -> anyhow::Result<Attestation> {
    file_tree::attestation(
        MATERIAL_TYPE_URI,
        "materials",
        materials,
        EmptyLeaves::Write,
        started,
        ended,
    )
}
