//! The whole reader on arbitrary bytes: sniffing, the outer gzip, the tar parser, the digest
//! workers, link resolution and every JSON document.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    // Rejections are expected; the checks inside panic on what must never happen.
    let _ = oci_attest_fuzz::analyze_bytes(bytes);
});
