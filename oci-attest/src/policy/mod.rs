//! Policy verification compatible with witness and cilock: the policy document ([`model`]),
//! predicate type aliases ([`predicate_types`]), attestations as evidence ([`evidence`]), Rego
//! evaluation ([`rego`]) and the step and chain checks ([`verification`]); [`authoring`] writes
//! policies (`oci-attest policy`). Semantics and the supported / refused features:
//! `docs/policy.md`.

pub mod authoring;
pub mod evidence;
pub mod model;
pub mod predicate_types;
pub mod rego;
pub mod verification;

use std::io::Read;
use std::path::Path;

use anyhow::{ensure, Context};

/// Reads `path` whole, refusing (before reading) anything larger than `limit` bytes.
pub fn read_capped(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{name}: cannot open"))?;
    let size = file
        .metadata()
        .with_context(|| format!("{name}: cannot read"))?
        .len();
    ensure!(
        size <= limit,
        "{name}: {size} bytes is more than the {} MiB allowed",
        limit >> 20
    );
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` also bounds a file that grows while it is read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{name}: cannot read"))?;
    ensure!(
        bytes.len() as u64 <= limit,
        "{name}: more than the {} MiB allowed",
        limit >> 20
    );
    Ok(bytes)
}
