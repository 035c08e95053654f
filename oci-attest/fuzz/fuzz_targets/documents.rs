//! The manifest, index and config parsers, reached through a well-formed tar whose blob names
//! and descriptor digests the harness computes (see `documents_archive`).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = oci_attest_fuzz::analyze_bytes(&oci_attest_fuzz::documents_archive(input));
});
