package explain

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/sgresolve"
)

// world: load balancer "web" (group sg-front, admitting 127.0.0.2 on 80; outbound to 127.1.0.0/16
// on 30080) in zone a at 127.1.0.100, forwarding to instance i-a (127.1.0.10, group sg-nodes,
// admitting sg-front on 30080 and 127.0.0.5 on 22).
func world() cloud.State {
	var st cloud.State
	st.SecurityGroups = []cloud.SecurityGroup{
		{ID: "sg-front", Name: "front",
			Ingress: []cloud.Rule{{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRv4: "127.0.0.2/32", Description: "the office"}},
			Egress:  []cloud.Rule{{Protocol: "tcp", FromPort: 30080, ToPort: 30080, CIDRv4: "127.1.0.0/16"}}},
		{ID: "sg-nodes", Name: "nodes", Ingress: []cloud.Rule{
			{Protocol: "tcp", FromPort: 30080, ToPort: 30080, GroupID: "sg-front"},
			{Protocol: "tcp", FromPort: 22, ToPort: 22, CIDRv4: "127.0.0.5/32"},
		}},
	}
	st.Interfaces = []cloud.NetworkInterface{{ID: "eni-a", PrivateIPs: []string{"127.1.0.10"}, Groups: []string{"sg-nodes"}, InstanceID: "i-a"}}
	st.Instances = []cloud.Instance{{ID: "i-a", PrivateIP: "127.1.0.10", InterfaceID: "eni-a", State: "running"}}
	st.LoadBalancers = []cloud.LoadBalancer{{ARN: "arn:lb/web", Name: "web", DNSName: "web-1.elb.us-east-1.moat.internal",
		Zones: []cloud.LoadBalancerZone{{Zone: "us-east-1a", Address: "127.1.0.100"}}, SecurityGroups: []string{"sg-front"}}}
	st.Listeners = []cloud.Listener{{ARN: "arn:listener/web/80", LoadBalancerARN: "arn:lb/web", Port: 80, Protocol: "TCP", TargetGroupARN: "arn:tg/web"}}
	return st
}

var nodeA = dataplane.DecidedTarget{ID: "i-a", Port: 30080, Addr: netip.MustParseAddrPort("127.1.0.10:30080"), Zone: "us-east-1a",
	Health: dataplane.Health{State: "healthy"}, TrafficAllowed: true}

// decideAs is a data plane that decides every flow to 127.1.0.100:80 as d.
func decideAs(d dataplane.Decision) func(client, lb netip.AddrPort, network string) (dataplane.Decision, bool) {
	return func(_, lb netip.AddrPort, network string) (dataplane.Decision, bool) {
		d.LoadBalancerID, d.ListenerID, d.TargetGroupID, d.Zone = "arn:lb/web", "arn:listener/web/80", "arn:tg/web", "us-east-1a"
		return d, lb == netip.MustParseAddrPort("127.1.0.100:80") && network == "tcp"
	}
}

func TestExplain(t *testing.T) {
	blocked := nodeA
	blocked.TrafficAllowed = false
	draining := nodeA
	draining.Draining = true
	noEgress := func(st *cloud.State) { st.SecurityGroups[0].Egress = nil }
	noIngress := func(st *cloud.State) { st.SecurityGroups[1].Ingress = st.SecurityGroups[1].Ingress[1:] }
	cases := []struct {
		name     string
		query    Query
		edit     func(*cloud.State)
		decision dataplane.Decision
		firewall firewall.Mode
		verdict  string
		// texts that the answer's steps and fix must hold
		want []string
	}{
		{name: "admitted by name", query: Query{From: "127.0.0.2", To: "WEB-1.elb.us-east-1.moat.internal.:80"},
			decision: dataplane.Decision{Target: &nodeA, Eligible: []dataplane.DecidedTarget{nodeA}, InScope: []dataplane.DecidedTarget{nodeA}},
			verdict:  Allowed,
			want: []string{"127.0.0.2 is admitted by sg-front (front) inbound tcp 80 from 127.0.0.2/32", "target i-a port 30080 (127.1.0.10:30080, zone us-east-1a), healthy",
				"may send to 127.1.0.10:30080 by sg-front (front) outbound tcp 30080 to 127.1.0.0/16", "admits the load balancer by sg-nodes (nodes) inbound tcp 30080 from sg-front"}},
		{name: "failing open", query: Query{From: "127.0.0.2", To: "127.1.0.100:80"},
			decision: dataplane.Decision{Target: &nodeA, FailingOpen: true, Eligible: []dataplane.DecidedTarget{nodeA}, InScope: []dataplane.DecidedTarget{nodeA}},
			verdict:  Allowed, want: []string{"fails open"}},
		{name: "load balancer group", query: Query{From: "127.0.0.3", To: "127.1.0.100:80"},
			decision: dataplane.Decision{Denied: dataplane.DenySecurityGroup},
			verdict:  DroppedByLoadBalancerGroup,
			want:     []string{"no inbound rule of sg-front (front) admits 127.0.0.3 on tcp 80", "aws ec2 authorize-security-group-ingress --group-id sg-front --protocol tcp --port 80 --cidr 127.0.0.3/32"}},
		{name: "outbound rules", query: Query{From: "127.0.0.2", To: "127.1.0.100:80"}, edit: noEgress,
			decision: dataplane.Decision{Denied: dataplane.DenyNoTarget, InScope: []dataplane.DecidedTarget{blocked}},
			verdict:  DroppedByTargetGroup,
			want:     []string{"no outbound rule of sg-front (front) allows tcp 30080 to 127.1.0.10", "authorize-security-group-egress --group-id sg-front --ip-permissions IpProtocol=tcp,FromPort=30080,ToPort=30080,IpRanges=[{CidrIp=127.1.0.10/32}]"}},
		{name: "target's rules", query: Query{From: "127.0.0.2", To: "127.1.0.100:80"}, edit: noIngress,
			decision: dataplane.Decision{Denied: dataplane.DenyNoTarget, InScope: []dataplane.DecidedTarget{blocked}},
			verdict:  DroppedByTargetGroup,
			want:     []string{"no inbound rule of target i-a's groups sg-nodes (nodes) admits the load balancer on tcp 30080", "--group-id sg-nodes --protocol tcp --port 30080 --source-group sg-front"}},
		{name: "nothing registered", query: Query{From: "127.0.0.2", To: "127.1.0.100:80"},
			decision: dataplane.Decision{Denied: dataplane.DenyNoTarget},
			verdict:  NoHealthyTarget, want: []string{"no target is registered in zone us-east-1a", "aws elbv2 register-targets --target-group-arn arn:tg/web"}},
		{name: "draining", query: Query{From: "127.0.0.2", To: "127.1.0.100:80"},
			decision: dataplane.Decision{Denied: dataplane.DenyNoTarget, InScope: []dataplane.DecidedTarget{draining}},
			verdict:  NoHealthyTarget, want: []string{"every target in zone us-east-1a is draining"}},
		{name: "no listener", query: Query{From: "127.0.0.2", To: "127.1.0.100:81"},
			verdict: NoListener, want: []string{"no tcp listener on port 81", "aws elbv2 create-listener --load-balancer-arn arn:lb/web --protocol TCP --port 81"}},
		{name: "udp, no listener", query: Query{From: "127.0.0.2", To: "127.1.0.100:80", Protocol: "UDP"},
			verdict: NoListener},
		{name: "direct, admitted", query: Query{From: "127.0.0.5", To: "127.1.0.10:22"}, firewall: firewall.Enforce,
			verdict: Allowed, want: []string{"i-a (eni-a) admits 127.0.0.5 by sg-nodes (nodes) inbound tcp 22 from 127.0.0.5/32"}},
		{name: "direct by instance ID, a member", query: Query{From: "127.1.0.100", To: "i-a:30080"},
			verdict: Allowed, want: []string{"by sg-nodes (nodes) inbound tcp 30080 from sg-front", "the instance firewall of the host that carries it"}},
		{name: "direct, dropped", query: Query{From: "127.0.0.2", To: "127.1.0.10:30080"}, firewall: firewall.Enforce,
			verdict: DroppedByTargetGroup, want: []string{"no inbound rule of i-a's groups sg-nodes (nodes) admits 127.0.0.2 on tcp 30080", "this moat lb's instance firewall (enforce mode)",
				"--group-id sg-nodes --protocol tcp --port 30080 --cidr 127.0.0.2/32"}},
		{name: "direct, audit", query: Query{From: "127.0.0.2", To: "127.1.0.10:30080"}, firewall: firewall.Audit,
			verdict: Allowed, want: []string{"audit mode, so the flow passes"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := world()
			if tc.edit != nil {
				tc.edit(&st)
			}
			facts := Facts{State: st, Resolver: sgresolve.New(st), Decide: decideAs(tc.decision), Firewall: tc.firewall,
				Local: func(a netip.Addr) bool { return a == netip.MustParseAddr("127.1.0.10") }}
			a, err := Explain(facts, tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Paths) != 1 || a.Paths[0].Verdict != tc.verdict {
				t.Fatalf("got %+v, want one path with verdict %s", a, tc.verdict)
			}
			var text bytes.Buffer
			if err := a.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(text.String(), w) {
					t.Errorf("the answer lacks %q:\n%s", w, text.String())
				}
			}
			// An audited flow passes, and gets the fix that would stop it being logged as would_deny.
			if (a.Paths[0].Fix == "") != (tc.verdict == Allowed && tc.firewall != firewall.Audit) {
				t.Errorf("verdict %s with fix %q", tc.verdict, a.Paths[0].Fix)
			}
		})
	}
}

func TestExplainRefusesBadQueries(t *testing.T) {
	st := world()
	facts := Facts{State: st, Resolver: sgresolve.New(st), Decide: decideAs(dataplane.Decision{})}
	for _, q := range []Query{
		{From: "somewhere", To: "127.1.0.100:80"},
		{From: "127.0.0.2", To: "127.1.0.100"},
		{From: "127.0.0.2", To: "127.1.0.100:0"},
		{From: "127.0.0.2", To: "127.1.0.100:http"},
		{From: "127.0.0.2", To: "127.9.9.9:80"},
		{From: "127.0.0.2", To: "nobody.example:80"},
		{From: "127.0.0.2", To: "127.1.0.100:80", Protocol: "icmp"},
		{From: "::1", To: "web-1.elb.us-east-1.moat.internal:80"}, // no IPv6 address
	} {
		if _, err := Explain(facts, q); !IsInvalid(err) {
			t.Errorf("%+v: %v, want an invalid query", q, err)
		}
	}
}
