//go:build linux && !moat_portable

package firewall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/moatlb/moat/internal/netnstest"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/nftutil"
	"github.com/moatlb/moat/internal/secgroup"
)

var (
	nodeA    = netip.MustParseAddr("127.1.0.10")
	lbAddr   = netip.MustParseAddr("127.1.0.100")
	member1  = netip.MustParseAddr("127.1.0.11")
	member2  = netip.MustParseAddr("127.1.0.12")
	stranger = netip.MustParseAddr("127.1.0.13")
	client   = netip.MustParseAddr("127.0.0.3")
	outside  = netip.MustParseAddr("127.0.0.5")
)

// ownMark is a mark as moat lb's data plane sets it (nftutil.MarkFlow, an ID, slot 0).
const ownMark = nftutil.MarkFlow | 0x2bcde000

func prefixes(as ...netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range as {
		out = append(out, netip.PrefixFrom(a, 32))
	}
	return out
}

// node is instance node-a: NodePorts admitted from the load balancer's
// address and from the members of a group; everything out, unless revoked.
func node(inbound bool, outbound bool) Interface {
	ifc := Interface{ID: "eni-a", Instance: "i-a", Addrs: []netip.Addr{nodeA}}
	if inbound {
		ifc.Inbound = []secgroup.Rule{
			{Protocol: secgroup.ProtocolTCP, FromPort: 30000, ToPort: 32767, Sources: prefixes(lbAddr)},
			{Protocol: secgroup.ProtocolTCP, FromPort: 30000, ToPort: 32767, Sources: prefixes(member1, member2)},
		}
	}
	if outbound {
		ifc.Outbound = []secgroup.Rule{{Protocol: secgroup.ProtocolAll, Sources: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}}
	}
	return ifc
}

func listen(t *testing.T, addr netip.AddrPort) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// dialFrom connects from src (with a socket mark when mark is not 0).
func dialFrom(src netip.Addr, dst netip.AddrPort, mark uint32) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 500 * time.Millisecond,
		Control: func(_, _ string, rc syscall.RawConn) error {
			if mark == 0 {
				return nil
			}
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) })
			return serr
		}}
	return d.Dial("tcp", dst.String())
}

func admitted(t *testing.T, src netip.Addr, dst netip.AddrPort) bool {
	t.Helper()
	c, err := dialFrom(src, dst, 0)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func echo(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(c, "ping"); err != nil {
		return err
	}
	_, err := bufio.NewReader(c).ReadString('\n')
	return err
}

func apply(t *testing.T, f *Firewall, p Program) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.Wait(ctx, f.Apply(p)); err != nil {
		t.Fatalf("apply: %v (status %v)", err, f.Status())
	}
}

// TestEnforce: inbound and outbound rules, group references and moat lb's
// own mark are enforced on real sockets; denials are counted; an admitted
// flow survives a revoke; audit mode only counts.
func TestEnforce(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	reg := prometheus.NewRegistry()
	f, err := New(Options{Table: "test", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nodePort := listen(t, netip.AddrPortFrom(nodeA, 30080))
	away := listen(t, netip.AddrPortFrom(outside, 0))
	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(true, true)}})

	if !admitted(t, lbAddr, nodePort) {
		t.Error("the load balancer's address is not admitted to the NodePort")
	}
	if admitted(t, client, nodePort) {
		t.Error("a client no rule admits reached the NodePort directly")
	}
	for _, m := range []netip.Addr{member1, member2} {
		if !admitted(t, m, nodePort) {
			t.Errorf("group member %v is not admitted", m)
		}
	}
	if admitted(t, stranger, nodePort) {
		t.Errorf("%v, in the subnet but not in the group, is admitted", stranger)
	}
	if c, err := dialFrom(client, nodePort, ownMark); err != nil {
		t.Errorf("a flow with moat lb's mark from a client address is dropped: %v", err)
	} else {
		c.Close()
	}
	if !admitted(t, nodeA, away) {
		t.Error("the node cannot open a flow out with an allow-all outbound rule")
	}
	waitCounted(t, reg, "i-a", "inbound")

	// An established flow survives the revoke of the rule that admitted it;
	// new flows see the change.
	held, err := dialFrom(lbAddr, nodePort, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(false, false)}})
	if err := echo(held); err != nil {
		t.Errorf("the established flow died with the revoke: %v", err)
	}
	if admitted(t, lbAddr, nodePort) {
		t.Error("a new flow is admitted after the revoke")
	}
	if admitted(t, nodeA, away) {
		t.Error("the node opens flows out with no outbound rule")
	}
	waitCounted(t, reg, "i-a", "outbound")

	apply(t, f, Program{Mode: Audit, Interfaces: []Interface{node(false, false)}})
	if !admitted(t, client, nodePort) {
		t.Error("audit mode dropped a flow")
	}

	// A firewall that stops leaves its rules; the next one replaces them in
	// one transaction.
	apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{node(false, true)}})
	f.Close()
	if admitted(t, lbAddr, nodePort) {
		t.Error("the instance is open once the firewall process is gone")
	}
	g, err := New(Options{Table: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	apply(t, g, Program{Mode: Enforce, Interfaces: []Interface{node(true, true)}})
	if !admitted(t, lbAddr, nodePort) {
		t.Error("the new firewall's rules do not admit the load balancer")
	}
	tables, err := (&nftables.Conn{}).ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "moat_fw_") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d firewall tables, want 1", n)
	}
	apply(t, g, Program{Mode: Off})
	if !admitted(t, client, nodePort) {
		t.Error("mode off still drops")
	}
}

// TestDenialsCountedAcrossRuleChanges: replacing the table resets its
// counters, so the denials since the last poll are read first and none is
// lost to a rule change.
func TestDenialsCountedAcrossRuleChanges(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	// Polled only on a change: what is counted then was read before the replace.
	f, err := New(Options{Table: "test", Registerer: prometheus.NewRegistry(), PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nodePort := listen(t, netip.AddrPortFrom(nodeA, 30080))
	apply(t, f, Program{Mode: Audit, Interfaces: []Interface{node(false, true)}})
	const flows = 3
	for range flows {
		if !admitted(t, client, nodePort) {
			t.Fatal("audit mode dropped a flow")
		}
	}
	apply(t, f, Program{Mode: Audit, Interfaces: []Interface{node(false, false)}})
	if n := testutil.ToFloat64(f.denied.WithLabelValues("i-a", "inbound")); n != flows {
		t.Errorf("%v denials counted across a rule change, want %d", n, flows)
	}
}

func waitCounted(t *testing.T, reg *prometheus.Registry, instance, direction string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := testutil.GatherAndCount(reg, "moat_instance_sg_denied_flows_total")
		if err == nil && n > 0 {
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					labels := map[string]string{}
					for _, l := range m.GetLabel() {
						labels[l.GetName()] = l.GetValue()
					}
					if labels["instance"] == instance && labels["direction"] == direction && m.GetCounter().GetValue() > 0 {
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s denial of %s counted", direction, instance)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLargeRuleSets: a full group (60 inbound and 60 outbound rules) and
// AWS's ceiling for one interface (1,000 rules over its groups) are
// programmed and enforced. Each rule's acknowledgement used to echo its whole
// request, and a table of 60 rules overflowed the socket (ENOBUFS).
func TestLargeRuleSets(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	f, err := New(Options{Table: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const base = 31000
	// Rule i admits port base+i from its own /24 of 10.x, and from the client
	// too when i is even.
	rules := func(n int) []secgroup.Rule {
		var out []secgroup.Rule
		for i := range n {
			r := secgroup.Rule{Protocol: secgroup.ProtocolTCP, FromPort: base + i, ToPort: base + i,
				Sources: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))}}
			if i%2 == 0 {
				r.Sources = append(r.Sources, netip.PrefixFrom(client, 32))
			}
			out = append(out, r)
		}
		return out
	}
	ports := map[int]netip.AddrPort{}
	for _, n := range []int{60, 1000} {
		ifc := Interface{ID: "eni-a", Instance: "i-a", Addrs: []netip.Addr{nodeA}, Inbound: rules(n), Outbound: rules(60)}
		apply(t, f, Program{Mode: Enforce, Interfaces: []Interface{ifc}})
		for _, i := range []int{0, 1, n - 2, n - 1} {
			port, ok := ports[i]
			if !ok {
				port = listen(t, netip.AddrPortFrom(nodeA, uint16(base+i)))
				ports[i] = port
			}
			if got, want := admitted(t, client, port), i%2 == 0; got != want {
				t.Errorf("%d rules: the client admitted to rule %d's port: %v, want %v", n, i, got, want)
			}
		}
	}
}

// TestKernelRefusalKeepsTable: a table the kernel refuses (here two
// interfaces claiming one address, which compile never emits) fails as a
// whole with the kernel's error, and the rules before it stay in force: the
// replace is one transaction.
func TestKernelRefusalKeepsTable(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	c, err := dial("test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	good, _ := compile([]Interface{node(true, true)})
	if _, err := c.replace(good, &Program{Mode: Enforce}, -1); err != nil {
		t.Fatal(err)
	}
	nodePort := listen(t, netip.AddrPortFrom(nodeA, 30080))
	opened, _ := compile([]Interface{{ID: "eni-open", Instance: "i-open", Addrs: []netip.Addr{nodeA},
		Inbound: []secgroup.Rule{{Protocol: secgroup.ProtocolAll, Sources: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}}}})
	_, err = c.replace(append(opened, good...), &Program{Mode: Enforce}, -1)
	if err == nil || !strings.Contains(err.Error(), "replace instance firewall") || !errors.Is(err, unix.EEXIST) {
		t.Fatalf("replace with a refused table: %v, want the kernel's EEXIST", err)
	}
	if !admitted(t, lbAddr, nodePort) || admitted(t, client, nodePort) {
		t.Error("the rules in force before the refused replace changed")
	}
	chains, err := (&nftables.Conn{}).ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ch := range chains {
		if ch.Table.Name == "moat_fw_test" {
			names = append(names, ch.Name)
		}
	}
	slices.Sort(names)
	if want := []string{"in_0", "input", "out_0", "output"}; !slices.Equal(names, want) {
		t.Errorf("chains after the refused replace: %v, want the old table's %v", names, want)
	}
}
