//! Secrets in one command's words, by rule: the values of credential-named flags of any program
//! (`--flag value`, `--flag=value`, `-flag value`), `NAME=value` assignments with a credential
//! name (argv words, `export`, `-e`, `--build-arg`, `--set`, `-var`), and a short table of
//! well-known short flags and positional secrets that no name reveals (`mysql -pVALUE`,
//! `sshpass -p`, `docker login -p`, `vault login TOKEN`...).

use std::ops::Range;

use super::names::{classify, is_key_file_value, is_reference_value, Credential};

/// Words that end one command of an argv (after an unparsed `sh -c` split, say).
const COMMAND_SEPARATORS: &[&str] = &["&&", "||", ";", "|", "&"];

/// Short flags whose value is a secret although their name says nothing, for the programs
/// that use them so. `attached_only`: the value is only ever written glued to the flag
/// (`mysql -p` alone prompts, and the next word is the database).
struct ShortFlag {
    programs: &'static [&'static str],
    flags: &'static [&'static str],
    attached_only: bool,
    user_password: bool,
}

const SHORT_FLAGS: &[ShortFlag] = &[
    ShortFlag {
        programs: &[
            "mysql",
            "mariadb",
            "mysqldump",
            "mariadb-dump",
            "mysqladmin",
            "mysqlimport",
            "mysqlshow",
            "mysqlcheck",
            "mysqlpump",
            "mysqlsh",
        ],
        flags: &["-p"],
        attached_only: true,
        user_password: false,
    },
    ShortFlag {
        programs: &["sshpass", "twine"],
        flags: &["-p"],
        attached_only: false,
        user_password: false,
    },
    ShortFlag {
        programs: &["redis-cli", "keydb-cli", "valkey-cli"],
        flags: &["-a"],
        attached_only: false,
        user_password: false,
    },
    ShortFlag {
        programs: &["openssl"],
        flags: &["-k", "-K"],
        attached_only: false,
        user_password: false,
    },
    ShortFlag {
        programs: &["curl"],
        flags: &[
            "-u",
            "-U",
            "--user",
            "--proxy-user",
            "-E",
            "--cert",
            "--proxy-cert",
        ],
        attached_only: false,
        user_password: true,
    },
    ShortFlag {
        programs: &["curl"],
        flags: &["-b"],
        attached_only: false,
        user_password: false,
    },
];

/// In a `login` command (`docker login`, `helm registry login`, `az login`), `-p` is the
/// password; elsewhere it is a port (`docker run -p`) or parents (`mkdir -p`).
const LOGIN_PASSWORD_FLAGS: &[&str] = &["-p"];

/// In a command that stores a secret (`gh secret set`, `kubectl create secret`,
/// `az keyvault secret set`, `docker secret create`), these flags carry the secret's value.
const SECRET_VALUE_FLAGS: &[&str] = &["-b", "--body", "--value", "--data"];

/// ... and these carry `key=value`, the value being the secret.
const LITERAL_FLAGS: &[&str] = &["--from-literal", "--literal"];

/// What the rules have decided about the words so far.
#[derive(Default)]
struct Context {
    /// The positional words seen, lowercased (a program run by its path: its file name).
    seen: Vec<String>,
    login: bool,
    set: bool,
    storing_secret: bool,
}

impl Context {
    fn seen(&self, names: &[&str]) -> bool {
        self.seen.iter().any(|word| names.contains(&word.as_str()))
    }
}

/// What to do with the value of a credential flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hide {
    Whole,
    /// `user:password`: only what follows the first `:` (all of it without one).
    AfterColon,
    /// `--key`-style: unless it is a file or reference.
    UnlessFile,
    /// curl's `-b`: a `name=value` cookie (without `=` it names a cookie file).
    Cookie,
    /// `key=value`: the value.
    AfterEquals,
}

impl Hide {
    fn of(kind: Credential) -> Option<Hide> {
        match kind {
            Credential::Secret => Some(Hide::Whole),
            Credential::UserPassword => Some(Hide::AfterColon),
            Credential::KeyOrPath => Some(Hide::UnlessFile),
            Credential::Reference => None,
        }
    }

    /// The part of `value` to hide.
    fn range(self, value: &str) -> Option<Range<usize>> {
        if value.is_empty() || is_reference_value(value) {
            return None;
        }
        match self {
            Hide::Whole => Some(0..value.len()),
            Hide::AfterColon => match value.find(':') {
                Some(colon) if colon + 1 < value.len() => Some(colon + 1..value.len()),
                Some(_) => None,
                None => Some(0..value.len()),
            },
            Hide::UnlessFile => (!is_key_file_value(value)).then_some(0..value.len()),
            Hide::Cookie => value.contains('=').then_some(0..value.len()),
            Hide::AfterEquals => match value.find('=') {
                Some(equals) if equals + 1 < value.len() => Some(equals + 1..value.len()),
                Some(_) => None,
                None => Some(0..value.len()),
            },
        }
    }
}

/// `name` looks like a shell or config assignment name (`DB_PASSWORD`, `db.password`,
/// `//registry/:_authToken`), not a flag or a path with `=` in it.
fn assignment(word: &str) -> Option<(&str, usize)> {
    let (name, _) = word.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with('-')
        && !name.contains(char::is_whitespace)
        && name.chars().any(char::is_alphabetic);
    valid.then_some((name, name.len() + 1))
}

/// The ranges of `words` (one command) that are secrets, as (word index, byte range).
/// `is_secret_name` says whether an assignment's name is sensitive (the environment globs and
/// the name rule, minus the names allowed).
pub fn secrets(
    words: &[&str],
    is_secret_name: &dyn Fn(&str) -> bool,
) -> Vec<(usize, Range<usize>)> {
    let mut hidden = Vec::new();
    let mut hide = |index: usize, range: Option<Range<usize>>| {
        if let Some(range) = range {
            hidden.push((index, range));
        }
    };
    let mut context = Context::default();
    let mut pending: Option<Hide> = None;
    let mut positionals: Vec<usize> = Vec::new();
    for (index, word) in words.iter().enumerate() {
        if COMMAND_SEPARATORS.contains(word) {
            context = Context::default();
            pending = None;
            positionals.clear();
            continue;
        }
        if let Some(how) = pending.take() {
            if !word.starts_with('-') || *word == "-" {
                hide(index, how.range(word));
                continue;
            }
        }
        // An assignment's value, wherever it stands: `NAME=value`, `export NAME=value`, the
        // value of `-e`, `--env`, `--build-arg`, `--set`, `-var`.
        if let Some((name, at)) = assignment(word) {
            hide(
                index,
                assignment_rule(name, &context, is_secret_name)
                    .and_then(|how| shift(how.range(&word[at..]), at)),
            );
            continue;
        }
        if word.len() > 1 && word.starts_with('-') {
            if let Some(how) = attached_short_value(word, &context) {
                hide(index, shift(how.range(&word[2..]), 2));
                continue;
            }
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) => (name, Some((value, name.len() + 1))),
                None => (*word, None),
            };
            match (flag_rule(name, &context), inline) {
                (Some(how), Some((value, at))) => hide(index, shift(how.range(value), at)),
                (Some(how), None) => pending = Some(how),
                // `--env=TOKEN=x`, `-var=db_password=x`, `--set=a.token=x`.
                (None, Some((value, at))) => {
                    if let Some((inner, inner_at)) = assignment(value) {
                        hide(
                            index,
                            assignment_rule(inner, &context, is_secret_name).and_then(|how| {
                                shift(how.range(&value[inner_at..]), at + inner_at)
                            }),
                        );
                    }
                }
                (None, None) => {}
            }
            continue;
        }
        // A positional word: a program, a subcommand, an argument.
        let lower = word.to_ascii_lowercase();
        let base = lower.rsplit('/').next().unwrap_or(&lower).to_owned();
        if context.set
            && matches!(
                classify(word),
                Some(Credential::Secret | Credential::KeyOrPath)
            )
        {
            // `aws configure set aws_secret_access_key VALUE`, `npm config set
            // //registry/:_authToken VALUE`, `redis-cli CONFIG SET requirepass VALUE`.
            pending = Some(Hide::Whole);
        }
        // `vault login TOKEN`, `vault operator unseal KEY`.
        if context.seen(&["vault"])
            && context.seen(&["login", "unseal"])
            && !["login", "unseal"].contains(&lower.as_str())
        {
            hide(index, Hide::Whole.range(word));
        }
        // Subcommands are bare words; a path ending in `/login` is not one.
        match lower.as_str() {
            "login" => context.login = true,
            "set" | "config" | "configure" => context.set = true,
            "secret" | "secrets" => context.storing_secret = true,
            // `vault kv put|patch PATH k=v…`: every value is a stored secret.
            "put" | "patch" if context.seen(&["kv"]) && context.seen(&["vault"]) => {
                context.storing_secret = true;
            }
            _ => {}
        }
        positionals.push(index);
        // A program run by its path counts by its file name.
        let program_path = lower.starts_with('/') || lower.starts_with("./");
        context
            .seen
            .push(if program_path { base } else { lower.clone() });
        // `redis-cli AUTH [user] password`: the last word is the password.
        if context.seen(&["redis-cli", "keydb-cli", "valkey-cli"])
            && context.seen(&["auth"])
            && index + 1 == words.len()
            && lower != "auth"
        {
            hide(index, Hide::Whole.range(word));
        }
    }
    // `htpasswd -b[c|n|B…] [file] user password`: the password is the last positional.
    let batch_mode = words
        .iter()
        .any(|word| word.starts_with('-') && !word.starts_with("--") && word.contains('b'));
    if context.seen(&["htpasswd"]) && batch_mode && positionals.len() >= 3 {
        if let Some(&last) = positionals.last() {
            hide(last, Hide::Whole.range(words[last]));
        }
    }
    hidden
}

/// How the value of assignment `name` is hidden in `context`, if it is: every value a vault
/// write stores, else the values of sensitive names.
fn assignment_rule(
    name: &str,
    context: &Context,
    is_secret_name: &dyn Fn(&str) -> bool,
) -> Option<Hide> {
    if context.storing_secret && context.seen(&["vault"]) {
        return Some(Hide::Whole);
    }
    if is_secret_name(name) {
        return Hide::of(kind_of_assignment(name));
    }
    None
}

/// How an assignment's value is hidden: a name the environment globs alone call sensitive
/// (`CUSTOM_THING`) hides the whole value.
fn kind_of_assignment(name: &str) -> Credential {
    match classify(name) {
        Some(Credential::Reference) => Credential::Reference,
        Some(kind) => kind,
        None => Credential::Secret,
    }
}

/// The rule for flag `name` (with its dashes) in `context`.
fn flag_rule(name: &str, context: &Context) -> Option<Hide> {
    if context.storing_secret && LITERAL_FLAGS.contains(&name) {
        return Some(Hide::AfterEquals);
    }
    if context.storing_secret && SECRET_VALUE_FLAGS.contains(&name) {
        return Some(Hide::Whole);
    }
    if context.login && LOGIN_PASSWORD_FLAGS.contains(&name) {
        return Some(Hide::Whole);
    }
    if let Some(short) = SHORT_FLAGS
        .iter()
        .find(|short| short.flags.contains(&name) && context.seen(short.programs))
    {
        if short.attached_only {
            return None;
        }
        if name == "-b" {
            return Some(Hide::Cookie);
        }
        return Some(if short.user_password {
            Hide::AfterColon
        } else {
            Hide::Whole
        });
    }
    // One-letter flags (`-p`, `-k`) say nothing by their name; longer ones do, with one dash
    // or two (`-passin`, `--token`).
    let bare = name.trim_start_matches('-');
    if bare.chars().count() < 2 {
        return None;
    }
    let kind = classify(bare)?;
    if bare.contains("cookie") && kind != Credential::Reference {
        return Some(Hide::Cookie);
    }
    Hide::of(kind)
}

/// A short flag with its value glued on (`-pVALUE`, `-aVALUE`), for the table's programs and
/// `-p` of a login.
fn attached_short_value(word: &str, context: &Context) -> Option<Hide> {
    let flag = word.get(..2)?;
    if word.len() <= 2 || word.starts_with("--") {
        return None;
    }
    if context.login && LOGIN_PASSWORD_FLAGS.contains(&flag) {
        return Some(Hide::Whole);
    }
    SHORT_FLAGS
        .iter()
        .find(|short| short.flags.contains(&flag) && context.seen(short.programs))
        .map(|short| {
            if short.user_password {
                Hide::AfterColon
            } else {
                Hide::Whole
            }
        })
}

fn shift(range: Option<Range<usize>>, by: usize) -> Option<Range<usize>> {
    range.map(|range| range.start + by..range.end + by)
}
