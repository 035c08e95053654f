//! `oci-attest inspect --json` against archives written by the real save tools (see
//! `cargo xtask fixtures`), compared with expectations computed by standard tools; and tampered
//! copies of each, which must be rejected with exit code 5 and no output.

use std::path::Path;

use oci_attest_tests::command::{first_hex_word, sh};
use oci_attest_tests::expect::{tags_agree, ArchiveExpectation, ImageExpectation};
use oci_attest_tests::fixtures::Fixtures;
use oci_attest_tests::tamper::{tampered_copy, Tampering, ALL};
use oci_attest_tests::{oci_attest, require};
use serde_json::{json, Value};

fn sha256_set(hex: &str) -> Value {
    json!({ "sha256": hex })
}

fn diffid_sets(image: &ImageExpectation) -> Value {
    Value::Array(image.diffids.iter().map(|hex| sha256_set(hex)).collect())
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?.as_array().map(|items| {
        items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect()
    })
}

/// Compares the predicate with the expectation; returns every disagreement.
fn disagreements(predicate: &Value, expect: &ArchiveExpectation, is_dir: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |what: &str, reported: Option<&Value>, expected: Value| {
        if reported != Some(&expected) {
            problems.push(format!(
                "{what}: reported {reported:?}, expected {expected}"
            ));
        }
    };
    let first = &expect.images[0];
    check("format", predicate.get("format"), json!(expect.format));
    check(
        "imageid",
        predicate.get("imageid"),
        sha256_set(&first.imageid),
    );
    check("diffids", predicate.get("diffids"), diffid_sets(first));
    check(
        "manifestdigest",
        predicate.get("manifestdigest"),
        sha256_set(&expect.manifestdigest),
    );
    if !is_dir {
        let tardigest = expect.tardigest.as_deref().unwrap_or_default();
        check(
            "tardigest",
            predicate.get("tardigest"),
            sha256_set(tardigest),
        );
    }
    let legacy_tags = string_list(predicate.get("imagetags"));
    if !tags_agree(&expect.format, first.tags.as_ref(), legacy_tags.as_ref()) {
        problems.push(format!(
            "imagetags: reported {legacy_tags:?}, expected {:?}",
            first.tags
        ));
    }
    let manifest_entries = predicate
        .get("manifest")
        .and_then(Value::as_array)
        .map(Vec::len);
    if manifest_entries != Some(expect.images.len()) {
        problems.push(format!(
            "manifest: {manifest_entries:?} entries, expected {}",
            expect.images.len()
        ));
    }
    // manifestraw must be the very bytes whose digest is manifestdigest (checked with coreutils).
    match predicate.get("manifestraw").and_then(Value::as_str) {
        Some(raw) => match sh(r#"printf %s "$1" | base64 -d | sha256sum"#, [raw]) {
            Ok(line)
                if first_hex_word(&line).as_deref() == Some(expect.manifestdigest.as_str()) => {}
            Ok(line) => problems.push(format!(
                "manifestraw hashes to {line}, expected {}",
                expect.manifestdigest
            )),
            Err(error) => problems.push(format!("manifestraw is not base64: {error:#}")),
        },
        None => problems.push("manifestraw missing".to_owned()),
    }
    let needs_images = expect.images.len() > 1 || expect.format.contains("oci-layout");
    match predicate.get("images").and_then(Value::as_array) {
        Some(images) => problems.extend(image_disagreements(images, expect)),
        None if needs_images => {
            problems.push("images missing (several images or an OCI index)".to_owned())
        }
        None => {}
    }
    problems
}

fn image_disagreements(reported: &[Value], expect: &ArchiveExpectation) -> Vec<String> {
    let mut problems = Vec::new();
    if reported.len() != expect.images.len() {
        problems.push(format!(
            "images: {} reported, expected {}",
            reported.len(),
            expect.images.len()
        ));
        return problems;
    }
    for (index, (image, expected)) in reported.iter().zip(&expect.images).enumerate() {
        let mut check = |what: &str, value: Option<&Value>, wanted: Value| {
            if value != Some(&wanted) {
                problems.push(format!(
                    "images[{index}].{what}: reported {value:?}, expected {wanted}"
                ));
            }
        };
        check(
            "imageid",
            image.get("imageid"),
            sha256_set(&expected.imageid),
        );
        check("diffids", image.get("diffids"), diffid_sets(expected));
        if let Some(digest) = &expected.manifestdigest {
            check(
                "manifestdigest",
                image.get("manifestdigest"),
                sha256_set(digest),
            );
        }
        if let (Some(platform), Some(reported)) = (&expected.platform, image.get("platform")) {
            let text = match reported {
                Value::String(text) => text.clone(),
                other => ["os", "architecture", "variant"]
                    .iter()
                    .filter_map(|key| other.get(*key).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("/"),
            };
            if &text != platform {
                problems.push(format!(
                    "images[{index}].platform: reported {reported}, expected {platform}"
                ));
            }
        }
        let tags = string_list(image.get("tags"));
        // In an OCI index a name may sit on the index rather than on each platform image, so
        // per-image OCI tags are only checked when reported.
        let lenient = expect.format == "oci-layout" && tags.as_ref().is_none_or(Vec::is_empty);
        if !lenient && !tags_agree(&expect.format, expected.tags.as_ref(), tags.as_ref()) {
            problems.push(format!(
                "images[{index}].tags: reported {tags:?}, expected {:?}",
                expected.tags
            ));
        }
        let layer_count = image.get("layers").and_then(Value::as_array).map(Vec::len);
        if layer_count.is_some_and(|count| count != expected.diffids.len()) {
            problems.push(format!(
                "images[{index}].layers: {layer_count:?} entries, expected {}",
                expected.diffids.len()
            ));
        }
    }
    problems
}

fn inspect_matches_expectations(name: &str) {
    let fixtures = require!(Fixtures::from_env());
    require!(oci_attest::binary());
    let fixture = fixtures
        .get(name)
        .unwrap_or_else(|error| panic!("{error:#}"));
    let path = fixtures.path(fixture);
    let predicate =
        oci_attest::inspect_json(&path).unwrap_or_else(|error| panic!("{name}: {error:#}"));
    let problems = disagreements(&predicate, &fixture.expect, path.is_dir());
    assert!(
        problems.is_empty(),
        "{name} ({}), made by `{}`:\n  {}",
        path.display(),
        fixture.made_by,
        problems.join("\n  ")
    );
}

fn tampered_copies_are_rejected(name: &str) {
    let fixtures = require!(Fixtures::from_env());
    require!(oci_attest::binary());
    let fixture = fixtures
        .get(name)
        .unwrap_or_else(|error| panic!("{error:#}"));
    let source = fixtures.path(fixture);
    let mut accepted = Vec::new();
    for tampering in ALL {
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = tampered_copy(
            &source,
            &fixture.expect.images[0].imageid,
            tampering,
            dir.path(),
        )
        .unwrap_or_else(|error| panic!("{name}: cannot make a {tampering:?} copy: {error:#}"));
        let out = oci_attest::output([Path::new("inspect"), Path::new("--json"), &copy])
            .unwrap_or_else(|error| panic!("{error:#}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(5) || !out.stdout.is_empty() || stderr.trim().is_empty() {
            accepted.push(format!(
                "{tampering:?}: exit {:?}, stdout {} bytes, stderr {:?}",
                out.status.code(),
                out.stdout.len(),
                stderr.trim()
            ));
        }
    }
    assert!(
        accepted.is_empty(),
        "{name}: tampered copies must fail with exit 5, an error message and no output:\n  {}",
        accepted.join("\n  ")
    );
}

macro_rules! fixture_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        /// Every fixture the builder writes; `every_fixture_is_tested` keeps this list complete.
        const FIXTURES: &[&str] = &[$($name),*];
        mod inspect {
            $( #[test] fn $test() { super::inspect_matches_expectations($name); } )*
        }
        mod tampered {
            $( #[test] fn $test() { super::tampered_copies_are_rejected($name); } )*
        }
    };
}

fixture_tests! {
    skopeo_docker_archive => "skopeo-docker-archive",
    skopeo_oci_archive => "skopeo-oci-archive",
    skopeo_oci_archive_zstd => "skopeo-oci-archive-zstd",
    podman_save_docker_archive => "podman-save-docker-archive",
    podman_save_oci_archive => "podman-save-oci-archive",
    podman_save_multi => "podman-save-multi",
    skopeo_oci_layout_dir => "skopeo-oci-layout-dir",
    oci_layout_tar_dotslash => "oci-layout-tar-dotslash",
    buildah_push_docker_archive => "buildah-push-docker-archive",
    buildah_multiarch_layout_dir => "buildah-multiarch-layout-dir",
    buildah_multiarch_tar => "buildah-multiarch-tar",
    umoci_mixed_layout_dir => "umoci-mixed-layout-dir",
    umoci_mixed_tar => "umoci-mixed-tar",
    zero_layer_docker_archive => "zero-layer-docker-archive",
    zero_layer_oci_tar => "zero-layer-oci-tar",
    crane_style => "crane-style",
    docker_save => "docker-save",
    docker_save_by_id => "docker-save-by-id",
    docker_save_multi => "docker-save-multi",
    docker_save_gzip => "docker-save-gzip",
    ctr_export => "ctr-export",
}

#[test]
fn every_fixture_is_tested() {
    let fixtures = require!(Fixtures::from_env());
    let built: Vec<&str> = fixtures
        .index
        .fixtures
        .iter()
        .map(|fixture| fixture.name.as_str())
        .collect();
    assert_eq!(
        built, FIXTURES,
        "update FIXTURES and fixture_tests! in tests/tests/archives.rs"
    );
}

#[test]
fn tampering_is_detected_by_the_independent_check_too() {
    // The tampered copies must really be tampered: the standard tools see the change.
    let fixtures = require!(Fixtures::from_env());
    let fixture = fixtures
        .get("docker-save")
        .unwrap_or_else(|error| panic!("{error:#}"));
    let source = fixtures.path(fixture);
    for tampering in [Tampering::FlipLayerByte, Tampering::EditConfig] {
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = tampered_copy(
            &source,
            &fixture.expect.images[0].imageid,
            tampering,
            dir.path(),
        )
        .unwrap_or_else(|error| panic!("{error:#}"));
        let changed = oci_attest_tests::expect::compute(&copy);
        assert!(
            changed.is_err() || changed.as_ref().ok() != Some(&fixture.expect),
            "{tampering:?} left docker-save.tar unchanged"
        );
    }
}
