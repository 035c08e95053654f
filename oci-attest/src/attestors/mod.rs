//! The attestors: each turns what was observed into one predicate of the collection.

pub mod command_run;
pub mod environment;
pub mod file_tree;
pub mod git;
pub mod material;
pub mod oci;
pub mod product;

use std::time::SystemTime;

use crate::digest::DigestSet;

pub const COMMAND_RUN_TYPE_URI: &str = "https://aflock.ai/attestations/command-run/v0.1";
pub const ENVIRONMENT_TYPE_URI: &str = "https://aflock.ai/attestations/environment/v0.1";
pub const GIT_TYPE_URI: &str = "https://aflock.ai/attestations/git/v0.1";
pub const MATERIAL_TYPE_URI: &str = "https://aflock.ai/attestations/material/v0.3";
pub const PRODUCT_TYPE_URI: &str = "https://aflock.ai/attestations/product/v0.3";

/// One attestor's contribution to the collection.
#[derive(Clone, Debug)]
pub struct Attestation {
    /// Predicate type URI, e.g. `https://aflock.ai/attestations/oci/v0.1`.
    pub type_uri: &'static str,
    /// The predicate, already in wire key order (serde_json with `preserve_order`).
    pub predicate: serde_json::Value,
    /// Subject keys without the type prefix (`imageid:<hex>`), with their digests.
    pub subjects: Vec<(String, DigestSet)>,
    /// Backref keys without the type prefix.
    pub backrefs: Vec<(String, DigestSet)>,
    pub started: SystemTime,
    pub ended: SystemTime,
}
