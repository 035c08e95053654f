//! One redaction policy everywhere, end to end: 22 secrets go into a traced run through the
//! environment, argv of real tools (skopeo credentials, curl user/header/URL), a `sh -c`
//! script, proxy URLs and the key passphrase; none may appear anywhere in the decoded
//! statement, while the hosts, user names and harmless values stay readable.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE};
use oci_attest_tests::oci_attest::stderr;
use oci_attest_tests::{oci_attest, require};

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
