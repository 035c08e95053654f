//! The `material` attestor (v0.3): the Merkle tree over the files present before the command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::attestors::file_tree::{self, EmptyLeaves};
use crate::attestors::{Attach, Attestation, Attestor, RunContext, Stage, MATERIAL_TYPE_URI};
use crate::products::{self, FileDigest};

pub const ATTESTOR: Attestor = Attestor {
    name: "material",
    predicate_type: MATERIAL_TYPE_URI,
    aliases: &["https://witness.dev/attestations/material/v0.1"],
    stage: Stage::Material,
    attach: Attach::Always,
    summary: "files the command could read: Merkle tree of their digests",
    fields: &[],
    attest: from_run,
};

fn from_run(run: &RunContext) -> anyhow::Result<Vec<Attestation>> {
    let started = SystemTime::now();
    let paths: Vec<PathBuf> = run.before.paths().map(Path::to_path_buf).collect();
    // Materials are what was there before the command; one that keeps changing is left out
    // (the comparison after the command names it if the change goes on).
    let materials =
        products::hash_files(&paths, &HashMap::new(), &HashMap::new(), &run.working_dir)?.digests;
    run.material_digests.borrow_mut().extend(
        materials
            .iter()
            .map(|file| (run.working_dir.join(&file.path), file.sha256.clone())),
    );
    Ok(vec![attest(&materials, started, SystemTime::now())?])
}

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
