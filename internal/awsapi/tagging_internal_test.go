package awsapi

import "testing"

// TestIAMAction: a denial names the Tagging API's actions with its IAM prefix, tag, and the
// others' with their signing names.
func TestIAMAction(t *testing.T) {
	for _, tc := range [][3]string{{"tagging", "TagResources", "tag:TagResources"}, {"ec2", "CreateTags", "ec2:CreateTags"}, {"acm", "ImportCertificate", "acm:ImportCertificate"}} {
		if got := iamAction(tc[0], tc[1]); got != tc[2] {
			t.Errorf("%s %s: %s, want %s", tc[0], tc[1], got, tc[2])
		}
	}
}
