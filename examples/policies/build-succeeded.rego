# The command-run attestation of a build step: it exited 0.
package oci_attest.build

deny[msg] {
	input.exitcode != 0
	msg := sprintf("the build exited with %v", [input.exitcode])
}
