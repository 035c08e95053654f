//! The one redaction policy for every string an attestation records: the environment, the
//! command line (`cmd`), every traced process's `cmdline` and each exec's `argv`, git remotes
//! and messages, and any other text. It hides secrets by rule, so tools nobody listed are
//! covered (`docs/format.md`, "Redaction", states the rules for readers of attestations):
//!
//! - **credential-named flags** of any program, `--flag value`, `--flag=value`, `-flag value`:
//!   a name with a word such as pass, password, secret, token, key, auth, credential, cookie,
//!   bearer, signature, otp ([`names`]); values of `--key`-style flags that are files, and
//!   names of references (`--password-file`, `--key-id`) are kept;
//! - a table of **short flags and positional secrets** no name reveals (`mysql -pVALUE`,
//!   `sshpass -p`, `redis-cli -a`, `openssl -k`, `curl -u user:pass`, `-p` of any `login`,
//!   `vault login TOKEN`, `htpasswd -b`, values stored by `gh secret set`/`kubectl create secret`
//!   /`vault kv put`) ([`command`]);
//! - **assignments** `NAME=value` with a sensitive name anywhere: argv words, `sh -c` scripts
//!   (split into shell words, [`shell`]), `-e`/`--env`/`--build-arg`/`--set` values, URL query
//!   parameters, connection strings; **headers** and `key: value` pairs with a credential name
//!   (Authorization, Cookie, X-*-Token, Basic credentials with their base64); JSON members;
//!   **URL userinfo** ([`text`]);
//! - **known values**: the values of the sensitive variables of the run's environment and the
//!   key passphrase, wherever they appear (copied into another variable or an argument);
//! - `--redact-regex` patterns of the user.

mod command;
mod names;
mod shell;
mod text;

use std::collections::BTreeSet;
use std::ops::Range;

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;

pub use text::without_url_userinfo;

/// What a hidden value is replaced with.
pub const HIDDEN: &str = "******";

/// Name globs (matched case-insensitively) of environment variables whose values are hidden.
/// Unlike cilock there is no `*PAT*` or `*PWD*`, which hide PATH, PWD and OLDPWD by accident.
const SENSITIVE_NAME_GLOBS: &[&str] = &[
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*PASSPHRASE*",
    "*API_KEY*",
    "*APIKEY*",
    "*CREDENTIAL*",
    "*PRIVATE*",
    "*SIGNING*",
    "*ACCESS_KEY*",
    "*AUTH*",
    "*BEARER*",
    "*JWT*",
    "*DSN*",
    "*DATABASE_URL*",
    "*CONNECTION_STRING*",
    "*WEBHOOK*",
    "*COOKIE*",
    "*SESSION*",
    "*_KEY",
    "*_PASS",
    "*_PW",
];

/// Known secret values shorter than this are not searched for in other strings: too likely to
/// occur by accident (`true`, `1`, a word of a path). Their own variable is still hidden.
const MIN_SECRET_LEN: usize = 6;
/// An explicitly given secret (a passphrase) is searched for down to this length.
const MIN_EXPLICIT_SECRET_LEN: usize = 4;

/// Scripts inside scripts (`sh -c "ssh host 'docker login -p x'"`) are followed this deep.
const MAX_SCRIPT_DEPTH: usize = 4;

/// One redaction policy, built once per run and applied to every string recorded.
#[derive(Clone, Debug)]
pub struct Redaction {
    sensitive_names: GlobSet,
    allowed_names: GlobSet,
    /// Literal secret values, longest first so a secret containing another is replaced whole.
    secrets: Vec<String>,
    /// `--redact-regex` patterns.
    patterns: Vec<Regex>,
}

fn glob_set<'a>(patterns: impl IntoIterator<Item = &'a str>) -> anyhow::Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .with_context(|| format!("invalid environment key pattern {pattern:?}"))?;
        builder.add(glob);
    }
    Ok(builder.build()?)
}

impl Default for Redaction {
    /// The built-in policy alone.
    fn default() -> Redaction {
        Redaction::new(&[], &[], true).expect("the built-in name globs are valid")
    }
}

impl Redaction {
    /// The policy with `added` sensitive variable-name globs, minus `allowed` ones; the
    /// built-in globs only with `defaults` (witness's `--env-disable-default-sensitive-vars`
    /// turns them off).
    pub fn new(added: &[String], allowed: &[String], defaults: bool) -> anyhow::Result<Redaction> {
        let builtin = if defaults { SENSITIVE_NAME_GLOBS } else { &[] };
        Ok(Redaction {
            sensitive_names: glob_set(
                builtin
                    .iter()
                    .copied()
                    .chain(added.iter().map(String::as_str)),
            )?,
            allowed_names: glob_set(allowed.iter().map(String::as_str))?,
            secrets: Vec::new(),
            patterns: Vec::new(),
        })
    }

    /// Also hides every match of these regular expressions (only their capture groups, if
    /// they have any).
    pub fn with_patterns(mut self, patterns: &[String]) -> anyhow::Result<Redaction> {
        for pattern in patterns {
            self.patterns.push(
                Regex::new(pattern)
                    .with_context(|| format!("--redact-regex: invalid pattern {pattern:?}"))?,
            );
        }
        Ok(self)
    }

    /// Also hides, wherever they appear, the values of the sensitive variables among `vars`
    /// (the environment the wrapped command inherits). A value that names an existing file
    /// (`SSH_AUTH_SOCK`) is where a secret is, not a secret, and is not searched for.
    pub fn with_secret_values_of(mut self, vars: &[(String, String)]) -> Redaction {
        let values = vars
            .iter()
            .filter(|(name, value)| {
                value.len() >= MIN_SECRET_LEN
                    && self.is_sensitive_name(name)
                    && !(value.starts_with('/') && std::path::Path::new(value).exists())
            })
            .map(|(_, value)| value.clone())
            .collect::<Vec<_>>();
        self.add_secrets(values);
        self
    }

    /// Also hides `secret` (e.g. the key passphrase) wherever it appears.
    pub fn with_secret(mut self, secret: &str) -> Redaction {
        if secret.len() >= MIN_EXPLICIT_SECRET_LEN {
            self.add_secrets([secret.to_owned()]);
        }
        self
    }

    fn add_secrets(&mut self, values: impl IntoIterator<Item = String>) {
        let all: BTreeSet<String> = self.secrets.drain(..).chain(values).collect();
        self.secrets = all.into_iter().collect();
        self.secrets
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// An environment variable `name` whose value is hidden (the globs, minus allowed names).
    pub fn is_sensitive_name(&self, name: &str) -> bool {
        self.sensitive_names.is_match(name) && !self.allowed_names.is_match(name)
    }

    /// An assignment name (`NAME=value` anywhere) whose value is hidden: a sensitive variable
    /// name, or a name with a credential word; allowed names stay visible.
    fn is_secret_assignment(&self, name: &str) -> bool {
        (self.sensitive_names.is_match(name) || names::is_credential(name))
            && !self.allowed_names.is_match(name)
    }

    /// The value recorded for environment variable `name`.
    pub fn variable(&self, name: &str, value: &str) -> String {
        if self.is_sensitive_name(name) {
            HIDDEN.to_owned()
        } else {
            self.text(value)
        }
    }

    /// Any recorded string: URL userinfo removed; text with spaces read as a shell script too;
    /// headers, assignments, JSON members, known values and user patterns hidden.
    pub fn text(&self, text: &str) -> String {
        let text = without_url_userinfo(text);
        let mut ranges = Vec::new();
        if text.contains(char::is_whitespace) {
            self.script_secrets(&text, 0, &mut ranges);
        }
        ranges.extend(text::secrets(&text, &|name| {
            self.is_secret_assignment(name)
        }));
        for secret in &self.secrets {
            ranges.extend(
                text.match_indices(secret.as_str())
                    .map(|(at, found)| at..at + found.len()),
            );
        }
        for pattern in &self.patterns {
            for captures in pattern.captures_iter(&text) {
                let groups: Vec<Range<usize>> = captures
                    .iter()
                    .skip(1)
                    .flatten()
                    .map(|group| group.range())
                    .collect();
                if groups.is_empty() {
                    ranges.extend(captures.get(0).map(|whole| whole.range()));
                } else {
                    ranges.extend(groups);
                }
            }
        }
        hide_ranges(&text, ranges)
    }

    /// A command line: the command rules over its words (a credential flag's value is the
    /// next word), then every word as [`Redaction::text`].
    pub fn argv(&self, argv: &[String]) -> Vec<String> {
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut per_word: Vec<Vec<Range<usize>>> = vec![Vec::new(); words.len()];
        for (index, range) in command::secrets(&words, &|name| self.is_secret_assignment(name)) {
            per_word[index].push(range);
        }
        words
            .iter()
            .zip(per_word)
            .map(|(word, ranges)| self.text(&hide_ranges(word, ranges)))
            .collect()
    }

    /// The secrets of the shell commands in `script` (its words' values by the command rules,
    /// and scripts nested in its words), as ranges of `script`.
    fn script_secrets(&self, script: &str, depth: usize, ranges: &mut Vec<Range<usize>>) {
        for words in shell::commands(script) {
            let texts: Vec<&str> = words.iter().map(|word| word.text.as_str()).collect();
            let is_secret = |name: &str| self.is_secret_assignment(name);
            for (index, range) in command::secrets(&texts, &is_secret) {
                ranges.extend(words[index].script_range(&range));
            }
            if depth + 1 >= MAX_SCRIPT_DEPTH {
                continue;
            }
            for word in words
                .iter()
                .filter(|word| word.text.contains(char::is_whitespace))
            {
                let mut nested = Vec::new();
                self.script_secrets(&word.text, depth + 1, &mut nested);
                ranges.extend(nested.iter().filter_map(|range| word.script_range(range)));
            }
        }
    }
}

/// `text` with every range (merged where they overlap or touch) replaced by [`HIDDEN`].
fn hide_ranges(text: &str, mut ranges: Vec<Range<usize>>) -> String {
    if ranges.is_empty() {
        return text.to_owned();
    }
    ranges.sort_by_key(|range| (range.start, range.end));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for range in ranges {
        let range = floor_boundary(text, range.start)..ceil_boundary(text, range.end);
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ if range.is_empty() => {}
            _ => merged.push(range),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for range in merged {
        out.push_str(&text[at..range.start]);
        out.push_str(HIDDEN);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn credential_flags_in_both_forms_and_inside_scripts() {
        let policy = Redaction::default();
        let argv = words(&[
            "skopeo",
            "copy",
            "--src-creds",
            "alice:pw-one",
            "--dest-creds=bob:pw-two",
            "--registry-token",
            "tok-three",
            "--password=pw-four",
            "docker://example.com/a:1",
            "oci:out",
        ]);
        assert_eq!(
            policy.argv(&argv),
            words(&[
                "skopeo",
                "copy",
                "--src-creds",
                "alice:******",
                "--dest-creds=bob:******",
                "--registry-token",
                "******",
                "--password=******",
                "docker://example.com/a:1",
                "oci:out",
            ])
        );
        let script = words(&[
            "sh",
            "-c",
            "docker login -u me -p pw-five  reg && mkdir -p out",
        ]);
        assert_eq!(
            policy.argv(&script)[2],
            "docker login -u me -p ******  reg && mkdir -p out"
        );
        assert_eq!(
            policy.argv(&words(&["mkdir", "-p", "out"])),
            words(&["mkdir", "-p", "out"])
        );
        assert_eq!(
            policy.argv(&words(&[
                "curl",
                "-u",
                "carol:pw-six",
                "-H",
                "Authorization: Bearer abc.def"
            ])),
            words(&[
                "curl",
                "-u",
                "carol:******",
                "-H",
                "Authorization: Bearer ******"
            ])
        );
    }

    #[test]
    fn urls_keep_their_host_and_variables_follow_the_globs() {
        let policy = Redaction::new(&["MY_CUSTOM".into()], &["GITHUB_TOKEN".into()], true)
            .unwrap()
            .with_secret_values_of(&[("NPM_AUTH".into(), "npm-secret-value".into())])
            .with_secret("open sesame");
        assert_eq!(
            policy.variable("HTTPS_PROXY", "http://user:pw@proxy:3128/"),
            "http://proxy:3128/"
        );
        assert_eq!(
            policy.variable("HOME", "/home/x and npm-secret-value"),
            "/home/x and ******"
        );
        assert_eq!(policy.variable("my_custom", "x"), HIDDEN);
        assert_eq!(policy.variable("GITHUB_TOKEN", "shown"), "shown");
        for name in ["SENTRY_DSN", "DB_PASS", "ADMIN_PW", "DEPLOY_KEY", "X_JWT"] {
            assert_eq!(policy.variable(name, "v"), HIDDEN, "{name}");
        }
        for name in ["PATH", "PWD", "OLDPWD", "KEYBOARD", "PASSAGE"] {
            assert_eq!(policy.variable(name, "v"), "v", "{name}");
        }
        assert_eq!(policy.text("echo open sesame"), "echo ******");
        assert_eq!(
            policy.text("git clone https://tok@github.com/o/r"),
            "git clone https://github.com/o/r"
        );
    }

    /// Every credential form of the shared table, as argv and as a line of a script, loses its
    /// secret; the look-alikes stay word for word.
    #[test]
    fn every_credential_form_is_hidden_and_look_alikes_are_not() {
        use oci_attest_tests::credentials::{forms, look_alikes, shell_line};
        let policy = Redaction::default();
        let forms = forms();
        assert!(forms.len() >= 60, "{}", forms.len());
        let mut leaks = Vec::new();
        for form in &forms {
            let argv = policy.argv(&form.argv).join(" ");
            let line = format!("set -e; {}; echo done", shell_line(&form.argv));
            let script = policy.text(&line);
            for (how, recorded) in [("argv", &argv), ("script", &script)] {
                // The program stays readable; the secret is hidden (or its URL userinfo gone).
                if recorded.contains(&form.secret) || !recorded.contains(&form.argv[0]) {
                    leaks.push(format!("{} ({how}): {recorded}", form.name));
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "{} leaks:\n{}",
            leaks.len(),
            leaks.join("\n")
        );
        for argv in look_alikes() {
            assert_eq!(policy.argv(&argv), argv);
            let line = shell_line(&argv);
            assert_eq!(policy.text(&line), line);
        }
    }

    #[test]
    fn user_patterns_and_digest_free_known_values() {
        let policy = Redaction::default()
            .with_patterns(&["corp-[0-9]+".into(), "id=(\\w+)".into()])
            .unwrap()
            .with_secret_values_of(&[
                ("DEPLOY_TOKEN".into(), "tok-value-123".into()),
                ("SSH_AUTH_SOCK".into(), "/".into()),
            ]);
        assert_eq!(
            policy.text("ticket corp-42 for id=alice, copy tok-value-123 into X"),
            "ticket ****** for id=******, copy ****** into X"
        );
        assert!(Redaction::default().with_patterns(&["(".into()]).is_err());
        let disabled = Redaction::new(&["MINE".into()], &[], false).unwrap();
        assert!(!disabled.is_sensitive_name("GITHUB_TOKEN"));
        assert!(disabled.is_sensitive_name("MINE"));
        // The name rule still hides credential assignments in command lines.
        assert_eq!(
            disabled.argv(&words(&["env", "GITHUB_TOKEN=abc"])),
            words(&["env", "GITHUB_TOKEN=******"])
        );
    }

    #[test]
    fn bad_pattern_is_an_error() {
        let error = Redaction::new(&["[".into()], &[], true).unwrap_err();
        assert!(format!("{error:#}").contains("invalid environment key pattern"));
    }
}
