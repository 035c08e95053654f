//! The config file reader (`.oci-attest.yaml`, `.witness.yaml`, `-c FILE`) on arbitrary bytes:
//! size and UTF-8 checks, YAML under its budget, duplicate keys, the sections.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    oci_attest_fuzz::check_config(bytes);
});
