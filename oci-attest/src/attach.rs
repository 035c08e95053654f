//! Which attestors attach to a run: the catalogue and the auto-attach rules (SPEC section 5).
//!
//! product, material and command-run always attach; environment and git on request (`-a`);
//! oci on request or when a rule fires: the command (or any program it exec'd) is an image save,
//! or a product looks like an OCI layout / OCI archive.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use globset::{GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::attestors;
use crate::observed::Observation;

/// Where an attestor runs in the collection (and the order attestations appear in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    PreMaterial,
    Material,
    Execute,
    Product,
    PostProduct,
}

/// When an attestor is part of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachPolicy {
    Always,
    OnRequest,
    Auto,
}

/// One entry of the catalogue shown by `oci-attest tools`.
#[derive(Clone, Debug, Serialize)]
pub struct CatalogueEntry {
    pub name: &'static str,
    #[serde(rename = "predicateType")]
    pub predicate_type: &'static str,
    pub stage: Stage,
    pub attach: AttachPolicy,
    pub summary: &'static str,
    /// The auto-attach rules, in words (empty unless `attach` is `auto`).
    pub rules: Vec<String>,
    /// Predicate fields and what they hold (filled for `oci`).
    pub fields: Vec<PredicateField>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct PredicateField {
    pub name: &'static str,
    pub meaning: &'static str,
}

/// A save command recognised by its argv prefix: the program (by basename), its
/// subcommand words, and its global options that take a value (skipped before the subcommand,
/// so `ctr -a SOCK images export` and `docker -H unix:///x save` are recognised).
struct SaveCommand {
    program: &'static str,
    subcommand: &'static [&'static str],
    value_options: &'static [&'static str],
}

const DOCKER_OPTIONS: &[&str] = &[
    "-H",
    "--host",
    "-c",
    "--context",
    "--config",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];
const PODMAN_OPTIONS: &[&str] = &[
    "--root",
    "--runroot",
    "--storage-driver",
    "--storage-opt",
    "--url",
    "-c",
    "--connection",
    "--identity",
    "--log-level",
    "--cgroup-manager",
    "--events-backend",
    "--runtime",
    "--tmpdir",
    "--imagestore",
    "--module",
    "--conmon",
    "--hooks-dir",
    "--ssh",
    "--volumepath",
    "--network-config-dir",
];
const BUILDAH_OPTIONS: &[&str] = &[
    "--root",
    "--runroot",
    "--storage-driver",
    "--storage-opt",
    "--registries-conf",
    "--registries-conf-dir",
    "--userns-uid-map",
    "--userns-gid-map",
    "--log-level",
    "--short-name-alias-conf",
    "--cpu-profile",
    "--memory-profile",
];
const CONTAINERD_OPTIONS: &[&str] = &[
    "-a",
    "--address",
    "-n",
    "--namespace",
    "--timeout",
    "--connect-timeout",
    "-H",
    "--host",
    "--snapshotter",
    "--storage-driver",
    "--data-root",
    "--cni-path",
    "--cni-netconfpath",
    "--cgroup-manager",
];
const SKOPEO_OPTIONS: &[&str] = &[
    "--command-timeout",
    "--policy",
    "--registries.d",
    "--override-arch",
    "--override-os",
    "--override-variant",
    "--tmpdir",
    "--registries-conf",
];

const SAVE_COMMANDS: &[SaveCommand] = &[
    SaveCommand {
        program: "docker",
        subcommand: &["save"],
        value_options: DOCKER_OPTIONS,
    },
    SaveCommand {
        program: "docker",
        subcommand: &["image", "save"],
        value_options: DOCKER_OPTIONS,
    },
    SaveCommand {
        program: "podman",
        subcommand: &["save"],
        value_options: PODMAN_OPTIONS,
    },
    SaveCommand {
        program: "podman",
        subcommand: &["image", "save"],
        value_options: PODMAN_OPTIONS,
    },
    SaveCommand {
        program: "nerdctl",
        subcommand: &["save"],
        value_options: CONTAINERD_OPTIONS,
    },
    SaveCommand {
        program: "nerdctl",
        subcommand: &["image", "save"],
        value_options: CONTAINERD_OPTIONS,
    },
    SaveCommand {
        program: "skopeo",
        subcommand: &["copy"],
        value_options: SKOPEO_OPTIONS,
    },
    SaveCommand {
        program: "crane",
        subcommand: &[],
        value_options: &[],
    },
    SaveCommand {
        program: "buildah",
        subcommand: &["push"],
        value_options: BUILDAH_OPTIONS,
    },
    SaveCommand {
        program: "ctr",
        subcommand: &["images", "export"],
        value_options: CONTAINERD_OPTIONS,
    },
    SaveCommand {
        program: "ctr",
        subcommand: &["image", "export"],
        value_options: CONTAINERD_OPTIONS,
    },
];

/// Product paths that mark an OCI layout or OCI archive (`/`-aware: `*` stays in one segment).
const PRODUCT_GLOBS: &[&str] = &[
    "index.json",
    "**/index.json",
    "oci-layout",
    "**/oci-layout",
    "*.oci.tar",
    "**/*.oci.tar",
    "oci-image.tar",
    "**/oci-image.tar",
];

/// A wrapper program that runs the rest of its argv, and its options that take a value.
struct Wrapper {
    program: &'static str,
    value_options: &'static [&'static str],
    /// `env` also takes `NAME=value` words before the command; `timeout` a duration.
    leading_operands: Operands,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operands {
    None,
    Assignments,
    One,
}

const WRAPPERS: &[Wrapper] = &[
    Wrapper {
        program: "sudo",
        value_options: &[
            "-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "-R",
        ],
        leading_operands: Operands::None,
    },
    Wrapper {
        program: "env",
        value_options: &["-u", "-C", "--unset", "--chdir"],
        leading_operands: Operands::Assignments,
    },
    Wrapper {
        program: "time",
        value_options: &["-f", "-o", "--format", "--output"],
        leading_operands: Operands::None,
    },
    Wrapper {
        program: "nice",
        value_options: &["-n", "--adjustment"],
        leading_operands: Operands::None,
    },
    Wrapper {
        program: "nohup",
        value_options: &[],
        leading_operands: Operands::None,
    },
    Wrapper {
        program: "timeout",
        value_options: &["-s", "-k", "--signal", "--kill-after"],
        leading_operands: Operands::One,
    },
];

/// Why `oci` attached, recorded in the log and used for the default step name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciReason {
    Requested,
    /// The wrapped argv is a save command (the rule's words, e.g. `docker save`).
    Command(String),
    /// A program exec'd inside the traced tree was a save command.
    ExecObserved {
        rule: String,
        argv: Vec<String>,
    },
    /// A product path matched an OCI glob.
    ProductGlob(PathBuf),
}

impl std::fmt::Display for OciReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OciReason::Requested => f.write_str("requested with -a oci"),
            OciReason::Command(rule) => write!(f, "the command is `{rule}`"),
            OciReason::ExecObserved { rule, argv } => {
                write!(f, "`{rule}` ran inside the command: {}", argv.join(" "))
            }
            OciReason::ProductGlob(path) => {
                write!(f, "product {} looks like an OCI image", path.display())
            }
        }
    }
}

/// The `sh -c` script words, so an untraced `sh -c 'docker save …'` is still recognised.
fn shell_script_words(argv: &[String]) -> Option<Vec<String>> {
    let program = basename(argv.first()?);
    if !matches!(program, "sh" | "bash" | "dash" | "zsh" | "ash" | "busybox") {
        return None;
    }
    let script = argv
        .iter()
        .position(|arg| arg == "-c")
        .and_then(|i| argv.get(i + 1))?;
    Some(
        script
            .split(|c: char| c.is_whitespace() || ";|&()`".contains(c))
            .filter(|word| !word.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// The save rule that `argv` matches (`docker save`, `crane`, …), after skipping wrappers.
/// Inside a `sh -c` script every position is tried, since the save may follow other commands.
pub fn save_rule(argv: &[String]) -> Option<String> {
    if let Some(rule) = direct_save_rule(strip_wrappers(argv)) {
        return Some(rule);
    }
    let words = shell_script_words(argv)?;
    (0..words.len()).find_map(|start| direct_save_rule(strip_wrappers(&words[start..])))
}

fn direct_save_rule(argv: &[String]) -> Option<String> {
    let (program, rest) = argv.split_first()?;
    let program = basename(program);
    SAVE_COMMANDS
        .iter()
        .filter(|command| command.program == program)
        .find(|command| {
            let words = skip_options(rest, command.value_options);
            words.len() >= command.subcommand.len()
                && words
                    .iter()
                    .zip(command.subcommand)
                    .all(|(word, expected)| word == expected)
        })
        .map(|command| {
            std::iter::once(command.program)
                .chain(command.subcommand.iter().copied())
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// Drops leading options (and the values of options known to take one).
pub(crate) fn skip_options<'a>(mut args: &'a [String], value_options: &[&str]) -> &'a [String] {
    while let Some((first, rest)) = args.split_first() {
        if first == "--" {
            return rest;
        }
        if !first.starts_with('-') || first == "-" {
            break;
        }
        let takes_value = !first.contains('=') && value_options.contains(&first.as_str());
        args = if takes_value {
            rest.get(1..).unwrap_or(&[])
        } else {
            rest
        };
    }
    args
}

/// Skips `sudo`, `env VAR=…`, `time`, `nice`, `nohup`, `timeout DURATION` in front of a command.
pub(crate) fn strip_wrappers(mut argv: &[String]) -> &[String] {
    while let Some(wrapper) = argv
        .first()
        .and_then(|program| WRAPPERS.iter().find(|w| w.program == basename(program)))
    {
        let mut rest = skip_options(&argv[1..], wrapper.value_options);
        match wrapper.leading_operands {
            Operands::None => {}
            Operands::Assignments => {
                while rest.first().is_some_and(|word| is_assignment(word)) {
                    rest = &rest[1..];
                }
            }
            Operands::One => rest = rest.get(1..).unwrap_or(&[]),
        }
        argv = rest;
    }
    argv
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

pub(crate) fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

fn product_globs() -> &'static GlobSet {
    static GLOBS: OnceLock<GlobSet> = OnceLock::new();
    GLOBS.get_or_init(|| {
        let mut builder = GlobSetBuilder::new();
        for pattern in PRODUCT_GLOBS {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .unwrap_or_else(|error| panic!("built-in glob {pattern} is invalid: {error}"));
            builder.add(glob);
        }
        builder
            .build()
            .unwrap_or_else(|error| panic!("built-in glob set is invalid: {error}"))
    })
}

/// Does a product path (relative to the working dir when inside it) look like an OCI image?
pub fn product_matches(path: &Path, working_dir: &Path) -> bool {
    let relative = path.strip_prefix(working_dir).unwrap_or(path);
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    product_globs().is_match(relative)
}

/// The pre-run decision: does oci attach before anything ran?
pub fn oci_before_run(requested: bool, argv: &[String]) -> Option<OciReason> {
    if requested {
        return Some(OciReason::Requested);
    }
    save_rule(argv).map(OciReason::Command)
}

/// The post-run decision, given what the trace saw and which files were produced.
pub fn oci_after_run(observation: &Observation, products: &[PathBuf]) -> Option<OciReason> {
    if let Some((rule, argv)) = observation
        .exec_argvs()
        .find_map(|argv| save_rule(argv).map(|rule| (rule, argv.to_vec())))
    {
        return Some(OciReason::ExecObserved { rule, argv });
    }
    products
        .iter()
        .find(|path| product_matches(path, &observation.working_dir))
        .map(|path| OciReason::ProductGlob(path.clone()))
}

/// The step name when `--step` is not given.
pub fn default_step(oci: Option<&OciReason>) -> &'static str {
    match oci {
        Some(
            OciReason::Command(_) | OciReason::ExecObserved { .. } | OciReason::ProductGlob(_),
        ) => "oci-save",
        Some(OciReason::Requested) | None => "run",
    }
}

const OCI_FIELDS: &[PredicateField] = &[
    PredicateField {
        name: "tardigest",
        meaning: "DigestSet of the archive file itself",
    },
    PredicateField {
        name: "manifest",
        meaning:
            "manifest.json entries: [{Config, RepoTags, Layers}] (synthesised for OCI layouts)",
    },
    PredicateField {
        name: "imagetags",
        meaning: "RepoTags of the first image (null when none)",
    },
    PredicateField {
        name: "diffids",
        meaning: "one DigestSet per layer of the first image, in manifest order",
    },
    PredicateField {
        name: "imageid",
        meaning: "DigestSet of the config blob bytes (the Docker image ID)",
    },
    PredicateField {
        name: "manifestraw",
        meaning: "base64 of the raw manifest.json (OCI layout: the first image's OCI manifest)",
    },
    PredicateField {
        name: "manifestdigest",
        meaning: "DigestSet of the bytes in manifestraw",
    },
    PredicateField {
        name: "format",
        meaning: "docker-archive | oci-layout | docker-archive+oci-layout",
    },
    PredicateField {
        name: "images",
        meaning: "every image: imageid, diffids, tags, manifestdigest, platform, layers",
    },
];

/// Every attestor oci-attest knows, in stage order.
pub fn catalogue() -> Vec<CatalogueEntry> {
    let entry = |name, predicate_type, stage, attach, summary| CatalogueEntry {
        name,
        predicate_type,
        stage,
        attach,
        summary,
        rules: Vec::new(),
        fields: Vec::new(),
    };
    let mut oci = entry(
        "oci",
        attestors::oci::TYPE_URI,
        Stage::PostProduct,
        AttachPolicy::Auto,
        "image ID, layer diffIDs, tags and manifest digest of every image archive produced",
    );
    oci.rules = oci_rules();
    oci.fields = OCI_FIELDS.to_vec();
    vec![
        entry(
            "environment",
            attestors::ENVIRONMENT_TYPE_URI,
            Stage::PreMaterial,
            AttachPolicy::OnRequest,
            "OS, hostname, user and environment variables (secrets hidden)",
        ),
        entry(
            "git",
            attestors::GIT_TYPE_URI,
            Stage::PreMaterial,
            AttachPolicy::OnRequest,
            "commit, author, status, refs and remotes of the working tree",
        ),
        entry(
            "material",
            attestors::MATERIAL_TYPE_URI,
            Stage::Material,
            AttachPolicy::Always,
            "files the command could read: Merkle tree of their digests",
        ),
        entry(
            "command-run",
            attestors::COMMAND_RUN_TYPE_URI,
            Stage::Execute,
            AttachPolicy::Always,
            "argv, exit code, trace summary and every traced process with its file operations",
        ),
        entry(
            "product",
            attestors::PRODUCT_TYPE_URI,
            Stage::Product,
            AttachPolicy::Always,
            "files the command produced: Merkle tree of their digests",
        ),
        oci,
    ]
}

fn oci_rules() -> Vec<String> {
    let mut commands: Vec<String> = SAVE_COMMANDS
        .iter()
        .map(|command| {
            let words = std::iter::once(command.program)
                .chain(command.subcommand.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            if command.subcommand.is_empty() {
                format!("{words} (any subcommand)")
            } else {
                words
            }
        })
        .collect();
    commands.dedup();
    let wrappers: Vec<&str> = WRAPPERS.iter().map(|w| w.program).collect();
    vec![
        "requested with -a oci".to_owned(),
        format!(
            "pre: argv starts with one of: {} (program matched by basename, global options \
             skipped, wrappers {} skipped, `sh -c` scripts searched)",
            commands.join(", "),
            wrappers.join("/")
        ),
        "post: the trace saw any of those commands exec'd in the process tree (Makefiles, scripts)"
            .to_owned(),
        format!("post: a product matches {}", PRODUCT_GLOBS.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn recognises_every_save_command() {
        for (line, rule) in [
            ("docker save app:1 -o app.tar", "docker save"),
            ("/usr/bin/docker image save app:1", "docker image save"),
            ("docker -H unix:///tmp/d.sock save app:1", "docker save"),
            ("docker --host=unix:///x save app", "docker save"),
            (
                "podman save --format oci-archive -o x.tar img",
                "podman save",
            ),
            ("podman --root /tmp/r image save img", "podman image save"),
            ("nerdctl save -o x.tar img", "nerdctl save"),
            (
                "skopeo copy containers-storage:img docker-archive:x.tar",
                "skopeo copy",
            ),
            ("crane pull img x.tar", "crane"),
            ("crane manifest img", "crane"),
            ("buildah push img docker-archive:x.tar", "buildah push"),
            (
                "ctr -a /run/c.sock images export x.tar img",
                "ctr images export",
            ),
            (
                "ctr --namespace k8s.io image export x.tar img",
                "ctr image export",
            ),
            (
                "sudo -u root env DOCKER_HOST=x time nice -n 5 docker save img",
                "docker save",
            ),
            ("timeout 60 nohup skopeo copy a b", "skopeo copy"),
        ] {
            assert_eq!(save_rule(&argv(line)).as_deref(), Some(rule), "{line}");
        }
    }

    #[test]
    fn ignores_other_commands() {
        for line in [
            "docker load -i x.tar",
            "docker images",
            "podman build .",
            "skopeo inspect docker://x",
            "ctr images import x.tar",
            "buildah from scratch",
            "cp a.tar b.tar",
            "sudo ls",
            "env A=1",
            "mydocker save x",
        ] {
            assert_eq!(save_rule(&argv(line)), None, "{line}");
        }
        assert_eq!(save_rule(&[]), None);
    }

    #[test]
    fn finds_a_save_inside_a_shell_script() {
        let command = vec![
            "sh".into(),
            "-c".into(),
            "set -e; docker save app:1 > out.tar".into(),
        ];
        assert_eq!(save_rule(&command).as_deref(), Some("docker save"));
        let other = vec!["bash".into(), "-c".into(), "echo docker; ls save".into()];
        assert_eq!(save_rule(&other), None);
    }

    #[test]
    fn product_globs_respect_path_segments() {
        let work = Path::new("/work");
        for path in [
            "/work/index.json",
            "/work/out/layout/index.json",
            "/work/oci-layout",
            "/work/a/b/oci-layout",
            "/work/app.oci.tar",
            "/work/dist/app.oci.tar",
            "/work/oci-image.tar",
            "/elsewhere/oci-image.tar",
        ] {
            assert!(product_matches(Path::new(path), work), "{path}");
        }
        for path in [
            "/work/index.json.bak",
            "/work/app.tar",
            "/work/myoci-layout",
            "/work/x.oci.tar.gz",
        ] {
            assert!(!product_matches(Path::new(path), work), "{path}");
        }
    }

    #[test]
    fn catalogue_lists_every_attestor_in_stage_order() {
        let entries = catalogue();
        let names: Vec<_> = entries.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "environment",
                "git",
                "material",
                "command-run",
                "product",
                "oci"
            ]
        );
        assert!(entries
            .windows(2)
            .all(|pair| pair[0].stage <= pair[1].stage));
        let oci = entries.last().unwrap();
        assert_eq!(
            oci.predicate_type,
            "https://aflock.ai/attestations/oci/v0.1"
        );
        assert_eq!(oci.fields.len(), 9);
    }
}
