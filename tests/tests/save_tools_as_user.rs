//! The real save and push tools run by unprivileged users under `oci-attest run`, started as
//! root through sudo (`SUDO_UID`/`SUDO_GID`), as a CI job does: skopeo from an OCI layout
//! (no_new_privs on); skopeo and buildah on the user's own rootless containers-storage with
//! `--allow-new-privileges` (the setuid newuidmap/newgidmap are recorded as raising privileges
//! and the trace stays complete); rootless podman, which needs that flag only when it must
//! create the user namespace; and `docker save` by a member of the docker group against the
//! dockerd `cargo xtask test` starts. Each signed attestation must be complete, record the
//! user (uid, gid, groups, no_new_privs), and describe its products or pushed digest exactly
//! as an independent reading does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use oci_attest_tests::attested::{
    check_oci_attestation, command_run, execs, oci_attestations, products,
};
use oci_attest_tests::command::{output_text, run, sha256sum};
use oci_attest_tests::daemons::DaemonEnv;
use oci_attest_tests::expect;
use oci_attest_tests::fixtures::{Fixtures, APP_IMAGE};
use oci_attest_tests::oci_attest::{self, TestUser, DOCKER_USER, TEST_USER};
use oci_attest_tests::registry::RegistryEnv;
use oci_attest_tests::registry_bench::{
    repository, sha256, skopeo_inspect_raw, statement, subject_digest, OCI_PREDICATE,
};
use oci_attest_tests::require;
use oci_attest_tests::rootless::{Loader, UserStorage};
use serde_json::{json, Value};

/// The fixture the users' images come from (a docker-archive of [`APP_IMAGE`]).
const APP_FIXTURE: &str = "podman-save-docker-archive";
const ALLOW_NEW_PRIVILEGES: &str = "--allow-new-privileges";

/// One attested run by `user`, in a fresh directory of theirs that holds a root-only key.
struct UserRun {
    user: TestUser,
    work: tempfile::TempDir,
    output: Output,
}

impl UserRun {
    /// `oci-attest run -k key.pem -o out.att.json OPTIONS -- COMMAND` as root, invoked through
    /// sudo by `user`, with `env` for the tools; `prepare` puts the inputs in the directory.
    fn start(
        user: &TestUser,
        env: &[(&'static str, OsString)],
        options: &[&str],
        command: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let work = oci_attest::dir_of(user).unwrap_or_else(|error| panic!("{error:#}"));
        prepare(work.path());
        let keygen = oci_attest::output([
            Path::new("keygen"),
            Path::new("--out"),
            &work.path().join("key.pem"),
        ])
        .unwrap_or_else(|error| panic!("{error:#}"));
        assert!(keygen.status.success(), "keygen: {}", output_text(&keygen));
        let mut oci_attest = Command::new(oci_attest::binary().unwrap());
        oci_attest.arg("run");
        oci_attest::invoked_by(&mut oci_attest, user).unwrap_or_else(|error| panic!("{error:#}"));
        // Root's storage, as `cargo xtask test` names it, is none of the user's business.
        for name in [
            "CONTAINERS_STORAGE_CONF",
            "CONTAINERS_CONF",
            "XDG_RUNTIME_DIR",
        ] {
            oci_attest.env_remove(name);
        }
        oci_attest
            .envs(env.iter().cloned())
            .args(["-k", "key.pem", "-o", "out.att.json"])
            .args(options)
            .arg("--")
            .args(command)
            .current_dir(work.path())
            .stdin(Stdio::null());
        let output = oci_attest
            .output()
            .unwrap_or_else(|error| panic!("cannot run oci-attest: {error}"));
        UserRun {
            user: user.clone(),
            work,
            output,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The run succeeded with a complete eBPF trace, the envelope verifies, and the statement
    /// records the user as the command's identity, with no_new_privs as asked. Returns it.
    fn assert_complete_as_user(&self, nonewprivs: bool) -> Value {
        assert!(
            self.output.status.success(),
            "{}",
            output_text(&self.output)
        );
        self.verify(&[]);
        let statement = statement(&self.path("out.att.json"));
        let run = command_run(&statement);
        assert_eq!(run["summary"]["trace"], "ebpf", "{run:#}");
        assert_eq!(run["summary"]["incomplete"], json!([]), "{run:#}");
        assert_eq!(run["exitcode"], 0);
        let groups = self
            .user
            .groups()
            .unwrap_or_else(|error| panic!("{error:#}"));
        let mut identity = run["identity"].clone();
        if let Some(recorded) = identity["groups"].as_array_mut() {
            recorded.sort_by_key(|gid| gid.as_u64());
        }
        assert_eq!(
            identity,
            json!({
                "user": self.user.name,
                "uid": self.user.uid,
                "gid": self.user.gid,
                "groups": groups,
                "root": false,
                "nonewprivs": nonewprivs,
                "source": "sudo",
                "keyreadable": false,
            }),
            "{run:#}"
        );
        statement
    }

    /// `oci-attest verify --key key.pem.pub EXTRA out.att.json` accepts the envelope.
    fn verify(&self, extra: &[&str]) {
        let verify = oci_attest::command()
            .unwrap()
            .args(["verify", "--key", "key.pem.pub"])
            .args(extra)
            .arg("out.att.json")
            .current_dir(self.work.path())
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "verify {extra:?}: {}",
            output_text(&verify)
        );
    }

    /// The save wrote `product` holding only [`APP_IMAGE`], the one product, and the signed
    /// attestation describes it as an independent reading (tar, sha256sum) does.
    fn assert_saved(&self, statement: &Value, product: &str, fixtures: &Fixtures) {
        self.verify(&["--image", product]);
        let archive = self.path(product);
        let independent = expect::compute(&archive).unwrap_or_else(|error| panic!("{error:#}"));
        let ids: Vec<&str> = independent
            .images
            .iter()
            .map(|image| image.imageid.as_str())
            .collect();
        let expected = fixtures
            .image_id(APP_FIXTURE, APP_IMAGE)
            .unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(ids, [expected.as_str()], "{product} holds other images");
        check_oci_attestation(&oci_attestations(statement), &independent, product);
        let digest = sha256sum(&archive).unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(products(statement), json!({ product: digest }));
    }
}

/// The setuid id-mapping helpers ran and are recorded as raising the effective uid to root.
fn assert_id_mapping_recorded(statement: &Value) {
    let execs = execs(statement);
    for helper in ["/usr/bin/newuidmap", "/usr/bin/newgidmap"] {
        assert!(
            execs
                .iter()
                .any(|(program, privileges)| program == helper && privileges["euid"] == 0),
            "no {helper} raising euid to 0 among {execs:?}"
        );
    }
}

fn test_user() -> TestUser {
    TestUser::named(TEST_USER).unwrap_or_else(|error| panic!("{error:#}"))
}

/// The test user's storage holding [`APP_IMAGE`], loaded by that user with `loader`.
fn user_storage(fixtures: &Fixtures, loader: Loader) -> UserStorage {
    let storage = UserStorage::create(&test_user()).unwrap_or_else(|error| panic!("{error:#}"));
    let archive = fixtures.path(fixtures.get(APP_FIXTURE).unwrap());
    storage
        .load(&archive, APP_IMAGE, loader)
        .unwrap_or_else(|error| panic!("{error:#}"));
    storage
}

const PODMAN_SAVE: [&str; 5] = ["podman", "save", "-o", "out.tar", APP_IMAGE];

#[test]
fn skopeo_copy_from_an_oci_layout_with_no_new_privs() {
    let fixtures = require!(Fixtures::from_env());
    let layout = fixtures.path(fixtures.get("skopeo-oci-layout-dir").unwrap());
    let destination = format!("docker-archive:out.tar:{APP_IMAGE}");
    let attested = UserRun::start(
        &test_user(),
        &[],
        &[],
        &["skopeo", "copy", "-q", "oci:layout:1", &destination],
        |work| {
            run(Command::new("cp")
                .arg("-r")
                .arg(&layout)
                .arg(work.join("layout")))
            .unwrap_or_else(|error| panic!("{error:#}"));
        },
    );
    let statement = attested.assert_complete_as_user(true);
    attested.assert_saved(&statement, "out.tar", &fixtures);
}

#[test]
fn skopeo_copy_from_the_users_containers_storage() {
    let fixtures = require!(Fixtures::from_env());
    let storage = user_storage(&fixtures, Loader::Skopeo);
    let source = format!("containers-storage:{APP_IMAGE}");
    let destination = format!("docker-archive:out.tar:{APP_IMAGE}");
    let attested = UserRun::start(
        &test_user(),
        &storage.env(),
        &[ALLOW_NEW_PRIVILEGES],
        &["skopeo", "copy", "-q", &source, &destination],
        |_| {},
    );
    let statement = attested.assert_complete_as_user(false);
    assert_id_mapping_recorded(&statement);
    attested.assert_saved(&statement, "out.tar", &fixtures);
}

/// The user loaded the image with podman in an earlier step, which left podman's pause process
/// holding the user namespace: `podman save` joins it, so no setuid helper runs.
#[test]
fn rootless_podman_save_joins_the_users_namespace() {
    let fixtures = require!(Fixtures::from_env());
    let storage = user_storage(&fixtures, Loader::Podman);
    assert!(
        storage.pause_process().is_some(),
        "podman load left no pause process"
    );
    for options in [&[ALLOW_NEW_PRIVILEGES][..], &[]] {
        let attested = UserRun::start(&test_user(), &storage.env(), options, &PODMAN_SAVE, |_| {});
        let statement = attested.assert_complete_as_user(options.is_empty());
        attested.assert_saved(&statement, "out.tar", &fixtures);
        let raised: Vec<_> = execs(&statement)
            .into_iter()
            .filter(|(_, privileges)| !privileges.is_null())
            .collect();
        assert_eq!(raised, [], "{options:?}");
    }
}

/// No namespace yet (the image came in with skopeo): podman must map the user's subordinate
/// ids with the setuid newuidmap, which no_new_privs turns into a failure that `run` explains.
#[test]
fn rootless_podman_save_that_must_map_ids_names_allow_new_privileges() {
    let fixtures = require!(Fixtures::from_env());
    let storage = user_storage(&fixtures, Loader::Skopeo);
    let refused = UserRun::start(&test_user(), &storage.env(), &[], &PODMAN_SAVE, |_| {});
    assert_ne!(
        refused.output.status.code(),
        Some(0),
        "{}",
        refused.stderr()
    );
    let last = refused
        .stderr()
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(
        (last.contains("newuidmap") || last.contains("newgidmap"))
            && last.contains("under no_new_privs")
            && last.contains(ALLOW_NEW_PRIVILEGES),
        "the last line must say what failed and name {ALLOW_NEW_PRIVILEGES}: {}",
        refused.stderr()
    );
    assert!(!refused.path("out.tar").exists());

    // With the flag, podman maps the ids, then leaves its pause process behind: a process of
    // the command that outlives it, which `run` refuses to sign and says how to avoid.
    let lingering = UserRun::start(
        &test_user(),
        &storage.env(),
        &[ALLOW_NEW_PRIVILEGES, "--wait-for-tree", "1"],
        &PODMAN_SAVE,
        |_| {},
    );
    assert_eq!(
        lingering.output.status.code(),
        Some(3),
        "{}",
        lingering.stderr()
    );
    assert!(
        lingering.stderr().contains("tree-still-running")
            && lingering
                .stderr()
                .contains("rootless podman leaves a pause process"),
        "{}",
        lingering.stderr()
    );
    assert!(!lingering.path("out.att.json").exists());
}

#[test]
fn buildah_push_from_the_users_storage_to_the_local_registry() {
    let fixtures = require!(Fixtures::from_env());
    let registries = require!(RegistryEnv::from_env());
    let storage = user_storage(&fixtures, Loader::Skopeo);
    let image = format!("{}/{}:1", registries.plain, repository("buildah-user"));
    let destination = format!("docker://{image}");
    let attested = UserRun::start(
        &test_user(),
        &storage.env(),
        &[ALLOW_NEW_PRIVILEGES],
        &[
            "buildah",
            "push",
            "--tls-verify=false",
            APP_IMAGE,
            &destination,
        ],
        |_| {},
    );
    let statement = attested.assert_complete_as_user(false);
    assert_id_mapping_recorded(&statement);
    let digest = sha256(&skopeo_inspect_raw(
        &image,
        &["--tls-verify=false".to_owned()],
    ));
    assert_eq!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
        ),
        Some(digest),
        "{statement:#}"
    );
    assert!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/imagereference:{image}")
        )
        .is_some(),
        "{statement:#}"
    );
    assert_eq!(products(&statement), json!({}));
}

#[test]
fn docker_save_by_a_member_of_the_docker_group() {
    let fixtures = require!(Fixtures::from_env());
    let daemons = require!(DaemonEnv::from_env());
    let archive = fixtures.path(fixtures.get(APP_FIXTURE).unwrap());
    run(daemons.docker().arg("load").arg("-i").arg(&archive))
        .unwrap_or_else(|error| panic!("{error:#}"));
    let user = TestUser::named(DOCKER_USER).unwrap_or_else(|error| panic!("{error:#}"));
    let docker = nix::unistd::Group::from_name("docker")
        .unwrap()
        .expect("no docker group (run `cargo xtask setup`)");
    assert!(
        user.groups().unwrap().contains(&docker.gid.as_raw()),
        "{DOCKER_USER} is not in the docker group"
    );
    let attested = UserRun::start(
        &user,
        &[("DOCKER_HOST", daemons.docker_host.clone().into())],
        &[],
        &["docker", "save", "-o", "out.tar", APP_IMAGE],
        |_| {},
    );
    let statement = attested.assert_complete_as_user(true);
    attested.assert_saved(&statement, "out.tar", &fixtures);
    assert!(
        attested.stderr().contains(&format!(
            "{DOCKER_USER} is in the docker group (gid {}), which is root-equivalent",
            docker.gid
        )),
        "{}",
        attested.stderr()
    );
}
