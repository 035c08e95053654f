//! A registry that plays badly, served by this test on 127.0.0.1: oversized and endless bodies
//! (manifests, referrers lists, token answers, blobs), slow drips and silence, swapped content,
//! credentials-stealing redirects, and a flood of referrers pointing at one large envelope. Each
//! must end in a clear one-line error (or a skipped referrer) within the command's one deadline,
//! in bounded memory (asserted with `prlimit --as`).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_attest_tests::registry_bench::{
    assert_registry_failure, assert_success, sha256, text, DSSE_MEDIA_TYPE,
};
use oci_attest_tests::{oci_attest, require};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// How one request is answered.
#[derive(Clone)]
enum Reply {
    /// Status, extra header lines (`Name: value\r\n` each) and a body with its length.
    Full(&'static str, String, Arc<Vec<u8>>),
    /// 200 with a chunked body that never ends.
    Endless(String),
    /// 200 with the body's length announced, then one byte every `Duration`.
    Drip(String, Vec<u8>, Duration),
    /// Reads the request and never answers.
    Silent,
}

fn ok(content_type: &str, body: Vec<u8>) -> Reply {
    Reply::Full(
        "200 OK",
        format!("Content-Type: {content_type}\r\n"),
        Arc::new(body),
    )
}

fn not_found() -> Reply {
    Reply::Full(
        "404 Not Found",
        String::new(),
        Arc::new(b"404 page not found".to_vec()),
    )
}

/// What the handler sees of a request.
struct Request {
    path: String,
    authorised: bool,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// An HTTP/1.1 server (a thread per connection, keep-alive) answering with `handler`; the
/// request heads it saw are kept for the test.
struct HostileRegistry {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HostileRegistry {
    fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || serve(stream, &*handler, &seen));
            }
        });
        HostileRegistry { addr, requests }
    }

    /// `GET /v2/` answers 200; everything else goes to `handler`.
    fn open(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        Self::start(move |request| {
            if request.path == "/v2/" {
                ok("application/json", b"{}".to_vec())
            } else {
                handler(&request.path)
            }
        })
    }

    fn image(&self) -> String {
        format!("{}/app:1", self.addr)
    }
}

fn serve(mut stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        seen.lock().unwrap().push(head.clone());
        let request = Request {
            path: head.split_whitespace().nth(1).unwrap_or("").to_owned(),
            authorised: head.to_ascii_lowercase().contains("authorization:"),
        };
        let head_only = head.starts_with("HEAD ");
        let written = match handler(&request) {
            Reply::Full(status, headers, body) => write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
                body.len()
            )
            .and_then(|()| {
                if head_only {
                    Ok(())
                } else {
                    stream.write_all(&body)
                }
            }),
            Reply::Endless(headers) => {
                let chunk = vec![b' '; 64 << 10];
                let mut result = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{headers}\r\n"
                );
                while result.is_ok() {
                    result = write!(stream, "{:x}\r\n", chunk.len())
                        .and_then(|()| stream.write_all(&chunk))
                        .and_then(|()| stream.write_all(b"\r\n"));
                }
                return;
            }
            Reply::Drip(headers, body, pause) => {
                let mut result = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{headers}\r\n",
                    body.len()
                );
                for byte in &body {
                    if result.is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                    result = stream.write_all(&[*byte]).and_then(|()| stream.flush());
                }
                result
            }
            Reply::Silent => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
        };
        if written.and_then(|()| stream.flush()).is_err() {
            return;
        }
    }
}

/// `oci-attest discover --registry-timeout=SECONDS IMAGE EXTRA…`, and how long it took.
fn discover(image: &str, timeout: u64, extra: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let mut args = vec![
        "discover".to_owned(),
        "--json".to_owned(),
        format!("--registry-timeout={timeout}"),
        image.to_owned(),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let output = oci_attest::output(&args).unwrap();
    (output, started.elapsed())
}

/// A small image manifest, its digest and the referrers index naming `referrers` for it.
fn image_manifest() -> (Vec<u8>, String) {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256(b"{}")), "size": 2},
        "layers": [],
    })
    .to_string()
    .into_bytes();
    let digest = format!("sha256:{}", sha256(&manifest));
    (manifest, digest)
}

/// The referrer manifest carrying envelope `(digest, size)` for `subject`; `salt` makes each
/// one distinct.
fn referrer_manifest(subject: &str, envelope: &(String, usize), salt: usize) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": DSSE_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": format!("sha256:{}", sha256(b"{}")), "size": 2},
        "layers": [{"mediaType": DSSE_MEDIA_TYPE, "digest": envelope.0, "size": envelope.1}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
        "annotations": {"salt": salt.to_string()},
    })
    .to_string()
    .into_bytes()
}

/// A referrers list (an OCI index) of `manifests`.
fn referrers_list(manifests: &[Vec<u8>]) -> Vec<u8> {
    let entries: Vec<Value> = manifests
        .iter()
        .map(|manifest| {
            json!({"mediaType": OCI_MANIFEST, "artifactType": DSSE_MEDIA_TYPE,
                   "digest": format!("sha256:{}", sha256(manifest)), "size": manifest.len()})
        })
        .collect();
    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        .to_string()
        .into_bytes()
}

/// A DSSE envelope whose statement (naming `subject`) carries `padding` bytes.
fn envelope(subject: &str, padding: usize) -> Vec<u8> {
    let hex = subject.strip_prefix("sha256:").unwrap();
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"name": format!("manifestdigest:{hex}"), "digest": {"sha256": hex}}],
        "predicateType": "https://aflock.ai/attestation-collection/v0.1",
        "predicate": {"name": "flood", "attestations": [], "padding": "x".repeat(padding)},
    });
    let payload = base64::engine::general_purpose::STANDARD.encode(statement.to_string());
    json!({"payload": payload, "payloadType": "application/vnd.in-toto+json",
           "signatures": [{"keyid": "flood", "sig": "AA=="}]})
    .to_string()
    .into_bytes()
}

/// A registry holding one image whose referrers are `referrers` (served through the referrers
/// API), and the blobs in `blobs`; `blob_reply` may replace a blob's answer.
fn registry_with_referrers(
    referrers: Vec<Vec<u8>>,
    blobs: HashMap<String, Arc<Vec<u8>>>,
    blob_reply: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static,
) -> (HostileRegistry, String) {
    let (manifest, subject) = image_manifest();
    let list = referrers_list(&referrers);
    let manifests: HashMap<String, Vec<u8>> = std::iter::once(manifest)
        .chain(referrers)
        .map(|bytes| (format!("sha256:{}", sha256(&bytes)), bytes))
        .collect();
    let subject_for_server = subject.clone();
    let server = HostileRegistry::open(move |path| {
        let tail = path.strip_prefix("/v2/app/").unwrap_or_default();
        if let Some(reference) = tail.strip_prefix("manifests/") {
            let digest = if reference == "1" {
                subject_for_server.as_str()
            } else {
                reference
            };
            return manifests
                .get(digest)
                .map_or_else(not_found, |bytes| ok(OCI_MANIFEST, bytes.clone()));
        }
        if tail.starts_with("referrers/") {
            return ok(OCI_INDEX, list.clone());
        }
        if let Some(digest) = tail.strip_prefix("blobs/") {
            if let Some(reply) = blob_reply(digest) {
                return reply;
            }
            return blobs.get(digest).map_or_else(not_found, |bytes| {
                Reply::Full("200 OK", String::new(), Arc::clone(bytes))
            });
        }
        not_found()
    });
    (server, subject)
}

#[test]
fn oversized_endless_and_swapped_answers_fail_cleanly() {
    require!(oci_attest::binary());
    let (manifest, subject) = image_manifest();

    let oversized = HostileRegistry::open(|_| ok(OCI_MANIFEST, vec![b' '; 16 << 20]));
    let (output, _) = discover(&oversized.image(), 10, &[]);
    assert_registry_failure(&output, "more than the 4194304-byte limit");

    // Endless bodies stop at the cap, with no length announced.
    let endless = HostileRegistry::open(|_| Reply::Endless(String::new()));
    let (output, elapsed) = discover(&endless.image(), 30, &[]);
    assert_registry_failure(
        &output,
        "longer than the 4194304-byte limit (stopped reading there)",
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");

    let manifest_for_list = manifest.clone();
    let endless_list = HostileRegistry::open(move |path| {
        if path.contains("/referrers/") {
            Reply::Endless(String::new())
        } else {
            ok(OCI_MANIFEST, manifest_for_list.clone())
        }
    });
    let (output, _) = discover(&endless_list.image(), 30, &[]);
    assert_registry_failure(
        &output,
        "the referrers list is longer than the 4194304-byte limit",
    );

    // A tag answered with bytes whose header claims another digest.
    let swapped_manifest = manifest.clone();
    let swapped = HostileRegistry::open(move |_| {
        Reply::Full(
            "200 OK",
            format!(
                "Content-Type: {OCI_MANIFEST}\r\nDocker-Content-Digest: sha256:{}\r\n",
                "0".repeat(64)
            ),
            Arc::new(swapped_manifest.clone()),
        )
    });
    let (output, _) = discover(&swapped.image(), 10, &[]);
    assert_registry_failure(&output, "Docker-Content-Digest says");

    // Referrers whose envelope never ends, or is another envelope than its digest names: each
    // is skipped with a warning naming the problem, and the rest of the discovery goes on.
    let real = envelope(&subject, 10);
    let real_descriptor = (format!("sha256:{}", sha256(&real)), real.len());
    let endless_descriptor = (format!("sha256:{}", "e".repeat(64)), 1 << 20);
    let swapped_descriptor = (format!("sha256:{}", "5".repeat(64)), real.len());
    let referrers = vec![
        referrer_manifest(&subject, &real_descriptor, 0),
        referrer_manifest(&subject, &endless_descriptor, 1),
        referrer_manifest(&subject, &swapped_descriptor, 2),
    ];
    let blobs: HashMap<String, Arc<Vec<u8>>> = [
        (real_descriptor.0.clone(), Arc::new(real.clone())),
        (
            swapped_descriptor.0.clone(),
            // Another envelope of the same length.
            Arc::new(
                String::from_utf8(real.clone())
                    .unwrap()
                    .replace("flood", "flooe")
                    .into_bytes(),
            ),
        ),
    ]
    .into_iter()
    .collect();
    let endless_digest = endless_descriptor.0.clone();
    let (mixed, _) = registry_with_referrers(referrers, blobs, move |digest| {
        (digest == endless_digest).then(|| Reply::Endless(String::new()))
    });
    let (output, _) = discover(&mixed.image(), 30, &[]);
    assert_success(&output);
    let found: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        found["attestations"].as_array().unwrap().len(),
        1,
        "{found:#}"
    );
    assert_eq!(found["skipped"], 2, "{found:#}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the blob is longer than the 1048576-byte limit"),
        "{stderr}"
    );
    assert!(stderr.contains("the content's digest is"), "{stderr}");
}

/// `--registry-timeout` bounds the whole command: an answer dripping one byte at a time (each
/// byte well within any per-read timeout), a silent server, or a token realm that drips, all
/// end at the one deadline.
#[test]
fn slow_answers_cannot_stretch_the_deadline() {
    require!(oci_attest::binary());
    let (manifest, _) = image_manifest();
    let drip_manifest = manifest.clone();
    let dripping = HostileRegistry::open(move |_| {
        Reply::Drip(
            format!("Content-Type: {OCI_MANIFEST}\r\n"),
            drip_manifest.clone(),
            Duration::from_millis(200),
        )
    });
    let (output, elapsed) = discover(&dripping.image(), 3, &[]);
    assert_registry_failure(&output, "not done within 3s (--registry-timeout");
    assert!(
        elapsed < Duration::from_secs(10),
        "a dripping answer took {elapsed:?}"
    );

    let silent = HostileRegistry::open(|_| Reply::Silent);
    let (output, elapsed) = discover(&silent.image(), 3, &[]);
    assert_registry_failure(&output, "not done within 3s");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // A bearer realm on the same server whose token answer drips.
    let realm_holder: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let realm = Arc::clone(&realm_holder);
    let token_drip = HostileRegistry::start(move |request| {
        if request.path.starts_with("/token") {
            return Reply::Drip(
                "Content-Type: application/json\r\n".to_owned(),
                br#"{"token":"never-complete"}"#.to_vec(),
                Duration::from_millis(500),
            );
        }
        Reply::Full(
            "401 Unauthorized",
            format!(
                "WWW-Authenticate: Bearer realm=\"{}\",service=\"hostile\"\r\n",
                realm.lock().unwrap()
            ),
            Arc::new(Vec::new()),
        )
    });
    *realm_holder.lock().unwrap() = format!("http://{}/token", token_drip.addr);
    let (output, elapsed) = discover(&token_drip.image(), 3, &[]);
    assert_registry_failure(&output, "not done within 3s");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // An endless token answer stops at its cap.
    let endless_holder: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let endless_realm = Arc::clone(&endless_holder);
    let token_endless = HostileRegistry::start(move |request| {
        if request.path.starts_with("/token") {
            return Reply::Endless("Content-Type: application/json\r\n".to_owned());
        }
        Reply::Full(
            "401 Unauthorized",
            format!(
                "WWW-Authenticate: Bearer realm=\"{}\"\r\n",
                endless_realm.lock().unwrap()
            ),
            Arc::new(Vec::new()),
        )
    });
    *endless_holder.lock().unwrap() = format!("http://{}/token", token_endless.addr);
    let (output, _) = discover(&token_endless.image(), 30, &[]);
    assert_registry_failure(
        &output,
        "the token answer is longer than the 65536-byte limit",
    );
}

/// Credentials reach only the registry they were given for: a redirect to another port
/// arrives without the `Authorization` header.
#[test]
fn a_redirect_elsewhere_does_not_carry_the_credentials() {
    require!(oci_attest::binary());
    let (manifest, _) = image_manifest();
    let elsewhere = HostileRegistry::open(move |_| ok(OCI_MANIFEST, manifest.clone()));
    let target = elsewhere.addr.clone();
    let redirecting = HostileRegistry::start(move |request| {
        if !request.authorised {
            return Reply::Full(
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"hostile\"\r\n".to_owned(),
                Arc::new(Vec::new()),
            );
        }
        if request.path == "/v2/" {
            return ok("application/json", b"{}".to_vec());
        }
        Reply::Full(
            "307 Temporary Redirect",
            format!("Location: http://{target}{}\r\n", request.path),
            Arc::new(Vec::new()),
        )
    });
    discover(&redirecting.image(), 10, &["--creds=user:secret-password"]);
    let redirected = elsewhere.requests.lock().unwrap().clone();
    assert!(!redirected.is_empty(), "the redirect was not followed");
    let leaked: Vec<&String> = redirected
        .iter()
        .filter(|head| head.to_ascii_lowercase().contains("authorization"))
        .collect();
    assert!(
        leaked.is_empty(),
        "credentials followed the redirect: {leaked:?}"
    );
    let first = redirecting.requests.lock().unwrap().clone();
    assert!(
        first
            .iter()
            .any(|head| head.to_ascii_lowercase().contains("authorization")),
        "the registry itself never got the credentials: {first:?}"
    );
}

/// Many referrers pointing at one large envelope: it is read once, and `discover` stays within
/// an address-space limit far below what holding each copy would take.
#[test]
fn a_referrer_flood_on_one_large_envelope_stays_flat_in_memory() {
    /// Referrer manifests listed (each distinct, each naming the same envelope).
    const REFERRERS: usize = 2_000;
    /// The envelope's padding: a large but allowed attestation.
    const ENVELOPE_PADDING: usize = 40 << 20;
    /// The address-space limit `discover` runs under (`prlimit --as`).
    const ADDRESS_SPACE: u64 = 384 << 20;
    let binary = require!(oci_attest::binary());
    let (_, subject) = image_manifest();
    let large = envelope(&subject, ENVELOPE_PADDING);
    let descriptor = (format!("sha256:{}", sha256(&large)), large.len());
    let referrers: Vec<Vec<u8>> = (0..REFERRERS)
        .map(|salt| referrer_manifest(&subject, &descriptor, salt))
        .collect();
    let blobs: HashMap<String, Arc<Vec<u8>>> = [(descriptor.0.clone(), Arc::new(large))]
        .into_iter()
        .collect();
    let (server, _) = registry_with_referrers(referrers, blobs, |_| None);
    let started = Instant::now();
    let output = Command::new("prlimit")
        .arg(format!("--as={ADDRESS_SPACE}"))
        .arg(&binary)
        .args(["discover", "--json", "--registry-timeout=120"])
        .arg(server.image())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_success(&output);
    let found: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        found["attestations"].as_array().unwrap().len(),
        1,
        "{}",
        text(&output)
    );
    assert_eq!(found["duplicates"], REFERRERS - 1, "{found:#}");
    let blob_reads = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|head| head.starts_with(&format!("GET /v2/app/blobs/{}", descriptor.0)))
        .count();
    assert_eq!(
        blob_reads, 1,
        "the shared envelope was read {blob_reads} times"
    );
    println!("{REFERRERS} referrers on one {ENVELOPE_PADDING}-byte envelope: {elapsed:?}");
}
