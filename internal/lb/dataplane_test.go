package lb

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// A load balancer address the host does not have (on macOS, any loopback address but 127.0.0.1
// until it is aliased) fails CreateListener with what to do about it, and with why moat lb could
// not make it local when it tried.
func TestCanListenNamesMissingAddress(t *testing.T) {
	missing := netip.MustParseAddr("192.0.2.1") // TEST-NET-1: on no interface
	tried := errors.New("routing needs root")
	check := canListen(func(a netip.Addr) error {
		if a == missing {
			return tried
		}
		return nil
	})
	for _, proto := range []string{"TCP", "UDP"} {
		err := check([]netip.Addr{netip.MustParseAddr("127.0.0.1"), missing}, proto, 0)
		if !errors.Is(err, syscall.EADDRNOTAVAIL) || !errors.Is(err, tried) || !strings.Contains(err.Error(), "sudo ifconfig lo0 alias 192.0.2.1") {
			t.Errorf("%s: canListen = %v, want EADDRNOTAVAIL naming the lo0 alias to add and why it is not local", proto, err)
		}
	}
	if err := check([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, "TCP", 0); err != nil {
		t.Errorf("canListen on 127.0.0.1 = %v, want nil", err)
	}
}
