//go:build linux && !moat_portable

package firewall

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/moatlb/moat/internal/netnstest"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/ti-mo/conntrack"
	"go4.org/netipx"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/flowlog"
)

// lockedBuffer is a flow log or a log that tests read while the firewall writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) entries(t *testing.T) []flowlog.Entry {
	t.Helper()
	var out []flowlog.Entry
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var e flowlog.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("flow log line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// waitEntry waits for a flow log entry that match accepts.
func waitEntry(t *testing.T, b *lockedBuffer, what string, match func(flowlog.Entry) bool) flowlog.Entry {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, e := range b.entries(t) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no flow log entry for %s; the log has:\n%s", what, b.String())
		}
	}
}

// sendUDP sends n datagrams from src (one socket, one flow) to dst.
func sendUDP(t *testing.T, src netip.AddrPort, dst netip.AddrPort, n int) {
	t.Helper()
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range n {
		c.Write([]byte("x")) // a refused datagram may come back as an error; it is sent all the same
	}
}

// TestDenialsLogged: each denied flow reaches the flow log once, with the
// interface, the direction, its 5-tuple and the reason; audit mode logs what
// it would deny; a flood is held back by the rate limit and what is held back
// is counted; Close stops the reader.
func TestDenialsLogged(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	reg := prometheus.NewRegistry()
	flows := &lockedBuffer{}
	f, err := New(Options{Table: "test", Registerer: reg, FlowLog: flows})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			f.Close()
		}
	}()
	if f.plog == nil {
		t.Fatal("no packet log in a network namespace where moat is root")
	}
	nodePort := listen(t, netip.AddrPortFrom(nodeA, 30080))
	away := listen(t, netip.AddrPortFrom(outside, 0))
	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(true, false)}})

	if admitted(t, client, nodePort) {
		t.Fatal("a client no rule admits reached the NodePort")
	}
	e := waitEntry(t, flows, "the inbound denial", func(e flowlog.Entry) bool { return e.Direction == "inbound" })
	if e.Action != flowlog.Deny || e.Instance != "i-a" || e.Interface != "eni-a" || e.Protocol != "tcp" || e.Reason != ReasonNoRule ||
		!strings.HasPrefix(e.Source, client.String()+":") || e.Destination != nodePort.String() || time.Since(e.Time) > time.Minute {
		t.Errorf("inbound entry %+v", e)
	}
	if admitted(t, nodeA, away) {
		t.Fatal("the node opened a flow out without an outbound rule")
	}
	e = waitEntry(t, flows, "the outbound denial", func(e flowlog.Entry) bool { return e.Direction == "outbound" })
	if e.Action != flowlog.Deny || e.Instance != "i-a" || !strings.HasPrefix(e.Source, nodeA.String()+":") || e.Destination != away.String() {
		t.Errorf("outbound entry %+v", e)
	}

	// One line per flow: a sender's retries are new to the kernel each time.
	udpPort := netip.AddrPortFrom(nodeA, 30081)
	sendUDP(t, netip.AddrPortFrom(client, 0), udpPort, 5)
	waitEntry(t, flows, "the udp denial", func(e flowlog.Entry) bool { return e.Protocol == "udp" })
	waitCounted(t, reg, "i-a", "inbound")

	apply(t, f, Program{Mode: Audit, Interfaces: []Interface{node(true, true)}})
	if !admitted(t, client, nodePort) {
		t.Fatal("audit mode dropped a flow")
	}
	waitEntry(t, flows, "audit's would-deny", func(e flowlog.Entry) bool { return e.Action == flowlog.WouldDeny && e.Protocol == "tcp" })
	if n := len(filter(flows.entries(t), func(e flowlog.Entry) bool { return e.Protocol == "udp" })); n != 1 {
		t.Errorf("%d lines for one udp flow of 5 datagrams, want 1", n)
	}

	// A flood of distinct flows (source ports of their own: an ephemeral port
	// used twice would be one flow): the log takes its burst, the rest is
	// counted.
	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(true, true)}})
	const flood = 1000
	before := len(flows.entries(t))
	for i := range flood {
		sendUDP(t, netip.AddrPortFrom(client, uint16(40000+i)), netip.AddrPortFrom(nodeA, 30082), 1)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		logged := len(filter(flows.entries(t)[before:], func(e flowlog.Entry) bool { return e.Destination == "127.1.0.10:30082" }))
		held := testutil.ToFloat64(f.unlogged.WithLabelValues("rate_limit"))
		if logged+int(held) == flood {
			if held == 0 || logged == 0 {
				t.Errorf("flood of %d: %d logged, %v held back by the rate limit; want both", flood, logged, held)
			}
			t.Logf("flood of %d flows: %d logged, %v held back", flood, logged, held)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flood of %d: %d logged + %v held back (overruns %v)", flood, logged, held, testutil.ToFloat64(f.unlogged.WithLabelValues("overrun")))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Close ends the reader, which is blocked reading.
	done := make(chan struct{})
	go func() { f.Close(); close(done) }()
	closed = true
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not stop the packet log's reader")
	}
}

func filter(es []flowlog.Entry, keep func(flowlog.Entry) bool) []flowlog.Entry {
	var out []flowlog.Entry
	for _, e := range es {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// TestPacketLogGroupTaken: a firewall whose first group is taken binds the
// next one; one that finds all its groups taken says so in one line, and
// counts denials without logging them.
func TestPacketLogGroupTaken(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	groups := logGroups("test", logGroupAttempts)
	take := func(gs []uint16) {
		for _, g := range gs {
			nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nl.Close() })
			if err := configure(nl, g); err != nil {
				t.Fatalf("bind group %d: %v", g, err)
			}
		}
	}
	take(groups[:1])
	f, err := New(Options{Table: "test", FlowLog: &lockedBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	if f.logGroup != int(groups[1]) {
		t.Errorf("group %d with %d taken, want the next, %d", f.logGroup, groups[0], groups[1])
	}
	f.Close()

	take(groups[1:])
	var logs lockedBuffer
	reg := prometheus.NewRegistry()
	flows := &lockedBuffer{}
	f, err = New(Options{Table: "test", FlowLog: flows, Registerer: reg, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "counted, not written to the flow log") {
		t.Errorf("start logged %q, want one line saying denials are only counted", logs.String())
	}
	nodePort := listen(t, netip.AddrPortFrom(nodeA, 30080))
	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(true, true)}})
	if admitted(t, client, nodePort) {
		t.Fatal("a client no rule admits reached the NodePort")
	}
	waitCounted(t, reg, "i-a", "inbound")
	if flows.String() != "" {
		t.Errorf("flow log without a packet log: %q", flows.String())
	}
}

// TestListenerDenialsLogged: the first packet of a flow to a listener socket from a client its
// groups do not admit is logged with the listener and the client, once per flow, and passes on
// (the data plane, not the firewall, drops it); admitted clients and other ports are not logged.
func TestListenerDenialsLogged(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	f, flows := newLogging(t, "lst")
	tcpSocket := listen(t, netip.AddrPortFrom(lbAddr, 8080))
	other := listen(t, netip.AddrPortFrom(lbAddr, 8081))
	udpSocket := netip.AddrPortFrom(lbAddr, 8082)
	// Two more listeners: one with the first's admitted ranges (they share a set), one that
	// admits the client.
	shared := listen(t, netip.AddrPortFrom(lbAddr, 8083))
	open := listen(t, netip.AddrPortFrom(lbAddr, 8084))
	admit := netipx.IPRangeFrom(netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.2"))
	apply(t, f, Program{Mode: Enforce, Listeners: []Listener{
		{LoadBalancer: "lb-1", ID: "listener-tcp", Addr: tcpSocket, Protocol: 6, Admit: []netipx.IPRange{admit}},
		{LoadBalancer: "lb-1", ID: "listener-udp", Addr: udpSocket, Protocol: 17}, // admits no one
		{LoadBalancer: "lb-1", ID: "listener-shared", Addr: shared, Protocol: 6, Admit: []netipx.IPRange{admit}},
		{LoadBalancer: "lb-1", ID: "listener-open", Addr: open, Protocol: 6, Admit: []netipx.IPRange{admit, netipx.IPRangeFrom(client, client)}},
	}})

	if !admitted(t, client, tcpSocket) || !admitted(t, netip.MustParseAddr("127.0.0.2"), tcpSocket) || !admitted(t, client, other) ||
		!admitted(t, client, shared) || !admitted(t, client, open) {
		t.Fatal("the listener log dropped a flow")
	}
	sendUDP(t, netip.AddrPortFrom(client, 0), udpSocket, 3)
	e := waitEntry(t, flows, "the tcp listener's denial", func(e flowlog.Entry) bool { return e.Listener == "listener-tcp" })
	if e.Action != flowlog.Deny || e.LoadBalancer != "lb-1" || e.Protocol != "tcp" || !strings.HasPrefix(e.Client, client.String()+":") ||
		e.Reason != ReasonListenerGroups || e.Instance != "" || e.Source != "" {
		t.Errorf("tcp entry %+v", e)
	}
	waitEntry(t, flows, "the udp listener's denial", func(e flowlog.Entry) bool { return e.Listener == "listener-udp" && e.Protocol == "udp" })
	waitEntry(t, flows, "the shared listener's denial", func(e flowlog.Entry) bool { return e.Listener == "listener-shared" })
	// Whatever else was logged came from client 127.0.0.3 to the three listeners that do not
	// admit it, once per flow.
	var tcp, udp, sharing int
	for _, e := range flows.entries(t) {
		switch {
		case !strings.HasPrefix(e.Client, client.String()+":"):
			t.Errorf("logged %+v", e)
		case e.Listener == "listener-tcp":
			tcp++
		case e.Listener == "listener-udp":
			udp++
		case e.Listener == "listener-shared":
			sharing++
		default:
			t.Errorf("logged %+v", e)
		}
	}
	if tcp != 1 || udp != 1 || sharing != 1 {
		t.Errorf("%d tcp, %d udp and %d shared entries, want one each:\n%s", tcp, udp, sharing, flows.String())
	}
}

// TestManyListenerAddresses: a table of 2,000 load balancer addresses (1,000 Services in two
// zones) applies, and a listener at the last address logs its denials. Its address map's
// elements took more than one netlink attribute's 64 KiB: the kernel refused the whole table
// (ENOENT) from about 1,600 addresses on.
func TestManyListenerAddresses(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	f, flows := newLogging(t, "many")
	admit := []netipx.IPRange{netipx.IPRangeFrom(netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.2"))}
	var ls []Listener
	var last netip.Addr
	for i := range 2000 {
		last = netip.AddrFrom4([4]byte{127, 10, byte(i / 200), byte(1 + i%200)})
		ls = append(ls, Listener{LoadBalancer: fmt.Sprint("lb-", i), ID: fmt.Sprint("listener-", i),
			Addr: netip.AddrPortFrom(last, 443), Protocol: 6, Admit: admit})
	}
	socket := listen(t, netip.AddrPortFrom(last, 443))
	// A large table under the race detector on a busy machine: more time than apply gives.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.Wait(ctx, f.Apply(Program{Mode: Enforce, Listeners: ls})); err != nil {
		t.Fatalf("apply: %v (status %v)", err, f.Status())
	}
	if !admitted(t, client, socket) {
		t.Fatal("the listener log dropped a flow")
	}
	waitEntry(t, flows, "the last listener's denial", func(e flowlog.Entry) bool { return e.Listener == "listener-1999" })
}

// TestListenerLogTracksNoConnections: a table with listeners to log and no instance interface
// leaves connection tracking off in the namespace (it costs every packet of the host), and so
// logs a TCP flow by its first packet: an established flow of a client revoked since is not
// logged, its next flow is. With an instance interface, flows are tracked.
func TestListenerLogTracksNoConnections(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	f, flows := newLogging(t, "notrack")
	socket := listen(t, netip.AddrPortFrom(lbAddr, 8090))
	listeners := func(admit ...netip.Addr) []Listener {
		var ranges []netipx.IPRange
		for _, a := range admit {
			ranges = append(ranges, netipx.IPRangeFrom(a, a))
		}
		return []Listener{{LoadBalancer: "lb-1", ID: "listener-tcp", Addr: socket, Protocol: 6, Admit: ranges}}
	}
	ct, err := conntrack.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	tracked := func() int {
		t.Helper()
		entries, err := ct.Dump(nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}

	apply(t, f, Program{Mode: Enforce, Listeners: listeners(client, outside)})
	revoked, err := dialFrom(client, socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer revoked.Close()
	if err := echo(revoked); err != nil {
		t.Fatal(err)
	}
	if n := tracked(); n != 0 {
		t.Fatalf("%d connections tracked with no instance interface", n)
	}

	apply(t, f, Program{Mode: Enforce, Listeners: listeners(outside)})
	for range 20 {
		if err := echo(revoked); err != nil {
			t.Fatal(err)
		}
	}
	next, err := dialFrom(client, socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	waitEntry(t, flows, "the revoked client's next flow", func(e flowlog.Entry) bool { return e.Client == next.LocalAddr().String() })
	for _, e := range flows.entries(t) {
		if e.Client != next.LocalAddr().String() {
			t.Errorf("logged %+v; only the flow from %s started after the revoke", e, next.LocalAddr())
		}
	}

	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(true, true)}, Listeners: listeners(outside)})
	if !admitted(t, client, socket) {
		t.Fatal("the listener log dropped a flow")
	}
	if tracked() == 0 {
		t.Error("no connection tracked with an instance interface")
	}
}

// newLogging is a firewall in table that writes its flow log to flows, closed with the test.
func newLogging(t *testing.T, table string) (f *Firewall, flows *lockedBuffer) {
	t.Helper()
	flows = &lockedBuffer{}
	f, err := New(Options{Table: table, Registerer: prometheus.NewRegistry(), FlowLog: flows})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, flows
}

// TestListenerLogJudgesFirstPackets: of a TCP flow, only the first packet is judged and logged. A
// denied client's established flow (its socket took it: a group revoked since), segment after
// segment, does not use up the log's rate, and the next denied client is logged still.
func TestListenerLogJudgesFirstPackets(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	f, flows := newLogging(t, "lst")
	socket := listen(t, netip.AddrPortFrom(lbAddr, 8080))
	apply(t, f, Program{Mode: Enforce, Listeners: []Listener{
		{LoadBalancer: "lb-1", ID: "listener-tcp", Addr: socket, Protocol: 6}, // admits no one
	}})
	c, err := dialFrom(client, socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Far more segments than the log's burst (200), faster than its rate (100 a second).
	for range 600 {
		if err := echo(c); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	next := netip.MustParseAddr("127.0.0.4")
	if !admitted(t, next, socket) {
		t.Fatal("the listener log dropped a flow")
	}
	waitEntry(t, flows, "the next client's denial", func(e flowlog.Entry) bool { return strings.HasPrefix(e.Client, next.String()+":") })
}

// TestListenerLogLetsNothingIn: the listener log's verdicts are its own. Its first rule accepts
// a TCP segment that is no SYN; at an instance's address, such a segment from a client the
// instance's groups deny is still judged by the instance's rules, and dropped.
func TestListenerLogLetsNothingIn(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	f, _ := newLogging(t, "apart")
	nodePort := listen(t, netip.AddrPortFrom(nodeA, 30080))
	socket := listen(t, netip.AddrPortFrom(lbAddr, 8080))
	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(true, true)},
		Listeners: []Listener{{LoadBalancer: "lb-1", ID: "listener-tcp", Addr: socket, Protocol: 6}}})

	// An acknowledgement out of nowhere: conntrack takes it for a new flow (the loose pickup of
	// flows under way), which no rule of the instance admits from client.
	raw, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw)
	if err := unix.Bind(raw, &unix.SockaddrInet4{Addr: client.As4()}); err != nil {
		t.Fatal(err)
	}
	segment := tcpSegment(netip.AddrPortFrom(client, 40000), nodePort, tcpACK)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(f.denied.WithLabelValues("i-a", "inbound")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a segment that is no SYN, from a client the instance's groups deny, passed: the listener log admitted it")
		}
		if err := unix.Sendto(raw, segment, 0, &unix.SockaddrInet4{Addr: nodeA.As4()}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tcpSegment is a TCP header without options or data from src to dst. Its checksum is left 0:
// the input hook judges the segment before TCP checks it.
func tcpSegment(src, dst netip.AddrPort, flags byte) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], src.Port())
	binary.BigEndian.PutUint16(h[2:], dst.Port())
	binary.BigEndian.PutUint32(h[4:], 1)
	binary.BigEndian.PutUint32(h[8:], 1)
	h[12] = 5 << 4 // data offset: 5 words
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 65535)
	return h
}
