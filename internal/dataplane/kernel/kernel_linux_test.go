//go:build linux && !moat_portable

package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go4.org/netipx"

	"github.com/moatlb/moat/internal/dataplane/kernel/kerneltest"
	"github.com/moatlb/moat/internal/nftutil"
)

func needRoot(t testing.TB) {
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

// manySockets returns n sockets, every other one IPv4 (127.3.x.y) and IPv6
// (fd00:3::x), each admitting 60 disjoint ranges and spreading over two
// targets of its family.
func manySockets(n int, targetPort uint16) []Socket {
	var admit4, admit6 []netipx.IPRange
	for i := range 60 {
		a := netip.AddrFrom4([4]byte{127, 0, byte(i), 1})
		admit4 = append(admit4, netipx.IPRangeFrom(a, a.Next()))
		a6 := netip.AddrFrom16([16]byte{0xfd, 0, 0, byte(i), 15: 1})
		admit6 = append(admit6, netipx.IPRangeFrom(a6, a6.Next()))
	}
	out := make([]Socket, n)
	for i := range out {
		addr, admit, targets := netip.AddrFrom4([4]byte{127, 3, byte(i / 200), byte(1 + i%200)}), admit4, "127.4.0.%d:%d"
		if i%2 == 1 {
			addr, admit, targets = netip.AddrFrom16([16]byte{0xfd, 0, 0, 3, 14: byte(i >> 8), 15: byte(i)}), admit6, "[fd00:4::%d]:%d"
		}
		out[i] = Socket{
			Key: Key{Proto: TCP, Addr: netip.AddrPortFrom(addr, 20000)},
			Forward: &Forward{Admit: admit, Idle: 350 * time.Second, SNAT: addr, Targets: []netip.AddrPort{
				netip.MustParseAddrPort(fmt.Sprintf(targets, 1, targetPort)),
				netip.MustParseAddrPort(fmt.Sprintf(targets, 2, targetPort)),
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
	s, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: table}, name)
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
	_, err = c.ListTableOfFamily(name, nftables.TableFamilyINet)
	return err == nil
}

// TestLargeBatch drives a large program through the real nftables library:
// a thousand sockets (hundreds of load balancers' listeners), each with a
// 60-range admission set, then a change of every socket's targets, then the
// removal of half of them. Each step must land, none may hang, and the table
// must hold exactly what was asked.
func TestLargeBatch(t *testing.T) {
	d := &desired{}
	p := startLargePath(t, d, testLog(t))
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
	for _, fam := range []string{"_ip", "_ip6"} {
		if n := setElements(t, p.Table(), mapSockets+fam); n != 500 {
			t.Fatalf("%d sockets in the dispatch map %s, want 500", n, mapSockets+fam)
		}
		if n := setElements(t, p.Table(), mapSNAT+fam); n != 500 {
			t.Fatalf("%d sockets in the SNAT map %s, want 500", n, mapSNAT+fam)
		}
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
	for _, fam := range []string{"_ip", "_ip6"} {
		if n := setElements(t, p.Table(), mapSockets+fam); n != 250 {
			t.Fatalf("%d sockets in the dispatch map %s, want 250", n, mapSockets+fam)
		}
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

// startLargePath starts a path that programs what d holds, with a call deadline for large
// tables; it needs root.
func startLargePath(tb testing.TB, d *desired, log *slog.Logger) *Path {
	tb.Helper()
	needRoot(tb)
	p, err := New(Options{Log: log, Desired: d.get, CallTimeout: 30 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return p
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

// TestForwardingChangeReprograms: the path reads each family's forwarding
// switch every poll; when one turns on, a socket of that family whose target
// is on another host starts taking flows from interfaces too (its admit chain
// loses the rule that leaves them to the listening socket), and when it turns
// off again, stops. The other family's socket is left as it was.
func TestForwardingChangeReprograms(t *testing.T) {
	needRoot(t)
	var forwarding [families]atomic.Bool
	d := &desired{}
	d.set([]Socket{ // slots 1 and 2
		{Key: Key{UDP, netip.MustParseAddrPort("198.51.100.1:53")}, Forward: &Forward{AdmitAll: true,
			Idle: time.Minute, Targets: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:53")}}},
		{Key: Key{UDP, netip.MustParseAddrPort("[2001:db8::1]:53")}, Forward: &Forward{AdmitAll: true,
			Idle: time.Minute, Targets: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8:1::5]:53")}}},
	})
	p, err := New(Options{Log: testLog(t), Desired: d.get, PollInterval: 20 * time.Millisecond,
		readHost: func() (hostNet, error) {
			return hostNet{forwarding: [families]bool{forwarding[ipv4].Load(), forwarding[ipv6].Load()}}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Wait(ctx, p.Kick()); err != nil {
		t.Fatal(err)
	}
	// admitRules counts the rules of slot 1's and slot 2's admit chains.
	admitRules := func() [families]int {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		table := &nftables.Table{Family: nftables.TableFamilyINet, Name: p.Table()}
		var n [families]int
		for f := range n {
			rules, err := c.GetRules(table, &nftables.Chain{Name: fmt.Sprintf("admit_%d", f+1), Table: table})
			if err != nil {
				t.Fatal(err)
			}
			n[f] = len(rules)
		}
		return n
	}
	// Off: the rule for flows from interfaces, then the DNAT (UDP has no SYN
	// check; admitting all, no admission set).
	if n := admitRules(); n != [families]int{2, 2} {
		t.Fatalf("%v admit rules with forwarding off, want [2 2]", n)
	}
	for _, c := range []struct {
		on    [families]bool
		rules [families]int
	}{{[families]bool{true, false}, [families]int{1, 2}}, {[families]bool{true, true}, [families]int{1, 1}},
		{[families]bool{false, true}, [families]int{2, 1}}, {[families]bool{false, false}, [families]int{2, 2}}} {
		forwarding[ipv4].Store(c.on[ipv4])
		forwarding[ipv6].Store(c.on[ipv6])
		deadline := time.Now().Add(10 * time.Second)
		for admitRules() != c.rules {
			if time.Now().After(deadline) {
				t.Fatalf("forwarding %v: %v admit rules, want %v", c.on, admitRules(), c.rules)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// BenchmarkChangeInLargeTable: one socket's targets and admitted ranges change in a table of
// 2,000 sockets, as health and rule changes do one by one while hundreds of load balancers
// come up; the cost of each must not grow with the table.
func BenchmarkChangeInLargeTable(b *testing.B) {
	d := &desired{}
	p := startLargePath(b, d, slog.New(slog.DiscardHandler))
	defer p.Close()
	ctx := context.Background()
	sockets := manySockets(2000, 8080)
	d.set(sockets)
	if err := p.Wait(ctx, p.Kick()); err != nil {
		b.Fatal(err)
	}
	alternate := manySockets(2000, 9090)
	for _, s := range alternate {
		s.Forward.Admit = s.Forward.Admit[:30]
	}
	i := 0
	for b.Loop() {
		next := slices.Clone(d.get())
		n := i % len(next)
		if next[n].Forward == sockets[n].Forward {
			next[n] = alternate[n]
		} else {
			next[n] = sockets[n]
		}
		i++
		d.set(next)
		if err := p.Wait(ctx, p.Kick()); err != nil || !p.upToDate() {
			b.Fatalf("change socket %d: %v (up to date %v)", n, err, p.upToDate())
		}
	}
}

// TestLargeAdmitList: a socket admitting thousands of ranges (a rule with thousands of sources)
// is programmed, and so are the others of its batch — its set once took more than one message,
// which the kernel refused of the anonymous set it was, failing every program — and then
// narrowed and widened in place.
func TestLargeAdmitList(t *testing.T) {
	d := &desired{}
	p := startLargePath(t, d, testLog(t))
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sockets := manySockets(4, 8080)
	var wide []netipx.IPRange
	for i := range 3000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		wide = append(wide, netipx.IPRangeFrom(a, a))
	}
	// The last step changes the targets only: the admit set keeps its ranges.
	moved := []netip.AddrPort{netip.MustParseAddrPort("127.4.0.9:8080")}
	for i, admit := range [][]netipx.IPRange{wide, wide[:10], wide, wide} {
		targets := sockets[0].Forward.Targets
		if i == 3 {
			targets = moved
		}
		sockets[0].Forward = &Forward{Admit: admit, Idle: time.Minute, SNAT: sockets[0].Forward.SNAT, Targets: targets}
		d.set(slices.Clone(sockets))
		if err := p.Wait(ctx, p.Kick()); err != nil || !p.upToDate() {
			t.Fatalf("program %d admitted ranges: %v (up to date %v)", len(admit), err, p.upToDate())
		}
		p.mu.Lock()
		slot := p.slots[sockets[0].Key].n
		p.mu.Unlock()
		want := len(nftutil.IntervalElements(admit))
		if n := setElements(t, p.Table(), "admit_"+strconv.Itoa(int(slot))); n != want {
			t.Fatalf("admit set of slot %d holds %d elements, want %d", slot, n, want)
		}
		if n := setElements(t, p.Table(), "targets_"+strconv.Itoa(int(slot))); n != len(targets) {
			t.Fatalf("targets map of slot %d holds %d elements, want %d", slot, n, len(targets))
		}
	}
	for _, fam := range []string{"_ip", "_ip6"} {
		if n := setElements(t, p.Table(), mapSockets+fam); n != 2 {
			t.Fatalf("%d sockets in the dispatch map %s, want 2", n, mapSockets+fam)
		}
	}
}
