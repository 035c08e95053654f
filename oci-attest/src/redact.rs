//! The one redaction policy for every string an attestation records: environment variables,
//! the command line (`cmd`), each traced process's `cmdline`, and any other text.
//!
//! What is hidden:
//! - the values of variables whose names look sensitive (built-in globs plus
//!   `--env-add-sensitive-key`, minus `--env-allow-sensitive-key`), and those values wherever
//!   else they appear (a secret passed on in argv);
//! - explicitly given secrets (the signing key's passphrase);
//! - the userinfo of URLs (`https://user:pass@host/x` becomes `https://host/x`);
//! - values of credential flags, as `--flag value` and `--flag=value`, also inside `sh -c`
//!   scripts; for `user:password` flags (`--creds`, `-u`) only the password;
//! - the value of `Authorization:`-style headers (`curl -H 'Authorization: Bearer …'`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;

/// What a hidden value is replaced with.
pub const HIDDEN: &str = "******";

/// Name globs (matched case-insensitively) whose values are hidden. Unlike cilock there is no
/// `*PAT*` or `*PWD*`, which hide PATH, PWD and OLDPWD by accident.
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

/// Flags whose whole value is a secret.
const SECRET_VALUE_FLAGS: &[&str] = &[
    "--password",
    "--passwd",
    "--pass",
    "--passphrase",
    "--src-password",
    "--dest-password",
    "--registry-token",
    "--src-registry-token",
    "--dest-registry-token",
    "--identity-token",
    "--token",
    "--access-token",
    "--auth-token",
    "--bearer-token",
    "--api-key",
    "--apikey",
    "--secret",
    "--client-secret",
    "--auth",
];

/// Flags whose value is `user[:password]`: the user stays, the password goes.
const USER_PASSWORD_FLAGS: &[&str] = &[
    "--creds",
    "--src-creds",
    "--dest-creds",
    "--from-creds",
    "--to-creds",
    "--user",
    "-u",
    "--proxy-user",
    "-U",
    "--basic-auth",
];

/// `-p` is a password only for login commands (`docker login -p`); elsewhere it is a port
/// (`docker run -p`) or a parents flag (`mkdir -p`).
const LOGIN_PASSWORD_FLAG: &str = "-p";

/// Shell words that end one command of a script (the login context ends with it).
const COMMAND_SEPARATORS: &[&str] = &["&&", "||", ";", "|", "&"];

/// Literal secrets shorter than this are not searched for in other strings: too likely to occur
/// by accident (`true`, `1`, a word of a path). Their own variable is still hidden.
const MIN_SECRET_LEN: usize = 8;
/// An explicitly given secret (a passphrase) is searched for down to this length.
const MIN_EXPLICIT_SECRET_LEN: usize = 4;

/// `scheme://user[:password]@`: the userinfo of a URL (up to the last `@` of the authority).
static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]+@").expect("valid URL regex")
});

/// `text` with the userinfo of every URL in it removed: `https://user:token@host/x` →
/// `https://host/x`. scp-like addresses (`git@host:path`) carry a login name, never a secret,
/// and are kept.
pub fn without_url_userinfo(text: &str) -> String {
    URL_USERINFO.replace_all(text, "${1}").into_owned()
}

/// Credential-carrying headers: the value (after an optional scheme word) is hidden.
static AUTH_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b((?:proxy-)?authorization|x-api-key|private-token|x-auth-token|x-registry-auth)(\s*:\s*)(?:(bearer|basic|token|digest|negotiate)\s+)?[^\s'\x22]+",
    )
    .expect("valid header regex")
});

/// One redaction policy, built once per run and applied to every string recorded.
#[derive(Clone, Debug)]
pub struct Redaction {
    sensitive_names: GlobSet,
    allowed_names: GlobSet,
    /// Literal secret values, longest first so a secret containing another is replaced whole.
    secrets: Vec<String>,
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
        Redaction::new(&[], &[]).expect("the built-in name globs are valid")
    }
}

impl Redaction {
    /// The built-in policy plus `added` sensitive name globs, minus `allowed` ones.
    pub fn new(added: &[String], allowed: &[String]) -> anyhow::Result<Redaction> {
        Ok(Redaction {
            sensitive_names: glob_set(
                SENSITIVE_NAME_GLOBS
                    .iter()
                    .copied()
                    .chain(added.iter().map(String::as_str)),
            )?,
            allowed_names: glob_set(allowed.iter().map(String::as_str))?,
            secrets: Vec::new(),
        })
    }

    /// Also hides, wherever they appear, the values of the sensitive variables among `vars`
    /// (the environment the wrapped command inherits).
    pub fn with_secret_values_of(mut self, vars: &[(String, String)]) -> Redaction {
        let values = vars
            .iter()
            .filter(|(name, value)| value.len() >= MIN_SECRET_LEN && self.is_sensitive_name(name))
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

    pub fn is_sensitive_name(&self, name: &str) -> bool {
        self.sensitive_names.is_match(name) && !self.allowed_names.is_match(name)
    }

    /// The value recorded for environment variable `name`.
    pub fn variable(&self, name: &str, value: &str) -> String {
        if self.is_sensitive_name(name) {
            HIDDEN.to_owned()
        } else {
            self.text(value)
        }
    }

    /// Any free text: URL userinfo, credential headers and known secret values hidden.
    pub fn text(&self, text: &str) -> String {
        let mut text = without_url_userinfo(text);
        text = AUTH_HEADER
            .replace_all(&text, |captures: &regex::Captures<'_>| {
                let scheme = captures
                    .get(3)
                    .map_or(String::new(), |scheme| format!("{} ", scheme.as_str()));
                format!("{}{}{scheme}{HIDDEN}", &captures[1], &captures[2])
            })
            .into_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), HIDDEN);
            }
        }
        text
    }

    /// A command line: credential flag values hidden (also inside arguments that are scripts,
    /// `sh -c '… --password x'`), then every argument as [`Redaction::text`].
    pub fn argv(&self, argv: &[String]) -> Vec<String> {
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let flagged = redact_flag_values(&words);
        flagged
            .into_iter()
            .map(|word| {
                let word = if word.contains(char::is_whitespace) {
                    redact_script(&word)
                } else {
                    word
                };
                self.text(&word)
            })
            .collect()
    }
}

/// The words of a script (split on whitespace, separators kept) with flag values hidden.
fn redact_script(script: &str) -> String {
    static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\S+").expect("valid regex"));
    let spans: Vec<regex::Match<'_>> = WORD.find_iter(script).collect();
    let words: Vec<&str> = spans.iter().map(regex::Match::as_str).collect();
    let redacted = redact_flag_values(&words);
    let mut out = String::with_capacity(script.len());
    let mut last = 0;
    for (span, word) in spans.iter().zip(redacted) {
        out.push_str(&script[last..span.start()]);
        out.push_str(&word);
        last = span.end();
    }
    out.push_str(&script[last..]);
    out
}

/// Hides the values of credential flags in a word list, `--flag value` and `--flag=value`.
fn redact_flag_values(words: &[&str]) -> Vec<String> {
    let mut in_login = false;
    let mut out = Vec::with_capacity(words.len());
    let mut pending: Option<bool> = None; // Some(keep_user) when the next word is a value
    for word in words {
        if let Some(keep_user) = pending.take() {
            out.push(hide_value(word, keep_user));
            continue;
        }
        if *word == "login" {
            in_login = true;
        } else if COMMAND_SEPARATORS.contains(word) || word.ends_with(';') {
            in_login = false;
        }
        let (flag, inline_value) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => (flag, Some(value)),
            _ => (*word, None),
        };
        let keep_user =
            if SECRET_VALUE_FLAGS.contains(&flag) || (in_login && flag == LOGIN_PASSWORD_FLAG) {
                Some(false)
            } else if USER_PASSWORD_FLAGS.contains(&flag) {
                Some(true)
            } else {
                None
            };
        match (keep_user, inline_value) {
            (Some(keep_user), Some(value)) => {
                out.push(format!("{flag}={}", hide_value(value, keep_user)));
            }
            (Some(keep_user), None) => {
                pending = Some(keep_user);
                out.push((*word).to_owned());
            }
            (None, _) => out.push((*word).to_owned()),
        }
    }
    out
}

/// `user:password` keeps `user` when `keep_user`; anything else is hidden whole.
fn hide_value(value: &str, keep_user: bool) -> String {
    match value.split_once(':') {
        Some((user, _)) if keep_user => format!("{user}:{HIDDEN}"),
        _ if keep_user => value.to_owned(),
        _ => HIDDEN.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn credential_flags_in_both_forms_and_inside_scripts() {
        let policy = Redaction::new(&[], &[]).unwrap();
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
        let policy = Redaction::new(&["MY_CUSTOM".into()], &["GITHUB_TOKEN".into()])
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

    #[test]
    fn bad_pattern_is_an_error() {
        let error = Redaction::new(&["[".into()], &[]).unwrap_err();
        assert!(format!("{error:#}").contains("invalid environment key pattern"));
    }
}
