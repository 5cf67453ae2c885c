//go:build linux && !moat_portable

package lb

import (
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/moatlb/moat/internal/netnstest"
)

// TestSubnetRouter: an API-made subnet's block becomes local (its addresses bind) and stops being
// local when the subnet goes; a block the host already routes is left alone, with the reason.
func TestSubnetRouter(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	bindable := func(a string) bool {
		ln, err := net.Listen("tcp", a+":0")
		if err == nil {
			ln.Close()
		}
		return err == nil
	}
	block := netip.MustParsePrefix("198.51.100.0/24") // TEST-NET-2
	r := newSubnetRouter(slog.New(slog.DiscardHandler))
	if bindable("198.51.100.7") {
		t.Fatal("the block is local before any route")
	}
	r.Sync([]netip.Prefix{block})
	if err := r.Why(netip.MustParseAddr("198.51.100.7")); err != nil || !bindable("198.51.100.7") {
		t.Fatalf("after Sync, 198.51.100.7 does not bind (why: %v)", err)
	}
	r.Sync([]netip.Prefix{block}) // again: nothing changes, nothing fails
	if !bindable("198.51.100.7") {
		t.Fatal("a second Sync lost the route")
	}

	// A restarted moat lb adopts the route and removes it once the subnet is gone.
	again := newSubnetRouter(slog.New(slog.DiscardHandler))
	again.Sync([]netip.Prefix{block})
	again.Sync(nil)
	if bindable("198.51.100.7") {
		t.Fatal("the block is still local after its subnet went")
	}

	// A block overlapping a network the host routes is not taken over.
	if out, err := exec.Command("ip", "route", "add", "203.0.113.0/25", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip route add: %v\n%s", err, out)
	}
	busy := netip.MustParsePrefix("203.0.113.0/24")
	r.Sync([]netip.Prefix{busy})
	if err := r.Why(netip.MustParseAddr("203.0.113.200")); err == nil || !strings.Contains(err.Error(), "203.0.113.0/25") {
		t.Errorf("why = %v, want the overlapping route named", err)
	}
	if bindable("203.0.113.200") {
		t.Error("moat took over a routed network")
	}
	r.Close()
}
