//! Attestations in OCI registries, end to end against the real `docker-registry` instances that
//! `cargo xtask test` starts (plain HTTP, and TLS + basic auth): `run --attach` around a real
//! `skopeo copy` push, `discover`, `verify --image-ref`, `attach` refusals and `--cosign-tag`,
//! with `skopeo inspect --raw` as the independent client; pushes by podman and buildah as
//! subjects; saves attached by image identity (docker save + docker push, a multi-arch index);
//! the run checks of `verify --image-ref`; and 1 000 attestations on one image. Logins and TLS
//! are in `registry_access.rs`, hostile registries in `registry_hostile.rs`.

use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use oci_attest_tests::command::{run, stdout_of};
use oci_attest_tests::daemons::DaemonEnv;
use oci_attest_tests::registry_bench::{
    assert_success, repository, run_args, sha256, statement, strings, subject_digest, text, Bench,
    DSSE_MEDIA_TYPE, EXIT_MISMATCH, EXIT_REGISTRY, OCI_PREDICATE,
};
use oci_attest_tests::storage::ContainersStorage;
use oci_attest_tests::{oci_attest, require};
use serde_json::{json, Value};

#[test]
fn skopeo_push_under_run_attach_is_found_by_discover_verify_and_skopeo() {
    let env = require!(Bench::prepare());
    let registry = &env.registries.tls;
    let image = format!("{registry}/{}:1", repository("app"));
    let out = env.path("push.att.json");

    let mut options = vec!["--attach".to_owned()];
    options.extend(env.tls_options());
    let result = env.run(
        &out,
        &options,
        &env.skopeo_push_args("skopeo-docker-archive", &image, true),
    );
    assert_success(&result);
    // A push: no archive, and no warning that the oci attestor found none.
    assert!(
        !String::from_utf8_lossy(&result.stderr).contains("oci attestor skipped"),
        "{}",
        text(&result)
    );

    // The subject is the digest of the manifest bytes as skopeo reads them back.
    let manifest = env.inspect_raw(&image, true);
    let digest = sha256(&manifest);
    let statement = statement(&out);
    assert_eq!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
        ),
        Some(digest.clone()),
        "{statement:#}"
    );
    assert_eq!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/imagereference:{image}")
        ),
        Some(sha256(image.as_bytes()))
    );
    let recorded = statement.to_string();
    assert!(
        !recorded.contains(&env.registries.password),
        "the registry password is in the attestation"
    );

    // The tag-schema index (distribution 2.8 has no referrers API) lists one DSSE referrer
    // whose manifest names the image and carries the envelope file's bytes.
    let repository = image.rsplit_once(':').unwrap().0.to_owned();
    let index: Value =
        serde_json::from_slice(&env.inspect_raw(&format!("{repository}:sha256-{digest}"), true))
            .unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index:#}");
    assert_eq!(entries[0]["artifactType"], DSSE_MEDIA_TYPE);
    let referrer_digest = entries[0]["digest"].as_str().unwrap().to_owned();
    let referrer_bytes = env.inspect_raw(&format!("{repository}@{referrer_digest}"), true);
    assert_eq!(
        format!("sha256:{}", sha256(&referrer_bytes)),
        referrer_digest
    );
    let referrer: Value = serde_json::from_slice(&referrer_bytes).unwrap();
    assert_eq!(referrer["subject"]["digest"], format!("sha256:{digest}"));
    assert_eq!(referrer["subject"]["size"], manifest.len());
    assert_eq!(referrer["layers"][0]["mediaType"], DSSE_MEDIA_TYPE);
    assert_eq!(
        referrer["layers"][0]["digest"],
        format!("sha256:{}", sha256(&std::fs::read(&out).unwrap()))
    );

    // discover and verify --image-ref find it with no file on disk.
    let mut discover = strings(&["discover", "--json", &image]);
    discover.extend(env.tls_options());
    let found = env.oci_attest(&discover);
    assert!(found.status.success(), "{}", text(&found));
    let found: Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(found["subject"], format!("sha256:{digest}"));
    assert_eq!(
        found["attestations"].as_array().unwrap().len(),
        1,
        "{found:#}"
    );
    assert_eq!(found["attestations"][0]["step"], "oci-push");

    let mut verify = strings(&["verify", "--key"]);
    verify.push(env.public.display().to_string());
    verify.push("--image-ref".to_owned());
    verify.push(image.clone());
    verify.extend(env.tls_options());
    let verified = env.oci_attest(&verify);
    assert!(verified.status.success(), "{}", text(&verified));
    let report = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(
        report.starts_with(&format!(
            "{image} (sha256:{digest}): 1 attestation attached\n"
        )),
        "{report}"
    );
    // --json: one object, each attachment with its verdict.
    verify.push("--json".to_owned());
    let verified = env.oci_attest(&verify);
    assert!(verified.status.success(), "{}", text(&verified));
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["image"], image.as_str());
    assert_eq!(report["subject"], format!("sha256:{digest}"));
    assert_eq!(report["verified"], true);
    let attached = report["attestations"].as_array().unwrap();
    assert_eq!(attached.len(), 1, "{report:#}");
    assert_eq!(attached[0]["verified"], true);
    assert_eq!(attached[0]["step"], "oci-push");
    assert!(
        attached[0]["link"]
            .as_str()
            .unwrap()
            .starts_with("the manifest digest is its subject"),
        "{report:#}"
    );
    assert_eq!(
        attached[0]["envelopeDigest"],
        found["attestations"][0]["envelopeDigest"]
    );

    // Another key does not verify it.
    let other = env.path("other.pem");
    assert!(
        oci_attest::output([Path::new("keygen"), Path::new("--out"), &other])
            .unwrap()
            .status
            .success()
    );
    verify[2] = env.path("other.pem.pub").display().to_string();
    let refused = env.oci_attest(&verify);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_MISMATCH),
        "{}",
        text(&refused)
    );
    let report: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(report["verified"], false);
    assert!(
        report["attestations"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("no signature with keyid"),
        "{report:#}"
    );

    // Attaching the same envelope again changes nothing; --cosign-tag writes the .att image.
    let mut again = strings(&["attach", "--cosign-tag"]);
    again.push(out.display().to_string());
    again.push(image.clone());
    again.extend(env.tls_options());
    let attached = env.oci_attest(&again);
    assert!(attached.status.success(), "{}", text(&attached));
    assert!(String::from_utf8_lossy(&attached.stdout).contains("already attached"));
    let index: Value =
        serde_json::from_slice(&env.inspect_raw(&format!("{repository}:sha256-{digest}"), true))
            .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    let att: Value = serde_json::from_slice(
        &env.inspect_raw(&format!("{repository}:sha256-{digest}.att"), true),
    )
    .unwrap();
    assert_eq!(att["layers"].as_array().unwrap().len(), 1, "{att:#}");
    assert_eq!(att["layers"][0]["mediaType"], DSSE_MEDIA_TYPE);
    assert_eq!(att["layers"][0]["digest"], referrer["layers"][0]["digest"]);
    let again = env.oci_attest(&again);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("cosign tag: already in"));
}

#[test]
fn attach_refuses_an_image_the_attestation_does_not_name() {
    let env = require!(Bench::prepare());
    let registry = &env.registries.plain;
    let app = format!("{registry}/{}:1", repository("named"));
    let zero = format!("{registry}/{}:1", repository("unnamed"));
    let out = env.path("named.att.json");
    let result = env.run(
        &out,
        &strings(&["--plain-http"]),
        &env.skopeo_push_args("skopeo-docker-archive", &app, false),
    );
    assert_success(&result);
    env.push("zero-layer-docker-archive", &zero, false);

    let attach = |image: &str, force: bool| {
        let mut args = strings(&["attach", "--plain-http"]);
        if force {
            args.push("--force".to_owned());
        }
        args.push(out.display().to_string());
        args.push(image.to_owned());
        env.oci_attest(&args)
    };
    let refused = attach(&zero, false);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_MISMATCH),
        "{}",
        text(&refused)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("by none of its identities"),
        "{}",
        text(&refused)
    );
    let discover = env.oci_attest(&strings(&["discover", "--json", "--plain-http", &zero]));
    let listed: Value = serde_json::from_slice(&discover.stdout).unwrap();
    assert_eq!(listed["attestations"].as_array().unwrap().len(), 0);

    let forced = attach(&zero, true);
    assert!(forced.status.success(), "{}", text(&forced));
    let by_digest = format!(
        "{}@sha256:{}",
        app.rsplit_once(':').unwrap().0,
        env.digest_of(&app, false)
    );
    let named = attach(&by_digest, false);
    assert!(named.status.success(), "{}", text(&named));
}

#[test]
fn a_failed_attach_after_run_keeps_the_signed_envelope() {
    let env = require!(Bench::prepare());
    let image = format!("{}/{}:1", env.registries.tls, repository("kept"));
    let out = env.path("kept.att.json");
    // skopeo pushes with the right credentials; oci-attest's own are wrong, so attach fails.
    let result = env.run(
        &out,
        &[
            "--attach".to_owned(),
            format!("--creds={}:wrong", env.registries.user),
            format!("--ca-file={}", env.registries.ca.display()),
        ],
        &env.skopeo_push_args("skopeo-docker-archive", &image, true),
    );
    assert_eq!(
        result.status.code(),
        Some(EXIT_REGISTRY),
        "{}",
        text(&result)
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("kept at"), "{}", text(&result));
    let digest = env.digest_of(&image, true);
    let statement = statement(&out);
    assert!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
        )
        .is_some(),
        "{statement:#}"
    );
    let verify =
        oci_attest::output([Path::new("verify"), Path::new("--key"), &env.public, &out]).unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
}

/// podman and buildah push from a private containers-storage; their `--digestfile` (added by
/// oci-attest) gives the subject, which must equal what the registry serves.
#[test]
fn podman_and_buildah_pushes_are_subjects() {
    let env = require!(Bench::prepare());
    let storage = require!(ContainersStorage::from_env());
    run(storage
        .command("podman")
        .args(["load", "-q", "-i"])
        .arg(env.fixture("podman-save-docker-archive")))
    .unwrap_or_else(|error| panic!("{error:#}"));
    for tool in ["podman", "buildah"] {
        let image = format!("{}/{}:1", env.registries.plain, repository(tool));
        let out = env.path(&format!("{tool}.att.json"));
        let push = [
            tool.to_owned(),
            "push".to_owned(),
            "--tls-verify=false".to_owned(),
            "localhost/fx/app:1".to_owned(),
            format!("docker://{image}"),
        ];
        // The image is in root's containers-storage (loaded above), so the push runs as root,
        // said explicitly.
        let result = env.run_with(&out, &strings(&["--run-as", "root"]), &push, |command| {
            command.envs(storage.env());
        });
        assert!(result.status.success(), "{tool}: {}", text(&result));
        let digest = env.digest_of(&image, false);
        let statement = statement(&out);
        assert!(
            subject_digest(
                &statement,
                &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
            )
            .is_some(),
            "{tool}: {statement:#}"
        );
        assert!(
            subject_digest(
                &statement,
                &format!("{OCI_PREDICATE}/imagereference:{image}")
            )
            .is_some(),
            "{tool}: {statement:#}"
        );
        // Every push tool names its step the same.
        assert_eq!(statement["predicate"]["name"], "oci-push", "{tool}");
    }
}

/// A push inside a script is seen by the trace (eBPF, as root in CI) and resolved against the
/// registry after the run.
#[test]
fn a_push_inside_a_script_is_a_subject() {
    let env = require!(Bench::prepare());
    let image = format!("{}/{}:1", env.registries.plain, repository("script"));
    let out = env.path("script.att.json");
    let script = env
        .skopeo_push_args("skopeo-docker-archive", &image, false)
        .join(" ");
    let result = env.run(
        &out,
        &strings(&["--trace", "ebpf", "--plain-http"]),
        &[
            "sh".to_owned(),
            "-c".to_owned(),
            format!("true && {script}"),
        ],
    );
    assert_success(&result);
    let digest = env.digest_of(&image, false);
    let statement = statement(&out);
    assert!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/manifestdigest:{digest}")
        )
        .is_some(),
        "{statement:#}"
    );
}

/// A push tool that lies in its `--digestfile` (a stand-in that runs the real skopeo, then
/// writes another digest there): the registry's answer is asked after the push, they disagree,
/// and nothing is signed: exit 3, `pushed-digest-mismatch`, even with --allow-missing-subjects.
#[test]
fn a_digestfile_the_registry_contradicts_is_never_signed() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = require!(Bench::prepare());
    let real = std::env::split_paths(&oci_attest_tests::paths::search_path())
        .map(|dir| dir.join("skopeo"))
        .find(|path| path.is_file())
        .expect("skopeo on PATH");
    let bin = env.work.path().join("lying-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let skopeo = bin.join("skopeo");
    std::fs::write(
        &skopeo,
        format!(
            "#!/bin/sh\n{} \"$@\" || exit\nprevious=\nfor word in \"$@\"; do\n  \
             [ \"$previous\" = --digestfile ] && echo sha256:{} > \"$word\"\n  \
             previous=$word\ndone\n",
            real.display(),
            "0".repeat(64)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&skopeo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("{}/{}:1", env.registries.plain, repository("lying"));
    let out = env.work.path().join("lying.att.json");
    let mut push = env.skopeo_push_args("skopeo-docker-archive", &image, false);
    push[0] = skopeo.display().to_string();
    let result = env.run(
        &out,
        &strings(&["--trace", "off", "--plain-http", "--allow-missing-subjects"]),
        &push,
    );
    assert_eq!(result.status.code(), Some(3), "{}", text(&result));
    assert!(
        String::from_utf8_lossy(&result.stderr).contains("pushed-digest-mismatch"),
        "{}",
        text(&result)
    );
    assert!(!out.exists(), "an attestation was written over a lie");
}

/// A push whose digest cannot be found (a `crane` stand-in that pushes nothing, so the
/// reference does not resolve) fails the run unless `--allow-missing-subjects`.
#[test]
fn a_push_without_a_digest_fails_unless_allowed() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = require!(Bench::prepare());
    let bin = env.path("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let crane = bin.join("crane");
    std::fs::write(&crane, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&crane, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("{}/{}:1", env.registries.plain, repository("missing"));
    let out = env.path("missing.att.json");
    let attempt = |allow: bool| {
        let mut options = strings(&["--trace", "off", "--plain-http"]);
        if allow {
            options.push("--allow-missing-subjects".to_owned());
        }
        let mut push = vec![crane.display().to_string()];
        push.extend(strings(&["push", "image.tar", &image]));
        env.run(&out, &options, &push)
    };
    let refused = attempt(false);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("manifest digest is unknown"),
        "{}",
        text(&refused)
    );
    assert!(
        !out.exists(),
        "an attestation was written without its subject"
    );
    let allowed = attempt(true);
    assert!(allowed.status.success(), "{}", text(&allowed));
    let statement = statement(&out);
    let names: Vec<&str> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|subject| subject["name"].as_str())
        .collect();
    assert!(
        !names.iter().any(|name| name.contains("manifestdigest:")),
        "{names:?}"
    );
}

/// The everyday flow: `run -- docker save` attests the image ID (the config digest), `docker
/// push` makes a registry manifest the save never saw, and `attach` links the two through the
/// manifest's config, saying so; `verify --image-ref` applies the same rule, and the same run
/// checks as `verify` (the save was not traced: refused unless --allow-untraced).
#[test]
fn a_docker_save_attaches_to_the_docker_push_by_image_id() {
    let env = require!(Bench::prepare());
    let daemons = require!(DaemonEnv::from_env());
    let image = format!("{}/{}:1", env.registries.plain, repository("saved"));
    let loaded = stdout_of(
        daemons
            .docker()
            .args(["load", "-i"])
            .arg(env.fixture("docker-save")),
    )
    .unwrap_or_else(|error| panic!("{error:#}"));
    let name = loaded
        .lines()
        .find_map(|line| line.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("docker load named no image: {loaded}"))
        .to_owned();
    run(daemons.docker().args(["tag", &name, &image])).unwrap_or_else(|error| panic!("{error:#}"));
    let out = env.path("saved.att.json");
    let archive = env.path("saved.tar");
    let save = [
        "docker".to_owned(),
        "save".to_owned(),
        "-o".to_owned(),
        archive.display().to_string(),
        image.clone(),
    ];
    // The test's dockerd socket is root's: the save runs as root, said explicitly.
    let options = strings(&["--trace", "off", "--run-as", "root"]);
    let result = env.run_with(&out, &options, &save, |command| {
        command.env("DOCKER_HOST", &daemons.docker_host);
    });
    assert_success(&result);
    run(daemons.docker().args(["push", &image])).unwrap_or_else(|error| panic!("{error:#}"));

    let manifest: Value = serde_json::from_slice(&env.inspect_raw(&image, false)).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let hex = config.strip_prefix("sha256:").unwrap();
    let statement = statement(&out);
    assert_eq!(
        subject_digest(&statement, &format!("{OCI_PREDICATE}/imageid:{hex}")).as_deref(),
        Some(hex),
        "the save attests the pushed image's config as its image ID: {statement:#}"
    );

    let attached = env.oci_attest(&[
        "attach".to_owned(),
        "--plain-http".to_owned(),
        out.display().to_string(),
        image.clone(),
    ]);
    assert_success(&attached);
    let said = String::from_utf8_lossy(&attached.stdout);
    assert!(
        said.contains(&format!(
            "linked by the image ID {config} (the manifest's config)"
        )),
        "{}",
        text(&attached)
    );

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify".to_owned(), "--key".to_owned()];
        args.push(env.public.display().to_string());
        args.extend(strings(&["--plain-http", "--image-ref", &image]));
        args.extend(strings(extra));
        env.oci_attest(&args)
    };
    let untraced = verify(&[]);
    assert_eq!(
        untraced.status.code(),
        Some(EXIT_MISMATCH),
        "{}",
        text(&untraced)
    );
    assert!(
        String::from_utf8_lossy(&untraced.stdout).contains("--allow-untraced"),
        "{}",
        text(&untraced)
    );
    let accepted = verify(&["--allow-untraced", "--allow-root-command"]);
    assert_success(&accepted);
    assert!(
        String::from_utf8_lossy(&accepted.stdout).contains("linked by the image ID"),
        "{}",
        text(&accepted)
    );
}

/// A saved OCI archive holding a multi-platform index, pushed with `skopeo copy --all`: the index
/// digest is a subject of the save (each platform manifest stays one), so `attach` to the tag
/// needs no --force, and `verify --image-ref` of the tag passes.
#[test]
fn a_multi_arch_index_is_a_subject_of_its_save() {
    let env = require!(Bench::prepare());
    let image = format!("{}/{}:1", env.registries.tls, repository("multiarch"));
    let out = env.path("multiarch.att.json");
    let archive = env.path("multiarch.oci.tar");
    let save = [
        "skopeo".to_owned(),
        "copy".to_owned(),
        "--all".to_owned(),
        format!(
            "oci-archive:{}",
            env.fixture("buildah-multiarch-tar").display()
        ),
        format!("oci-archive:{}", archive.display()),
    ];
    let result = env.run(&out, &strings(&["--trace", "off"]), &save);
    assert_success(&result);
    let mut push =
        env.skopeo_copy_args(&format!("oci-archive:{}", archive.display()), &image, true);
    push.insert(2, "--all".to_owned());
    run_args(&push);

    let index: Value = serde_json::from_slice(&env.inspect_raw(&image, true)).unwrap();
    let index_hex = env.digest_of(&image, true);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap().to_owned())
        .collect();
    assert!(platforms.len() >= 2, "{index:#}");
    let statement = statement(&out);
    assert_eq!(
        subject_digest(
            &statement,
            &format!("{OCI_PREDICATE}/indexdigest:{index_hex}")
        )
        .as_deref(),
        Some(index_hex.as_str()),
        "{statement:#}"
    );
    for platform in &platforms {
        let hex = platform.strip_prefix("sha256:").unwrap();
        assert!(
            subject_digest(&statement, &format!("{OCI_PREDICATE}/manifestdigest:{hex}")).is_some(),
            "{platform} is not a subject: {statement:#}"
        );
    }

    let mut attach = vec![
        "attach".to_owned(),
        out.display().to_string(),
        image.clone(),
    ];
    attach.extend(env.tls_options());
    let attached = env.oci_attest(&attach);
    assert_success(&attached);
    assert!(
        String::from_utf8_lossy(&attached.stdout).contains("linked by the index digest"),
        "{}",
        text(&attached)
    );
    let mut verify = vec!["verify".to_owned(), "--key".to_owned()];
    verify.push(env.public.display().to_string());
    verify.extend(strings(&["--allow-untraced", "--image-ref", &image]));
    verify.extend(env.tls_options());
    let verified = env.oci_attest(&verify);
    assert_success(&verified);
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("linked by the index digest"),
        "{}",
        text(&verified)
    );
}

/// A failed command's attestation attached to the image is refused by `verify --image-ref`
/// unless --allow-failed-command, as `verify` refuses the envelope file.
#[test]
fn verify_image_ref_refuses_a_failed_run_unless_allowed() {
    let env = require!(Bench::prepare());
    let image = format!("{}/{}:1", env.registries.plain, repository("failed"));
    env.push("skopeo-docker-archive", &image, false);
    let out = env.path("failed.att.json");
    // The save succeeds, then the script fails: a signed attestation of a failed run whose
    // image ID is the pushed image's.
    let save = format!(
        "skopeo copy --quiet docker-archive:{} docker-archive:failed.tar && exit 3",
        env.fixture("skopeo-docker-archive").display()
    );
    let result = env.run(
        &out,
        &strings(&["--trace", "off", "-a", "oci"]),
        &["sh".to_owned(), "-c".to_owned(), save],
    );
    assert_eq!(result.status.code(), Some(3), "{}", text(&result));
    let attached = env.oci_attest(&[
        "attach".to_owned(),
        "--plain-http".to_owned(),
        out.display().to_string(),
        image.clone(),
    ]);
    assert_success(&attached);
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify".to_owned(), "--key".to_owned()];
        args.push(env.public.display().to_string());
        args.extend(strings(&[
            "--plain-http",
            "--allow-untraced",
            "--image-ref",
            &image,
        ]));
        args.extend(strings(extra));
        env.oci_attest(&args)
    };
    let refused = verify(&[]);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_MISMATCH),
        "{}",
        text(&refused)
    );
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("the command failed (exit code 3)"),
        "{}",
        text(&refused)
    );
    assert_success(&verify(&["--allow-failed-command"]));
}

/// An envelope whose statement names `digest`; the signature is not checked by attach or
/// discover, so a placeholder keeps 1 000 of them cheap to make.
fn placeholder_envelope(digest: &str, step: usize) -> Vec<u8> {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"name": format!("{OCI_PREDICATE}/manifestdigest:{digest}"), "digest": {"sha256": digest}}],
        "predicateType": "https://aflock.ai/attestation-collection/v0.1",
        "predicate": {"name": format!("step-{step}"), "attestations": []},
    });
    let payload = base64::engine::general_purpose::STANDARD.encode(statement.to_string());
    json!({"payload": payload, "payloadType": "application/vnd.in-toto+json",
           "signatures": [{"keyid": "placeholder", "sig": "AA=="}]})
    .to_string()
    .into_bytes()
}

#[test]
fn a_thousand_attestations_on_one_image_are_all_discovered() {
    const COUNT: usize = 1000;
    /// Attached one `oci-attest attach` process each; the rest in one batch.
    const SINGLY: usize = 50;
    let env = require!(Bench::prepare());
    let image = format!("{}/{}:1", env.registries.plain, repository("many"));
    env.push("skopeo-docker-archive", &image, false);
    let digest = env.digest_of(&image, false);
    let dir = env.path("many");
    std::fs::create_dir(&dir).unwrap();
    let paths: Vec<String> = (0..COUNT)
        .map(|step| {
            let path = dir.join(format!("{step}.json"));
            std::fs::write(&path, placeholder_envelope(&digest, step)).unwrap();
            path.display().to_string()
        })
        .collect();
    // One deadline bounds a whole command: a batch of 950 uploads needs more than the default.
    let attach = |paths: &[String]| {
        let mut args = strings(&["attach", "--plain-http", "--registry-timeout=900"]);
        args.extend(paths.iter().cloned());
        args.push(image.clone());
        let result = env.oci_attest(&args);
        assert!(result.status.success(), "{}", text(&result));
    };
    let started = Instant::now();
    for path in &paths[..SINGLY] {
        attach(std::slice::from_ref(path));
    }
    let single_time = started.elapsed();
    let started = Instant::now();
    attach(&paths[SINGLY..]);
    let batch_time = started.elapsed();

    // About 5 s on a quiet machine (40 runs: 3.5–5.3 s); under the suite's own load (the
    // release build beside it, load average 40) twice past the default 60 s deadline. This test
    // is about completeness; its speed is printed below, not asserted.
    let started = Instant::now();
    let found = env.oci_attest(&strings(&[
        "discover",
        "--json",
        "--plain-http",
        "--registry-timeout=600",
        &image,
    ]));
    let discover_time = started.elapsed();
    assert!(found.status.success(), "{}", text(&found));
    let found: Value = serde_json::from_slice(&found.stdout).unwrap();
    let mut steps: Vec<String> = found["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attestation| attestation["step"].as_str().unwrap().to_owned())
        .collect();
    steps.sort();
    steps.dedup();
    assert_eq!(steps.len(), COUNT);
    let index: Value = serde_json::from_slice(&env.inspect_raw(
        &format!("{}:sha256-{digest}", image.rsplit_once(':').unwrap().0),
        false,
    ))
    .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), COUNT);
    // Printed for the record (`--nocapture`); speed is measured, not asserted.
    println!(
        "{COUNT} attestations on one image: {SINGLY} single attaches {:.1}s ({:.0} ms each), \
         {} in one attach {:.1}s, discover of all {COUNT} {:.1}s",
        single_time.as_secs_f64(),
        single_time.as_secs_f64() * 1000.0 / SINGLY as f64,
        COUNT - SINGLY,
        batch_time.as_secs_f64(),
        discover_time.as_secs_f64()
    );
}
