package awsapi_test

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/lbtest"
)

func TestCreateListener(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	lbARN := aws.ToString(lb.LoadBalancerArn)
	tg := e.createTG(t, "web")
	tgARN := aws.ToString(tg.TargetGroupArn)
	l := e.createListener(t, lbARN, tgARN, 80, types.ProtocolEnumTcp)

	lbID := lbARN[strings.LastIndex(lbARN, "/")+1:]
	m := regexp.MustCompile(`^arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/net/web/` + lbID + `/([0-9a-f]{16})$`).FindStringSubmatch(aws.ToString(l.ListenerArn))
	if m == nil {
		t.Fatalf("listener ARN %q does not have AWS's format", aws.ToString(l.ListenerArn))
	}
	if aws.ToString(l.LoadBalancerArn) != lbARN || aws.ToInt32(l.Port) != 80 || l.Protocol != types.ProtocolEnumTcp {
		t.Errorf("listener %+v", l)
	}
	checkForward := func(what string, actions []types.Action) {
		t.Helper()
		if len(actions) != 1 {
			t.Fatalf("%s: %d actions", what, len(actions))
		}
		a := actions[0]
		if a.Type != types.ActionTypeEnumForward || aws.ToString(a.TargetGroupArn) != tgARN || a.ForwardConfig == nil ||
			len(a.ForwardConfig.TargetGroups) != 1 || aws.ToString(a.ForwardConfig.TargetGroups[0].TargetGroupArn) != tgARN ||
			aws.ToInt32(a.ForwardConfig.TargetGroups[0].Weight) != 1 || a.ForwardConfig.TargetGroupStickinessConfig == nil ||
			aws.ToBool(a.ForwardConfig.TargetGroupStickinessConfig.Enabled) {
			t.Errorf("%s: action %+v", what, a)
		}
	}
	checkForward("create", l.DefaultActions)
	if got := e.describeTG(t, tgARN).LoadBalancerArns; !slices.Equal(got, []string{lbARN}) {
		t.Errorf("target group lists load balancers %v", got)
	}
	described := must[*elbv2.DescribeListenersOutput](t)(e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: lb.LoadBalancerArn}))
	if len(described.Listeners) != 1 || aws.ToString(described.Listeners[0].ListenerArn) != aws.ToString(l.ListenerArn) {
		t.Fatalf("describe by load balancer: %+v", described.Listeners)
	}
	checkForward("describe", described.Listeners[0].DefaultActions)

	// Creating the same listener again returns it.
	again := e.createListener(t, lbARN, tgARN, 80, types.ProtocolEnumTcp)
	if aws.ToString(again.ListenerArn) != aws.ToString(l.ListenerArn) {
		t.Errorf("an identical create made listener %s", aws.ToString(again.ListenerArn))
	}

	// A ForwardConfig with one group is the same forward.
	tg2 := e.createTG(t, "other", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumTcpUdp })
	out := must[*elbv2.CreateListenerOutput](t)(e.ELB.CreateListener(e.ctx, &elbv2.CreateListenerInput{
		LoadBalancerArn: lb.LoadBalancerArn, Protocol: types.ProtocolEnumTcpUdp, Port: aws.Int32(53),
		DefaultActions: []types.Action{{Type: types.ActionTypeEnumForward, ForwardConfig: &types.ForwardActionConfig{
			TargetGroups: []types.TargetGroupTuple{{TargetGroupArn: tg2.TargetGroupArn, Weight: aws.Int32(1)}},
		}}},
	}))
	if got := out.Listeners[0].DefaultActions[0]; aws.ToString(got.TargetGroupArn) != aws.ToString(tg2.TargetGroupArn) {
		t.Errorf("forward config listener forwards to %s", aws.ToString(got.TargetGroupArn))
	}

	// The default rule.
	rules := must[*elbv2.DescribeRulesOutput](t)(e.ELB.DescribeRules(e.ctx, &elbv2.DescribeRulesInput{ListenerArn: l.ListenerArn}))
	if len(rules.Rules) != 1 {
		t.Fatalf("rules: %+v", rules.Rules)
	}
	r := rules.Rules[0]
	ruleARN := aws.ToString(r.RuleArn)
	if !regexp.MustCompile(`^arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/net/web/` + lbID + `/` + m[1] + `/[0-9a-f]{16}$`).MatchString(ruleARN) {
		t.Errorf("rule ARN %q does not have AWS's format", ruleARN)
	}
	if aws.ToString(r.Priority) != "default" || !aws.ToBool(r.IsDefault) || r.Conditions == nil || len(r.Conditions) != 0 {
		t.Errorf("rule %+v", r)
	}
	checkForward("rule", r.Actions)
	byARN := must[*elbv2.DescribeRulesOutput](t)(e.ELB.DescribeRules(e.ctx, &elbv2.DescribeRulesInput{RuleArns: []string{ruleARN}}))
	if len(byARN.Rules) != 1 || aws.ToString(byARN.Rules[0].RuleArn) != ruleARN {
		t.Errorf("rule by ARN %+v (the rule ARN must be stable)", byARN.Rules)
	}
	_, err := e.ELB.DescribeRules(e.ctx, &elbv2.DescribeRulesInput{RuleArns: []string{ruleARN[:len(ruleARN)-1] + "x"}})
	wantCode(t, err, "RuleNotFound")
	_, err = e.ELB.DescribeRules(e.ctx, &elbv2.DescribeRulesInput{})
	wantCode(t, err, "ValidationError")
	_, err = e.ELB.DescribeRules(e.ctx, &elbv2.DescribeRulesInput{ListenerArn: aws.String(strings.Replace(aws.ToString(l.ListenerArn), m[1], "0000000000000000", 1))})
	wantCode(t, err, "ListenerNotFound")
}

func TestCreateListenerErrors(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	other := e.createLB(t, "other")
	tcp := e.createTG(t, "tcp")
	udp := e.createTG(t, "udp", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumUdp })
	tcp2 := e.createTG(t, "tcp2")
	taken := e.createTG(t, "taken")
	e.createListener(t, aws.ToString(other.LoadBalancerArn), aws.ToString(taken.TargetGroupArn), 80, types.ProtocolEnumTcp)
	e.createListener(t, aws.ToString(lb.LoadBalancerArn), aws.ToString(tcp.TargetGroupArn), 80, types.ProtocolEnumTcp)
	missingTG := strings.Replace(aws.ToString(tcp.TargetGroupArn), "/tcp/", "/gone/", 1)

	cases := []struct {
		name string
		edit func(*elbv2.CreateListenerInput)
		code string
	}{
		{"TLS without a certificate", func(in *elbv2.CreateListenerInput) { in.Protocol = types.ProtocolEnumTls }, "ValidationError"},
		{"certificate on TCP", func(in *elbv2.CreateListenerInput) {
			in.Certificates = []types.Certificate{{CertificateArn: aws.String(testCertificateARN)}}
		}, "InvalidConfigurationRequest"},
		{"HTTP", func(in *elbv2.CreateListenerInput) { in.Protocol = types.ProtocolEnumHttp }, "UnsupportedProtocol"},
		{"unknown protocol", func(in *elbv2.CreateListenerInput) { in.Protocol = "SCTP" }, "ValidationError"},
		{"no protocol", func(in *elbv2.CreateListenerInput) { in.Protocol = "" }, "ValidationError"},
		{"port 0", func(in *elbv2.CreateListenerInput) { in.Port = aws.Int32(0) }, "ValidationError"},
		{"no port", func(in *elbv2.CreateListenerInput) { in.Port = nil }, "ValidationError"},
		{"port taken by TCP", func(in *elbv2.CreateListenerInput) {
			in.Port, in.DefaultActions = aws.Int32(80), forward(aws.ToString(tcp2.TargetGroupArn))
		}, "DuplicateListener"},
		{"UDP on a TCP port", func(in *elbv2.CreateListenerInput) {
			in.Port, in.Protocol, in.DefaultActions = aws.Int32(80), types.ProtocolEnumUdp, forward(aws.ToString(udp.TargetGroupArn))
		}, "DuplicateListener"},
		{"TCP to a UDP group", func(in *elbv2.CreateListenerInput) { in.DefaultActions = forward(aws.ToString(udp.TargetGroupArn)) }, "IncompatibleProtocols"},
		{"TCP_UDP to a TCP group", func(in *elbv2.CreateListenerInput) { in.Protocol = types.ProtocolEnumTcpUdp }, "IncompatibleProtocols"},
		{"group of another load balancer", func(in *elbv2.CreateListenerInput) { in.DefaultActions = forward(aws.ToString(taken.TargetGroupArn)) }, "TargetGroupAssociationLimit"},
		{"missing group", func(in *elbv2.CreateListenerInput) { in.DefaultActions = forward(missingTG) }, "TargetGroupNotFound"},
		{"two actions", func(in *elbv2.CreateListenerInput) {
			in.DefaultActions = append(forward(aws.ToString(tcp.TargetGroupArn)), forward(aws.ToString(tcp.TargetGroupArn))...)
		}, "InvalidLoadBalancerAction"},
		{"no actions", func(in *elbv2.CreateListenerInput) { in.DefaultActions = []types.Action{} }, "ValidationError"},
		{"redirect", func(in *elbv2.CreateListenerInput) {
			in.DefaultActions = []types.Action{{Type: types.ActionTypeEnumRedirect, RedirectConfig: &types.RedirectActionConfig{StatusCode: types.RedirectActionStatusCodeEnumHttp301}}}
		}, "InvalidLoadBalancerAction"},
		{"forward without a group", func(in *elbv2.CreateListenerInput) {
			in.DefaultActions = []types.Action{{Type: types.ActionTypeEnumForward}}
		}, "InvalidLoadBalancerAction"},
		{"weighted forward", func(in *elbv2.CreateListenerInput) {
			in.DefaultActions = []types.Action{{Type: types.ActionTypeEnumForward, ForwardConfig: &types.ForwardActionConfig{TargetGroups: []types.TargetGroupTuple{
				{TargetGroupArn: tcp.TargetGroupArn}, {TargetGroupArn: aws.String(missingTG)},
			}}}}
		}, "InvalidLoadBalancerAction"},
		{"certificates on TCP", func(in *elbv2.CreateListenerInput) {
			in.Certificates = []types.Certificate{{CertificateArn: aws.String("arn:aws:acm:us-east-1:123456789012:certificate/x")}}
		}, "InvalidConfigurationRequest"},
		{"missing load balancer", func(in *elbv2.CreateListenerInput) {
			in.LoadBalancerArn = aws.String(strings.Replace(aws.ToString(lb.LoadBalancerArn), "/web/", "/gone/", 1))
		}, "LoadBalancerNotFound"},
		{"bad tag", func(in *elbv2.CreateListenerInput) { in.Tags = []types.Tag{{Key: aws.String("")}} }, "ValidationError"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: types.ProtocolEnumTcp, Port: aws.Int32(8080), DefaultActions: forward(aws.ToString(tcp.TargetGroupArn))}
			tc.edit(in)
			_, err := e.ELB.CreateListener(e.ctx, in)
			wantCode(t, err, tc.code)
		})
	}
	ls := must[*elbv2.DescribeListenersOutput](t)(e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: lb.LoadBalancerArn}))
	if len(ls.Listeners) != 1 {
		t.Errorf("failed creates left listeners behind: %+v", ls.Listeners)
	}
	if got := e.describeTG(t, aws.ToString(udp.TargetGroupArn)).LoadBalancerArns; len(got) != 0 {
		t.Errorf("a failed create associated the UDP group with %v", got)
	}

	q := newEnv(t, withQuotas(func(q *cloud.Quotas) { q.ListenersPerLoadBalancer = 2 }))
	qlb := aws.ToString(q.createLB(t, "web").LoadBalancerArn)
	qtg := aws.ToString(q.createTG(t, "web").TargetGroupArn)
	q.createListener(t, qlb, qtg, 1, types.ProtocolEnumTcp)
	q.createListener(t, qlb, qtg, 2, types.ProtocolEnumTcp)
	_, err := q.ELB.CreateListener(q.ctx, &elbv2.CreateListenerInput{LoadBalancerArn: aws.String(qlb), Protocol: types.ProtocolEnumTcp, Port: aws.Int32(3), DefaultActions: forward(qtg)})
	wantCode(t, err, "TooManyListeners")
}

func TestModifyListener(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	lbARN := aws.ToString(lb.LoadBalancerArn)
	tcp := e.createTG(t, "tcp")
	both := e.createTG(t, "both", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumTcpUdp })
	udp := e.createTG(t, "udp", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumUdp })
	l := e.createListener(t, lbARN, aws.ToString(tcp.TargetGroupArn), 80, types.ProtocolEnumTcp)
	e.createListener(t, lbARN, aws.ToString(tcp.TargetGroupArn), 443, types.ProtocolEnumTcp)

	out := must[*elbv2.ModifyListenerOutput](t)(e.ELB.ModifyListener(e.ctx, &elbv2.ModifyListenerInput{ListenerArn: l.ListenerArn, Port: aws.Int32(8080)}))
	if got := out.Listeners[0]; aws.ToInt32(got.Port) != 8080 || got.Protocol != types.ProtocolEnumTcp || aws.ToString(got.DefaultActions[0].TargetGroupArn) != aws.ToString(tcp.TargetGroupArn) {
		t.Errorf("port change: %+v", got)
	}
	out = must[*elbv2.ModifyListenerOutput](t)(e.ELB.ModifyListener(e.ctx, &elbv2.ModifyListenerInput{ListenerArn: l.ListenerArn, DefaultActions: forward(aws.ToString(both.TargetGroupArn))}))
	if got := out.Listeners[0]; aws.ToString(got.DefaultActions[0].TargetGroupArn) != aws.ToString(both.TargetGroupArn) || aws.ToInt32(got.Port) != 8080 {
		t.Errorf("action change: %+v", got)
	}
	out = must[*elbv2.ModifyListenerOutput](t)(e.ELB.ModifyListener(e.ctx, &elbv2.ModifyListenerInput{ListenerArn: l.ListenerArn, Protocol: types.ProtocolEnumUdp}))
	if got := out.Listeners[0]; got.Protocol != types.ProtocolEnumUdp {
		t.Errorf("protocol change: %+v", got)
	}
	// UDP listeners have no TCP idle timeout.
	if got := attrs(must[*elbv2.DescribeListenerAttributesOutput](t)(e.ELB.DescribeListenerAttributes(e.ctx, &elbv2.DescribeListenerAttributesInput{ListenerArn: l.ListenerArn})).Attributes); len(got) != 0 {
		t.Errorf("UDP listener attributes %v", got)
	}
	if got := e.describeTG(t, aws.ToString(tcp.TargetGroupArn)).LoadBalancerArns; !slices.Equal(got, []string{lbARN}) {
		t.Errorf("tcp group (still used on 443) lists %v", got)
	}

	cases := []struct {
		name string
		in   elbv2.ModifyListenerInput
		code string
	}{
		{"port taken", elbv2.ModifyListenerInput{Port: aws.Int32(443)}, "DuplicateListener"},
		{"UDP listener to a TCP group", elbv2.ModifyListenerInput{DefaultActions: forward(aws.ToString(tcp.TargetGroupArn))}, "IncompatibleProtocols"},
		{"TCP_UDP listener to a UDP group", elbv2.ModifyListenerInput{Protocol: types.ProtocolEnumTcpUdp, DefaultActions: forward(aws.ToString(udp.TargetGroupArn))}, "IncompatibleProtocols"},
		{"TLS without a certificate", elbv2.ModifyListenerInput{Protocol: types.ProtocolEnumTls}, "ValidationError"},
		{"port 70000", elbv2.ModifyListenerInput{Port: aws.Int32(70000)}, "ValidationError"},
		{"redirect", elbv2.ModifyListenerInput{DefaultActions: []types.Action{{Type: types.ActionTypeEnumFixedResponse}}}, "InvalidLoadBalancerAction"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.ListenerArn = l.ListenerArn
			_, err := e.ELB.ModifyListener(e.ctx, &in)
			wantCode(t, err, tc.code)
		})
	}
	got := must[*elbv2.DescribeListenersOutput](t)(e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{ListenerArns: []string{aws.ToString(l.ListenerArn)}})).Listeners[0]
	if aws.ToInt32(got.Port) != 8080 || got.Protocol != types.ProtocolEnumUdp || aws.ToString(got.DefaultActions[0].TargetGroupArn) != aws.ToString(both.TargetGroupArn) {
		t.Errorf("failed modifies changed the listener: %+v", got)
	}
	_, err := e.ELB.ModifyListener(e.ctx, &elbv2.ModifyListenerInput{ListenerArn: aws.String(aws.ToString(l.ListenerArn) + "0")})
	wantCode(t, err, "ListenerNotFound")
}

func TestDescribeAndDeleteListeners(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	lbARN := aws.ToString(lb.LoadBalancerArn)
	tg := aws.ToString(e.createTG(t, "web").TargetGroupArn)
	var arns []string
	for port := range int32(5) {
		arns = append(arns, aws.ToString(e.createListener(t, lbARN, tg, 1000+port, types.ProtocolEnumTcp).ListenerArn))
	}
	var paged []string
	p := elbv2.NewDescribeListenersPaginator(e.ELB, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lbARN), PageSize: aws.Int32(2)})
	for p.HasMorePages() {
		for _, l := range must[*elbv2.DescribeListenersOutput](t)(p.NextPage(e.ctx)).Listeners {
			paged = append(paged, aws.ToString(l.ListenerArn))
		}
	}
	slices.Sort(arns)
	if !slices.Equal(paged, arns) {
		t.Errorf("paginated %v\nwant %v", paged, arns)
	}
	_, err := e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{})
	wantCode(t, err, "ValidationError")
	_, err = e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{ListenerArns: []string{arns[0], arns[1] + "0"}})
	wantCode(t, err, "ListenerNotFound")
	_, err = e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(strings.Replace(lbARN, "/web/", "/gone/", 1))})
	wantCode(t, err, "LoadBalancerNotFound")

	must[*elbv2.DeleteListenerOutput](t)(e.ELB.DeleteListener(e.ctx, &elbv2.DeleteListenerInput{ListenerArn: aws.String(arns[0])}))
	_, err = e.ELB.DeleteListener(e.ctx, &elbv2.DeleteListenerInput{ListenerArn: aws.String(arns[0])})
	wantCode(t, err, "ListenerNotFound")
	if got := must[*elbv2.DescribeListenersOutput](t)(e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lbARN)})).Listeners; len(got) != 4 {
		t.Errorf("%d listeners after a delete, want 4", len(got))
	}
}

func TestListenerAttributes(t *testing.T) {
	e := newEnv(t)
	lb := aws.ToString(e.createLB(t, "web").LoadBalancerArn)
	l := e.createListener(t, lb, aws.ToString(e.createTG(t, "web").TargetGroupArn), 80, types.ProtocolEnumTcp)
	got := attrs(must[*elbv2.DescribeListenerAttributesOutput](t)(e.ELB.DescribeListenerAttributes(e.ctx, &elbv2.DescribeListenerAttributesInput{ListenerArn: l.ListenerArn})).Attributes)
	if fmt.Sprint(got) != "map[tcp.idle_timeout.seconds:350]" {
		t.Errorf("defaults %v", got)
	}
	modify := func(key, value string) error {
		_, err := e.ELB.ModifyListenerAttributes(e.ctx, &elbv2.ModifyListenerAttributesInput{ListenerArn: l.ListenerArn, Attributes: []types.ListenerAttribute{{Key: aws.String(key), Value: aws.String(value)}}})
		return err
	}
	if err := modify("tcp.idle_timeout.seconds", "600"); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"tcp.idle_timeout.seconds", "59"}, {"tcp.idle_timeout.seconds", "6001"}, {"routing.http.response.server.enabled", "false"}, {"no.such.key", "1"}} {
		wantCode(t, modify(kv[0], kv[1]), "InvalidConfigurationRequest")
	}
	got = attrs(must[*elbv2.DescribeListenerAttributesOutput](t)(e.ELB.DescribeListenerAttributes(e.ctx, &elbv2.DescribeListenerAttributesInput{ListenerArn: l.ListenerArn})).Attributes)
	if got["tcp.idle_timeout.seconds"] != "600" {
		t.Errorf("after modify: %v", got)
	}
	_, err := e.ELB.DescribeListenerAttributes(e.ctx, &elbv2.DescribeListenerAttributesInput{ListenerArn: aws.String(aws.ToString(l.ListenerArn) + "0")})
	wantCode(t, err, "ListenerNotFound")
}

// TestListenerActionOrder: a default action's Order is answered as given, or 1 when none was, as
// AWS does (Terraform reads it back); one out of range is refused.
func TestListenerActionOrder(t *testing.T) {
	e := newEnv(t)
	lbARN := aws.ToString(e.createLB(t, "web").LoadBalancerArn)
	tgARN := aws.ToString(e.createTG(t, "tcp").TargetGroupArn)
	plain := e.createListener(t, lbARN, tgARN, 80, types.ProtocolEnumTcp)
	ordered := forward(tgARN)
	ordered[0].Order = aws.Int32(7)
	created := must[*elbv2.CreateListenerOutput](t)(e.ELB.CreateListener(e.ctx, &elbv2.CreateListenerInput{
		LoadBalancerArn: aws.String(lbARN), Protocol: types.ProtocolEnumTcp, Port: aws.Int32(81), DefaultActions: ordered,
	})).Listeners[0]
	listeners := must[*elbv2.DescribeListenersOutput](t)(e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lbARN)})).Listeners
	orders := map[string]int32{}
	for _, l := range listeners {
		orders[aws.ToString(l.ListenerArn)] = aws.ToInt32(l.DefaultActions[0].Order)
	}
	if got, want := orders, map[string]int32{aws.ToString(plain.ListenerArn): 1, aws.ToString(created.ListenerArn): 7}; !maps.Equal(got, want) {
		t.Errorf("orders %v, want %v", got, want)
	}
	rules := must[*elbv2.DescribeRulesOutput](t)(e.ELB.DescribeRules(e.ctx, &elbv2.DescribeRulesInput{ListenerArn: created.ListenerArn})).Rules
	if len(rules) != 1 || aws.ToInt32(rules[0].Actions[0].Order) != 7 {
		t.Errorf("default rule %+v", rules)
	}
	ordered[0].Order = aws.Int32(50001)
	_, err := e.ELB.ModifyListener(e.ctx, &elbv2.ModifyListenerInput{ListenerArn: created.ListenerArn, DefaultActions: ordered})
	wantCode(t, err, "ValidationError")
}

// testCertificateARN is an ACM certificate ARN of the test account, never imported.
const testCertificateARN = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-1111-1111-1111-111111111111"

// importCertificate imports a self-signed certificate for domain into ACM and returns its ARN.
func (e *env) importCertificate(t *testing.T, domain string) string {
	t.Helper()
	notBefore, notAfter := validNow()
	cert := lbtest.SelfSignedCert(t, ecKey(t), domain, []string{domain}, notBefore, notAfter)
	arn, err := e.Cloud.ImportCertificate(cloud.ImportCertificateInput{Certificate: cert.PEM, PrivateKey: cert.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	return arn
}

// TestTLSListener: a TLS listener takes its default certificate, gets AWS's default policy for
// network load balancers, answers its ALPN policy, keeps a certificate list for SNI, and
// forwards to TCP or TLS target groups only; going back to TCP drops its TLS settings.
func TestTLSListener(t *testing.T) {
	e := newEnv(t)
	lb := e.createLB(t, "web")
	tcp := e.createTG(t, "tcp")
	tlsTG := e.createTG(t, "tls", func(in *elbv2.CreateTargetGroupInput) { in.Protocol = types.ProtocolEnumTls })
	defaultCert, other := e.importCertificate(t, "www.example.com"), e.importCertificate(t, "sni.example.com")
	create := func(edit func(*elbv2.CreateListenerInput)) (*elbv2.CreateListenerOutput, error) {
		in := &elbv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancerArn, Protocol: types.ProtocolEnumTls, Port: aws.Int32(443),
			Certificates: []types.Certificate{{CertificateArn: aws.String(defaultCert)}}, DefaultActions: forward(aws.ToString(tcp.TargetGroupArn))}
		edit(in)
		return e.ELB.CreateListener(e.ctx, in)
	}
	for _, tc := range []struct {
		name string
		edit func(*elbv2.CreateListenerInput)
		code string
	}{
		{"unknown policy", func(in *elbv2.CreateListenerInput) { in.SslPolicy = aws.String("MyPolicy") }, "SSLPolicyNotFound"},
		{"two certificates", func(in *elbv2.CreateListenerInput) {
			in.Certificates = append(in.Certificates, types.Certificate{CertificateArn: aws.String(other)})
		}, "ValidationError"},
		{"not a certificate", func(in *elbv2.CreateListenerInput) {
			in.Certificates = []types.Certificate{{CertificateArn: aws.String("arn:aws:iam::123456789012:server-certificate/x")}}
		}, "CertificateNotFound"},
		{"certificate never imported", func(in *elbv2.CreateListenerInput) {
			in.Certificates = []types.Certificate{{CertificateArn: aws.String(testCertificateARN)}}
		}, "CertificateNotFound"},
		{"unknown ALPN policy", func(in *elbv2.CreateListenerInput) { in.AlpnPolicy = []string{"HTTP3"} }, "ALPNPolicyNotFound"},
		{"TCP listener to a TLS group", func(in *elbv2.CreateListenerInput) {
			in.Protocol, in.Certificates, in.DefaultActions = types.ProtocolEnumTcp, nil, forward(aws.ToString(tlsTG.TargetGroupArn))
		}, "IncompatibleProtocols"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := create(tc.edit)
			wantCode(t, err, tc.code)
		})
	}

	out := must[*elbv2.CreateListenerOutput](t)(create(func(in *elbv2.CreateListenerInput) {
		in.AlpnPolicy, in.DefaultActions = []string{"HTTP2Preferred"}, forward(aws.ToString(tlsTG.TargetGroupArn))
	}))
	l := out.Listeners[0]
	check := func(what string, l types.Listener, policy string, alpn []string) {
		t.Helper()
		if l.Protocol != types.ProtocolEnumTls || aws.ToString(l.SslPolicy) != policy || !slices.Equal(l.AlpnPolicy, alpn) ||
			len(l.Certificates) != 1 || aws.ToString(l.Certificates[0].CertificateArn) != defaultCert {
			t.Errorf("%s: protocol %s, policy %q, ALPN %v, certificates %+v; want TLS, %q, %v and the default certificate",
				what, l.Protocol, aws.ToString(l.SslPolicy), l.AlpnPolicy, l.Certificates, policy, alpn)
		}
	}
	check("create", l, "ELBSecurityPolicy-2016-08", []string{"HTTP2Preferred"})
	described := func() types.Listener {
		return must[*elbv2.DescribeListenersOutput](t)(e.ELB.DescribeListeners(e.ctx, &elbv2.DescribeListenersInput{ListenerArns: []string{aws.ToString(l.ListenerArn)}})).Listeners[0]
	}
	check("describe", described(), "ELBSecurityPolicy-2016-08", []string{"HTTP2Preferred"})

	// The certificate list, for SNI.
	certs := func() map[string]bool {
		out := must[*elbv2.DescribeListenerCertificatesOutput](t)(e.ELB.DescribeListenerCertificates(e.ctx, &elbv2.DescribeListenerCertificatesInput{ListenerArn: l.ListenerArn}))
		got := map[string]bool{}
		for _, c := range out.Certificates {
			got[aws.ToString(c.CertificateArn)] = aws.ToBool(c.IsDefault)
		}
		return got
	}
	must[*elbv2.AddListenerCertificatesOutput](t)(e.ELB.AddListenerCertificates(e.ctx, &elbv2.AddListenerCertificatesInput{ListenerArn: l.ListenerArn,
		Certificates: []types.Certificate{{CertificateArn: aws.String(other)}, {CertificateArn: aws.String(other)}}}))
	if got, want := certs(), map[string]bool{defaultCert: true, other: false}; !maps.Equal(got, want) {
		t.Errorf("listener certificates %v, want %v", got, want)
	}
	_, err := e.ELB.AddListenerCertificates(e.ctx, &elbv2.AddListenerCertificatesInput{ListenerArn: l.ListenerArn,
		Certificates: []types.Certificate{{CertificateArn: aws.String(testCertificateARN)}}})
	wantCode(t, err, "CertificateNotFound")
	// ACM sees the listener's load balancer use both certificates, and keeps them.
	for _, arn := range []string{defaultCert, other} {
		if info, err := e.Cloud.DescribeCertificate(arn); err != nil || !slices.Equal(info.InUseBy, []string{aws.ToString(lb.LoadBalancerArn)}) {
			t.Errorf("certificate %s in use by %v, %v; want the load balancer", arn, info.InUseBy, err)
		}
		var cerr *cloud.Error
		if err := e.Cloud.DeleteCertificate(arn); !errors.As(err, &cerr) || cerr.Code != "ResourceInUseException" {
			t.Errorf("deleting certificate %s in use: %v", arn, err)
		}
	}
	_, err = e.ELB.RemoveListenerCertificates(e.ctx, &elbv2.RemoveListenerCertificatesInput{ListenerArn: l.ListenerArn,
		Certificates: []types.Certificate{{CertificateArn: aws.String(defaultCert)}}})
	wantCode(t, err, "OperationNotPermitted")
	must[*elbv2.RemoveListenerCertificatesOutput](t)(e.ELB.RemoveListenerCertificates(e.ctx, &elbv2.RemoveListenerCertificatesInput{ListenerArn: l.ListenerArn,
		Certificates: []types.Certificate{{CertificateArn: aws.String(other)}}}))
	if got, want := certs(), map[string]bool{defaultCert: true}; !maps.Equal(got, want) {
		t.Errorf("listener certificates after removal %v, want %v", got, want)
	}

	// ModifyListener: a new policy keeps the rest; back to TCP drops the TLS settings.
	must[*elbv2.ModifyListenerOutput](t)(e.ELB.ModifyListener(e.ctx, &elbv2.ModifyListenerInput{ListenerArn: l.ListenerArn, SslPolicy: aws.String("ELBSecurityPolicy-TLS13-1-2-2021-06")}))
	check("modified policy", described(), "ELBSecurityPolicy-TLS13-1-2-2021-06", []string{"HTTP2Preferred"})
	must[*elbv2.ModifyListenerOutput](t)(e.ELB.ModifyListener(e.ctx, &elbv2.ModifyListenerInput{ListenerArn: l.ListenerArn,
		Protocol: types.ProtocolEnumTcp, DefaultActions: forward(aws.ToString(tcp.TargetGroupArn))}))
	if got := described(); got.Protocol != types.ProtocolEnumTcp || got.SslPolicy != nil || len(got.Certificates) != 0 || len(got.AlpnPolicy) != 0 {
		t.Errorf("after the change to TCP: %+v", got)
	}
	_, err = e.ELB.DescribeListenerCertificates(e.ctx, &elbv2.DescribeListenerCertificatesInput{ListenerArn: l.ListenerArn})
	wantCode(t, err, "InvalidConfigurationRequest")
}
