//! Shared by the fuzz targets: run the real reader on bytes, and build small archives from
//! the `documents` input format. The reader takes the bytes as a stream, straight from memory.

use std::path::Path;

use oci_attest::attestors::oci;
use oci_attest::digest::sha256_hex;
use oci_attest::inspect::{analyze_reader, DecompressionLimits, Options};

/// Small enough that a bomb costs a fraction of a second, large enough for every seed.
const FUZZ_LIMITS: DecompressionLimits = DecompressionLimits {
    max_total_bytes: 64 << 20,
    max_ratio: 1000,
};

/// Runs the reader on `bytes` as an archive stream and checks what holds for any input:
/// no panic (libFuzzer reports it), an error is one line naming the stream, a success
/// holds an image and its predicate serialises.
pub fn analyze_bytes(bytes: &[u8]) -> Result<(), String> {
    let path = Path::new("fuzz-input.tar");
    let options = Options {
        limits: FUZZ_LIMITS,
        ..Options::default()
    };
    match analyze_reader(path, bytes, &options) {
        Ok(analysis) => {
            let json = oci_attest::gojson::to_vec(&oci::predicate(&analysis));
            assert!(json.is_ok(), "predicate does not serialise: {json:?}");
            assert!(!analysis.images.is_empty(), "success without an image");
            Ok(())
        }
        Err(error) => {
            let line = error.to_string();
            assert!(!line.contains('\n'), "multi-line error: {line:?}");
            assert!(line.starts_with(&path.display().to_string()), "{line:?}");
            Err(line)
        }
    }
}

/// Separates the documents of a `documents` input.
pub const PART_SEPARATOR: u8 = 0;

/// Builds a tar from a `documents` input, so the fuzzer can reach the JSON parsers past the
/// digest checks (it cannot compute SHA-256 itself):
/// - the input is split at NUL bytes into parts; part 0 becomes `manifest.json`, part 1
///   `index.json` (with an `oci-layout` marker), parts 2.. become `blobs/sha256/<hex>`;
///   empty parts 0 and 1 are left out;
/// - in part j, `@k` (k a digit) is replaced by the hex SHA-256 of part k and `#k` by its
///   length, for blob parts k > j (so references cannot form a cycle); anything else stays.
///
/// `xtask fuzz --seed` writes seeds in this format.
pub fn documents_archive(input: &[u8]) -> Vec<u8> {
    let raw: Vec<&[u8]> = input
        .split(|&byte| byte == PART_SEPARATOR)
        .take(10)
        .collect();
    let mut finished: Vec<Option<(Vec<u8>, String)>> = vec![None; raw.len()];
    for index in (0..raw.len()).rev() {
        let resolved = substitute(raw[index], index, &finished);
        let hex = sha256_hex(&resolved);
        finished[index] = Some((resolved, hex));
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (index, part) in finished.into_iter().enumerate() {
        let Some((bytes, hex)) = part else { continue };
        let name = match index {
            0 | 1 if bytes.is_empty() => continue,
            0 => "manifest.json".to_owned(),
            1 => {
                append(
                    &mut builder,
                    "oci-layout",
                    br#"{"imageLayoutVersion":"1.0.0"}"#,
                );
                "index.json".to_owned()
            }
            _ => format!("blobs/sha256/{hex}"),
        };
        append(&mut builder, &name, &bytes);
    }
    builder.into_inner().unwrap_or_default()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    if let Err(error) = builder.append_data(&mut header, name, bytes) {
        panic!("appending {name} to an in-memory tar: {error}");
    }
}

fn substitute(part: &[u8], index: usize, finished: &[Option<(Vec<u8>, String)>]) -> Vec<u8> {
    let reference = |marker: u8| -> Option<(&(Vec<u8>, String), u8)> {
        let digit = marker.checked_sub(b'0').filter(|digit| *digit < 10)?;
        let target = usize::from(digit);
        if target < 2 || target <= index {
            return None;
        }
        finished.get(target)?.as_ref().map(|part| (part, digit))
    };
    let mut out = Vec::with_capacity(part.len());
    let mut position = 0;
    while position < part.len() {
        let byte = part[position];
        let next = part.get(position + 1).copied();
        match (byte, next.and_then(reference)) {
            (b'@', Some(((_, hex), _))) => {
                out.extend_from_slice(hex.as_bytes());
                position += 2;
            }
            (b'#', Some(((bytes, _), _))) => {
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                position += 2;
            }
            _ => {
                out.push(byte);
                position += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    /// Seeds that the reader rejects would start the fuzzer at the first error check.
    #[test]
    fn every_seed_is_a_valid_archive() {
        for (name, bytes) in seeds("archive") {
            assert_eq!(analyze_bytes(&bytes), Ok(()), "{name}");
        }
        for (name, bytes) in seeds("documents") {
            assert_eq!(analyze_bytes(&documents_archive(&bytes)), Ok(()), "{name}");
        }
    }

    #[test]
    fn references_resolve_to_later_parts_only() {
        let input = b"[\"@2 #2 @3\"]\0\0{\"x\":\"@3 @2\"}\0layer";
        let tar_bytes = documents_archive(input);
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut members = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            members.push((name, text));
        }
        let layer_hex = sha256_hex(b"layer");
        let blob2 = format!("{{\"x\":\"{layer_hex} @2\"}}");
        let blob2_hex = sha256_hex(blob2.as_bytes());
        assert_eq!(
            members,
            vec![
                (
                    "manifest.json".to_owned(),
                    format!("[\"{blob2_hex} {} {layer_hex}\"]", blob2.len())
                ),
                (format!("blobs/sha256/{blob2_hex}"), blob2),
                (format!("blobs/sha256/{layer_hex}"), "layer".to_owned()),
            ]
        );
    }
}
