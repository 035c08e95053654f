# The oci attestation: the saved image carries the tag the deploy expects, given when the policy
# is written: `oci-attest policy new ... --rego oci=image-tag.rego --param image_tag=REF`.
package oci_attest.image_tag

import rego.v1

expected_tag := "${image_tag}"

# `imagetags` is null for an image saved by ID.
tags := input.imagetags if is_array(input.imagetags)

else := []

has_expected_tag if {
	some tag in tags
	tag == expected_tag
}

deny contains msg if {
	not has_expected_tag
	msg := sprintf("the image is not tagged %v (tags: %v)", [expected_tag, object.get(input, "imagetags", null)])
}
