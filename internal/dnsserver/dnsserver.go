// Package dnsserver answers DNS queries for load balancer names, so that clients can use an NLB's
// hostname exactly as on AWS. It is authoritative for one zone (elb.<region>.<suffix>) and asks a
// Resolver for the addresses of each name; it never touches the host's resolver configuration.
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
)

// TTL of answers: AWS gives NLB records 60 seconds.
const TTL = 60

// Resolver returns the addresses a load balancer name stands for; ok is false for a name that
// does not exist (NXDOMAIN).
type Resolver interface {
	Resolve(name string) (addrs []netip.Addr, ok bool)
}

// Server serves one zone over UDP and TCP on the same address.
type Server struct {
	zone     string // fully qualified, lower case
	resolver Resolver
	log      *slog.Logger

	mu      sync.Mutex
	servers []*dns.Server
}

// New returns a server for zone (e.g. "elb.us-east-1.moat.internal").
func New(zone string, r Resolver, log *slog.Logger) *Server {
	return &Server{zone: dns.Fqdn(strings.ToLower(zone)), resolver: r, log: log}
}

// ListenAndServe serves on addr (UDP and TCP) until ctx ends. It returns once both sockets are
// bound, reporting a bind failure; serving errors after that are logged.
func (s *Server) ListenAndServe(ctx context.Context, addr string) (net.Addr, error) {
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	s.mu.Lock()
	s.servers = []*dns.Server{udp, tcp}
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

// ServeDNS answers A and AAAA queries for names in the zone.
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
	addrs, ok := s.resolver.Resolve(strings.TrimSuffix(name, "."))
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.soa()}
		_ = w.WriteMsg(m)
		return
	}
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: TTL}
		switch {
		case q.Qtype == dns.TypeA && a.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case q.Qtype == dns.TypeAAAA && a.Is6() && !a.Is4In6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{s.soa()} // NODATA: the name exists, not with this type
	}
	_ = w.WriteMsg(m)
}

func (s *Server) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:      "ns." + s.zone,
		Mbox:    "hostmaster." + s.zone,
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: TTL,
	}
}
