package lb

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
)

// regionPattern is the shape of AWS region names: a two-letter area, one or more words, a number
// (us-east-1, eu-central-2, us-gov-west-1, us-isob-east-1).
var regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// accountIDPattern is an AWS account ID: exactly 12 digits.
var accountIDPattern = regexp.MustCompile(`^[0-9]{12}$`)

// Room the longest load balancer DNS name needs in front of the zone apex elb.<region>.<suffix>:
// a zone label (up to the 63 a label may have) and the <name>-<16 hex> label of a name of up to 32
// characters, each with its dot.
const lbNameRoom = (63 + 1) + (32 + 1 + 16 + 1)

// maxDNSName is the longest DNS name in its text form, without the final dot (RFC 1035: 255
// octets on the wire).
const maxDNSName = 253

// Validate checks the configuration as AWS would check the same values, naming the flag of
// `moat lb` (and `moat up`) that sets a bad one. Zero Quotas and zero API limits stand for the
// defaults; any other value must hold up on its own.
func (cfg Config) Validate() error {
	if !regionPattern.MatchString(cfg.Region) {
		return fmt.Errorf("--region %q: not an AWS region name such as us-east-1 or us-gov-west-1 (lower-case words and a number, joined by hyphens)", cfg.Region)
	}
	if !accountIDPattern.MatchString(cfg.AccountID) {
		return fmt.Errorf("--account-id %q: an AWS account ID is exactly 12 digits", cfg.AccountID)
	}
	if err := validateDNSSuffix(cfg.DNSSuffix, cfg.Region); err != nil {
		return err
	}
	if err := cfg.validateStore(); err != nil {
		return err
	}
	if err := validateZoneLeaseTTL(cfg.ZoneLeaseTTL); err != nil {
		return err
	}
	if _, ok := firewall.ParseMode(string(cfg.InstanceSGMode)); !ok && cfg.InstanceSGMode != "" {
		return fmt.Errorf("--instance-sg-mode %q: want enforce, audit or off", cfg.InstanceSGMode)
	}
	if cfg.MaxFlowsPerListener < 0 {
		return fmt.Errorf("--max-flows-per-listener %d: a cap is at least 1 (0: a quarter of the open-file limit)", cfg.MaxFlowsPerListener)
	}
	if cfg.Quotas != (cloud.Quotas{}) {
		for _, q := range QuotaFlags(&cfg.Quotas) {
			if *q.Value < 1 {
				return fmt.Errorf("--%s %d: a quota is at least 1", q.Name, *q.Value)
			}
		}
	}
	return cfg.API.validate()
}

// validateDNSSuffix checks that suffix is a DNS name (labels of 1 to 63 letters, digits and
// hyphens, not starting or ending with a hyphen) that leaves room for every load balancer name
// under elb.<region>.<suffix>.
func validateDNSSuffix(suffix, region string) error {
	bad := func(why string, args ...any) error {
		return fmt.Errorf("--dns-suffix %q: %s", suffix, fmt.Sprintf(why, args...))
	}
	if suffix == "" {
		return bad("empty; want a DNS name such as moat.internal")
	}
	if strings.HasPrefix(suffix, ".") || strings.HasSuffix(suffix, ".") {
		return bad("write the name without a leading or trailing dot, such as moat.internal")
	}
	for _, label := range strings.Split(suffix, ".") {
		switch {
		case label == "":
			return bad("has an empty label (two dots in a row)")
		case len(label) > 63:
			return bad("label %q is longer than 63 characters", label)
		case strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-"):
			return bad("label %q starts or ends with a hyphen", label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return bad("label %q has %q; labels hold letters, digits and hyphens", label, r)
			}
		}
	}
	apex := len("elb.") + len(region) + 1 + len(suffix)
	if room := maxDNSName - lbNameRoom - apex; room < 0 {
		return bad("too long: load balancer names <zone>.<name>-<id>.elb.%s.<suffix> would pass the 253 characters of a DNS name; keep the suffix to %d characters", region, len(suffix)+room)
	}
	return nil
}

// QuotaFlag ties one quota to its command-line flag, so that `moat lb` and `moat up` declare the
// same flags from one list and validation names the flag of a bad value.
type QuotaFlag struct {
	Name  string // without the leading --
	Usage string
	Value *int // the field of the Quotas it sets
}

// QuotaFlags lists the adjustable quotas of q with their flag names and help.
func QuotaFlags(q *cloud.Quotas) []QuotaFlag {
	return []QuotaFlag{
		{"quota-security-groups-per-load-balancer", "security groups per load balancer", &q.SecurityGroupsPerLoadBalancer},
		{"quota-security-groups-per-interface", "security groups per network interface", &q.SecurityGroupsPerInterface},
		{"quota-inbound-rules-per-group", "inbound rules per security group (IPv4 and IPv6 counted apart)", &q.InboundRulesPerGroup},
		{"quota-outbound-rules-per-group", "outbound rules per security group (IPv4 and IPv6 counted apart)", &q.OutboundRulesPerGroup},
		{"quota-security-groups-per-vpc", "security groups per VPC", &q.SecurityGroupsPerVPC},
		{"quota-load-balancers", "network load balancers per region", &q.LoadBalancers},
		{"quota-listeners-per-load-balancer", "listeners per load balancer", &q.ListenersPerLoadBalancer},
		{"quota-target-groups", "target groups per region", &q.TargetGroups},
		{"quota-targets-per-target-group", "targets per target group", &q.TargetsPerTargetGroup},
		{"quota-tags-per-resource", "tags per resource", &q.TagsPerResource},
	}
}
