//go:build linux && !moat_portable

package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go4.org/netipx"

	"github.com/moatlb/moat/internal/dataplane/kernel/kerneltest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
}

// desired is a test's desired state, swapped whole.
type desired struct {
	mu      sync.Mutex
	sockets []Socket
}

func (d *desired) set(s []Socket) {
	d.mu.Lock()
	d.sockets = s
	d.mu.Unlock()
}

func (d *desired) get() []Socket {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sockets
}

// manySockets returns n sockets on 127.3.x.y, each admitting 60 disjoint
// ranges and spreading over two targets.
func manySockets(n int, targetPort uint16) []Socket {
	var admit []netipx.IPRange
	for i := range 60 {
		a := netip.AddrFrom4([4]byte{127, 0, byte(i), 1})
		admit = append(admit, netipx.IPRangeFrom(a, a.Next()))
	}
	out := make([]Socket, n)
	for i := range out {
		out[i] = Socket{
			Key: Key{Proto: TCP, Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 3, byte(i / 200), byte(1 + i%200)}), 20000)},
			Forward: &Forward{Admit: admit, Idle: 350 * time.Second, Targets: []netip.AddrPort{
				netip.MustParseAddrPort(fmt.Sprintf("127.4.0.1:%d", targetPort)),
				netip.MustParseAddrPort(fmt.Sprintf("127.4.0.2:%d", targetPort)),
			}},
		}
	}
	return out
}

func testLog(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

// setElements counts the elements of one of the table's maps.
func setElements(t *testing.T, table, name string) int {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table}, name)
	if err != nil {
		t.Fatalf("set %s of %s: %v", name, table, err)
	}
	elems, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	return len(elems)
}

func tableExists(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListTableOfFamily(name, nftables.TableFamilyIPv4)
	return err == nil
}

// TestLargeBatch drives a large program through the real nftables library:
// a thousand sockets (hundreds of load balancers' listeners), each with a
// 60-range admission set, then a change of every socket's targets, then the
// removal of half of them. Each step must land, none may hang, and the table
// must hold exactly what was asked.
func TestLargeBatch(t *testing.T) {
	needRoot(t)
	d := &desired{}
	p, err := New(Options{Log: testLog(t), Desired: d.get, CallTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	d.set(manySockets(1000, 8080))
	start := time.Now()
	if err := p.Wait(ctx, p.Kick()); err != nil {
		t.Fatalf("program 1000 sockets: %v", err)
	}
	t.Logf("1000 sockets programmed in %v", time.Since(start))
	if !p.upToDate() {
		t.Fatal("the path gave up on the program (it disconnected) instead of applying it")
	}
	if n := setElements(t, p.Table(), mapSockets); n != 1000 {
		t.Fatalf("%d sockets in the dispatch map, want 1000", n)
	}

	d.set(manySockets(1000, 9090))
	start = time.Now()
	if err := p.Wait(ctx, p.Kick()); err != nil || !p.upToDate() {
		t.Fatalf("reprogram 1000 sockets: %v (up to date %v)", err, p.upToDate())
	}
	t.Logf("1000 sockets reprogrammed in %v", time.Since(start))

	d.set(manySockets(500, 9090))
	if err := p.Wait(ctx, p.Kick()); err != nil || !p.upToDate() {
		t.Fatalf("remove 500 sockets: %v (up to date %v)", err, p.upToDate())
	}
	if n := setElements(t, p.Table(), mapSockets); n != 500 {
		t.Fatalf("%d sockets in the dispatch map, want 500", n)
	}
	if n := setElements(t, p.Table(), mapCounting); n != 500 {
		t.Fatalf("%d slots in the counting map, want 500", n)
	}
	table := p.Table()
	p.Close()
	if tableExists(t, table) {
		t.Fatalf("table %s outlives the path", table)
	}
}

// upToDate reports whether the kernel runs the latest program (and did not
// merely drop its rules).
func (p *Path) upToDate() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.down && p.applied == p.gen
}

// TestBlockingPeer: a kernel that stops answering must not stall anyone.
// Kick, Applied and Terminate return at once; Wait returns within the call
// deadline, because the stuck connection is dropped (its rules with it) and
// the path reports the lag; Close returns promptly; and once the peer
// answers again the path reconnects and applies the latest state.
func TestBlockingPeer(t *testing.T) {
	needRoot(t) // the conntrack side is the real one
	peer := kerneltest.NewPeer()
	defer peer.Release()
	var dials atomic.Int32
	d := &desired{}
	reg := prometheus.NewRegistry()
	p, err := New(Options{Log: testLog(t), Desired: d.get, Registerer: reg, CallTimeout: 300 * time.Millisecond,
		dial: func(_ *slog.Logger, id uint32) (conn, error) {
			dials.Add(1)
			return dialNFT(id, peer.Serve)
		}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			p.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	d.set(manySockets(3, 8080))
	if err := p.Wait(ctx, p.Kick()); err != nil || !p.upToDate() {
		t.Fatalf("program through the answering peer: %v", err)
	}

	peer.Hang()
	d.set(manySockets(4, 8080)) // one more socket: the worker hangs in a program
	start := time.Now()
	gen := p.Kick()
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("Kick took %v while the kernel hangs", took)
	}
	p.Terminate([]Key{{TCP, netip.MustParseAddrPort("127.3.0.1:20000")}}, netip.MustParseAddrPort("127.4.0.1:8080"))
	if err := p.Wait(ctx, gen); err != nil {
		t.Fatalf("wait for a change while the kernel hangs: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the change waited %v for a hung kernel", took)
	}
	if p.upToDate() {
		t.Fatal("the path claims the hung kernel took the change")
	}
	if up := testutil.ToFloat64(p.metrics.collectors[2]); up != 0 {
		t.Fatalf("moat_dataplane_kernel_up = %v while the kernel hangs, want 0", up)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.Lag() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no lag reported while the kernel hangs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for dials.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d dials: the path does not retry on fresh connections", dials.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}

	peer.Answer()
	gen = p.Kick()
	for !p.upToDate() {
		if time.Now().After(deadline) {
			t.Fatalf("the path did not recover once the kernel answered again (lag %v)", p.Lag())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lag := p.Lag(); lag != 0 {
		t.Fatalf("lag %v once current, want 0", lag)
	}

	before := peer.Requests()
	peer.Hang()
	d.set(manySockets(1, 8080))
	p.Kick()
	for peer.Requests() == before { // the worker is inside a hung call
		if time.Now().After(deadline) {
			t.Fatal("the worker never called the kernel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start = time.Now()
	p.Close()
	closed = true
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Close took %v with a hung kernel", took)
	}
}

// TestForwardingChangeReprograms: the path reads net.ipv4.ip_forward every
// poll; when it turns on, a socket whose target is on another host starts
// taking flows from interfaces too (its admit chain loses the rule that
// leaves them to the listening socket), and when it turns off again, stops.
func TestForwardingChangeReprograms(t *testing.T) {
	needRoot(t)
	var forwarding atomic.Bool
	d := &desired{}
	d.set([]Socket{{Key: Key{UDP, netip.MustParseAddrPort("198.51.100.1:53")}, Forward: &Forward{AdmitAll: true,
		Idle: time.Minute, Targets: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:53")}}}})
	p, err := New(Options{Log: testLog(t), Desired: d.get, PollInterval: 20 * time.Millisecond,
		readHost: func() (hostNet, error) { return hostNet{forwarding: forwarding.Load()}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Wait(ctx, p.Kick()); err != nil {
		t.Fatal(err)
	}
	admitRules := func() int {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: p.Table()}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ch := range chains {
			if ch.Table.Name == table.Name && strings.HasPrefix(ch.Name, "admit_") {
				rules, err := c.GetRules(table, ch)
				if err != nil {
					t.Fatal(err)
				}
				n += len(rules)
			}
		}
		return n
	}
	// Off: the rule for flows from interfaces, then the DNAT (UDP has no SYN
	// check; admitting all, no admission set).
	if n := admitRules(); n != 2 {
		t.Fatalf("%d admit rules with forwarding off, want 2", n)
	}
	for _, c := range []struct {
		on    bool
		rules int
	}{{true, 1}, {false, 2}} {
		forwarding.Store(c.on)
		deadline := time.Now().Add(10 * time.Second)
		for admitRules() != c.rules {
			if time.Now().After(deadline) {
				t.Fatalf("forwarding %v: %d admit rules, want %d", c.on, admitRules(), c.rules)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
