//! Compact JSON that is byte-identical to Go's `encoding/json`, which witness/cilock verifiers
//! reproduce when they re-derive digests: `<`, `>`, `&`, U+2028 and U+2029 are escaped as
//! `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`. serde_json has no such mode, so this
//! module plugs a formatter into it that only overrides string-fragment output.
//!
//! Key order is the caller's business: serialise structs (fields in declaration order) and
//! `BTreeMap`s (sorted keys, as Go sorts map keys).

use std::io;

use serde::Serialize;

/// Serialises `value` as compact Go-compatible JSON.
///
/// Measured first, then written into a buffer of the exact size: a statement can be a hundred
/// MB (an exec storm's argv), and a buffer grown by doubling holds up to three times that while
/// it reallocates.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut length = Length(0);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut length,
        GoFormatter,
    ))?;
    let mut out = Vec::with_capacity(length.0);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// Counts the bytes written to it.
struct Length(usize);

impl io::Write for Length {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Like [`to_vec`], as a `String`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    // The formatter only ever writes valid UTF-8 (it forwards serde_json's own fragments).
    to_vec(value).map(|bytes| String::from_utf8(bytes).expect("serde_json writes UTF-8"))
}

struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (index, ch) in fragment.char_indices() {
            let escape = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..index])?;
            writer.write_all(escape.as_bytes())?;
            start = index + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn escapes_html_characters_and_line_separators_like_go() {
        let value = "a<b>&c\u{2028}d\u{2029}\"\n\u{1}é";
        assert_eq!(
            to_string(value).unwrap(),
            r#""a\u003cb\u003e\u0026c\u2028d\u2029\"\n\u0001é""#
        );
    }

    #[test]
    fn compact_with_sorted_map_keys() {
        let mut map = BTreeMap::new();
        map.insert("z", vec![1, 2]);
        map.insert("a", vec![]);
        assert_eq!(to_string(&map).unwrap(), r#"{"a":[],"z":[1,2]}"#);
    }
}
