//go:build linux && !moat_portable

package dataplane

import (
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/ti-mo/conntrack"

	"github.com/moatlb/moat/internal/dataplane/kernel/kerneltest"
	"github.com/moatlb/moat/internal/nftutil"
)

func needKernel(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
}

// TestKernelHangKeepsEngineServing is the regression test for the data plane
// freezing in netlink: with a kernel that stops answering, Apply still
// returns, a revoke still governs the next flow (the stuck connection's rules
// are dropped, so flows go through userspace), health checks and health
// reports go on, the lag is reported, and Close returns promptly.
func TestKernelHangKeepsEngineServing(t *testing.T) {
	needKernel(t)
	t.Parallel()
	peer := kerneltest.NewPeer()
	t.Cleanup(peer.Release)
	n := newNet()
	e, err := NewUserspace(Options{Kernel: true, KernelCallTimeout: 300 * time.Millisecond, KernelNetlink: peer.Serve})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			e.Close()
		}
	})
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	port := freePort(t, n.lbA())
	lbAddr := ap(n.lbA(), port)
	tg := group("tg", hcPort, a.cfg())
	tg.HealthCheck.Interval = 5 * time.Second
	listener := func(admit string) Config {
		return Config{LoadBalancers: []LoadBalancer{{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
			ID: "l", Protocol: TCP, Port: port, AdmitTCP: policy(admit), TargetGroup: tg}}}}}
	}
	if err := e.Apply(listener("127.0.0.2/32")); err != nil {
		t.Fatal(err)
	}
	c, _ := connect(t, client2, lbAddr)
	c.c.Close()

	peer.Hang()
	start := time.Now()
	if err := e.Apply(listener("127.0.0.3/32")); err != nil { // revoke 127.0.0.2, admit 127.0.0.3
		t.Fatal(err)
	}
	if took := time.Since(start); took > kernelApplyWait {
		t.Fatalf("Apply took %v with a hung kernel", took)
	}
	if _, err := dialFrom(client2, lbAddr, deniedWait); err == nil {
		t.Fatal("the revoked client still connects while the kernel hangs")
	}
	c, _ = connect(t, client3, lbAddr)
	c.c.Close()

	// Health checks and their reports go on: the first check comes soon
	// after registration, and two successes make the target healthy.
	waitFor(t, longWait, "the target to turn healthy while the kernel hangs", func() bool {
		start := time.Now()
		hl, _ := e.TargetHealth("tg", "a", a.echo.addr.Port())
		if took := time.Since(start); took > time.Second {
			t.Fatalf("TargetHealth took %v with a hung kernel", took)
		}
		return hl.State == StateHealthy
	})
	if lag := e.KernelLag(); lag == 0 {
		t.Error("no kernel lag reported while the kernel hangs")
	}

	start = time.Now()
	e.Close()
	closed = true
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Close took %v with a hung kernel", took)
	}
}

// TestKernelLargeConfig drives a real large configuration through the real
// nftables library: 300 load balancers in two zones with a listener and a
// target group each (600 fast-path sockets). Apply must finish with every
// socket in the kernel, health reports must answer while it programs, and
// flows must then be carried by the kernel.
func TestKernelLargeConfig(t *testing.T) {
	needKernel(t)
	if testing.Short() && !*kernelTests {
		t.Skip("the large kernel configuration runs with -kernel or without -short")
	}
	n := newNet()
	e, err := NewUserspace(Options{Kernel: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	hcPort := freePort(t, n.inA(0), n.inB(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	b := newBackend(t, "b", n.inB(0), "zone-b", hcPort)
	const lbs = 300
	port := freePort(t, n.lbA(), n.lbB())
	var cfg Config
	for i := range lbs {
		zoneA := netip.AddrFrom4([4]byte{127, 1, n.k, byte(100 + i%100)})
		zoneB := netip.AddrFrom4([4]byte{127, 2, n.k, byte(100 + i%100)})
		tg := group("tg"+strconv.Itoa(i), hcPort, a.cfg(), b.cfg())
		tg.PreserveClientIP = true
		cfg.LoadBalancers = append(cfg.LoadBalancers, LoadBalancer{ID: "lb" + strconv.Itoa(i),
			Zones: []Zone{{"zone-a", zoneA}, {"zone-b", zoneB}},
			Listeners: []Listener{{ID: "l" + strconv.Itoa(i), Protocol: TCP, Port: port + uint16(i/100),
				AdmitTCP: policy("127.0.0.2/32", "127.0.0.4/32"), TargetGroup: tg}}})
	}
	stop := make(chan struct{})
	reports := make(chan time.Duration, 1)
	go func() { // health reports answer while Apply programs the kernel
		var worst time.Duration
		defer func() { reports <- worst }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			e.TargetHealth("tg0", "a", a.echo.addr.Port())
			worst = max(worst, time.Since(start))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	start := time.Now()
	if err := e.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("applied %d load balancers (%d sockets) in %v", lbs, 2*lbs, time.Since(start))
	close(stop)
	if worst := <-reports; worst > time.Second {
		t.Errorf("a health report took %v while the kernel was programmed", worst)
	}
	if lag := e.KernelLag(); lag != 0 {
		t.Fatalf("the kernel lags by %v after Apply", lag)
	}
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	set, err := conn.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: e.kernel.Table()}, "sockets_ip")
	if err != nil {
		t.Fatal(err)
	}
	elems, err := conn.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(elems) != 2*lbs {
		t.Fatalf("%d sockets take new flows in the kernel, want %d", len(elems), 2*lbs)
	}
	// A sample of flows: the kernel carries them (the target sees the
	// client's own address and port).
	for _, i := range []int{0, 149, 299} {
		lb := cfg.LoadBalancers[i]
		c, _ := connect(t, client2, ap(lb.Zones[0].Addr, lb.Listeners[0].Port))
		local := addrPortOf(c.c.LocalAddr())
		if err := c.echo("ping"); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range a.echo.records() {
			found = found || r.remote == local
		}
		if !found {
			t.Errorf("load balancer %d: the target did not see the client's own %v: the kernel did not carry the flow", i, local)
		}
		c.c.Close()
	}
}

// kernelCarries reports whether the kernel fast path carries the flow from
// the client's local address (proto: unix.IPPROTO_TCP or _UDP): conntrack has
// it with a mark of the engine's path.
func kernelCarries(t testing.TB, e *Userspace, local netip.AddrPort, proto uint8) bool {
	t.Helper()
	ct, err := conntrack.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	flows, err := ct.DumpFilter(conntrack.NewFilter().Mark(e.kernel.ID()).MarkMask(nftutil.MarkIDMask), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		o := f.TupleOrig
		if o.Proto.Protocol == proto && o.IP.SourceAddress == local.Addr() && o.Proto.SourcePort == local.Port() && e.kernel.IsOwnMark(f.Mark) {
			return true
		}
	}
	return false
}
