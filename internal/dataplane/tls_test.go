package dataplane

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/lbtest"
	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/tlspolicy"
)

// tlsWorld is where most TLS tests start: a test net, an engine, a CA, and a backend in zone a
// with its health-check port.
type tlsWorld struct {
	n      testNet
	h      *harness
	ca     lbtest.CA
	hcPort uint16
	a      *backend
}

func newTLSWorld(t *testing.T) tlsWorld {
	t.Helper()
	w := tlsWorld{n: newNet(), h: newHarness(t), ca: lbtest.NewCA(t)}
	w.hcPort = freePort(t, w.n.inA(0))
	w.a = newBackend(t, "a", w.n.inA(0), "zone-a", w.hcPort)
	return w
}

// leaf issues a server certificate for names (the first is also its common name).
func leaf(t testing.TB, ca lbtest.CA, names ...string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, names[0], names...).KeyPair(t)
}

func mustPolicy(t testing.TB, name string) tlspolicy.Policy {
	t.Helper()
	p, err := tlspolicy.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustALPN(t testing.TB, name string) []string {
	t.Helper()
	protos, err := tlspolicy.ALPN(name)
	if err != nil {
		t.Fatal(err)
	}
	return protos
}

// tlsClient is a client of a TLS listener after its handshake.
type tlsClient struct {
	c *tls.Conn
	r *bufio.Reader
}

// dialTLS dials dst from src and completes a TLS handshake with cfg.
func dialTLS(t testing.TB, src netip.Addr, dst netip.AddrPort, cfg *tls.Config) (*tlsClient, error) {
	t.Helper()
	raw, err := dialFrom(src, dst, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, cfg)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(longWait))
	if err := c.Handshake(); err != nil {
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return &tlsClient{c: c, r: bufio.NewReader(c)}, nil
}

// name reads the backend's name line.
func (c *tlsClient) name() (string, error) {
	c.c.SetReadDeadline(time.Now().Add(longWait))
	defer c.c.SetReadDeadline(time.Time{})
	line, err := c.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

func (c *tlsClient) echo(msg string) error {
	c.c.SetDeadline(time.Now().Add(longWait))
	defer c.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.c, msg+"\n"); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return errors.New("echo: got " + line)
	}
	return nil
}

// tlsLB is a load balancer in zone a with one TLS listener on port.
func tlsLB(n testNet, port uint16, lt *ListenerTLS, admit *secgroup.Policy, tg TargetGroup) LoadBalancer {
	return LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TLS, Port: port, AdmitTCP: admit, TLS: lt, TargetGroup: tg,
	}}}
}

func TestTLSTerminates(t *testing.T) {
	t.Parallel()
	w := newTLSWorld(t)
	n, h, ca, hcPort, a := w.n, w.h, w.ca, w.hcPort, w.a
	port := freePort(t, n.lbA())
	h.apply(tlsLB(n, port, &ListenerTLS{
		Certificates: []tls.Certificate{leaf(t, ca, "lb.test")},
		Policy:       mustPolicy(t, "ELBSecurityPolicy-TLS13-1-2-2021-06"),
	}, nil, group("tg", hcPort, a.cfg())))
	lbAddr := ap(n.lbA(), port)

	c, err := dialTLS(t, client2, lbAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "lb.test"})
	if err != nil {
		t.Fatalf("handshake with a verifying client: %v", err)
	}
	if v := c.c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(v))
	}
	if name, err := c.name(); err != nil || name != "a" {
		t.Fatalf("backend name %q, %v", name, err)
	}
	if err := c.echo("ping"); err != nil {
		t.Fatal(err)
	}
	recs := a.echo.records()
	if len(recs) != 1 || recs[0].remote.Addr() != n.lbA() {
		t.Errorf("backend saw %v, want one connection from the zone address %v", recs, n.lbA())
	}

	// A client that speaks TLS 1.0 only is refused by the TLS 1.2+ policy, and counted.
	old := &tls.Config{RootCAs: ca.Pool(), ServerName: "lb.test", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}
	if _, err := dialTLS(t, client2, lbAddr, old); err == nil {
		t.Error("TLS 1.0 client completed a handshake under ELBSecurityPolicy-TLS13-1-2-2021-06")
	}
	waitFor(t, longWait, "the handshake error to be counted", func() bool {
		return h.metric("moat_dataplane_tls_handshake_errors_total", "listener", "l") == 1
	})

	// Userspace in both modes: exact payload bytes, one proxied flow.
	c.c.Close()
	waitFor(t, longWait, "the flow to end", func() bool {
		return h.metric("moat_dataplane_active_flows", "listener", "l") == 0
	})
	in := h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "in")
	out := h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "out")
	if in != 5 || out != 7 {
		t.Errorf("bytes in, out = %v, %v; want the plaintext payload, 5 and 7", in, out)
	}
	if got := h.metric("moat_dataplane_proxied_flows_total", "listener", "l"); got != 1 {
		t.Errorf("proxied flows = %v, want 1 (a TLS listener is never on the fast path)", got)
	}
}

func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	w := newTLSWorld(t)
	n, h, ca, hcPort, a := w.n, w.h, w.ca, w.hcPort, w.a
	port := freePort(t, n.lbA())
	h.apply(tlsLB(n, port, &ListenerTLS{
		Certificates: []tls.Certificate{leaf(t, ca, "lb.test")}, HandshakeTimeout: 300 * time.Millisecond,
	}, nil, group("tg", hcPort, a.cfg())))

	// A client that connects and never says hello is closed once the timeout passes.
	raw, err := dialFrom(client2, ap(n.lbA(), port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	raw.SetReadDeadline(time.Now().Add(longWait))
	if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("silent client read %v, want EOF", err)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("closed after %v, before the 300ms handshake timeout", waited)
	}
	waitFor(t, longWait, "the handshake error to be counted", func() bool {
		return h.metric("moat_dataplane_tls_handshake_errors_total", "listener", "l") == 1
	})
	if recs := a.echo.records(); len(recs) != 0 {
		t.Errorf("backend saw %v; a client without a handshake must not reach it", recs)
	}
}

func TestTLSSNI(t *testing.T) {
	t.Parallel()
	w := newTLSWorld(t)
	n, h, ca, hcPort, a := w.n, w.h, w.ca, w.hcPort, w.a
	port := freePort(t, n.lbA())
	// The default matches every name under .test: the list must still win for its names.
	h.apply(tlsLB(n, port, &ListenerTLS{
		Certificates: []tls.Certificate{leaf(t, ca, "*.test"), leaf(t, ca, "one.test"), leaf(t, ca, "two.test")},
	}, nil, group("tg", hcPort, a.cfg())))

	for _, tc := range []struct{ serverName, want string }{
		{"one.test", "one.test"},
		{"two.test", "two.test"},
		{"three.test", "*.test"}, // no match in the list: the default
		{"", "*.test"},           // no SNI: the default
	} {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: tc.serverName}
		if tc.serverName == "" {
			// Without a name the client sends no SNI and cannot verify a name: check the chain only.
			cfg.InsecureSkipVerify = true
		}
		c, err := dialTLS(t, client2, ap(n.lbA(), port), cfg)
		if err != nil {
			t.Errorf("server name %q: %v", tc.serverName, err)
			continue
		}
		leaf := c.c.ConnectionState().PeerCertificates[0]
		if leaf.Subject.CommonName != tc.want {
			t.Errorf("server name %q got certificate %q, want %q", tc.serverName, leaf.Subject.CommonName, tc.want)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
			t.Errorf("server name %q: certificate does not chain to the CA: %v", tc.serverName, err)
		}
		c.c.Close()
	}
}

func TestTLSALPN(t *testing.T) {
	t.Parallel()
	w := newTLSWorld(t)
	n, h, ca, hcPort, a := w.n, w.h, w.ca, w.hcPort, w.a
	cert := leaf(t, ca, "lb.test")
	ports := map[string]uint16{}
	var listeners []Listener
	for _, policy := range []string{"HTTP2Preferred", "HTTP2Optional", "HTTP1Only", "HTTP2Only", "None"} {
		ports[policy] = freePort(t, n.lbA())
		listeners = append(listeners, Listener{ID: policy, Protocol: TLS, Port: ports[policy],
			TLS:         &ListenerTLS{Certificates: []tls.Certificate{cert}, ALPN: mustALPN(t, policy)},
			TargetGroup: group("tg", hcPort, a.cfg())})
	}
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: listeners})

	for _, tc := range []struct {
		policy string
		offer  []string
		want   string
	}{
		{"HTTP2Preferred", []string{"http/1.1", "h2"}, "h2"},
		{"HTTP2Optional", []string{"h2", "http/1.1"}, "http/1.1"},
		{"HTTP2Optional", []string{"h2"}, "h2"},
		{"HTTP1Only", []string{"h2", "http/1.0"}, "http/1.0"},
		{"HTTP2Only", []string{"h2", "http/1.1"}, "h2"},
		{"HTTP2Only", []string{"spdy/3"}, ""}, // nothing in common: no ALPN, as NLB
		{"None", []string{"h2", "http/1.1"}, ""},
	} {
		c, err := dialTLS(t, client2, ap(n.lbA(), ports[tc.policy]),
			&tls.Config{RootCAs: ca.Pool(), ServerName: "lb.test", NextProtos: tc.offer})
		if err != nil {
			t.Errorf("%s, client offers %v: %v", tc.policy, tc.offer, err)
			continue
		}
		if got := c.c.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("%s, client offers %v: negotiated %q, want %q", tc.policy, tc.offer, got, tc.want)
		}
		if name, err := c.name(); err != nil || name != "a" {
			t.Errorf("%s: backend name %q, %v", tc.policy, name, err)
		}
		c.c.Close()
	}
}

func TestTLSDeniedBeforeHandshake(t *testing.T) {
	t.Parallel()
	w := newTLSWorld(t)
	n, h, ca, hcPort, a := w.n, w.h, w.ca, w.hcPort, w.a
	port := freePort(t, n.lbA())
	h.apply(tlsLB(n, port, &ListenerTLS{Certificates: []tls.Certificate{leaf(t, ca, "lb.test")}},
		policy("127.0.0.2/32"), group("tg", hcPort, a.cfg())))
	lbAddr := ap(n.lbA(), port)

	if _, err := dialTLS(t, client2, lbAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "lb.test"}); err != nil {
		t.Fatalf("admitted client: %v", err)
	}
	// The denied client's SYN is dropped (or, without socket filters, its connection is reset
	// at accept): it never gets as far as a ServerHello.
	if err := dialDenied(client3, lbAddr); err != nil {
		t.Fatalf("denied client: %v", err)
	}
	if got := h.metric("moat_dataplane_tls_handshake_errors_total", "listener", "l"); got != 0 {
		t.Errorf("handshake errors = %v, want 0: the denied client never started one", got)
	}
	for _, r := range a.echo.records() {
		if r.remote.Addr() == client3 {
			t.Errorf("the denied client reached the backend")
		}
	}
}

// tlsEchoTarget is a TLS target: it reads a PROXY v2 header when ppv2 is set, completes a TLS
// handshake with its own self-signed certificate (which moat must not verify), records what it
// negotiated, says its name and echoes.
type tlsEchoTarget struct {
	*server
	mu     sync.Mutex
	states []tls.ConnectionState
	pps    []ppInfo
}

func newTLSEchoTarget(t testing.TB, addr netip.Addr, name string, ppv2 bool) *tlsEchoTarget {
	self := lbtest.NewCA(t) // a CA nobody trusts
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf(t, self, "target.internal")}, NextProtos: []string{"h2", "http/1.1"}}
	tt := &tlsEchoTarget{}
	tt.server = newServer(t, ap(addr, 0), func(s *server, c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(longWait))
		var pp ppInfo
		if ppv2 {
			var err error
			if pp, err = readPPv2(c); err != nil {
				s.t.Errorf("%s: PROXY header: %v", name, err)
				return
			}
			if pp.local {
				return // a health check
			}
		}
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return // a TCP health check closes without a handshake
		}
		c.SetDeadline(time.Time{})
		s.record(connRecord{remote: addrPortOf(c.RemoteAddr()), pp: &pp})
		tt.mu.Lock()
		tt.states = append(tt.states, tc.ConnectionState())
		tt.pps = append(tt.pps, pp)
		tt.mu.Unlock()
		if _, err := io.WriteString(tc, name+"\n"); err != nil {
			return
		}
		io.Copy(tc, tc)
	})
	return tt
}

func (tt *tlsEchoTarget) sessions() ([]tls.ConnectionState, []ppInfo) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return append([]tls.ConnectionState(nil), tt.states...), append([]ppInfo(nil), tt.pps...)
}

func TestTLSTargetGroup(t *testing.T) {
	t.Parallel()
	n := newNet()
	h := newHarness(t)
	ca := lbtest.NewCA(t)
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort))
	target := newTLSEchoTarget(t, n.inA(0), "secure", true)
	tg := group("tg", hcPort, tgTarget("secure", target.addr, "zone-a"))
	tg.TLS, tg.ProxyProtocolV2, tg.PreserveClientIP = true, true, true
	port := freePort(t, n.lbA())
	h.apply(tlsLB(n, port, &ListenerTLS{
		Certificates: []tls.Certificate{leaf(t, ca, "lb.test")},
		Policy:       mustPolicy(t, "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"),
		ALPN:         mustALPN(t, "HTTP2Preferred"),
	}, nil, tg))

	c, err := dialTLS(t, client2, ap(n.lbA(), port), &tls.Config{RootCAs: ca.Pool(), ServerName: "lb.test", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if name, err := c.name(); err != nil || name != "secure" {
		t.Fatalf("backend name %q, %v", name, err)
	}
	if err := c.echo("over tls both ways"); err != nil {
		t.Fatal(err)
	}
	states, pps := target.sessions()
	if len(states) != 1 {
		t.Fatalf("target completed %d TLS sessions, want 1", len(states))
	}
	// NLB's backend policy behind a TLS 1.3 policy is TLS13-1-0-2021-06: TLS 1.3 here.
	if v := states[0].Version; v != tls.VersionTLS13 {
		t.Errorf("target session %s, want TLS 1.3", tls.VersionName(v))
	}
	if got := states[0].NegotiatedProtocol; got != "h2" {
		t.Errorf("target negotiated %q, want the client's h2", got)
	}
	if pps[0].src.Addr() != client2 || pps[0].dst != ap(n.lbA(), port) {
		t.Errorf("PROXY header %+v, want %v → %v", pps[0], client2, ap(n.lbA(), port))
	}
	if recs := target.records(); len(recs) != 1 || recs[0].remote.Addr() != client2 {
		t.Errorf("target saw %v, want the client's own address %v (client IP preservation)", recs, client2)
	}
}
