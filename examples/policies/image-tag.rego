# The oci attestation: the saved image carries the tag the deploy expects.
package oci_attest.image_tag

import rego.v1

expected_tag := "localhost/fx/app:1"

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
