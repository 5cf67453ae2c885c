package model

import (
	"fmt"
	"slices"
	"strings"
)

// Feature gates the model builder and the deployer consult, with the AWS Load Balancer
// Controller's names.
const (
	GateNLBSecurityGroup             = "NLBSecurityGroup"
	GateEnableTCPUDPListener         = "EnableTCPUDPListener"
	GateEnableIPTargetType           = "EnableIPTargetType"
	GateNLBHealthCheckAdvancedConfig = "NLBHealthCheckAdvancedConfig"
	GateServiceTypeLoadBalancerOnly  = "ServiceTypeLoadBalancerOnly"
	GateEnableDefaultTagsLowPriority = "EnableDefaultTagsLowPriority"
	GateLBCapacityReservation        = "LBCapacityReservation"
	// GateEnableRGTAPI makes the deployer find load balancers and target groups by their tags
	// with the Resource Groups Tagging API instead of describing every one in the region.
	GateEnableRGTAPI = "EnableRGTAPI"
)

// gateDefaults are the AWS controller's defaults (lbc-help.txt) for the gates above.
var gateDefaults = map[string]bool{
	GateNLBSecurityGroup:             true,
	GateEnableTCPUDPListener:         false,
	GateEnableIPTargetType:           true,
	GateNLBHealthCheckAdvancedConfig: true,
	GateServiceTypeLoadBalancerOnly:  false,
	GateEnableDefaultTagsLowPriority: false,
	GateLBCapacityReservation:        true,
	GateEnableRGTAPI:                 false,
}

// FeatureGates holds the --feature-gates overrides; a gate not in the map has the AWS
// controller's default, so the zero value means "all defaults".
type FeatureGates map[string]bool

// Enabled reports whether a gate is on.
func (g FeatureGates) Enabled(gate string) bool {
	if v, ok := g[gate]; ok {
		return v
	}
	return gateDefaults[gate]
}

// Defaults of the AWS controller's flags that the builder uses.
const (
	DefaultLoadBalancerClass = "service.k8s.aws/nlb"
	// ServiceFinalizer is the finalizer the AWS controller puts on Services it provisioned.
	ServiceFinalizer = "service.k8s.aws/resources"
)

// Config is the cluster-level input of the model builder: the controller's flags, by the AWS
// Load Balancer Controller's names. Start from DefaultConfig: some defaults are true.
type Config struct {
	// ClusterName is --cluster-name (required); it seeds every generated name.
	ClusterName string `json:"clusterName"`
	// VPCID is --aws-vpc-id; it goes into every TargetGroupBinding.
	VPCID string `json:"vpcID"`
	// Region is --aws-region (not used by the pure build; carried for the deploy stage).
	Region string `json:"region,omitempty"`
	// LoadBalancerClass is --load-balancer-class.
	LoadBalancerClass string `json:"loadBalancerClass"`
	// FeatureGates is --feature-gates.
	FeatureGates FeatureGates `json:"featureGates,omitempty"`
	// DefaultTargetType is --default-target-type: "instance" or "ip".
	DefaultTargetType TargetType `json:"defaultTargetType"`
	// DefaultScheme is --default-load-balancer-scheme.
	DefaultScheme Scheme `json:"defaultScheme"`
	// DefaultSSLPolicy is --default-ssl-policy: the TLS listeners' policy when the
	// ssl-negotiation-policy annotation does not name one.
	DefaultSSLPolicy string `json:"defaultSSLPolicy"`
	// BackendSecurityGroup is --backend-security-group: a group ID used as the shared backend
	// group instead of the auto-created one.
	BackendSecurityGroup string `json:"backendSecurityGroup,omitempty"`
	// EnableBackendSecurityGroup is --enable-backend-security-group (default true).
	EnableBackendSecurityGroup bool `json:"enableBackendSecurityGroup"`
	// EnableManageBackendSecurityGroupRules is --enable-manage-backend-security-group-rules:
	// the default of the manage-backend-security-group-rules annotation when the frontend
	// groups are named by annotation.
	EnableManageBackendSecurityGroupRules bool `json:"enableManageBackendSecurityGroupRules"`
	// DisableRestrictedSGRules is --disable-restricted-sg-rules: backend rules open all ports.
	DisableRestrictedSGRules bool `json:"disableRestrictedSGRules"`
	// DefaultTags is --default-tags, applied to every AWS resource.
	DefaultTags map[string]string `json:"defaultTags,omitempty"`
	// ExternalManagedTags is --external-managed-tags: tag keys Services may not set.
	ExternalManagedTags []string `json:"externalManagedTags,omitempty"`
	// Quotas are the AWS quotas checked before any call; zero means AWS's default.
	Quotas Quotas `json:"quotas,omitempty"`
}

// Quotas are the adjustable AWS quotas that the builder checks, so that a Service exceeding
// them builds nothing instead of failing half-way through a deploy.
type Quotas struct {
	// SecurityGroupsPerLoadBalancer defaults to 5.
	SecurityGroupsPerLoadBalancer int `json:"securityGroupsPerLoadBalancer,omitempty"`
	// InboundRulesPerSecurityGroup defaults to 60, counted separately for IPv4 and IPv6 rules
	// as AWS does (a prefix-list rule counts as its max entries when known, else as one).
	InboundRulesPerSecurityGroup int `json:"inboundRulesPerSecurityGroup,omitempty"`
}

func (q Quotas) securityGroupsPerLoadBalancer() int {
	if q.SecurityGroupsPerLoadBalancer > 0 {
		return q.SecurityGroupsPerLoadBalancer
	}
	return 5
}

func (q Quotas) inboundRulesPerSecurityGroup() int {
	if q.InboundRulesPerSecurityGroup > 0 {
		return q.InboundRulesPerSecurityGroup
	}
	return 60
}

// DefaultConfig returns the AWS controller's flag defaults for a cluster.
// DefaultSSLPolicy is the AWS controller's --default-ssl-policy.
const DefaultSSLPolicy = "ELBSecurityPolicy-2016-08"

func DefaultConfig(clusterName, vpcID string) Config {
	return Config{
		ClusterName:                clusterName,
		VPCID:                      vpcID,
		LoadBalancerClass:          DefaultLoadBalancerClass,
		DefaultTargetType:          TargetTypeInstance,
		DefaultScheme:              SchemeInternal,
		DefaultSSLPolicy:           DefaultSSLPolicy,
		EnableBackendSecurityGroup: true,
	}
}

// Validate checks the configuration as the AWS controller does at start-up.
func (c Config) Validate() error {
	var problems []string
	if c.ClusterName == "" {
		problems = append(problems, "cluster name (--cluster-name) must be set")
	}
	if c.LoadBalancerClass == "" {
		problems = append(problems, "--load-balancer-class must not be empty")
	}
	if c.DefaultTargetType != TargetTypeInstance && c.DefaultTargetType != TargetTypeIP {
		problems = append(problems, fmt.Sprintf("--default-target-type %q must be instance or ip", c.DefaultTargetType))
	}
	if c.DefaultScheme != SchemeInternal && c.DefaultScheme != SchemeInternetFacing {
		problems = append(problems, fmt.Sprintf("--default-load-balancer-scheme %q must be internal or internet-facing", c.DefaultScheme))
	}
	if c.BackendSecurityGroup != "" && !strings.HasPrefix(c.BackendSecurityGroup, "sg-") {
		problems = append(problems, fmt.Sprintf("--backend-security-group %q must be a security group ID (sg-...)", c.BackendSecurityGroup))
	}
	if c.EnableManageBackendSecurityGroupRules && !c.EnableBackendSecurityGroup {
		problems = append(problems, "--enable-manage-backend-security-group-rules requires --enable-backend-security-group")
	}
	for k := range c.DefaultTags {
		if slices.Contains(c.ExternalManagedTags, k) {
			problems = append(problems, fmt.Sprintf("--default-tags key %q is also in --external-managed-tags", k))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems)
	return &Error{Kind: KindConfig, Reason: "invalid controller configuration: " + strings.Join(problems, "; ")}
}
