//! The DSSE envelope reader (in place and plain, compared), the statement reader of `verify -p`
//! and the policy verification behind it, on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    oci_attest_fuzz::check_envelope(bytes);
});
