package model

import (
	"encoding/json"
	"errors"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Enumerations, with AWS's spellings.
type (
	Scheme            string
	IPAddressType     string
	TargetType        string
	Protocol          string
	SecurityGroupMode string
)

const (
	SchemeInternal       Scheme = "internal"
	SchemeInternetFacing Scheme = "internet-facing"

	IPAddressTypeIPv4      IPAddressType = "ipv4"
	IPAddressTypeDualStack IPAddressType = "dualstack"
	IPAddressTypeIPv6      IPAddressType = "ipv6" // target groups only

	TargetTypeInstance TargetType = "instance"
	TargetTypeIP       TargetType = "ip"

	ProtocolTCP     Protocol = "TCP"
	ProtocolUDP     Protocol = "UDP"
	ProtocolTCPUDP  Protocol = "TCP_UDP"
	ProtocolTLS     Protocol = "TLS"
	ProtocolQUIC    Protocol = "QUIC"
	ProtocolTCPQUIC Protocol = "TCP_QUIC"
	ProtocolHTTP    Protocol = "HTTP"
	ProtocolHTTPS   Protocol = "HTTPS"

	// SecurityGroupsManaged: the controller creates the frontend group (and attaches the
	// backend group, if enabled).
	SecurityGroupsManaged SecurityGroupMode = "managed"
	// SecurityGroupsUser: the frontend groups are named by annotation.
	SecurityGroupsUser SecurityGroupMode = "user"
	// SecurityGroupsNone: the load balancer has no security groups (gate off, disable-nlb-sg,
	// or an existing load balancer created without them); backend rules are CIDR based.
	SecurityGroupsNone SecurityGroupMode = "none"
)

// Resource IDs and types, as the AWS controller's stack uses them; the resource ID is also the
// value of the service.k8s.aws/resource tag.
const (
	ResourceIDLoadBalancer         = "LoadBalancer"
	ResourceIDManagedSecurityGroup = "ManagedLBSecurityGroup"

	resourceTypeSecurityGroup = "AWS::EC2::SecurityGroup"
	resourceTypeLoadBalancer  = "AWS::ElasticLoadBalancingV2::LoadBalancer"
	resourceTypeTargetGroup   = "AWS::ElasticLoadBalancingV2::TargetGroup"
)

// Tracking tag and label keys of the AWS controller, by which the deploy stage finds what it
// created.
const (
	TagCluster             = "elbv2.k8s.aws/cluster"
	TagStack               = "service.k8s.aws/stack"
	TagResource            = "service.k8s.aws/resource"
	TagBackendSGResource   = "elbv2.k8s.aws/resource"
	BackendSGResourceValue = "backend-sg"
	LabelStackNamespace    = "service.k8s.aws/stack-namespace"
	LabelStackName         = "service.k8s.aws/stack-name"
	// TargetGroupBindingRuleDescription is the description (and label) the
	// TargetGroupBinding networking reconciler puts on every rule it writes on node and
	// pod-ENI groups; only rules carrying it are ever revoked.
	TargetGroupBindingRuleDescription = "elbv2.k8s.aws/targetGroupBinding=shared"
)

// Stack is the desired state of one Service: every resource the deploy stage must make exist,
// with the tags by which it finds them again. An empty stack (no LoadBalancer) means "delete
// everything this Service owns".
type Stack struct {
	// ID is "<namespace>/<name>", the value of the service.k8s.aws/stack tag.
	ID string `json:"id"`
	// SecurityGroupMode says how the load balancer's groups were chosen.
	SecurityGroupMode SecurityGroupMode `json:"securityGroupMode,omitempty"`
	// LoadBalancer is nil in an empty stack.
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	// ManagedSecurityGroup is the frontend group the controller owns, if any.
	ManagedSecurityGroup *SecurityGroup `json:"managedSecurityGroup,omitempty"`
	// BackendSecurityGroup is the shared backend group, when this load balancer uses it. When
	// nil, the reconciler releases this Service's claim on the backend group.
	BackendSecurityGroup *BackendSecurityGroup `json:"backendSecurityGroup,omitempty"`
	// Listeners, sorted by port.
	Listeners []Listener `json:"listeners,omitempty"`
	// TargetGroups, in Service port order.
	TargetGroups []TargetGroup `json:"targetGroups,omitempty"`
	// TargetGroupBindings, one per target group, in the same order.
	TargetGroupBindings []TargetGroupBinding `json:"targetGroupBindings,omitempty"`
}

// Token is a string that is either known now (a literal) or the field of another resource in
// the stack that the deploy stage fills in (a reference, like the AWS controller's
// StringToken). It marshals as a string or as {"$ref": "..."}.
type Token struct {
	Literal string
	Ref     string
}

// Literal returns a Token for a known value.
func Literal(s string) Token { return Token{Literal: s} }

func ref(resourceType, id, field string) Token {
	return Token{Ref: "#/resources/" + resourceType + "/" + id + "/" + field}
}

// ManagedSecurityGroupIDRef is the reference to the managed frontend group's ID.
var ManagedSecurityGroupIDRef = ref(resourceTypeSecurityGroup, ResourceIDManagedSecurityGroup, "status/groupID")

// LoadBalancerARNRef is the reference to the load balancer's ARN.
var LoadBalancerARNRef = ref(resourceTypeLoadBalancer, ResourceIDLoadBalancer, "status/loadBalancerARN")

// TargetGroupARNRef is the reference to a target group's ARN.
func TargetGroupARNRef(resourceID string) Token {
	return ref(resourceTypeTargetGroup, resourceID, "status/targetGroupARN")
}

// IsRef reports whether the token refers to another resource.
func (t Token) IsRef() bool { return t.Ref != "" }

func (t Token) MarshalJSON() ([]byte, error) {
	if t.Ref != "" {
		return json.Marshal(map[string]string{"$ref": t.Ref})
	}
	return json.Marshal(t.Literal)
}

func (t *Token) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*t = Token{Literal: s}
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if m["$ref"] == "" {
		return errors.New("token: want a string or {\"$ref\": ...}")
	}
	*t = Token{Ref: m["$ref"]}
	return nil
}

// Attribute is a key/value attribute of a load balancer, listener or target group.
type Attribute struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// LoadBalancer is the desired network load balancer.
type LoadBalancer struct {
	ResourceID    string          `json:"resourceID"`
	Name          string          `json:"name"`
	Type          string          `json:"type"`
	Scheme        Scheme          `json:"scheme"`
	IPAddressType IPAddressType   `json:"ipAddressType"`
	SubnetMapping []SubnetMapping `json:"subnetMapping"`
	// SecurityGroups in order: the managed group or the named groups first, the backend group
	// last. Empty means a load balancer without security groups.
	SecurityGroups []Token `json:"securityGroups,omitempty"`
	// SecurityGroupsInboundRulesOnPrivateLink is "on" or "off" when the annotation sets it
	// (EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic, applied with SetSecurityGroups).
	SecurityGroupsInboundRulesOnPrivateLink string `json:"securityGroupsInboundRulesOnPrivateLink,omitempty"`
	// EnablePrefixForIPv6SourceNat is "on" or "off" when the annotation sets it.
	EnablePrefixForIPv6SourceNat string            `json:"enablePrefixForIpv6SourceNat,omitempty"`
	MinimumCapacity              *Capacity         `json:"minimumLoadBalancerCapacity,omitempty"`
	Attributes                   []Attribute       `json:"loadBalancerAttributes,omitempty"`
	Tags                         map[string]string `json:"tags"`
}

// Capacity is a load balancer capacity reservation.
type Capacity struct {
	CapacityUnits int32 `json:"capacityUnits"`
}

// SubnetMapping is one subnet of the load balancer, with its optional fixed addresses.
type SubnetMapping struct {
	SubnetID            string `json:"subnetID"`
	AllocationID        string `json:"allocationID,omitempty"`
	PrivateIPv4Address  string `json:"privateIPv4Address,omitempty"`
	IPv6Address         string `json:"ipv6Address,omitempty"`
	SourceNatIPv6Prefix string `json:"sourceNatIPv6Prefix,omitempty"`
}

// SecurityGroup is the managed frontend group. The deploy stage must make its inbound rules
// exactly these (revoking any other), and leave its outbound rules alone.
type SecurityGroup struct {
	ResourceID  string            `json:"resourceID"`
	GroupName   string            `json:"groupName"`
	Description string            `json:"description"`
	Tags        map[string]string `json:"tags"`
	Ingress     []IPPermission    `json:"ingress"`
}

// IPPermission is one inbound rule: a protocol, a port range and exactly one source.
type IPPermission struct {
	IPProtocol  string       `json:"ipProtocol"`
	FromPort    int32        `json:"fromPort"`
	ToPort      int32        `json:"toPort"`
	IPRanges    []IPRange    `json:"ipRanges,omitempty"`
	IPv6Ranges  []IPv6Range  `json:"ipv6Ranges,omitempty"`
	PrefixLists []PrefixList `json:"prefixLists,omitempty"`
}

// IPRange is an IPv4 source.
type IPRange struct {
	CIDRIP      string `json:"cidrIP"`
	Description string `json:"description,omitempty"`
}

// IPv6Range is an IPv6 source.
type IPv6Range struct {
	CIDRIPv6    string `json:"cidrIPv6"`
	Description string `json:"description,omitempty"`
}

// PrefixList is a managed prefix list source.
type PrefixList struct {
	ListID      string `json:"listID"`
	Description string `json:"description,omitempty"`
}

// BackendSecurityGroup is the cluster's shared backend group. It has no rules of its own: it
// is the source of the rules written on node and pod-ENI groups.
type BackendSecurityGroup struct {
	// GroupID is the resolved ID (from --backend-security-group or found/created by tags);
	// empty in a Plan when the deploy stage still has to find or create the group.
	GroupID string `json:"groupID,omitempty"`
	// AutoCreated is false when the group comes from --backend-security-group: the controller
	// then never creates, tags or deletes it.
	AutoCreated bool `json:"autoCreated"`
	// GroupName, Description and Tags describe the auto-created group (find it by Tags).
	GroupName   string            `json:"groupName,omitempty"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// Listener is one listener (one per Service port, or per merged TCP+UDP port).
type Listener struct {
	ResourceID      string   `json:"resourceID"`
	LoadBalancerARN Token    `json:"loadBalancerARN"`
	Port            int32    `json:"port"`
	Protocol        Protocol `json:"protocol"`
	// TLS listeners only: the certificates (the first is the default one), the SSL policy and
	// the ALPN policy.
	Certificates   []string          `json:"certificates,omitempty"`
	SSLPolicy      string            `json:"sslPolicy,omitempty"`
	ALPNPolicy     []string          `json:"alpnPolicy,omitempty"`
	DefaultActions []Action          `json:"defaultActions"`
	Attributes     []Attribute       `json:"listenerAttributes,omitempty"`
	Tags           map[string]string `json:"tags"`
}

// Action is a listener's default action; NLB listeners forward.
type Action struct {
	Type          string         `json:"type"`
	ForwardConfig *ForwardConfig `json:"forwardConfig,omitempty"`
}

// ForwardConfig lists the target groups a forward action sends to.
type ForwardConfig struct {
	TargetGroups []TargetGroupTuple `json:"targetGroups"`
}

// TargetGroupTuple is one target group of a forward action.
type TargetGroupTuple struct {
	TargetGroupARN Token  `json:"targetGroupARN"`
	Weight         *int32 `json:"weight,omitempty"`
}

// TargetGroup is one target group (one per listener).
type TargetGroup struct {
	ResourceID    string            `json:"resourceID"`
	Name          string            `json:"name"`
	TargetType    TargetType        `json:"targetType"`
	Port          int32             `json:"port"`
	Protocol      Protocol          `json:"protocol"`
	IPAddressType IPAddressType     `json:"ipAddressType"`
	HealthCheck   HealthCheck       `json:"healthCheckConfig"`
	Attributes    []Attribute       `json:"targetGroupAttributes"`
	Tags          map[string]string `json:"tags"`
}

// HealthCheck is a target group's health check.
type HealthCheck struct {
	// Port is "traffic-port" or a port number.
	Port                    intstr.IntOrString `json:"port"`
	Protocol                Protocol           `json:"protocol"`
	Path                    string             `json:"path,omitempty"`
	Matcher                 *Matcher           `json:"matcher,omitempty"`
	IntervalSeconds         int32              `json:"intervalSeconds"`
	TimeoutSeconds          int32              `json:"timeoutSeconds"`
	HealthyThresholdCount   int32              `json:"healthyThresholdCount"`
	UnhealthyThresholdCount int32              `json:"unhealthyThresholdCount"`
}

// Matcher is the HTTP codes of a successful HTTP(S) health check.
type Matcher struct {
	HTTPCode string `json:"httpCode"`
}

// TargetGroupBinding is the desired TargetGroupBinding object (elbv2.k8s.aws/v1beta1): it
// binds the target group to the Service's endpoints, and its networking section says which
// rules to write on the targets' security groups.
type TargetGroupBinding struct {
	ResourceID string                 `json:"resourceID"`
	Name       string                 `json:"name"`
	Namespace  string                 `json:"namespace"`
	Labels     map[string]string      `json:"labels"`
	Spec       TargetGroupBindingSpec `json:"spec"`
}

// TargetGroupBindingSpec is the spec of a TargetGroupBinding.
type TargetGroupBindingSpec struct {
	TargetGroupARN          Token             `json:"targetGroupARN"`
	TargetType              TargetType        `json:"targetType"`
	ServiceRef              ServiceReference  `json:"serviceRef"`
	Networking              *Networking       `json:"networking,omitempty"`
	NodeSelector            map[string]string `json:"nodeSelector,omitempty"` // matchLabels
	IPAddressType           IPAddressType     `json:"ipAddressType"`
	VPCID                   string            `json:"vpcID"`
	MultiClusterTargetGroup bool              `json:"multiClusterTargetGroup,omitempty"`
	TargetGroupProtocol     Protocol          `json:"targetGroupProtocol"`
}

// ServiceReference names the Service port whose endpoints are the targets.
type ServiceReference struct {
	Name string             `json:"name"`
	Port intstr.IntOrString `json:"port"`
}

// Networking is the ingress the TargetGroupBinding controller must allow on the targets'
// security groups. Nil means the controller writes no rules.
type Networking struct {
	Ingress []NetworkingIngressRule `json:"ingress"`
}

// NetworkingIngressRule allows traffic from peers on ports.
type NetworkingIngressRule struct {
	From  []NetworkingPeer `json:"from"`
	Ports []NetworkingPort `json:"ports"`
}

// NetworkingPeer is a source: a security group or a CIDR.
type NetworkingPeer struct {
	SecurityGroup *PeerSecurityGroup `json:"securityGroup,omitempty"`
	IPBlock       *IPBlock           `json:"ipBlock,omitempty"`
}

// PeerSecurityGroup is a security-group source.
type PeerSecurityGroup struct {
	GroupID Token `json:"groupID"`
}

// IPBlock is a CIDR source.
type IPBlock struct {
	CIDR string `json:"cidr"`
}

// NetworkingPort is a protocol and a port; a nil Port means all ports. A named Port (ip
// targets with a named targetPort) is resolved per pod by the TargetGroupBinding controller.
type NetworkingPort struct {
	Protocol string              `json:"protocol"`
	Port     *intstr.IntOrString `json:"port,omitempty"`
}
