//go:build linux && !moat_portable

package firewall

import (
	"errors"
	"fmt"
	"github.com/moatlb/moat/internal/netnstest"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/secgroup"
)

// The property test's world: instances (one with two addresses) and other
// loopback addresses that act as clients and as servers out of the VPC.
// 127.1.0.1-4 share a /30 but for .4, the instance addresses and .6-.7 a
// /29, everything but 127.0.0.9 and 127.2.0.1 the /16 127.1.0.0/16.
var (
	propInstances = [][]netip.Addr{
		{netip.MustParseAddr("127.1.0.1"), netip.MustParseAddr("127.1.0.5")},
		{netip.MustParseAddr("127.1.0.2")},
		{netip.MustParseAddr("127.1.0.3")},
		{netip.MustParseAddr("127.1.0.4")},
	}
	propOthers = []netip.Addr{
		netip.MustParseAddr("127.1.0.6"),
		netip.MustParseAddr("127.1.0.7"),
		netip.MustParseAddr("127.1.1.1"),
		netip.MustParseAddr("127.2.0.1"),
		netip.MustParseAddr("127.0.0.9"),
	}
	// propServers are the other addresses with listeners: outbound flows go there.
	propServers = []netip.Addr{netip.MustParseAddr("127.1.0.7"), netip.MustParseAddr("127.2.0.1")}
	// propPorts are the ports every server listens on (tcp and udp); rules'
	// ranges are drawn around them so that they both hit and miss.
	propPorts = []int{21000, 21001, 21002, 22000}
)

// The reference's own protocol numbers.
const (
	refAll = -1
	refTCP = 6
	refUDP = 17
)

// refAllows is the reference evaluator, written from AWS's rules and not
// from the firewall's or the secgroup package's code: a new flow of proto to
// port with the given peer (the source inbound, the destination outbound) is
// admitted iff some rule has protocol -1 or proto, for tcp and udp a port
// range covering port (a negative bound is open), and a prefix holding peer.
func refAllows(rules []secgroup.Rule, proto int, peer netip.Addr, port int) bool {
	for _, r := range rules {
		if r.Protocol != refAll && r.Protocol != proto {
			continue
		}
		if r.Protocol == refTCP || r.Protocol == refUDP {
			from, to := r.FromPort, r.ToPort
			if from < 0 {
				from = 0
			}
			if to < 0 {
				to = 65535
			}
			if port < from || port > to {
				continue
			}
		}
		for _, p := range r.Sources {
			if p.Contains(peer) {
				return true
			}
		}
	}
	return false
}

// propFlow is one new flow to try.
type propFlow struct {
	proto int // refTCP or refUDP
	src   netip.Addr
	dst   netip.AddrPort
}

func (fl propFlow) String() string {
	name := "tcp"
	if fl.proto == refUDP {
		name = "udp"
	}
	return fmt.Sprintf("%s %v → %v", name, fl.src, fl.dst)
}

// refVerdict is what the reference expects of a flow: on the loopback both
// ends are judged, the source's interface (if an instance) outbound and the
// destination's inbound.
type refVerdict struct {
	outDenied, inDenied bool
	srcInst, dstInst    int // index in propInstances, or -1
}

func (v refVerdict) admitted() bool { return !v.outDenied && !v.inDenied }

func propInstanceOf(a netip.Addr) int {
	for i, addrs := range propInstances {
		for _, b := range addrs {
			if a == b {
				return i
			}
		}
	}
	return -1
}

func refJudge(ifaces []Interface, fl propFlow) refVerdict {
	v := refVerdict{srcInst: propInstanceOf(fl.src), dstInst: propInstanceOf(fl.dst.Addr())}
	port := int(fl.dst.Port())
	if v.srcInst >= 0 {
		v.outDenied = !refAllows(ifaces[v.srcInst].Outbound, fl.proto, fl.dst.Addr(), port)
	}
	if v.dstInst >= 0 {
		v.inDenied = !refAllows(ifaces[v.dstInst].Inbound, fl.proto, fl.src, port)
	}
	return v
}

func propAllAddrs() []netip.Addr {
	var out []netip.Addr
	for _, addrs := range propInstances {
		out = append(out, addrs...)
	}
	return append(out, propOthers...)
}

// genRules draws 0-3 rules: tcp, udp, all or icmp; single ports, ranges,
// every port or half-open bounds; prefixes of various lengths (sometimes
// not canonical) around the world's addresses, or a referenced group.
func genRules(r *rand.Rand) []secgroup.Rule {
	all := propAllAddrs()
	port := func() int { return propPorts[r.IntN(len(propPorts))] + r.IntN(3) - 1 }
	var rules []secgroup.Rule
	for range r.IntN(4) {
		var rule secgroup.Rule
		switch n := r.IntN(10); {
		case n < 5:
			rule.Protocol = secgroup.ProtocolTCP
		case n < 8:
			rule.Protocol = secgroup.ProtocolUDP
		case n < 9:
			rule.Protocol = secgroup.ProtocolAll
		default:
			rule.Protocol = secgroup.ProtocolICMP
		}
		switch rule.Protocol {
		case secgroup.ProtocolTCP, secgroup.ProtocolUDP:
			switch r.IntN(6) {
			case 0:
				rule.FromPort, rule.ToPort = -1, -1
			case 1:
				rule.FromPort, rule.ToPort = 0, 65535
			case 2:
				p := port()
				rule.FromPort, rule.ToPort = p, p
			case 3:
				a, b := port(), port()
				rule.FromPort, rule.ToPort = min(a, b), max(a, b)
			case 4:
				rule.FromPort, rule.ToPort = -1, port()
			case 5:
				rule.FromPort, rule.ToPort = port(), -1
			}
		default:
			rule.FromPort, rule.ToPort = -1, -1
		}
		if r.IntN(4) == 0 {
			// A referenced group: the addresses of some instances.
			for _, addrs := range propInstances {
				if r.IntN(2) == 0 {
					for _, a := range addrs {
						rule.Sources = append(rule.Sources, netip.PrefixFrom(a, 32))
					}
				}
			}
		} else {
			for range 1 + r.IntN(2) {
				bits := []int{32, 32, 30, 24, 16, 8, 0}[r.IntN(7)]
				p := netip.PrefixFrom(all[r.IntN(len(all))], bits)
				if r.IntN(2) == 0 {
					p = p.Masked()
				}
				rule.Sources = append(rule.Sources, p)
			}
		}
		rules = append(rules, rule)
	}
	return rules
}

func genInterfaces(r *rand.Rand) []Interface {
	var out []Interface
	for i, addrs := range propInstances {
		out = append(out, Interface{ID: fmt.Sprintf("eni-%d", i), Instance: fmt.Sprintf("i-%d", i), Addrs: addrs,
			Inbound: genRules(r), Outbound: genRules(r)})
	}
	return out
}

func genFlows(r *rand.Rand, n int) []propFlow {
	var servers []netip.Addr
	for _, addrs := range propInstances {
		servers = append(servers, addrs...)
	}
	servers = append(servers, propServers...)
	all := propAllAddrs()
	var out []propFlow
	for range n {
		fl := propFlow{proto: refTCP, src: all[r.IntN(len(all))],
			dst: netip.AddrPortFrom(servers[r.IntN(len(servers))], uint16(propPorts[r.IntN(len(propPorts))]))}
		if r.IntN(3) == 0 {
			fl.proto = refUDP
		}
		out = append(out, fl)
	}
	return out
}

// serveAll starts a tcp and a udp echo server on every port of every server address.
func serveAll(t *testing.T) {
	t.Helper()
	var addrs []netip.Addr
	for _, a := range propInstances {
		addrs = append(addrs, a...)
	}
	for _, a := range append(addrs, propServers...) {
		for _, p := range propPorts {
			ap := netip.AddrPortFrom(a, uint16(p))
			listen(t, ap)
			pc, err := net.ListenPacket("udp", ap.String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			go func() {
				buf := make([]byte, 64)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(buf[:n], from)
				}
			}()
		}
	}
}

// try opens fl within timeout: true if it connected (tcp) or got its echo
// (udp), false if it timed out or the kernel refused to send (a drop on the
// way out). Anything else is the test's own failure.
func try(fl propFlow, timeout time.Duration) (bool, error) {
	src := netip.AddrPortFrom(fl.src, 0)
	if fl.proto == refTCP {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: timeout}
		c, err := d.Dial("tcp", fl.dst.String())
		if err == nil {
			c.Close()
			return true, nil
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return false, nil
		}
		return false, err
	}
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(fl.dst))
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		if errors.Is(err, syscall.EPERM) {
			return false, nil
		}
		return false, err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := c.Read(make([]byte, 8)); err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// observe tries fl; a flow expected to pass that times out is tried again
// with a long timeout, so that a loaded machine does not pass for a drop.
func observe(t *testing.T, fl propFlow, expect bool) bool {
	t.Helper()
	ok, err := try(fl, 300*time.Millisecond)
	if err == nil && !ok && expect {
		ok, err = try(fl, 3*time.Second)
	}
	if err != nil {
		t.Fatalf("%v: %v", fl, err)
	}
	return ok
}

type propLabel struct{ instance, direction string }

func deniedByLabel(t *testing.T, reg *prometheus.Registry) map[propLabel]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[propLabel]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "moat_instance_sg_denied_flows_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var l propLabel
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "instance":
					l.instance = lp.GetValue()
				case "direction":
					l.direction = lp.GetValue()
				}
			}
			out[l] += m.GetCounter().GetValue()
		}
	}
	return out
}

// waitDenials waits until every label's counter rose from base by at least
// want's count, then checks that labels with nothing to deny did not rise.
func waitDenials(t *testing.T, reg *prometheus.Registry, base, want map[propLabel]float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := deniedByLabel(t, reg)
		var short []string
		for l, n := range want {
			if d := got[l] - base[l]; d < n {
				short = append(short, fmt.Sprintf("%s %s: %v, want ≥ %v", l.instance, l.direction, d, n))
			}
		}
		if len(short) == 0 {
			for l, n := range got {
				if d := n - base[l]; d > 0 && want[l] == 0 {
					t.Errorf("%s %s: %v denials counted, the reference denies none", l.instance, l.direction, d)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("denials counted short of the reference: %s", strings.Join(short, "; "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFirewallMatchesReference: random groups and rules against random tcp
// and udp flows on real sockets; every outcome must be the reference's, in
// enforce mode, and in audit mode every flow passes while the denials the
// reference expects are counted. MOAT_FW_SEED replays a seed.
func TestFirewallMatchesReference(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	seed := uint64(20261202)
	if s := os.Getenv("MOAT_FW_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MOAT_FW_SEED: %v", err)
		}
	}
	t.Logf("seed %d (replay with MOAT_FW_SEED=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, seed))
	rounds, flows := 3, 40
	if testing.Short() {
		rounds, flows = 1, 25
	}

	reg := prometheus.NewRegistry()
	f, err := New(Options{Table: "prop", Registerer: reg, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	serveAll(t)

	for round := range rounds {
		ifaces := genInterfaces(r)
		fls := genFlows(r, flows)
		describe := func() string {
			var b strings.Builder
			for _, ifc := range ifaces {
				fmt.Fprintf(&b, "  %s %v\n    in  %+v\n    out %+v\n", ifc.Instance, ifc.Addrs, ifc.Inbound, ifc.Outbound)
			}
			return b.String()
		}

		program := Program{Mode: Enforce, Interfaces: ifaces}
		apply(t, f, program)
		base := deniedByLabel(t, reg)
		enforced := map[propLabel]float64{} // the chain that drops: outbound first
		audited := map[propLabel]float64{}  // every chain that denies
		mismatches := 0
		for _, fl := range fls {
			v := refJudge(ifaces, fl)
			got := observe(t, fl, v.admitted())
			if got != v.admitted() {
				mismatches++
				t.Errorf("round %d, enforce: %v admitted=%v, the reference says %v (denied outbound %v, inbound %v)",
					round, fl, got, v.admitted(), v.outDenied, v.inDenied)
			}
			// Judge (what moat explain reports) must say what the table did at the inbound side.
			if j := program.Judge(fl.src, fl.dst.Addr(), fl.proto, fl.dst.Port()); !v.outDenied && (j.Interface == "" || j.Admitted) != got {
				t.Errorf("round %d: Judge(%v) = %+v, the table admitted=%v", round, fl, j, got)
			}
			if v.outDenied {
				l := propLabel{ifaces[v.srcInst].Instance, "outbound"}
				enforced[l]++
				audited[l]++
			}
			if v.inDenied {
				l := propLabel{ifaces[v.dstInst].Instance, "inbound"}
				if !v.outDenied {
					enforced[l]++
				}
				audited[l]++
			}
		}
		if mismatches > 0 {
			t.Fatalf("round %d: %d of %d flows differ from the reference; the interfaces:\n%s", round, mismatches, len(fls), describe())
		}
		waitDenials(t, reg, base, enforced)

		apply(t, f, Program{Mode: Audit, Interfaces: ifaces})
		base = deniedByLabel(t, reg)
		for _, fl := range fls {
			if !observe(t, fl, true) {
				t.Errorf("round %d, audit: %v dropped", round, fl)
			}
		}
		waitDenials(t, reg, base, audited)
		var denied float64
		for _, n := range audited {
			denied += n
		}
		t.Logf("round %d: %d flows, %v denials expected in audit mode", round, len(fls), denied)
		if t.Failed() {
			t.Fatalf("round %d failed; the interfaces:\n%s", round, describe())
		}
	}
}
