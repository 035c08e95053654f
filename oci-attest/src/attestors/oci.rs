//! The `oci` attestor: wraps the archive reader's verified facts into an attestation.
//! STUB: filled in by the archive work.

use crate::attestors::Attestation;
use crate::inspect::Analysis;

pub const TYPE_URI: &str = "https://aflock.ai/attestations/oci/v0.1";

/// One attestation per analysed archive.
pub fn attest(_analysis: &Analysis) -> Attestation {
    todo!("oci attestor")
}
