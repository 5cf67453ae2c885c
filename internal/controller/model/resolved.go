package model

// Resolved carries the facts the AWS controller looks up in AWS before it builds the model.
// The deploy stage fills it (guided by Prepare), so that Build stays pure.
type Resolved struct {
	// ExistingLoadBalancer is the load balancer already tagged for this Service, if any. It
	// decides the scheme when no annotation sets it, and whether the load balancer keeps
	// working without security groups.
	ExistingLoadBalancer *ExistingLoadBalancer `json:"existingLoadBalancer,omitempty"`
	// Subnets are the load balancer's subnets, in the order chosen (by annotation, from the
	// existing load balancer, or by discovery: one per zone).
	Subnets []Subnet `json:"subnets"`
	// VPC is the cluster VPC's CIDRs; needed only without security groups (internal load
	// balancers with UDP or client IP preservation and no source ranges).
	VPC *VPC `json:"vpc,omitempty"`
	// BackendSecurityGroupID is the shared backend group's ID (--backend-security-group, or the
	// group found by its tags or created); needed when Prepare says so.
	BackendSecurityGroupID string `json:"backendSecurityGroupID,omitempty"`
	// SecurityGroupsByName maps each non-ID entry of the security-groups annotation (a Name
	// tag) to the IDs of the VPC's groups with that Name, as DescribeSecurityGroups found them.
	SecurityGroupsByName map[string][]string `json:"securityGroupsByName,omitempty"`
	// PrefixListMaxEntries gives the max entries of prefix lists named by annotation, if
	// known: AWS counts a prefix-list rule as that many rules.
	PrefixListMaxEntries map[string]int `json:"prefixListMaxEntries,omitempty"`
}

// ExistingLoadBalancer is what the build needs to know about the Service's load balancer when
// it already exists.
type ExistingLoadBalancer struct {
	Scheme         Scheme   `json:"scheme"`
	SecurityGroups []string `json:"securityGroups,omitempty"`
	SubnetIDs      []string `json:"subnetIDs,omitempty"`
}

// Subnet is a subnet of the load balancer.
type Subnet struct {
	ID               string   `json:"id"`
	AvailabilityZone string   `json:"availabilityZone,omitempty"`
	IPv4CIDR         string   `json:"ipv4CIDR,omitempty"`
	IPv6CIDRs        []string `json:"ipv6CIDRs,omitempty"`
}

// VPC is the cluster VPC's associated CIDRs.
type VPC struct {
	IPv4CIDRs []string `json:"ipv4CIDRs"`
	IPv6CIDRs []string `json:"ipv6CIDRs,omitempty"`
}
