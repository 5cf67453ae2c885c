// Package v1beta1 holds the TargetGroupBinding API (elbv2.k8s.aws/v1beta1), compatible with the
// AWS Load Balancer Controller's: a TargetGroupBinding binds an existing ELBv2 target group to a
// Service port, so that the controller registers the Service's endpoints (nodes or pods) as
// targets and writes the rules the targets' security groups need. moat's Service controller
// creates one per target group it manages; users may create their own.
//
// +kubebuilder:object:generate=true
// +groupName=elbv2.k8s.aws
package v1beta1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the API.
	GroupVersion = schema.GroupVersion{Group: "elbv2.k8s.aws", Version: "v1beta1"}

	// SchemeBuilder registers the API's types.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object crd paths=./... output:crd:artifacts:config=../../../config/crd/bases
