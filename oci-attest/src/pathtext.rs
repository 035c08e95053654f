//! Paths as text, losslessly: a file name is bytes, an attestation is UTF-8 JSON.
//!
//! Valid UTF-8 without control characters is kept as is; a backslash becomes `\\`; every
//! byte of invalid UTF-8 and every control character (U+0000-U+001F, U+007F) becomes `\xNN`
//! (two lower-case hex digits). The mapping is injective, so two names never render the
//! same, and reversible. Documented in `docs/tracing.md`.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            match character {
                '\\' => text.push_str("\\\\"),
                c if c.is_ascii_control() => {
                    let _ = write!(text, "\\x{:02x}", c as u32);
                }
                c => text.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

pub fn escape(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

/// The bytes an escaped path stands for ; `None` for an empty path.
pub fn unescape(text: &str) -> Option<PathBuf> {
    if text.is_empty() {
        return None;
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match (byte, tail) {
            (b'\\', [b'\\', tail @ ..]) => {
                bytes.push(b'\\');
                rest = tail;
            }
            (b'\\', [b'x', high, low, tail @ ..]) => {
                let hex = std::str::from_utf8(&[*high, *low]).ok()?.to_owned();
                bytes.push(u8::from_str_radix(&hex, 16).ok()?);
                rest = tail;
            }
            _ => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_invalid_utf8_controls_and_backslashes_only() {
        assert_eq!(
            escape_bytes("/w/ünï code.tar".as_bytes()),
            "/w/ünï code.tar"
        );
        assert_eq!(escape_bytes(b"/w/a\nb"), "/w/a\\x0ab");
        assert_eq!(escape_bytes(b"/w/\xff\xfe"), "/w/\\xff\\xfe");
        assert_eq!(escape_bytes(b"a\\x41"), "a\\\\x41");
        // A literal `\x41` and the byte it would denote stay distinct.
        assert_ne!(escape_bytes(b"\\x0a"), escape_bytes(b"\n"));
        assert_eq!(escape_bytes(b"\x7f"), "\\x7f");
    }

    #[test]
    fn unescape_inverts_escape() {
        for bytes in [&b"/a\\x41\n\xff"[..], b"/plain", b"\\\\"] {
            let text = escape_bytes(bytes);
            assert_eq!(unescape(&text).unwrap().as_os_str().as_bytes(), bytes);
        }
    }
}
