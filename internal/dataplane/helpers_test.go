package dataplane

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/moatlb/moat/internal/secgroup"
)

// The tests run real sockets on loopback. Every test takes its own /24s in
// 127.1.0.0/16 (zone a) and 127.2.0.0/16 (zone b) — load balancer addresses
// at .100, targets from .10 — so parallel tests never share an address; the
// clients are 127.0.0.x, outside both zones, as in moat's default inventory.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	client2 = netip.MustParseAddr("127.0.0.2")
	client3 = netip.MustParseAddr("127.0.0.3")
	client4 = netip.MustParseAddr("127.0.0.4")
)

const (
	deniedWait = 500 * time.Millisecond // a denied dial must still be waiting then
	longWait   = 20 * time.Second       // generous: the machine is shared and -race is slow
)

var blocks atomic.Int32

type testNet struct{ k byte }

func newNet() testNet { return testNet{k: byte(150 + blocks.Add(1)%100)} }

func (n testNet) lbA() netip.Addr              { return netip.AddrFrom4([4]byte{127, 1, n.k, 100}) }
func (n testNet) lbB() netip.Addr              { return netip.AddrFrom4([4]byte{127, 2, n.k, 100}) }
func (n testNet) inA(i int) netip.Addr         { return netip.AddrFrom4([4]byte{127, 1, n.k, byte(10 + i)}) }
func (n testNet) inB(i int) netip.Addr         { return netip.AddrFrom4([4]byte{127, 2, n.k, byte(10 + i)}) }
func (n testNet) zones() []Zone                { return []Zone{{"zone-a", n.lbA()}, {"zone-b", n.lbB()}} }
func (n testNet) zoneA() []Zone                { return []Zone{{"zone-a", n.lbA()}} }
func ap(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }

// handedOut are the ports freePort has returned: the kernel may offer a
// closed port again at once, and a test asking for several must get distinct
// ones.
var handedOut = struct {
	sync.Mutex
	ports map[uint16]bool
}{ports: map[uint16]bool{}}

// freePort finds a port free for both TCP and UDP on every addr, and not
// returned before in this test process. The engine binds it right after;
// another process taking it in between is unlikely on these per-test
// addresses.
func freePort(t testing.TB, addrs ...netip.Addr) uint16 {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap(addrs[0], 0)))
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		ok := true
		var closers []io.Closer
		for _, a := range addrs {
			if l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap(a, port))); err == nil {
				closers = append(closers, l)
			} else if a != addrs[0] {
				ok = false
			}
			if u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap(a, port))); err == nil {
				closers = append(closers, u)
			} else {
				ok = false
			}
		}
		ln.Close()
		for _, c := range closers {
			c.Close()
		}
		if ok && !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- the engine under test ---

type harness struct {
	t   testing.TB
	e   *Userspace
	reg *prometheus.Registry
	log *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// kernelTests runs every engine test with the kernel fast path on
// (go test -args -kernel); it needs CAP_NET_ADMIN.
var kernelTests = flag.Bool("kernel", false, "run the engine tests with the kernel fast path")

func newHarness(t testing.TB, edit ...func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry(), log: &syncBuffer{}}
	opts := Options{Registerer: h.reg, FlowLog: h.log, Kernel: *kernelTests}
	for _, e := range edit {
		e(&opts)
	}
	if testing.Verbose() {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if *kernelTests && os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
	e, err := NewUserspace(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	t.Cleanup(func() { e.Close() })
	return h
}

func (h *harness) apply(lbs ...LoadBalancer) {
	h.t.Helper()
	if err := h.e.Apply(Config{LoadBalancers: lbs}); err != nil {
		h.t.Fatalf("apply: %v", err)
	}
}

// metric sums the series of the named metric whose labels include labels.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metrics
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func (h *harness) health(tg, id string, port uint16) Health {
	h.t.Helper()
	hl, ok := h.e.TargetHealth(tg, id, port)
	if !ok {
		h.t.Fatalf("no health for target %s:%d of %s", id, port, tg)
	}
	return hl
}

func (h *harness) waitHealth(tg, id string, port uint16, state, reason string, timeout time.Duration) {
	h.t.Helper()
	waitFor(h.t, timeout, fmt.Sprintf("%s:%d to be %s/%s", id, port, state, reason), func() bool {
		hl := h.health(tg, id, port)
		return hl.State == state && (reason == "" || hl.Reason == reason)
	})
}

// policy admits the given CIDRs on every protocol and port.
func policy(cidrs ...string) *secgroup.Policy {
	var srcs []netip.Prefix
	for _, c := range cidrs {
		srcs = append(srcs, netip.MustParsePrefix(c))
	}
	return secgroup.Compile([]secgroup.Rule{{Protocol: secgroup.ProtocolAll, Sources: srcs}}, secgroup.ProtocolTCP, 1)
}

func tgTarget(id string, addr netip.AddrPort, zone string) Target {
	return Target{ID: id, Port: addr.Port(), Addr: addr.Addr(), Zone: zone, TrafficAllowed: true, HealthCheckAllowed: true}
}

// --- backends ---

// server is a TCP server on a fixed address that can be stopped and started
// again, running handler on every connection and remembering who connected.
type server struct {
	t       testing.TB
	addr    netip.AddrPort
	handler func(s *server, c *net.TCPConn)

	mu    sync.Mutex
	ln    *net.TCPListener
	live  map[*net.TCPConn]struct{}
	conns []connRecord
	ends  []error // how the echoed connections ended: nil for an end of stream
	wg    sync.WaitGroup
}

type connRecord struct {
	remote netip.AddrPort
	pp     *ppInfo // the PROXY header, when the server parses one
}

func newServer(t testing.TB, addr netip.AddrPort, handler func(*server, *net.TCPConn)) *server {
	t.Helper()
	s := &server{t: t, addr: addr, handler: handler, live: map[*net.TCPConn]struct{}{}}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(s.addr))
	if err != nil {
		s.t.Fatalf("listen %s: %v", s.addr, err)
	}
	s.addr = ap(s.addr.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port))
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.live[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					s.mu.Lock()
					delete(s.live, c)
					s.mu.Unlock()
					c.Close()
				}()
				s.handler(s, c)
			})
		}
	})
}

// stop closes the listener and every open connection (a backend crash).
func (s *server) stop() {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.live {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *server) record(r connRecord) {
	s.mu.Lock()
	s.conns = append(s.conns, r)
	s.mu.Unlock()
}

func (s *server) records() []connRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]connRecord(nil), s.conns...)
}

func (s *server) liveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// echoServer says its name on a line, then echoes. With ppv2 it first reads
// a PROXY v2 header and records it (closing LOCAL, i.e. health-check,
// connections right away).
func echoServer(t testing.TB, addr netip.AddrPort, name string, ppv2 bool) *server {
	return newServer(t, addr, func(s *server, c *net.TCPConn) {
		rec := connRecord{remote: addrPortOf(c.RemoteAddr())}
		if ppv2 {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			pp, err := readPPv2(c)
			if err != nil {
				s.t.Errorf("%s: PROXY header: %v", name, err)
				return
			}
			c.SetReadDeadline(time.Time{})
			rec.pp = &pp
			if pp.local {
				s.record(rec)
				return
			}
		}
		s.record(rec)
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		_, err := io.Copy(c, c)
		s.mu.Lock()
		s.ends = append(s.ends, err)
		s.mu.Unlock()
	})
}

// connEnds is how the echoed connections ended so far (nil: an end of stream).
func (s *server) connEnds() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.ends...)
}

// acceptServer accepts and closes: a health-check port.
func acceptServer(t testing.TB, addr netip.AddrPort) *server {
	return newServer(t, addr, func(s *server, c *net.TCPConn) {
		s.record(connRecord{remote: addrPortOf(c.RemoteAddr())})
	})
}

// backend is a test target: an echo server on its traffic port and an
// accept server on the group's health-check port.
type backend struct {
	name string
	zone string
	echo *server
	hc   *server
}

func newBackend(t testing.TB, name string, addr netip.Addr, zone string, hcPort uint16) *backend {
	tt := &backend{name: name, zone: zone}
	if hcPort != 0 { // first: the echo server's ephemeral port could be hcPort
		tt.hc = acceptServer(t, ap(addr, hcPort))
	}
	tt.echo = echoServer(t, ap(addr, 0), name, false)
	return tt
}

func (tt *backend) cfg() Target { return tgTarget(tt.name, tt.echo.addr, tt.zone) }

// udpEcho answers every datagram with "<name>:<payload>" and counts them.
type udpEcho struct {
	name    string
	conn    *net.UDPConn
	addr    netip.AddrPort
	mu      sync.Mutex
	sources []netip.AddrPort
	done    chan struct{}
}

func newUDPEcho(t testing.TB, addr netip.Addr, name string) *udpEcho {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap(addr, 0)))
	if err != nil {
		t.Fatal(err)
	}
	u := &udpEcho{name: name, conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), done: make(chan struct{})}
	go func() {
		defer close(u.done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			u.mu.Lock()
			u.sources = append(u.sources, from)
			u.mu.Unlock()
			c.WriteToUDPAddrPort(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-u.done })
	return u
}

func (u *udpEcho) received() []netip.AddrPort {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]netip.AddrPort(nil), u.sources...)
}

// --- clients ---

type client struct {
	c *net.TCPConn
	r *bufio.Reader
}

func dialFrom(src netip.Addr, dst netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(ap(src, 0)), Timeout: timeout}
	c, err := d.Dial("tcp", dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// connect dials dst from src and reads the backend's name.
func connect(t testing.TB, src netip.Addr, dst netip.AddrPort) (*client, string) {
	t.Helper()
	c, err := dialFrom(src, dst, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, src, err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{c: c, r: bufio.NewReader(c)}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	name, err := cl.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read backend name via %s from %s: %v", dst, src, err)
	}
	c.SetReadDeadline(time.Time{})
	return cl, strings.TrimSpace(name)
}

// names opens n connections and returns how many landed on each backend.
func names(t testing.TB, src netip.Addr, dst netip.AddrPort, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		c, name := connect(t, src, dst)
		got[name]++
		c.c.Close()
	}
	return got
}

// echo sends a line and expects it back.
func (c *client) echo(msg string) error { return c.echoWithin(msg, 10*time.Second) }

// echoWithin is echo with a deadline.
func (c *client) echoWithin(msg string, wait time.Duration) error {
	c.c.SetDeadline(time.Now().Add(wait))
	defer c.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.c, msg+"\n"); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return fmt.Errorf("echo: got %q, want %q", line, msg)
	}
	return nil
}

// waitClosed waits for the proxy to end the connection, and returns the error
// the client read (ECONNRESET for a reset, io.EOF for a close).
func (c *client) waitClosed(t testing.TB, timeout time.Duration) error {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(timeout))
	_, err := c.r.ReadString('\n')
	if err == nil {
		t.Fatal("connection still delivers data")
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after %v", timeout)
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// udpClient sends from src and waits for one reply.
type udpClient struct {
	c *net.UDPConn
}

func newUDPClient(t testing.TB, src netip.Addr, dst netip.AddrPort) *udpClient {
	t.Helper()
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(ap(src, 0)), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{c: c}
}

// ask sends msg and returns the reply, or an error after wait.
func (u *udpClient) ask(msg string, wait time.Duration) (string, error) {
	if _, err := u.c.Write([]byte(msg)); err != nil {
		return "", err
	}
	u.c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, err := u.c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// --- PROXY protocol v2, parsed independently of the encoder ---

type ppInfo struct {
	local    bool
	src, dst netip.AddrPort
}

func readPPv2(r io.Reader) (ppInfo, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return ppInfo{}, err
	}
	if !bytes.Equal(hdr[:12], []byte("\r\n\r\n\x00\r\nQUIT\n")) {
		return ppInfo{}, fmt.Errorf("bad signature % x", hdr[:12])
	}
	if hdr[12]>>4 != 2 {
		return ppInfo{}, fmt.Errorf("version %d", hdr[12]>>4)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return ppInfo{}, err
	}
	switch hdr[12] & 0xF {
	case 0:
		return ppInfo{local: true}, nil
	case 1:
	default:
		return ppInfo{}, fmt.Errorf("command %d", hdr[12]&0xF)
	}
	switch hdr[13] {
	case 0x11:
		if len(body) < 12 {
			return ppInfo{}, fmt.Errorf("short IPv4 block")
		}
		s := netip.AddrFrom4([4]byte(body[0:4]))
		d := netip.AddrFrom4([4]byte(body[4:8]))
		return ppInfo{src: ap(s, binary.BigEndian.Uint16(body[8:])), dst: ap(d, binary.BigEndian.Uint16(body[10:]))}, nil
	case 0x21:
		if len(body) < 36 {
			return ppInfo{}, fmt.Errorf("short IPv6 block")
		}
		s := netip.AddrFrom16([16]byte(body[0:16]))
		d := netip.AddrFrom16([16]byte(body[16:32]))
		return ppInfo{src: ap(s, binary.BigEndian.Uint16(body[32:])), dst: ap(d, binary.BigEndian.Uint16(body[34:]))}, nil
	}
	return ppInfo{}, fmt.Errorf("family/protocol %#x", hdr[13])
}
