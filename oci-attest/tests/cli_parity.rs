//! What a witness user types works, through the built binary: `--trace`/`-r` as a boolean,
//! `-l/--log-level`, `version`, `attestors list`, `--signer-file-cert-path` (the x509 chain in
//! the envelope), `-a github`/`-a gitlab` from the runner's environment; and the output a
//! machine reads: `run --json`/`--json-out` apart from the command's stdout, `verify --json`
//! fields, `-o -`, `-q`, text log lines without repeated fields.

use std::path::Path;
use std::process::{Command, Output};

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use base64::Engine as _;
use oci_attest_tests::command::output_text as text;
use oci_attest_tests::command::{assert_exit, assert_exit_saying};
use oci_attest_tests::require;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_oci-attest");

/// oci-attest with `args` in `dir`, without the passphrase of the environment.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("OCI_ATTEST_KEY_PASSPHRASE")
        .stdin(std::process::Stdio::null());
    command
}

fn oci_attest(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run oci-attest")
}

/// `oci-attest run ARGS` in `dir`: the one place this file starts `run`, as the tests start it
/// (the command runs as the test user; `dir` comes from `user_dir`).
fn run(dir: &Path, args: &[&str]) -> Command {
    let mut command =
        oci_attest_tests::oci_attest::run_command(Path::new(BIN)).expect("checked by user_dir");
    command
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null());
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn keygen(dir: &Path, algorithm: &str, out: &str) {
    let output = oci_attest(dir, &["keygen", "--algorithm", algorithm, "--out", out]);
    assert_exit(&output, 0);
}

/// `policy.json` in `dir`: one step whose functionary is `key.pem.pub` (for `sign`).
fn write_policy(dir: &Path) {
    let pem = std::fs::read(dir.join("key.pem.pub")).unwrap();
    let keyid = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&pem));
    let policy = serde_json::json!({
        "expires": "2099-01-01T00:00:00Z",
        "publickeys": {&keyid: {"keyid": &keyid, "key": BASE64.encode(&pem)}},
        "steps": {"save": {
            "name": "save",
            "functionaries": [{"type": "publickey", "publickeyid": &keyid}],
            "attestations": [{"type": "https://aflock.ai/attestations/command-run/v0.1"}],
        }},
    });
    std::fs::write(dir.join("policy.json"), policy.to_string()).unwrap();
}

fn statement(envelope: &[u8]) -> Value {
    let envelope: Value = serde_json::from_slice(envelope).unwrap();
    let payload = BASE64
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

fn attestation<'a>(statement: &'a Value, type_uri: &str) -> Option<&'a Value> {
    statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|attestation| attestation["type"] == type_uri)
        .map(|attestation| &attestation["attestation"])
}

/// `--json`: stdout holds the summary alone, what the command printed is on stderr;
/// `--json-out FILE` leaves the command's stdout alone; on failure the summary says why.
#[test]
fn run_json_summary_is_apart_from_the_commands_stdout() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    keygen(d, "ed25519", "key.pem");
    let script = "echo 'Copying blob 1/1'; echo made > made.txt";
    let base = ["--trace", "off", "-k", "key.pem", "-o", "att.json"];

    let output = run(
        d,
        &[&base[..], &["--json", "--", "sh", "-c", script]].concat(),
    )
    .output()
    .unwrap();
    assert_exit(&output, 0);
    let summary: Value = serde_json::from_str(stdout(&output).trim_end()).unwrap();
    assert_eq!(stdout(&output).lines().count(), 1, "{}", text(&output));
    assert_eq!(summary["products"], serde_json::json!(["made.txt"]));
    assert!(
        stderr(&output).contains("Copying blob 1/1"),
        "{}",
        text(&output)
    );

    let output = run(
        d,
        &[
            &base[..],
            &["--json-out", "summary.json", "--", "sh", "-c", script],
        ]
        .concat(),
    )
    .output()
    .unwrap();
    assert_exit(&output, 0);
    assert_eq!(stdout(&output), "Copying blob 1/1\n");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["outfile"], "att.json");
    assert_eq!(summary["signed"], true);

    // Failures before the command: the summary still says why, nothing ran.
    let output = run(
        d,
        &[
            "--trace",
            "off",
            "-k",
            "missing.pem",
            "-o",
            "x.json",
            "--json-out",
            "failed.json",
            "--",
            "touch",
            "ran",
        ],
    )
    .output()
    .unwrap();
    assert_exit(&output, 125);
    let failed: Value =
        serde_json::from_slice(&std::fs::read(d.join("failed.json")).unwrap()).unwrap();
    assert_eq!(failed["reason"], "key-error");
    assert!(!d.join("ran").exists());
    for refused in [
        &["--json", "-o", "-", "--", "true"][..],
        &[
            "--json",
            "--json-out",
            "s.json",
            "-o",
            "a.json",
            "--",
            "true",
        ],
    ] {
        let output = run(d, &[&["--unsigned", "--trace", "off"], refused].concat())
            .output()
            .unwrap();
        assert_ne!(
            output.status.code(),
            Some(0),
            "{refused:?}: {}",
            text(&output)
        );
    }
}

/// `-o -` writes the envelope to stdout even when stdout is not a terminal; `sign -o -` too.
#[test]
fn dash_outfile_is_stdout() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    keygen(d, "ecdsa-p256", "key.pem");
    let output = run(
        d,
        &["--trace", "off", "-k", "key.pem", "-o", "-", "--", "true"],
    )
    .output()
    .unwrap();
    assert_exit(&output, 0);
    assert_eq!(statement(&output.stdout)["predicate"]["name"], "run");
    assert!(!d.join("-").exists());

    write_policy(d);
    let output = oci_attest(
        d,
        &["sign", "-k", "key.pem", "-f", "policy.json", "-o", "-"],
    );
    assert_exit(&output, 0);
    let envelope: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(envelope["payloadType"], "https://aflock.ai/policy/v0.1");
    assert!(!d.join("-").exists());
}

/// `-q`: keygen, sign and verify print nothing when they succeed; a failing verify still says
/// why on stderr and exits 7; `--json` output is still printed.
#[test]
fn quiet_silences_keygen_sign_and_verify() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    let output = oci_attest(d, &["-q", "keygen", "--out", "key.pem"]);
    assert_exit(&output, 0);
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{}",
        text(&output)
    );
    write_policy(d);
    let output = oci_attest(
        d,
        &[
            "sign",
            "-q",
            "-k",
            "key.pem",
            "-f",
            "policy.json",
            "-o",
            "p.json",
        ],
    );
    assert_exit(&output, 0);
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{}",
        text(&output)
    );

    let made = run(
        d,
        &[
            "-q", "--trace", "off", "-k", "key.pem", "-o", "att.json", "--", "true",
        ],
    )
    .output()
    .unwrap();
    assert_exit(&made, 0);
    let verify = [
        "verify",
        "-q",
        "-k",
        "key.pem.pub",
        "--allow-untraced",
        "att.json",
    ];
    let output = oci_attest(d, &verify);
    assert_exit(&output, 0);
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{}",
        text(&output)
    );
    let output = oci_attest(d, &[&verify[..], &["--json"]].concat());
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["verified"],
        true
    );
    let output = oci_attest(d, &["verify", "-q", "-k", "key.pem.pub", "att.json"]);
    assert_exit(&output, 7);
    assert!(output.stdout.is_empty(), "{}", text(&output));
    assert!(
        stderr(&output).contains("--allow-untraced"),
        "{}",
        text(&output)
    );
}

/// `verify --json`: structured fields (the signature, the statement's subjects, the run), never
/// padded text; the image facts are checked in `run_cli.rs` beside the text report.
#[test]
fn verify_json_has_structured_fields() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    keygen(d, "ed25519", "key.pem");
    let output = run(
        d,
        &[
            "--trace",
            "off",
            "-k",
            "key.pem",
            "-o",
            "att.json",
            "--",
            "sh",
            "-c",
            "printf x > x.txt",
        ],
    )
    .output()
    .unwrap();
    assert_exit(&output, 0);
    let output = oci_attest(
        d,
        &[
            "verify",
            "-k",
            "key.pem.pub",
            "--allow-untraced",
            "--json",
            "att.json",
        ],
    );
    assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["signature"]["algorithm"], "Ed25519");
    assert_eq!(report["statement"]["step"], "run");
    let subjects = report["statement"]["subjects"].as_object().unwrap();
    let products = &subjects["https://aflock.ai/attestations/product/v0.3/tree:products"];
    assert_eq!(products["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(report["run"]["trace"], "off");
    assert_eq!(report["problems"], serde_json::json!([]));
}

/// witness's `--trace` boolean: bare `--trace` and `-r` require eBPF tracing, `--trace=false`
/// and `-r false` turn it off, `--trace off` still works.
#[test]
fn trace_is_also_a_boolean() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    let trace_of = |args: &[&str]| -> Value {
        let output = run(
            d,
            &[&["--unsigned", "-o", "st.json"], args, &["--", "true"]].concat(),
        )
        .output()
        .unwrap();
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        let statement: Value =
            serde_json::from_slice(&std::fs::read(d.join("st.json")).unwrap()).unwrap();
        attestation(
            &statement,
            "https://aflock.ai/attestations/command-run/v0.1",
        )
        .unwrap()["summary"]["trace"]
            .clone()
    };
    for off in [
        &["--trace=false"][..],
        &["-r", "false"],
        &["--trace", "off"],
    ] {
        assert_eq!(trace_of(off), "off", "{off:?}");
    }
    require!(oci_attest_tests::root());
    for on in [&["--trace"][..], &["-r"], &["--trace=true"]] {
        assert_eq!(trace_of(on), "ebpf", "{on:?}");
    }
}

/// `-l/--log-level` as witness spells it; text log lines say each fact once (no `key=value`
/// tail repeating the message); `version`; `attestors list` is `tools list`.
#[test]
fn log_level_version_and_attestors_list() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    let base = ["--unsigned", "--trace", "off", "-o", "st.json", "--"];
    let warn = run(d, &[&["-l", "warn"][..], &base, &["true"]].concat())
        .output()
        .unwrap();
    assert_exit(&warn, 0);
    assert!(!stderr(&warn).contains("INFO"), "{}", text(&warn));
    let info = run(
        d,
        &[&["--log-level", "info"][..], &base, &["true"]].concat(),
    )
    .output()
    .unwrap();
    let written = stderr(&info)
        .lines()
        .find(|line| line.contains("wrote unsigned statement"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{}", text(&info)));
    assert!(written.ends_with("to st.json"), "{written}");
    assert!(
        !stderr(&info).contains("outfile=") && !stderr(&info).contains("exitcode="),
        "{}",
        text(&info)
    );
    let debug = run(d, &[&["-l", "debug"][..], &base, &["true"]].concat())
        .output()
        .unwrap();
    assert!(stderr(&debug).contains("DEBUG"), "{}", text(&debug));
    let bad = oci_attest(d, &["-l", "loud", "version"]);
    assert_exit(&bad, 2);

    // `version` (witness's spelling) prints what `--version` prints: the version first, then
    // the commit, target, tracer and kernel lines.
    let version = oci_attest(d, &["version"]);
    assert_exit(&version, 0);
    assert!(
        stdout(&version).starts_with(&format!(
            "oci-attest {}\ncommit: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        text(&version)
    );
    assert_eq!(stdout(&version), stdout(&oci_attest(d, &["--version"])));
    let attestors = oci_attest(d, &["attestors", "list"]);
    let tools = oci_attest(d, &["tools", "list"]);
    assert_exit(&attestors, 0);
    assert_eq!(attestors.stdout, tools.stdout);
    assert!(
        stdout(&attestors).contains("github"),
        "{}",
        text(&attestors)
    );
}

/// `--signer-file-cert-path` and `--signer-file-intermediate-paths`: the leaf and the chain
/// are in the signature as witness writes them (base64 of the PEM); `verify` names the
/// certificate; a certificate for another key is refused before the command runs.
#[test]
fn signer_certificate_chain_is_recorded_in_the_envelope() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    keygen(d, "ecdsa-p256", "key.pem");
    keygen(d, "ecdsa-p256", "ca.pem");
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            text(&output)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.pem",
        "-subj",
        "/CN=test CA",
        "-days",
        "2",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        "key.pem",
        "-subj",
        "/CN=ci signer",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.pem", "-days", "1",
        "-out", "leaf.crt",
    ]);
    let output = run(
        d,
        &[
            "--trace",
            "off",
            "-k",
            "key.pem",
            "--signer-file-cert-path",
            "leaf.crt",
            "--signer-file-intermediate-paths",
            "ca.crt",
            "-o",
            "att.json",
            "--",
            "true",
        ],
    )
    .output()
    .unwrap();
    assert_exit(&output, 0);
    let envelope: Value =
        serde_json::from_slice(&std::fs::read(d.join("att.json")).unwrap()).unwrap();
    let signature = &envelope["signatures"][0];
    let decoded = |value: &Value| BASE64.decode(value.as_str().unwrap()).unwrap();
    assert_eq!(
        decoded(&signature["certificate"]),
        std::fs::read(d.join("leaf.crt")).unwrap()
    );
    assert_eq!(
        decoded(&signature["intermediates"][0]),
        std::fs::read(d.join("ca.crt")).unwrap()
    );
    let output = oci_attest(
        d,
        &[
            "verify",
            "-k",
            "key.pem.pub",
            "--allow-untraced",
            "--json",
            "att.json",
        ],
    );
    assert_exit(&output, 0);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let certificate = &report["signature"]["certificate"];
    assert_eq!(certificate["subject"], "CN=ci signer");
    assert_eq!(certificate["issuer"], "CN=test CA");
    assert_eq!(certificate["certifiesKey"], true);
    assert_eq!(certificate["intermediates"], 1);

    let output = run(
        d,
        &[
            "--trace",
            "off",
            "-k",
            "key.pem",
            "--signer-file-cert-path",
            "ca.crt",
            "-o",
            "other.json",
            "--",
            "touch",
            "ran",
        ],
    )
    .output()
    .unwrap();
    assert_exit_saying(&output, 125, "ca.crt: the certificate is for another key");
    assert!(!d.join("ran").exists() && !d.join("other.json").exists());
}

/// `-a github` and `-a gitlab` record the CI job from the runner's environment, with witness's
/// predicate types, fields and URL subjects; a token file adds its claims (decoded offline) and
/// the token itself is hidden everywhere; outside CI the run stops before the command.
#[test]
fn github_and_gitlab_attestors_record_the_job() {
    let dir = require!(oci_attest_tests::oci_attest::user_dir());
    let d = dir.path();
    let claims = r#"{"repository":"org/app","ref":"refs/heads/main","workflow":"release"}"#;
    let token = format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tokens = tempfile::tempdir().unwrap();
    let token_file = tokens.path().join("oidc.jwt");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_path = token_file.to_str().unwrap();

    let output = run(
        d,
        &[
            "--unsigned",
            "--trace",
            "off",
            "-a",
            "environment,github",
            "--attestor-github-jwt-path",
            token_path,
            "-o",
            "gh.json",
            "--",
            "true",
        ],
    )
    .envs([
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_REPOSITORY", "org/app"),
        ("GITHUB_RUN_ID", "4242"),
        ("GITHUB_WORKFLOW", "release"),
        ("GITHUB_REF", "refs/heads/main"),
        ("RUNNER_NAME", "runner-7"),
        ("RUNNER_OS", "Linux"),
        ("COPIED_TOKEN", token.as_str()),
    ])
    .output()
    .unwrap();
    assert_exit(&output, 0);
    let statement: Value =
        serde_json::from_slice(&std::fs::read(d.join("gh.json")).unwrap()).unwrap();
    let github = attestation(&statement, "https://aflock.ai/attestations/github/v0.1").unwrap();
    assert_eq!(github["jwt"]["claims"]["workflow"], "release");
    assert!(github["jwt"].get("verifiedBy").is_none());
    assert_eq!(github["pipelineid"], "4242");
    assert_eq!(github["pipelinename"], "release");
    assert_eq!(github["runnerid"], "runner-7");
    assert_eq!(github["runneros"], "Linux");
    assert_eq!(github["ref"], "refs/heads/main");
    let pipeline = "https://github.com/org/app/actions/runs/4242";
    assert_eq!(github["pipelineurl"], pipeline);
    let subjects: Vec<&str> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|subject| subject["name"].as_str().unwrap())
        .collect();
    let subject = format!("https://aflock.ai/attestations/github/v0.1/pipelineurl:{pipeline}");
    assert!(subjects.contains(&subject.as_str()), "{subjects:?}");
    let environment = attestation(
        &statement,
        "https://aflock.ai/attestations/environment/v0.1",
    )
    .unwrap();
    assert_eq!(environment["variables"]["COPIED_TOKEN"], "******");
    assert!(
        !statement.to_string().contains(&token),
        "the token is recorded"
    );

    let output = run(
        d,
        &[
            "--unsigned",
            "--trace",
            "off",
            "-a",
            "gitlab",
            "-o",
            "gl.json",
            "--",
            "true",
        ],
    )
    .envs([
        ("GITLAB_CI", "true"),
        ("CI_JOB_URL", "https://gitlab.example/g/app/-/jobs/9"),
        (
            "CI_PIPELINE_URL",
            "https://gitlab.example/g/app/-/pipelines/3",
        ),
        ("CI_PROJECT_URL", "https://gitlab.example/g/app"),
        ("CI_JOB_NAME", "image"),
        ("CI_COMMIT_REF_NAME", "main"),
    ])
    .output()
    .unwrap();
    assert_exit(&output, 0);
    let statement: Value =
        serde_json::from_slice(&std::fs::read(d.join("gl.json")).unwrap()).unwrap();
    let gitlab = attestation(&statement, "https://aflock.ai/attestations/gitlab/v0.1").unwrap();
    assert_eq!(gitlab["jobname"], "image");
    assert_eq!(gitlab["joburl"], "https://gitlab.example/g/app/-/jobs/9");
    assert_eq!(gitlab["ref"], "main");
    assert!(gitlab.get("jwt").is_none());
    let backrefs = &statement["predicate"]["backrefs"];
    assert!(
        backrefs
            .as_object()
            .unwrap()
            .keys()
            .any(|key| key.ends_with("pipelineurl:https://gitlab.example/g/app/-/pipelines/3")),
        "{backrefs:#}"
    );

    // Outside CI (the markers unset): nothing runs, the reason is named.
    for (attestor, marker) in [("github", "GITHUB_ACTIONS"), ("gitlab", "GITLAB_CI")] {
        let output = run(
            d,
            &[
                "--unsigned",
                "--trace",
                "off",
                "-a",
                attestor,
                "-o",
                "x.json",
                "--",
                "touch",
                "ran",
            ],
        )
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITLAB_CI")
        .output()
        .unwrap();
        assert_exit_saying(&output, 125, marker);
        assert!(!d.join("ran").exists());
    }
    let output = run(
        d,
        &[
            "--unsigned",
            "--trace",
            "off",
            "--attestor-gitlab-jwt-path",
            token_path,
            "-o",
            "x.json",
            "--",
            "true",
        ],
    )
    .output()
    .unwrap();
    assert_exit_saying(&output, 125, "add -a gitlab");
}
