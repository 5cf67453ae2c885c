package cloud

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moatlb/moat/internal/nlbattr"
	"github.com/moatlb/moat/internal/store"
)

// TargetGroup is a set of targets (instances or IP addresses, each on a port) that a listener
// forwards to, with the health check that decides which of them get traffic.
type TargetGroup struct {
	ARN           string
	Name          string
	ID            string // the 16 hex digits of the ARN
	Protocol      string // TCP, UDP, TCP_UDP or TLS
	Port          int
	VPCID         string
	TargetType    string // instance or ip
	IPAddressType string // ipv4 or ipv6
	HealthCheck   HealthCheck
	Attributes    map[string]string
	Targets       []Target
	CreatedTime   time.Time
	Tags          Tags
	// LoadBalancerARNs are the load balancers whose listeners forward to the group: derived from
	// the listeners whenever the group is read, never stored.
	LoadBalancerARNs []string `json:"-"`
}

// HealthCheck is how the data plane checks a target group's targets.
type HealthCheck struct {
	Enabled            bool
	Protocol           string // TCP, HTTP or HTTPS
	Port               string // traffic-port or a port number
	Path               string `json:",omitempty"` // HTTP and HTTPS only
	IntervalSeconds    int
	TimeoutSeconds     int
	HealthyThreshold   int
	UnhealthyThreshold int
	Matcher            string `json:",omitempty"` // HTTP codes, HTTP and HTTPS only
}

// Target is a registration: an instance ID or IP address on a port. (ID, Port) is its identity:
// the same instance on two ports is two targets.
type Target struct {
	ID               string
	Port             int
	AvailabilityZone string `json:",omitempty"` // the zone it is in; "all" for an IP outside the VPC
	RegisteredTime   time.Time
	// DrainingUntil is set when the target is deregistered: it takes no new flows, and disappears
	// once the deregistration delay that was in force then has passed.
	DrainingUntil time.Time `json:",omitzero"`
}

// Draining reports whether the target is deregistered but still within its delay at now.
func (t Target) Draining(now time.Time) bool {
	return !t.DrainingUntil.IsZero() && now.Before(t.DrainingUntil)
}

// gone reports whether a deregistered target's delay is over at now.
func (t Target) gone(now time.Time) bool {
	return !t.DrainingUntil.IsZero() && !now.Before(t.DrainingUntil)
}

// CurrentTargets returns the group's targets at now: registered ones and draining ones.
func (tg TargetGroup) CurrentTargets(now time.Time) []Target {
	return slices.DeleteFunc(slices.Clone(tg.Targets), func(t Target) bool { return t.gone(now) })
}

// Matcher is the HTTP (or gRPC, ALB only) codes of a successful health check.
type Matcher struct {
	HTTPCode string
	GRPCCode string
}

// HealthCheckInput is the health-check members of CreateTargetGroup and ModifyTargetGroup; nil
// and empty members are absent.
type HealthCheckInput struct {
	Enabled            *bool
	Protocol           string
	Port               string
	Path               *string
	IntervalSeconds    *int
	TimeoutSeconds     *int
	HealthyThreshold   *int
	UnhealthyThreshold *int
	Matcher            *Matcher
}

// CreateTargetGroupInput is CreateTargetGroup's request.
type CreateTargetGroupInput struct {
	Name          string
	Protocol      string
	Port          *int
	VPCID         string
	TargetType    string
	IPAddressType string
	HealthCheck   HealthCheckInput
	Tags          []Tag
	// Members of Application Load Balancer target groups; set, they are refused.
	ProtocolVersion   string
	TargetControlPort *int
}

func tgNotFound(arn string) *Error {
	return errorf("TargetGroupNotFound", "Target group '%s' not found", arn)
}

func loadTG(tx store.Tx, arn string) (TargetGroup, error) {
	return lookupTG(tx, arn, store.Load[TargetGroup])
}

// peekTG is loadTG for readers: the group is shared (see store.LoadShared).
func peekTG(tx store.Tx, arn string) (TargetGroup, error) {
	return lookupTG(tx, arn, store.LoadShared[TargetGroup])
}

func lookupTG(tx store.Tx, arn string, load func(store.Tx, string, string) (TargetGroup, error)) (TargetGroup, error) {
	tg, err := load(tx, bucketTargetGroups, arn)
	if err == store.ErrNotFound {
		return tg, tgNotFound(arn)
	}
	return tg, err
}

// tgUsers returns a function that answers, for a target group, the load balancers whose
// listeners forward to it, in ARN order.
func (c *Cloud) tgUsers(tx store.Tx) (func(tgARN string) []string, error) {
	x, err := c.listenerIndex(tx)
	if err != nil {
		return nil, err
	}
	return x.usersOf, nil
}

// withUsers fills in LoadBalancerARNs.
func withUsers(tg TargetGroup, users func(tgARN string) []string) TargetGroup {
	tg.LoadBalancerARNs = users(tg.ARN)
	if tg.LoadBalancerARNs == nil {
		tg.LoadBalancerARNs = []string{}
	}
	return tg
}

// CreateTargetGroup creates a target group for network load balancers with NLB's health-check
// and attribute defaults. The same name with the same settings returns the existing group.
func (c *Cloud) CreateTargetGroup(in CreateTargetGroupInput) (TargetGroup, error) {
	if err := validateELBName("Target group", in.Name); err != nil {
		return TargetGroup{}, err
	}
	for _, err := range []error{
		checkEnum("protocol", in.Protocol, elbProtocols...),
		checkEnum("targetType", in.TargetType, "instance", "ip", "lambda", "alb"),
		checkEnum("ipAddressType", in.IPAddressType, "ipv4", "ipv6"),
		checkRange("port", in.Port, 1, 65535),
		checkRange("targetControlPort", in.TargetControlPort, 1, 65535),
	} {
		if err != nil {
			return TargetGroup{}, err
		}
	}
	if in.TargetType == "" {
		in.TargetType = "instance"
	}
	if in.IPAddressType == "" {
		in.IPAddressType = "ipv4"
	}
	switch {
	case in.TargetType == "lambda" || in.TargetType == "alb":
		return TargetGroup{}, errorf("InvalidConfigurationRequest", "Target type '%s' is not supported by moat: use instance or ip", in.TargetType)
	case in.Protocol == "":
		return TargetGroup{}, errorf("ValidationError", "A protocol must be specified for target groups of type '%s'", in.TargetType)
	case !slices.Contains([]string{"TCP", "UDP", "TCP_UDP", "TLS"}, in.Protocol):
		return TargetGroup{}, errorf("InvalidConfigurationRequest", "Protocol '%s' is not supported: moat serves Network Load Balancers, whose target groups use TCP, UDP, TCP_UDP or TLS", in.Protocol)
	case in.Port == nil:
		return TargetGroup{}, errorf("ValidationError", "A port must be specified for target groups of type '%s'", in.TargetType)
	case in.VPCID == "":
		return TargetGroup{}, errorf("ValidationError", "A VPC ID must be specified for target groups of type '%s'", in.TargetType)
	case in.ProtocolVersion != "":
		return TargetGroup{}, errorf("InvalidConfigurationRequest", "A protocol version can only be specified for HTTP and HTTPS target groups")
	case in.TargetControlPort != nil:
		return TargetGroup{}, errorf("InvalidConfigurationRequest", "A target control port is only supported by Application Load Balancer target groups")
	}
	hc, err := applyHealthCheck(HealthCheck{}, in.HealthCheck, in.TargetType)
	if err != nil {
		return TargetGroup{}, err
	}
	if err := validateELBTags(in.Tags); err != nil {
		return TargetGroup{}, err
	}
	tags, err := c.addELBTags(nil, in.Tags)
	if err != nil {
		return TargetGroup{}, err
	}
	var tg TargetGroup
	err = c.store.Update(func(tx store.Tx) error {
		vpc, err := store.LoadShared[VPC](tx, bucketVPCs, in.VPCID)
		if err == store.ErrNotFound {
			return errorf("ValidationError", "The VPC ID '%s' is not found", in.VPCID)
		} else if err != nil {
			return err
		}
		if in.IPAddressType == "ipv6" && vpc.IPv6CIDR == "" {
			return errorf("InvalidConfigurationRequest", "VPC '%s' has no IPv6 CIDR block: an ipv6 target group needs one", vpc.ID)
		}
		tgs, err := c.tgIndex(tx)
		if err != nil {
			return err
		}
		if old, ok := tgs.withName(in.Name); ok {
			if old.Protocol != in.Protocol || old.Port != *in.Port || old.VPCID != in.VPCID || old.TargetType != in.TargetType ||
				old.IPAddressType != in.IPAddressType || old.HealthCheck != hc {
				return errorf("DuplicateTargetGroupName", "A target group with the same name '%s' exists, but with different settings", in.Name)
			}
			users, err := c.tgUsers(tx)
			tg = withUsers(old, users)
			return err
		}
		if tgs.count() >= c.cfg.Quotas.TargetGroups {
			return errorf("TooManyTargetGroups", "The maximum number of target groups (%d) has been reached", c.cfg.Quotas.TargetGroups)
		}
		id := randomHex(16)
		tg = TargetGroup{
			ARN:           c.elbARN("targetgroup/" + in.Name + "/" + id),
			Name:          in.Name,
			ID:            id,
			Protocol:      in.Protocol,
			Port:          *in.Port,
			VPCID:         in.VPCID,
			TargetType:    in.TargetType,
			IPAddressType: in.IPAddressType,
			HealthCheck:   hc,
			Attributes:    tgAttributeDefaults(in.Protocol, in.TargetType),
			Targets:       []Target{},
			CreatedTime:   c.cfg.Now().UTC(),
			Tags:          tags,
		}
		if err := store.Save(tx, bucketTargetGroups, tg.ARN, tg); err != nil {
			return err
		}
		tg.LoadBalancerARNs = []string{}
		return nil
	})
	if err != nil {
		return TargetGroup{}, err
	}
	return tg, nil
}

// httpCodes is a matcher's HttpCode: codes, lists of codes and ranges ("200", "200,202",
// "200-299").
var httpCodes = regexp.MustCompile(`^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$`)

// applyHealthCheck returns cur changed by in (cur is zero when creating), with NLB's defaults
// for what neither sets.
func applyHealthCheck(cur HealthCheck, in HealthCheckInput, targetType string) (HealthCheck, error) {
	for _, err := range []error{
		checkEnum("healthCheckProtocol", in.Protocol, elbProtocols...),
		checkRange("healthCheckIntervalSeconds", in.IntervalSeconds, 5, 300),
		checkRange("healthCheckTimeoutSeconds", in.TimeoutSeconds, 2, 120),
		checkRange("healthyThresholdCount", in.HealthyThreshold, 2, 10),
		checkRange("unhealthyThresholdCount", in.UnhealthyThreshold, 2, 10),
	} {
		if err != nil {
			return HealthCheck{}, err
		}
	}
	if in.Enabled != nil && !*in.Enabled {
		return HealthCheck{}, errorf("InvalidConfigurationRequest", "Health checks cannot be disabled for target groups with target type '%s'", targetType)
	}
	hc := cur
	hc.Enabled = true
	or := func(v *int, old, def int) int {
		switch {
		case v != nil:
			return *v
		case old != 0:
			return old
		}
		return def
	}
	if in.Protocol != "" {
		hc.Protocol = in.Protocol
	} else if hc.Protocol == "" {
		hc.Protocol = "TCP"
	}
	if !slices.Contains([]string{"TCP", "HTTP", "HTTPS"}, hc.Protocol) {
		return HealthCheck{}, errorf("InvalidConfigurationRequest", "Health check protocol '%s' is not supported: Network Load Balancer health checks use TCP, HTTP or HTTPS", hc.Protocol)
	}
	http := hc.Protocol != "TCP"
	if in.Port != "" {
		hc.Port = in.Port
	} else if hc.Port == "" {
		hc.Port = "traffic-port"
	}
	if hc.Port != "traffic-port" {
		if n, err := strconv.Atoi(hc.Port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != hc.Port {
			return HealthCheck{}, errorf("ValidationError", "Health check port '%s' is not valid: it must be 'traffic-port' or a port from 1 to 65535", hc.Port)
		}
	}
	hc.IntervalSeconds = or(in.IntervalSeconds, cur.IntervalSeconds, 30)
	timeout := 10
	if hc.Protocol == "HTTP" {
		timeout = 6
	}
	hc.TimeoutSeconds = or(in.TimeoutSeconds, cur.TimeoutSeconds, timeout)
	hc.HealthyThreshold = or(in.HealthyThreshold, cur.HealthyThreshold, 5)
	hc.UnhealthyThreshold = or(in.UnhealthyThreshold, cur.UnhealthyThreshold, 2)

	switch {
	case in.Path != nil && !http:
		return HealthCheck{}, errorf("InvalidConfigurationRequest", "A health check path can only be specified for HTTP and HTTPS health checks")
	case in.Path != nil:
		if *in.Path == "" || len(*in.Path) > 1024 {
			return HealthCheck{}, validationError("healthCheckPath", *in.Path, "Member must have length between 1 and 1024")
		}
		if !strings.HasPrefix(*in.Path, "/") {
			return HealthCheck{}, errorf("ValidationError", "Health check path '%s' must begin with a '/' character", *in.Path)
		}
		hc.Path = *in.Path
	case !http:
		hc.Path = ""
	case hc.Path == "":
		hc.Path = "/"
	}
	if m := in.Matcher; m != nil && (m.HTTPCode != "" || m.GRPCCode != "") {
		switch {
		case m.GRPCCode != "":
			return HealthCheck{}, errorf("InvalidConfigurationRequest", "gRPC codes are only supported for Application Load Balancer target groups")
		case !http:
			return HealthCheck{}, errorf("InvalidConfigurationRequest", "A health check matcher can only be specified for HTTP and HTTPS health checks")
		case !httpCodes.MatchString(m.HTTPCode):
			return HealthCheck{}, errorf("InvalidConfigurationRequest", "Health check matcher HTTP code '%s' is not valid: use codes or ranges such as 200, 200,202 or 200-299", m.HTTPCode)
		}
		for _, part := range strings.FieldsFunc(m.HTTPCode, func(r rune) bool { return r == ',' || r == '-' }) {
			if n, _ := strconv.Atoi(part); n < 200 || n > 599 {
				return HealthCheck{}, errorf("InvalidConfigurationRequest", "Health check matcher HTTP code '%s' is not valid: codes must be from 200 to 599", m.HTTPCode)
			}
		}
		hc.Matcher = m.HTTPCode
	} else if !http {
		hc.Matcher = ""
	} else if hc.Matcher == "" {
		hc.Matcher = "200-399"
	}
	return hc, nil
}

// DescribeTargetGroups lists target groups: all of them, those a load balancer's listeners use,
// or those named by ARN or name (any missing is TargetGroupNotFound).
func (c *Cloud) DescribeTargetGroups(lbARN string, arns, names []string, page ELBPage) ([]TargetGroup, string, error) {
	selectors := 0
	for _, set := range []bool{lbARN != "", len(arns) > 0, len(names) > 0} {
		if set {
			selectors++
		}
	}
	if selectors > 1 {
		return nil, "", errorf("ValidationError", "You can specify only one of a load balancer ARN, target group ARNs or target group names")
	}
	if lbARN != "" {
		if err := checkARN("loadBalancerArn", kindLoadBalancer, lbARN); err != nil {
			return nil, "", err
		}
	}
	for _, arn := range arns {
		if err := checkARN("targetGroupArns", kindTargetGroup, arn); err != nil {
			return nil, "", err
		}
	}
	var out []TargetGroup
	err := c.store.View(func(tx store.Tx) error {
		tgs, err := c.tgIndex(tx)
		if err != nil {
			return err
		}
		listeners, err := c.listenerIndex(tx)
		if err != nil {
			return err
		}
		if lbARN != "" {
			if _, err := peekLB(tx, lbARN); err != nil {
				return err
			}
		}
		var selected []TargetGroup
		switch {
		case lbARN != "":
			for _, l := range listeners.of(lbARN) {
				if tg, ok := tgs.named(l.TargetGroupARN); ok && !slices.ContainsFunc(selected, func(s TargetGroup) bool { return s.ARN == tg.ARN }) {
					selected = append(selected, tg)
				}
			}
		case len(arns) > 0 || len(names) > 0:
			for _, want := range append(slices.Clone(arns), names...) {
				tg, ok := tgs.named(want)
				if !ok || !slices.Contains(arns, tg.ARN) && !slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, tg.Name) }) {
					return errorf("TargetGroupNotFound", "One or more target groups not found")
				}
				if !slices.ContainsFunc(selected, func(s TargetGroup) bool { return s.ARN == tg.ARN }) {
					selected = append(selected, tg)
				}
			}
		}
		slices.SortFunc(selected, func(a, b TargetGroup) int { return strings.Compare(a.ARN, b.ARN) })
		if lbARN == "" && len(arns) == 0 && len(names) == 0 {
			selected = tgs.all() // in ARN order already
		}
		for _, tg := range selected {
			out = append(out, withUsers(tg, listeners.usersOf))
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return elbPage(out, func(tg TargetGroup) string { return tg.ARN }, page)
}

// ModifyTargetGroup changes a target group's health check; nothing else of a group can change.
func (c *Cloud) ModifyTargetGroup(arn string, in HealthCheckInput) (TargetGroup, error) {
	if err := checkARN("targetGroupArn", kindTargetGroup, arn); err != nil {
		return TargetGroup{}, err
	}
	var tg TargetGroup
	err := c.store.Update(func(tx store.Tx) (err error) {
		if tg, err = loadTG(tx, arn); err != nil {
			return err
		}
		if tg.HealthCheck, err = applyHealthCheck(tg.HealthCheck, in, tg.TargetType); err != nil {
			return err
		}
		if err := store.Save(tx, bucketTargetGroups, tg.ARN, tg); err != nil {
			return err
		}
		users, err := c.tgUsers(tx)
		tg = withUsers(tg, users)
		return err
	})
	if err != nil {
		return TargetGroup{}, err
	}
	return tg, nil
}

// DeleteTargetGroup deletes a target group that no listener uses, with its registrations.
// Deleting one that does not exist succeeds.
func (c *Cloud) DeleteTargetGroup(arn string) error {
	if err := checkARN("targetGroupArn", kindTargetGroup, arn); err != nil {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		if _, err := store.LoadShared[TargetGroup](tx, bucketTargetGroups, arn); err == store.ErrNotFound {
			return nil
		} else if err != nil {
			return err
		}
		users, err := c.tgUsers(tx)
		if err != nil {
			return err
		}
		if len(users(arn)) > 0 {
			return errorf("ResourceInUse", "Target group '%s' is currently in use by a listener or a rule", arn)
		}
		return tx.Delete(bucketTargetGroups, arn)
	})
}

// otherTGAttributes are target group attributes of Application and Gateway Load Balancers only.
var otherTGAttributes = []string{
	"load_balancing.algorithm.type", "load_balancing.algorithm.anomaly_mitigation", "slow_start.duration_seconds",
	"stickiness.app_cookie.cookie_name", "stickiness.app_cookie.duration_seconds", "stickiness.lb_cookie.duration_seconds",
	"lambda.multi_value_headers.enabled", "target_failover.on_deregistration", "target_failover.on_unhealthy",
}

// udpLike reports whether a target group protocol carries UDP, which changes some defaults.
func udpLike(protocol string) bool { return protocol == "UDP" || protocol == "TCP_UDP" }

func tgAttributeDefaults(protocol, targetType string) map[string]string {
	return map[string]string{
		"deregistration_delay.timeout_seconds":                                           "300",
		"deregistration_delay.connection_termination.enabled":                            boolString(udpLike(protocol)),
		"stickiness.enabled":                                                             "false",
		"stickiness.type":                                                                "source_ip",
		"proxy_protocol_v2.enabled":                                                      "false",
		"preserve_client_ip.enabled":                                                     boolString(!(targetType == "ip" && (protocol == "TCP" || protocol == "TLS"))),
		"load_balancing.cross_zone.enabled":                                              "use_load_balancer_configuration",
		"target_health_state.unhealthy.connection_termination.enabled":                   boolString(!udpLike(protocol)),
		"target_health_state.unhealthy.draining_interval_seconds":                        "0",
		"target_group_health.dns_failover.minimum_healthy_targets.count":                 "1",
		"target_group_health.dns_failover.minimum_healthy_targets.percentage":            "off",
		"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count":      "1",
		"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": "off",
	}
}

// TargetGroupAttributes returns a target group's attributes, sorted by key.
func (c *Cloud) TargetGroupAttributes(arn string) ([]Attribute, error) {
	if err := checkARN("targetGroupArn", kindTargetGroup, arn); err != nil {
		return nil, err
	}
	var tg TargetGroup
	err := c.store.View(func(tx store.Tx) (err error) {
		tg, err = peekTG(tx, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return attrList(tg.Attributes), nil
}

// ModifyTargetGroupAttributes changes some attributes and returns all of them; if any change is
// not valid for the group, nothing changes.
func (c *Cloud) ModifyTargetGroupAttributes(arn string, attrs []Attribute) ([]Attribute, error) {
	if err := checkARN("targetGroupArn", kindTargetGroup, arn); err != nil {
		return nil, err
	}
	var tg TargetGroup
	err := c.store.Update(func(tx store.Tx) (err error) {
		if tg, err = loadTG(tx, arn); err != nil {
			return err
		}
		next, err := modifyAttributes(tg.Attributes, attrs, attributeCheck(nlbattr.TargetGroup, otherTGAttributes, "Target group"))
		if err != nil {
			return err
		}
		switch {
		case udpLike(tg.Protocol) && next["preserve_client_ip.enabled"] == "false":
			return errorf("InvalidConfigurationRequest", "Client IP preservation cannot be disabled for %s target groups", tg.Protocol)
		case udpLike(tg.Protocol) && next["target_health_state.unhealthy.connection_termination.enabled"] == "true":
			return errorf("InvalidConfigurationRequest", "Unhealthy connection termination cannot be enabled for %s target groups", tg.Protocol)
		case next["target_health_state.unhealthy.draining_interval_seconds"] != "0" && next["target_health_state.unhealthy.connection_termination.enabled"] == "true":
			return errorf("InvalidConfigurationRequest", "'target_health_state.unhealthy.draining_interval_seconds' can only be set when 'target_health_state.unhealthy.connection_termination.enabled' is false")
		}
		tg.Attributes = next
		return store.Save(tx, bucketTargetGroups, tg.ARN, tg)
	})
	if err != nil {
		return nil, err
	}
	return attrList(tg.Attributes), nil
}

// TargetInput names a target in RegisterTargets, DeregisterTargets and DescribeTargetHealth. A
// nil Port means the target group's port.
type TargetInput struct {
	ID               string
	Port             *int
	AvailabilityZone string
}

func checkTargetInputs(targets []TargetInput, required bool) error {
	if required && len(targets) == 0 {
		return missingError("targets")
	}
	for _, t := range targets {
		if t.ID == "" {
			return missingError("targets.member.id")
		}
		if err := checkRange("targets.member.port", t.Port, 1, 65535); err != nil {
			return err
		}
	}
	return nil
}

func (t TargetInput) port(tg TargetGroup) int {
	if t.Port != nil {
		return *t.Port
	}
	return tg.Port
}

// RegisterTargets adds targets to a group. Instances must be running and in the group's VPC; IP
// addresses must be in the VPC or, with an Availability Zone, in a private range. Registering a
// draining target brings it back. All of them or none.
func (c *Cloud) RegisterTargets(arn string, targets []TargetInput) error {
	if err := checkARN("targetGroupArn", kindTargetGroup, arn); err != nil {
		return err
	}
	if err := checkTargetInputs(targets, true); err != nil {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		tg, err := loadTG(tx, arn)
		if err != nil {
			return err
		}
		now := c.cfg.Now()
		tg.Targets = tg.CurrentTargets(now)
		for _, in := range targets {
			zone, err := c.targetZone(tx, tg, in)
			if err != nil {
				return err
			}
			port := in.port(tg)
			i := slices.IndexFunc(tg.Targets, func(t Target) bool { return t.ID == in.ID && t.Port == port })
			switch {
			case i < 0:
				tg.Targets = append(tg.Targets, Target{ID: in.ID, Port: port, AvailabilityZone: zone, RegisteredTime: now.UTC()})
			case tg.Targets[i].Draining(now):
				tg.Targets[i] = Target{ID: in.ID, Port: port, AvailabilityZone: zone, RegisteredTime: now.UTC()}
			}
		}
		if len(tg.Targets) > c.cfg.Quotas.TargetsPerTargetGroup {
			return errorf("TooManyTargets", "You've reached the limit on the number of targets (%d) in target group '%s'", c.cfg.Quotas.TargetsPerTargetGroup, arn)
		}
		return store.Save(tx, bucketTargetGroups, tg.ARN, tg)
	})
}

// privateRanges are the ranges an IP target outside the VPC may be in.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// targetZone validates a target for tg and returns the zone it is in.
func (c *Cloud) targetZone(tx store.Tx, tg TargetGroup, in TargetInput) (string, error) {
	if tg.TargetType == "instance" {
		inst, err := store.LoadShared[Instance](tx, bucketInstances, in.ID)
		if err == store.ErrNotFound {
			return "", errorf("InvalidTarget", "The following targets are not valid instances or do not exist: '%s'", in.ID)
		} else if err != nil {
			return "", err
		}
		if inst.State != "running" {
			return "", errorf("InvalidTarget", "The following targets are not in a running state and cannot be registered: '%s'", in.ID)
		}
		sn, err := store.LoadShared[Subnet](tx, bucketSubnets, inst.SubnetID)
		if err != nil {
			return "", err
		}
		if sn.VPCID != tg.VPCID {
			return "", errorf("InvalidTarget", "The following targets are not in the target group's VPC '%s': '%s'", tg.VPCID, in.ID)
		}
		return sn.Zone, nil
	}
	addr, err := netip.ParseAddr(in.ID)
	if err != nil || addr.Zone() != "" {
		return "", errorf("InvalidTarget", "The IP address '%s' is not a valid IP address: target group '%s' has target type 'ip'", in.ID, tg.Name)
	}
	if addr.Is4() != (tg.IPAddressType == "ipv4") {
		return "", errorf("InvalidTarget", "The IP address '%s' does not match the IP address type '%s' of the target group", in.ID, tg.IPAddressType)
	}
	subnets, err := store.ListShared[Subnet](tx, bucketSubnets)
	if err != nil {
		return "", err
	}
	zones := map[string]bool{"all": true}
	for _, sn := range subnets {
		if sn.VPCID != tg.VPCID {
			continue
		}
		zones[sn.Zone] = true
		for _, cidr := range []string{sn.CIDR, sn.IPv6CIDR} {
			if p, err := netip.ParsePrefix(cidr); err == nil && p.Contains(addr) {
				if in.AvailabilityZone != "" && in.AvailabilityZone != sn.Zone && in.AvailabilityZone != "all" {
					return "", errorf("ValidationError", "The IP address '%s' is in subnet '%s' of Availability Zone '%s', not in '%s'", in.ID, sn.ID, sn.Zone, in.AvailabilityZone)
				}
				return sn.Zone, nil
			}
		}
	}
	vpc, err := store.LoadShared[VPC](tx, bucketVPCs, tg.VPCID)
	if err != nil {
		return "", err
	}
	inVPC := addr.Is4() && vpc.containsIPv4Block(netip.PrefixFrom(addr, 32))
	if p, err := netip.ParsePrefix(vpc.IPv6CIDR); err == nil && p.Contains(addr) {
		inVPC = true
	}
	if !inVPC && !slices.ContainsFunc(privateRanges, func(p netip.Prefix) bool { return p.Contains(addr) }) {
		return "", errorf("InvalidTarget", "The IP address '%s' is outside the VPC and not in a private range (RFC 1918, 100.64.0.0/10): it cannot be registered", in.ID)
	}
	if inVPC && in.AvailabilityZone == "" {
		return "all", nil // in the VPC but in none of its subnets: no zone of its own
	}
	if in.AvailabilityZone == "" {
		return "", errorf("ValidationError", "The IP address '%s' is not in a subnet of the target group's VPC '%s', so you must specify an Availability Zone ('all' or a zone of the VPC)", in.ID, tg.VPCID)
	}
	if !zones[in.AvailabilityZone] {
		return "", errorf("ValidationError", "Availability Zone '%s' is not a zone of VPC '%s'; use 'all' or one of its zones", in.AvailabilityZone, tg.VPCID)
	}
	return in.AvailabilityZone, nil
}

// DeregisterTargets starts draining targets: they take no new flows, and disappear after the
// group's deregistration delay. Targets that are not registered are ignored.
func (c *Cloud) DeregisterTargets(arn string, targets []TargetInput) error {
	if err := checkARN("targetGroupArn", kindTargetGroup, arn); err != nil {
		return err
	}
	if err := checkTargetInputs(targets, true); err != nil {
		return err
	}
	return c.store.Update(func(tx store.Tx) error {
		tg, err := loadTG(tx, arn)
		if err != nil {
			return err
		}
		now := c.cfg.Now()
		tg.Targets = tg.CurrentTargets(now)
		delay, _ := strconv.Atoi(tg.Attributes["deregistration_delay.timeout_seconds"])
		for _, in := range targets {
			if tg.TargetType == "instance" && !strings.HasPrefix(in.ID, "i-") {
				return errorf("InvalidTarget", "'%s' is not a valid instance ID", in.ID)
			}
			port := in.port(tg)
			i := slices.IndexFunc(tg.Targets, func(t Target) bool { return t.ID == in.ID && t.Port == port })
			switch {
			case i < 0 || tg.Targets[i].Draining(now):
			case delay == 0:
				tg.Targets = slices.Delete(tg.Targets, i, i+1)
			default:
				tg.Targets[i].DrainingUntil = now.UTC().Add(time.Duration(delay) * time.Second)
			}
		}
		return store.Save(tx, bucketTargetGroups, tg.ARN, tg)
	})
}

// HealthReporter is the data plane's view of target health.
type HealthReporter interface {
	TargetHealth(targetGroupARN string, id string, port int) (TargetHealth, bool)
}

// TargetHealth is a target's health as DescribeTargetHealth reports it.
type TargetHealth struct {
	State, Reason, Description string
}

// healthSource boxes the reporter for an atomic pointer.
type healthSource struct{ HealthReporter }

// SetHealthReporter makes h the source of the health of targets in use; without one, they stay
// initial (registration in progress).
func (c *Cloud) SetHealthReporter(h HealthReporter) {
	c.health.Store(&healthSource{h})
}

// TargetHealthDescription is one target of DescribeTargetHealth.
type TargetHealthDescription struct {
	Target          Target
	HealthCheckPort string
	Health          TargetHealth
}

// Target health states and reasons of moat's control plane; the data plane reports the others.
var (
	healthInitial     = TargetHealth{"initial", "Elb.RegistrationInProgress", "Target registration is in progress"}
	healthDraining    = TargetHealth{"draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"}
	healthNotInUse    = TargetHealth{"unused", "Target.NotInUse", "Target group is not configured to receive traffic from the load balancer"}
	healthNotRegister = TargetHealth{"unused", "Target.NotRegistered", "Target is not registered to the target group"}
)

// DescribeTargetHealth reports the health of a group's targets, or of the targets named (one that
// is not registered is unused/Target.NotRegistered, not an error).
func (c *Cloud) DescribeTargetHealth(arn string, targets []TargetInput) ([]TargetHealthDescription, error) {
	if err := checkARN("targetGroupArn", kindTargetGroup, arn); err != nil {
		return nil, err
	}
	if err := checkTargetInputs(targets, false); err != nil {
		return nil, err
	}
	var out []TargetHealthDescription
	var ask []int // indexes of out to ask the health reporter about
	err := c.store.View(func(tx store.Tx) error {
		tg, err := peekTG(tx, arn)
		if err != nil {
			return err
		}
		users, err := c.tgUsers(tx)
		if err != nil {
			return err
		}
		inUse := len(users(arn)) > 0
		now := c.cfg.Now()
		current := tg.CurrentTargets(now)
		hcPort := func(port int) string {
			if tg.HealthCheck.Port == "traffic-port" {
				return strconv.Itoa(port)
			}
			return tg.HealthCheck.Port
		}
		describe := func(t Target) {
			d := TargetHealthDescription{Target: t, HealthCheckPort: hcPort(t.Port)}
			switch {
			case t.Draining(now):
				d.Health = healthDraining
			case !inUse:
				d.Health = healthNotInUse
			default:
				d.Health = healthInitial
				if tg.TargetType == "instance" {
					inst, err := store.LoadShared[Instance](tx, bucketInstances, t.ID)
					state := inst.State
					if err != nil {
						state = "terminated"
					}
					if state != "running" {
						d.Health = TargetHealth{"unused", "Target.InvalidState", "Target is in the " + state + " state"}
						break
					}
				}
				ask = append(ask, len(out))
			}
			out = append(out, d)
		}
		if len(targets) == 0 {
			for _, t := range current {
				describe(t)
			}
			return nil
		}
		for _, in := range targets {
			found := false
			for _, t := range current {
				if t.ID == in.ID && (in.Port == nil || *in.Port == t.Port) {
					describe(t)
					found = true
				}
			}
			if !found {
				t := Target{ID: in.ID, Port: in.port(tg), AvailabilityZone: in.AvailabilityZone}
				out = append(out, TargetHealthDescription{Target: t, HealthCheckPort: hcPort(t.Port), Health: healthNotRegister})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if src := c.health.Load(); src != nil && src.HealthReporter != nil {
		for _, i := range ask {
			t := out[i].Target
			if h, ok := src.TargetHealth(arn, t.ID, t.Port); ok {
				out[i].Health = h
			}
		}
	}
	return out, nil
}
