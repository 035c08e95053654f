//! Secrets in free text, wherever it was recorded (an argv word, a script, a variable's value,
//! a git remote): credential headers (`Authorization: Basic …`, `X-Api-Key: …`, `Cookie: …`,
//! and `pass:VALUE` as openssl writes it), `NAME=value` pairs with a credential name (URL query
//! parameters, connection strings, `-d password=…`), and JSON `"token": "…"` members.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::names::{classify, Credential};

/// `scheme://user[:password]@`: the userinfo of a URL (up to the last `@` of the authority).
static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#'\x22]+@").expect("valid URL regex")
});

/// `Name: [scheme ]value`: a header, or a `key: value` line. The value runs to the end of the
/// line or the closing quote (a `Cookie:` holds several pairs).
static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:^|[\s'"{,;(\[=])([a-z][a-z0-9_-]*)[ \t]*:[ \t]*(?:(?:basic|bearer|token|digest|negotiate|ntlm|hoba|mutual|dpop|apikey|key|aws4-hmac-sha256)[ \t]+)?([^\s'"][^'"\r\n]*)"#,
    )
    .expect("valid header regex")
});

/// `NAME=value` after a separator (start, space, `?`, `&`, `#`, `;`, `,`, `:`, `/`, a quote or
/// bracket); the value ends at the next separator.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[\s?&#;,:/'"(\[{])([A-Za-z_][A-Za-z0-9_.\-]*)=([^\s&#;,'"()\[\]{}]+)"#)
        .expect("valid assignment regex")
});

/// `"name": "value"` in JSON.
static JSON_MEMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#""([A-Za-z_][A-Za-z0-9_.\-]*)"\s*:\s*"((?:[^"\\]|\\.)+)""#)
        .expect("valid JSON member regex")
});

/// `text` with the userinfo of every URL in it removed: `https://user:token@host/x` →
/// `https://host/x`. scp-like addresses (`git@host:path`) carry a login name, never a secret,
/// and are kept.
pub fn without_url_userinfo(text: &str) -> String {
    URL_USERINFO.replace_all(text, "${1}").into_owned()
}

/// The ranges of `text` that the text rules call secret. `is_secret_name` judges assignment
/// names (environment globs and the name rule, minus allowed names).
pub fn secrets(text: &str, is_secret_name: &dyn Fn(&str) -> bool) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    for captures in HEADER.captures_iter(text) {
        let (name, value) = (&captures[1], captures.get(2).expect("value group"));
        if matches!(
            classify(name),
            Some(Credential::Secret | Credential::UserPassword | Credential::KeyOrPath)
        ) {
            ranges.push(value.range());
        }
    }
    for captures in ASSIGNMENT.captures_iter(text) {
        let (name, value) = (&captures[1], captures.get(2).expect("value group"));
        if is_secret_name(name) && !super::names::is_reference_value(value.as_str()) {
            let keeps_files = classify(name) == Some(Credential::KeyOrPath);
            if !(keeps_files && super::names::is_key_file_value(value.as_str()))
                && classify(name) != Some(Credential::Reference)
            {
                ranges.push(value.range());
            }
        }
    }
    for captures in JSON_MEMBER.captures_iter(text) {
        let (name, value) = (&captures[1], captures.get(2).expect("value group"));
        if is_secret_name(name) || super::names::is_credential(name) {
            ranges.push(value.range());
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(text: &str) -> Vec<&str> {
        let is_secret = |name: &str| super::super::names::is_credential(name);
        secrets(text, &is_secret)
            .into_iter()
            .map(|range| &text[range])
            .collect()
    }

    #[test]
    fn headers_assignments_and_json_members() {
        assert_eq!(hidden("Authorization: Bearer abc.def"), ["abc.def"]);
        assert_eq!(
            hidden("AUTHORIZATION: basic dXNlcjpwYXNz"),
            ["dXNlcjpwYXNz"]
        );
        assert_eq!(hidden("X-Vault-Token:s.abcdef"), ["s.abcdef"]);
        assert_eq!(hidden("Cookie: a=1; session=xyz"), ["a=1; session=xyz"]);
        assert_eq!(hidden("-H 'X-Api-Key: k/1' -o x"), ["k/1"]);
        assert_eq!(hidden("pass:hunter22"), ["hunter22"]);
        assert_eq!(
            hidden("https://h/x?X-Amz-Signature=ab12&X-Amz-Credential=AK%2F1&size=3"),
            ["ab12", "AK%2F1"]
        );
        assert_eq!(
            hidden("AccountName=a;AccountKey=Zm9v;EndpointSuffix=x"),
            ["Zm9v"]
        );
        assert_eq!(
            hidden(r#"{"auths":{"r":{"auth":"dXNlcjpw"}}}"#),
            ["dXNlcjpw"]
        );
        assert_eq!(hidden("key=prod/terraform.tfstate"), Vec::<&str>::new());
        assert_eq!(hidden("Content-Type: application/json"), Vec::<&str>::new());
        assert_eq!(
            hidden("https://example.com:443/a?page=2"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn userinfo_goes_hosts_stay() {
        assert_eq!(
            without_url_userinfo("git clone https://tok@github.com/o/r"),
            "git clone https://github.com/o/r"
        );
        assert_eq!(
            without_url_userinfo("git@github.com:o/r"),
            "git@github.com:o/r"
        );
    }
}
