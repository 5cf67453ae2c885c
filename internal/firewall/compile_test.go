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
