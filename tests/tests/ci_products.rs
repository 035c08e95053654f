//! Products that say what the step produced, end to end with a traced `skopeo copy`: the
//! working directory's new files and the image archive are products; skopeo's own cache
//! writes outside it (`blob-info-cache-v1.boltdb`) stay in `fileOps` only; the include and
//! exclude globs work; the signing key and the outfile are neither materials nor products.

use base64::Engine as _;
use oci_attest_tests::fixtures::{Fixtures, APP_ARCHIVE};
use oci_attest_tests::oci_attest::stderr;
use oci_attest_tests::{oci_attest, require};
use serde_json::Value;

fn leaves(statement: &Value, predicate_type: &str) -> Vec<String> {
    statement["predicate"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|attestation| attestation["type"] == predicate_type)
        .flat_map(|attestation| {
            attestation["attestation"]["leaves"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|leaf| leaf["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn products_are_the_working_dir_and_the_image_not_tool_caches() {
    require!(oci_attest_tests::root());
    let fixtures = require!(Fixtures::from_env());
    let source = fixtures.path(require!(fixtures.get(APP_ARCHIVE)));
    let work = require!(oci_attest::user_dir());
    let outside = require!(oci_attest::user_dir());
    let d = work.path();
    let o = outside.path().canonicalize().unwrap();
    let keygen = oci_attest::command()
        .unwrap()
        .current_dir(d)
        .args(["keygen", "--out", "key.pem"])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    std::fs::write(d.join("att.json"), "previous run").unwrap();
    let script = format!(
        "skopeo copy --quiet docker-archive:{} oci-archive:out.oci.tar && echo log > build.log \
         && echo sbom > {o}/wanted.sbom && echo noise > {o}/noise.txt && echo r > report.txt",
        source.display(),
        o = o.display()
    );
    let output = oci_attest::run()
        .unwrap()
        .current_dir(d)
        .args([
            "-v",
            "--trace",
            "ebpf",
            "-k",
            "key.pem",
            "-o",
            "att.json",
            "--attestor-product-exclude-glob",
            "*.log",
            "--attestor-product-include-glob",
        ])
        .arg(format!("{}/*.sbom", o.display()))
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let envelope: Value =
        serde_json::from_slice(&std::fs::read(d.join("att.json")).unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let wanted = format!("{}/wanted.sbom", o.display());
    let mut expected = vec![
        wanted.clone(),
        "out.oci.tar".to_owned(),
        "report.txt".to_owned(),
    ];
    expected.sort_unstable();
    let mut products = leaves(&statement, "https://aflock.ai/attestations/product/v0.3");
    products.sort_unstable();
    assert_eq!(products, expected);
    let materials = leaves(&statement, "https://aflock.ai/attestations/material/v0.3");
    assert!(
        !materials
            .iter()
            .any(|path| path == "key.pem" || path == "att.json"),
        "{materials:?}"
    );
    assert!(
        materials.iter().any(|path| path == "key.pem.pub"),
        "{materials:?}"
    );
    let text = statement.to_string();
    assert!(
        text.contains("blob-info-cache-v1.boltdb"),
        "skopeo's cache write is still audited in fileOps"
    );
    let printed = stderr(&output);
    // -v shows our debug lines, not aya's relocation chatter (that is -vv).
    assert!(!printed.contains("relocating"), "{printed}");
    let position = |name: &str| printed.find(&format!("product {name}")).unwrap();
    assert!(position(&wanted) < position("out.oci.tar"), "{printed}");
}
