//! Config files: the `run:` and `verify:` sections supply options the command line does not
//! give, and every option keeps its source so `run` can sign it (`crate::run_options`).
//!
//! Found only here: `-c/--config FILE` names one file and nothing else is read; without it,
//! `.oci-attest.yaml` and `.witness.yaml` in the current directory are both read and merged per
//! key, `.oci-attest.yaml` winning. Flags on the command line win over both. Keys are the
//! subcommand's long flag names without `--` (as in witness):
//! ```yaml
//! run:
//!   signer-file-key-path: key.pem
//!   outfile: att.json
//!   attestations: [environment, git, oci]
//!   attestor-product-exclude-glob: ["*.log"]
//!   trace: false          # witness's boolean; oci-attest also takes auto|ebpf|off
//! verify:
//!   key: key.pem.pub
//! ```
//! Each file is read under bounds by `crate::config_file`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::cli_compat;
use crate::config_file::read;
use crate::run_options::{ConfigFileRecord, Source};

/// Config files looked for in the current directory, highest precedence first.
pub const CONFIG_FILES: &[&str] = &[".oci-attest.yaml", ".witness.yaml"];

/// Subcommands whose section of a config file is read.
const SECTIONS: &[&str] = &["run", "verify"];

/// Who the command runs as and what it may reach: a config file can sit in the checkout the
/// command builds (a pull request writes it), so these come from the command line only.
const COMMAND_LINE_ONLY: &[&str] = &["run-as", "allow-new-privileges", "allow-readable-key"];

/// The global `-c/--config` option (read before parsing; declared so `--help` shows it).
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Config file to read instead of `.oci-attest.yaml` and `.witness.yaml` in the current
    /// directory (its `run:` and `verify:` sections).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where each option of one subcommand came from.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// Every config file read, highest precedence first.
    pub files: Vec<(PathBuf, String)>,
    /// Options a config file supplied: long name → (file index, `section.key`).
    from_file: BTreeMap<String, (usize, String)>,
    /// Options given on the command line, by long name.
    from_command_line: std::collections::BTreeSet<String>,
}

impl Provenance {
    /// Records which options clap found on the command line (including those a config file
    /// put there, which keep their file as source). No option of `run` is read from the
    /// environment.
    pub fn with_matches(mut self, command: &clap::Command, matches: &clap::ArgMatches) -> Self {
        for argument in command.get_arguments() {
            if let (Some(long), Some(clap::parser::ValueSource::CommandLine)) = (
                argument.get_long(),
                matches.value_source(argument.get_id().as_str()),
            ) {
                self.from_command_line.insert(long.to_owned());
            }
        }
        self
    }

    /// The source of option `long` (its long name); a config file's `inworkingdir` is judged
    /// against `working_dir`.
    pub fn source(&self, long: &str, working_dir: &Path) -> Source {
        if let Some((index, key)) = self.from_file.get(long) {
            let (path, sha256) = &self.files[*index];
            return Source::ConfigFile {
                path: path.to_string_lossy().into_owned(),
                sha256: sha256.clone(),
                key: key.clone(),
                inworkingdir: path.starts_with(working_dir),
            };
        }
        if self.from_command_line.contains(long) {
            Source::CommandLine
        } else {
            Source::Default
        }
    }

    /// The config files read, for the signed record.
    pub fn records(&self, working_dir: &Path) -> Vec<ConfigFileRecord> {
        self.files
            .iter()
            .map(|(path, sha256)| ConfigFileRecord {
                path: path.to_string_lossy().into_owned(),
                sha256: sha256.clone(),
                inworkingdir: path.starts_with(working_dir),
            })
            .collect()
    }

    /// Says which files were read and which options they gave (call once logging is set up).
    pub fn log(&self) {
        for (index, (path, sha256)) in self.files.iter().enumerate() {
            let keys: Vec<&str> = self
                .from_file
                .values()
                .filter(|(file, _)| *file == index)
                .map(|(_, key)| key.as_str())
                .collect();
            if keys.is_empty() {
                tracing::debug!(
                    "config {} (sha256:{sha256}) read: no option of this command taken from it",
                    path.display()
                );
            } else {
                tracing::info!(
                    "options from {} (sha256:{sha256}): {}",
                    path.display(),
                    keys.join(", ")
                );
            }
        }
    }
}

/// The arguments with config options inserted, and where each option came from.
#[derive(Debug)]
pub struct Applied {
    pub args: Vec<OsString>,
    /// For the subcommand the config applies to (`run` or `verify`), if any.
    pub subcommand: Option<&'static str>,
    pub provenance: Provenance,
}

/// `args` (program name first) with the options of the subcommand's section of the config
/// files inserted right after the subcommand, for every option the command line does not set.
/// `cwd` is where config files are looked for.
pub fn apply(args: Vec<OsString>, cwd: &Path) -> anyhow::Result<Applied> {
    let Some((at, section)) = subcommand(&args) else {
        return Ok(Applied {
            args,
            subcommand: None,
            provenance: Provenance::default(),
        });
    };
    let paths = match explicit_config(&args)? {
        Some(path) => vec![cwd.join(path)],
        None => CONFIG_FILES
            .iter()
            .map(|name| cwd.join(name))
            .filter(|path| path.symlink_metadata().is_ok())
            .collect(),
    };
    let files = paths
        .iter()
        .map(|path| read(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let command = section_command(section);
    let given = &args[at + 1..];
    let mut provenance = Provenance {
        files: files
            .iter()
            .map(|file| (file.path.clone(), file.sha256.clone()))
            .collect(),
        ..Provenance::default()
    };
    let mut inserted = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let display = file.path.display();
        let entries = match file.document.get(section) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(entries)) => entries,
            Some(_) => anyhow::bail!("{display}: `{section}` is not a mapping"),
        };
        for (key, value) in entries {
            // A key is the file's text: escaped where it names itself (a key holding a line
            // break must not turn a message into several lines). Option names are unchanged.
            let shown = key.escape_debug().to_string();
            let name = format!("{section}.{shown}");
            let flag = format!("--{shown}");
            if let Some(message) = cli_compat::unsupported_flag(&[OsString::from(&flag)]) {
                anyhow::bail!("{display}: {name}: {message}");
            }
            let Some(argument) = find_argument(&command, key) else {
                anyhow::bail!("{display}: {name}: not an option of `oci-attest {section}`");
            };
            let long = argument.get_long().unwrap_or(key).to_owned();
            if COMMAND_LINE_ONLY.contains(&long.as_str()) {
                anyhow::bail!(
                    "{display}: {name}: who the command runs as and what it may reach are \
                     taken from the command line only (pass --{long} there)"
                );
            }
            if provenance.from_file.contains_key(&long) || is_given(given, argument) {
                continue;
            }
            let arguments = flag_arguments(argument, value)
                .with_context(|| format!("{display}: {name}: bad value {value}"))?;
            inserted.extend(arguments);
            provenance.from_file.insert(long, (index, name));
        }
    }
    let mut rewritten = args;
    rewritten.splice(at + 1..at + 1, inserted);
    Ok(Applied {
        args: rewritten,
        subcommand: Some(section),
        provenance,
    })
}

/// The position and name of the subcommand whose config section applies, if it is one.
fn subcommand(args: &[OsString]) -> Option<(usize, &'static str)> {
    let mut words = args.iter().enumerate().skip(1);
    while let Some((at, word)) = words.next() {
        let word = word.to_str()?;
        if GLOBAL_FLAGS_WITH_VALUE.contains(&word) {
            words.next();
            continue;
        }
        if word.starts_with('-') {
            continue;
        }
        return SECTIONS
            .iter()
            .find(|section| **section == word)
            .map(|section| (at, *section));
    }
    None
}

/// Global flags whose value is the next word (so it is not taken for the subcommand).
const GLOBAL_FLAGS_WITH_VALUE: &[&str] = &["-c", "--config", "--log-format", "-l", "--log-level"];

/// The file `-c/--config` names, if given (before `--`).
fn explicit_config(args: &[OsString]) -> anyhow::Result<Option<PathBuf>> {
    let mut words = args.iter().skip(1).take_while(|arg| *arg != "--");
    let mut found = None;
    while let Some(word) = words.next() {
        let text = word.to_string_lossy();
        let value = if text == "-c" || text == "--config" {
            Some(
                words
                    .next()
                    .map(PathBuf::from)
                    .with_context(|| format!("{text} needs a FILE"))?,
            )
        } else if let Some(path) = text.strip_prefix("--config=") {
            Some(PathBuf::from(path))
        } else {
            text.strip_prefix("-c")
                .filter(|rest| !rest.is_empty())
                .map(PathBuf::from)
        };
        if let Some(value) = value {
            if found.replace(value).is_some() {
                anyhow::bail!("-c/--config is given more than once");
            }
        }
    }
    Ok(found)
}

/// The clap description of a section's subcommand.
fn section_command(section: &'static str) -> clap::Command {
    use clap::Args as _;
    let command = clap::Command::new(section);
    match section {
        "run" => crate::commands::run::Args::augment_args(command),
        _ => crate::commands::verify::Args::augment_args(command),
    }
}

/// The argument whose long name or alias is `name`.
fn find_argument<'a>(command: &'a clap::Command, name: &str) -> Option<&'a clap::Arg> {
    command.get_arguments().find(|argument| {
        argument.get_long() == Some(name)
            || argument
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })
}

/// `argument` appears among the command-line words `args` (before `--`).
fn is_given(args: &[OsString], argument: &clap::Arg) -> bool {
    let mut spellings: Vec<String> = argument
        .get_long_and_visible_aliases()
        .into_iter()
        .flatten()
        .chain(argument.get_all_aliases().into_iter().flatten())
        .map(|long| format!("--{long}"))
        .collect();
    spellings.extend(argument.get_short().map(|short| format!("-{short}")));
    args.iter()
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.to_str())
        .any(|arg| {
            spellings.iter().any(|spelling| {
                arg == spelling
                    || arg
                        .strip_prefix(spelling.as_str())
                        .is_some_and(|rest| rest.starts_with('=') || !spelling.starts_with("--"))
            })
        })
}

/// The command-line words for one config entry, each value checked by the option's own parser
/// so a bad one is reported with its file and key (not as a command-line error).
fn flag_arguments(argument: &clap::Arg, value: &Value) -> anyhow::Result<Vec<OsString>> {
    let long = argument.get_long().context("option without a long name")?;
    let flag = OsString::from(format!("--{long}"));
    let takes_value = argument.get_action().takes_values();
    // The option alone, with its own value parser (enum names, numbers, paths).
    let checker = clap::Command::new("config").no_binary_name(true).arg(
        clap::Arg::new("value")
            .long("value")
            .value_parser(argument.get_value_parser().clone()),
    );
    let check = |text: &str| -> anyhow::Result<OsString> {
        checker
            .clone()
            .try_get_matches_from([OsStr::new("--value"), OsStr::new(text)])
            .map_err(|error| {
                let message = error.to_string();
                let first = message.lines().next().unwrap_or("").trim();
                let first = first.trim_start_matches("error: ");
                anyhow::anyhow!("{}", first.replace(" for '--value <value>'", ""))
            })?;
        Ok(OsString::from(text))
    };
    let scalar = |value: &Value| -> anyhow::Result<String> {
        match value {
            Value::String(text) => Ok(text.clone()),
            Value::Number(number) => Ok(number.to_string()),
            Value::Bool(flag) => Ok(flag.to_string()),
            _ => anyhow::bail!("expected a string, number or list of them"),
        }
    };
    if !takes_value {
        return match value {
            Value::Bool(true) => Ok(vec![flag]),
            Value::Bool(false) | Value::Null => Ok(Vec::new()),
            _ => anyhow::bail!("expected true or false"),
        };
    }
    Ok(match (long, value) {
        // witness's `trace: true|false`.
        ("trace", Value::Bool(true)) => vec![flag, check("ebpf")?],
        ("trace", Value::Bool(false)) => vec![flag, check("off")?],
        (_, Value::Null) => Vec::new(),
        (_, Value::Array(items)) => {
            let mut words = Vec::new();
            for item in items {
                words.push(flag.clone());
                words.push(check(&scalar(item)?)?);
            }
            words
        }
        (_, other) => vec![flag, check(&scalar(other)?)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::parse;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn text(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn config_fills_what_the_command_line_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".witness.yaml"),
            "run:\n  signer-file-key-path: key.pem\n  outfile: from-config.json\n  trace: false\n  \
             attestations: [environment, oci]\n  allow-incomplete-trace: true\n\
             verify:\n  policy: p.json\n",
        )
        .unwrap();
        let args = os(&["oci-attest", "-v", "run", "-o", "cli.json", "--", "true"]);
        let applied = apply(args, dir.path()).unwrap();
        assert_eq!(
            text(&applied.args),
            [
                "oci-attest",
                "-v",
                "run",
                "--signer-file-key-path",
                "key.pem",
                "--trace",
                "off",
                "--attestations",
                "environment",
                "--attestations",
                "oci",
                "--allow-incomplete-trace",
                "-o",
                "cli.json",
                "--",
                "true"
            ]
        );
        let working_dir = dir.path().canonicalize().unwrap();
        match applied.provenance.source("trace", &working_dir) {
            Source::ConfigFile {
                key, inworkingdir, ..
            } => {
                assert_eq!(key, "run.trace");
                assert!(inworkingdir);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            applied.provenance.source("outfile", &working_dir),
            Source::Default,
            "given on the command line, not taken from the file (clap says command line)"
        );
        let untouched = os(&["oci-attest", "inspect", "x.tar"]);
        assert_eq!(
            apply(untouched.clone(), dir.path()).unwrap().args,
            untouched
        );
    }

    #[test]
    fn both_files_merge_per_key_and_ours_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".witness.yaml"),
            "run:\n  step: from-witness\n  wait-for-tree: 5\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".oci-attest.yaml"),
            "run:\n  step: from-ours\n",
        )
        .unwrap();
        let applied = apply(os(&["oci-attest", "run", "--", "true"]), dir.path()).unwrap();
        assert_eq!(
            text(&applied.args),
            [
                "oci-attest",
                "run",
                "--step",
                "from-ours",
                "--wait-for-tree",
                "5",
                "--",
                "true"
            ]
        );
        assert_eq!(applied.provenance.files.len(), 2);
        // -c names one file and nothing else is read.
        let other = dir.path().join("other.yaml");
        std::fs::write(&other, "run:\n  trace: off\n").unwrap();
        let args = os(&[
            "oci-attest",
            "-c",
            other.to_str().unwrap(),
            "run",
            "--",
            "x",
        ]);
        let applied = apply(args, dir.path()).unwrap();
        assert_eq!(applied.provenance.files.len(), 1);
        assert!(text(&applied.args).contains(&"off".to_owned()));
        assert!(!text(&applied.args).contains(&"from-ours".to_owned()));
        let args = os(&["oci-attest", "run", "--config=/nonexistent.yaml", "--", "x"]);
        let error = format!("{:#}", apply(args, dir.path()).unwrap_err());
        assert!(error.contains("/nonexistent.yaml: cannot read"), "{error}");
    }

    #[test]
    fn verify_section_applies_to_verify() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".oci-attest.yaml"),
            "run:\n  step: s\nverify:\n  key: k.pub\n  allow-untraced: true\n",
        )
        .unwrap();
        let applied = apply(os(&["oci-attest", "verify", "att.json"]), dir.path()).unwrap();
        assert_eq!(
            text(&applied.args),
            [
                "oci-attest",
                "verify",
                "--key",
                "k.pub",
                "--allow-untraced",
                "att.json"
            ]
        );
    }

    #[test]
    fn bad_config_entries_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(".oci-attest.yaml");
        let args = || os(&["oci-attest", "run", "--", "true"]);
        for (text, expected) in [
            (
                "run:\n  no-such-option: 1\n",
                "run.no-such-option: not an option",
            ),
            (
                "run:\n  enable-archivista: true\n",
                "not supported by oci-attest yet",
            ),
            ("run:\n  step: {a: 1}\n", "run.step: bad value"),
            (
                "run:\n  trace: sometimes\n",
                "run.trace: bad value \"sometimes\"",
            ),
            (
                "run:\n  wait-for-tree: soon\n",
                "run.wait-for-tree: bad value",
            ),
            (
                "run:\n  allow-incomplete-trace: 1\n",
                "expected true or false",
            ),
            (
                "run:\n  run-as: root\n",
                "run.run-as: who the command runs as",
            ),
            (
                "run:\n  allow-new-privileges: true\n",
                "taken from the command line only",
            ),
            (
                "run:\n  allow-readable-key: true\n",
                "taken from the command line only",
            ),
            (
                "run:\n  ? \"allow-incom\\n\\nkey\"\n  : 1\n",
                "run.allow-incom\\n\\nkey: not an option",
            ),
            (
                "run:\n  \"archivista-\\nserver\": x\n",
                "not supported by oci-attest yet: --archivista-\\nserver",
            ),
            ("run: [1\n", "not a usable config"),
            ("run:\n  step: a\n  step: b\n", "duplicate"),
            ("- 1\n", "not a mapping of sections"),
        ] {
            std::fs::write(&config, text).unwrap();
            let error = apply(args(), dir.path()).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(message.contains(".oci-attest.yaml"), "{message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
    }

    /// 1 MiB of the shapes that make YAML parsers slow (nesting, floods of nodes, anchors,
    /// aliases, documents, long keys): each is parsed or refused with a one-line error.
    #[test]
    fn hostile_shapes_are_parsed_or_refused() {
        const MIB: usize = 1 << 20;
        let nested = |open: &str, close: &str, n: usize| open.repeat(n) + &close.repeat(n);
        let mut laughs = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
        for (previous, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
            let refs = vec![format!("*{previous}"); 9].join(",");
            laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let shapes = [
            (
                "nested brackets",
                format!("run: {}", nested("[", "]", 100 * 1024)),
            ),
            ("open brackets", "[".repeat(MIB)),
            ("nested braces", nested("{a: ", "}", MIB / 8)),
            (
                "flow sequence",
                format!("run: [{}]", "a,".repeat(MIB / 2 - 8)),
            ),
            (
                "many keys",
                (0..MIB / 12).map(|i| format!("k{i}: v\n")).collect(),
            ),
            (
                "block nesting",
                (0..1400).map(|i| " ".repeat(i) + "k:\n").collect(),
            ),
            ("billion laughs", laughs),
            ("many documents", "---\na: 1\n".repeat(MIB / 10)),
            (
                "anchors",
                (0..MIB / 20).map(|i| format!("k{i}: &a{i} v\n")).collect(),
            ),
            ("long key", format!("\"{}\": 1\n", "x".repeat(MIB - 10))),
            (
                "long scalar",
                format!("run:\n  step: {}\n", "x".repeat(MIB - 20)),
            ),
            ("complex keys", "? ".repeat(MIB / 2)),
        ];
        for (name, text) in shapes {
            assert!(text.len() <= MIB + 64, "{name}: {}", text.len());
            match parse(&text) {
                Ok(_) => {}
                Err(error) => {
                    let message = format!("{error:#}");
                    assert_eq!(message.lines().count(), 1, "{name}: {message}");
                    assert!(message.len() < 300, "{name}: {message}");
                }
            }
        }
    }

    #[test]
    fn only_run_and_verify_read_config_and_global_values_are_skipped() {
        assert_eq!(
            subcommand(&os(&[
                "oci-attest",
                "--log-format",
                "json",
                "run",
                "--",
                "x"
            ])),
            Some((3, "run"))
        );
        assert_eq!(
            subcommand(&os(&["oci-attest", "-c", "run", "verify", "a"])),
            Some((3, "verify"))
        );
        assert_eq!(subcommand(&os(&["oci-attest", "inspect", "run"])), None);
        assert_eq!(
            explicit_config(&os(&["oci-attest", "run", "-cx.yaml", "--", "-c", "y"])).unwrap(),
            Some(PathBuf::from("x.yaml"))
        );
    }
}
