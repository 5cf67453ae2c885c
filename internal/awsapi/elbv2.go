package awsapi

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/moatlb/moat/internal/awsapi/wire"
	"github.com/moatlb/moat/internal/cloud"
)

func (s *Server) elbv2Handlers() map[string]handler {
	return map[string]handler{
		"CreateLoadBalancer":             elbop(s.createLoadBalancer),
		"DescribeLoadBalancers":          elbop(s.describeLoadBalancers),
		"DeleteLoadBalancer":             elbop(s.deleteLoadBalancer),
		"SetSecurityGroups":              elbop(s.setSecurityGroups),
		"SetSubnets":                     elbop(s.setSubnets),
		"SetIpAddressType":               elbop(s.setIPAddressType),
		"DescribeLoadBalancerAttributes": elbop(s.describeLoadBalancerAttributes),
		"ModifyLoadBalancerAttributes":   elbop(s.modifyLoadBalancerAttributes),
		"CreateTargetGroup":              withHealthCheck(s.createTargetGroup),
		"DescribeTargetGroups":           elbop(s.describeTargetGroups),
		"ModifyTargetGroup":              withHealthCheck(s.modifyTargetGroup),
		"DeleteTargetGroup":              elbop(s.deleteTargetGroup),
		"DescribeTargetGroupAttributes":  elbop(s.describeTargetGroupAttributes),
		"ModifyTargetGroupAttributes":    elbop(s.modifyTargetGroupAttributes),
		"RegisterTargets":                elbop(s.registerTargets),
		"DeregisterTargets":              elbop(s.deregisterTargets),
		"DescribeTargetHealth":           elbop(s.describeTargetHealth),
		"CreateListener":                 elbop(s.createListener),
		"DescribeListeners":              elbop(s.describeListeners),
		"ModifyListener":                 elbop(s.modifyListener),
		"AddListenerCertificates":        elbop(s.addListenerCertificates),
		"RemoveListenerCertificates":     elbop(s.removeListenerCertificates),
		"DescribeListenerCertificates":   elbop(s.describeListenerCertificates),
		"DeleteListener":                 elbop(s.deleteListener),
		"DescribeListenerAttributes":     elbop(s.describeListenerAttributes),
		"ModifyListenerAttributes":       elbop(s.modifyListenerAttributes),
		"DescribeRules":                  elbop(s.describeRules),
		"AddTags":                        elbop(s.addTags),
		"RemoveTags":                     elbop(s.removeTags),
		"DescribeTags":                   elbop(s.describeTags),
		"DescribeCapacityReservation":    elbop(s.describeCapacityReservation),
		"ModifyCapacityReservation":      elbop(s.modifyCapacityReservation),
	}
}

func elbop[In any](fn func(ctx context.Context, in *In) (any, error)) handler {
	return op(wire.MemberLists, fn)
}

// Request pieces shared by several ELBv2 actions (awsQuery wire names).

type elbTag struct {
	Key   string
	Value string
}

type elbAttribute struct {
	Key   string
	Value string
}

type elbSubnetMapping struct {
	SubnetId            string
	AllocationId        string
	PrivateIPv4Address  string
	IPv6Address         string
	SourceNatIpv6Prefix string
}

type elbTargetDescription struct {
	Id               string
	Port             *int
	AvailabilityZone string
	QuicServerId     string
}

type elbMatcher struct {
	HttpCode string `xml:",omitempty"`
	GrpcCode string `xml:",omitempty"`
}

type elbActionIn struct {
	Type           string
	TargetGroupArn string
	Order          *int
	ForwardConfig  *struct {
		TargetGroups []struct {
			TargetGroupArn string
			Weight         *int
		}
		TargetGroupStickinessConfig *struct {
			Enabled         *bool
			DurationSeconds *int
		}
	}
}

func elbTagsIn(in []elbTag) []cloud.Tag {
	out := make([]cloud.Tag, len(in))
	for i, t := range in {
		out[i] = cloud.Tag{Key: t.Key, Value: t.Value}
	}
	return out
}

func elbTagsOut(t cloud.Tags) wire.Members[elbTag] {
	out := wire.Members[elbTag]{}
	for _, tag := range t.List() {
		out = append(out, elbTag{tag.Key, tag.Value})
	}
	return out
}

func attributesIn(in []elbAttribute) []cloud.Attribute {
	out := make([]cloud.Attribute, len(in))
	for i, a := range in {
		out[i] = cloud.Attribute{Key: a.Key, Value: a.Value}
	}
	return out
}

// attributesOut is the reply of the six attribute actions.
func attributesOut(attrs []cloud.Attribute, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	out := wire.Members[elbAttribute]{}
	for _, a := range attrs {
		out = append(out, elbAttribute{a.Key, a.Value})
	}
	return struct{ Attributes wire.Members[elbAttribute] }{out}, nil
}

func mappingsIn(in []elbSubnetMapping) []cloud.SubnetMapping {
	var out []cloud.SubnetMapping
	for _, m := range in {
		out = append(out, cloud.SubnetMapping{SubnetID: m.SubnetId, AllocationID: m.AllocationId, PrivateIPv4Address: m.PrivateIPv4Address, IPv6Address: m.IPv6Address, SourceNatIPv6: m.SourceNatIpv6Prefix})
	}
	return out
}

func targetsIn(in []elbTargetDescription) ([]cloud.TargetInput, error) {
	out := make([]cloud.TargetInput, len(in))
	for i, t := range in {
		if t.QuicServerId != "" {
			return nil, &cloud.Error{Code: "ValidationError", Message: "QuicServerId is only supported for QUIC target groups, which moat does not serve"}
		}
		out[i] = cloud.TargetInput{ID: t.Id, Port: t.Port, AvailabilityZone: t.AvailabilityZone}
	}
	return out, nil
}

func actionsIn(in []elbActionIn) []cloud.Action {
	if in == nil {
		return nil
	}
	out := make([]cloud.Action, len(in))
	for i, a := range in {
		out[i] = cloud.Action{Type: a.Type, TargetGroupARN: a.TargetGroupArn, Order: a.Order}
		if fc := a.ForwardConfig; fc != nil {
			cfc := &cloud.ForwardConfig{}
			for _, tg := range fc.TargetGroups {
				cfc.TargetGroups = append(cfc.TargetGroups, cloud.WeightedTargetGroup{TargetGroupARN: tg.TargetGroupArn, Weight: tg.Weight})
			}
			if fc.TargetGroupStickinessConfig != nil {
				cfc.StickinessEnabled = fc.TargetGroupStickinessConfig.Enabled
			}
			out[i].ForwardConfig = cfc
		}
	}
	return out
}

// Reply shapes (awsQuery: PascalCase names, <member> lists).

type elbLoadBalancer struct {
	LoadBalancerArn                                      string
	DNSName                                              string
	CanonicalHostedZoneId                                string
	CreatedTime                                          string
	LoadBalancerName                                     string
	Scheme                                               string
	VpcId                                                string
	State                                                elbState
	Type                                                 string
	AvailabilityZones                                    wire.Members[elbZone]
	SecurityGroups                                       wire.Members[string] `xml:",omitempty"`
	IpAddressType                                        string
	EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic string `xml:",omitempty"`
	EnablePrefixForIpv6SourceNat                         string
}

// sourceNATOff is every load balancer's EnablePrefixForIpv6SourceNat: moat refuses "on", and AWS
// describes the setting on every network load balancer, so that clients comparing it after a
// create (the AWS controller, Terraform) find what they asked for.
const sourceNATOff = "off"

type elbState struct {
	Code   string
	Reason string `xml:",omitempty"`
}

type elbZone struct {
	ZoneName              string
	SubnetId              string
	LoadBalancerAddresses wire.Members[elbAddress]
}

type elbAddress struct {
	IpAddress          string
	PrivateIPv4Address string `xml:",omitempty"`
	IPv6Address        string `xml:",omitempty"`
}

type elbTargetGroup struct {
	TargetGroupArn             string
	TargetGroupName            string
	Protocol                   string
	Port                       int
	VpcId                      string
	HealthCheckProtocol        string
	HealthCheckPort            string
	HealthCheckEnabled         bool
	HealthCheckIntervalSeconds int
	HealthCheckTimeoutSeconds  int
	HealthyThresholdCount      int
	UnhealthyThresholdCount    int
	HealthCheckPath            string      `xml:",omitempty"`
	Matcher                    *elbMatcher `xml:",omitempty"`
	LoadBalancerArns           wire.Members[string]
	TargetType                 string
	IpAddressType              string
}

type elbListener struct {
	ListenerArn     string
	LoadBalancerArn string
	Port            int
	Protocol        string
	Certificates    wire.Members[elbCertificate] `xml:",omitempty"`
	SslPolicy       string                       `xml:",omitempty"`
	DefaultActions  wire.Members[elbAction]
	AlpnPolicy      wire.Members[string] `xml:",omitempty"`
}

type elbCertificate struct {
	CertificateArn string
	IsDefault      *bool `xml:",omitempty"`
}

type elbAction struct {
	Type           string
	TargetGroupArn string
	Order          int
	ForwardConfig  elbForwardConfig
}

type elbForwardConfig struct {
	TargetGroups                wire.Members[elbWeightedTargetGroup]
	TargetGroupStickinessConfig struct{ Enabled bool }
}

type elbWeightedTargetGroup struct {
	TargetGroupArn string
	Weight         int
}

type elbRule struct {
	RuleArn    string
	Priority   string
	Conditions wire.Members[struct{}]
	Actions    wire.Members[elbAction]
	IsDefault  bool
}

type elbTargetHealthDescription struct {
	Target          elbTargetOut
	HealthCheckPort string
	TargetHealth    elbTargetHealth
}

type elbTargetOut struct {
	Id               string
	Port             int
	AvailabilityZone string `xml:",omitempty"`
}

type elbTargetHealth struct {
	State       string
	Reason      string `xml:",omitempty"`
	Description string `xml:",omitempty"`
}

// elbTime is the timestamp format of awsQuery replies.
func elbTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func zonesOut(lb cloud.LoadBalancer) wire.Members[elbZone] {
	out := wire.Members[elbZone]{}
	for _, z := range lb.Zones {
		// As AWS: the IPv4 address only where the subnet mapping asked for it; a dualstack zone's
		// IPv6 address always.
		addr := elbAddress{IPv6Address: z.IPv6Address}
		if z.AddressRequested {
			addr.IpAddress = z.Address
			if lb.Scheme == "internal" {
				addr.PrivateIPv4Address = z.Address
			}
		}
		addrs := wire.Members[elbAddress]{}
		if addr != (elbAddress{}) {
			addrs = append(addrs, addr)
		}
		out = append(out, elbZone{ZoneName: z.Zone, SubnetId: z.SubnetID, LoadBalancerAddresses: addrs})
	}
	return out
}

func loadBalancerOut(lb cloud.LoadBalancer) elbLoadBalancer {
	return elbLoadBalancer{
		LoadBalancerArn:       lb.ARN,
		DNSName:               lb.DNSName,
		CanonicalHostedZoneId: lb.CanonicalHostedZoneID,
		CreatedTime:           elbTime(lb.CreatedTime),
		LoadBalancerName:      lb.Name,
		Scheme:                lb.Scheme,
		VpcId:                 lb.VPCID,
		State:                 elbState{lb.State, lb.StateReason},
		Type:                  lb.Type,
		AvailabilityZones:     zonesOut(lb),
		SecurityGroups:        wire.Members[string](lb.SecurityGroups),
		IpAddressType:         lb.IPAddressType,
		EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic: lb.EnforceSecurityGroupPrivateLink,
		EnablePrefixForIpv6SourceNat:                         sourceNATOff,
	}
}

func targetGroupOut(tg cloud.TargetGroup) elbTargetGroup {
	out := elbTargetGroup{
		TargetGroupArn:             tg.ARN,
		TargetGroupName:            tg.Name,
		Protocol:                   tg.Protocol,
		Port:                       tg.Port,
		VpcId:                      tg.VPCID,
		HealthCheckProtocol:        tg.HealthCheck.Protocol,
		HealthCheckPort:            tg.HealthCheck.Port,
		HealthCheckEnabled:         tg.HealthCheck.Enabled,
		HealthCheckIntervalSeconds: tg.HealthCheck.IntervalSeconds,
		HealthCheckTimeoutSeconds:  tg.HealthCheck.TimeoutSeconds,
		HealthyThresholdCount:      tg.HealthCheck.HealthyThreshold,
		UnhealthyThresholdCount:    tg.HealthCheck.UnhealthyThreshold,
		HealthCheckPath:            tg.HealthCheck.Path,
		LoadBalancerArns:           wire.Members[string](slices.Clone(tg.LoadBalancerARNs)),
		TargetType:                 tg.TargetType,
		IpAddressType:              tg.IPAddressType,
	}
	if out.LoadBalancerArns == nil {
		out.LoadBalancerArns = wire.Members[string]{}
	}
	if tg.HealthCheck.Matcher != "" {
		out.Matcher = &elbMatcher{HttpCode: tg.HealthCheck.Matcher}
	}
	return out
}

// forwardOut echoes a forward action as AWS does: the target group both plainly and as a
// ForwardConfig of weight 1 without stickiness.
// forwardOut is a listener's or rule's one action. Its Order is the one given, or 1 as AWS answers
// when none was: Terraform reads it back.
func forwardOut(tgARN string, order int) wire.Members[elbAction] {
	return wire.Members[elbAction]{{
		Type:           "forward",
		TargetGroupArn: tgARN,
		Order:          max(order, 1),
		ForwardConfig:  elbForwardConfig{TargetGroups: wire.Members[elbWeightedTargetGroup]{{tgARN, 1}}},
	}}
}

func listenerOut(l cloud.Listener) elbListener {
	out := elbListener{ListenerArn: l.ARN, LoadBalancerArn: l.LoadBalancerARN, Port: l.Port, Protocol: l.Protocol, DefaultActions: forwardOut(l.TargetGroupARN, l.ActionOrder)}
	if t := l.TLS; t != nil {
		// As AWS: the default certificate only (the list is DescribeListenerCertificates').
		out.Certificates = wire.Members[elbCertificate]{{CertificateArn: t.DefaultCertificate}}
		out.SslPolicy, out.AlpnPolicy = t.SslPolicy, wire.Members[string](t.AlpnPolicy)
	}
	return out
}

func listenersOut(ls ...cloud.Listener) wire.Members[elbListener] {
	out := wire.Members[elbListener]{}
	for _, l := range ls {
		out = append(out, listenerOut(l))
	}
	return out
}

func loadBalancersOut(lbs ...cloud.LoadBalancer) wire.Members[elbLoadBalancer] {
	out := wire.Members[elbLoadBalancer]{}
	for _, lb := range lbs {
		out = append(out, loadBalancerOut(lb))
	}
	return out
}

func targetGroupsOut(tgs ...cloud.TargetGroup) wire.Members[elbTargetGroup] {
	out := wire.Members[elbTargetGroup]{}
	for _, tg := range tgs {
		out = append(out, targetGroupOut(tg))
	}
	return out
}

func page(size *int, marker string) cloud.ELBPage {
	return cloud.ELBPage{PageSize: size, Marker: marker}
}

// Load balancers.

type createLoadBalancerIn struct {
	Name                         string
	Subnets                      []string
	SubnetMappings               []elbSubnetMapping
	SecurityGroups               []string
	Scheme                       string
	Tags                         []elbTag
	Type                         string
	IpAddressType                string
	CustomerOwnedIpv4Pool        string
	EnablePrefixForIpv6SourceNat string
	IpamPools                    struct{ Ipv4IpamPoolId string }
}

func (s *Server) createLoadBalancer(_ context.Context, in *createLoadBalancerIn) (any, error) {
	lb, err := s.cloud.CreateLoadBalancer(cloud.CreateLoadBalancerInput{
		Name:                         in.Name,
		Type:                         in.Type,
		Scheme:                       in.Scheme,
		IPAddressType:                in.IpAddressType,
		Subnets:                      in.Subnets,
		SubnetMappings:               mappingsIn(in.SubnetMappings),
		SecurityGroups:               in.SecurityGroups,
		Tags:                         elbTagsIn(in.Tags),
		CustomerOwnedIPv4Pool:        in.CustomerOwnedIpv4Pool,
		EnablePrefixForIPv6SourceNat: in.EnablePrefixForIpv6SourceNat,
		IPv4IpamPoolID:               in.IpamPools.Ipv4IpamPoolId,
	})
	if err != nil {
		return nil, err
	}
	return struct{ LoadBalancers wire.Members[elbLoadBalancer] }{loadBalancersOut(lb)}, nil
}

type describeLoadBalancersIn struct {
	LoadBalancerArns []string
	Names            []string
	Marker           string
	PageSize         *int
}

func (s *Server) describeLoadBalancers(_ context.Context, in *describeLoadBalancersIn) (any, error) {
	lbs, next, err := s.cloud.DescribeLoadBalancers(in.LoadBalancerArns, in.Names, page(in.PageSize, in.Marker))
	if err != nil {
		return nil, err
	}
	return struct {
		LoadBalancers wire.Members[elbLoadBalancer]
		NextMarker    string `xml:",omitempty"`
	}{loadBalancersOut(lbs...), next}, nil
}

type loadBalancerArnIn struct {
	LoadBalancerArn string
}

func (s *Server) deleteLoadBalancer(_ context.Context, in *loadBalancerArnIn) (any, error) {
	return nil, s.cloud.DeleteLoadBalancer(in.LoadBalancerArn)
}

type setSecurityGroupsIn struct {
	LoadBalancerArn                                      string
	SecurityGroups                                       []string
	EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic string
}

func (s *Server) setSecurityGroups(_ context.Context, in *setSecurityGroupsIn) (any, error) {
	lb, err := s.cloud.SetSecurityGroups(in.LoadBalancerArn, in.SecurityGroups, in.EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic)
	if err != nil {
		return nil, err
	}
	return struct {
		SecurityGroupIds                                     wire.Members[string]
		EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic string `xml:",omitempty"`
	}{wire.Members[string](lb.SecurityGroups), lb.EnforceSecurityGroupPrivateLink}, nil
}

type setSubnetsIn struct {
	LoadBalancerArn              string
	Subnets                      []string
	SubnetMappings               []elbSubnetMapping
	IpAddressType                string
	EnablePrefixForIpv6SourceNat string
}

func (s *Server) setSubnets(_ context.Context, in *setSubnetsIn) (any, error) {
	lb, err := s.cloud.SetSubnets(in.LoadBalancerArn, in.Subnets, mappingsIn(in.SubnetMappings), in.IpAddressType, in.EnablePrefixForIpv6SourceNat)
	if err != nil {
		return nil, err
	}
	return struct {
		AvailabilityZones            wire.Members[elbZone]
		IpAddressType                string
		EnablePrefixForIpv6SourceNat string
	}{zonesOut(lb), lb.IPAddressType, sourceNATOff}, nil
}

type setIPAddressTypeIn struct {
	LoadBalancerArn string
	IpAddressType   string
}

func (s *Server) setIPAddressType(_ context.Context, in *setIPAddressTypeIn) (any, error) {
	lb, err := s.cloud.SetIPAddressType(in.LoadBalancerArn, in.IpAddressType)
	if err != nil {
		return nil, err
	}
	return struct{ IpAddressType string }{lb.IPAddressType}, nil
}

func (s *Server) describeLoadBalancerAttributes(_ context.Context, in *loadBalancerArnIn) (any, error) {
	return attributesOut(s.cloud.LoadBalancerAttributes(in.LoadBalancerArn))
}

type modifyLoadBalancerAttributesIn struct {
	LoadBalancerArn string
	Attributes      []elbAttribute
}

func (s *Server) modifyLoadBalancerAttributes(_ context.Context, in *modifyLoadBalancerAttributesIn) (any, error) {
	return attributesOut(s.cloud.ModifyLoadBalancerAttributes(in.LoadBalancerArn, attributesIn(in.Attributes)))
}

// Target groups.

// healthCheckIn is the health-check members CreateTargetGroup and ModifyTargetGroup share.
type healthCheckIn struct {
	HealthCheckProtocol        string
	HealthCheckPort            string
	HealthCheckEnabled         *bool
	HealthCheckPath            *string
	HealthCheckIntervalSeconds *int
	HealthCheckTimeoutSeconds  *int
	HealthyThresholdCount      *int
	UnhealthyThresholdCount    *int
	Matcher                    *elbMatcher
}

func (h healthCheckIn) cloud() cloud.HealthCheckInput {
	out := cloud.HealthCheckInput{
		Enabled:            h.HealthCheckEnabled,
		Protocol:           h.HealthCheckProtocol,
		Port:               h.HealthCheckPort,
		Path:               h.HealthCheckPath,
		IntervalSeconds:    h.HealthCheckIntervalSeconds,
		TimeoutSeconds:     h.HealthCheckTimeoutSeconds,
		HealthyThreshold:   h.HealthyThresholdCount,
		UnhealthyThreshold: h.UnhealthyThresholdCount,
	}
	if h.Matcher != nil {
		out.Matcher = &cloud.Matcher{HTTPCode: h.Matcher.HttpCode, GRPCCode: h.Matcher.GrpcCode}
	}
	return out
}

// withHealthCheck adapts an action that takes health-check members besides its own: both are
// decoded from the same parameters.
func withHealthCheck[In any](fn func(in *In, hc healthCheckIn) (any, error)) handler {
	return func(ctx context.Context, params url.Values) (any, error) {
		var hc healthCheckIn
		if err := wire.Decode(params, &hc, wire.MemberLists); err != nil {
			return nil, err
		}
		return elbop(func(_ context.Context, in *In) (any, error) { return fn(in, hc) })(ctx, params)
	}
}

type createTargetGroupIn struct {
	Name              string
	Protocol          string
	ProtocolVersion   string
	Port              *int
	VpcId             string
	TargetType        string
	Tags              []elbTag
	IpAddressType     string
	TargetControlPort *int
}

func (s *Server) createTargetGroup(in *createTargetGroupIn, hc healthCheckIn) (any, error) {
	tg, err := s.cloud.CreateTargetGroup(cloud.CreateTargetGroupInput{
		Name:              in.Name,
		Protocol:          in.Protocol,
		Port:              in.Port,
		VPCID:             in.VpcId,
		TargetType:        in.TargetType,
		IPAddressType:     in.IpAddressType,
		HealthCheck:       hc.cloud(),
		Tags:              elbTagsIn(in.Tags),
		ProtocolVersion:   in.ProtocolVersion,
		TargetControlPort: in.TargetControlPort,
	})
	if err != nil {
		return nil, err
	}
	return struct{ TargetGroups wire.Members[elbTargetGroup] }{targetGroupsOut(tg)}, nil
}

type modifyTargetGroupIn struct {
	TargetGroupArn string
}

func (s *Server) modifyTargetGroup(in *modifyTargetGroupIn, hc healthCheckIn) (any, error) {
	tg, err := s.cloud.ModifyTargetGroup(in.TargetGroupArn, hc.cloud())
	if err != nil {
		return nil, err
	}
	return struct{ TargetGroups wire.Members[elbTargetGroup] }{targetGroupsOut(tg)}, nil
}

type describeTargetGroupsIn struct {
	LoadBalancerArn string
	TargetGroupArns []string
	Names           []string
	Marker          string
	PageSize        *int
}

func (s *Server) describeTargetGroups(_ context.Context, in *describeTargetGroupsIn) (any, error) {
	tgs, next, err := s.cloud.DescribeTargetGroups(in.LoadBalancerArn, in.TargetGroupArns, in.Names, page(in.PageSize, in.Marker))
	if err != nil {
		return nil, err
	}
	return struct {
		TargetGroups wire.Members[elbTargetGroup]
		NextMarker   string `xml:",omitempty"`
	}{targetGroupsOut(tgs...), next}, nil
}

type targetGroupArnIn struct {
	TargetGroupArn string
}

func (s *Server) deleteTargetGroup(_ context.Context, in *targetGroupArnIn) (any, error) {
	return nil, s.cloud.DeleteTargetGroup(in.TargetGroupArn)
}

func (s *Server) describeTargetGroupAttributes(_ context.Context, in *targetGroupArnIn) (any, error) {
	return attributesOut(s.cloud.TargetGroupAttributes(in.TargetGroupArn))
}

type modifyTargetGroupAttributesIn struct {
	TargetGroupArn string
	Attributes     []elbAttribute
}

func (s *Server) modifyTargetGroupAttributes(_ context.Context, in *modifyTargetGroupAttributesIn) (any, error) {
	return attributesOut(s.cloud.ModifyTargetGroupAttributes(in.TargetGroupArn, attributesIn(in.Attributes)))
}

type targetsRequest struct {
	TargetGroupArn string
	Targets        []elbTargetDescription
	Include        []string
}

func (s *Server) registerTargets(_ context.Context, in *targetsRequest) (any, error) {
	targets, err := targetsIn(in.Targets)
	if err != nil {
		return nil, err
	}
	return nil, s.cloud.RegisterTargets(in.TargetGroupArn, targets)
}

func (s *Server) deregisterTargets(_ context.Context, in *targetsRequest) (any, error) {
	targets, err := targetsIn(in.Targets)
	if err != nil {
		return nil, err
	}
	return nil, s.cloud.DeregisterTargets(in.TargetGroupArn, targets)
}

func (s *Server) describeTargetHealth(_ context.Context, in *targetsRequest) (any, error) {
	for _, inc := range in.Include {
		if inc != "AnomalyDetection" && inc != "All" {
			return nil, &cloud.Error{Code: "ValidationError", Message: "1 validation error detected: Value '" + inc + "' at 'include' failed to satisfy constraint: Member must satisfy enum value set: [AnomalyDetection, All]"}
		}
	}
	targets, err := targetsIn(in.Targets)
	if err != nil {
		return nil, err
	}
	descs, err := s.cloud.DescribeTargetHealth(in.TargetGroupArn, targets)
	if err != nil {
		return nil, err
	}
	out := wire.Members[elbTargetHealthDescription]{}
	for _, d := range descs {
		t := elbTargetOut{Id: d.Target.ID, Port: d.Target.Port, AvailabilityZone: d.Target.AvailabilityZone}
		if strings.HasPrefix(t.Id, "i-") {
			t.AvailabilityZone = "" // AWS reports zones of IP targets only
		}
		out = append(out, elbTargetHealthDescription{
			Target:          t,
			HealthCheckPort: d.HealthCheckPort,
			TargetHealth:    elbTargetHealth{d.Health.State, d.Health.Reason, d.Health.Description},
		})
	}
	return struct {
		TargetHealthDescriptions wire.Members[elbTargetHealthDescription]
	}{out}, nil
}

// Listeners and rules.

type createListenerIn struct {
	LoadBalancerArn string
	Protocol        string
	Port            *int
	SslPolicy       string
	Certificates    []struct {
		CertificateArn string
		IsDefault      *bool
	}
	DefaultActions []elbActionIn
	AlpnPolicy     []string
	Tags           []elbTag
}

func certificateARNs(in []struct {
	CertificateArn string
	IsDefault      *bool
}) []string {
	var out []string
	for _, c := range in {
		out = append(out, c.CertificateArn)
	}
	return out
}

func (s *Server) createListener(_ context.Context, in *createListenerIn) (any, error) {
	l, err := s.cloud.CreateListener(cloud.CreateListenerInput{
		LoadBalancerARN: in.LoadBalancerArn,
		Protocol:        in.Protocol,
		Port:            in.Port,
		DefaultActions:  actionsIn(in.DefaultActions),
		Tags:            elbTagsIn(in.Tags),
		SslPolicy:       in.SslPolicy,
		Certificates:    certificateARNs(in.Certificates),
		AlpnPolicy:      in.AlpnPolicy,
	})
	if err != nil {
		return nil, err
	}
	return struct{ Listeners wire.Members[elbListener] }{listenersOut(l)}, nil
}

type describeListenersIn struct {
	LoadBalancerArn string
	ListenerArns    []string
	Marker          string
	PageSize        *int
}

func (s *Server) describeListeners(_ context.Context, in *describeListenersIn) (any, error) {
	ls, next, err := s.cloud.DescribeListeners(in.LoadBalancerArn, in.ListenerArns, page(in.PageSize, in.Marker))
	if err != nil {
		return nil, err
	}
	return struct {
		Listeners  wire.Members[elbListener]
		NextMarker string `xml:",omitempty"`
	}{listenersOut(ls...), next}, nil
}

type modifyListenerIn struct {
	ListenerArn  string
	Protocol     string
	Port         *int
	SslPolicy    string
	Certificates []struct {
		CertificateArn string
		IsDefault      *bool
	}
	DefaultActions []elbActionIn
	AlpnPolicy     []string
}

func (s *Server) modifyListener(_ context.Context, in *modifyListenerIn) (any, error) {
	l, err := s.cloud.ModifyListener(cloud.ModifyListenerInput{
		ListenerARN:    in.ListenerArn,
		Protocol:       in.Protocol,
		Port:           in.Port,
		DefaultActions: actionsIn(in.DefaultActions),
		SslPolicy:      in.SslPolicy,
		Certificates:   certificateARNs(in.Certificates),
		AlpnPolicy:     in.AlpnPolicy,
	})
	if err != nil {
		return nil, err
	}
	return struct{ Listeners wire.Members[elbListener] }{listenersOut(l)}, nil
}

type listenerCertificatesIn struct {
	ListenerArn  string
	Certificates []struct {
		CertificateArn string
		IsDefault      *bool
	}
}

func certificatesOut(cs []cloud.ListenerCertificate) wire.Members[elbCertificate] {
	out := wire.Members[elbCertificate]{}
	for _, c := range cs {
		out = append(out, elbCertificate{CertificateArn: c.ARN, IsDefault: &c.IsDefault})
	}
	return out
}

func (s *Server) addListenerCertificates(_ context.Context, in *listenerCertificatesIn) (any, error) {
	cs, err := s.cloud.AddListenerCertificates(in.ListenerArn, certificateARNs(in.Certificates))
	if err != nil {
		return nil, err
	}
	return struct{ Certificates wire.Members[elbCertificate] }{certificatesOut(cs)}, nil
}

func (s *Server) removeListenerCertificates(_ context.Context, in *listenerCertificatesIn) (any, error) {
	return nil, s.cloud.RemoveListenerCertificates(in.ListenerArn, certificateARNs(in.Certificates))
}

type describeListenerCertificatesIn struct {
	ListenerArn string
	Marker      string
	PageSize    *int
}

func (s *Server) describeListenerCertificates(_ context.Context, in *describeListenerCertificatesIn) (any, error) {
	cs, next, err := s.cloud.DescribeListenerCertificates(in.ListenerArn, page(in.PageSize, in.Marker))
	if err != nil {
		return nil, err
	}
	return struct {
		Certificates wire.Members[elbCertificate]
		NextMarker   string `xml:",omitempty"`
	}{certificatesOut(cs), next}, nil
}

type listenerArnIn struct {
	ListenerArn string
}

func (s *Server) deleteListener(_ context.Context, in *listenerArnIn) (any, error) {
	return nil, s.cloud.DeleteListener(in.ListenerArn)
}

func (s *Server) describeListenerAttributes(_ context.Context, in *listenerArnIn) (any, error) {
	return attributesOut(s.cloud.ListenerAttributes(in.ListenerArn))
}

type modifyListenerAttributesIn struct {
	ListenerArn string
	Attributes  []elbAttribute
}

func (s *Server) modifyListenerAttributes(_ context.Context, in *modifyListenerAttributesIn) (any, error) {
	return attributesOut(s.cloud.ModifyListenerAttributes(in.ListenerArn, attributesIn(in.Attributes)))
}

type describeRulesIn struct {
	ListenerArn string
	RuleArns    []string
	Marker      string
	PageSize    *int
}

func (s *Server) describeRules(_ context.Context, in *describeRulesIn) (any, error) {
	rules, next, err := s.cloud.DescribeRules(in.ListenerArn, in.RuleArns, page(in.PageSize, in.Marker))
	if err != nil {
		return nil, err
	}
	out := wire.Members[elbRule]{}
	for _, r := range rules {
		out = append(out, elbRule{RuleArn: r.ARN, Priority: r.Priority, Conditions: wire.Members[struct{}]{}, Actions: forwardOut(r.TargetGroupARN, r.ActionOrder), IsDefault: r.IsDefault})
	}
	return struct {
		Rules      wire.Members[elbRule]
		NextMarker string `xml:",omitempty"`
	}{out, next}, nil
}

// Tags.

type addTagsIn struct {
	ResourceArns []string
	Tags         []elbTag
}

func (s *Server) addTags(_ context.Context, in *addTagsIn) (any, error) {
	return nil, s.cloud.AddTags(in.ResourceArns, elbTagsIn(in.Tags))
}

type removeTagsIn struct {
	ResourceArns []string
	TagKeys      []string
}

func (s *Server) removeTags(_ context.Context, in *removeTagsIn) (any, error) {
	return nil, s.cloud.RemoveTags(in.ResourceArns, in.TagKeys)
}

type describeTagsIn struct {
	ResourceArns []string
}

type elbTagDescription struct {
	ResourceArn string
	Tags        wire.Members[elbTag]
}

func (s *Server) describeTags(_ context.Context, in *describeTagsIn) (any, error) {
	descs, err := s.cloud.DescribeTags(in.ResourceArns)
	if err != nil {
		return nil, err
	}
	out := wire.Members[elbTagDescription]{}
	for _, d := range descs {
		out = append(out, elbTagDescription{d.ResourceARN, elbTagsOut(d.Tags)})
	}
	return struct {
		TagDescriptions wire.Members[elbTagDescription]
	}{out}, nil
}

type capacityIn struct {
	LoadBalancerArn             string
	MinimumLoadBalancerCapacity *struct{ CapacityUnits *int }
	ResetCapacityReservation    bool
}

type elbCapacityState struct {
	AvailabilityZone       string
	EffectiveCapacityUnits float64
	State                  struct{ Code string }
}

func capacityOut(r cloud.CapacityReservation, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	type minimum struct{ CapacityUnits int }
	out := struct {
		LastModifiedTime            string `xml:",omitempty"`
		DecreaseRequestsRemaining   int
		MinimumLoadBalancerCapacity *minimum `xml:",omitempty"`
		CapacityReservationState    wire.Members[elbCapacityState]
	}{DecreaseRequestsRemaining: r.DecreaseRequestsRemaining, CapacityReservationState: wire.Members[elbCapacityState]{}}
	if !r.LastModified.IsZero() {
		out.LastModifiedTime = r.LastModified.Format(time.RFC3339)
	}
	if r.CapacityUnits > 0 {
		out.MinimumLoadBalancerCapacity = &minimum{r.CapacityUnits}
		for _, z := range r.Zones {
			st := elbCapacityState{AvailabilityZone: z, EffectiveCapacityUnits: float64(r.CapacityUnits)}
			st.State.Code = "provisioned"
			out.CapacityReservationState = append(out.CapacityReservationState, st)
		}
	}
	return out, nil
}

func (s *Server) describeCapacityReservation(_ context.Context, in *capacityIn) (any, error) {
	return capacityOut(s.cloud.DescribeCapacityReservation(in.LoadBalancerArn))
}

func (s *Server) modifyCapacityReservation(_ context.Context, in *capacityIn) (any, error) {
	var units *int
	if in.MinimumLoadBalancerCapacity != nil {
		units = in.MinimumLoadBalancerCapacity.CapacityUnits
	}
	return capacityOut(s.cloud.ModifyCapacityReservation(in.LoadBalancerArn, units, in.ResetCapacityReservation))
}
