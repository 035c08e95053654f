//! What a witness/cilock user's invocation brings that the argument parser alone does not
//! handle, applied to the raw arguments before parsing:
//! - witness flags oci-attest does not support yet get one clear line (exit 2) instead of a
//!   "did you mean" suggestion that would do something else;
//! - the `run:` section of a config file (`.oci-attest.yaml`, else an existing `.witness.yaml`,
//!   in the current directory) supplies `run` options that the command line does not give:
//!   flags override the file.
//!
//! Config keys are `run`'s long flag names without `--` (as in witness):
//! ```yaml
//! run:
//!   signer-file-key-path: key.pem
//!   outfile: att.json
//!   attestations: [environment, git, oci]
//!   attestor-product-exclude-glob: ["*.log"]
//!   trace: false          # witness's boolean; oci-attest also takes auto|ebpf|off
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_yaml::Value;

/// Config files looked for in the current directory, in this order.
pub const CONFIG_FILES: &[&str] = &[".oci-attest.yaml", ".witness.yaml"];

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// witness/cilock flags (or flag families, ending in `-`) with no oci-attest equivalent yet.
const UNSUPPORTED_FLAGS: &[&str] = &[
    "--enable-archivista",
    "--archivista-server",
    "--archivista-",
    "--signer-fulcio-",
    "--signer-kms-",
    "--signer-spiffe-",
    "--signer-vault-",
];

/// The first unsupported witness flag among `args` (before `--`), as the message to print.
pub fn unsupported_flag(args: &[OsString]) -> Option<String> {
    args.iter()
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.to_str())
        .find_map(|arg| {
            let flag = arg.split_once('=').map_or(arg, |(flag, _)| flag);
            let unsupported = UNSUPPORTED_FLAGS.iter().any(|known| {
                if known.ends_with('-') {
                    flag.starts_with(known)
                } else {
                    flag == *known
                }
            });
            unsupported.then(|| format!("not supported by oci-attest yet: {flag}"))
        })
}

/// The config file that applies in `dir`, if any.
pub fn find_config(dir: &Path) -> Option<PathBuf> {
    CONFIG_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// `args` (program name first) with the `run:` options of `config` inserted right after the
/// `run` subcommand, for every option the command line does not set itself. Arguments of other
/// subcommands are returned unchanged.
pub fn apply_config(args: Vec<OsString>, config: &Path) -> anyhow::Result<Vec<OsString>> {
    let Some(run_at) = args
        .iter()
        .take_while(|arg| *arg != "--")
        .position(|arg| arg == "run")
    else {
        return Ok(args);
    };
    let options = read_run_section(config)?;
    let given = &args[run_at + 1..];
    let mut inserted = Vec::new();
    for (key, value) in options {
        let flag = format!("--{key}");
        if let Some(message) = unsupported_flag(&[OsString::from(&flag)]) {
            anyhow::bail!("{}: run.{key}: {message}", config.display());
        }
        let Some(spellings) = run_flag_spellings(&key) else {
            anyhow::bail!(
                "{}: run.{key}: not an option of `oci-attest run`",
                config.display()
            );
        };
        if is_given(given, &spellings) {
            continue;
        }
        inserted.extend(
            flag_arguments(&flag, &key, &value)
                .with_context(|| format!("{}: run.{key}: unsupported value", config.display()))?,
        );
    }
    let mut rewritten = args;
    rewritten.splice(run_at + 1..run_at + 1, inserted);
    Ok(rewritten)
}

/// The `run:` mapping of a config file, as (key, value) in file order.
fn read_run_section(config: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let display = config.display();
    let metadata = std::fs::metadata(config).with_context(|| format!("{display}: cannot read"))?;
    if !metadata.is_file() || metadata.len() > MAX_CONFIG_BYTES {
        anyhow::bail!("{display}: not a regular file of at most {MAX_CONFIG_BYTES} bytes");
    }
    let text =
        std::fs::read_to_string(config).with_context(|| format!("{display}: cannot read"))?;
    let document: Value =
        serde_yaml::from_str(&text).with_context(|| format!("{display}: not valid YAML"))?;
    let run = match document.get("run") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Mapping(run)) => run,
        Some(_) => anyhow::bail!("{display}: `run` is not a mapping"),
    };
    run.iter()
        .map(|(key, value)| {
            let key = key
                .as_str()
                .with_context(|| format!("{display}: a key of `run` is not a string"))?;
            Ok((key.to_owned(), value.clone()))
        })
        .collect()
}

/// `--name` and `-x` spellings of `run`'s option `name`, if it has one.
fn run_flag_spellings(name: &str) -> Option<Vec<String>> {
    use clap::CommandFactory as _;
    #[derive(clap::Parser)]
    struct RunOnly {
        #[command(flatten)]
        run: crate::commands::run::Args,
    }
    let command = RunOnly::command();
    let argument = command.get_arguments().find(|argument| {
        argument.get_long() == Some(name)
            || argument
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })?;
    let mut spellings: Vec<String> = argument
        .get_long_and_visible_aliases()
        .into_iter()
        .flatten()
        .chain(argument.get_all_aliases().into_iter().flatten())
        .map(|long| format!("--{long}"))
        .collect();
    spellings.extend(argument.get_short().map(|short| format!("-{short}")));
    Some(spellings)
}

fn is_given(args: &[OsString], spellings: &[String]) -> bool {
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

/// The command-line arguments for one config entry.
fn flag_arguments(flag: &str, key: &str, value: &Value) -> anyhow::Result<Vec<OsString>> {
    let scalar = |value: &Value| -> anyhow::Result<String> {
        match value {
            Value::String(text) => Ok(text.clone()),
            Value::Number(number) => Ok(number.to_string()),
            Value::Bool(flag) => Ok(flag.to_string()),
            _ => anyhow::bail!("expected a string, number or list of them"),
        }
    };
    let pair = |value: String| vec![OsString::from(flag), OsString::from(value)];
    Ok(match (key, value) {
        // witness's `trace: true|false`.
        ("trace", Value::Bool(true)) => pair("ebpf".to_owned()),
        ("trace", Value::Bool(false)) => pair("off".to_owned()),
        (_, Value::Bool(true)) => vec![OsString::from(flag)],
        (_, Value::Bool(false)) | (_, Value::Null) => Vec::new(),
        (_, Value::Sequence(items)) => {
            let mut arguments = Vec::new();
            for item in items {
                arguments.extend(pair(scalar(item)?));
            }
            arguments
        }
        (_, other) => pair(scalar(other)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn unsupported_witness_flags_are_named() {
        for flag in [
            "--enable-archivista",
            "--archivista-server=https://x",
            "--signer-fulcio-url",
            "--signer-kms-ref",
        ] {
            let args = os(&["oci-attest", "run", flag, "--", "true"]);
            let message = unsupported_flag(&args).unwrap();
            assert!(
                message.starts_with("not supported by oci-attest yet: --"),
                "{message}"
            );
            assert!(!message.contains('='), "{message}");
        }
        assert_eq!(
            unsupported_flag(&os(&[
                "oci-attest",
                "run",
                "--",
                "x",
                "--enable-archivista"
            ])),
            None
        );
    }

    #[test]
    fn config_fills_what_the_command_line_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(".witness.yaml");
        std::fs::write(
            &config,
            "run:\n  signer-file-key-path: key.pem\n  outfile: from-config.json\n  trace: false\n  \
             attestations: [environment, oci]\n  allow-incomplete-trace: true\n\
             verify:\n  policy: p.json\n",
        )
        .unwrap();
        let args = os(&["oci-attest", "-v", "run", "-o", "cli.json", "--", "true"]);
        let rewritten = apply_config(args, &config).unwrap();
        let text: Vec<String> = rewritten
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            text,
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
        let untouched = os(&["oci-attest", "inspect", "x.tar"]);
        assert_eq!(apply_config(untouched.clone(), &config).unwrap(), untouched);
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
            ("run:\n  step: {a: 1}\n", "run.step: unsupported value"),
            ("run: [1\n", "not valid YAML"),
        ] {
            std::fs::write(&config, text).unwrap();
            let error = apply_config(args(), &config).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(message.contains(".oci-attest.yaml"), "{message}");
        }
    }
}
