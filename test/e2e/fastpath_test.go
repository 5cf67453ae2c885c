//go:build linux

package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/google/nftables"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/netnstest"
	"github.com/moatlb/moat/internal/nftutil"
)

// TestFastPathTableDiesWithProcess: moat lb's nftables table is owned by its netlink socket, so
// no other process can change or delete it, and the kernel removes it the moment moat lb dies, even
// by kill -9: no stale rule goes on capturing the dead load balancer's addresses, and no other
// moat lb has to judge whether a table is orphaned.
func TestFastPathTableDiesWithProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
	dataDir := t.TempDir()
	p := startLB(t, dataDir, "--fast-path=kernel")
	backendPort := startEchoServer(t, "127.1.0.50:0")
	st := createStack(t, p, "orphan", backendPort, freePort(t), "127.0.0.0/24", false)
	waitServing(t, "127.0.0.2", st.front)
	table := loggedTable(t, p)
	tb := nftTable(t, table)
	if tb == nil {
		t.Fatalf("table %s missing while moat lb runs", table)
	}
	const ownerFlag = 0x2 // NFT_TABLE_F_OWNER
	// github.com/google/nftables decodes the flags in host order; the kernel sends them in
	// network order.
	if flags := binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, tb.Flags)); flags&ownerFlag == 0 {
		t.Fatalf("table %s has flags %#x: not owned by moat lb's socket", table, tb.Flags)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(tb)
	if err := c.Flush(); err == nil {
		t.Fatalf("another process deleted moat lb's table %s", table)
	}

	p.kill()
	deadline := time.Now().Add(10 * time.Second)
	for nftTable(t, table) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("table %s of the killed moat lb is still there", table)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing answers on the dead load balancer's address any more.
	if c, _, err := dialFrom("127.0.0.2", st.front, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("%s still answers after moat lb was killed", st.front)
	}
}

func loggedTable(t *testing.T, p *lbProcess) string {
	t.Helper()
	m := regexp.MustCompile(`nftables_table="?inet (moat_[0-9a-f_]+)`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("moat lb did not log its nftables table:\n%s", p.stderr)
	}
	return m[1]
}

// forwardingOff is moat lb's warning that IPv4 forwarding is off.
var forwardingOff = regexp.MustCompile(`IP forwarding is off.*sysctl=net\.ipv4\.ip_forward`)

// nftTable is the fast path's (inet) table of that name, or nil.
func nftTable(t *testing.T, name string) *nftables.Table {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return tb
		}
	}
	return nil
}

// TestFastPathAcrossNamespaces runs moat lb with --fast-path=kernel in a lab (see netnsLab), with
// net.ipv4.ip_forward on in the lb host. The admitted client's flows, which arrive on an
// interface, are carried by the kernel: TCP and UDP to the target host (forwarded, client IP
// preserved: the instance targets' default), and TCP to a target on the lb host itself (an ip
// target, whose default hides the client behind the load balancer's address). Each is proved so
// by its conntrack entry in the lb host carrying moat's mark with a fast-path slot, and by the
// userspace proxy having accepted no flow on its listener. The client no rule admits is dropped.
// With forwarding turned off moat lb says so, and the flows to the target host go through the
// userspace proxy instead of being dropped, while the kernel keeps the local target's.
func TestFastPathAcrossNamespaces(t *testing.T) {
	lab := newNetnsLab(t, "f")
	lab.sysctl(lab.lb, "net.ipv4.ip_forward=1")
	lab.serve(lab.target, echoBin, "198.18.2.10:8080")
	lab.serve(lab.target, echoBin, "udp", "198.18.2.10:8081")
	lab.serve(lab.lb, echoBin, "198.18.2.1:8082")
	p := lab.startLB("--fast-path=kernel")
	ec2c, elbc := p.clients(t)
	st := newLabStack(t, p, ec2c, elbc, []ec2types.IpPermission{
		portRule("tcp", 80, "198.18.0.2/32"), portRule("udp", 53, "198.18.0.2/32"), portRule("tcp", 81, "198.18.0.2/32")})
	st.admitFront(t, ec2c, portRule("tcp", 8080), portRule("udp", 8081))
	_, tcpListener := st.forward(t, elbc, elbtypes.ProtocolEnumTcp, 80, 8080, "")
	_, udpListener := st.forward(t, elbc, elbtypes.ProtocolEnumUdp, 53, 8081, "")
	_, localListener := st.forward(t, elbc, elbtypes.ProtocolEnumTcp, 81, 8082, "198.18.2.1")
	client, lbAddr := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr(st.zoneB)

	type flowCase struct {
		name, mode string
		port       uint16
		l4         uint8
		listener   *string
		seen       netip.Addr // the client address the target sees
		target     netip.Addr
	}
	remoteTCP := flowCase{"tcp", "dial", 80, unix.IPPROTO_TCP, tcpListener, client, netip.MustParseAddr("198.18.2.10")}
	remoteUDP := flowCase{"udp", "dial-udp", 53, unix.IPPROTO_UDP, udpListener, client, netip.MustParseAddr("198.18.2.10")}
	localTCP := flowCase{"tcp to the lb host", "dial", 81, unix.IPPROTO_TCP, localListener, lbAddr, netip.MustParseAddr("198.18.2.1")}
	proxied := func(c flowCase) float64 {
		return metricValue(t, p, "moat_dataplane_proxied_flows_total", `listener="`+*c.listener+`"`)
	}
	// open opens a flow of the admitted client and returns the target's answer and the client's
	// address, once it goes through.
	open := func(c flowCase) (seen, local netip.AddrPort) {
		t.Helper()
		var out string
		var err error
		waitFor(t, 10*time.Second, "the admitted client's flow ("+c.name+")", func() bool {
			out, err = lab.dial(c.mode, netip.AddrPortFrom(lbAddr, c.port).String(), client.String())
			return err == nil
		})
		return answerAddr(t, out, "you are "), answerAddr(t, out, "local ")
	}
	inKernel := func(c flowCase) (seen netip.AddrPort) {
		t.Helper()
		seen, local := open(c)
		if seen.Addr() != c.seen {
			t.Errorf("%s: the target saw %v, want %v", c.name, seen, c.seen)
		}
		front := netip.AddrPortFrom(lbAddr, c.port)
		f, ok := conntrackFlow(t, lab.lb, c.l4, local, front)
		switch {
		case !ok:
			t.Errorf("%s: no conntrack entry for %v → %v in the lb host", c.name, local, front)
		case f.Mark&nftutil.MarkFlow == 0 || f.Mark&(1<<nftutil.MarkSlotBits-1) == 0:
			t.Errorf("%s: conntrack mark %#x: not a fast-path flow of moat lb", c.name, f.Mark)
		case f.TupleReply.IP.SourceAddress != c.target:
			t.Errorf("%s: conntrack sends the flow to %v, want %v", c.name, f.TupleReply.IP.SourceAddress, c.target)
		}
		if n := proxied(c); n != 0 {
			t.Errorf("%s: the userspace proxy accepted %v flows, want 0", c.name, n)
		}
		return seen
	}

	for _, c := range []flowCase{remoteTCP, remoteUDP, localTCP} {
		seen := inKernel(c)
		waitFor(t, 10*time.Second, "the kernel's count of the flow ("+c.name+")", func() bool {
			return metricValue(t, p, "moat_dataplane_new_flows_total", `listener="`+*c.listener+`"`) >= 1
		})
		if c == remoteUDP {
			// One datagram each way, "ping" and the answer, each counted once as IP bytes (28
			// bytes of headers), in prerouting as it arrived.
			in, out := 4+28, len("you are "+seen.String()+"\n")+28
			bytes := func(dir string) float64 {
				return metricValue(t, p, "moat_dataplane_bytes_total", `listener="`+*c.listener+`"`, `direction="`+dir+`"`)
			}
			waitFor(t, 10*time.Second, fmt.Sprintf("%d bytes in and %d out", in, out), func() bool {
				return bytes("in") == float64(in) && bytes("out") == float64(out)
			})
		}
		if out, err := lab.dial(c.mode, netip.AddrPortFrom(lbAddr, c.port).String(), "198.18.0.3"); err == nil || !strings.Contains(out, "timeout") {
			t.Errorf("%s: denied client: %q, %v; want a timeout", c.name, out, err)
		}
	}

	// Without forwarding the kernel cannot take the flows to the target host: they go through the
	// userspace proxy, which shows the target the load balancer's address.
	lab.sysctl(lab.lb, "net.ipv4.ip_forward=0")
	waitFor(t, 10*time.Second, "moat lb to say that forwarding is off", func() bool {
		return forwardingOff.MatchString(p.stderr.String())
	})
	for _, c := range []flowCase{remoteTCP, remoteUDP} {
		waitFor(t, 10*time.Second, "the flow to go through the proxy ("+c.name+")", func() bool {
			out, err := lab.dial(c.mode, netip.AddrPortFrom(lbAddr, c.port).String(), client.String())
			return err == nil && answerAddr(t, out, "you are ").Addr() == lbAddr
		})
		if n := proxied(c); n < 1 {
			t.Errorf("%s: the userspace proxy accepted %v flows, want at least 1", c.name, n)
		}
	}
	inKernel(localTCP) // needs no forwarding
}

// answerAddr is the address after label in an echoserver client's output ("you are <address>",
// the client as the target saw it; "local <address>", the client's own end).
func answerAddr(t *testing.T, out, label string) netip.AddrPort {
	t.Helper()
	_, rest, ok := strings.Cut(out, label)
	rest, _, _ = strings.Cut(rest, "\n")
	ap, err := netip.ParseAddrPort(strings.TrimSpace(rest))
	if !ok || err != nil {
		t.Fatalf("output %q names no address after %q", out, label)
	}
	return ap
}

// conntrackFlow finds the conntrack entry of a flow from src to dst in namespace ns.
func conntrackFlow(t *testing.T, ns string, proto uint8, src, dst netip.AddrPort) (conntrack.Flow, bool) {
	t.Helper()
	c, err := conntrackIn(ns)
	if err != nil {
		t.Fatalf("conntrack in %s: %v", ns, err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		t.Fatalf("conntrack in %s: %v", ns, err)
	}
	for _, f := range flows {
		o := f.TupleOrig
		if o.Proto.Protocol == proto && netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort) == src &&
			netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort) == dst {
			return f, true
		}
	}
	return conntrack.Flow{}, false
}

// conntrackIn opens a conntrack netlink socket in namespace ns; the socket stays in ns.
func conntrackIn(ns string) (c *conntrack.Conn, err error) {
	err = netnstest.Do(ns, func() error {
		c, err = conntrack.Dial(nil)
		return err
	})
	return c, err
}
