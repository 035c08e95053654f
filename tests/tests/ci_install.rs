//! The GitHub Action (`action.yml`) and the GitLab template (`ci/gitlab/oci-attest.gitlab-ci.yml`)
//! run as their CI systems run them: the steps' shell, as an unprivileged job user with
//! passwordless sudo (GitHub's `runner`), with the CI's variables and output files, against the
//! real release downloaded from a file server on 127.0.0.1. The command pushes an image to the
//! test registry; the job must install the release only when its SHA-256 matches, run the command
//! as the job user under `sudo -E oci-attest run`, keep the key out of its reach, and hand back
//! the attestation and the pushed digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use oci_attest_tests::command::{output_text, stdout_of};
use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE};
use oci_attest_tests::oci_attest::TestUser;
use oci_attest_tests::registry::RegistryEnv;
use oci_attest_tests::release::{FileServer, Release, CI_JOB_USER};
use oci_attest_tests::{oci_attest, paths, require, root};
use serde_json::Value;
use serde_yaml::Value as Yaml;

/// The two tests share the job user's /tmp key directories and the registry repository names;
/// one at a time keeps "no key directory left behind" meaningful.
static ONE_JOB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What both CI systems get: a job user, its workspace holding an image archive, a runner temp
/// dir, the release served over HTTP, a signing key.
struct Job {
    user: TestUser,
    dir: tempfile::TempDir,
    server: FileServer,
    release: Release,
    registry: RegistryEnv,
    key_pem: String,
    public_key: PathBuf,
}

impl Job {
    /// `tamper`: serve a tarball one byte longer than the one SHA256SUMS lists.
    fn new(tamper: bool) -> anyhow::Result<Job> {
        root()?;
        let user = TestUser::named(CI_JOB_USER)?;
        let release = Release::from_env()?;
        let registry = RegistryEnv::from_env()?;
        let fixtures = Fixtures::from_env()?;
        let dir = tempfile::Builder::new()
            .prefix("oci-attest-ci-job.")
            .tempdir()?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let workspace = dir.path().join("workspace");
        std::fs::create_dir_all(&workspace)?;
        std::fs::create_dir_all(dir.path().join("runner-temp"))?;
        std::fs::copy(
            fixtures.path(fixtures.get(APP_ARCHIVE)?),
            workspace.join("app.tar"),
        )?;
        // As the runner fetches an action: a copy of its files, readable by the job user.
        let action = dir.path().join("action");
        std::fs::create_dir_all(action.join("ci/gitlab"))?;
        for file in [
            "action.yml",
            "ci/oci-attest.sh",
            "ci/gitlab/oci-attest.gitlab-ci.yml",
        ] {
            std::fs::copy(paths::workspace_root().join(file), action.join(file))?;
        }
        user.own(&workspace)?;
        user.own(&dir.path().join("runner-temp"))?;

        let served = dir.path().join("served");
        let version_dir = served.join(format!("v{}", release.version));
        std::fs::create_dir_all(&version_dir)?;
        for file in [release.tarball(), release.file("SHA256SUMS")] {
            std::fs::copy(
                &file,
                version_dir.join(file.file_name().context("a file name")?),
            )?;
        }
        if tamper {
            let tarball = version_dir.join(format!("{}.tar.gz", release.stem()));
            let mut bytes = std::fs::read(&tarball)?;
            bytes.push(0);
            std::fs::write(&tarball, bytes)?;
        }
        let server = FileServer::start(&served)?;

        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys)?;
        let key = keys.join("ci-key.pem");
        let made = oci_attest::output([Path::new("keygen"), Path::new("--out"), &key])?;
        anyhow::ensure!(made.status.success(), "keygen: {}", output_text(&made));
        Ok(Job {
            user,
            key_pem: std::fs::read_to_string(&key)?,
            public_key: keys.join("ci-key.pem.pub"),
            dir,
            server,
            release,
            registry,
        })
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn runner_temp(&self) -> PathBuf {
        self.dir.path().join("runner-temp")
    }

    fn action_path(&self) -> PathBuf {
        self.dir.path().join("action")
    }

    fn download_url(&self) -> String {
        format!("{}/v{}", self.server.url, self.release.version)
    }

    /// `docker://` reference of the image the command pushes, unique per CI system.
    fn pushed_ref(&self, system: &str) -> String {
        format!("{}/ci-{system}/app:1", self.registry.plain)
    }

    /// The attested command: push the workspace's archive to the test registry.
    fn command(&self, system: &str) -> String {
        format!(
            "skopeo copy --quiet --dest-tls-verify=false docker-archive:app.tar docker://{}",
            self.pushed_ref(system)
        )
    }

    /// A bash script run as the job user in the workspace, with `env` only.
    fn run_as_job_user(
        &self,
        script: &Path,
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<Output> {
        let mut command = self.user.command("bash");
        command
            .args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(script)
            .current_dir(self.workspace())
            .envs(env);
        command.output().context("cannot start the job's shell")
    }

    /// No root-only key directory of the job is left in /tmp.
    fn key_dirs_left(&self) -> Vec<PathBuf> {
        std::fs::read_dir("/tmp")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| {
                        path.file_name().is_some_and(|name| {
                            name.to_string_lossy().starts_with("oci-attest-key.")
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What a successful job must have produced, whichever CI system ran it.
    fn check_attested(&self, system: &str, outfile: &str, digest: &str) {
        let outfile = Path::new(outfile);
        assert_eq!(outfile, self.workspace().join("oci-attest.att.json"));
        let verified = oci_attest::output([
            Path::new("verify"),
            Path::new("--key"),
            &self.public_key,
            outfile,
        ])
        .unwrap();
        assert!(verified.status.success(), "{}", output_text(&verified));

        let pushed = stdout_of(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
                .arg(format!("docker://{}", self.pushed_ref(system))),
        )
        .unwrap();
        assert_eq!(
            digest, pushed,
            "the digest output is not the pushed image's"
        );

        let envelope: Value = serde_json::from_slice(&std::fs::read(outfile).unwrap()).unwrap();
        let statement = payload(&envelope);
        let command_run = statement["predicate"]["attestations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| {
                entry["type"]
                    .as_str()
                    .unwrap_or("")
                    .contains("/command-run/")
            })
            .map(|entry| &entry["attestation"])
            .expect("a command-run attestation");
        assert_eq!(command_run["summary"]["trace"], "ebpf");
        assert!(
            command_run["processes"].to_string().contains("skopeo"),
            "the trace did not see skopeo"
        );
        assert!(
            !envelope
                .to_string()
                .contains(self.key_pem.lines().nth(1).unwrap()),
            "the key's text is in the attestation"
        );

        let discovered = oci_attest::output([
            "discover",
            "--json",
            "--plain-http",
            &self.pushed_ref(system),
        ])
        .unwrap();
        assert!(discovered.status.success(), "{}", output_text(&discovered));
        let discovered: Value = serde_json::from_slice(&discovered.stdout).unwrap();
        assert_eq!(discovered["subject"], digest, "{discovered:#}");
        let envelope_digest = format!(
            "sha256:{}",
            oci_attest_tests::command::sha256sum(outfile).unwrap()
        );
        assert!(
            discovered["attestations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|found| found["step"] == "push"
                    && found["envelopeDigest"] == envelope_digest.as_str()),
            "the attestation was not attached: {discovered:#}"
        );
        assert_eq!(
            self.key_dirs_left(),
            Vec::<PathBuf>::new(),
            "key directory left behind"
        );
    }
}

fn payload(envelope: &Value) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn yaml_file(path: &Path) -> Yaml {
    serde_yaml::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The composite action, run as GitHub's runner runs it.
struct Action {
    yaml: Yaml,
}

/// The outcome of running the action: the failing step's output, or the action's outputs.
struct ActionRun {
    outputs: BTreeMap<String, String>,
    /// The last step's output (the failing one when a step failed).
    last: Output,
}

impl Action {
    fn load(job: &Job) -> Action {
        Action {
            yaml: yaml_file(&job.action_path().join("action.yml")),
        }
    }

    /// Runs every step in order, each with the environment GitHub gives it; stops at the first
    /// failing step.
    fn run(&self, job: &Job, with: &BTreeMap<&str, String>) -> anyhow::Result<ActionRun> {
        let mut inputs = BTreeMap::new();
        for (name, spec) in self.yaml["inputs"].as_mapping().context("no inputs")? {
            let name = name.as_str().context("an input name")?;
            let value = match (with.get(name), &spec["default"]) {
                (Some(value), _) => value.clone(),
                (None, Yaml::String(default)) => default.clone(),
                (None, _) if spec["required"].as_bool() == Some(true) => {
                    bail!("the required input {name} is missing")
                }
                (None, _) => String::new(),
            };
            inputs.insert(name.to_owned(), value);
        }
        for name in with.keys() {
            anyhow::ensure!(inputs.contains_key(*name), "action.yml has no input {name}");
        }
        let files = job.dir.path().join("github");
        std::fs::create_dir_all(&files)?;
        job.user.own(&files)?;
        let mut path_additions: Vec<String> = Vec::new();
        let mut step_outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut last = None;
        for step in self.yaml["runs"]["steps"]
            .as_sequence()
            .context("no steps")?
        {
            let id = step["id"].as_str().context("every step has an id")?;
            anyhow::ensure!(step["shell"] == "bash", "step {id}: shell must be bash");
            let script = step["run"].as_str().context("a run step")?;
            anyhow::ensure!(
                !script.contains("${{"),
                "step {id} pastes an expression into its script (script injection)"
            );
            let script_file = files.join(format!("{id}.sh"));
            std::fs::write(&script_file, script)?;
            let output_file = files.join(format!("{id}.output"));
            let path_file = files.join(format!("{id}.path"));
            for file in [&output_file, &path_file] {
                std::fs::write(file, "")?;
                job.user.own(file)?;
            }
            let context = |expression: &str| -> anyhow::Result<String> {
                let words: Vec<&str> = expression.split('.').collect();
                Ok(match words.as_slice() {
                    ["inputs", name] => inputs
                        .get(*name)
                        .with_context(|| format!("no input {name}"))?
                        .clone(),
                    ["github", "action_path"] => job.action_path().display().to_string(),
                    ["github", "action_repository"] => "example/oci-attest".to_owned(),
                    ["steps", step, "outputs", name] => step_outputs
                        .get(*step)
                        .and_then(|outputs| outputs.get(*name))
                        .cloned()
                        .unwrap_or_default(),
                    _ => bail!("the test runner does not know the expression {expression}"),
                })
            };
            let mut env = BTreeMap::new();
            let mut path = path_additions.clone();
            path.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
            env.insert("PATH".to_owned(), path.join(":"));
            env.insert("HOME".to_owned(), job.user.home.display().to_string());
            env.insert("CI".to_owned(), "true".to_owned());
            env.insert("GITHUB_ACTIONS".to_owned(), "true".to_owned());
            env.insert(
                "GITHUB_WORKSPACE".to_owned(),
                job.workspace().display().to_string(),
            );
            env.insert(
                "GITHUB_ACTION_PATH".to_owned(),
                job.action_path().display().to_string(),
            );
            env.insert(
                "GITHUB_OUTPUT".to_owned(),
                output_file.display().to_string(),
            );
            env.insert("GITHUB_PATH".to_owned(), path_file.display().to_string());
            env.insert("GITHUB_REPOSITORY".to_owned(), "example/app".to_owned());
            env.insert("GITHUB_SHA".to_owned(), "0".repeat(40));
            env.insert("GITHUB_RUN_ID".to_owned(), "1".to_owned());
            env.insert(
                "RUNNER_TEMP".to_owned(),
                job.runner_temp().display().to_string(),
            );
            env.insert("RUNNER_OS".to_owned(), "Linux".to_owned());
            for (name, value) in step["env"].as_mapping().into_iter().flatten() {
                let name = name.as_str().context("an env name")?;
                let value = value.as_str().context("an env value")?;
                env.insert(name.to_owned(), expand(value, &context)?);
            }
            let output = job.run_as_job_user(&script_file, &env)?;
            let failed = !output.status.success();
            step_outputs.insert(
                id.to_owned(),
                parse_outputs(&std::fs::read_to_string(&output_file)?),
            );
            path_additions.splice(
                0..0,
                std::fs::read_to_string(&path_file)?
                    .lines()
                    .map(str::to_owned),
            );
            last = Some(output);
            if failed {
                return Ok(ActionRun {
                    outputs: BTreeMap::new(),
                    last: last.take().context("a step ran")?,
                });
            }
        }
        let mut outputs = BTreeMap::new();
        for (name, spec) in self.yaml["outputs"].as_mapping().into_iter().flatten() {
            let name = name.as_str().context("an output name")?;
            let value = spec["value"].as_str().context("an output value")?;
            let resolved = expand(value, &|expression: &str| {
                let words: Vec<&str> = expression.split('.').collect();
                match words.as_slice() {
                    ["steps", step, "outputs", output] => Ok(step_outputs
                        .get(*step)
                        .and_then(|outputs| outputs.get(*output))
                        .cloned()
                        .unwrap_or_default()),
                    _ => bail!("an action output may only read step outputs: {expression}"),
                }
            })?;
            outputs.insert(name.to_owned(), resolved);
        }
        Ok(ActionRun {
            outputs,
            last: last.context("the action has no steps")?,
        })
    }
}

/// Replaces each `${{ expression }}` in `text` with what `context` says it is.
fn expand(text: &str, context: &dyn Fn(&str) -> anyhow::Result<String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .with_context(|| format!("an unclosed expression in {text:?}"))?;
        out.push_str(&context(rest[start + 3..start + end].trim())?);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `NAME=value` lines, and `NAME<<DELIMITER` blocks, as `$GITHUB_OUTPUT` and dotenv hold them.
fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let value: Vec<&str> = lines
                .by_ref()
                .take_while(|line| *line != delimiter)
                .collect();
            outputs.insert(name.to_owned(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            outputs.insert(name.to_owned(), value.to_owned());
        }
    }
    outputs
}

fn action_inputs(job: &Job) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("command", job.command("github")),
        ("key", job.key_pem.clone()),
        ("step", "push".to_owned()),
        ("attach", "true".to_owned()),
        ("args", "--plain-http".to_owned()),
        ("download-url", job.download_url()),
        ("version", job.release.version.clone()),
    ])
}

#[test]
fn github_action_installs_the_checked_release_and_attests_as_the_job_user() {
    let _one = ONE_JOB_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let job = require!(Job::new(false));
    let action = Action::load(&job);
    assert_eq!(
        action.yaml["inputs"]["version"]["default"].as_str(),
        Some(job.release.version.as_str()),
        "the action's default version is not this release"
    );
    let ran = action.run(&job, &action_inputs(&job)).unwrap();
    assert!(ran.last.status.success(), "{}", output_text(&ran.last));
    job.check_attested("github", &ran.outputs["outfile"], &ran.outputs["digest"]);
    // The binary came from the served tarball, unpacked in the runner's temp dir.
    let unpacked = job
        .runner_temp()
        .join(format!("oci-attest-{}", job.release.version))
        .join(job.release.stem())
        .join("oci-attest");
    assert_eq!(
        std::fs::read(unpacked).unwrap(),
        std::fs::read(job.release.binary()).unwrap()
    );
}

#[test]
fn github_action_refuses_a_release_whose_checksum_does_not_match() {
    let _one = ONE_JOB_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let job = require!(Job::new(true));
    let action = Action::load(&job);
    let ran = action.run(&job, &action_inputs(&job)).unwrap();
    assert!(!ran.last.status.success(), "{}", output_text(&ran.last));
    assert!(
        String::from_utf8_lossy(&ran.last.stderr).contains("does not match its SHA-256"),
        "{}",
        output_text(&ran.last)
    );
    assert!(
        !job.runner_temp()
            .join(format!("oci-attest-{}", job.release.version))
            .join(job.release.stem())
            .exists(),
        "a tarball that failed its check was unpacked"
    );
    assert!(!job.workspace().join("oci-attest.att.json").exists());
}

/// The GitLab template's `.oci-attest` job.
fn gitlab_job() -> Yaml {
    let template = yaml_file(&paths::workspace_root().join("ci/gitlab/oci-attest.gitlab-ci.yml"));
    template[".oci-attest"].clone()
}

#[test]
fn gitlab_template_carries_the_action_script_verbatim() {
    let job = gitlab_job();
    let first = job["script"][0].as_str().expect("a script block");
    let embedded: String = first
        .split_once("<<'OCI_ATTEST_SH'\n")
        .and_then(|(_, rest)| rest.rsplit_once("OCI_ATTEST_SH\n"))
        .map(|(script, _)| script.to_owned())
        .expect("the script between <<'OCI_ATTEST_SH' and OCI_ATTEST_SH");
    let script = std::fs::read_to_string(paths::workspace_root().join("ci/oci-attest.sh")).unwrap();
    assert!(
        embedded == script,
        "ci/gitlab/oci-attest.gitlab-ci.yml does not embed ci/oci-attest.sh verbatim"
    );
    assert_eq!(
        job["variables"]["OCI_ATTEST_VERSION"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn gitlab_template_installs_the_checked_release_and_attests_as_the_job_user() {
    let _one = ONE_JOB_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let job = require!(Job::new(false));
    let template = gitlab_job();
    // A File-type CI/CD variable: GitLab writes the value to a file the job user owns and
    // passes its path.
    let key_file = job.dir.path().join("workspace.tmp/OCI_ATTEST_KEY");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    std::fs::write(&key_file, &job.key_pem).unwrap();
    job.user.own(key_file.parent().unwrap()).unwrap();

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in template["variables"].as_mapping().unwrap() {
        env.insert(
            name.as_str().unwrap().to_owned(),
            value.as_str().unwrap().to_owned(),
        );
    }
    for (name, value) in [
        ("OCI_ATTEST_COMMAND", job.command("gitlab")),
        ("OCI_ATTEST_KEY", key_file.display().to_string()),
        ("OCI_ATTEST_STEP", "push".to_owned()),
        ("OCI_ATTEST_ATTACH", "true".to_owned()),
        ("OCI_ATTEST_ARGS", "--plain-http".to_owned()),
        ("OCI_ATTEST_DOWNLOAD_URL", job.download_url()),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ),
        ("HOME", job.user.home.display().to_string()),
        ("CI", "true".to_owned()),
        ("GITLAB_CI", "true".to_owned()),
        ("CI_PROJECT_DIR", job.workspace().display().to_string()),
        ("CI_JOB_ID", "1".to_owned()),
    ] {
        env.insert(name.to_owned(), value);
    }
    // The runner joins the job's script lines into one shell script.
    let lines: Vec<&str> = template["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect();
    let script = job.dir.path().join("gitlab-job.sh");
    std::fs::write(&script, lines.join("\n")).unwrap();
    let output = job.run_as_job_user(&script, &env).unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(!key_file.exists(), "the key file variable was not removed");

    let report = job.workspace().join(
        template["artifacts"]["reports"]["dotenv"]
            .as_str()
            .expect("a dotenv report"),
    );
    let dotenv = parse_outputs(&std::fs::read_to_string(report).unwrap());
    job.check_attested(
        "gitlab",
        &dotenv["OCI_ATTEST_OUTFILE"],
        &dotenv["OCI_ATTEST_DIGEST"],
    );
    // The artifact path, as GitLab expands it, is the attestation.
    let artifact = template["artifacts"]["paths"][0].as_str().unwrap();
    assert_eq!(artifact, "$OCI_ATTEST_OUTFILE");
    assert!(job.workspace().join(&env["OCI_ATTEST_OUTFILE"]).is_file());
}
