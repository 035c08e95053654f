//! One config file (`.oci-attest.yaml`, `.witness.yaml`, `-c FILE`) read under bounds: at most
//! 1 MiB, and a YAML budget (depth, nodes, anchors, aliases) far above any real config refuses
//! hostile shapes in milliseconds. `crate::config` turns its sections into options. Kept apart
//! from it, outside the tracer build, so the fuzz crate reaches this reader.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::digest::sha256_hex;

/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A config file as read: where, the digest of its bytes, its sections.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub sha256: String,
    pub document: serde_json::Map<String, Value>,
}

/// Reads one config file, bounded in size and in YAML structure.
pub fn read(path: &Path) -> anyhow::Result<ConfigFile> {
    let display = path.display();
    let metadata = std::fs::metadata(path).with_context(|| format!("{display}: cannot read"))?;
    if !metadata.is_file() || metadata.len() > MAX_CONFIG_BYTES {
        anyhow::bail!("{display}: not a regular file of at most {MAX_CONFIG_BYTES} bytes");
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).with_context(|| format!("{display}: cannot read"))?,
            MAX_CONFIG_BYTES + 1,
        ),
        &mut bytes,
    )
    .with_context(|| format!("{display}: cannot read"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        anyhow::bail!("{display}: larger than {MAX_CONFIG_BYTES} bytes");
    }
    let sha256 = sha256_hex(&bytes);
    let text = std::str::from_utf8(&bytes).with_context(|| format!("{display}: not UTF-8"))?;
    let document = parse(text).with_context(|| format!("{display}: not a usable config"))?;
    let path = path
        .canonicalize()
        .with_context(|| format!("{display}: cannot resolve"))?;
    Ok(ConfigFile {
        path,
        sha256,
        document,
    })
}

/// The YAML document as JSON values. The budget is far above any real config (a few dozen
/// keys) and refuses the shapes that make YAML parsers slow or large: deep nesting, node and
/// alias floods, many documents.
pub fn parse(text: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 16;
    budget.flow_nesting_limit = 16;
    budget.max_nodes = 10_000;
    budget.max_events = 40_000;
    budget.max_aliases = 100;
    budget.max_anchors = 100;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_CONFIG_BYTES as usize;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    options.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    let document: Value = serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        let message = error.to_string();
        anyhow::anyhow!(
            "{}",
            message
                .lines()
                .next()
                .unwrap_or("invalid YAML")
                .trim_start_matches("error: ")
        )
    })?;
    match document {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(serde_json::Map::new()),
        _ => anyhow::bail!("the document is not a mapping of sections (run:, verify:)"),
    }
}
