//! Shell words with their place in the script, for redacting `sh -c` scripts in place.
//!
//! Written here because redaction must rewrite only a secret's bytes in the script as written:
//! `shlex` and `shell-words` return the words but not where they are, and `brush-parser`
//! (a full bash tokenizer with positions) brings a parser generator and a snapshot-testing
//! library into the build. The quoting rules are POSIX's, as `shlex` applies them; operators
//! (`;`, `&`, `|`, `(`, `)`, `<`, `>`, backquote, `$(`, newline) end a word and a command.

use std::ops::Range;

/// One word of a script: its text after quote removal and, for each byte of that text, the
/// byte of the script it came from.
#[derive(Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    origin: Vec<usize>,
}

impl Word {
    /// The bytes of the script that `range` (of [`Word::text`]) came from, quotes between them
    /// included.
    pub fn script_range(&self, range: &Range<usize>) -> Option<Range<usize>> {
        if range.is_empty() {
            return None;
        }
        let start = *self.origin.get(range.start)?;
        let last = *self.origin.get(range.end - 1)?;
        // The last source byte may start a multi-byte character: cover all of it.
        Some(start..last + 1)
    }
}

/// The simple commands of `script`, each as its words. Unterminated quotes run to the end.
pub fn commands(script: &str) -> Vec<Vec<Word>> {
    let bytes = script.as_bytes();
    let mut commands = vec![Vec::new()];
    let mut word: Option<Word> = None;
    let finish = |word: &mut Option<Word>, commands: &mut Vec<Vec<Word>>| {
        if let Some(done) = word.take() {
            commands
                .last_mut()
                .expect("one command at least")
                .push(done);
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b' ' | b'\t' | b'\r' => finish(&mut word, &mut commands),
            b'#' if word.is_none() => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' | b'`' => {
                finish(&mut word, &mut commands);
                if !commands.last().is_some_and(Vec::is_empty) {
                    commands.push(Vec::new());
                }
            }
            b'$' if bytes.get(i + 1) == Some(&b'(') => {
                finish(&mut word, &mut commands);
                commands.push(Vec::new());
                i += 2;
                continue;
            }
            b'\'' => {
                let current = word.get_or_insert_with(empty);
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    push(current, script, &mut i);
                }
            }
            b'"' => {
                let current = word.get_or_insert_with(empty);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\'
                        && matches!(bytes.get(i + 1), Some(b'$' | b'`' | b'"' | b'\\' | b'\n'))
                    {
                        i += 1;
                        if bytes[i] == b'\n' {
                            i += 1;
                            continue;
                        }
                    }
                    push(current, script, &mut i);
                }
            }
            b'\\' => {
                i += 1;
                if i < bytes.len() {
                    if bytes[i] == b'\n' {
                        i += 1;
                        continue;
                    }
                    push(word.get_or_insert_with(empty), script, &mut i);
                }
                continue;
            }
            _ => {
                push(word.get_or_insert_with(empty), script, &mut i);
                continue;
            }
        }
        i += 1;
    }
    finish(&mut word, &mut commands);
    commands.retain(|command| !command.is_empty());
    commands
}

fn empty() -> Word {
    Word {
        text: String::new(),
        origin: Vec::new(),
    }
}

/// Appends the character at `*i` of `script` to `word` and moves past it.
fn push(word: &mut Word, script: &str, i: &mut usize) {
    let Some(c) = script.get(*i..).and_then(|rest| rest.chars().next()) else {
        // Not at a character boundary (cannot happen for valid UTF-8 input): skip the byte.
        *i += 1;
        return;
    };
    let width = c.len_utf8();
    word.text.push(c);
    word.origin.extend(*i..*i + width);
    *i += width;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<Vec<String>> {
        commands(script)
            .into_iter()
            .map(|command| command.into_iter().map(|word| word.text).collect())
            .collect()
    }

    #[test]
    fn words_follow_posix_quoting_and_operators_split_commands() {
        assert_eq!(
            texts(r#"docker login -u me -p "p w\"d" reg && echo 'a b'; x=$(cat f)|y # c"#),
            [
                vec!["docker", "login", "-u", "me", "-p", "p w\"d", "reg"],
                vec!["echo", "a b"],
                vec!["x="],
                vec!["cat", "f"],
                vec!["y"],
            ]
        );
        assert_eq!(texts("a\\ b c\\\nd"), [vec!["a b", "cd"]]);
        assert_eq!(texts("echo 'unterminated"), [vec!["echo", "unterminated"]]);
    }

    #[test]
    fn ranges_map_back_to_the_script() {
        let script = r#"curl --password="s3cr3t" -u 'u:pé'"#;
        let words = &commands(script)[0];
        let password = &words[1];
        assert_eq!(password.text, "--password=s3cr3t");
        let range = password.script_range(&(11..17)).unwrap();
        assert_eq!(&script[range], "s3cr3t");
        let user = &words[3];
        let range = user.script_range(&(2..user.text.len())).unwrap();
        assert_eq!(&script[range], "pé");
    }
}
