//! Shared by the fuzz targets: run the real reader on bytes, and build small archives from
//! the `documents` input format. The reader takes the bytes as a stream, straight from memory.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use clap::{Args as _, FromArgMatches as _};
use oci_attest::attestors::file_tree::{self, EmptyLeaves};
use oci_attest::attestors::oci;
use oci_attest::commands::{run, verify};
use oci_attest::digest::sha256_hex;
use oci_attest::dsse;
use oci_attest::inspect::{analyze_reader, DecompressionLimits, Options};
use oci_attest::keys::{Algorithm, PrivateKey, PublicKey};
use oci_attest::policy::authoring::{self, StepDraft};
use oci_attest::policy::evidence::{self, Evidence};
use oci_attest::policy::model::{self, Policy, RegoModule};
use oci_attest::policy::rego::EvaluationError;
use oci_attest::policy::verification::{self, Evaluator};
use oci_attest::products::FileDigest;
use oci_attest::registry::token::{self, Challenge};
use oci_attest::registry::{self, ImageRef, RegistryArgs};
use oci_attest::{config, config_file};
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
        evidence::read_statement("fuzz.json", vec![fuzz_key().keyid()], payload, &keep).map(
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
/// downstream step linked to it by `artifactsFrom` and `attestationsFrom`: written as `policy new`
/// writes a policy and read as `verify -p` reads it (`None` when it refuses the step's name).
fn two_step_policy(upstream: &Evidence) -> Option<Policy> {
    let type_uri = upstream.attestations.first()?.type_uri.clone();
    if upstream.step == DOWNSTREAM {
        return None;
    }
    let step = |name: &str, from: &[&str]| StepDraft {
        name: name.to_owned(),
        functionaries: vec![fuzz_key().clone()],
        attestations: vec![(
            type_uri.clone(),
            vec![RegoModule {
                name: "m".to_owned(),
                source: String::new(),
            }],
        )],
        artifacts_from: from.iter().map(|s| (*s).to_owned()).collect(),
    };
    let steps = [
        step(&upstream.step, &[]),
        step(DOWNSTREAM, &[upstream.step.as_str()]),
    ];
    let mut document = authoring::document(policy_expiry(), &steps).ok()?;
    // `policy new` writes no attestationsFrom; the policy reader takes it as witness writes it.
    document["steps"][DOWNSTREAM]["attestationsFrom"] = serde_json::json!([upstream.step]);
    model::parse(&serde_json::to_vec(&document).ok()?).ok()
}

/// Far enough ahead that no fuzz policy expires.
fn policy_expiry() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(32_503_680_000, 0).expect("the year 3000")
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

/// Ends the control section of a `registry` input (see [`check_registry`]).
pub const CONTROL_END: u8 = 1;

/// Stands for the fuzz registry's token endpoint (`http://127.0.0.1:PORT/token`) in challenges.
pub const REALM: &str = "$REALM";

/// Serves a `registry` input as a registry on 127.0.0.1 and runs `discover` (with the image's
/// identities, as `verify --image-ref`). The input is an optional control section ending at the
/// first byte [`CONTROL_END`], then a `documents` input (see [`resolve_parts_with_subject`]):
/// - part 0 is the manifest (or index) under the tag `fuzz:latest`;
/// - part 1 is the referrers list of whatever digest is asked for, and the cosign `.att`
///   image; an empty part 1 answers 404 (the client then reads the tag-schema index, absent);
/// - every part is served by its digest, as a manifest and as a blob; any other path is 404.
///
/// The control section's lines (`key: value`; [`REALM`] in a value is the token endpoint):
/// - `ping: V` (repeatable): `GET /v2/` answers 401 with `WWW-Authenticate: V` (none: 200);
/// - `challenge: V` (repeatable): the first repository request answers 401 with these;
/// - `token: STATUS BODY`: what the token endpoint answers (GET and POST; none: 404);
/// - `referrers-api: absent`: the referrers API answers 404 and the referrers tag-schema index
///   `sha256-<hex>` serves part 1;
/// - `creds: basic USER:PASSWORD` (`--creds`, the default being `fuzz:fuzz`), `creds: auth B64`,
///   `creds: identitytoken T`, `creds: registrytoken T` (an auth file with that entry),
///   `creds: none` (an empty auth file).
///
/// The challenge and token parsers also run on those values directly. Nothing panics, an error is
/// one line, and every attachment handed over holds the blob of the digest it was listed under.
/// Returns the attachments found and the image's identities.
pub fn check_registry(input: &[u8]) -> Result<Discovered, String> {
    let (control, documents) = match input.iter().position(|&byte| byte == CONTROL_END) {
        Some(end) => (&input[..end], &input[end + 1..]),
        None => (&b""[..], input),
    };
    // One input at a time on the one server (the seed tests run in parallel).
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serialised = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = registry_server();
    let control = Control::parse(&String::from_utf8_lossy(control), &server.address);
    check_auth_parsers(&control);
    let mut args = RegistryArgs {
        plain_http: true,
        // One deadline for the whole process (it is set once): libFuzzer's -timeout bounds
        // each input instead.
        registry_timeout: 30 * 24 * 3600,
        ..RegistryArgs::default()
    };
    // Given credentials or auth file keep the auth files and helpers of the machine out of the
    // run; an auth file here never names a credential helper (it would run a program).
    match &control.creds {
        Creds::Basic(creds) => args.creds = Some(creds.clone()),
        Creds::AuthEntry(entry) => {
            let path = scratch_dir().join("auth.json");
            let file = serde_json::json!({ "auths": { server.address.clone(): entry } });
            std::fs::write(&path, file.to_string()).expect("writing the auth file");
            args.authfile = Some(path);
        }
    }
    *server.state.lock().unwrap_or_else(|e| e.into_inner()) = Served {
        parts: resolve_parts_with_subject(documents),
        control,
        challenged: false,
    };
    let image = ImageRef::parse(&format!("{}/fuzz:latest", server.address))
        .expect("the fuzz registry's image reference");
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

/// The challenge and token parsers on the control section's values, as the client calls them.
fn check_auth_parsers(control: &Control) {
    for headers in [&control.ping, &control.challenge] {
        if let Challenge::Other(scheme) = Challenge::parse(headers.iter().map(String::as_str)) {
            // Named in the message that refuses it.
            assert!(!scheme.is_empty(), "an unnamed scheme from {headers:?}");
        }
    }
    if let Some((_, body)) = &control.token {
        match token::read_token(body) {
            Ok(token) => assert!(!token.is_empty(), "an empty token was accepted"),
            Err(error) => {
                let line = format!("{error:#}");
                assert!(!line.contains('\n'), "multi-line error: {line:?}");
            }
        }
    }
}

/// What [`check_registry`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    pub attachments: usize,
    /// Attachments whose statement names one of the image's identities.
    pub linked: usize,
    /// The image's identities (its digest, image IDs, platform manifests).
    pub identities: usize,
}

/// How the fuzz registry behaves for one input (its control section).
#[derive(Clone, Debug, Default)]
struct Control {
    ping: Vec<String>,
    challenge: Vec<String>,
    token: Option<(u16, Vec<u8>)>,
    referrers_api_absent: bool,
    creds: Creds,
}

#[derive(Clone, Debug)]
enum Creds {
    /// `--creds USER:PASSWORD`.
    Basic(String),
    /// An auth file whose entry for the registry is this object (`{}`: no credentials).
    AuthEntry(Value),
}

impl Default for Creds {
    fn default() -> Self {
        Creds::Basic("fuzz:fuzz".to_owned())
    }
}

impl Control {
    fn parse(text: &str, address: &str) -> Control {
        let realm = format!("http://{address}/token");
        let mut control = Control::default();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            let header = || value.replace(REALM, &realm);
            match key {
                "ping" => control.ping.push(header()),
                "challenge" => control.challenge.push(header()),
                "token" => {
                    let (status, body) = value.split_once(' ').unwrap_or((value, ""));
                    let status = status
                        .parse()
                        .ok()
                        .filter(|status| (200..600).contains(status))
                        .unwrap_or(200);
                    control.token = Some((status, body.as_bytes().to_vec()));
                }
                "referrers-api" => control.referrers_api_absent = value == "absent",
                "creds" => {
                    let (kind, secret) = value.split_once(' ').unwrap_or((value, ""));
                    control.creds = match kind {
                        "basic" => Creds::Basic(secret.to_owned()),
                        "auth" | "identitytoken" | "registrytoken" => {
                            Creds::AuthEntry(serde_json::json!({ kind: secret }))
                        }
                        _ => Creds::AuthEntry(serde_json::json!({})),
                    };
                }
                _ => {}
            }
        }
        control
    }
}

/// What the fuzz registry serves for the input being run.
#[derive(Default)]
struct Served {
    /// The resolved parts, each with its hex SHA-256.
    parts: Vec<(Vec<u8>, String)>,
    control: Control,
    /// Whether the `challenge` 401 was answered already.
    challenged: bool,
}

struct RegistryServer {
    address: String,
    state: Arc<Mutex<Served>>,
}

/// The process's one fuzz registry (a thread answering one connection at a time). It is also
/// the process's HTTP(S) proxy, so a realm or redirect elsewhere reaches it instead of the
/// network (answered 404).
fn registry_server() -> &'static RegistryServer {
    static SERVER: OnceLock<RegistryServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        let address = listener.local_addr().expect("the listener's address");
        let proxy = format!("http://{address}");
        for (name, value) in [
            ("http_proxy", proxy.as_str()),
            ("https_proxy", &proxy),
            ("all_proxy", &proxy),
            ("HTTP_PROXY", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("ALL_PROXY", &proxy),
            ("no_proxy", "127.0.0.1"),
            ("NO_PROXY", "127.0.0.1"),
        ] {
            // Before any other thread of this harness starts and before the first client.
            std::env::set_var(name, value);
        }
        let state = Arc::new(Mutex::new(Served::default()));
        let served = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // A client that went away mid-answer is the client's business.
                let _ = answer(stream, &served);
            }
        });
        RegistryServer {
            address: address.to_string(),
            state,
        }
    })
}

/// A per-process directory for the files a target writes (config file, auth file).
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::tempdir()
            .expect("a temp dir for the fuzz targets' files")
            .keep()
            .canonicalize()
            .expect("the temp dir's canonical path")
    })
}

fn answer(stream: TcpStream, state: &Mutex<Served>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
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
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let Served {
        parts,
        control,
        challenged,
    } = &mut *state;
    let part = |index: usize| {
        parts
            .get(index)
            .map(|(bytes, _)| bytes.as_slice())
            .filter(|bytes| !bytes.is_empty())
    };
    let by_digest = |digest: &str| {
        let hex = digest.strip_prefix("sha256:")?;
        parts
            .iter()
            .find(|(_, part_hex)| part_hex == hex)
            .map(|(bytes, _)| bytes.as_slice())
    };
    let ok = |body: Option<&[u8]>| body.map(|body| (200, Vec::new(), body.to_vec()));
    let unauthorized = |headers: &[String]| Some((401, headers.to_vec(), b"{}".to_vec()));
    let response = if path == "/v2/" {
        if control.ping.is_empty() {
            ok(Some(b"{}"))
        } else {
            unauthorized(&control.ping)
        }
    } else if path.starts_with("/token") {
        control
            .token
            .as_ref()
            .map(|(status, body)| (*status, Vec::new(), body.clone()))
    } else if path.starts_with("/v2/fuzz/") && !control.challenge.is_empty() && !*challenged {
        *challenged = true;
        unauthorized(&control.challenge)
    } else if let Some(reference) = path.strip_prefix("/v2/fuzz/manifests/") {
        if reference == "latest" {
            ok(parts.first().map(|(bytes, _)| bytes.as_slice()))
        } else if reference.ends_with(".att")
            || (reference.starts_with("sha256-") && control.referrers_api_absent)
        {
            ok(part(1))
        } else {
            ok(by_digest(reference))
        }
    } else if path.starts_with("/v2/fuzz/referrers/") && !control.referrers_api_absent {
        ok(part(1))
    } else if let Some(digest) = path.strip_prefix("/v2/fuzz/blobs/") {
        ok(by_digest(digest))
    } else {
        None
    };
    drop(state);
    let (status, challenges, body) = response.unwrap_or((404, Vec::new(), Vec::new()));
    // One write: a head and a body written apart wait for the client's delayed ACK.
    let mut out = format!("HTTP/1.1 {status} Fuzz\r\nContent-Type: application/json\r\n");
    for challenge in challenges {
        out.push_str(&format!("WWW-Authenticate: {challenge}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    let mut stream = stream;
    stream.write_all(&bytes)?;
    stream.flush()
}

// ---- config files -----------------------------------------------------------------------------

/// The options a config file may never set: who the command runs as and what it may reach.
const COMMAND_LINE_ONLY: [&str; 3] = ["run-as", "allow-new-privileges", "allow-readable-key"];

/// A config file as `run` and `verify` meet it: `.oci-attest.yaml` in the directory they start
/// in, with nothing else on their command lines.
/// - the reader: a refusal is one line naming the file, and what it accepts is a mapping of
///   sections;
/// - `config::apply` for `run -- true` and `verify att.json`: a refusal is one line naming the
///   file; otherwise the command line's words stay as they were, after the inserted ones;
/// - the result parsed as the subcommand's options (a usage error is clap's to report), and for
///   `run` the signed options record: no config file sets `run-as`, `allow-new-privileges` or
///   `allow-readable-key`, and every option taken from the file names the file, its digest
///   and a `run.` key.
pub fn check_config(bytes: &[u8]) {
    let dir = scratch_dir();
    let path = dir.join(".oci-attest.yaml");
    std::fs::write(&path, bytes).expect("writing the config file");
    let named = |error: &anyhow::Error| {
        let line = format!("{error:#}");
        assert!(!line.contains('\n'), "multi-line error: {line:?}");
        assert!(line.contains(&path.display().to_string()), "{line:?}");
    };
    match config_file::read(&path) {
        Ok(file) => {
            assert_eq!(file.sha256, sha256_hex(bytes), "the recorded digest");
            let sections = serde_json::to_vec(&file.document);
            assert!(sections.is_ok(), "sections that are not JSON: {sections:?}");
        }
        Err(error) => return named(&error),
    }
    let sha256 = sha256_hex(bytes);
    for given in [&["run", "--", "true"][..], &["verify", "att.json"]] {
        let args: Vec<OsString> = std::iter::once("oci-attest")
            .chain(given.iter().copied())
            .map(OsString::from)
            .collect();
        let applied = match config::apply(args, dir) {
            Ok(applied) => applied,
            Err(error) => return named(&error),
        };
        assert_eq!(applied.subcommand, Some(given[0]));
        assert_eq!(applied.provenance.files, [(path.clone(), sha256.clone())]);
        let rest: Vec<OsString> = given[1..].iter().map(OsString::from).collect();
        assert!(
            applied.args.ends_with(&rest),
            "the command line's words moved: {:?}",
            applied.args
        );
        // The subcommand's own parser, as `main` runs it (without the program name).
        let words = &applied.args[1..];
        if given[0] == "run" {
            check_run_options(words, applied.provenance, dir, &path, &sha256);
        } else {
            let command = verify::Args::augment_args(clap::Command::new("verify"));
            if let Ok(matches) = command.try_get_matches_from(words) {
                let args = verify::Args::from_arg_matches(&matches)
                    .expect("matched options make the verify options");
                assert!(
                    !args.allow_readable_key,
                    "verify.allow-readable-key was taken"
                );
            }
        }
    }
}

fn check_run_options(
    words: &[OsString],
    provenance: config::Provenance,
    dir: &Path,
    path: &Path,
    sha256: &str,
) {
    let command = run::Args::augment_args(clap::Command::new("run"));
    let Ok(matches) = command.clone().try_get_matches_from(words) else {
        return;
    };
    let mut args = run::Args::from_arg_matches(&matches).expect("matched options make run's");
    args.provenance = provenance.with_matches(&command, &matches);
    let isolation = &args.isolation;
    assert!(
        isolation.run_as.is_none() && !isolation.allow_new_privileges,
        "{isolation:?} from a config file"
    );
    assert!(
        !isolation.allow_readable_key,
        "{isolation:?} from a config file"
    );
    let options = run::run_options(&args, dir).expect("the options record of a run");
    let record = serde_json::to_value(&options).expect("the options record serialises");
    let settings = record["settings"]
        .as_object()
        .expect("the options record has settings");
    for (name, setting) in settings {
        let source = &setting["source"];
        if COMMAND_LINE_ONLY.contains(&name.as_str()) {
            assert_eq!(source["kind"], "default", "{name} was set: {setting}");
        }
        if source["kind"] == "config-file" {
            assert_eq!(source["path"], path.display().to_string(), "{setting}");
            assert_eq!(source["sha256"], sha256, "{setting}");
            assert_eq!(source["inworkingdir"], true, "{setting}");
            let key = source["key"].as_str().unwrap_or_default();
            assert!(key.starts_with("run."), "{name} from {key}");
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

    /// The config seeds apply to `run` and `verify` (the fuzzer starts past the refusals),
    /// except the checkout's file that sets who the command runs as, which `run` refuses.
    #[test]
    fn config_seeds_apply_and_a_file_choosing_the_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".oci-attest.yaml");
        for (name, bytes) in seeds("config") {
            std::fs::write(&path, &bytes).unwrap();
            for given in [&["run", "--", "true"][..], &["verify", "att.json"]] {
                let args = std::iter::once("oci-attest")
                    .chain(given.iter().copied())
                    .map(OsString::from)
                    .collect();
                let applied = config::apply(args, dir.path());
                if name.contains("/refused-") && given[0] == "run" {
                    let error = format!("{:#}", applied.unwrap_err());
                    assert!(
                        error.contains("taken from the command line only"),
                        "{error}"
                    );
                } else if let Err(error) = applied {
                    panic!("{name}: {error:#}");
                }
            }
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
        let referrer_and_cosign = discovered(2, 0, 2);
        let platforms = discovered(1, 1, 5);
        let list = discovered(0, 0, 3);
        let expected = [
            // The token realm answers 401 once with a new challenge: the client gets a new token.
            (
                "docker-hub-token-reissued.seed",
                referrer_and_cosign.clone(),
            ),
            ("acr-identity-token.seed", list.clone()),
            // The list, one platform manifest and its image ID.
            ("docker-list-no-referrers-api.seed", list.clone()),
            // Basic credentials from an auth file's `auth` entry.
            ("ecr-basic-auth-entry.seed", list),
            // Anonymous token.
            ("ghcr-anonymous.seed", platforms.clone()),
            // The referrers tag-schema index instead of the referrers API.
            (
                "distribution-basic-referrers-tag.seed",
                referrer_and_cosign.clone(),
            ),
            // The index, two platform manifests and their image IDs; the save's envelope names
            // the first platform's image ID (the seeds' archive has that config).
            ("index-platforms.seed", platforms.clone()),
            // The referrer and the `.att` image's envelope; the manifest and its image ID.
            ("manifest-referrer-cosign.seed", referrer_and_cosign),
            // A registry token is sent as it is.
            ("quay-registry-token.seed", platforms),
        ];
        let mut expected: Vec<(String, Result<Discovered, String>)> = expected
            .into_iter()
            .map(|(name, found)| (name.to_owned(), found))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(found, expected);
    }

    /// A realm that is not the fuzz registry's reaches it as a proxy (404), never the network,
    /// and the client's refusal is one line.
    #[test]
    fn a_realm_elsewhere_stays_on_this_machine() {
        for realm in ["https://auth.docker.io/token", "http://auth.example/token"] {
            let input = format!("ping: Bearer realm=\"{realm}\",service=\"x\"\u{1}{{}}");
            let error = check_registry(input.as_bytes()).unwrap_err();
            assert!(error.contains(realm), "{error}");
        }
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
