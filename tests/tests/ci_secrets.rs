//! One redaction policy everywhere, end to end: 22 secrets go into a traced run through the
//! environment, argv of real tools (skopeo credentials, curl user/header/URL), a `sh -c`
//! script, proxy URLs and the key passphrase; none may appear anywhere in the decoded
//! statement, while the hosts, user names and harmless values stay readable. Then every
//! credential form of `oci_attest_tests::credentials` (real CLIs' ways of taking a secret) is
//! exec'd in one traced run, as the script's text and as each program's argv.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use oci_attest_tests::credentials::{forms, look_alikes, shell_line};
use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE};
use oci_attest_tests::oci_attest::stderr;
use oci_attest_tests::{oci_attest, require};
use serde_json::Value;

/// An Ed25519 key in `dir`, encrypted with `passphrase` (written to `pass.txt`).
fn encrypted_key(dir: &Path, passphrase: &str) -> anyhow::Result<()> {
    let output = oci_attest::command()?
        .current_dir(dir)
        .args(["keygen", "--out", "plain.pem"])
        .output()?;
    anyhow::ensure!(output.status.success(), "keygen: {}", stderr(&output));
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(["pkcs8", "-topk8", "-in", "plain.pem", "-out", "key.pem"])
        .arg("-passout")
        .arg(format!("pass:{passphrase}"))
        .status()?;
    anyhow::ensure!(status.success(), "openssl pkcs8 failed");
    // Root's, mode 0600: out of the command's reach, as run demands.
    std::fs::write(dir.join("pass.txt"), format!("{passphrase}\n"))?;
    std::fs::set_permissions(
        dir.join("pass.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    Ok(())
}

#[test]
fn no_secret_reaches_the_statement() {
    require!(oci_attest_tests::root());
    let fixtures = require!(Fixtures::from_env());
    let source = fixtures.path(require!(fixtures.get(APP_ARCHIVE)));
    let dir = require!(oci_attest::user_dir());
    let d = dir.path();
    let passphrase = "passphrase-secret-22";
    require!(encrypted_key(d, passphrase));

    let environment = [
        ("GITHUB_TOKEN", "ghp-env-secret-01"),
        ("NPM_AUTH", "npm-auth-secret-02"),
        ("DB_PASS", "db-pass-secret-03"),
        ("ADMIN_PW", "admin-pw-secret-04"),
        ("SENTRY_DSN", "https://dsn-secret-05@sentry.example/1"),
        (
            "DATABASE_URL",
            "postgres://dbuser:db-url-secret-06@db.example/app",
        ),
        ("SLACK_WEBHOOK", "https://hooks.example/webhook-secret-07"),
        ("CI_BEARER", "bearer-env-secret-08"),
        ("ID_JWT", "jwt-env-secret-09"),
        ("SIGNING_PRIVATE", "private-env-secret-10"),
        ("DEPLOY_KEY", "deploy-key-secret-11"),
        ("CUSTOM_THING", "custom-secret-12"),
        (
            "HTTPS_PROXY",
            "http://proxyuser:proxy-secret-13@127.0.0.1:3128",
        ),
        ("PLAIN_SETTING", "plain-value-kept"),
    ];
    let script = "curl -s --max-time 2 -u carol:curl-user-secret-14 \
        -H 'Authorization: Bearer header-secret-15' \
        https://urluser:url-secret-16@127.0.0.1:9/ >/dev/null 2>&1; \
        /bin/echo \"$GITHUB_TOKEN\" >/dev/null; \
        /bin/true --password pw-flag-secret-17 --registry-token=token-flag-secret-18 \
        --identity-token identity-secret-19";
    let output = oci_attest::run()
        .unwrap()
        .current_dir(d)
        .envs(environment)
        .env("no_proxy", "*")
        .args([
            "--trace",
            "ebpf",
            "-a",
            "environment",
            "--env-add-sensitive-key",
            "CUSTOM_*",
            "-k",
            "key.pem",
            "--signer-file-key-passphrase-path",
            "pass.txt",
            "-o",
            "att.json",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "skopeo copy --quiet --src-creds alice:src-creds-secret-20 \
             --dest-creds=bob:dest-creds-secret-21 docker-archive:{} oci-archive:out.oci.tar; {script}",
            source.display()
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("att.json")).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement = String::from_utf8(payload).unwrap();
    let leaked: Vec<String> = (1..=22)
        .map(|index| format!("secret-{index:02}"))
        .filter(|marker| statement.contains(marker.as_str()))
        .collect();
    assert!(leaked.is_empty(), "leaked {leaked:?}:\n{statement}");
    // What is not secret stays: hosts, user names, harmless variables, the traced programs.
    for kept in [
        "http://127.0.0.1:3128",
        "https://127.0.0.1:9/",
        "alice:******",
        "bob:******",
        "carol:******",
        "Authorization: Bearer ******",
        "plain-value-kept",
        "/bin/echo ******",
        "--registry-token=******",
    ] {
        assert!(statement.contains(kept), "{kept:?} missing:\n{statement}");
    }
}

/// The argv of every exec in the statement's command-run predicate.
fn exec_argvs(statement: &Value) -> Vec<Vec<String>> {
    let command_run = statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["type"] == "https://aflock.ai/attestations/command-run/v0.1")
        .expect("a command-run attestation");
    command_run["attestation"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|process| process["execs"].as_array().unwrap().iter())
        .map(|exec| serde_json::from_value(exec["argv"].clone()).unwrap())
        .collect()
}

/// Each credential form runs (a stand-in program named like the real tool, so nothing leaves
/// the machine) inside one traced script: its secret must be in neither the script recorded as
/// `cmd` and `sh`'s argv nor the program's own exec; the look-alikes are recorded word for word.
#[test]
fn every_credential_form_is_hidden_in_a_traced_run() {
    require!(oci_attest_tests::root());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let forms = forms();
    let look_alikes = look_alikes();
    let programs: std::collections::BTreeSet<&str> = forms
        .iter()
        .map(|form| form.argv[0].as_str())
        .chain(look_alikes.iter().map(|argv| argv[0].as_str()))
        .filter(|program| *program != "env")
        .collect();
    let stand_in = which("true");
    for program in &programs {
        std::os::unix::fs::symlink(&stand_in, bin.join(program)).unwrap();
    }
    // The command may run as an unprivileged user: it must reach the stand-ins.
    for path in [d, bin.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut script = format!("PATH={}:$PATH\n", bin.display());
    for argv in forms.iter().map(|form| &form.argv).chain(&look_alikes) {
        script.push_str(&shell_line(argv));
        script.push('\n');
    }
    let output = oci_attest::run()
        .unwrap()
        .current_dir(d)
        .args([
            "--trace",
            "ebpf",
            "--unsigned",
            "-a",
            "environment",
            "-o",
            "att.json",
        ])
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(d.join("att.json")).unwrap();
    let statement: Value = serde_json::from_str(&text).unwrap();
    let execs = exec_argvs(&statement);

    let leaked: Vec<&str> = forms
        .iter()
        .filter(|form| text.contains(&form.secret))
        .map(|form| form.name.as_str())
        .collect();
    assert!(
        leaked.is_empty(),
        "{} forms leaked: {leaked:#?}",
        leaked.len()
    );
    // Every form was really exec'd and recorded: the same words, but for those with the secret.
    let unseen: Vec<&str> = forms
        .iter()
        .filter(|form| {
            !execs.iter().any(|argv| {
                argv.len() == form.argv.len()
                    && argv
                        .iter()
                        .zip(&form.argv)
                        .all(|(recorded, given)| recorded == given || given.contains(&form.secret))
            })
        })
        .map(|form| form.name.as_str())
        .collect();
    assert!(unseen.is_empty(), "not exec'd under the trace: {unseen:#?}");
    for argv in &look_alikes {
        assert!(
            execs.contains(argv),
            "look-alike {argv:?} not recorded word for word"
        );
    }
    assert!(
        statement.to_string().contains("mkdir -p dir-control"),
        "the script's own text keeps the look-alikes"
    );
}

fn which(program: &str) -> std::path::PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no {program} in /usr/bin or /bin"))
}
