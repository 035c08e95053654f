//! `WWW-Authenticate` challenges and bearer-token answers, as distribution's token
//! authentication specification and the cloud registries use them: `Basic realm=…`, or
//! `Bearer realm="https://auth/token",service="registry",scope="repository:team/app:pull"`.

use anyhow::Context as _;
use serde::Deserialize;

/// How the registry wants to be authenticated to, from its answer to `GET /v2/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Challenge {
    /// `GET /v2/` answered 200: no authentication.
    #[default]
    None,
    Basic,
    /// Get a token from `realm` (for `service`), then send it as `Authorization: Bearer`.
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the registry asked for, when it named one (a 401 on a request does).
        scope: Option<String>,
    },
    /// A scheme oci-attest does not speak (named in messages).
    Other(String),
}

impl Challenge {
    /// The challenge in the `WWW-Authenticate` headers: Bearer preferred, then Basic.
    pub fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Challenge {
        let challenges: Vec<(String, Vec<(String, String)>)> =
            headers.into_iter().flat_map(split_challenges).collect();
        let find = |scheme: &str| {
            challenges
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(scheme))
        };
        if let Some((_, params)) = find("bearer") {
            let param = |key: &str| {
                params
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(key))
                    .map(|(_, value)| value.clone())
            };
            if let Some(realm) = param("realm") {
                return Challenge::Bearer {
                    realm,
                    service: param("service"),
                    scope: param("scope"),
                };
            }
        }
        if find("basic").is_some() {
            return Challenge::Basic;
        }
        match challenges.first() {
            Some((scheme, _)) => Challenge::Other(scheme.clone()),
            None => Challenge::Other("(no WWW-Authenticate header)".to_owned()),
        }
    }
}

/// `Scheme k=v, k="v", Scheme2 k=v` → each scheme with its parameters. A new scheme starts at a
/// token that is not followed by `=`.
fn split_challenges(header: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut challenges: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start_matches([' ', '\t']);
        if token.is_empty() {
            break;
        }
        if let Some(value_text) = after.strip_prefix('=') {
            let (value, remaining) = parse_value(value_text.trim_start());
            if let Some((_, params)) = challenges.last_mut() {
                params.push((token.to_owned(), value));
            }
            rest = remaining;
        } else {
            challenges.push((token.to_owned(), Vec::new()));
            rest = after;
        }
    }
    challenges
}

/// A quoted string (with `\` escapes) or a token, and what follows it.
fn parse_value(text: &str) -> (String, &str) {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[index + 1..]),
                other => value.push(other),
            }
        }
        (value, "")
    } else {
        let end = text.find(',').unwrap_or(text.len());
        (text[..end].trim().to_owned(), &text[end..])
    }
}

/// A token endpoint's answer (`access_token` is the OAuth2 name, `token` distribution's).
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The bearer token in a token endpoint's JSON answer.
pub fn read_token(body: &[u8]) -> anyhow::Result<String> {
    let answer: TokenAnswer =
        serde_json::from_slice(body).context("the token endpoint's answer is not token JSON")?;
    answer
        .access_token
        .or(answer.token)
        .filter(|token| !token.is_empty())
        .context("the token endpoint's answer holds no token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_with_quoted_parameters() {
        let challenge = Challenge::parse([
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull,push""#,
        ]);
        assert_eq!(
            challenge,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:team/app:pull,push".into()),
            }
        );
        let escaped = Challenge::parse([r#"bearer realm="a\"b", service=svc"#]);
        assert_eq!(
            escaped,
            Challenge::Bearer {
                realm: "a\"b".into(),
                service: Some("svc".into()),
                scope: None,
            }
        );
    }

    #[test]
    fn bearer_is_preferred_and_unknown_schemes_are_named() {
        assert_eq!(
            Challenge::parse([r#"Negotiate abc, Basic realm="r""#]),
            Challenge::Basic
        );
        assert!(matches!(
            Challenge::parse([r#"Basic realm="r""#, r#"Bearer realm="t""#]),
            Challenge::Bearer { .. }
        ));
        assert_eq!(
            Challenge::parse(["Negotiate"]),
            Challenge::Other("Negotiate".into())
        );
        assert!(matches!(Challenge::parse([]), Challenge::Other(_)));
        assert_eq!(
            Challenge::parse(["Bearer service=x"]),
            Challenge::Other("Bearer".into())
        );
    }

    #[test]
    fn token_answers() {
        assert_eq!(read_token(br#"{"token":"t"}"#).unwrap(), "t");
        assert_eq!(
            read_token(br#"{"token":"t","access_token":"a"}"#).unwrap(),
            "a"
        );
        assert!(read_token(br#"{"token":""}"#).is_err());
        assert!(read_token(b"<html>").is_err());
    }
}
