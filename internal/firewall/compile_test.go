package firewall

import (
	"net/netip"
	"testing"

	"github.com/moatlb/moat/internal/secgroup"
)

// TestCompileOpenPortBounds: a negative port bound is open on that side
// only, as secgroup.Rule.Matches reads it; it used to open every port.
func TestCompileOpenPortBounds(t *testing.T) {
	anyone := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	for _, c := range []struct {
		from, to         int
		ports            bool
		fromPort, toPort uint16
	}{
		{-1, -1, false, 0, 0},
		{0, 65535, false, 0, 0},
		{-1, 80, true, 0, 80},
		{100, -1, true, 100, 65535},
		{22, 22, true, 22, 22},
	} {
		m := compileRules([]secgroup.Rule{{Protocol: secgroup.ProtocolTCP, FromPort: c.from, ToPort: c.to, Sources: anyone}})
		if len(m) != 1 {
			t.Fatalf("%d-%d: %d matches, want 1", c.from, c.to, len(m))
		}
		if m[0].ports != c.ports || m[0].fromPort != c.fromPort || m[0].toPort != c.toPort {
			t.Errorf("%d-%d: ports %v %d-%d, want %v %d-%d", c.from, c.to, m[0].ports, m[0].fromPort, m[0].toPort, c.ports, c.fromPort, c.toPort)
		}
	}
}

// TestCompileSharedAddress: an address that a program gives to two
// interfaces stays with the first (the kernel would refuse the table), and
// compile says which.
func TestCompileSharedAddress(t *testing.T) {
	a, b := netip.MustParseAddr("127.1.0.10"), netip.MustParseAddr("127.1.0.11")
	c, shared := compile([]Interface{
		{ID: "eni-1", Addrs: []netip.Addr{a}},
		{ID: "eni-2", Addrs: []netip.Addr{b, a}},
		{ID: "eni-3", Addrs: []netip.Addr{b}},
	})
	if len(c) != 2 || c[0].id != "eni-1" || len(c[0].addrs) != 1 || c[1].id != "eni-2" || len(c[1].addrs) != 1 || c[1].addrs[0] != b {
		t.Errorf("compiled %+v, want eni-1 with %v and eni-2 with %v only", c, a, b)
	}
	if len(shared) != 2 || shared[0] != a || shared[1] != b {
		t.Errorf("shared %v, want [%v %v]", shared, a, b)
	}
}
