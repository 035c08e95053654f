//! Archives built in-test (the shapes real tools write, and hostile variants of them), read
//! through the public `analyze`. Each hostile case asserts its specific error; the
//! well-formed archive it was derived from passes in the same test.

use std::path::Path;

use serde_json::json;

use super::{
    analyze, analyze_reader, Analysis, DecompressionLimits, Options, Progress, ReadProgress,
};
use crate::attestors::oci::predicate as oci_predicate;
use crate::digest::sha256_hex;
use oci_attest_tests::archive::{
    self, config_json, descriptor, gzip, sample_text, ustar_header, Archive, Member, OCI_INDEX,
    OCI_LAYER_GZIP, OCI_MANIFEST,
};

/// A small but real layer tar.
fn layer_tar(seed: usize) -> Vec<u8> {
    archive::layer_tar(
        &format!("file{seed}.txt"),
        &sample_text(20_000 + seed * 1000, 0),
    )
}

/// (stored bytes, diffID hex) of layer `seed` in the given compression.
fn layer(seed: usize, compression: &str) -> (Vec<u8>, String) {
    let plain = layer_tar(seed);
    let diff_id = sha256_hex(&plain);
    let stored = match compression {
        "gzip" => gzip(&plain),
        "zstd" => zstd::encode_all(plain.as_slice(), 3).unwrap(),
        "gzip-multi" => {
            let mut stored = gzip(&plain[..plain.len() / 3]);
            stored.extend(gzip(&plain[plain.len() / 3..]));
            stored
        }
        _ => plain,
    };
    (stored, diff_id)
}

/// `docker save` (≤ 24) shape: `<config hex>.json`, `<n>/layer.tar`, manifest.json last.
fn docker_archive(layers: &[(Vec<u8>, String)], tags: &[&str]) -> Archive {
    let mut fixture = Archive::default();
    let mut names = Vec::new();
    for (index, (stored, _)) in layers.iter().enumerate() {
        let name = format!("layer{index}/layer.tar");
        fixture.file(name.clone(), stored.clone());
        names.push(name);
    }
    let diff_ids: Vec<String> = layers.iter().map(|(_, diff_id)| diff_id.clone()).collect();
    let config = config_json(&diff_ids);
    let config_name = format!("{}.json", sha256_hex(&config));
    fixture.file(config_name.clone(), config);
    let manifest = json!([{"Config": config_name, "RepoTags": tags, "Layers": names}]);
    fixture.file("manifest.json", serde_json::to_vec(&manifest).unwrap());
    fixture
}

/// Adds one image's blobs; returns the manifest blob bytes.
fn oci_image(fixture: &mut Archive, prefix: &str, layers: &[(Vec<u8>, String)]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, diff_id)| diff_id.clone()).collect();
    let config = config_json(&diff_ids);
    let mut layer_descriptors = Vec::new();
    for (stored, _) in layers {
        fixture.file(
            format!("{prefix}blobs/sha256/{}", sha256_hex(stored)),
            stored.clone(),
        );
        // Real tools label plain and zstd layers tar+gzip too: the label must not matter.
        layer_descriptors.push(descriptor(OCI_LAYER_GZIP, stored));
    }
    fixture.file(
        format!("{prefix}blobs/sha256/{}", sha256_hex(&config)),
        config.clone(),
    );
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layer_descriptors,
    }))
    .unwrap();
    fixture.file(
        format!("{prefix}blobs/sha256/{}", sha256_hex(&manifest)),
        manifest.clone(),
    );
    manifest
}

fn oci_index(fixture: &mut Archive, prefix: &str, manifests: Vec<serde_json::Value>) {
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    fixture.file(
        format!("{prefix}oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    fixture.file(
        format!("{prefix}index.json"),
        serde_json::to_vec(&index).unwrap(),
    );
}

fn oci_archive(layers: &[(Vec<u8>, String)], tag: &str, prefix: &str) -> (Archive, Vec<u8>) {
    let mut fixture = Archive::default();
    let manifest = oci_image(&mut fixture, prefix, layers);
    let mut top = descriptor(OCI_MANIFEST, &manifest);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    oci_index(&mut fixture, prefix, vec![top]);
    (fixture, manifest)
}

fn analyze_fixture(fixture: &Archive) -> Result<Analysis, String> {
    analyze_with(fixture, &Options::default())
}

fn analyze_with(fixture: &Archive, options: &Options) -> Result<Analysis, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture.write(dir.path(), "image.tar");
    analyze(&path, options).map_err(|error| error.message)
}

fn diff_id_hexes(analysis: &Analysis) -> Vec<String> {
    oci_predicate(analysis)
        .diffids
        .iter()
        .map(|set| set["sha256"].clone())
        .collect()
}

#[test]
fn docker_archive_diffids_follow_the_manifest_not_the_tar() {
    let layers = [layer(1, "none"), layer(2, "none"), layer(3, "gzip")];
    let mut fixture = docker_archive(&layers, &["example.com/app:1"]);
    // Physical order reversed: manifest.json first, the last layer before the first.
    fixture.members.reverse();
    let dir = tempfile::tempdir().unwrap();
    let path = fixture.write(dir.path(), "image.tar");
    let analysis = analyze(&path, &Options::default()).unwrap();

    let tar_bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        analysis.file_sha256.as_deref(),
        Some(sha256_hex(&tar_bytes).as_str())
    );
    let expected: Vec<String> = layers.iter().map(|(_, diff_id)| diff_id.clone()).collect();
    assert_eq!(diff_id_hexes(&analysis), expected);
    let manifest_raw = fixture.bytes("manifest.json");
    let predicate = &oci_predicate(&analysis);
    assert_eq!(
        predicate.manifestdigest["sha256"],
        sha256_hex(&manifest_raw)
    );
    assert_eq!(predicate.format, "docker-archive");
    assert!(
        predicate.images.is_none(),
        "one docker image: no images extension"
    );
    let json = crate::gojson::to_string(predicate).unwrap();
    let keys = [
        "tardigest",
        "manifest",
        "imagetags",
        "diffids",
        "imageid",
        "manifestraw",
        "manifestdigest",
        "format",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|key| json.find(&format!("\"{key}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{json}");
    assert!(json.contains(r#""manifest":[{"Config":""#), "{json}");
    assert!(
        json.contains(r#""imagetags":["example.com/app:1"]"#),
        "{json}"
    );
    assert_eq!(analysis.images[0].layers[2].compression.as_str(), "gzip");
}

/// The same bytes read from memory (as from a pipe or stdin) give the same facts as the file,
/// in one pass reported to the progress callback; a stream that is no archive is refused under
/// the name it was given.
#[test]
fn a_stream_reads_like_the_file() {
    let layers = [layer(1, "gzip"), layer(2, "none")];
    let fixture = docker_archive(&layers, &["app:1"]);
    let dir = tempfile::tempdir().unwrap();
    let path = fixture.write(dir.path(), "image.tar");
    let bytes = std::fs::read(&path).unwrap();
    let from_file = analyze(&path, &Options::default()).unwrap();
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&steps);
    let options = Options {
        progress: Some(Progress::new(move |step| seen.lock().unwrap().push(step))),
        ..Options::default()
    };
    for stream in [bytes.clone(), gzip(&bytes)] {
        steps.lock().unwrap().clear();
        let from_stream = analyze_reader(Path::new("-"), &stream[..], &options).unwrap();
        assert_eq!(from_stream.path, Path::new("-"));
        assert_eq!(
            from_stream.file_sha256.as_deref(),
            Some(sha256_hex(&stream).as_str())
        );
        let mut expected = oci_predicate(&from_file);
        expected.tardigest = oci_predicate(&from_stream).tardigest;
        assert_eq!(
            crate::gojson::to_string(&oci_predicate(&from_stream)).unwrap(),
            crate::gojson::to_string(&expected).unwrap()
        );
        let steps = steps.lock().unwrap();
        assert_eq!(steps.first(), Some(&ReadProgress::Started { total: None }));
        assert_eq!(steps.last(), Some(&ReadProgress::Finished));
        let read: u64 = steps
            .iter()
            .map(|step| match step {
                ReadProgress::Advanced { bytes } => *bytes,
                _ => 0,
            })
            .sum();
        assert_eq!(read, stream.len() as u64);
    }
    let error = analyze_reader(Path::new("-"), &b"not a tar"[..], &options).unwrap_err();
    assert_eq!(
        error.to_string(),
        "-: not an image archive (neither a tar, a gzip-compressed tar nor an OCI layout directory)"
    );
}

#[test]
fn oci_layout_tar_with_dot_names_and_sniffed_compressions() {
    let layers = [
        layer(1, "gzip-multi"),
        layer(2, "zstd"),
        layer(3, "none"),
        layer(4, "gzip"),
    ];
    let (fixture, manifest) = oci_archive(&layers, "app:2", "./");
    let analysis = analyze_fixture(&fixture).unwrap();
    let predicate = &oci_predicate(&analysis);
    assert_eq!(predicate.format, "oci-layout");
    let expected: Vec<String> = layers.iter().map(|(_, diff_id)| diff_id.clone()).collect();
    assert_eq!(diff_id_hexes(&analysis), expected);
    assert_eq!(predicate.manifestdigest["sha256"], sha256_hex(&manifest));
    assert_eq!(predicate.imagetags, Some(vec!["app:2".to_owned()]));
    let compressions: Vec<&str> = analysis.images[0]
        .layers
        .iter()
        .map(|layer| layer.compression.as_str())
        .collect();
    assert_eq!(compressions, ["gzip", "zstd", "none", "gzip"]);
    let images = predicate.images.as_ref().unwrap();
    assert_eq!(images[0]["manifestdigest"]["sha256"], sha256_hex(&manifest));
    assert_eq!(
        images[0]["platform"],
        json!({"os": "linux", "architecture": "amd64"})
    );
    assert_eq!(
        predicate.manifest[0]["Layers"][1],
        format!("blobs/sha256/{}", sha256_hex(&layers[1].0))
    );
}

#[test]
fn oci_layout_directory_has_no_tar_digest() {
    let layers = [layer(1, "gzip")];
    let (fixture, manifest) = oci_archive(&layers, "latest", "");
    let dir = tempfile::tempdir().unwrap();
    for (name, entry) in &fixture.members {
        let Member::File(bytes) = entry else {
            unreachable!()
        };
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    assert_eq!(
        super::sniff(dir.path()).unwrap(),
        Some(super::ArchiveKind::LayoutDir)
    );
    let analysis = analyze(dir.path(), &Options::default()).unwrap();
    assert_eq!(analysis.file_sha256, None);
    assert!(oci_predicate(&analysis).tardigest.is_empty());
    assert_eq!(
        oci_predicate(&analysis).manifestdigest["sha256"],
        sha256_hex(&manifest)
    );
    assert_eq!(diff_id_hexes(&analysis), [layers[0].1.clone()]);
}

#[test]
fn hybrid_docker_and_oci_archive() {
    // docker ≥ 25: manifest.json and index.json over the same blobs.
    let layers = [layer(1, "none"), layer(2, "none")];
    let mut fixture = Archive::default();
    let manifest = oci_image(&mut fixture, "", &layers);
    let mut top = descriptor(OCI_MANIFEST, &manifest);
    top["annotations"] = json!({"io.containerd.image.name": "docker.io/library/app:3"});
    oci_index(&mut fixture, "", vec![top]);
    let config_hex = sha256_hex(&config_json(&[layers[0].1.clone(), layers[1].1.clone()]));
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{config_hex}"),
        "RepoTags": ["app:3"],
        "Layers": layers.iter().map(|(stored, _)| format!("blobs/sha256/{}", sha256_hex(stored))).collect::<Vec<_>>(),
    }]);
    let docker_manifest = serde_json::to_vec(&docker_manifest).unwrap();
    fixture.file("manifest.json", docker_manifest.clone());
    let analysis = analyze_fixture(&fixture).unwrap();
    let predicate = &oci_predicate(&analysis);
    assert_eq!(predicate.format, "docker-archive+oci-layout");
    assert_eq!(
        predicate.manifestdigest["sha256"],
        sha256_hex(&docker_manifest)
    );
    assert_eq!(predicate.imageid["sha256"], config_hex);
    let images = predicate.images.as_ref().unwrap();
    assert_eq!(
        images.len(),
        1,
        "the OCI and docker views of one image merge"
    );
    assert_eq!(images[0]["manifestdigest"]["sha256"], sha256_hex(&manifest));
    assert_eq!(images[0]["tags"], json!(["app:3"]));
    assert_eq!(images[0]["layers"][0]["mediatype"], OCI_LAYER_GZIP);
}

#[test]
fn linked_layers_and_a_repeated_layer() {
    // podman/skopeo: `<id>/layer.tar` symlinks; docker dedups a repeated layer with a symlink;
    // hard links resolve from the archive root.
    let shared = layer(1, "none");
    let other = layer(2, "none");
    let mut fixture = Archive::default();
    fixture.file(format!("{}.tar", shared.1), shared.0.clone());
    fixture.file("b/layer.tar", other.0.clone());
    fixture.symlink("a/layer.tar", &format!("../{}.tar", shared.1));
    fixture.symlink("c/layer.tar", "../a/layer.tar");
    fixture.hardlink("d/layer.tar", "./b/layer.tar");
    let diff_ids = [
        shared.1.clone(),
        other.1.clone(),
        shared.1.clone(),
        other.1.clone(),
    ];
    let config = config_json(&diff_ids);
    let config_name = format!("{}.json", sha256_hex(&config));
    fixture.file(config_name.clone(), config);
    let manifest = json!([{"Config": config_name, "RepoTags": null,
        "Layers": ["a/layer.tar", "b/layer.tar", "c/layer.tar", "d/layer.tar"]}]);
    fixture.file("manifest.json", serde_json::to_vec(&manifest).unwrap());
    let analysis = analyze_fixture(&fixture).unwrap();
    assert_eq!(diff_id_hexes(&analysis), diff_ids);
    assert_eq!(oci_predicate(&analysis).imagetags, None);
    let json = crate::gojson::to_string(&oci_predicate(&analysis)).unwrap();
    assert!(json.contains(r#""imagetags":null"#));
    assert!(json.contains(r#""RepoTags":null"#));

    let mut escaping = fixture.clone();
    escaping
        .remove("a/layer.tar")
        .symlink("a/layer.tar", "../../etc/passwd");
    assert_eq!(
        analyze_fixture(&escaping).unwrap_err(),
        r#"member "a/layer.tar" is a link that points outside the archive"#
    );
    let mut looping = fixture.clone();
    looping
        .remove("a/layer.tar")
        .symlink("a/layer.tar", "../c/layer.tar");
    assert!(analyze_fixture(&looping)
        .unwrap_err()
        .contains(r#"member "a/layer.tar" is a link loop"#));
    let mut dangling = fixture.clone();
    dangling
        .remove("d/layer.tar")
        .hardlink("d/layer.tar", "gone/layer.tar");
    assert_eq!(
        analyze_fixture(&dangling).unwrap_err(),
        r#"member "d/layer.tar" is a link to "gone/layer.tar", which is not in the archive"#
    );
}

#[test]
fn crane_style_archive_with_lowercase_keys_inside_outer_gzip() {
    let layers = [layer(1, "gzip"), layer(2, "gzip")];
    let mut fixture = Archive::default();
    let diff_ids: Vec<String> = layers.iter().map(|(_, diff_id)| diff_id.clone()).collect();
    let config = config_json(&diff_ids);
    let config_name = format!("sha256:{}", sha256_hex(&config));
    fixture.file(config_name.clone(), config.clone());
    let mut names = Vec::new();
    for (stored, _) in &layers {
        let name = format!("{}.tar.gz", sha256_hex(stored));
        fixture.file(name.clone(), stored.clone());
        names.push(name);
    }
    let manifest =
        json!([{"config": config_name, "repoTags": ["crane.example/x:1"], "layers": names}]);
    fixture.file("manifest.json", serde_json::to_vec(&manifest).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar.gz");
    let stored = gzip(&fixture.tar());
    std::fs::write(&path, &stored).unwrap();
    assert_eq!(
        super::sniff(&path).unwrap(),
        Some(super::ArchiveKind::GzipTar)
    );
    let analysis = analyze(&path, &Options::default()).unwrap();
    assert_eq!(analysis.file_sha256, Some(sha256_hex(&stored)));
    assert_eq!(
        oci_predicate(&analysis).imageid["sha256"],
        sha256_hex(&config)
    );
    assert_eq!(
        oci_predicate(&analysis).manifest[0]["RepoTags"],
        json!(["crane.example/x:1"])
    );
    assert_eq!(diff_id_hexes(&analysis), diff_ids);

    let mut edited = fixture.clone();
    edited.replace(&config_name, config_json(&diff_ids[..1]));
    assert_eq!(
        analyze_fixture(&edited).unwrap_err(),
        format!(
            "config {config_name:?} has digest sha256:{}, not the sha256:{} its name claims",
            sha256_hex(&config_json(&diff_ids[..1])),
            sha256_hex(&config)
        )
    );
}

#[test]
fn nested_index_multi_platform_and_zero_layer_image() {
    let mut fixture = Archive::default();
    let amd64 = oci_image(&mut fixture, "", &[layer(1, "gzip")]);
    let empty = oci_image(&mut fixture, "", &[]);
    let mut amd64_descriptor = descriptor(OCI_MANIFEST, &amd64);
    amd64_descriptor["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let mut arm_descriptor = descriptor(OCI_MANIFEST, &empty);
    arm_descriptor["platform"] = json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [amd64_descriptor, arm_descriptor],
    }))
    .unwrap();
    fixture.file(
        format!("blobs/sha256/{}", sha256_hex(&inner)),
        inner.clone(),
    );
    let mut top = descriptor(OCI_INDEX, &inner);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": "multi:1"});
    oci_index(&mut fixture, "", vec![top]);
    let analysis = analyze_fixture(&fixture).unwrap();
    let predicate = oci_predicate(&analysis);
    let images = predicate.images.as_ref().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(
        images[1]["platform"],
        json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
    );
    assert_eq!(images[1]["diffids"], json!([]));
    assert_eq!(images[1]["tags"], json!(["multi:1"]));
    assert_eq!(
        oci_predicate(&analysis).manifestdigest["sha256"],
        sha256_hex(&amd64)
    );

    // An index that names itself cannot hash to its own digest: content addressing rejects
    // the cycle as a digest mismatch.
    let mut cyclic = fixture.clone();
    let inner_name = format!("blobs/sha256/{}", sha256_hex(&inner));
    let self_reference = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_INDEX, &inner)],
    }))
    .unwrap();
    cyclic.replace(&inner_name, self_reference.clone());
    assert_eq!(
        analyze_fixture(&cyclic).unwrap_err(),
        format!(
            "blob {inner_name:?} has digest sha256:{}, not the one its name claims",
            sha256_hex(&self_reference)
        )
    );
}

#[test]
fn multi_image_docker_archive_lists_every_image() {
    let first = docker_archive(&[layer(1, "none")], &["one:1"]);
    let second = docker_archive(&[layer(2, "none"), layer(3, "none")], &["two:1", "two:2"]);
    let mut fixture = Archive::default();
    let mut entries = Vec::new();
    for part in [&first, &second] {
        for (name, entry) in &part.members {
            if name == "manifest.json" {
                let value: serde_json::Value = serde_json::from_slice(&part.bytes(name)).unwrap();
                entries.push(value[0].clone());
            } else {
                let Member::File(bytes) = entry else {
                    unreachable!()
                };
                // Layer member names collide across the two parts: prefix them.
                let name = if name.ends_with("layer.tar") {
                    format!("{}-{name}", entries.len())
                } else {
                    name.clone()
                };
                fixture.file(name, bytes.clone());
            }
        }
    }
    entries[1]["Layers"] = json!(["1-layer0/layer.tar", "1-layer1/layer.tar"]);
    entries[0]["Layers"] = json!(["0-layer0/layer.tar"]);
    fixture.file("manifest.json", serde_json::to_vec(&entries).unwrap());
    let analysis = analyze_fixture(&fixture).unwrap();
    let predicate = oci_predicate(&analysis);
    let images = predicate.images.as_ref().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[1]["tags"], json!(["two:1", "two:2"]));
    assert_eq!(
        oci_predicate(&analysis).imagetags,
        Some(vec!["one:1".to_owned()])
    );
    assert_eq!(oci_predicate(&analysis).diffids.len(), 1);
}

// ---- hostile input ----

fn well_formed() -> Archive {
    docker_archive(&[layer(1, "gzip"), layer(2, "none")], &["app:1"])
}

fn config_name(fixture: &Archive) -> String {
    fixture
        .members
        .iter()
        .find(|(name, _)| name.ends_with(".json") && name != "manifest.json")
        .map(|(name, _)| name.clone())
        .unwrap()
}

#[test]
fn tampered_layer_and_layer_count_mismatch() {
    let fixture = well_formed();
    analyze_fixture(&fixture).unwrap();
    let mut tampered = fixture.clone();
    let mut bytes = fixture.bytes("layer1/layer.tar");
    bytes[600] ^= 1;
    tampered.replace("layer1/layer.tar", bytes.clone());
    let message = analyze_fixture(&tampered).unwrap_err();
    assert_eq!(
        message,
        format!(
            "layer 2 (\"layer1/layer.tar\") has diffID sha256:{}, but config {:?} expects sha256:{}",
            sha256_hex(&bytes),
            config_name(&fixture),
            layer(2, "none").1
        )
    );

    let mut miscounted = fixture.clone();
    let manifest = json!([{"Config": config_name(&fixture), "RepoTags": ["app:1"], "Layers": ["layer0/layer.tar"]}]);
    miscounted.replace("manifest.json", serde_json::to_vec(&manifest).unwrap());
    assert_eq!(
        analyze_fixture(&miscounted).unwrap_err(),
        format!(
            "image {:?} lists 1 layers but its config has 2 rootfs.diff_ids",
            config_name(&fixture)
        )
    );
}

#[test]
fn missing_members_and_no_manifest() {
    let fixture = well_formed();
    let mut no_config = fixture.clone();
    no_config.remove(&config_name(&fixture));
    assert_eq!(
        analyze_fixture(&no_config).unwrap_err(),
        format!("member {:?} is missing", config_name(&fixture))
    );
    let mut no_layer = fixture.clone();
    no_layer.remove("layer0/layer.tar");
    assert_eq!(
        analyze_fixture(&no_layer).unwrap_err(),
        r#"member "layer0/layer.tar" is missing"#
    );
    let mut no_manifest = fixture.clone();
    no_manifest.remove("manifest.json");
    assert_eq!(
        analyze_fixture(&no_manifest).unwrap_err(),
        "neither manifest.json (docker-archive) nor index.json (OCI layout): not an image archive"
    );
}

#[test]
fn bad_manifest_json() {
    let cases: [(&[u8], &str); 5] = [
        (
            b"not json",
            "member \"manifest.json\" is not valid JSON: expected ident at line 1 column 2",
        ),
        (b"[]", "manifest.json lists no images"),
        (b"null", "manifest.json is null, not a list of images"),
        (b"42", "manifest.json is a number, not a list of images"),
        (
            b"[{\"Layers\":[]}]",
            "manifest.json entry 1: has no Config member name",
        ),
    ];
    for (bytes, expected) in cases {
        let mut fixture = well_formed();
        fixture.replace("manifest.json", bytes);
        assert_eq!(analyze_fixture(&fixture).unwrap_err(), expected);
    }
    let mut deep = well_formed();
    deep.replace("manifest.json", "[".repeat(100_000) + &"]".repeat(100_000));
    assert_eq!(
        analyze_fixture(&deep).unwrap_err(),
        "member \"manifest.json\" is not valid JSON: recursion limit exceeded at line 1 column 128"
    );
    let mut oversized = well_formed();
    let mut big = b"[".to_vec();
    big.resize(65 << 20, b' ');
    big.push(b']');
    oversized.replace("manifest.json", big);
    assert_eq!(
        analyze_fixture(&oversized).unwrap_err(),
        "member \"manifest.json\" is larger than the 64 MiB allowed for a JSON document"
    );
}

#[test]
fn json_looking_members_share_one_budget() {
    let mut fixture = well_formed();
    let manifest = fixture.bytes("manifest.json");
    fixture.remove("manifest.json");
    let mut junk = b"[".to_vec();
    junk.resize(50 << 20, b' ');
    for index in 0..3 {
        fixture.file(format!("junk{index}"), junk.clone());
    }
    fixture.file("manifest.json", manifest);
    assert_eq!(
        analyze_fixture(&fixture).unwrap_err(),
        "member \"manifest.json\" was not kept: JSON-looking members exceed 128 MiB in total"
    );
}

#[test]
fn duplicate_manifest_and_hostile_tags() {
    let mut duplicate = well_formed();
    duplicate.file("./manifest.json", "[]");
    assert_eq!(
        analyze_fixture(&duplicate).unwrap_err(),
        r#"member "manifest.json" appears twice with different content"#
    );
    for (tag, expected) in [
        (
            "app:1\n".to_owned(),
            r#"manifest.json entry 1: image tag "app:1\n" contains control characters"#.to_owned(),
        ),
        (
            "a".repeat(1025),
            "manifest.json entry 1: image tag of 1025 bytes is longer than 1024 bytes".to_owned(),
        ),
    ] {
        let mut fixture = well_formed();
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&fixture.bytes("manifest.json")).unwrap();
        manifest[0]["RepoTags"] = json!([tag]);
        fixture.replace("manifest.json", serde_json::to_vec(&manifest).unwrap());
        assert_eq!(analyze_fixture(&fixture).unwrap_err(), expected);
    }
}

#[test]
fn oci_blob_descriptor_and_index_problems() {
    let layers = [layer(1, "gzip")];
    let (fixture, manifest) = oci_archive(&layers, "x:1", "");
    analyze_fixture(&fixture).unwrap();
    let layer_name = format!("blobs/sha256/{}", sha256_hex(&layers[0].0));

    let mut tampered = fixture.clone();
    let mut bytes = layers[0].0.clone();
    let last = bytes.len() - 20;
    bytes[last] ^= 0xff;
    tampered.replace(&layer_name, bytes.clone());
    assert_eq!(
        analyze_fixture(&tampered).unwrap_err(),
        format!(
            "blob {layer_name:?} has digest sha256:{}, not the one its name claims",
            sha256_hex(&bytes)
        )
    );

    let mut wrong_size = fixture.clone();
    let mut index: serde_json::Value =
        serde_json::from_slice(&fixture.bytes("index.json")).unwrap();
    index["manifests"][0]["size"] = json!(manifest.len() + 1);
    wrong_size.replace("index.json", serde_json::to_vec(&index).unwrap());
    assert_eq!(
        analyze_fixture(&wrong_size).unwrap_err(),
        format!(
            "index.json gives sha256:{} a size of {}, but the blob has {} bytes",
            sha256_hex(&manifest),
            manifest.len() + 1,
            manifest.len()
        )
    );

    let mut bad_tag = fixture.clone();
    let mut index: serde_json::Value =
        serde_json::from_slice(&fixture.bytes("index.json")).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        json!("x:1\u{1b}[2J");
    bad_tag.replace("index.json", serde_json::to_vec(&index).unwrap());
    assert_eq!(
        analyze_fixture(&bad_tag).unwrap_err(),
        r#"index.json: image tag "x:1\u{1b}[2J" contains control characters"#
    );

    let mut missing = fixture.clone();
    missing.remove(&format!("blobs/sha256/{}", sha256_hex(&manifest)));
    assert_eq!(
        analyze_fixture(&missing).unwrap_err(),
        format!(
            "index.json refers to sha256:{0}: member \"blobs/sha256/{0}\" is missing",
            sha256_hex(&manifest)
        )
    );
}

#[test]
fn truncated_and_non_archives() {
    let dir = tempfile::tempdir().unwrap();
    let tar = well_formed().tar();
    let check = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        analyze(&path, &Options::default()).unwrap_err().message
    };
    assert!(check("in-member.tar", &tar[..5000])
        .starts_with(r#"truncated archive: member "layer0/layer.tar" has "#));
    assert!(check("in-header.tar", &tar[..tar.len() - 1024 - 600])
        .starts_with("truncated or corrupt tar after member"));
    let not_archive =
        "not an image archive (neither a tar, a gzip-compressed tar nor an OCI layout directory)";
    assert_eq!(check("empty.tar", b""), not_archive);
    assert_eq!(check("random.tar", &sample_text(4096, 0)), not_archive);
    let mut gzip_garbage = vec![0x1f, 0x8b];
    gzip_garbage.extend(sample_text(1000, 0));
    assert_eq!(check("garbage.tar.gz", &gzip_garbage), not_archive);
    let lone = ustar_header("manifest.json", tar::EntryType::Regular, 8 << 30, "");
    assert_eq!(
        check("lone.tar", lone.as_bytes()),
        "truncated archive: member \"manifest.json\" has 0 of its 8589934592 bytes"
    );
    let mut gz_truncated = gzip(&tar);
    gz_truncated.truncate(gz_truncated.len() - 100);
    assert!(check("truncated.tar.gz", &gz_truncated).contains("truncated"));
}

#[test]
fn sniffs_pre_posix_headers_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = tar::Header::new_old();
    header.set_path("manifest.json").unwrap();
    header.set_size(0);
    header.set_mode(0o644);
    header.set_cksum();
    let path = dir.path().join("v7.tar");
    let mut bytes = header.as_bytes().to_vec();
    bytes.resize(2048, 0);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(super::sniff(&path).unwrap(), Some(super::ArchiveKind::Tar));
    bytes[0] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        super::sniff(&path).unwrap(),
        None,
        "checksum no longer adds up"
    );
    std::fs::write(&path, [0u8; 1024]).unwrap();
    assert_eq!(
        super::sniff(&path).unwrap(),
        None,
        "an empty tar is not an image"
    );
}

#[test]
fn tar_level_bombs_and_forged_lines() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    // A GNU long name of 64 MiB, gzip-compressed to almost nothing: refused at 1 MiB.
    let mut long_name = ustar_header("././@LongLink", tar::EntryType::GNULongName, 64 << 20, "");
    long_name.set_cksum();
    let mut tar = long_name.as_bytes().to_vec();
    tar.resize(512 + (64 << 20), b'a');
    tar.extend(well_formed().tar());
    let message = analyze(&write("long-name.tar.gz", &gzip(&tar)), &Options::default())
        .unwrap_err()
        .message;
    assert!(
        message.ends_with(r#"header extension "././@LongLink" is larger than 1024 KiB"#),
        "{message}"
    );

    // Zeros after the end of the archive, inside the outer gzip: counted like layer bytes.
    let mut padded = well_formed().tar();
    padded.resize(padded.len() + (8 << 20), 0);
    let options = Options {
        limits: DecompressionLimits {
            max_total_bytes: 4 << 20,
            max_ratio: 1000,
        },
        ..Options::default()
    };
    let message = analyze(&write("padded.tar.gz", &gzip(&padded)), &options)
        .unwrap_err()
        .message;
    assert_eq!(
        message,
        "outer gzip stream: decompresses to more than 4194304 bytes (--max-decompressed-bytes)"
    );
    analyze(
        &write("padded-ok.tar.gz", &gzip(&padded)),
        &Options::default(),
    )
    .unwrap();

    // A sparse member claiming a TiB of holes is refused before anything is expanded.
    let mut sparse = tar::Header::new_gnu();
    sparse.set_path("layer0/layer.tar").unwrap();
    sparse.set_entry_type(tar::EntryType::GNUSparse);
    let gnu = sparse.as_gnu_mut().unwrap();
    gnu.sparse[0].set_offset((1 << 40) - 512);
    gnu.sparse[0].set_length(512);
    gnu.set_real_size(1 << 40);
    sparse.set_size(512);
    sparse.set_cksum();
    let mut tar = sparse.as_bytes().to_vec();
    tar.extend([0x55; 512]);
    tar.extend(well_formed().remove("layer0/layer.tar").tar());
    assert_eq!(
        analyze(&write("sparse.tar", &tar), &Options::default())
            .unwrap_err()
            .message,
        r#"member "layer0/layer.tar" is a GNU sparse file, which image archives never contain"#
    );

    // The tar parser quotes raw header bytes in its errors: they must not forge lines.
    let mut forged = well_formed().tar();
    forged[148..156].copy_from_slice(b"1\n\x1b[2Jxy");
    let message = analyze(&write("forged.tar", &forged), &Options::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(message.contains(r"1\n\u{1b}[2Jxy"), "{message}");
    assert!(
        !message.contains('\n') && !message.contains('\u{1b}'),
        "{message}"
    );
}

#[test]
fn corrupt_layer_streams_and_bombs() {
    let mut garbage = well_formed();
    let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    bytes.extend(sample_text(1000, 0));
    garbage.replace("layer0/layer.tar", bytes);
    assert!(analyze_fixture(&garbage)
        .unwrap_err()
        .starts_with(r#"layer "layer0/layer.tar" cannot be decompressed: gzip stream is corrupt"#));

    // 20 GiB of zeros in about 800 KiB of zstd frames.
    let frame = zstd::encode_all(vec![0u8; 16 << 20].as_slice(), 3).unwrap();
    let mut bomb = well_formed();
    bomb.replace("layer0/layer.tar", frame.repeat(20 * 64));
    assert_eq!(
        analyze_fixture(&bomb).unwrap_err(),
        r#"layer "layer0/layer.tar" cannot be decompressed: zstd stream expands more than 1000x (--max-ratio): a decompression bomb?"#
    );
    let limits = DecompressionLimits {
        max_total_bytes: 10_000,
        max_ratio: 1000,
    };
    let options = Options {
        limits,
        ..Options::default()
    };
    assert_eq!(
        analyze_with(&well_formed(), &options).unwrap_err(),
        r#"layer "layer0/layer.tar" cannot be decompressed: decompressed layers exceed the limit of 10000 bytes in total (--max-decompressed-bytes)"#
    );
}

#[test]
fn too_many_members() {
    let mut fixture = well_formed();
    for index in 0..super::scan::MAX_MEMBERS {
        fixture.file(format!("junk/{index}"), Vec::new());
    }
    assert_eq!(
        analyze_fixture(&fixture).unwrap_err(),
        "more than 250000 members: not an image archive"
    );
}

#[test]
fn repeated_manifest_entries_hit_the_archive_wide_layer_limit() {
    let mut fixture = well_formed();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fixture.bytes("manifest.json")).unwrap();
    let options = Options {
        max_layers: 2,
        ..Options::default()
    };
    analyze_with(&fixture, &options).unwrap();
    let repeated = vec![manifest[0].clone(); 17];
    fixture.replace("manifest.json", serde_json::to_vec(&repeated).unwrap());
    assert_eq!(
        analyze_with(&fixture, &options).unwrap_err(),
        "manifest.json lists 34 layers over all its images, more than the limit of 32 (16 x --max-layers)"
    );
}

#[test]
fn ten_thousand_layers_hit_the_layer_limit_quickly() {
    let layers = |count: usize| -> Vec<(Vec<u8>, String)> {
        (0..count)
            .map(|index| {
                let stored = format!("layer {index}").into_bytes();
                let diff_id = sha256_hex(&stored);
                (stored, diff_id)
            })
            .collect()
    };
    let fixture = docker_archive(&layers(10_000), &["many:1"]);
    let started = std::time::Instant::now();
    assert_eq!(
        analyze_fixture(&fixture).unwrap_err(),
        format!(
            "image {:?} has 10000 layers, more than the limit of 1024 (--max-layers)",
            config_name(&fixture)
        )
    );
    let at_limit = docker_archive(&layers(super::image::MAX_LAYERS), &["many:2"]);
    let analysis = analyze_fixture(&at_limit).unwrap();
    assert_eq!(oci_predicate(&analysis).diffids.len(), 1024);
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}
