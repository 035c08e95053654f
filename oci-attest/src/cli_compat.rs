//! What a witness/cilock user's invocation brings that the argument parser alone does not
//! handle, applied to the raw arguments before parsing: witness flags oci-attest does not
//! support yet get one clear line (exit 2) instead of a "did you mean" suggestion that would do
//! something else. Config files (`.witness.yaml`) are read by [`crate::config`].

use std::ffi::OsString;

/// witness/cilock flags (or flag families, ending in `-`) with no oci-attest equivalent yet.
const UNSUPPORTED_FLAGS: &[&str] = &[
    "--enable-archivista",
    "--archivista-server",
    "--archivista-",
    "--signer-fulcio-",
    "--signer-kms-",
    "--signer-spiffe-",
    "--signer-vault-",
];

/// The first unsupported witness flag among `args` (before `--`), as the message to print.
pub fn unsupported_flag(args: &[OsString]) -> Option<String> {
    args.iter()
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.to_str())
        .find_map(|arg| {
            let flag = arg.split_once('=').map_or(arg, |(flag, _)| flag);
            let unsupported = UNSUPPORTED_FLAGS.iter().any(|known| {
                if known.ends_with('-') {
                    flag.starts_with(known)
                } else {
                    flag == *known
                }
            });
            unsupported.then(|| format!("not supported by oci-attest yet: {flag}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn unsupported_witness_flags_are_named() {
        for flag in [
            "--enable-archivista",
            "--archivista-server=https://x",
            "--signer-fulcio-url",
            "--signer-kms-ref",
        ] {
            let args = os(&["oci-attest", "run", flag, "--", "true"]);
            let message = unsupported_flag(&args).unwrap();
            assert!(
                message.starts_with("not supported by oci-attest yet: --"),
                "{message}"
            );
            assert!(!message.contains('='), "{message}");
        }
        assert_eq!(
            unsupported_flag(&os(&[
                "oci-attest",
                "run",
                "--",
                "x",
                "--enable-archivista"
            ])),
            None
        );
    }
}
