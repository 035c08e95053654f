//! The policy document reader (`sign`, `verify -p`) on arbitrary bytes: JSON under the
//! repeated-key check, the structure, the refused features, base64 Rego modules, keys, steps.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    oci_attest_fuzz::check_policy(bytes);
});
