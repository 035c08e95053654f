//! The registry client's readers (manifests, indexes, referrers lists, referrer manifests, the
//! cosign `.att` image, envelope blobs) on the answers of a registry on 127.0.0.1 that serves
//! the parts of the input (see `check_registry`).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = oci_attest_fuzz::check_registry(input);
});
