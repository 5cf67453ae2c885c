package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TargetType is the target type of the target group: with instance, the nodes are registered on
// the Service's NodePort; with ip, the pods on their container port.
// +kubebuilder:validation:Enum=instance;ip
type TargetType string

const (
	TargetTypeInstance TargetType = "instance"
	TargetTypeIP       TargetType = "ip"
)

// TargetGroupProtocol is the protocol of the target group.
// +kubebuilder:validation:Enum=HTTP;HTTPS;TCP;TLS;UDP;TCP_UDP;QUIC;TCP_QUIC;GENEVE
type TargetGroupProtocol string

// TargetGroupIPAddressType is the IP address type of the target group.
// +kubebuilder:validation:Enum=ipv4;ipv6
type TargetGroupIPAddressType string

const (
	TargetGroupIPAddressTypeIPv4 TargetGroupIPAddressType = "ipv4"
	TargetGroupIPAddressTypeIPv6 TargetGroupIPAddressType = "ipv6"
)

// ServiceReference names a Service of the binding's namespace and one of its ports.
type ServiceReference struct {
	// Name is the name of the Service.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// Port is the Service port: its number (port, not targetPort) or its name.
	// +kubebuilder:validation:XValidation:rule="type(self) != int || (self >= 1 && self <= 65535)",message="port must be a port name or a number between 1 and 65535"
	Port intstr.IntOrString `json:"port"`
}

// IPBlock is a CIDR source of a networking rule.
type IPBlock struct {
	// CIDR is an IPv4 or IPv6 CIDR.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be a valid IPv4 or IPv6 CIDR"
	CIDR string `json:"cidr"`
}

// SecurityGroup is a security-group source of a networking rule.
type SecurityGroup struct {
	// GroupID is the EC2 security group ID.
	// +kubebuilder:validation:Pattern=`^sg-[0-9a-f]+$`
	GroupID string `json:"groupID"`
}

// NetworkingPeer is the source of a networking rule: exactly one of ipBlock and securityGroup.
// +kubebuilder:validation:XValidation:rule="has(self.ipBlock) != has(self.securityGroup)",message="exactly one of ipBlock and securityGroup must be set"
type NetworkingPeer struct {
	// IPBlock is a CIDR source.
	// +optional
	IPBlock *IPBlock `json:"ipBlock,omitempty"`

	// SecurityGroup is a security-group source.
	// +optional
	SecurityGroup *SecurityGroup `json:"securityGroup,omitempty"`
}

// NetworkingProtocol is the protocol of a networking rule.
// +kubebuilder:validation:Enum=TCP;UDP
type NetworkingProtocol string

const (
	NetworkingProtocolTCP NetworkingProtocol = "TCP"
	NetworkingProtocolUDP NetworkingProtocol = "UDP"
)

// NetworkingPort is a protocol and a port of a networking rule.
type NetworkingPort struct {
	// Protocol the traffic must match; TCP when unset.
	// +optional
	Protocol *NetworkingProtocol `json:"protocol,omitempty"`

	// Port the traffic must match: a number, or (ip targets) the name of a container port.
	// All ports when unset.
	// +optional
	Port *intstr.IntOrString `json:"port,omitempty"`
}

// NetworkingIngressRule allows traffic from some peers to some ports of the targets.
type NetworkingIngressRule struct {
	// From lists the peers allowed to reach the targets.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=60
	From []NetworkingPeer `json:"from"`

	// Ports lists the ports opened on the targets; all TCP ports when empty.
	// +kubebuilder:validation:MaxItems=60
	Ports []NetworkingPort `json:"ports"`
}

// TargetGroupBindingNetworking lists the rules the controller writes on the targets' security
// groups so that the load balancer can reach them.
type TargetGroupBindingNetworking struct {
	// Ingress rules on the targets' security groups.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	Ingress []NetworkingIngressRule `json:"ingress,omitempty"`
}

// TargetGroupBindingSpec is the desired binding.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.targetType) || (has(self.targetType) && self.targetType == oldSelf.targetType)",message="targetType is immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.ipAddressType) || (has(self.ipAddressType) && self.ipAddressType == oldSelf.ipAddressType)",message="ipAddressType is immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.targetGroupProtocol) || (has(self.targetGroupProtocol) && self.targetGroupProtocol == oldSelf.targetGroupProtocol)",message="targetGroupProtocol is immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.vpcID) || size(oldSelf.vpcID) == 0 || (has(self.vpcID) && self.vpcID == oldSelf.vpcID)",message="vpcID is immutable"
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.targetType) || self.targetType == 'instance'",message="nodeSelector is only valid with targetType instance"
type TargetGroupBindingSpec struct {
	// TargetGroupARN is the ARN of the target group; it cannot change.
	// +kubebuilder:validation:Pattern=`^arn:[a-z0-9-]+:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="targetGroupARN is immutable"
	TargetGroupARN string `json:"targetGroupARN"`

	// MultiClusterTargetGroup says the target group is shared with other clusters: only the
	// targets this binding registered are deregistered.
	// +optional
	MultiClusterTargetGroup bool `json:"multiClusterTargetGroup,omitempty"`

	// TargetType is the target group's target type; read from the target group when unset.
	// +optional
	TargetType *TargetType `json:"targetType,omitempty"`

	// TargetGroupProtocol is the target group's protocol; read from the target group when unset.
	// +optional
	TargetGroupProtocol *TargetGroupProtocol `json:"targetGroupProtocol,omitempty"`

	// ServiceRef is the Service port whose endpoints are the targets.
	ServiceRef ServiceReference `json:"serviceRef"`

	// Networking says which rules to write on the targets' security groups; none when unset.
	// +optional
	Networking *TargetGroupBindingNetworking `json:"networking,omitempty"`

	// NodeSelector restricts instance targets to the nodes it selects.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// IPAddressType is the target group's IP address type; read from the target group when
	// unset.
	// +optional
	IPAddressType *TargetGroupIPAddressType `json:"ipAddressType,omitempty"`

	// VpcID is the target group's VPC; read from the target group when unset.
	// +optional
	// +kubebuilder:validation:Pattern=`^vpc-[0-9a-f]{8}([0-9a-f]{9})?$`
	VpcID string `json:"vpcID,omitempty"`
}

// TargetGroupBindingStatus is the observed state of a binding.
type TargetGroupBindingStatus struct {
	// ObservedGeneration is the generation the controller last reconciled.
	// +optional
	ObservedGeneration *int64 `json:"observedGeneration,omitempty"`
}

// TargetGroupBinding binds a target group to a Service port: the controller keeps the target
// group's targets equal to the Service's endpoints and writes the networking rules.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:resource:shortName=tgb
// +kubebuilder:printcolumn:name="SERVICE-NAME",type="string",JSONPath=".spec.serviceRef.name",description="The Kubernetes Service's name"
// +kubebuilder:printcolumn:name="SERVICE-PORT",type="string",JSONPath=".spec.serviceRef.port",description="The Kubernetes Service's port"
// +kubebuilder:printcolumn:name="TARGET-TYPE",type="string",JSONPath=".spec.targetType",description="The AWS TargetGroup's TargetType"
// +kubebuilder:printcolumn:name="ARN",type="string",JSONPath=".spec.targetGroupARN",description="The AWS TargetGroup's Amazon Resource Name",priority=1
// +kubebuilder:printcolumn:name="AGE",type="date",JSONPath=".metadata.creationTimestamp"
type TargetGroupBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TargetGroupBindingSpec   `json:"spec,omitempty"`
	Status TargetGroupBindingStatus `json:"status,omitempty"`
}

// TargetGroupBindingList is a list of TargetGroupBindings.
//
// +kubebuilder:object:root=true
type TargetGroupBindingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TargetGroupBinding `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TargetGroupBinding{}, &TargetGroupBindingList{})
}
