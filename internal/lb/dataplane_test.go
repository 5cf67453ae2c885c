package lb

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// A load balancer address the host does not have (on macOS, any loopback address but 127.0.0.1
// until it is aliased) fails CreateListener with what to do about it; one that moat lb tried and
// failed to make local is accepted, for the sync to report its load balancer impaired.
func TestCanListenNamesMissingAddress(t *testing.T) {
	missing := netip.MustParseAddr("192.0.2.1")  // TEST-NET-1: on no interface
	unrouted := netip.MustParseAddr("192.0.2.2") // as if moat lb had failed to route its block
	check := canListen(func(a netip.Addr) error {
		if a == unrouted {
			return errors.New("routing needs root")
		}
		return nil
	})
	for _, proto := range []string{"TCP", "UDP"} {
		err := check([]netip.Addr{netip.MustParseAddr("127.0.0.1"), missing}, proto, 0)
		if !errors.Is(err, syscall.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "sudo ifconfig lo0 alias 192.0.2.1") {
			t.Errorf("%s: canListen = %v, want EADDRNOTAVAIL naming the lo0 alias to add", proto, err)
		}
		if err := check([]netip.Addr{netip.MustParseAddr("127.0.0.1"), unrouted}, proto, 0); err != nil {
			t.Errorf("%s: canListen with an address moat lb failed to route = %v, want nil", proto, err)
		}
	}
	if err := check([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, "TCP", 0); err != nil {
		t.Errorf("canListen on 127.0.0.1 = %v, want nil", err)
	}
}
