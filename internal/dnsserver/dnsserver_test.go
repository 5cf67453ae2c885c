package dnsserver

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

type fixed map[string][]netip.Addr

func (f fixed) Resolve(name string) ([]netip.Addr, bool) {
	a, ok := f[name]
	return a, ok
}

func TestServeDNS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names := fixed{
		"web-0123456789abcdef.elb.us-east-1.moat.internal":            {netip.MustParseAddr("127.1.0.100"), netip.MustParseAddr("127.2.0.100")},
		"us-east-1a.web-0123456789abcdef.elb.us-east-1.moat.internal": {netip.MustParseAddr("127.1.0.100")},
	}
	srv := New("elb.us-east-1.moat.internal", names, slog.New(slog.NewTextHandler(io.Discard, nil)))
	addr, err := srv.ListenAndServe(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		qtype uint16
		net   string
		rcode int
		n     int
	}{
		{"WEB-0123456789abcdef.elb.us-east-1.moat.internal.", dns.TypeA, "udp", dns.RcodeSuccess, 2},
		{"web-0123456789abcdef.elb.us-east-1.moat.internal.", dns.TypeA, "tcp", dns.RcodeSuccess, 2},
		{"us-east-1a.web-0123456789abcdef.elb.us-east-1.moat.internal.", dns.TypeA, "udp", dns.RcodeSuccess, 1},
		{"web-0123456789abcdef.elb.us-east-1.moat.internal.", dns.TypeAAAA, "udp", dns.RcodeSuccess, 0},
		{"gone-0123456789abcdef.elb.us-east-1.moat.internal.", dns.TypeA, "udp", dns.RcodeNameError, 0},
		{"example.com.", dns.TypeA, "udp", dns.RcodeRefused, 0},
	}
	for _, tc := range cases {
		m := new(dns.Msg)
		m.SetQuestion(tc.name, tc.qtype)
		c := &dns.Client{Net: tc.net}
		r, _, err := c.Exchange(m, addr.String())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.Rcode != tc.rcode || len(r.Answer) != tc.n {
			t.Errorf("%s %s/%s: rcode %d with %d answers, want %d with %d", tc.name, dns.TypeToString[tc.qtype], tc.net, r.Rcode, len(r.Answer), tc.rcode, tc.n)
		}
		for _, rr := range r.Answer {
			if rr.Header().Ttl != TTL {
				t.Errorf("ttl %d", rr.Header().Ttl)
			}
		}
	}
}
