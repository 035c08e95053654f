// Empty library target: lets oci-attest depend on this crate in build-dependencies so cargo
// rebuilds the embedded kernel object when these sources change.
#![no_std]
