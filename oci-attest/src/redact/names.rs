//! Which names carry credentials: flag names (`--registry-token`, `-passin`), assignment names
//! (`DB_PASSWORD=`, `db.password=`, `//registry/:_authToken=`), header names (`X-Vault-Token:`),
//! URL query parameters (`X-Amz-Signature=`). One rule for every program, so tools nobody
//! listed are covered: the name is cut into words (at `-`, `_`, `.`, `/`, `:` and camelCase) and
//! a word that is, or ends with, a credential word makes the name sensitive.

/// What a credential-named option's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The value is a secret (`--password`, `--token`, `X-Auth-Token`).
    Secret,
    /// `user:password` (`--creds`, `--dest-creds`): the user stays, the password goes.
    UserPassword,
    /// Named after a key or signature only (`--key`, `--api-key`, `--signature`): the value is
    /// often a file (`--key cosign.key`, `--signature sig.txt`), kept when it has the shape of
    /// one; any other value is hidden.
    KeyOrPath,
    /// Names where a secret is kept, not the secret: `--password-file`, `--key-id`,
    /// `--authfile`, `--token-url`, `--password-stdin`, `--no-auth`. Never hidden.
    Reference,
}

/// Words that name a secret by themselves.
const SECRET_WORDS: &[&str] = &[
    "pass",
    "passwd",
    "password",
    "passwords",
    "passphrase",
    "passcode",
    "passin",
    "passout",
    "pw",
    "pwd",
    "secret",
    "secrets",
    "token",
    "tokens",
    "auth",
    "authtoken",
    "authorization",
    "bearer",
    "cookie",
    "cookies",
    "jwt",
    "otp",
    "sig",
    "sas",
    "privatekey",
];

/// Words that name a key or a signature: the value may be a secret or a file.
const KEY_WORDS: &[&str] = &["key", "keys", "signature"];

/// Words for `user:password` values.
const USER_PASSWORD_WORDS: &[&str] = &["creds", "cred", "credential", "credentials"];

/// Credential words that count inside a longer word too (`dbpassword`, `npmauthtoken`,
/// `clientsecret`): long enough not to occur by accident.
const EMBEDDED_SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "cookie",
    "bearer",
    "apikey",
];

/// Endings that make a longer word a credential (`sshpass`, `masterauth`, `apikey`,
/// `accountkey`), except the ordinary words listed in [`NOT_CREDENTIALS`].
const CREDENTIAL_ENDINGS: &[&str] = &["pass", "auth", "key", "pw"];

/// Ordinary words that contain or end with a credential word.
const NOT_CREDENTIALS: &[&str] = &[
    "bypass",
    "compass",
    "surpass",
    "overpass",
    "underpass",
    "encompass",
    "monkey",
    "hockey",
    "turkey",
    "donkey",
    "jockey",
    "whiskey",
    "hotkey",
    "tokenizer",
    "tokenize",
    "tokenized",
    "secretary",
    "askpass",
];

/// A last word that makes the name a reference to where a credential is, not the credential.
const REFERENCE_ENDINGS: &[&str] = &[
    "file",
    "files",
    "path",
    "dir",
    "stdin",
    "fd",
    "env",
    "helper",
    "command",
    "cmd",
    "program",
    "store",
    "url",
    "uri",
    "endpoint",
    "type",
    "method",
    "mode",
    "provider",
    "plugin",
    "name",
    "names",
    "server",
    "prompt",
    "ttl",
    "expiry",
    "expiration",
    "lifetime",
    "length",
    "header",
    "jar",
];

/// Further last words that make a key-named name a reference (`--key-id`, `--keyring`,
/// `aws_access_key_id`): for keys only, since `secret_id` or `token_id` may be secrets.
const KEY_REFERENCE_ENDINGS: &[&str] = &[
    "id",
    "ids",
    "ring",
    "size",
    "bits",
    "len",
    "alg",
    "algorithm",
    "format",
    "usage",
    "ref",
    "version",
    "label",
];

/// Environment-style names that look sensitive but are not (`PWD` is the working directory).
const NOT_SECRET_NAMES: &[&str] = &["pwd", "oldpwd"];

/// The words of a name: split at every non-alphanumeric character and at lower→upper case
/// changes, lowercased.
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// What the word says about a credential, if anything.
fn word_kind(word: &str) -> Option<Credential> {
    if NOT_CREDENTIALS.contains(&word) {
        return None;
    }
    if USER_PASSWORD_WORDS.contains(&word) {
        return Some(Credential::UserPassword);
    }
    if KEY_WORDS.contains(&word) {
        return Some(Credential::KeyOrPath);
    }
    if SECRET_WORDS.contains(&word)
        || EMBEDDED_SECRET_WORDS
            .iter()
            .any(|embedded| word.contains(embedded))
    {
        return Some(Credential::Secret);
    }
    CREDENTIAL_ENDINGS
        .iter()
        .find(|ending| word.len() > ending.len() && word.ends_with(*ending))
        .map(|ending| {
            if *ending == "key" {
                Credential::KeyOrPath
            } else {
                Credential::Secret
            }
        })
}

/// How a value named `name` (a flag without its dashes, an assignment's name, a header or query
/// parameter name) is treated, or `None` when the name carries no credential.
pub fn classify(name: &str) -> Option<Credential> {
    let name = name.trim_start_matches('-');
    if NOT_SECRET_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
        return None;
    }
    let words = words(name);
    let kinds: Vec<Credential> = words.iter().filter_map(|word| word_kind(word)).collect();
    if kinds.is_empty() {
        return None;
    }
    let last = words.last().map(String::as_str).unwrap_or("");
    let first = words.first().map(String::as_str).unwrap_or("");
    let only_keys = kinds.iter().all(|kind| *kind == Credential::KeyOrPath);
    // `--no-auth`, `--password-stdin`: switches, not values.
    if first == "no"
        || word_kind(last).is_none()
            && (REFERENCE_ENDINGS.contains(&last)
                || only_keys && KEY_REFERENCE_ENDINGS.contains(&last))
    {
        return Some(Credential::Reference);
    }
    Some(if kinds.contains(&Credential::Secret) {
        Credential::Secret
    } else if kinds.contains(&Credential::UserPassword) {
        Credential::UserPassword
    } else {
        Credential::KeyOrPath
    })
}

/// The name carries a credential whose value must be hidden (any kind but a reference).
pub fn is_credential(name: &str) -> bool {
    matches!(
        classify(name),
        Some(Credential::Secret | Credential::UserPassword | Credential::KeyOrPath)
    )
}

/// A value that says where a secret is rather than being one: an unexpanded shell variable or
/// command substitution, openssl's `env:`/`file:`/`fd:`/`stdin`, a `@file`, BuildKit's
/// `id=…,src=…|env=…` secret specs.
pub fn is_reference_value(value: &str) -> bool {
    const SPEC_KEYS: &[&str] = &[
        "id", "src", "source", "env", "type", "target", "required", "mode", "uid", "gid",
    ];
    value.starts_with('$')
        || value == "stdin"
        || value == "-"
        || ["env:", "file:", "fd:", "@"]
            .iter()
            .any(|prefix| value.starts_with(prefix))
        || value.contains('=')
            && value.split(',').all(|pair| {
                pair.split_once('=')
                    .is_some_and(|(key, _)| SPEC_KEYS.contains(&key))
            })
}

/// A value of a key- or signature-named option that is a file, not key material: a path, a
/// file name with an extension key files have, or a KMS/PKCS#11 reference (`awskms://…`).
pub fn is_key_file_value(value: &str) -> bool {
    const EXTENSIONS: &[&str] = &[
        "pem", "key", "pub", "crt", "cer", "der", "p12", "pfx", "p8", "json", "asc", "gpg", "sig",
        "txt", "jwk", "jks", "keystore", "ppk", "kdbx",
    ];
    value.contains('/')
        || value.starts_with('.')
        || value.starts_with('~')
        || value.starts_with("pkcs11:")
        || value.contains("://")
        || value.rsplit_once('.').is_some_and(|(stem, extension)| {
            !stem.is_empty() && EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str())
        })
        || is_reference_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_judged_by_their_words() {
        use Credential::*;
        for (name, expected) in [
            ("--password", Some(Secret)),
            ("--registry-token", Some(Secret)),
            ("-passin", Some(Secret)),
            ("--oauth2-bearer", Some(Secret)),
            ("//registry.npmjs.org/:_authToken", Some(Secret)),
            ("npmAuthToken", Some(Secret)),
            ("db.password", Some(Secret)),
            ("dbPassword", Some(Secret)),
            ("MYSQL_PWD", Some(Secret)),
            ("SSHPASS", Some(Secret)),
            ("masterauth", Some(Secret)),
            ("requirepass", Some(Secret)),
            ("X-Vault-Token", Some(Secret)),
            ("Proxy-Authorization", Some(Secret)),
            ("X-Amz-Credential", Some(UserPassword)),
            ("sig", Some(Secret)),
            ("secret_id", Some(Secret)),
            ("--otp", Some(Secret)),
            ("--creds", Some(UserPassword)),
            ("--dest-creds", Some(UserPassword)),
            ("--key", Some(KeyOrPath)),
            ("--api-key", Some(KeyOrPath)),
            ("AccountKey", Some(KeyOrPath)),
            ("X-Amz-Signature", Some(KeyOrPath)),
            ("--client-secret", Some(Secret)),
            ("--password-file", Some(Reference)),
            ("--password-stdin", Some(Reference)),
            ("--key-file", Some(Reference)),
            ("--key-id", Some(Reference)),
            ("aws_access_key_id", Some(Reference)),
            ("--keyring", None),
            ("--authfile", None),
            ("--cookie-jar", Some(Reference)),
            ("GIT_ASKPASS", None),
            ("--auth-file", Some(Reference)),
            ("--token-url", Some(Reference)),
            ("--no-auth", Some(Reference)),
            ("--access-token-file", Some(Reference)),
            ("PWD", None),
            ("OLDPWD", None),
            ("PATH", None),
            ("--keyboard", None),
            ("--bypass", None),
            ("--passthrough", None),
            ("--author", None),
            ("--monkey", None),
            ("--user", None),
            ("-p", None),
            ("--parents", None),
        ] {
            assert_eq!(classify(name), expected, "{name}");
        }
    }

    #[test]
    fn references_and_key_files_are_recognised() {
        for value in [
            "$PW",
            "${TOKEN}",
            "env:PASS",
            "file:/run/p",
            "@pw.txt",
            "stdin",
        ] {
            assert!(is_reference_value(value), "{value}");
        }
        assert!(is_reference_value("id=npm,env=NPM_TOKEN"));
        assert!(is_reference_value("id=x,src=/run/secret"));
        assert!(!is_reference_value("hunter2"));
        assert!(!is_reference_value("id=npm,token=abc"));
        for value in [
            "cosign.key",
            "./k",
            "/etc/k.pem",
            "awskms:///arn",
            "key.PEM",
        ] {
            assert!(is_key_file_value(value), "{value}");
        }
        for value in ["sk_live_abcdef", "AIzaSyA-1234", "0123456789abcdef"] {
            assert!(!is_key_file_value(value), "{value}");
        }
    }
}
