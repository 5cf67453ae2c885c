// Package annotations reads the service.beta.kubernetes.io annotations that the AWS Load
// Balancer Controller honours on Services, as typed values. Every error names the annotation
// and the offending value, so that a reconciler can put it in a Warning Event as it is.
package annotations

// Prefix is the only annotation prefix honoured on Services, as in the AWS Load Balancer
// Controller.
const Prefix = "service.beta.kubernetes.io"

// Annotation suffixes (the part after "service.beta.kubernetes.io/"), with the AWS Load
// Balancer Controller's names and meanings.
const (
	LoadBalancerType                   = "aws-load-balancer-type"
	TargetType                         = "aws-load-balancer-nlb-target-type"
	Scheme                             = "aws-load-balancer-scheme"
	Internal                           = "aws-load-balancer-internal"
	LoadBalancerName                   = "aws-load-balancer-name"
	IPAddressType                      = "aws-load-balancer-ip-address-type"
	Subnets                            = "aws-load-balancer-subnets"
	EIPAllocations                     = "aws-load-balancer-eip-allocations"
	PrivateIPv4Addresses               = "aws-load-balancer-private-ipv4-addresses"
	IPv6Addresses                      = "aws-load-balancer-ipv6-addresses"
	EnablePrefixForIPv6SourceNat       = "aws-load-balancer-enable-prefix-for-ipv6-source-nat"
	SourceNatIPv6Prefixes              = "aws-load-balancer-source-nat-ipv6-prefixes"
	SourceRanges                       = "load-balancer-source-ranges"
	SecurityGroupPrefixLists           = "aws-load-balancer-security-group-prefix-lists"
	SecurityGroups                     = "aws-load-balancer-security-groups"
	ManageBackendSecurityGroupRules    = "aws-load-balancer-manage-backend-security-group-rules"
	DisableNLBSecurityGroup            = "aws-load-balancer-disable-nlb-sg"
	EnableICMPForPathMTUDiscovery      = "aws-load-balancer-enable-icmp-for-path-mtu-discovery"
	InboundSGRulesOnPrivateLinkTraffic = "aws-load-balancer-inbound-sg-rules-on-private-link-traffic"
	HealthCheckProtocol                = "aws-load-balancer-healthcheck-protocol"
	HealthCheckPort                    = "aws-load-balancer-healthcheck-port"
	HealthCheckPath                    = "aws-load-balancer-healthcheck-path"
	HealthCheckInterval                = "aws-load-balancer-healthcheck-interval"
	HealthCheckTimeout                 = "aws-load-balancer-healthcheck-timeout"
	HealthCheckHealthyThreshold        = "aws-load-balancer-healthcheck-healthy-threshold"
	HealthCheckUnhealthyThreshold      = "aws-load-balancer-healthcheck-unhealthy-threshold"
	HealthCheckSuccessCodes            = "aws-load-balancer-healthcheck-success-codes"
	TargetGroupAttributes              = "aws-load-balancer-target-group-attributes" // also ".<port>"
	ProxyProtocol                      = "aws-load-balancer-proxy-protocol"
	ProxyProtocolPerTargetGroup        = "aws-load-balancer-proxy-protocol-per-target-group"
	AdditionalResourceTags             = "aws-load-balancer-additional-resource-tags"
	LoadBalancerAttributes             = "aws-load-balancer-attributes"
	AccessLogEnabled                   = "aws-load-balancer-access-log-enabled"
	AccessLogS3BucketName              = "aws-load-balancer-access-log-s3-bucket-name"
	AccessLogS3BucketPrefix            = "aws-load-balancer-access-log-s3-bucket-prefix"
	CrossZoneLoadBalancingEnabled      = "aws-load-balancer-cross-zone-load-balancing-enabled"
	SSLCertificate                     = "aws-load-balancer-ssl-cert"
	SSLPorts                           = "aws-load-balancer-ssl-ports"
	SSLNegotiationPolicy               = "aws-load-balancer-ssl-negotiation-policy"
	BackendProtocol                    = "aws-load-balancer-backend-protocol"
	ALPNPolicy                         = "aws-load-balancer-alpn-policy"
	TargetNodeLabels                   = "aws-load-balancer-target-node-labels"
	ListenerAttributesPrefix           = "aws-load-balancer-listener-attributes" // ".<PROTOCOL>-<port>"
	MultiClusterTargetGroup            = "aws-load-balancer-multi-cluster-target-group"
	MinimumLoadBalancerCapacity        = "aws-load-balancer-minimum-load-balancer-capacity"
	EnableTCPUDPListener               = "aws-load-balancer-enable-tcp-udp-listener"
	QUICEnabledPorts                   = "aws-load-balancer-quic-enabled-ports"
	ActionsPrefix                      = "actions." // "actions.<PROTOCOL>-<port>", JSON
)

// Key returns the full annotation key for a suffix, e.g. Key(Scheme) is
// "service.beta.kubernetes.io/aws-load-balancer-scheme".
func Key(suffix string) string { return Prefix + "/" + suffix }
