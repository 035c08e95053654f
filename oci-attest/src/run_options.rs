//! The options that shaped a run, each with where it came from (the command line, a config file
//! with its path and sha256, or the built-in default; no option of `run` is read from the
//! environment). `run` signs
//! this record in the command-run predicate as `options`; `verify` reads it back and names the
//! options that weakened the run. One serde type, so every format that reports "what shaped
//! the attestation" (the collection, SLSA provenance) writes the same thing.
//!
//! Keys are `run`'s long flag names, the same words a config file and the command line use.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where an option's value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// Nobody set it: the built-in default.
    Default,
    CommandLine,
    /// A config file: its absolute path, the sha256 of the bytes read, the key
    /// (`section.option`), and whether the file lies inside the run's working directory (where
    /// the sources being built, and so a pull request, can put it).
    ConfigFile {
        path: String,
        sha256: String,
        key: String,
        inworkingdir: bool,
    },
}

impl Source {
    /// `command line`, `config file /w/.witness.yaml (sha256:…) key run.step`.
    pub fn describe(&self) -> String {
        match self {
            Source::Default => "default".to_owned(),
            Source::CommandLine => "command line".to_owned(),
            Source::ConfigFile {
                path,
                sha256,
                key,
                inworkingdir,
            } => {
                let inside = if *inworkingdir {
                    ", inside the working directory"
                } else {
                    ""
                };
                format!("config file {path} (sha256:{sha256}) key {key}{inside}")
            }
        }
    }
}

/// One option: its effective value and where that came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    pub fn new(value: T, source: Source) -> Setting<T> {
        Setting { value, source }
    }
}

/// The built-in default: what a statement written before an option existed is read with.
impl<T: Default> Default for Setting<T> {
    fn default() -> Setting<T> {
        Setting::new(T::default(), Source::Default)
    }
}

/// A directory by path and by the kernel's identity of it (device and inode), so a symlink or
/// bind mount cannot make two different directories read alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirIdentity {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
}

impl DirIdentity {
    pub fn of(path: &Path) -> anyhow::Result<DirIdentity> {
        let metadata =
            std::fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
        Ok(DirIdentity {
            path: path.to_string_lossy().into_owned(),
            dev: metadata.dev(),
            ino: metadata.ino(),
        })
    }

    /// This directory is `other` or lies inside it (by path; both are canonical).
    pub fn is_within(&self, other: &DirIdentity) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
            || Path::new(&self.path).starts_with(Path::new(&other.path))
    }
}

/// A config file that was read (whether or not any of its options were used).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFileRecord {
    pub path: String,
    pub sha256: String,
    pub inworkingdir: bool,
}

/// Every option of `run` that shapes the statement. The identity the command ran as is recorded
/// beside this record, in the command-run predicate's `identity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Settings {
    pub step: Setting<String>,
    pub workingdir: Setting<DirIdentity>,
    pub trace: Setting<String>,
    pub allow_incomplete_trace: Setting<bool>,
    pub allow_missing_subjects: Setting<bool>,
    pub wait_for_tree: Setting<u64>,
    pub trace_buffer_bytes: Setting<u32>,
    pub hashes: Setting<Vec<String>>,
    pub attestations: Setting<Vec<String>>,
    pub attestor_product_include_glob: Setting<Vec<String>>,
    pub attestor_product_exclude_glob: Setting<Vec<String>>,
    pub env_add_sensitive_key: Setting<Vec<String>>,
    pub env_allow_sensitive_key: Setting<Vec<String>>,
    pub env_filter_sensitive_vars: Setting<bool>,
    pub env_disable_default_sensitive_vars: Setting<bool>,
    pub redact_regex: Setting<Vec<String>>,
    pub argv_digests: Setting<bool>,
    /// `--run-as` as given (empty: the invoking user, see the predicate's `identity`).
    #[serde(default)]
    pub run_as: Setting<String>,
    #[serde(default)]
    pub allow_new_privileges: Setting<bool>,
    #[serde(default)]
    pub allow_readable_key: Setting<bool>,
}

/// The `options` object of the command-run predicate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// The directory `run` was started in (where config files are looked for: in CI, the
    /// checkout).
    pub invocationdir: DirIdentity,
    /// Every config file read, in precedence order (the first wins per key).
    pub configfiles: Vec<ConfigFileRecord>,
    pub settings: Settings,
    /// The settings that weakened the run, as [`RunOptions::weakening`] computes them.
    pub weakening: Vec<Weakening>,
}

/// One option that made the run's evidence weaker than the defaults would have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weakening {
    pub option: String,
    /// The value, as JSON text.
    pub value: String,
    pub why: String,
    pub source: Source,
}

/// Defaults of the options whose other values weaken the run (kept beside `run`'s clap
/// defaults by a unit test of `commands::run`).
pub const DEFAULT_TRACE: &str = "auto";
pub const DEFAULT_WAIT_FOR_TREE: u64 = 30;

impl RunOptions {
    pub fn new(
        invocationdir: DirIdentity,
        configfiles: Vec<ConfigFileRecord>,
        settings: Settings,
        default_trace_buffer_bytes: u32,
    ) -> RunOptions {
        let mut options = RunOptions {
            invocationdir,
            configfiles,
            settings,
            weakening: Vec::new(),
        };
        options.weakening = options.weakening(default_trace_buffer_bytes);
        options
    }

    /// The settings that differ from the defaults for tracing, products and secrets, a step
    /// name a config file chose, and a working directory other than where `run` started.
    pub fn weakening(&self, default_trace_buffer_bytes: u32) -> Vec<Weakening> {
        let s = &self.settings;
        let mut found = Vec::new();
        let mut add = |option: &str, value: String, why: &str, source: &Source| {
            found.push(Weakening {
                option: option.to_owned(),
                value,
                why: why.to_owned(),
                source: source.clone(),
            });
        };
        if s.trace.value == "off" {
            add(
                "trace",
                json(&s.trace.value),
                "the command was not traced",
                &s.trace.source,
            );
        }
        if s.allow_incomplete_trace.value {
            add(
                "allow-incomplete-trace",
                "true".into(),
                "an incomplete trace may be signed",
                &s.allow_incomplete_trace.source,
            );
        }
        if s.wait_for_tree.value != DEFAULT_WAIT_FOR_TREE {
            add(
                "wait-for-tree",
                json(&s.wait_for_tree.value),
                "the wait for the process tree differs from the default",
                &s.wait_for_tree.source,
            );
        }
        if s.trace_buffer_bytes.value != default_trace_buffer_bytes {
            add(
                "trace-buffer-bytes",
                json(&s.trace_buffer_bytes.value),
                "the trace buffer differs from the default",
                &s.trace_buffer_bytes.source,
            );
        }
        if !s.attestor_product_exclude_glob.value.is_empty() {
            add(
                "attestor-product-exclude-glob",
                json(&s.attestor_product_exclude_glob.value),
                "files the command wrote are hidden from the products",
                &s.attestor_product_exclude_glob.source,
            );
        }
        if !s.attestor_product_include_glob.value.is_empty() {
            add(
                "attestor-product-include-glob",
                json(&s.attestor_product_include_glob.value),
                "files outside the working directory count as products",
                &s.attestor_product_include_glob.source,
            );
        }
        if s.run_as.value == "root" || s.run_as.value.starts_with("root:") || s.run_as.value == "0"
        {
            add(
                "run-as",
                json(&s.run_as.value),
                "the command ran as root: it could read the key and tamper with the tracer",
                &s.run_as.source,
            );
        }
        if s.allow_new_privileges.value {
            add(
                "allow-new-privileges",
                "true".into(),
                "setuid and file-capability programs in the command could gain privileges",
                &s.allow_new_privileges.source,
            );
        }
        if s.allow_readable_key.value {
            add(
                "allow-readable-key",
                "true".into(),
                "the command could read the signing key and sign a statement of its own",
                &s.allow_readable_key.source,
            );
        }
        if s.allow_missing_subjects.value {
            add(
                "allow-missing-subjects",
                "true".into(),
                "a pushed image may be signed without its digest",
                &s.allow_missing_subjects.source,
            );
        }
        if !s.env_allow_sensitive_key.value.is_empty() {
            add(
                "env-allow-sensitive-key",
                json(&s.env_allow_sensitive_key.value),
                "variables that look secret are recorded in clear",
                &s.env_allow_sensitive_key.source,
            );
        }
        if s.env_disable_default_sensitive_vars.value {
            add(
                "env-disable-default-sensitive-vars",
                "true".into(),
                "the built-in list of secret variable names is off",
                &s.env_disable_default_sensitive_vars.source,
            );
        }
        if matches!(s.step.source, Source::ConfigFile { .. }) {
            add(
                "step",
                json(&s.step.value),
                "the step name was chosen by a config file",
                &s.step.source,
            );
        }
        if !s.workingdir.value.is_within(&self.invocationdir)
            || matches!(s.workingdir.source, Source::ConfigFile { .. })
        {
            add(
                "workingdir",
                json(&s.workingdir.value.path),
                "the materials and products are not those of the directory run started in",
                &s.workingdir.source,
            );
        }
        found
    }
}

/// A value as JSON text, for [`Weakening::value`].
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str, ino: u64) -> DirIdentity {
        DirIdentity {
            path: path.to_owned(),
            dev: 1,
            ino,
        }
    }

    fn defaults(workingdir: DirIdentity) -> Settings {
        let d = Source::Default;
        Settings {
            step: Setting::new("run".into(), d.clone()),
            workingdir: Setting::new(workingdir, d.clone()),
            trace: Setting::new(DEFAULT_TRACE.into(), d.clone()),
            allow_incomplete_trace: Setting::new(false, d.clone()),
            allow_missing_subjects: Setting::new(false, d.clone()),
            wait_for_tree: Setting::new(DEFAULT_WAIT_FOR_TREE, d.clone()),
            trace_buffer_bytes: Setting::new(1024, d.clone()),
            hashes: Setting::new(vec!["sha256".into()], d.clone()),
            attestations: Setting::new(vec!["environment".into(), "git".into()], d.clone()),
            attestor_product_include_glob: Setting::new(Vec::new(), d.clone()),
            attestor_product_exclude_glob: Setting::new(Vec::new(), d.clone()),
            env_add_sensitive_key: Setting::new(Vec::new(), d.clone()),
            env_allow_sensitive_key: Setting::new(Vec::new(), d.clone()),
            env_filter_sensitive_vars: Setting::new(false, d.clone()),
            env_disable_default_sensitive_vars: Setting::new(false, d.clone()),
            redact_regex: Setting::new(Vec::new(), d.clone()),
            argv_digests: Setting::new(false, d),
            run_as: Setting::default(),
            allow_new_privileges: Setting::default(),
            allow_readable_key: Setting::default(),
        }
    }

    #[test]
    fn defaults_weaken_nothing_and_each_class_is_named() {
        let checkout = dir("/w", 2);
        let plain = RunOptions::new(
            checkout.clone(),
            Vec::new(),
            defaults(dir("/w/sub", 3)),
            1024,
        );
        assert_eq!(plain.weakening, Vec::new());

        let file = Source::ConfigFile {
            path: "/w/.witness.yaml".into(),
            sha256: "ab".into(),
            key: "run.attestor-product-exclude-glob".into(),
            inworkingdir: true,
        };
        let mut settings = defaults(dir("/pristine", 9));
        settings.attestor_product_exclude_glob = Setting::new(vec!["**".into()], file.clone());
        settings.step = Setting::new("build".into(), file.clone());
        settings.env_allow_sensitive_key = Setting::new(vec!["*".into()], file.clone());
        settings.trace = Setting::new("off".into(), Source::CommandLine);
        settings.run_as = Setting::new("root".into(), file.clone());
        settings.allow_new_privileges = Setting::new(true, Source::CommandLine);
        settings.allow_readable_key = Setting::new(true, Source::CommandLine);
        let options = RunOptions::new(checkout, Vec::new(), settings, 1024);
        let named: Vec<&str> = options
            .weakening
            .iter()
            .map(|weakening| weakening.option.as_str())
            .collect();
        assert_eq!(
            named,
            [
                "trace",
                "attestor-product-exclude-glob",
                "run-as",
                "allow-new-privileges",
                "allow-readable-key",
                "env-allow-sensitive-key",
                "step",
                "workingdir"
            ]
        );
        assert_eq!(options.weakening[1].value, r#"["**"]"#);
        assert_eq!(options.weakening[1].source, file);
        assert!(file.describe().contains("/w/.witness.yaml (sha256:ab)"));

        let json = serde_json::to_value(&options).unwrap();
        assert_eq!(
            json["settings"]["attestor-product-exclude-glob"]["source"]["kind"],
            "config-file"
        );
        assert_eq!(json["settings"]["trace"]["source"]["kind"], "command-line");
        let back: RunOptions = serde_json::from_value(json).unwrap();
        assert_eq!(back, options);
    }
}
