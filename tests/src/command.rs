//! Running external tools with errors that say which command failed and what it printed.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context as _};

/// The command line as a shell user would read it, for error messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// Asserts that a finished command exited with `code`, printing what it said otherwise.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", output_text(output));
}

/// Asserts that a finished command exited with `code` and said `message` on stderr.
#[track_caller]
pub fn assert_exit_saying(output: &Output, code: i32, message: &str) {
    assert_exit(output, code);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(message),
        "expected {message:?} on stderr: {}",
        output_text(output)
    );
}

/// Runs `command` to completion with captured output; fails unless it exits 0.
pub fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Runs `command` and returns its stdout as text, trimmed.
pub fn stdout_of(command: &mut Command) -> anyhow::Result<String> {
    let output = run(command)?;
    String::from_utf8(output.stdout)
        .map(|text| text.trim().to_owned())
        .with_context(|| format!("`{}` printed non-UTF-8 output", describe(command)))
}

/// Runs a bash pipeline (with `pipefail`, so a failing `tar` is not hidden by `sha256sum`);
/// `args` become `$1`, `$2`, ... so paths need no quoting.
pub fn sh<I, S>(script: &str, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    stdout_of(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script, "bash"])
            .args(args),
    )
}

/// The lowercase hex SHA-256 of a file, computed by coreutils' `sha256sum`.
pub fn sha256sum(path: &std::path::Path) -> anyhow::Result<String> {
    let line = sh(r#"sha256sum < "$1""#, [path])?;
    first_hex_word(&line).with_context(|| {
        format!(
            "sha256sum of {}: unexpected output {line:?}",
            path.display()
        )
    })
}

/// The first whitespace-separated word of `sha256sum` output, checked to be 64 hex digits.
pub fn first_hex_word(line: &str) -> Option<String> {
    let word = line.split_whitespace().next()?;
    (word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| word.to_ascii_lowercase())
}
