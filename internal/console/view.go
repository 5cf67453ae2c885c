package console

// The view structs are what the console shows, as plain data: moat lb builds them from its
// state, its data plane's target health and its metrics (see Config.Snapshot), so that this
// package knows neither the store nor the data plane.

// Snapshot is moat lb's state as the console shows it.
type Snapshot struct {
	LoadBalancers  []LoadBalancer  `json:"loadBalancers"`
	SecurityGroups []SecurityGroup `json:"securityGroups"`
	Interfaces     []Interface     `json:"interfaces"`
	// ListenerFlowLog is empty where clients denied at a listener reach the flow log one by one,
	// or says why they do not; they are counted per listener either way.
	ListenerFlowLog string `json:"listenerFlowLog,omitempty"`
	// InstanceFlowLog is empty where denied flows to instances reach the flow log one by one,
	// or says why they do not (the instance firewall is off, or moat lb may not run it).
	InstanceFlowLog string `json:"instanceFlowLog,omitempty"`
}

// LoadBalancer is a network load balancer with its listeners.
type LoadBalancer struct {
	ARN            string     `json:"arn"`
	Name           string     `json:"name"`
	DNSName        string     `json:"dnsName"`
	Scheme         string     `json:"scheme"`
	State          string     `json:"state"`
	StateReason    string     `json:"stateReason,omitempty"`
	Addresses      []string   `json:"addresses"`
	SecurityGroups []string   `json:"securityGroups"`
	Listeners      []Listener `json:"listeners"`
}

// Listener is a listener, the target group it forwards to and what its flows met.
type Listener struct {
	ARN         string        `json:"arn"`
	Protocol    string        `json:"protocol"`
	Port        int           `json:"port"`
	TargetGroup *TargetGroup  `json:"targetGroup,omitempty"`
	Flows       ListenerFlows `json:"flows"`
}

// ListenerFlows count a listener's flows since moat lb started, from the data plane's metrics.
type ListenerFlows struct {
	Admitted uint64 `json:"admitted"`
	// Denied* are flows the data plane saw and refused, by reason: these are in the flow log.
	DeniedSecurityGroup uint64 `json:"deniedSecurityGroup"`
	DeniedNoTarget      uint64 `json:"deniedNoTarget"`
	DeniedFlowLimit     uint64 `json:"deniedFlowLimit"`
	// KernelDropped are packets (SYNs, their retransmissions, datagrams) the listener's socket
	// filter dropped in the kernel: denied clients the kernel does not name.
	KernelDropped uint64 `json:"kernelDropped"`
}

// TargetGroup is a target group with its targets' health.
type TargetGroup struct {
	ARN        string   `json:"arn"`
	Name       string   `json:"name"`
	Protocol   string   `json:"protocol"`
	Port       int      `json:"port"`
	TargetType string   `json:"targetType"`
	Targets    []Target `json:"targets"`
}

// Target is a registered target and its health as the data plane reports it.
type Target struct {
	ID          string `json:"id"`
	Address     string `json:"address,omitempty"`
	Port        int    `json:"port"`
	Zone        string `json:"zone,omitempty"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	Description string `json:"description,omitempty"`
}

// SecurityGroup is a group with its rules and who uses and references it.
type SecurityGroup struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	VPCID       string `json:"vpcId"`
	Inbound     []Rule `json:"inbound"`
	Outbound    []Rule `json:"outbound"`
	// ReferencedBy are the groups with a rule naming this group as its peer.
	ReferencedBy []string `json:"referencedBy"`
	// UsedBy are the load balancers (by name) and interfaces (by ID) the group is attached to.
	UsedBy []string `json:"usedBy"`
}

// Rule is one security group rule.
type Rule struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"` // tcp, udp, icmp, all, or a number
	Ports    string `json:"ports"`    // "8080", "1024-65535" or "all"
	// Peer is the source (inbound) or destination (outbound): a CIDR, a group ID or a prefix
	// list ID.
	Peer        string `json:"peer"`
	Description string `json:"description,omitempty"`
}

// Interface is a network interface with its groups.
type Interface struct {
	ID        string   `json:"id"`
	Instance  string   `json:"instance,omitempty"`
	Addresses []string `json:"addresses"`
	Groups    []string `json:"groups"`
}
