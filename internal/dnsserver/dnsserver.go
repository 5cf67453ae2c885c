// Package dnsserver answers DNS queries for load balancer names, so that clients can use an NLB's
// hostname exactly as on AWS. It is authoritative for one zone (elb.<region>.<suffix>): the apex
// has its SOA and NS records, the name server ns.<zone> its own address, and every other name is
// asked of a Resolver; negative answers carry the SOA (RFC 2308). It never touches the host's
// resolver configuration.
package dnsserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
)

// TTL of answers: AWS gives NLB records 60 seconds. It is also the SOA's minimum, so a resolver
// caches a name's absence no longer than a name's addresses.
const TTL = 60

// MaxTCPConnections is the default cap on concurrent DNS connections over TCP; more wait to be
// accepted. Each lasts at most 2 s without a query (the DNS library's read timeout) and 8 s idle
// between queries.
const MaxTCPConnections = 256

// Resolver returns the addresses a load balancer name stands for; ok is false for a name that
// does not exist (NXDOMAIN).
type Resolver interface {
	Resolve(name string) (addrs []netip.Addr, ok bool)
}

// Server serves one zone over UDP and TCP on the same address.
type Server struct {
	// MaxTCPConnections caps concurrent TCP connections; 0 means MaxTCPConnections. Set it before
	// ListenAndServe.
	MaxTCPConnections int

	zone     string // fully qualified, lower case
	nsName   string // the zone's name server, ns.<zone>
	resolver Resolver
	log      *slog.Logger

	mu      sync.Mutex
	nsAddrs []netip.Addr // of nsName: where the server listens
	servers []*dns.Server
}

// New returns a server for zone (e.g. "elb.us-east-1.moat.internal").
func New(zone string, r Resolver, log *slog.Logger) *Server {
	zone = dns.Fqdn(strings.ToLower(zone))
	return &Server{zone: zone, nsName: "ns." + zone, resolver: r, log: log, nsAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
}

// ListenAndServe serves on addr (UDP and TCP) until ctx ends. It returns once both sockets are
// bound, reporting a bind failure; serving errors after that are logged.
func (s *Server) ListenAndServe(ctx context.Context, addr string) (net.Addr, error) {
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	maxTCP := s.MaxTCPConnections
	if maxTCP <= 0 {
		maxTCP = MaxTCPConnections
	}
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: netutil.LimitListener(ln, maxTCP), Handler: s}
	s.mu.Lock()
	s.servers = []*dns.Server{udp, tcp}
	s.nsAddrs = nameServerAddrs(pc.LocalAddr())
	s.mu.Unlock()
	for _, srv := range s.servers {
		go func() {
			if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("dns server stopped", "err", err)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, srv := range s.servers {
			_ = srv.Shutdown()
		}
	}()
	return pc.LocalAddr(), nil
}

// listenBoth binds UDP and TCP on the same port, so one address serves both. With port 0 the
// kernel picks the UDP port, which TCP may already use elsewhere: then it tries another.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || attempt == 20 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
}

// nameServerAddrs are the addresses ns.<zone> stands for: the one the server is bound to, or
// loopback when it listens on every address.
func nameServerAddrs(bound net.Addr) []netip.Addr {
	ap, err := netip.ParseAddrPort(bound.String())
	if err != nil {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	a := ap.Addr().Unmap()
	switch {
	case a.IsUnspecified() && a.Is6():
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	case a.IsUnspecified():
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	return []netip.Addr{a}
}

// ServeDNS answers queries for names in the zone: SOA and NS at the apex, A and AAAA for the name
// server and for load balancer names, NODATA for other types of existing names, NXDOMAIN for the
// rest; negative answers carry the SOA for caching. Names outside the zone are refused.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if name != s.zone && !strings.HasSuffix(name, "."+s.zone) {
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		_ = w.WriteMsg(m)
		return
	}
	switch name {
	case s.zone:
		s.answerApex(m, q)
	case s.nsName:
		s.mu.Lock()
		addrs := s.nsAddrs
		s.mu.Unlock()
		s.answerAddrs(m, q, addrs)
	default:
		addrs, ok := s.resolver.Resolve(strings.TrimSuffix(name, "."))
		if !ok {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{s.soa()}
			break
		}
		s.answerAddrs(m, q, addrs)
	}
	_ = w.WriteMsg(m)
}

// answerApex answers for the zone's own name: its SOA and NS records, NODATA for other types.
func (s *Server) answerApex(m *dns.Msg, q dns.Question) {
	switch q.Qtype {
	case dns.TypeSOA:
		m.Answer = []dns.RR{s.soa()}
	case dns.TypeNS:
		m.Answer = []dns.RR{s.ns()}
		s.mu.Lock()
		m.Extra = addrRecords(s.nsName, dns.TypeANY, s.nsAddrs) // glue: the name server's addresses
		s.mu.Unlock()
	case dns.TypeANY:
		m.Answer = []dns.RR{s.soa(), s.ns()}
	default:
		m.Ns = []dns.RR{s.soa()}
	}
}

// answerAddrs answers for a name that exists with addrs: those of the asked type, or NODATA.
func (s *Server) answerAddrs(m *dns.Msg, q dns.Question, addrs []netip.Addr) {
	m.Answer = addrRecords(q.Name, q.Qtype, addrs)
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{s.soa()} // NODATA: the name exists, not with this type
	}
}

// addrRecords are the A (qtype A or ANY) and AAAA (AAAA or ANY) records of name for addrs.
func addrRecords(name string, qtype uint16, addrs []netip.Addr) []dns.RR {
	var rrs []dns.RR
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: TTL}
		switch {
		case (qtype == dns.TypeA || qtype == dns.TypeANY) && a.Is4():
			hdr.Rrtype = dns.TypeA
			rrs = append(rrs, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case (qtype == dns.TypeAAAA || qtype == dns.TypeANY) && a.Is6() && !a.Is4In6():
			hdr.Rrtype = dns.TypeAAAA
			rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return rrs
}

// soa is the zone's SOA record. There are no secondaries to refresh; the timers are Route 53's
// for a hosted zone, the minimum (the negative-caching TTL) is TTL.
func (s *Server) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:      s.nsName,
		Mbox:    "hostmaster." + s.zone,
		Serial:  1,
		Refresh: 7200, Retry: 900, Expire: 1209600, Minttl: TTL,
	}
}

// ns is the zone's NS record: moat lb's own DNS server, by the name it answers for.
func (s *Server) ns() dns.RR {
	return &dns.NS{Hdr: dns.RR_Header{Name: s.zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: TTL}, Ns: s.nsName}
}
