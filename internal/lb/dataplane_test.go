package lb

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// A load balancer address the host does not have (on macOS, any loopback address but 127.0.0.1
// until it is aliased) fails CreateListener with what to do about it.
func TestCanListenNamesMissingAddress(t *testing.T) {
	missing := netip.MustParseAddr("192.0.2.1") // TEST-NET-1: on no interface
	for _, proto := range []string{"TCP", "UDP"} {
		err := canListen([]netip.Addr{netip.MustParseAddr("127.0.0.1"), missing}, proto, 0)
		if !errors.Is(err, syscall.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "sudo ifconfig lo0 alias 192.0.2.1") {
			t.Errorf("%s: canListen = %v, want EADDRNOTAVAIL naming the lo0 alias to add", proto, err)
		}
	}
	if err := canListen([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, "TCP", 0); err != nil {
		t.Errorf("canListen on 127.0.0.1 = %v, want nil", err)
	}
}
