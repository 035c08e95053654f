//! docker-archive: `manifest.json` lists each image's config member, tags and layer members.

use serde_json::Value;

use super::image::{
    check_tag, parse_json, verify_image, Image, ListedLayer, ARCHIVE_LAYERS_PER_IMAGE_LIMIT,
};
use super::members::Members;

pub const MANIFEST: &str = "manifest.json";

/// One `manifest.json` entry as written (member names not normalised).
#[derive(Clone, Debug)]
pub struct Entry {
    pub config: String,
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

impl Entry {
    /// Re-serialised with the capitalised keys docker writes, in docker's order.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "Config": self.config,
            "RepoTags": self.repo_tags,
            "Layers": self.layers,
        })
    }
}

#[derive(Clone, Debug)]
pub struct DockerArchive {
    pub raw_manifest: Vec<u8>,
    pub entries: Vec<Entry>,
    pub images: Vec<Image>,
}

pub fn read(members: &Members, max_layers: usize) -> Result<DockerArchive, String> {
    let (manifest, raw_manifest) = parse_json(members, MANIFEST)?;
    let entries = parse_entries(&manifest)?;
    let references: usize = entries.iter().map(|entry| entry.layers.len()).sum();
    let limit = max_layers.saturating_mul(ARCHIVE_LAYERS_PER_IMAGE_LIMIT);
    if references > limit {
        return Err(format!(
            "{MANIFEST} lists {references} layers over all its images, more than the limit of {limit} (16 x --max-layers)"
        ));
    }
    let mut images = Vec::with_capacity(entries.len());
    for entry in &entries {
        let listed = entry
            .layers
            .iter()
            .map(|name| {
                Ok(ListedLayer {
                    name: name.clone(),
                    facts: members.resolve(name)?,
                    media_type: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut image = verify_image(members, &entry.config, listed, max_layers)?;
        image.tags = entry.repo_tags.clone();
        images.push(image);
    }
    Ok(DockerArchive {
        raw_manifest,
        entries,
        images,
    })
}

fn parse_entries(manifest: &Value) -> Result<Vec<Entry>, String> {
    let Some(list) = manifest.as_array() else {
        return Err(format!(
            "{MANIFEST} is {}, not a list of images",
            kind_of(manifest)
        ));
    };
    if list.is_empty() {
        return Err(format!("{MANIFEST} lists no images"));
    }
    list.iter()
        .enumerate()
        .map(|(index, value)| {
            parse_entry(value)
                .map_err(|problem| format!("{MANIFEST} entry {}: {problem}", index + 1))
        })
        .collect()
}

/// Some writers use lower-case keys (`config`, `repoTags`, `layers`): match case-insensitively.
fn field<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .map(|(_, value)| value)
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, String> {
    let Some(list) = value.as_array() else {
        return Err(format!("{what} is {}, not a list", kind_of(value)));
    };
    list.iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{what} holds {}, not a string", kind_of(item)))
        })
        .collect()
}

fn parse_entry(value: &Value) -> Result<Entry, String> {
    let Some(object) = value.as_object() else {
        return Err(format!("is {}, not an object", kind_of(value)));
    };
    let config = field(object, "Config")
        .and_then(Value::as_str)
        .ok_or("has no Config member name")?
        .to_owned();
    let repo_tags = match field(object, "RepoTags") {
        None | Some(Value::Null) => None,
        Some(tags) => Some(strings(tags, "RepoTags")?),
    };
    for tag in repo_tags.iter().flatten() {
        check_tag(tag)?;
    }
    let layers = match field(object, "Layers") {
        None | Some(Value::Null) => Vec::new(),
        Some(layers) => strings(layers, "Layers")?,
    };
    Ok(Entry {
        config,
        repo_tags,
        layers,
    })
}

pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
