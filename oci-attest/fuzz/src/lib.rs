//! Shared by the fuzz targets: run the real reader on bytes, and build small archives from
//! the `documents` input format. The reader takes the bytes as a stream, straight from memory.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use oci_attest::attestors::file_tree::{self, EmptyLeaves};
use oci_attest::attestors::oci;
use oci_attest::config_file;
use oci_attest::digest::sha256_hex;
use oci_attest::dsse;
use oci_attest::inspect::{analyze_reader, DecompressionLimits, Options};
use oci_attest::keys::{Algorithm, PrivateKey, PublicKey};
use oci_attest::policy::evidence::{self, Evidence};
use oci_attest::policy::model::{self, Policy, RegoModule, RequiredAttestation, Step};
use oci_attest::policy::rego::EvaluationError;
use oci_attest::policy::verification::{self, Evaluator};
use oci_attest::products::FileDigest;
use oci_attest::registry::{self, ImageRef, RegistryArgs};
use serde_json::Value;

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
    let mut builder = tar::Builder::new(Vec::new());
    for (index, (bytes, hex)) in resolve_parts(input).into_iter().enumerate() {
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

/// The parts of a `documents` input (split at NUL, at most 10) with their `@k`/`#k`
/// references resolved, each with its hex SHA-256.
pub fn resolve_parts(input: &[u8]) -> Vec<(Vec<u8>, String)> {
    resolve(&split_parts(input), None)
}

/// [`resolve_parts`], and `@@` in parts 1.. is the hex SHA-256 of part 0 (a referrer naming the
/// image as its subject). Part 0 is resolved first with `@@` left as it is, so its references
/// to parts that contain `@@` point at their unresolved form (not served).
pub fn resolve_parts_with_subject(input: &[u8]) -> Vec<(Vec<u8>, String)> {
    let raw = split_parts(input);
    let mut first = resolve(&raw, None);
    if first.is_empty() {
        return first;
    }
    let image = first.swap_remove(0);
    let mut parts = resolve(&raw, Some(&image.1));
    parts[0] = image;
    parts
}

fn split_parts(input: &[u8]) -> Vec<&[u8]> {
    input
        .split(|&byte| byte == PART_SEPARATOR)
        .take(10)
        .collect()
}

fn resolve(raw: &[&[u8]], subject: Option<&str>) -> Vec<(Vec<u8>, String)> {
    let mut finished: Vec<Option<(Vec<u8>, String)>> = vec![None; raw.len()];
    for index in (0..raw.len()).rev() {
        let resolved = substitute(raw[index], index, &finished, subject.filter(|_| index > 0));
        let hex = sha256_hex(&resolved);
        finished[index] = Some((resolved, hex));
    }
    finished.into_iter().flatten().collect()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    if let Err(error) = builder.append_data(&mut header, name, bytes) {
        panic!("appending {name} to an in-memory tar: {error}");
    }
}

fn substitute(
    part: &[u8],
    index: usize,
    finished: &[Option<(Vec<u8>, String)>],
    subject: Option<&str>,
) -> Vec<u8> {
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
        if let (b'@', Some(b'@'), Some(subject)) = (byte, next, subject) {
            out.extend_from_slice(subject.as_bytes());
            position += 2;
            continue;
        }
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

// ---- policies, envelopes and statements --------------------------------------------------------

/// The policy reader on arbitrary bytes: a refusal is one line, and a policy it accepts can be
/// ordered (its steps exist and form no cycle).
pub fn check_policy(bytes: &[u8]) {
    match model::parse(bytes) {
        Ok(policy) => {
            assert!(
                !policy.steps.is_empty(),
                "a policy without steps was accepted"
            );
            policy
                .dependency_order()
                .expect("an accepted policy has a dependency order");
        }
        Err(error) => {
            let line = format!("{error:#}");
            assert!(!line.contains('\n'), "multi-line error: {line:?}");
        }
    }
}

/// An envelope and the statement inside it:
/// - opening it in place agrees with the plain reader (same payload, or both refuse);
/// - the statement reader never panics and refuses in one line;
/// - with its trees made consistent (roots and leaves recomputed from each `files` list, so the
///   fuzzer gets past SHA-256), the collection is verified as both an upstream and a downstream
///   step of a policy: nothing panics, and every `input.steps` document handed to Rego is JSON.
pub fn check_envelope(bytes: &[u8]) {
    let opened = dsse::OpenedEnvelope::open(bytes.to_vec());
    let plain = dsse::parse(bytes)
        .ok()
        .and_then(|envelope| BASE64.decode(&envelope.payload).ok());
    let payload = match (opened, plain) {
        (Ok(opened), Some(plain)) => {
            assert_eq!(
                opened.payload(),
                plain.as_slice(),
                "the two readers disagree"
            );
            plain
        }
        (Ok(_), None) => panic!("opened in place what the plain reader refuses"),
        (Err(_), Some(plain)) => {
            // Only a repeated key may make the in-place reader stricter.
            assert!(
                oci_attest::strict_json::check_unique_keys(bytes).is_err(),
                "refused in place what the plain reader reads"
            );
            plain
        }
        (Err(_), None) => bytes.to_vec(),
    };
    read_and_verify(&payload);
    if let Ok(mut statement) = serde_json::from_slice::<Value>(&payload) {
        make_trees_consistent(&mut statement);
        if let Ok(fixed) = serde_json::to_vec(&statement) {
            read_and_verify(&fixed);
        }
    }
}

fn read_and_verify(payload: &[u8]) {
    let keep = |_: &str, _: &str| true;
    let read = |step: Option<&str>| {
        evidence::read_statement("fuzz.json", vec!["k".to_owned()], payload, &keep).map(
            |mut item| {
                if let Some(step) = step {
                    item.step = step.to_owned();
                }
                item
            },
        )
    };
    let upstream = match read(None) {
        Ok(item) => item,
        Err(error) => {
            let line = format!("{error:#}");
            assert!(!line.contains('\n'), "multi-line error: {line:?}");
            return;
        }
    };
    let downstream = read(Some(DOWNSTREAM)).expect("read once, read twice");
    let Some(policy) = two_step_policy(&upstream) else {
        return;
    };
    let artifact = upstream
        .subjects
        .iter()
        .map(|(_, digest)| *digest)
        .chain(upstream.product_digests.iter().copied())
        .next()
        .unwrap_or([7; 32]);
    let evidence: Vec<Evidence> = vec![upstream, downstream];
    let report = verification::verify(&policy, &evidence, &[artifact], &mut JsonChecker)
        .expect("the stand-in evaluator never fails");
    assert_eq!(report.steps.len(), 2);
}

const DOWNSTREAM: &str = "fuzz-downstream";

/// The collection's step, requiring its first attestation type (with a module), and a
/// downstream step linked to it by `artifactsFrom` and `attestationsFrom`.
fn two_step_policy(upstream: &Evidence) -> Option<Policy> {
    let type_uri = upstream.attestations.first()?.type_uri.clone();
    if upstream.step == DOWNSTREAM {
        return None;
    }
    let step = |name: &str, from: &[&str]| Step {
        name: name.to_owned(),
        functionaries: vec!["k".to_owned()],
        attestations: vec![RequiredAttestation {
            type_uri: type_uri.clone(),
            modules: vec![RegoModule {
                name: "m".to_owned(),
                source: String::new(),
            }],
        }],
        artifacts_from: from.iter().map(|s| (*s).to_owned()).collect(),
        attestations_from: from.iter().map(|s| (*s).to_owned()).collect(),
    };
    let steps = [
        step(&upstream.step, &[]),
        step(DOWNSTREAM, &[upstream.step.as_str()]),
    ];
    Some(Policy {
        expires: chrono::DateTime::<chrono::Utc>::MAX_UTC,
        keys: BTreeMap::from([("k".to_owned(), fuzz_key().clone())]),
        steps: steps.into_iter().map(|s| (s.name.clone(), s)).collect(),
    })
}

fn fuzz_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        PrivateKey::generate(Algorithm::Ed25519)
            .expect("an Ed25519 key")
            .public()
            .clone()
    })
}

/// Rego stand-in: checks that what would be handed to Rego is JSON, and allows it.
struct JsonChecker;

impl Evaluator for JsonChecker {
    fn evaluate(
        &mut self,
        _: &[RegoModule],
        attestation: &str,
        steps: Option<&str>,
        _: &str,
    ) -> Result<Vec<String>, EvaluationError> {
        for document in std::iter::once(attestation).chain(steps) {
            if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(document) {
                panic!("not JSON ({error}): {document}");
            }
        }
        Ok(Vec::new())
    }
}

/// Rewrites each tree predicate with a `files` object of strings as the attestor would write
/// it for those files.
fn make_trees_consistent(statement: &mut Value) {
    let Some(attestations) = statement
        .get_mut("predicate")
        .and_then(|predicate| predicate.get_mut("attestations"))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for attestation in attestations {
        let Some(files) = attestation["attestation"]["files"].as_object() else {
            continue;
        };
        let files: Option<Vec<FileDigest>> = files
            .iter()
            .map(|(path, digest)| {
                Some(FileDigest {
                    path: path.clone(),
                    sha256: digest.as_str()?.to_owned(),
                })
            })
            .collect();
        let Some(files) = files else { continue };
        if let Ok(tree) = serde_json::to_value(file_tree::predicate(&files, EmptyLeaves::Write)) {
            attestation["attestation"] = tree;
        }
    }
}

// ---- registry answers -------------------------------------------------------------------------

/// Serves the parts of a `documents` input (see [`resolve_parts_with_subject`]) as a registry
/// on 127.0.0.1 and runs `discover` (with the image's identities, as `verify --image-ref`):
/// - part 0 is the manifest (or index) under the tag `fuzz:latest`;
/// - part 1 is the referrers list of whatever digest is asked for, and the cosign `.att`
///   image; an empty part 1 answers 404 (the client then reads the tag-schema index, absent);
/// - every part is served by its digest, as a manifest and as a blob; any other path is 404.
///
/// Nothing panics, an error is one line, and every attachment handed over holds the blob of the
/// digest it was listed under. Returns the attachments found and the image's identities.
pub fn check_registry(input: &[u8]) -> Result<Discovered, String> {
    let parts = resolve_parts_with_subject(input);
    let server = registry_server();
    *server.parts.lock().unwrap_or_else(|e| e.into_inner()) = parts;
    let image = ImageRef::parse(&format!("{}/fuzz:latest", server.address))
        .expect("the fuzz registry's image reference");
    let args = RegistryArgs {
        plain_http: true,
        // Given credentials keep the auth files and helpers of the machine out of the run.
        creds: Some("fuzz:fuzz".to_owned()),
        // One deadline for the whole process (it is set once): libFuzzer's -timeout bounds
        // each input instead.
        registry_timeout: 30 * 24 * 3600,
        ..RegistryArgs::default()
    };
    let mut found = Discovered::default();
    let discovered = registry::discover(&image, &args, true, |identity, attachment| {
        assert_eq!(
            format!("sha256:{}", sha256_hex(&attachment.envelope)),
            attachment.envelope_digest,
            "an attachment whose bytes are not its digest"
        );
        found.attachments += 1;
        found.linked += usize::from(identity.link_for(&attachment.summary).is_some());
        Ok(())
    });
    match discovered {
        Ok(discovered) => {
            found.identities = discovered.identity.links.len();
            Ok(found)
        }
        Err(error) => {
            let line = format!("{error:#}");
            assert!(!line.contains('\n'), "multi-line error: {line:?}");
            Err(line)
        }
    }
}

/// What [`check_registry`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    pub attachments: usize,
    /// Attachments whose statement names one of the image's identities.
    pub linked: usize,
    /// The image's identities (its digest, image IDs, platform manifests).
    pub identities: usize,
}

/// The resolved parts of the input being run, each with its hex SHA-256.
type Parts = Vec<(Vec<u8>, String)>;

struct RegistryServer {
    address: String,
    parts: Arc<Mutex<Parts>>,
}

/// The process's one fuzz registry (a thread answering one connection at a time).
fn registry_server() -> &'static RegistryServer {
    static SERVER: OnceLock<RegistryServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        let address = listener.local_addr().expect("the listener's address");
        let parts = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::clone(&parts);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // A client that went away mid-answer is the client's business.
                let _ = answer(stream, &served);
            }
        });
        RegistryServer {
            address: address.to_string(),
            parts,
        }
    })
}

fn answer(stream: TcpStream, parts: &Mutex<Parts>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let parts = parts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let part = |index: usize| parts.get(index).map(|(bytes, _)| bytes.as_slice());
    let by_digest = |digest: &str| {
        let hex = digest.strip_prefix("sha256:")?;
        parts
            .iter()
            .find(|(_, part_hex)| part_hex == hex)
            .map(|(bytes, _)| bytes.as_slice())
    };
    let body: Option<&[u8]> = if path == "/v2/" {
        Some(b"{}")
    } else if let Some(reference) = path.strip_prefix("/v2/fuzz/manifests/") {
        if reference == "latest" {
            part(0)
        } else if reference.ends_with(".att") {
            part(1).filter(|bytes| !bytes.is_empty())
        } else {
            by_digest(reference)
        }
    } else if path.starts_with("/v2/fuzz/referrers/") {
        part(1).filter(|bytes| !bytes.is_empty())
    } else if let Some(digest) = path.strip_prefix("/v2/fuzz/blobs/") {
        by_digest(digest)
    } else {
        None
    };
    let mut stream = stream;
    match body {
        Some(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
        }
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    stream.flush()
}

// ---- config files -----------------------------------------------------------------------------

/// The config file reader on arbitrary bytes, through a file as `run` and `verify` read it:
/// a refusal is one line naming the file, and what it accepts is a mapping of sections.
pub fn check_config(bytes: &[u8]) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        tempfile::tempdir()
            .expect("a temp dir for the config file")
            .keep()
    });
    let path = dir.join(".oci-attest.yaml");
    std::fs::write(&path, bytes).expect("writing the config file");
    match config_file::read(&path) {
        Ok(file) => {
            assert_eq!(file.sha256, sha256_hex(bytes), "the recorded digest");
            let sections = serde_json::to_vec(&file.document);
            assert!(sections.is_ok(), "sections that are not JSON: {sections:?}");
        }
        Err(error) => {
            let line = format!("{error:#}");
            assert!(!line.contains('\n'), "multi-line error: {line:?}");
            assert!(line.starts_with(&path.display().to_string()), "{line:?}");
        }
    }
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

    /// The policies, envelopes and config files of the seed corpus are accepted, so the
    /// fuzzer starts past the first refusal; their checks hold.
    #[test]
    fn every_policy_envelope_and_config_seed_is_read() {
        for (name, bytes) in seeds("policy") {
            if let Err(error) = model::parse(&bytes) {
                panic!("{name}: {error:#}");
            }
            check_policy(&bytes);
        }
        let keep = |_: &str, _: &str| true;
        for (name, bytes) in seeds("envelope") {
            let opened = dsse::OpenedEnvelope::open(bytes.clone()).expect("a seed envelope");
            if let Err(error) = evidence::read_statement(&name, Vec::new(), opened.payload(), &keep)
            {
                panic!("{name}: {error:#}");
            }
            check_envelope(&bytes);
        }
        for (name, bytes) in seeds("config") {
            let text = std::str::from_utf8(&bytes).expect("a UTF-8 seed");
            if let Err(error) = config_file::parse(text) {
                panic!("{name}: {error:#}");
            }
            check_config(&bytes);
        }
    }

    /// The registry seeds served as a registry: every referrer and `.att` envelope is found, and
    /// an index's platform manifests and their image IDs are resolved.
    #[test]
    fn registry_seeds_are_discovered() {
        let found: Vec<(String, Result<Discovered, String>)> = seeds("registry")
            .into_iter()
            .map(|(name, bytes)| {
                let name = Path::new(&name)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name, check_registry(&bytes))
            })
            .collect();
        let discovered = |attachments, linked, identities| {
            Ok(Discovered {
                attachments,
                linked,
                identities,
            })
        };
        assert_eq!(
            found,
            [
                // The list, one platform manifest and its image ID.
                (
                    "docker-list-no-referrers-api.seed".to_owned(),
                    discovered(0, 0, 3)
                ),
                // The index, two platform manifests and their image IDs; the save's envelope
                // names the first platform's image ID (the seeds' archive has that config).
                ("index-platforms.seed".to_owned(), discovered(1, 1, 5)),
                // The referrer and the `.att` image's envelope; the manifest and its image ID.
                (
                    "manifest-referrer-cosign.seed".to_owned(),
                    discovered(2, 0, 2)
                ),
            ]
        );
    }

    /// Inputs the fuzzers once crashed on (`regressions/<target>/`), run as the targets run them.
    #[test]
    fn every_regression_input_is_handled() {
        let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
        let mut count = 0;
        for entry in std::fs::read_dir(&regressions).unwrap() {
            let dir = entry.unwrap().path();
            let target = dir.file_name().unwrap().to_string_lossy().into_owned();
            for input in std::fs::read_dir(&dir).unwrap() {
                let bytes = std::fs::read(input.unwrap().path()).unwrap();
                match target.as_str() {
                    "policy" => check_policy(&bytes),
                    "envelope" => check_envelope(&bytes),
                    "registry" => drop(check_registry(&bytes)),
                    "config" => check_config(&bytes),
                    other => panic!("regressions for an unknown target {other}"),
                }
                count += 1;
            }
        }
        assert!(
            count > 0,
            "no regression inputs in {}",
            regressions.display()
        );
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
