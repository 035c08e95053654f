//! Reaching registries as CI jobs do, against real `docker-registry` instances on 127.0.0.1:
//! credential helpers (`credsStore`, `credHelpers`), the push command's own credentials reused
//! by `run --attach`, identity tokens and bearer-token realms with scopes, a self-signed
//! `CA:TRUE` certificate, `--tls-verify=false`, HTTP on loopback, registries.conf `insecure`
//! and certs.d, and the messages when none of it works. skopeo (containers/image) is the
//! independent client that must accept the same set-ups.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_attest_tests::command::run;
use oci_attest_tests::registry::{self_signed_certificate, PrivateRegistry, TokenServer};
use oci_attest_tests::registry_bench::{
    assert_registry_failure, assert_success, repository, run_args, strings, text, Bench,
};
use oci_attest_tests::{paths, require};
use serde_json::{json, Value};

/// Runs with a fresh HOME and none of the variables that point at other auth files,
/// registries.conf or cert dirs, plus `PATH` with `bin` in front (for credential helpers).
fn hermetic<'a>(home: &'a Path, bin: Option<&'a Path>) -> impl FnOnce(&mut Command) + 'a {
    move |command| {
        for name in [
            "DOCKER_CONFIG",
            "REGISTRY_AUTH_FILE",
            "XDG_RUNTIME_DIR",
            "CONTAINERS_REGISTRIES_CONF",
        ] {
            command.env_remove(name);
        }
        command.env("HOME", home);
        if let Some(bin) = bin {
            let mut dirs = vec![bin.to_path_buf()];
            dirs.extend(std::env::split_paths(&paths::search_path()));
            command.env("PATH", std::env::join_paths(dirs).unwrap());
        }
    }
}

/// A fresh directory under the bench's work dir.
fn fresh_dir(env: &Bench, name: &str) -> PathBuf {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes an executable `docker-credential-NAME` into `bin` that logs each `get` (the server it
/// was asked about) to `log` and answers from `answers` (server → JSON answer); any other server
/// gets the helpers' "not found" answer and exit 1.
fn credential_helper(bin: &Path, name: &str, log: &Path, answers: &[(&str, Value)]) {
    let mut cases = String::new();
    for (server, answer) in answers {
        cases.push_str(&format!("  '{server}') echo '{answer}' ;;\n"));
    }
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\necho \"get $server\" >> '{log}'\n\
         case \"$server\" in\n{cases}  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        log = log.display(),
    );
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn discover_args(image: &str, extra: &[String]) -> Vec<String> {
    let mut args = strings(&["discover", "--json", image]);
    args.extend(extra.iter().cloned());
    args
}

fn attestation_count(output: &Output) -> usize {
    let found: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", text(output)));
    found["attestations"].as_array().unwrap().len()
}

/// An envelope naming nothing in particular (attach reads it unverified; --force attaches it).
fn placeholder_envelope(path: &Path) {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"name": "x", "digest": {"sha256": "0".repeat(64)}}],
        "predicateType": "https://aflock.ai/attestation-collection/v0.1",
        "predicate": {"name": "placeholder", "attestations": []},
    });
    let payload = base64::engine::general_purpose::STANDARD.encode(statement.to_string());
    let envelope = json!({"payload": payload, "payloadType": "application/vnd.in-toto+json",
                          "signatures": [{"keyid": "placeholder", "sig": "AA=="}]});
    std::fs::write(path, envelope.to_string()).unwrap();
}

#[test]
fn credential_helpers_named_by_creds_store_and_cred_helpers_log_in() {
    let env = require!(Bench::prepare());
    let registry = env.registries.tls.clone();
    let image = format!("{registry}/{}:1", repository("helper"));
    env.push("skopeo-docker-archive", &image, true);
    let home = fresh_dir(&env, "helper-home");
    let bin = fresh_dir(&env, "helper-bin");
    let config_dir = home.join(".docker");
    std::fs::create_dir_all(&config_dir).unwrap();
    let log = env.path("helper.log");
    let answer = json!({"ServerURL": registry, "Username": env.registries.user,
                        "Secret": env.registries.password});
    credential_helper(&bin, "ociattest", &log, &[(&registry, answer)]);
    credential_helper(&bin, "ociattest-empty", &log, &[]);
    let ca = vec![format!("--ca-file={}", env.registries.ca.display())];
    let discover = |config: Value| {
        std::fs::write(config_dir.join("config.json"), config.to_string()).unwrap();
        env.oci_attest_with(&discover_args(&image, &ca), hermetic(&home, Some(&bin)))
    };

    // docker login on a desktop: every registry's secret in one store.
    let by_store = discover(json!({"auths": {registry.clone(): {}}, "credsStore": "ociattest"}));
    assert_success(&by_store);
    assert_eq!(attestation_count(&by_store), 0);
    // ECR/GCR style: one helper per registry, beside a store that has nothing.
    let by_helper = discover(json!({"credHelpers": {registry.clone(): "ociattest"},
                                    "credsStore": "ociattest-empty"}));
    assert_success(&by_helper);
    let asked = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        asked.lines().collect::<Vec<_>>(),
        [format!("get {registry}"), format!("get {registry}")],
        "the helpers were asked about the registry host"
    );

    // A helper with nothing for the registry: the message says what was tried.
    let none = discover(json!({"credHelpers": {registry.clone(): "ociattest-empty"}}));
    assert_registry_failure(
        &none,
        "the registry wants credentials (401 Unauthorized) and none were found",
    );
    assert_registry_failure(&none, "docker-credential-ociattest-empty (credHelpers in");
    let missing = discover(json!({"credsStore": "nosuch"}));
    assert_registry_failure(&missing, "docker-credential-nosuch (credsStore in");
    assert_registry_failure(&missing, "not found on PATH");
    // No auth file at all: the default places are listed.
    std::fs::remove_file(config_dir.join("config.json")).unwrap();
    let nothing = env.oci_attest_with(&discover_args(&image, &ca), hermetic(&home, Some(&bin)));
    assert_registry_failure(&nothing, ".docker/config.json (absent)");
}

#[test]
fn wrong_credentials_auth_files_and_a_registry_that_is_down() {
    let env = require!(Bench::prepare());
    let image = format!("{}/{}:1", env.registries.tls, repository("creds"));
    env.push("skopeo-docker-archive", &image, true);
    let home = fresh_dir(&env, "creds-home");
    let wrong = env.oci_attest_with(
        &discover_args(
            &image,
            &[
                format!("--creds={}:wrong", env.registries.user),
                format!("--ca-file={}", env.registries.ca.display()),
            ],
        ),
        hermetic(&home, None),
    );
    assert_registry_failure(
        &wrong,
        &format!(
            "the registry refused the credentials of user {:?} from --creds (401 Unauthorized)",
            env.registries.user
        ),
    );

    // The credentials also come from an auth file, named by --authfile or REGISTRY_AUTH_FILE
    // (containers auth.json format), and the CA from a containers-style cert dir.
    let auth_file = env.path("auth.json");
    let encoded = base64::engine::general_purpose::STANDARD.encode(env.registries.creds());
    std::fs::write(
        &auth_file,
        json!({"auths": {env.registries.tls.clone(): {"auth": encoded}}}).to_string(),
    )
    .unwrap();
    let cert_dir = format!("--cert-dir={}", env.cert_dir.display());
    let by_flag = env.oci_attest_with(
        &discover_args(
            &image,
            &[
                format!("--authfile={}", auth_file.display()),
                cert_dir.clone(),
            ],
        ),
        hermetic(&home, None),
    );
    assert_success(&by_flag);
    let by_env = env.oci_attest_with(&discover_args(&image, &[cert_dir]), |command| {
        hermetic(&home, None)(command);
        command.env("REGISTRY_AUTH_FILE", &auth_file);
    });
    assert_success(&by_env);

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let down = env.oci_attest(&discover_args(&format!("127.0.0.1:{port}/app:1"), &[]));
    assert_registry_failure(
        &down,
        &format!("registry 127.0.0.1:{port}: cannot reach it"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// `run --attach` around a push that was given its credentials and CA on its own command line
/// (`--dest-creds`, `--dest-cert-dir`; then `--authfile`) needs no second copy of them.
#[test]
fn run_attach_reuses_the_push_commands_credentials() {
    let env = require!(Bench::prepare());
    let home = fresh_dir(&env, "reuse-home");
    let image = format!("{}/{}:1", env.registries.tls, repository("reuse"));
    let out = env.path("reuse.att.json");
    let result = env.run_with(
        &out,
        &strings(&["--attach", "--trace", "off"]),
        &env.skopeo_push_args("skopeo-docker-archive", &image, true),
        hermetic(&home, None),
    );
    assert_success(&result);
    let mut discover = discover_args(&image, &env.tls_options());
    let found = env.oci_attest(&discover);
    assert_success(&found);
    assert_eq!(attestation_count(&found), 1);

    let auth_file = env.path("push-auth.json");
    let encoded = base64::engine::general_purpose::STANDARD.encode(env.registries.creds());
    std::fs::write(
        &auth_file,
        json!({"auths": {env.registries.tls.clone(): {"auth": encoded}}}).to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&auth_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let second = format!("{}/{}:1", env.registries.tls, repository("reuse-authfile"));
    let push = vec![
        "skopeo".to_owned(),
        "copy".to_owned(),
        "--quiet".to_owned(),
        format!("--authfile={}", auth_file.display()),
        format!("--dest-cert-dir={}", env.cert_dir.display()),
        format!(
            "docker-archive:{}",
            env.fixture("skopeo-docker-archive").display()
        ),
        format!("docker://{second}"),
    ];
    let result = env.run_with(
        &env.path("reuse2.att.json"),
        &strings(&["--attach", "--trace", "off"]),
        &push,
        hermetic(&home, None),
    );
    assert_success(&result);
    discover[2] = second;
    assert_eq!(attestation_count(&env.oci_attest(&discover)), 1);
}

/// distribution's token authentication: the registry answers 401 with a Bearer realm; basic
/// credentials get a token with a GET, an identity token (an auth file's `identitytoken`, or a
/// helper's `<token>` user) with an OAuth2 refresh-token POST; each asks for exactly the scope
/// the command needs.
#[test]
fn identity_tokens_and_bearer_realms_with_scopes() {
    let env = require!(Bench::prepare());
    let dir = fresh_dir(&env, "token");
    let refresh = "refresh-token-for-oci-attest";
    let tokens = require!(TokenServer::start(&dir, &env.registries.creds(), refresh));
    let registry = require!(PrivateRegistry::start(
        &dir,
        "token-registry",
        None,
        &tokens.registry_auth()
    ));
    let name = repository("token");
    let image = format!("{}/{name}:1", registry.addr);
    let mut push = env.skopeo_push_args("skopeo-docker-archive", &image, false);
    push.insert(3, format!("--dest-creds={}", env.registries.creds()));
    run_args(&push);
    assert!(
        tokens
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|request| request.method == "GET"),
        "skopeo got its token with basic credentials"
    );
    tokens.requests.lock().unwrap().clear();

    let home = fresh_dir(&env, "token-home");
    let auth_file = env.path("token-auth.json");
    std::fs::write(
        &auth_file,
        json!({"auths": {registry.addr.clone(): {"identitytoken": refresh}}}).to_string(),
    )
    .unwrap();
    let envelope = env.path("placeholder.json");
    placeholder_envelope(&envelope);
    let authfile = format!("--authfile={}", auth_file.display());
    let attached = env.oci_attest_with(
        &[
            "attach".to_owned(),
            "--force".to_owned(),
            authfile.clone(),
            envelope.display().to_string(),
            image.clone(),
        ],
        hermetic(&home, None),
    );
    assert_success(&attached);
    let found = env.oci_attest_with(
        &discover_args(&image, std::slice::from_ref(&authfile)),
        hermetic(&home, None),
    );
    assert_success(&found);
    assert_eq!(attestation_count(&found), 1);
    let requests = tokens.requests.lock().unwrap().clone();
    let scopes: Vec<(String, Option<String>, Vec<String>)> = requests
        .into_iter()
        .map(|request| (request.method, request.grant_type, request.scopes))
        .collect();
    let refresh_grant = |scope: &str| {
        (
            "POST".to_owned(),
            Some("refresh_token".to_owned()),
            vec![scope.to_owned()],
        )
    };
    assert_eq!(
        scopes,
        [
            refresh_grant(&format!("repository:{name}:pull,push")),
            refresh_grant(&format!("repository:{name}:pull")),
        ]
    );

    // A helper answering with the `<token>` user hands over an identity token too.
    let bin = fresh_dir(&env, "token-bin");
    let log = env.path("token-helper.log");
    credential_helper(
        &bin,
        "ociattest-token",
        &log,
        &[(
            &registry.addr,
            json!({"Username": "<token>", "Secret": refresh}),
        )],
    );
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::write(
        home.join(".docker/config.json"),
        json!({"credHelpers": {registry.addr.clone(): "ociattest-token"}}).to_string(),
    )
    .unwrap();
    let by_helper = env.oci_attest_with(&discover_args(&image, &[]), hermetic(&home, Some(&bin)));
    assert_success(&by_helper);
    assert_eq!(attestation_count(&by_helper), 1);

    // A wrong identity token: the token endpoint's refusal names what was sent.
    std::fs::write(
        &auth_file,
        json!({"auths": {registry.addr.clone(): {"identitytoken": "stale"}}}).to_string(),
    )
    .unwrap();
    let refused = env.oci_attest_with(&discover_args(&image, &[authfile]), hermetic(&home, None));
    assert_registry_failure(
        &refused,
        "the token endpoint refused the identity token from",
    );
}

/// A certificate made with `openssl req -x509` (CA:TRUE) is accepted as the server's own when
/// named by --ca-file or --cert-dir or found in certs.d, as skopeo accepts it; another one is
/// not; `--tls-verify=false` and registries.conf `insecure = true` skip the check.
#[test]
fn a_self_signed_ca_certificate_is_accepted_as_skopeo_accepts_it() {
    let env = require!(Bench::prepare());
    let dir = fresh_dir(&env, "self-signed");
    let (certificate, key) = require!(self_signed_certificate(&dir, "server"));
    let constraints = run(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "basicConstraints", "-in"])
        .arg(&certificate))
    .unwrap();
    assert!(
        String::from_utf8_lossy(&constraints.stdout).contains("CA:TRUE"),
        "the test certificate is not the CA:TRUE kind: {}",
        text(&constraints)
    );
    let registry = require!(PrivateRegistry::start(
        &dir,
        "self-signed-registry",
        Some((&certificate, &key)),
        ""
    ));
    let cert_dir = fresh_dir(&env, "self-signed-certs");
    std::fs::copy(&certificate, cert_dir.join("server.crt")).unwrap();
    let image = format!("{}/{}:1", registry.addr, repository("selfsigned"));
    // skopeo, the independent client, accepts it from a cert dir.
    run_args(&[
        "skopeo".to_owned(),
        "copy".to_owned(),
        "--quiet".to_owned(),
        format!("--dest-cert-dir={}", cert_dir.display()),
        format!(
            "docker-archive:{}",
            env.fixture("skopeo-docker-archive").display()
        ),
        format!("docker://{image}"),
    ]);
    let home = fresh_dir(&env, "self-signed-home");
    let discover = |extra: &[String]| {
        env.oci_attest_with(&discover_args(&image, extra), hermetic(&home, None))
    };
    assert_success(&discover(&[format!("--ca-file={}", certificate.display())]));
    assert_success(&discover(&[format!("--cert-dir={}", cert_dir.display())]));
    assert_success(&discover(&strings(&["--tls-verify=false"])));
    let untrusted = discover(&[]);
    assert_registry_failure(&untrusted, "the registry's TLS certificate is not trusted");
    let (other, _) = self_signed_certificate(&dir, "other").unwrap();
    let wrong = discover(&[format!("--ca-file={}", other.display())]);
    assert_registry_failure(&wrong, "the registry's TLS certificate is not trusted");

    // certs.d under the user's config, as containers/image reads it.
    let certs_d = home.join(".config/containers/certs.d").join(&registry.addr);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(&certificate, certs_d.join("ca.crt")).unwrap();
    assert_success(&discover(&[]));
    std::fs::remove_dir_all(home.join(".config")).unwrap();

    // registries.conf marks it insecure: unverified TLS.
    let conf = env.path("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.addr
        ),
    )
    .unwrap();
    let insecure = env.oci_attest_with(&discover_args(&image, &[]), |command| {
        hermetic(&home, None)(command);
        command.env("CONTAINERS_REGISTRIES_CONF", &conf);
    });
    assert_success(&insecure);
}

/// The plain-HTTP registry on 127.0.0.1 is found without --plain-http (HTTPS first, then HTTP,
/// as crane and cosign do on loopback); with --tls-verify=true TLS is required and the message
/// says what to pass; --tls-verify=false allows HTTP as skopeo's does; --plain-http to a TLS
/// registry says it may speak TLS.
#[test]
fn plain_http_on_loopback_and_the_messages_elsewhere() {
    let env = require!(Bench::prepare());
    let image = format!("{}/{}:1", env.registries.plain, repository("plain"));
    env.push("skopeo-docker-archive", &image, false);
    let home = fresh_dir(&env, "plain-home");
    let discover = |image: &str, extra: &[&str]| {
        env.oci_attest_with(
            &discover_args(image, &strings(extra)),
            hermetic(&home, None),
        )
    };
    assert_success(&discover(&image, &[]));
    assert_success(&discover(&image, &["--tls-verify=false"]));
    let strict = discover(&image, &["--tls-verify=true"]);
    assert_registry_failure(&strict, "the registry speaks plain HTTP: pass --plain-http");
    let tls_image = format!("{}/{}:1", env.registries.tls, repository("plain-to-tls"));
    let plain_to_tls = discover(&tls_image, &["--plain-http"]);
    assert_registry_failure(&plain_to_tls, "drop --plain-http");
}
