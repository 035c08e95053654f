//! Recognising an image save: the save tools' command lines (argv prefixes, behind wrappers
//! such as `sudo` or `env`, inside `sh -c` scripts) and the product paths that mark an OCI
//! layout or archive. The `oci` attestor's attach rule is built on this; the rules are
//! described in `docs/attach.md`.

use std::path::Path;
use std::sync::OnceLock;

use globset::{GlobSet, GlobSetBuilder};

/// The save tools, each with the subcommand words that make it a save (none: any invocation
/// of the program counts) and its global options that take a value (skipped before the
/// subcommand, so `ctr -a SOCK images export` and `docker -H unix:///x save` are recognised).
pub struct SaveTool {
    pub program: &'static str,
    subcommands: &'static [&'static [&'static str]],
    value_options: &'static [&'static str],
}

pub const SAVE_TOOLS: &[SaveTool] = &[
    SaveTool {
        program: "docker",
        subcommands: &[&["save"], &["image", "save"]],
        value_options: DOCKER_OPTIONS,
    },
    SaveTool {
        program: "podman",
        subcommands: &[&["save"], &["image", "save"]],
        value_options: PODMAN_OPTIONS,
    },
    SaveTool {
        program: "nerdctl",
        subcommands: &[&["save"], &["image", "save"]],
        value_options: CONTAINERD_OPTIONS,
    },
    SaveTool {
        program: "skopeo",
        subcommands: &[&["copy"]],
        value_options: SKOPEO_OPTIONS,
    },
    SaveTool {
        program: "crane",
        subcommands: &[&[]],
        value_options: &[],
    },
    SaveTool {
        program: "buildah",
        subcommands: &[&["push"]],
        value_options: BUILDAH_OPTIONS,
    },
    SaveTool {
        program: "ctr",
        subcommands: &[&["images", "export"], &["image", "export"]],
        value_options: CONTAINERD_OPTIONS,
    },
];

pub(crate) const DOCKER_OPTIONS: &[&str] = &[
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
pub(crate) const PODMAN_OPTIONS: &[&str] = &[
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
pub(crate) const BUILDAH_OPTIONS: &[&str] = &[
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
pub(crate) const SKOPEO_OPTIONS: &[&str] = &[
    "--command-timeout",
    "--policy",
    "--registries.d",
    "--override-arch",
    "--override-os",
    "--override-variant",
    "--tmpdir",
    "--registries-conf",
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
    let tool = SAVE_TOOLS
        .iter()
        .find(|tool| tool.program == basename(program))?;
    let words = skip_options(rest, tool.value_options);
    tool.subcommands
        .iter()
        .find(|subcommand| {
            words.len() >= subcommand.len()
                && words
                    .iter()
                    .zip(subcommand.iter())
                    .all(|(word, expected)| word == expected)
        })
        .map(|subcommand| rule_words(tool.program, subcommand))
}

/// `docker image save`: the program and its subcommand words, as a rule is named.
fn rule_words(program: &str, subcommand: &[&str]) -> String {
    std::iter::once(program)
        .chain(subcommand.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
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

/// The recognition rules in words, for `oci-attest tools show`: the commands, then the
/// product globs.
pub fn describe_commands() -> String {
    let commands: Vec<String> = SAVE_TOOLS
        .iter()
        .flat_map(|tool| {
            tool.subcommands.iter().map(|subcommand| {
                let words = rule_words(tool.program, subcommand);
                if subcommand.is_empty() {
                    format!("{words} (any subcommand)")
                } else {
                    words
                }
            })
        })
        .collect();
    let wrappers: Vec<&str> = WRAPPERS.iter().map(|w| w.program).collect();
    format!(
        "{} (program matched by basename, global options skipped, wrappers {} skipped, `sh -c` \
         scripts searched)",
        commands.join(", "),
        wrappers.join("/")
    )
}

/// The product globs, comma separated, for `oci-attest tools show`.
pub fn describe_product_globs() -> String {
    PRODUCT_GLOBS.join(", ")
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
}
