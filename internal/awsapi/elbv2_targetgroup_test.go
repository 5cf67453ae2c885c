package awsapi_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/cloud"
)

func TestCreateTargetGroupDefaults(t *testing.T) {
	e := newEnv(t)
	tg := e.createTG(t, "web")
	if !regexp.MustCompile(`^arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/[0-9a-f]{16}$`).MatchString(aws.ToString(tg.TargetGroupArn)) {
		t.Errorf("ARN %q does not have AWS's format", aws.ToString(tg.TargetGroupArn))
	}
	type hc struct {
		Protocol        types.ProtocolEnum
		Port, Path      string
		Interval, Timeo int32
		Healthy, Unh    int32
		Matcher         string
		Enabled         bool
	}
	view := func(tg types.TargetGroup) hc {
		out := hc{tg.HealthCheckProtocol, aws.ToString(tg.HealthCheckPort), aws.ToString(tg.HealthCheckPath),
			aws.ToInt32(tg.HealthCheckIntervalSeconds), aws.ToInt32(tg.HealthCheckTimeoutSeconds),
			aws.ToInt32(tg.HealthyThresholdCount), aws.ToInt32(tg.UnhealthyThresholdCount), "", aws.ToBool(tg.HealthCheckEnabled)}
		if tg.Matcher != nil {
			out.Matcher = aws.ToString(tg.Matcher.HttpCode)
		}
		return out
	}
	if got, want := view(tg), (hc{"TCP", "traffic-port", "", 30, 10, 5, 2, "", true}); got != want {
		t.Errorf("TCP health check\n got %+v\nwant %+v", got, want)
	}
	if tg.TargetType != types.TargetTypeEnumInstance || tg.IpAddressType != types.TargetGroupIpAddressTypeEnumIpv4 || tg.LoadBalancerArns == nil || len(tg.LoadBalancerArns) != 0 {
		t.Errorf("target group %+v: want instance, ipv4 and an empty LoadBalancerArns", tg)
	}
	httpTG := e.createTG(t, "http", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckProtocol = types.ProtocolEnumHttp })
	if got, want := view(httpTG), (hc{"HTTP", "traffic-port", "/", 30, 6, 5, 2, "200-399", true}); got != want {
		t.Errorf("HTTP health check\n got %+v\nwant %+v", got, want)
	}
	httpsTG := e.createTG(t, "https", func(in *elbv2.CreateTargetGroupInput) {
		in.HealthCheckProtocol = types.ProtocolEnumHttps
		in.HealthCheckPath = aws.String("/healthz")
		in.HealthCheckPort = aws.String("8080")
		in.Matcher = &types.Matcher{HttpCode: aws.String("200,204")}
		in.HealthCheckIntervalSeconds = aws.Int32(10)
	})
	if got, want := view(httpsTG), (hc{"HTTPS", "8080", "/healthz", 10, 10, 5, 2, "200,204", true}); got != want {
		t.Errorf("HTTPS health check\n got %+v\nwant %+v", got, want)
	}

	// Attribute defaults depend on protocol and target type.
	cases := []struct {
		protocol   types.ProtocolEnum
		targetType types.TargetTypeEnum
		preserve   string
		terminate  string
		unhealthy  string
	}{
		{types.ProtocolEnumTcp, types.TargetTypeEnumInstance, "true", "false", "true"},
		{types.ProtocolEnumTcp, types.TargetTypeEnumIp, "false", "false", "true"},
		{types.ProtocolEnumTls, types.TargetTypeEnumIp, "false", "false", "true"},
		{types.ProtocolEnumUdp, types.TargetTypeEnumIp, "true", "true", "false"},
		{types.ProtocolEnumTcpUdp, types.TargetTypeEnumInstance, "true", "true", "false"},
	}
	for _, tc := range cases {
		name := strings.ToLower(fmt.Sprintf("%s-%s", strings.ReplaceAll(string(tc.protocol), "_", ""), tc.targetType))
		tg := e.createTG(t, name, func(in *elbv2.CreateTargetGroupInput) { in.Protocol, in.TargetType = tc.protocol, tc.targetType })
		got := attrs(must[*elbv2.DescribeTargetGroupAttributesOutput](t)(e.ELB.DescribeTargetGroupAttributes(e.ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: tg.TargetGroupArn})).Attributes)
		want := map[string]string{
			"deregistration_delay.timeout_seconds":                                           "300",
			"deregistration_delay.connection_termination.enabled":                            tc.terminate,
			"stickiness.enabled":                                                             "false",
			"stickiness.type":                                                                "source_ip",
			"proxy_protocol_v2.enabled":                                                      "false",
			"preserve_client_ip.enabled":                                                     tc.preserve,
			"load_balancing.cross_zone.enabled":                                              "use_load_balancer_configuration",
			"target_health_state.unhealthy.connection_termination.enabled":                   tc.unhealthy,
			"target_health_state.unhealthy.draining_interval_seconds":                        "0",
			"target_group_health.dns_failover.minimum_healthy_targets.count":                 "1",
			"target_group_health.dns_failover.minimum_healthy_targets.percentage":            "off",
			"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count":      "1",
			"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": "off",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s %s attributes\n got %v\nwant %v", tc.protocol, tc.targetType, got, want)
		}
	}
}

func TestCreateTargetGroupErrors(t *testing.T) {
	e := newEnv(t)
	e.createTG(t, "existing")
	type edit = func(*elbv2.CreateTargetGroupInput)
	cases := []struct {
		name string
		edit edit
		code string
	}{
		{"name too long", func(in *elbv2.CreateTargetGroupInput) { in.Name = aws.String(strings.Repeat("t", 33)) }, "ValidationError"},
		{"name with dot", func(in *elbv2.CreateTargetGroupInput) { in.Name = aws.String("a.b") }, "ValidationError"},
		{"name ends with hyphen", func(in *elbv2.CreateTargetGroupInput) { in.Name = aws.String("ab-") }, "ValidationError"},
		{"same name, other port", func(in *elbv2.CreateTargetGroupInput) { in.Name, in.Port = aws.String("existing"), aws.Int32(81) }, "DuplicateTargetGroupName"},
		{"HTTP protocol", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumHttp }, "InvalidConfigurationRequest"},
		{"GENEVE protocol", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumGeneve }, "InvalidConfigurationRequest"},
		{"unknown protocol", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = "SCTP" }, "ValidationError"},
		{"no protocol", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = "" }, "ValidationError"},
		{"no port", func(in *elbv2.CreateTargetGroupInput) { in.Port = nil }, "ValidationError"},
		{"port 0", func(in *elbv2.CreateTargetGroupInput) { in.Port = aws.Int32(0) }, "ValidationError"},
		{"port 65536", func(in *elbv2.CreateTargetGroupInput) { in.Port = aws.Int32(65536) }, "ValidationError"},
		{"no VPC", func(in *elbv2.CreateTargetGroupInput) { in.VpcId = nil }, "ValidationError"},
		{"unknown VPC", func(in *elbv2.CreateTargetGroupInput) { in.VpcId = aws.String("vpc-0123456789abcdef0") }, "ValidationError"},
		{"lambda targets", func(in *elbv2.CreateTargetGroupInput) { in.TargetType = types.TargetTypeEnumLambda }, "InvalidConfigurationRequest"},
		{"alb targets", func(in *elbv2.CreateTargetGroupInput) { in.TargetType = types.TargetTypeEnumAlb }, "InvalidConfigurationRequest"},
		{"unknown target type", func(in *elbv2.CreateTargetGroupInput) { in.TargetType = "pod" }, "ValidationError"},
		{"ipv6 in an IPv4 VPC", func(in *elbv2.CreateTargetGroupInput) { in.IpAddressType = types.TargetGroupIpAddressTypeEnumIpv6 }, "InvalidConfigurationRequest"},
		{"UDP health check", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckProtocol = types.ProtocolEnumUdp }, "InvalidConfigurationRequest"},
		{"TLS health check", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckProtocol = types.ProtocolEnumTls }, "InvalidConfigurationRequest"},
		{"interval 4", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckIntervalSeconds = aws.Int32(4) }, "ValidationError"},
		{"interval 301", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckIntervalSeconds = aws.Int32(301) }, "ValidationError"},
		{"timeout 1", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckTimeoutSeconds = aws.Int32(1) }, "ValidationError"},
		{"timeout 121", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckTimeoutSeconds = aws.Int32(121) }, "ValidationError"},
		{"healthy threshold 1", func(in *elbv2.CreateTargetGroupInput) { in.HealthyThresholdCount = aws.Int32(1) }, "ValidationError"},
		{"unhealthy threshold 11", func(in *elbv2.CreateTargetGroupInput) { in.UnhealthyThresholdCount = aws.Int32(11) }, "ValidationError"},
		{"health checks off", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckEnabled = aws.Bool(false) }, "InvalidConfigurationRequest"},
		{"bad health check port", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckPort = aws.String("http") }, "ValidationError"},
		{"path on a TCP check", func(in *elbv2.CreateTargetGroupInput) { in.HealthCheckPath = aws.String("/") }, "InvalidConfigurationRequest"},
		{"matcher on a TCP check", func(in *elbv2.CreateTargetGroupInput) { in.Matcher = &types.Matcher{HttpCode: aws.String("200")} }, "InvalidConfigurationRequest"},
		{"matcher out of range", func(in *elbv2.CreateTargetGroupInput) {
			in.HealthCheckProtocol, in.Matcher = types.ProtocolEnumHttp, &types.Matcher{HttpCode: aws.String("100-199")}
		}, "InvalidConfigurationRequest"},
		{"gRPC matcher", func(in *elbv2.CreateTargetGroupInput) {
			in.HealthCheckProtocol, in.Matcher = types.ProtocolEnumHttp, &types.Matcher{GrpcCode: aws.String("12")}
		}, "InvalidConfigurationRequest"},
		{"relative path", func(in *elbv2.CreateTargetGroupInput) {
			in.HealthCheckProtocol, in.HealthCheckPath = types.ProtocolEnumHttp, aws.String("healthz")
		}, "ValidationError"},
		{"protocol version", func(in *elbv2.CreateTargetGroupInput) { in.ProtocolVersion = aws.String("HTTP2") }, "InvalidConfigurationRequest"},
		{"duplicate tag keys", func(in *elbv2.CreateTargetGroupInput) {
			in.Tags = []types.Tag{{Key: aws.String("k"), Value: aws.String("1")}, {Key: aws.String("k")}}
		}, "DuplicateTagKeys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := &elbv2.CreateTargetGroupInput{Name: aws.String("failing"), Protocol: types.ProtocolEnumTcp, Port: aws.Int32(80), VpcId: aws.String(e.vpcID(t))}
			tc.edit(in)
			_, err := e.ELB.CreateTargetGroup(e.ctx, in)
			wantCode(t, err, tc.code)
		})
	}
	if names := e.tgNames(t); !slices.Equal(names, []string{"existing"}) {
		t.Errorf("failed creates left target groups behind: %v", names)
	}
	again := e.createTG(t, "existing")
	if names := e.tgNames(t); len(names) != 1 || aws.ToString(again.TargetGroupName) != "existing" {
		t.Errorf("an identical create made a second group: %v", names)
	}

	q := newEnv(t, withQuotas(func(q *cloud.Quotas) { q.TargetGroups = 1 }))
	q.createTG(t, "one")
	_, err := q.ELB.CreateTargetGroup(q.ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("two"), Protocol: types.ProtocolEnumTcp, Port: aws.Int32(80), VpcId: aws.String(q.vpcID(t))})
	wantCode(t, err, "TooManyTargetGroups")
}

func TestModifyTargetGroup(t *testing.T) {
	e := newEnv(t)
	tg := e.createTG(t, "web")
	out := must[*elbv2.ModifyTargetGroupOutput](t)(e.ELB.ModifyTargetGroup(e.ctx, &elbv2.ModifyTargetGroupInput{
		TargetGroupArn: tg.TargetGroupArn, HealthCheckProtocol: types.ProtocolEnumHttp, HealthCheckPath: aws.String("/ready"), HealthyThresholdCount: aws.Int32(3),
	}))
	got := out.TargetGroups[0]
	if got.HealthCheckProtocol != types.ProtocolEnumHttp || aws.ToString(got.HealthCheckPath) != "/ready" || aws.ToInt32(got.HealthyThresholdCount) != 3 ||
		aws.ToString(got.Matcher.HttpCode) != "200-399" || aws.ToInt32(got.HealthCheckIntervalSeconds) != 30 || got.Protocol != types.ProtocolEnumTcp || aws.ToInt32(got.Port) != 80 {
		t.Errorf("modified group %+v", got)
	}
	// Back to TCP drops what only HTTP checks have.
	out = must[*elbv2.ModifyTargetGroupOutput](t)(e.ELB.ModifyTargetGroup(e.ctx, &elbv2.ModifyTargetGroupInput{TargetGroupArn: tg.TargetGroupArn, HealthCheckProtocol: types.ProtocolEnumTcp}))
	if got := out.TargetGroups[0]; got.HealthCheckPath != nil || got.Matcher != nil || aws.ToInt32(got.HealthyThresholdCount) != 3 {
		t.Errorf("back to TCP: %+v", got)
	}
	_, err := e.ELB.ModifyTargetGroup(e.ctx, &elbv2.ModifyTargetGroupInput{TargetGroupArn: tg.TargetGroupArn, HealthCheckIntervalSeconds: aws.Int32(1)})
	wantCode(t, err, "ValidationError")
	_, err = e.ELB.ModifyTargetGroup(e.ctx, &elbv2.ModifyTargetGroupInput{TargetGroupArn: tg.TargetGroupArn, HealthCheckEnabled: aws.Bool(false)})
	wantCode(t, err, "InvalidConfigurationRequest")
	_, err = e.ELB.ModifyTargetGroup(e.ctx, &elbv2.ModifyTargetGroupInput{TargetGroupArn: aws.String(strings.Replace(aws.ToString(tg.TargetGroupArn), "/web/", "/gone/", 1))})
	wantCode(t, err, "TargetGroupNotFound")
	if got := e.describeTG(t, aws.ToString(tg.TargetGroupArn)); aws.ToInt32(got.HealthCheckIntervalSeconds) != 30 {
		t.Errorf("a failed modify changed the group: %+v", got)
	}
}

func TestDescribeTargetGroups(t *testing.T) {
	e := newEnv(t)
	var arns []string
	for i := range 5 {
		arns = append(arns, aws.ToString(e.createTG(t, fmt.Sprintf("tg-%d", i)).TargetGroupArn))
	}
	lb := e.createLB(t, "web")
	e.createListener(t, aws.ToString(lb.LoadBalancerArn), arns[1], 80, types.ProtocolEnumTcp)
	e.createListener(t, aws.ToString(lb.LoadBalancerArn), arns[3], 81, types.ProtocolEnumTcp)

	byLB := must[*elbv2.DescribeTargetGroupsOutput](t)(e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: lb.LoadBalancerArn}))
	var names []string
	for _, tg := range byLB.TargetGroups {
		names = append(names, aws.ToString(tg.TargetGroupName))
		if !slices.Equal(tg.LoadBalancerArns, []string{aws.ToString(lb.LoadBalancerArn)}) {
			t.Errorf("%s lists load balancers %v", aws.ToString(tg.TargetGroupName), tg.LoadBalancerArns)
		}
	}
	if !slices.Equal(names, []string{"tg-1", "tg-3"}) {
		t.Errorf("by load balancer: %v", names)
	}
	byName := must[*elbv2.DescribeTargetGroupsOutput](t)(e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{"tg-4", "tg-0"}}))
	if len(byName.TargetGroups) != 2 {
		t.Errorf("by name: %d groups", len(byName.TargetGroups))
	}
	byARN := must[*elbv2.DescribeTargetGroupsOutput](t)(e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: arns[2:3]}))
	if len(byARN.TargetGroups) != 1 || aws.ToString(byARN.TargetGroups[0].TargetGroupName) != "tg-2" {
		t.Errorf("by ARN: %+v", byARN.TargetGroups)
	}

	var paged []string
	p := elbv2.NewDescribeTargetGroupsPaginator(e.ELB, &elbv2.DescribeTargetGroupsInput{PageSize: aws.Int32(2)})
	for p.HasMorePages() {
		for _, tg := range must[*elbv2.DescribeTargetGroupsOutput](t)(p.NextPage(e.ctx)).TargetGroups {
			paged = append(paged, aws.ToString(tg.TargetGroupName))
		}
	}
	if !slices.Equal(paged, []string{"tg-0", "tg-1", "tg-2", "tg-3", "tg-4"}) {
		t.Errorf("paginated: %v", paged)
	}

	_, err := e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{"tg-0", "nope"}})
	wantCode(t, err, "TargetGroupNotFound")
	wantMessage(t, err, "One or more target groups not found")
	_, err = e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: []string{strings.Replace(arns[0], "tg-0", "gone", 1)}})
	wantCode(t, err, "TargetGroupNotFound")
	_, err = e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: aws.String(strings.Replace(aws.ToString(lb.LoadBalancerArn), "/web/", "/gone/", 1))})
	wantCode(t, err, "LoadBalancerNotFound")
	_, err = e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{PageSize: aws.Int32(500)})
	wantCode(t, err, "ValidationError")
	_, err = e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{"tg-0"}, TargetGroupArns: arns[:1]})
	wantCode(t, err, "ValidationError")
}

func TestDeleteTargetGroup(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	tg := e.createTG(t, "web")
	l := e.createListener(t, aws.ToString(lb.LoadBalancerArn), aws.ToString(tg.TargetGroupArn), 80, types.ProtocolEnumTcp)
	_, err := e.ELB.DeleteTargetGroup(e.ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn})
	wantCode(t, err, "ResourceInUse")
	wantMessage(t, err, "Target group '"+aws.ToString(tg.TargetGroupArn)+"' is currently in use by a listener or a rule")
	e.describeTG(t, aws.ToString(tg.TargetGroupArn))

	must[*elbv2.DeleteListenerOutput](t)(e.ELB.DeleteListener(e.ctx, &elbv2.DeleteListenerInput{ListenerArn: l.ListenerArn}))
	must[*elbv2.DeleteTargetGroupOutput](t)(e.ELB.DeleteTargetGroup(e.ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn}))
	_, err = e.ELB.DescribeTargetGroups(e.ctx, &elbv2.DescribeTargetGroupsInput{TargetGroupArns: []string{aws.ToString(tg.TargetGroupArn)}})
	wantCode(t, err, "TargetGroupNotFound")
	must[*elbv2.DeleteTargetGroupOutput](t)(e.ELB.DeleteTargetGroup(e.ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn}))
}

func TestTargetGroupAttributes(t *testing.T) {
	e := newEnv(t)
	tcp := e.createTG(t, "tcp")
	udp := e.createTG(t, "udp", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumUdp })
	modify := func(tg types.TargetGroup, kv ...string) (map[string]string, error) {
		var list []types.TargetGroupAttribute
		for i := 0; i < len(kv); i += 2 {
			list = append(list, types.TargetGroupAttribute{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
		}
		out, err := e.ELB.ModifyTargetGroupAttributes(e.ctx, &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: tg.TargetGroupArn, Attributes: list})
		if err != nil {
			return nil, err
		}
		return attrs(out.Attributes), nil
	}
	got, err := modify(tcp, "deregistration_delay.timeout_seconds", "30", "proxy_protocol_v2.enabled", "true", "preserve_client_ip.enabled", "false",
		"target_health_state.unhealthy.connection_termination.enabled", "false", "target_health_state.unhealthy.draining_interval_seconds", "60",
		"target_group_health.dns_failover.minimum_healthy_targets.count", "off", "stickiness.enabled", "true")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 13 || got["deregistration_delay.timeout_seconds"] != "30" || got["proxy_protocol_v2.enabled"] != "true" || got["stickiness.type"] != "source_ip" {
		t.Errorf("modify answered %v", got)
	}
	cases := []struct {
		name string
		tg   types.TargetGroup
		kv   []string
	}{
		{"delay too long", tcp, []string{"deregistration_delay.timeout_seconds", "3601"}},
		{"delay negative", tcp, []string{"deregistration_delay.timeout_seconds", "-1"}},
		{"not a bool", tcp, []string{"proxy_protocol_v2.enabled", "on"}},
		{"ALB stickiness", tcp, []string{"stickiness.type", "lb_cookie"}},
		{"ALB key", tcp, []string{"slow_start.duration_seconds", "30"}},
		{"unknown key", tcp, []string{"no.such.key", "1"}},
		{"UDP without client IP", udp, []string{"preserve_client_ip.enabled", "false"}},
		{"UDP unhealthy termination", udp, []string{"target_health_state.unhealthy.connection_termination.enabled", "true"}},
		{"draining interval with termination", tcp, []string{"target_health_state.unhealthy.connection_termination.enabled", "true"}},
		{"percentage", tcp, []string{"target_group_health.dns_failover.minimum_healthy_targets.percentage", "101"}},
		{"valid then invalid", tcp, []string{"proxy_protocol_v2.enabled", "false", "deregistration_delay.timeout_seconds", "x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := modify(tc.tg, tc.kv...)
			wantCode(t, err, "InvalidConfigurationRequest")
		})
	}
	after := attrs(must[*elbv2.DescribeTargetGroupAttributesOutput](t)(e.ELB.DescribeTargetGroupAttributes(e.ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: tcp.TargetGroupArn})).Attributes)
	if fmt.Sprint(after) != fmt.Sprint(got) {
		t.Errorf("failed modifies changed attributes:\n got %v\nwant %v", after, got)
	}
	_, err = e.ELB.DescribeTargetGroupAttributes(e.ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(strings.Replace(aws.ToString(tcp.TargetGroupArn), "/tcp/", "/gone/", 1))})
	wantCode(t, err, "TargetGroupNotFound")
}

// health returns "id:port state reason" for each target the group reports.
func (e *env) health(t *testing.T, tgARN string, targets ...types.TargetDescription) []string {
	t.Helper()
	out := must[*elbv2.DescribeTargetHealthOutput](t)(e.ELB.DescribeTargetHealth(e.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(tgARN), Targets: targets}))
	var lines []string
	for _, d := range out.TargetHealthDescriptions {
		lines = append(lines, fmt.Sprintf("%s:%d %s %s", aws.ToString(d.Target.Id), aws.ToInt32(d.Target.Port), d.TargetHealth.State, d.TargetHealth.Reason))
	}
	slices.Sort(lines)
	return lines
}

func target(id string, port int32) types.TargetDescription {
	td := types.TargetDescription{Id: aws.String(id)}
	if port != 0 {
		td.Port = aws.Int32(port)
	}
	return td
}

func TestRegisterInstanceTargets(t *testing.T) {
	e := newEnv(t)
	nodeA, nodeB := e.instanceID(t, "127.1.0.10"), e.instanceID(t, "127.2.0.10")
	inv := cloud.DefaultInventory()
	inv.Instances = append(inv.Instances, cloud.InventoryInstance{Name: "stopped", Subnet: "moat-a", PrivateIP: "127.1.0.11", State: "stopped"})
	if err := e.Cloud.ApplyInventory(inv); err != nil {
		t.Fatal(err)
	}
	stopped := e.instanceID(t, "127.1.0.11")
	tg := e.createTG(t, "nodes", func(in *elbv2.CreateTargetGroupInput) { in.Port = aws.Int32(30080) })
	arn := tg.TargetGroupArn
	register := func(targets ...types.TargetDescription) error {
		_, err := e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: arn, Targets: targets})
		return err
	}
	// The same instance on two ports is two targets; no port means the group's.
	if err := register(target(nodeA, 0), target(nodeA, 8080), target(nodeB, 0)); err != nil {
		t.Fatal(err)
	}
	if err := register(target(nodeA, 30080)); err != nil { // again: nothing changes
		t.Fatal(err)
	}
	want := []string{nodeA + ":30080 unused Target.NotInUse", nodeA + ":8080 unused Target.NotInUse", nodeB + ":30080 unused Target.NotInUse"}
	slices.Sort(want)
	if got := e.health(t, aws.ToString(arn)); !slices.Equal(got, want) {
		t.Errorf("targets\n got %v\nwant %v", got, want)
	}
	cases := []struct {
		name   string
		target types.TargetDescription
		code   string
		msg    string
	}{
		{"stopped instance", target(stopped, 0), "InvalidTarget", "The following targets are not in a running state and cannot be registered: '" + stopped + "'"},
		{"unknown instance", target("i-0123456789abcdef0", 0), "InvalidTarget", "i-0123456789abcdef0"},
		{"IP in an instance group", target("127.1.0.50", 0), "InvalidTarget", "127.1.0.50"},
		{"port 0", types.TargetDescription{Id: aws.String(nodeA), Port: aws.Int32(0)}, "ValidationError", "port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := register(target(nodeB, 9000), tc.target)
			wantCode(t, err, tc.code)
			wantMessage(t, err, tc.msg)
		})
	}
	if got := e.health(t, aws.ToString(arn)); !slices.Equal(got, want) {
		t.Errorf("failed registrations changed the targets: %v", got)
	}
	_, err := e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(strings.Replace(aws.ToString(arn), "/nodes/", "/gone/", 1)), Targets: []types.TargetDescription{target(nodeA, 0)}})
	wantCode(t, err, "TargetGroupNotFound")

	q := newEnv(t, withQuotas(func(q *cloud.Quotas) { q.TargetsPerTargetGroup = 2 }))
	qtg := q.createTG(t, "small")
	qa := q.instanceID(t, "127.1.0.10")
	_, err = q.ELB.RegisterTargets(q.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: qtg.TargetGroupArn, Targets: []types.TargetDescription{target(qa, 1), target(qa, 2), target(qa, 3)}})
	wantCode(t, err, "TooManyTargets")
}

func TestRegisterIPTargets(t *testing.T) {
	e := newEnv(t)
	tg := e.createTG(t, "pods", func(in *elbv2.CreateTargetGroupInput) { in.TargetType = types.TargetTypeEnumIp })
	arn := tg.TargetGroupArn
	must[*elbv2.RegisterTargetsOutput](t)(e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: arn, Targets: []types.TargetDescription{
		target("127.1.0.50", 8080),
		target("127.2.0.50", 8080),
		{Id: aws.String("10.0.0.5"), Port: aws.Int32(8080), AvailabilityZone: aws.String("all")},
		target("127.9.0.5", 8080), // in the VPC, in no subnet
	}}))
	out := must[*elbv2.DescribeTargetHealthOutput](t)(e.ELB.DescribeTargetHealth(e.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: arn}))
	zones := map[string]string{}
	for _, d := range out.TargetHealthDescriptions {
		zones[aws.ToString(d.Target.Id)] = aws.ToString(d.Target.AvailabilityZone)
		if o := d.AdministrativeOverride; o == nil || o.State != types.TargetAdministrativeOverrideStateEnumNoOverride ||
			o.Reason != types.TargetAdministrativeOverrideReasonEnumNoOverrideEngaged {
			t.Errorf("target %s: administrative override %+v, want no_override", aws.ToString(d.Target.Id), o)
		}
	}
	if want := map[string]string{"127.1.0.50": "us-east-1a", "127.2.0.50": "us-east-1b", "10.0.0.5": "all", "127.9.0.5": "all"}; fmt.Sprint(zones) != fmt.Sprint(want) {
		t.Errorf("target zones %v, want %v", zones, want)
	}
	cases := []struct {
		name   string
		target types.TargetDescription
		code   string
		msg    string
	}{
		{"outside the VPC without a zone", target("10.0.0.6", 80), "ValidationError", "you must specify an Availability Zone"},
		{"public address", types.TargetDescription{Id: aws.String("8.8.8.8"), AvailabilityZone: aws.String("all")}, "InvalidTarget", "8.8.8.8"},
		{"unknown zone", types.TargetDescription{Id: aws.String("10.0.0.6"), AvailabilityZone: aws.String("us-east-1z")}, "ValidationError", "us-east-1z"},
		{"instance in an IP group", target("i-0123456789abcdef0", 80), "InvalidTarget", "i-0123456789abcdef0"},
		{"IPv6 in an IPv4 group", types.TargetDescription{Id: aws.String("fd00::1"), AvailabilityZone: aws.String("all")}, "InvalidTarget", "fd00::1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: arn, Targets: []types.TargetDescription{tc.target}})
			wantCode(t, err, tc.code)
			wantMessage(t, err, tc.msg)
		})
	}
	if got := e.health(t, aws.ToString(arn)); len(got) != 4 {
		t.Errorf("failed registrations changed the targets: %v", got)
	}
}

// reporter is a health source standing in for the data plane.
type reporter map[string]cloud.TargetHealth

func (r reporter) TargetHealth(tgARN, id string, port int) (cloud.TargetHealth, bool) {
	h, ok := r[fmt.Sprintf("%s:%d", id, port)]
	return h, ok
}

func TestDescribeTargetHealth(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	tg := e.createTG(t, "pods", func(in *elbv2.CreateTargetGroupInput) {
		in.TargetType = types.TargetTypeEnumIp
		in.HealthCheckPort = aws.String("9000")
	})
	arn := aws.ToString(tg.TargetGroupArn)
	must[*elbv2.RegisterTargetsOutput](t)(e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: []types.TargetDescription{target("127.1.0.50", 0), target("127.1.0.51", 0)}}))
	if got, want := e.health(t, arn), []string{"127.1.0.50:80 unused Target.NotInUse", "127.1.0.51:80 unused Target.NotInUse"}; !slices.Equal(got, want) {
		t.Errorf("before a listener uses the group\n got %v\nwant %v", got, want)
	}
	e.createListener(t, aws.ToString(lb.LoadBalancerArn), arn, 80, types.ProtocolEnumTcp)
	if got, want := e.health(t, arn), []string{"127.1.0.50:80 initial Elb.RegistrationInProgress", "127.1.0.51:80 initial Elb.RegistrationInProgress"}; !slices.Equal(got, want) {
		t.Errorf("in use, no health source\n got %v\nwant %v", got, want)
	}
	e.Cloud.SetHealthReporter(reporter{"127.1.0.50:80": {State: "healthy"}})
	if got, want := e.health(t, arn), []string{"127.1.0.50:80 healthy ", "127.1.0.51:80 initial Elb.RegistrationInProgress"}; !slices.Equal(got, want) {
		t.Errorf("with a health source\n got %v\nwant %v", got, want)
	}
	// Targets asked for by name: unregistered ones are unused, not an error.
	if got, want := e.health(t, arn, target("127.1.0.50", 80), target("127.1.0.99", 80)), []string{"127.1.0.50:80 healthy ", "127.1.0.99:80 unused Target.NotRegistered"}; !slices.Equal(got, want) {
		t.Errorf("named targets\n got %v\nwant %v", got, want)
	}
	out := must[*elbv2.DescribeTargetHealthOutput](t)(e.ELB.DescribeTargetHealth(e.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroupArn, Targets: []types.TargetDescription{target("127.1.0.51", 0)}}))
	if d := out.TargetHealthDescriptions[0]; aws.ToString(d.HealthCheckPort) != "9000" || aws.ToString(d.TargetHealth.Description) != "Target registration is in progress" {
		t.Errorf("description %+v / %+v", d, d.TargetHealth)
	}
	_, err := e.ELB.DescribeTargetHealth(e.ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(strings.Replace(arn, "/pods/", "/gone/", 1))})
	wantCode(t, err, "TargetGroupNotFound")
}

func TestDeregisterTargetsDrains(t *testing.T) {
	clock := newTestClock()
	e := newEnv(t, withClock(clock))
	lb := e.createLB(t, "web")
	tg := e.createTG(t, "pods", func(in *elbv2.CreateTargetGroupInput) { in.TargetType = types.TargetTypeEnumIp })
	arn := aws.ToString(tg.TargetGroupArn)
	e.createListener(t, aws.ToString(lb.LoadBalancerArn), arn, 80, types.ProtocolEnumTcp)
	register := func(targets ...types.TargetDescription) {
		t.Helper()
		must[*elbv2.RegisterTargetsOutput](t)(e.ELB.RegisterTargets(e.ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: targets}))
	}
	deregister := func(targets ...types.TargetDescription) {
		t.Helper()
		must[*elbv2.DeregisterTargetsOutput](t)(e.ELB.DeregisterTargets(e.ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: targets}))
	}
	register(target("127.1.0.50", 8080), target("127.1.0.51", 8080))
	deregister(target("127.1.0.50", 8080), target("127.1.0.99", 8080)) // an unknown target is ignored
	want := []string{"127.1.0.50:8080 draining Target.DeregistrationInProgress", "127.1.0.51:8080 initial Elb.RegistrationInProgress"}
	if got := e.health(t, arn); !slices.Equal(got, want) {
		t.Errorf("just deregistered\n got %v\nwant %v", got, want)
	}
	clock.Advance(299 * time.Second)
	if got := e.health(t, arn); !slices.Equal(got, want) {
		t.Errorf("within the 300 s delay\n got %v\nwant %v", got, want)
	}
	clock.Advance(time.Second)
	if got, want := e.health(t, arn), []string{"127.1.0.51:8080 initial Elb.RegistrationInProgress"}; !slices.Equal(got, want) {
		t.Errorf("after the delay\n got %v\nwant %v", got, want)
	}
	if got, want := e.health(t, arn, target("127.1.0.50", 8080)), []string{"127.1.0.50:8080 unused Target.NotRegistered"}; !slices.Equal(got, want) {
		t.Errorf("asked for after the delay\n got %v\nwant %v", got, want)
	}

	// Registering a draining target brings it back.
	deregister(target("127.1.0.51", 8080))
	clock.Advance(time.Minute)
	register(target("127.1.0.51", 8080))
	clock.Advance(time.Hour)
	if got, want := e.health(t, arn), []string{"127.1.0.51:8080 initial Elb.RegistrationInProgress"}; !slices.Equal(got, want) {
		t.Errorf("re-registered while draining\n got %v\nwant %v", got, want)
	}

	// The delay in force when deregistering counts; 0 removes at once.
	must[*elbv2.ModifyTargetGroupAttributesOutput](t)(e.ELB.ModifyTargetGroupAttributes(e.ctx, &elbv2.ModifyTargetGroupAttributesInput{
		TargetGroupArn: tg.TargetGroupArn, Attributes: []types.TargetGroupAttribute{{Key: aws.String("deregistration_delay.timeout_seconds"), Value: aws.String("0")}},
	}))
	deregister(target("127.1.0.51", 8080))
	if got := e.health(t, arn); len(got) != 0 {
		t.Errorf("with no delay, targets %v remain", got)
	}
	_, err := e.ELB.DeregisterTargets(e.ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: aws.String(strings.Replace(arn, "/pods/", "/gone/", 1)), Targets: []types.TargetDescription{target("127.1.0.51", 0)}})
	wantCode(t, err, "TargetGroupNotFound")
}
