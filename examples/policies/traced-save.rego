# The command-run attestation of a traced image save: the command succeeded as an unprivileged
# user who could not read the signing key, the whole process tree was traced with eBPF and
# nothing was lost, and only expected programs ran.
package oci_attest.traced_save

import rego.v1

# Programs (by file name) the save may exec; anything else in the process tree is denied.
allowed_programs := {"docker", "skopeo", "podman", "sh", "dash", "bash"}

# A list, or [] for a missing key or null (Go writes empty lists as null).
list(value) := value if is_array(value)

else := []

deny contains msg if {
	input.exitcode != 0
	msg := sprintf("the command exited with %v", [input.exitcode])
}

# identity says whom the command ran as; a root command (or one that does not say) could have
# read the signing key and forged its own attestation.
deny contains msg if {
	object.get(input, ["identity", "root"], true) != false
	msg := sprintf("the command ran as root or does not say whom it ran as (identity: %v)", [object.get(input, "identity", null)])
}

deny contains msg if {
	object.get(input, ["identity", "keyreadable"], true) != false
	msg := sprintf("the command's user %v could read the signing key", [object.get(input, ["identity", "user"], "?")])
}

deny contains msg if {
	trace := object.get(input, ["summary", "trace"], "missing")
	trace != "ebpf"
	msg := sprintf("the command was not traced with eBPF (summary.trace: %v)", [trace])
}

deny contains msg if {
	lost := object.get(input, ["summary", "lost"], 0)
	lost > 0
	msg := sprintf("the kernel lost %v trace events", [lost])
}

# summary.incomplete lists every gap in the trace as {"reason", "detail"}; absent = none.
deny contains msg if {
	some gap in list(object.get(input, ["summary", "incomplete"], []))
	msg := sprintf("the trace is incomplete: %v (%v)", [object.get(gap, "reason", gap), object.get(gap, "detail", "")])
}

deny contains msg if {
	some process in list(object.get(input, "processes", []))
	parts := split(process.program, "/")
	name := parts[count(parts) - 1]
	not name in allowed_programs
	msg := sprintf("%v (pid %v) is not an allowed program", [process.program, process.processid])
}
