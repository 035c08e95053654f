//! The real save commands end to end: each runs under `oci-attest run -k KEY -o OUT --`
//! with no `-a oci` (auto-attach must recognise it), then `oci-attest verify --key PUB --image
//! ARCHIVE OUT` must accept it, and the image IDs and diffIDs in the signed oci attestation must
//! equal the ones computed independently from the archive the tool wrote.
//!
//! Needs what `cargo xtask test` provides: DOCKER_HOST / CONTAINERD_ADDRESS (private daemons),
//! CONTAINERS_STORAGE_CONF / CONTAINERS_CONF (private podman storage) and the fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use oci_attest_tests::attested::{check_oci_attestation, oci_attestations};
use oci_attest_tests::command::{describe, output_text, run};
use oci_attest_tests::daemons::DaemonEnv;
use oci_attest_tests::expect;
use oci_attest_tests::fixtures::{Fixtures, APP_IMAGE, MULTI_ARCHIVE, OTHER_IMAGE, THIRD_IMAGE};
use oci_attest_tests::registry_bench::statement;
use oci_attest_tests::storage::ContainersStorage;
use oci_attest_tests::{oci_attest, paths, require};
/// The containerd namespace the tests import into (`ctr` reads it from the environment, so the
/// saved command line stays `ctr images export ...`).
const CONTAINERD_NAMESPACE: &str = "oci-attest-tests";

/// The daemons, storage and fixtures, with the fixture images loaded into docker, podman's
/// storage and containerd. Prepared once per test process.
struct SaveEnvironment {
    daemons: DaemonEnv,
    storage: ContainersStorage,
    fixtures: Fixtures,
}

impl SaveEnvironment {
    fn prepare() -> anyhow::Result<Self> {
        oci_attest::binary()?;
        let daemons = DaemonEnv::from_env()?;
        let storage = ContainersStorage::from_env()?;
        let fixtures = Fixtures::from_env()?;
        let images = fixtures.path(fixtures.get(MULTI_ARCHIVE)?);
        run(daemons.docker().arg("load").arg("-i").arg(&images))?;
        run(storage
            .command("podman")
            .args(["load", "-q", "-i"])
            .arg(&images))?;
        run(daemons
            .ctr()
            .args([
                "-n",
                CONTAINERD_NAMESPACE,
                "images",
                "import",
                "--no-unpack",
            ])
            .arg(&images))?;
        Ok(SaveEnvironment {
            daemons,
            storage,
            fixtures,
        })
    }

    fn get() -> anyhow::Result<&'static SaveEnvironment> {
        static ENVIRONMENT: OnceLock<Result<SaveEnvironment, String>> = OnceLock::new();
        ENVIRONMENT
            .get_or_init(|| Self::prepare().map_err(|error| format!("{error:#}")))
            .as_ref()
            .map_err(|error| anyhow::anyhow!("{error}"))
    }

    /// The image ID of `image` as recorded for the fixtures (docker, podman and ctr load them
    /// from the same archive, so the ID is the same everywhere).
    fn image_id(&self, image: &str) -> String {
        self.fixtures
            .image_id(MULTI_ARCHIVE, image)
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// oci-attest (or any tool) with the daemons and storage in its environment.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("PATH", paths::search_path())
            .env("DOCKER_HOST", &self.daemons.docker_host)
            .env("CONTAINERD_ADDRESS", &self.daemons.containerd_address)
            .env("CONTAINERD_NAMESPACE", CONTAINERD_NAMESPACE)
            .envs(self.storage.env());
        command
    }
}

fn oci_attest_in(environment: &SaveEnvironment, work: &Path, args: &[&str]) -> Output {
    let binary = oci_attest::binary().unwrap_or_else(|error| panic!("{error:#}"));
    let mut command = environment.command(&binary);
    command.args(args).current_dir(work);
    output_of(command)
}

/// `oci-attest run --run-as root ARGS` in `work`. The saves read the fixture images from root's
/// docker daemon, containers-storage and containerd, loaded once for every test here, so the
/// command runs as root, said explicitly; `verify` then needs `--allow-root-command`.
fn run_as_root_in(environment: &SaveEnvironment, work: &Path, args: &[&str]) -> Output {
    let binary = oci_attest::binary().unwrap_or_else(|error| panic!("{error:#}"));
    let mut command = oci_attest::run_command(&binary).unwrap_or_else(|error| panic!("{error:#}"));
    let tools = environment.command(&binary);
    command
        .envs(
            tools
                .get_envs()
                .filter_map(|(name, value)| Some((name, value?))),
        )
        .args(["--run-as", "root"])
        .args(args)
        .current_dir(work);
    output_of(command)
}

fn output_of(mut command: Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run `{}`: {error}", describe(&command)))
}

/// Runs `save` (argv) in a fresh directory under `oci-attest run` and checks the attestation of
/// `product` (relative to that directory) against an independent computation and against the
/// IDs of `images` (the archive must hold exactly those).
fn attest_and_verify(save: &[&str], setup: impl FnOnce(&Path), product: &str, images: &[&str]) {
    let environment = require!(SaveEnvironment::get());
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();
    setup(work);
    let public_key = work.join("key.pem.pub");
    let keygen = oci_attest_in(environment, work, &["keygen", "--out", "key.pem"]);
    assert!(
        keygen.status.success(),
        "oci-attest keygen: {}",
        output_text(&keygen)
    );
    assert!(
        public_key.is_file(),
        "keygen wrote no {}",
        public_key.display()
    );

    let mut run_args = vec!["-k", "key.pem", "-o", "out.att.json", "--"];
    run_args.extend_from_slice(save);
    let wrapped = run_as_root_in(environment, work, &run_args);
    assert!(
        wrapped.status.success(),
        "oci-attest {}: {}",
        run_args.join(" "),
        output_text(&wrapped)
    );
    let archive = work.join(product);
    assert!(
        archive.exists(),
        "`{}` did not produce {product}",
        save.join(" ")
    );

    let verify = oci_attest_in(
        environment,
        work,
        &[
            "verify",
            "--key",
            "key.pem.pub",
            "--allow-root-command",
            "--image",
            product,
            "out.att.json",
        ],
    );
    assert!(
        verify.status.success(),
        "oci-attest verify --image {product}: {}",
        output_text(&verify)
    );

    let independent = expect::compute(&archive).unwrap_or_else(|error| panic!("{error:#}"));
    let expected_ids: Vec<String> = images
        .iter()
        .map(|image| environment.image_id(image))
        .collect();
    let mut archive_ids: Vec<String> = independent
        .images
        .iter()
        .map(|image| image.imageid.clone())
        .collect();
    archive_ids.sort();
    let mut wanted = expected_ids.clone();
    wanted.sort();
    assert_eq!(
        archive_ids, wanted,
        "{product} holds other images than {images:?}"
    );
    let attestations = oci_attestations(&statement(&work.join("out.att.json")));
    assert!(
        !attestations.is_empty(),
        "no oci attestation was attached for `{}`",
        save.join(" ")
    );
    check_oci_attestation(&attestations, &independent, product);
}

fn no_setup(_: &Path) {}

fn write_file(path: PathBuf, text: &str, executable: bool) {
    std::fs::write(&path, text).expect("write");
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn docker_save_dash_o() {
    // docker save -o writes a temp file and renames it: the product is the name after the rename.
    attest_and_verify(
        &["docker", "save", "-o", "out.tar", APP_IMAGE],
        no_setup,
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn docker_save_redirected_by_a_shell() {
    attest_and_verify(
        &["sh", "-c", &format!("docker save {APP_IMAGE} > out.tar")],
        no_setup,
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn docker_save_three_images() {
    attest_and_verify(
        &[
            "docker",
            "save",
            APP_IMAGE,
            OTHER_IMAGE,
            THIRD_IMAGE,
            "-o",
            "out.tar",
        ],
        no_setup,
        "out.tar",
        &[APP_IMAGE, OTHER_IMAGE, THIRD_IMAGE],
    );
}

#[test]
fn podman_save_docker_archive() {
    attest_and_verify(
        &["podman", "save", "-o", "out.tar", APP_IMAGE],
        no_setup,
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn podman_save_oci_archive() {
    attest_and_verify(
        &[
            "podman",
            "save",
            "--format",
            "oci-archive",
            "-o",
            "out.tar",
            APP_IMAGE,
        ],
        no_setup,
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn skopeo_copy_to_docker_archive() {
    attest_and_verify(
        &[
            "skopeo",
            "copy",
            &format!("containers-storage:{APP_IMAGE}"),
            &format!("docker-archive:out.tar:{APP_IMAGE}"),
        ],
        no_setup,
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn skopeo_copy_to_oci_layout_dir() {
    attest_and_verify(
        &[
            "skopeo",
            "copy",
            &format!("containers-storage:{APP_IMAGE}"),
            "oci:layout:1",
        ],
        no_setup,
        "layout",
        &[APP_IMAGE],
    );
}

#[test]
fn buildah_push_docker_archive() {
    attest_and_verify(
        &["buildah", "push", APP_IMAGE, "docker-archive:out.tar"],
        no_setup,
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn ctr_images_export() {
    attest_and_verify(
        &["ctr", "images", "export", "out.tar", APP_IMAGE],
        no_setup,
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn make_target_running_docker_save() {
    // Only the post-run rule can attach here: `make` itself is no save command.
    attest_and_verify(
        &["make", "save"],
        |work| {
            write_file(
                work.join("Makefile"),
                &format!("save:\n\tdocker save -o out.tar {APP_IMAGE}\n"),
                false,
            )
        },
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn script_running_docker_save() {
    attest_and_verify(
        &["./save.sh"],
        |work| {
            write_file(
                work.join("save.sh"),
                &format!("#!/bin/sh\nset -e\ndocker save {APP_IMAGE} -o out.tar\n"),
                true,
            )
        },
        "out.tar",
        &[APP_IMAGE],
    );
}

#[test]
fn verify_rejects_a_different_image() {
    let environment = require!(SaveEnvironment::get());
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();
    let keygen = oci_attest_in(environment, work, &["keygen", "--out", "key.pem"]);
    assert!(
        keygen.status.success(),
        "oci-attest keygen: {}",
        output_text(&keygen)
    );
    let save = [
        "-k",
        "key.pem",
        "-o",
        "out.att.json",
        "--",
        "docker",
        "save",
        "-o",
        "out.tar",
        APP_IMAGE,
    ];
    let wrapped = run_as_root_in(environment, work, &save);
    assert!(
        wrapped.status.success(),
        "oci-attest {}: {}",
        save.join(" "),
        output_text(&wrapped)
    );
    // A different image altogether (zero layers, another image ID).
    let other = environment.fixtures.path(
        environment
            .fixtures
            .get("zero-layer-docker-archive")
            .unwrap_or_else(|error| panic!("{error:#}")),
    );
    let other = other.to_string_lossy();
    let verify = oci_attest_in(
        environment,
        work,
        &[
            "verify",
            "--key",
            "key.pem.pub",
            "--allow-root-command",
            "--image",
            &other,
            "out.att.json",
        ],
    );
    assert_eq!(
        verify.status.code(),
        Some(7),
        "verify --image with another archive must fail with 7: {}",
        output_text(&verify)
    );
}
