package dataplane

import (
	"crypto/tls"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/secgroup"
)

func TestPlanConfig(t *testing.T) {
	a, b := netip.MustParseAddr("127.1.0.100"), netip.MustParseAddr("127.2.0.100")
	zones := []Zone{{"zone-a", a}, {"zone-b", b}}
	tg := TargetGroup{ID: "tg", HealthCheck: HealthCheck{Protocol: "HTTP", Matcher: "nope"}}
	cert := newTestCA(t).leaf(t, "lb.test")
	p := planConfig(Config{LoadBalancers: []LoadBalancer{
		{ID: "lb1", Zones: zones, CrossZone: true, Listeners: []Listener{
			{ID: "both", Protocol: TCPUDP, Port: 80, AdmitUDP: policy("10.0.0.0/8"), TargetGroup: tg},
			{ID: "sctp", Protocol: "SCTP", Port: 81, TargetGroup: tg},
			{ID: "zero", Protocol: TCP, TargetGroup: tg},
			{ID: "nocert", Protocol: TLS, Port: 443, TLS: &ListenerTLS{}, TargetGroup: tg},
			// A TLS listener is a TCP socket: it cannot share a port with a TCP listener.
			{ID: "tls80", Protocol: TLS, Port: 80, TLS: &ListenerTLS{Certificates: []tls.Certificate{cert}}, TargetGroup: tg},
		}},
		{ID: "lb2", Zones: []Zone{{"zone-a", a}, {"zone-c", netip.Addr{}}}, Listeners: []Listener{
			{ID: "clash", Protocol: UDP, Port: 80, TCPIdleTimeout: time.Minute, TargetGroup: TargetGroup{ID: "tg2"}},
		}},
	}})

	var got []string
	for _, d := range p.sockets {
		got = append(got, d.route.listenerID+" "+d.key.network+" "+d.key.addrPort().String())
	}
	want := []string{"both tcp 127.1.0.100:80", "both udp 127.1.0.100:80", "both tcp 127.2.0.100:80", "both udp 127.2.0.100:80"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("sockets %q, want %q", got, want)
	}
	r := p.sockets[0].route
	if !r.policy.Equal(secgroup.AllowAll()) || r.idle != DefaultTCPIdleTimeout || !r.crossZone || r.zone != "zone-a" {
		t.Errorf("TCP route %+v: want allow-all, 350 s, cross-zone, zone-a", r)
	}
	if r := p.sockets[1].route; r.policy.Allows(netip.MustParseAddr("127.0.0.2")) || r.idle != DefaultUDPIdleTimeout {
		t.Errorf("UDP route %+v: want its own policy and 120 s", r)
	}

	fails := map[string]error{}
	for _, e := range p.failed {
		if fails[e.ListenerID] == nil {
			fails[e.ListenerID] = e
		}
	}
	for id, want := range map[string]string{
		"sctp":   `unsupported listener protocol "SCTP"`,
		"zero":   "listener port 0",
		"nocert": "TLS listener without a certificate",
		"tls80":  ErrListenerConflict.Error(),
		"clash":  `zone "zone-c" has no valid load balancer address`,
	} {
		if err := fails[id]; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("listener %s: error %v, want %q", id, err, want)
		}
	}
	if len(p.listeners["clash"].errs) != 2 || !errors.Is(p.listeners["clash"].errs[1], ErrListenerConflict) {
		t.Errorf("clash: errors %v, want a bad zone and a conflict", p.listeners["clash"].errs)
	}

	set := p.groups["tg"].set
	if set.hc.Timeout != DefaultHealthTimeoutHTTP || set.hostPort != 80 || set.matchErr == nil || set.match.match(200) {
		t.Errorf("target group settings %+v", set)
	}
	if _, ok := p.groups["tg2"]; !ok {
		t.Error("tg2 missing: its listener still serves on zone-a")
	}
}
