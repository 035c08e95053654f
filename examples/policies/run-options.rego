# The options that shaped a run (the command-run predicate's `options`): the repository being
# built must not have chosen them. A config file inside the working directory is written by
# whoever writes the sources (a pull request), so the options that weaken the evidence may not
# come from one; and the materials and products must be those of the checkout the job started
# in (`invocationdir`), not of another directory.
package oci_attest.run_options

import rego.v1

settings := object.get(input, ["options", "settings"], {})

invocationdir := object.get(input, ["options", "invocationdir"], {})

# Options that hide products or secrets, or let the command reach the key or the tracer.
weakening_options := {
	"run-as",
	"allow-new-privileges",
	"allow-readable-key",
	"attestor-product-exclude-glob",
	"attestor-product-include-glob",
	"env-allow-sensitive-key",
	"env-disable-default-sensitive-vars",
	"allow-incomplete-trace",
	"allow-missing-subjects",
	"step",
}

from_working_dir_file(setting) if {
	setting.source.kind == "config-file"
	setting.source.inworkingdir
}

# A list that is not empty, a switch that is on, a step name: set at all.
set(setting) if {
	is_array(setting.value)
	count(setting.value) > 0
}

set(setting) if setting.value == true

set(setting) if is_string(setting.value)

deny contains msg if {
	not input.options
	msg := "the attestation does not record the options that shaped the run (oci-attest too old?)"
}

deny contains msg if {
	some name in weakening_options
	setting := settings[name]
	from_working_dir_file(setting)
	set(setting)
	msg := sprintf("%v = %v was set by %v, a file in the working directory", [name, setting.value, setting.source.path])
}

deny contains msg if {
	workingdir := settings.workingdir.value
	not inside(workingdir.path, invocationdir.path)
	msg := sprintf("the working directory %v is not the checkout %v the job started in", [workingdir.path, invocationdir.path])
}

deny contains msg if {
	settings.workingdir.source.kind == "config-file"
	msg := sprintf("the working directory was chosen by %v", [settings.workingdir.source.path])
}

inside(path, dir) if path == dir

inside(path, dir) if startswith(path, concat("", [trim_suffix(dir, "/"), "/"]))
