//! `cargo xtask fixtures [--out DIR]`: the image fixtures, built with the real save tools.

use std::path::PathBuf;

use anyhow::Context as _;
use oci_attest_tests::daemons::{DaemonEnv, Daemons};
use oci_attest_tests::{fixtures, paths, storage};

pub fn run(out: Option<PathBuf>) -> anyhow::Result<()> {
    crate::setup::run()?;
    let out = std::path::absolute(out.unwrap_or_else(paths::default_fixtures_dir))?;
    let fixtures = with_daemons(|daemons| fixtures::ensure_built(&out, daemons))?;
    println!(
        "fixtures: {} archives in {} (index: {})",
        fixtures.index.fixtures.len(),
        fixtures.dir.display(),
        fixtures.dir.join(fixtures::INDEX_FILE).display()
    );
    Ok(())
}

/// Runs `work` against the daemons in the environment (`cargo xtask test` exports them), or
/// against private ones started for the occasion and stopped afterwards.
pub fn with_daemons<T>(work: impl FnOnce(&DaemonEnv) -> anyhow::Result<T>) -> anyhow::Result<T> {
    if let Ok(daemons) = DaemonEnv::from_env() {
        return work(&daemons);
    }
    let dir = tempfile::Builder::new()
        .prefix("oci-attest-daemons-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let mut daemons = Daemons::start(dir.path())?;
    let result = work(&daemons.handles());
    daemons.stop()?;
    storage::remove_tree(dir.path())?;
    result
}
