//go:build linux && !moat_portable

package secgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests run the generated filters in the kernel, on loopback: clients
// bind to 127.x.y.z source addresses, which Linux routes on lo without setup.

const (
	deniedWait   = 300 * time.Millisecond // a denied dial must still be waiting then
	admittedWait = 10 * time.Second       // generous: the machine is shared and -race is slow
)

// listenTCP listens with MPTCP off: Go's default MPTCP listeners refuse
// socket filters (see ErrMultipathTCP).
func listenTCP(t *testing.T, network, addr string) *net.TCPListener {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

func rawConn(t *testing.T, c syscall.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func getsockopt(t *testing.T, rc syscall.RawConn, opt int, val unsafe.Pointer, size uint32) uint32 {
	t.Helper()
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, uintptr(opt),
			uintptr(val), uintptr(unsafe.Pointer(&size)), 0)
	}); err != nil {
		t.Fatal(err)
	}
	if errno != 0 {
		t.Fatalf("getsockopt %d: %v", opt, errno)
	}
	return size
}

// filterLen is the length of the socket's filter, 0 if none (SO_GET_FILTER
// with a zero-length buffer reports the length).
func filterLen(t *testing.T, rc syscall.RawConn) int {
	return int(getsockopt(t, rc, unix.SO_GET_FILTER, nil, 0))
}

// drops is the socket's drop counter, which counts packets its filter rejected:
// the synchronisation point that proves a denied packet has been judged.
func drops(t *testing.T, rc syscall.RawConn) uint32 {
	var m [unix.SK_MEMINFO_VARS]uint32
	getsockopt(t, rc, unix.SO_MEMINFO, unsafe.Pointer(&m[0]), uint32(len(m)*4))
	return m[unix.SK_MEMINFO_DROPS]
}

func waitDrops(t *testing.T, rc syscall.RawConn, atLeast uint32) {
	t.Helper()
	deadline := time.Now().Add(admittedWait)
	for drops(t, rc) < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("socket dropped %d packets, want at least %d", drops(t, rc), atLeast)
		}
		time.Sleep(time.Millisecond) // polling a kernel counter, not synchronising goroutines
	}
}

func attach(t *testing.T, rc syscall.RawConn, p *Policy) {
	t.Helper()
	ok, err := AttachPolicy(rc, p)
	if err != nil || !ok {
		t.Fatalf("AttachPolicy = %v, %v", ok, err)
	}
}

// dialFrom connects from src; it reports whether the connection was
// established, and fails the test on errors other than a timeout.
func dialFrom(t *testing.T, src netip.Addr, dst string, timeout time.Duration) (net.Conn, bool) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: timeout}
	c, err := d.Dial("tcp", dst)
	if err == nil {
		return c, true
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("dial from %v: %v", src, err)
	}
	return nil, false
}

// acceptAll accepts until the listener closes, detaching the inherited filter
// as the data plane must, and reports each client's address.
func acceptAll(t *testing.T, ln *net.TCPListener) <-chan netip.Addr {
	out := make(chan netip.Addr, 64)
	go func() {
		defer close(out)
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			if rc, err := c.SyscallConn(); err != nil {
				t.Errorf("SyscallConn: %v", err)
			} else if err := DetachFilter(rc); err != nil {
				t.Errorf("DetachFilter: %v", err)
			}
			out <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			c.Close()
		}
	}()
	return out
}

type client struct {
	src   netip.Addr
	admit bool // per the reference evaluator
}

// socketCase draws a rule set for an endpoint on port and clients for it:
// some at the edges of the rules' 127/8 sources, some anywhere in 127/8.
// Every fourth case is large (hundreds of ranges), so that the kernel also
// runs programs with trampolines.
func socketCase(g caseGen, i, proto int, port uint16) ([]Rule, []client) {
	rules := g.rules(int(port), 8)
	if i%4 == 3 {
		var srcs []netip.Prefix
		for range 200 + g.r.IntN(1500) {
			srcs = append(srcs, netip.PrefixFrom(g.loopback(), 22+g.r.IntN(11)).Masked())
		}
		rules = append(rules, Rule{Protocol: proto, FromPort: int(port), ToPort: int(port), Sources: srcs})
	}
	var clients []client
	seen := map[netip.Addr]bool{}
	for len(clients) < 8 {
		a := g.addr(rules).Unmap().WithZone("")
		if !a.Is4() || a.As4()[0] != 127 || a == netip.MustParseAddr("127.0.0.0") || a == netip.MustParseAddr("127.255.255.255") || seen[a] {
			a = g.loopback()
			if seen[a] {
				continue
			}
		}
		seen[a] = true
		clients = append(clients, client{a, refAllows(rules, proto, port, a)})
	}
	return rules, clients
}

// TestSocketFilterTCPProperty replays a sample of the property test through
// the kernel: a listener carries the compiled filter, admitted clients
// connect, denied clients' SYNs are dropped and their dials time out.
func TestSocketFilterTCPProperty(t *testing.T) {
	const seed, cases = 777, 24
	g := newCaseGen(seed)
	var mu sync.Mutex
	var nAdmit, nDeny int
	for i := range cases {
		ln := listenTCP(t, "tcp4", "127.0.0.1:0")
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		rules, clients := socketCase(g, i, ProtocolTCP, port)
		t.Run(fmt.Sprint("case", i), func(t *testing.T) {
			t.Parallel()
			rc := rawConn(t, ln)
			attach(t, rc, Compile(rules, ProtocolTCP, port))
			accepted := acceptAll(t, ln)

			var wg sync.WaitGroup
			got := make([]bool, len(clients))
			var denied uint32
			for j, c := range clients {
				if !c.admit {
					denied++
				}
				wg.Go(func() {
					timeout := admittedWait
					if !c.admit {
						timeout = deniedWait
					}
					conn, ok := dialFrom(t, c.src, ln.Addr().String(), timeout)
					if ok {
						conn.Close()
					}
					got[j] = ok
				})
			}
			wg.Wait()
			want := map[netip.Addr]bool{}
			for j, c := range clients {
				if got[j] != c.admit {
					t.Errorf("seed %d case %d client %v: connected %v, reference admits %v; rules %v",
						seed, i, c.src, got[j], c.admit, rules)
				}
				if c.admit {
					want[c.src] = true
				}
			}
			// Each denied SYN was judged and dropped by the listener's filter.
			waitDrops(t, rc, denied)
			// The listener accepted exactly the admitted clients.
			for len(want) > 0 {
				select {
				case a := <-accepted:
					if !want[a] {
						t.Fatalf("listener accepted %v, which the rules deny", a)
					}
					delete(want, a)
				case <-time.After(admittedWait):
					t.Fatalf("admitted clients never accepted: %v", want)
				}
			}
			ln.Close()
			for a := range accepted {
				t.Errorf("listener accepted %v beyond the admitted clients", a)
			}
			mu.Lock()
			nAdmit += len(clients) - int(denied)
			nDeny += int(denied)
			mu.Unlock()
		})
	}
	t.Cleanup(func() {
		t.Logf("%d admitted and %d denied connections", nAdmit, nDeny)
		if nAdmit == 0 || nDeny == 0 {
			t.Errorf("sample lacks admitted (%d) or denied (%d) clients", nAdmit, nDeny)
		}
	})
}

// TestSocketFilterUDPProperty is the same for datagrams: admitted ones arrive,
// denied ones are counted as dropped by the socket and never read.
func TestSocketFilterUDPProperty(t *testing.T) {
	const seed, cases = 778, 24
	g := newCaseGen(seed)
	var nAdmit, nDeny int
	for i := range cases {
		srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		port := uint16(srv.LocalAddr().(*net.UDPAddr).Port)
		rules, clients := socketCase(g, i, ProtocolUDP, port)
		rc := rawConn(t, srv)
		attach(t, rc, Compile(rules, ProtocolUDP, port))

		received := make(chan netip.Addr, len(clients))
		go func() {
			defer close(received)
			buf := make([]byte, 64)
			for {
				_, from, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				received <- from.Addr()
			}
		}()
		want := map[netip.Addr]bool{}
		var denied uint32
		for _, c := range clients {
			conn, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.src, 0)), srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if c.admit {
				want[c.src] = true
				nAdmit++
			} else {
				denied++
				nDeny++
			}
		}
		waitDrops(t, rc, denied)
		for len(want) > 0 {
			select {
			case a := <-received:
				if !want[a] {
					t.Fatalf("seed %d case %d: datagram from %v, which the rules deny; rules %v", seed, i, a, rules)
				}
				delete(want, a)
			case <-time.After(admittedWait):
				t.Fatalf("seed %d case %d: admitted datagrams never arrived from %v; rules %v", seed, i, want, rules)
			}
		}
		srv.Close()
		for a := range received {
			t.Errorf("seed %d case %d: datagram from %v beyond the admitted clients", seed, i, a)
		}
	}
	t.Logf("%d admitted and %d denied datagrams", nAdmit, nDeny)
	if nAdmit == 0 || nDeny == 0 {
		t.Errorf("sample lacks admitted (%d) or denied (%d) clients", nAdmit, nDeny)
	}
}

// TestSocketFilterIPv6 exercises the AF_INET6 program on ::1, the only IPv6
// loopback address, with policies that admit and deny it, including large
// ones whose 128-bit comparisons span trampolines.
func TestSocketFilterIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	many := func(with string) []netip.Prefix {
		var out []netip.Prefix
		for i := range 120 {
			var b [16]byte
			b[0], b[1], b[15] = 0x20, 0x01, byte(i)
			b[9] = byte(i * 7)
			out = append(out, netip.PrefixFrom(netip.AddrFrom16(b), 128))
		}
		return append(out, pfx(with)...)
	}
	tests := []struct {
		name  string
		srcs  []netip.Prefix
		admit bool
	}{
		{"::1/128", pfx("::1/128"), true},
		{"::/0", pfx("::/0"), true},
		{"::/127", pfx("::/127"), true},
		{"neighbours only", pfx("::/128", "::2/127", "2001:db8::/32"), false},
		{"IPv4 only", pfx("0.0.0.0/0", "127.0.0.1/32"), false},
		{"many /128 with ::1", many("::1/128"), true},
		{"many /128 without ::1", many("::2/128"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rules := []Rule{{Protocol: ProtocolAll, Sources: tt.srcs}}
			if want := refAllows(rules, ProtocolTCP, 80, netip.IPv6Loopback()); want != tt.admit {
				t.Fatalf("table disagrees with the reference")
			}
			ln := listenTCP(t, "tcp6", "[::1]:0")
			rc := rawConn(t, ln)
			attach(t, rc, Compile(rules, ProtocolTCP, 80))
			accepted := acceptAll(t, ln)
			timeout := admittedWait
			if !tt.admit {
				timeout = deniedWait
			}
			if conn, ok := dialFrom(t, netip.IPv6Loopback(), ln.Addr().String(), timeout); ok != tt.admit {
				t.Errorf("TCP connected %v, want %v", ok, tt.admit)
			} else if ok {
				conn.Close()
				if a := <-accepted; a != netip.IPv6Loopback() {
					t.Errorf("accepted %v", a)
				}
			} else {
				waitDrops(t, rc, 1)
			}

			srv, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			urc := rawConn(t, srv)
			attach(t, urc, Compile(rules, ProtocolUDP, 53))
			conn, err := net.DialUDP("udp6", nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if tt.admit {
				srv.SetReadDeadline(time.Now().Add(admittedWait))
				if _, err := srv.Read(make([]byte, 8)); err != nil {
					t.Errorf("UDP datagram not received: %v", err)
				}
			} else {
				waitDrops(t, urc, 1)
				srv.SetReadDeadline(time.Now()) // it was judged: nothing may be queued
				if _, err := srv.Read(make([]byte, 8)); err == nil {
					t.Error("denied UDP datagram received")
				}
			}
		})
	}
}

// TestSocketFilterDualStack attaches the filter from ListenConfig.Control,
// before the socket listens, to a dual-stack [::] listener: IPv4 clients
// arrive as IPv4 packets on an AF_INET6 socket and take the program's IPv4
// branch.
func TestSocketFilterDualStack(t *testing.T) {
	rules := []Rule{{Protocol: ProtocolTCP, FromPort: -1, ToPort: -1, Sources: pfx("127.0.0.2/32", "::1/128")}}
	p := Compile(rules, ProtocolTCP, 80)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		ok, err := AttachPolicy(c, p)
		if err == nil && !ok {
			err = errors.New("filter does not fit")
		}
		return err
	}}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	defer l.Close()
	ln := l.(*net.TCPListener)
	port := ln.Addr().(*net.TCPAddr).Port
	accepted := acceptAll(t, ln)
	tests := []struct {
		src, dst string
		admit    bool
	}{
		{"127.0.0.2", "127.0.0.1", true},
		{"127.0.0.3", "127.0.0.1", false},
		{"::1", "::1", true},
	}
	for _, tt := range tests {
		src := netip.MustParseAddr(tt.src)
		timeout := admittedWait
		if !tt.admit {
			timeout = deniedWait
		}
		conn, ok := dialFrom(t, src, net.JoinHostPort(tt.dst, fmt.Sprint(port)), timeout)
		if ok != tt.admit {
			t.Errorf("%s: connected %v, want %v", tt.src, ok, tt.admit)
			continue
		}
		if ok {
			conn.Close()
			if a := <-accepted; a != src {
				t.Errorf("accepted %v, want %v", a, src)
			}
		}
	}
}

// TestEstablishedFlowSurvivesRevoke shows the contract of AttachFilter: the
// accepted connection inherits the listener's filter; once detached, the
// flow keeps working after the rules are revoked, while new flows from the
// same client are dropped. A filter left on the connection, on the other
// hand, does judge its segments.
func TestEstablishedFlowSurvivesRevoke(t *testing.T) {
	ln := listenTCP(t, "tcp4", "127.0.0.1:0")
	lrc := rawConn(t, ln)
	client := netip.MustParseAddr("127.0.0.9")
	attach(t, lrc, Compile([]Rule{{Protocol: ProtocolTCP, FromPort: -1, ToPort: -1, Sources: pfx(client.String() + "/32")}}, ProtocolTCP, 80))

	conn, ok := dialFrom(t, client, ln.Addr().String(), admittedWait)
	if !ok {
		t.Fatal("admitted client could not connect")
	}
	defer conn.Close()
	srv, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	src := rawConn(t, srv)
	inherited := filterLen(t, src)
	if inherited == 0 || inherited != filterLen(t, lrc) {
		t.Fatalf("accepted connection has a filter of %d instructions, want the listener's %d", inherited, filterLen(t, lrc))
	}
	// Re-attaching the listener's filter leaves the connection's copy alone.
	attach(t, lrc, Compile([]Rule{{Protocol: ProtocolAll, Sources: pfx("127.0.0.9/32", "127.1.0.0/16", "127.3.0.0/16")}}, ProtocolTCP, 80))
	if n := filterLen(t, src); n != inherited || n == filterLen(t, lrc) {
		t.Fatalf("connection's filter changed with the listener's: %d instructions, was %d", n, inherited)
	}

	// A filter on the connection itself judges its segments: deny-all there
	// stalls the flow (the client's segment is dropped and retransmitted).
	attach(t, src, Compile(nil, ProtocolTCP, 80))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(deniedWait))
	if _, err := srv.Read(make([]byte, 4)); !isTimeout(err) {
		t.Fatalf("read through a deny-all filter: %v, want a timeout", err)
	}

	// What the data plane does on accept: detach (twice is harmless).
	for range 2 {
		if err := DetachFilter(src); err != nil {
			t.Fatal(err)
		}
	}
	if n := filterLen(t, src); n != 0 {
		t.Fatalf("filter of %d instructions left after DetachFilter", n)
	}
	// Revoke: the listener now denies everyone.
	attach(t, lrc, Compile(nil, ProtocolTCP, 80))

	// The established flow still carries data both ways (the retransmitted
	// "ping" arrives too).
	srv.SetReadDeadline(time.Now().Add(admittedWait))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v after revoke", buf, err)
	}
	if _, err := srv.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(admittedWait))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v after revoke", buf, err)
	}
	// A new flow from the same client is dropped.
	before := drops(t, lrc)
	if c, ok := dialFrom(t, client, ln.Addr().String(), deniedWait); ok {
		c.Close()
		t.Fatal("new connection admitted after revoke")
	}
	waitDrops(t, lrc, before+1)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestAttachPolicyTooBig: a policy over the budget leaves the socket without
// a filter, even if an older one was attached, so the caller's
// accept-and-reset fallback sees every client.
func TestAttachPolicyTooBig(t *testing.T) {
	var srcs []netip.Prefix
	for i := range 5000 {
		srcs = append(srcs, netip.PrefixFrom(addrFrom32(127<<24|uint32(2*i+3)), 32))
	}
	big := Compile([]Rule{{Protocol: ProtocolAll, Sources: srcs}}, ProtocolTCP, 80)
	if _, ok, err := SocketFilter(big, unix.AF_INET); ok || err != nil {
		t.Fatalf("SocketFilter(5000 ranges) ok=%v err=%v, want ok=false", ok, err)
	}
	ln := listenTCP(t, "tcp4", "127.0.0.1:0")
	rc := rawConn(t, ln)
	attach(t, rc, Compile(nil, ProtocolTCP, 80)) // deny-all, about to be stale
	ok, err := AttachPolicy(rc, big)
	if ok || err != nil {
		t.Fatalf("AttachPolicy(too big) = %v, %v; want false, nil", ok, err)
	}
	if n := filterLen(t, rc); n != 0 {
		t.Fatalf("stale filter of %d instructions left", n)
	}
	// 127.0.0.1 is not admitted by big; without a filter the kernel accepts
	// it, and rejecting it is now the data plane's job (Allows says no).
	if big.Allows(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("test assumes 127.0.0.1 is denied")
	}
	conn, ok := dialFrom(t, netip.MustParseAddr("127.0.0.1"), ln.Addr().String(), admittedWait)
	if !ok {
		t.Fatal("connection not accepted by the kernel without a filter")
	}
	conn.Close()
}

// TestAttachFilterMPTCP: Go's default listener is MPTCP where the kernel has
// it, and the error must say what to do.
func TestAttachFilterMPTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc := rawConn(t, ln.(*net.TCPListener))
	var proto int
	rc.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if proto != unix.IPPROTO_MPTCP {
		t.Skip("listener is not MPTCP on this kernel")
	}
	if _, err := AttachPolicy(rc, AllowAll()); !errors.Is(err, ErrMultipathTCP) {
		t.Fatalf("AttachPolicy on MPTCP listener: %v, want ErrMultipathTCP", err)
	}
}

// BenchmarkSocketFilter is the cost of regenerating a listener's filter on a
// rule change.
func BenchmarkSocketFilter(b *testing.B) {
	for _, n := range []int{1, 60, 1000} {
		p := Compile(benchRules(n), ProtocolTCP, 80)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, ok, err := SocketFilter(p, unix.AF_INET6); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
