package dnsserver

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

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

// The zone apex answers as an authoritative server does: its SOA and NS records, the name
// server's address, NODATA for other types; every negative answer carries the SOA, every answer
// the AA bit. Over UDP and TCP, with a real client.
func TestApexAndNegativeAnswers(t *testing.T) {
	const zone = "elb.us-east-1.moat.internal."
	names := fixed{
		"web-0123456789abcdef.elb.us-east-1.moat.internal": {netip.MustParseAddr("127.1.0.100")},
		// A dualstack load balancer: the resolver gives both families, each type answers its own.
		"ds-0123456789abcdef.elb.us-east-1.moat.internal": {netip.MustParseAddr("127.1.0.100"), netip.MustParseAddr("2001:db8:0:1::64"),
			netip.MustParseAddr("127.2.0.100"), netip.MustParseAddr("2001:db8:0:2::64")},
	}
	srv := New("elb.us-east-1.moat.internal", names, slog.New(slog.NewTextHandler(io.Discard, nil)))
	addr, err := srv.ListenAndServe(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		rcode  int
		answer []string // the records' types and data, as dig prints them after the TTL
		extra  []string
		soa    bool // the SOA in the authority section
	}
	cases := []struct {
		name  string
		qtype uint16
		want  want
	}{
		{zone, dns.TypeSOA, want{rcode: dns.RcodeSuccess, answer: []string{"SOA ns." + zone + " hostmaster." + zone + " 1 7200 900 1209600 60"}}},
		{"ELB.us-east-1.moat.internal.", dns.TypeSOA, want{rcode: dns.RcodeSuccess, answer: []string{"SOA ns." + zone + " hostmaster." + zone + " 1 7200 900 1209600 60"}}},
		{zone, dns.TypeNS, want{rcode: dns.RcodeSuccess, answer: []string{"NS ns." + zone}, extra: []string{"A 127.0.0.1"}}},
		{zone, dns.TypeANY, want{rcode: dns.RcodeSuccess, answer: []string{"SOA ns." + zone + " hostmaster." + zone + " 1 7200 900 1209600 60", "NS ns." + zone}}},
		{zone, dns.TypeA, want{rcode: dns.RcodeSuccess, soa: true}},
		{zone, dns.TypeTXT, want{rcode: dns.RcodeSuccess, soa: true}},
		{"ns." + zone, dns.TypeA, want{rcode: dns.RcodeSuccess, answer: []string{"A 127.0.0.1"}}},
		{"ns." + zone, dns.TypeAAAA, want{rcode: dns.RcodeSuccess, soa: true}},
		{"web-0123456789abcdef." + zone, dns.TypeAAAA, want{rcode: dns.RcodeSuccess, soa: true}},
		{"web-0123456789abcdef." + zone, dns.TypeMX, want{rcode: dns.RcodeSuccess, soa: true}},
		{"ds-0123456789abcdef." + zone, dns.TypeAAAA, want{rcode: dns.RcodeSuccess, answer: []string{"AAAA 2001:db8:0:1::64", "AAAA 2001:db8:0:2::64"}}},
		{"ds-0123456789abcdef." + zone, dns.TypeA, want{rcode: dns.RcodeSuccess, answer: []string{"A 127.1.0.100", "A 127.2.0.100"}}},
		{"ds-0123456789abcdef." + zone, dns.TypeANY, want{rcode: dns.RcodeSuccess, answer: []string{"A 127.1.0.100", "AAAA 2001:db8:0:1::64", "A 127.2.0.100", "AAAA 2001:db8:0:2::64"}}},
		{"ds-0123456789abcdef." + zone, dns.TypeTXT, want{rcode: dns.RcodeSuccess, soa: true}},
		{"gone-0123456789abcdef." + zone, dns.TypeA, want{rcode: dns.RcodeNameError, soa: true}},
		{"gone-0123456789abcdef." + zone, dns.TypeSOA, want{rcode: dns.RcodeNameError, soa: true}},
	}
	records := func(rrs []dns.RR) []string {
		var out []string
		for _, rr := range rrs {
			if rr.Header().Ttl != TTL {
				t.Errorf("%s: TTL %d, want %d", rr, rr.Header().Ttl, TTL)
			}
			f := strings.Fields(rr.String())
			out = append(out, strings.Join(f[3:], " "))
		}
		return out
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range cases {
			t.Run(network+" "+dns.TypeToString[tc.qtype]+" "+tc.name, func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion(tc.name, tc.qtype)
				r, _, err := (&dns.Client{Net: network}).Exchange(m, addr.String())
				if err != nil {
					t.Fatal(err)
				}
				if !r.Authoritative {
					t.Error("AA bit not set")
				}
				if r.Rcode != tc.want.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.want.rcode])
				}
				if got := records(r.Answer); !slices.Equal(got, tc.want.answer) {
					t.Errorf("answer %q, want %q", got, tc.want.answer)
				}
				if got := records(r.Extra); !slices.Equal(got, tc.want.extra) {
					t.Errorf("additional %q, want %q", got, tc.want.extra)
				}
				gotSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA && r.Ns[0].Header().Name == zone
				if gotSOA != tc.want.soa || !tc.want.soa && len(r.Ns) != 0 {
					t.Errorf("authority %v, want the SOA: %v", r.Ns, tc.want.soa)
				}
			})
		}
	}
}

// The name server's address is the one the server listens on.
func TestNameServerAddress(t *testing.T) {
	srv := New("elb.us-east-1.moat.internal", fixed{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	addr, err := srv.ListenAndServe(t.Context(), "127.0.0.53:0")
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("ns.elb.us-east-1.moat.internal.", dns.TypeA)
	r, _, err := new(dns.Client).Exchange(m, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.53" {
		t.Errorf("ns answer %v, want A 127.0.0.53", r.Answer)
	}
}

// DNS over TCP holds at most MaxTCPConnections connections: one more waits until one closes.
func TestTCPConnectionCap(t *testing.T) {
	names := fixed{"web-0123456789abcdef.elb.us-east-1.moat.internal": {netip.MustParseAddr("127.1.0.100")}}
	srv := New("elb.us-east-1.moat.internal", names, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.MaxTCPConnections = 2
	addr, err := srv.ListenAndServe(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	query := func(c *dns.Conn) error {
		m := new(dns.Msg)
		m.SetQuestion("web-0123456789abcdef.elb.us-east-1.moat.internal.", dns.TypeA)
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if err := c.WriteMsg(m); err != nil {
			return err
		}
		_, err := c.ReadMsg()
		return err
	}
	var held []*dns.Conn
	for range 2 {
		c, err := dns.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := query(c); err != nil { // accepted and served
			t.Fatal(err)
		}
		held = append(held, c)
	}
	extra, err := dns.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := query(extra); err == nil {
		t.Fatal("a third TCP connection was served beyond the cap of 2")
	}
	held[0].Close()
	extra.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.ReadMsg(); err != nil {
		t.Fatalf("the waiting connection was not served once a slot freed: %v", err)
	}
}
