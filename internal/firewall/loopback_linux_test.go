//go:build linux && !moat_portable

package firewall

import (
	"github.com/moatlb/moat/internal/netnstest"
	"net/netip"
	"testing"
)

// TestSkipLoopback: with SkipLoopback, flows over the loopback interface (all of this test's:
// its namespace has no other) are admitted whatever the rules say, and turning it off alone
// reprograms the kernel.
func TestSkipLoopback(t *testing.T) {
	if !netnstest.Enter(t) {
		return
	}
	f, err := New(Options{Table: "loop"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nodePort := listen(t, netip.AddrPortFrom(nodeA, 30080))
	closed := []Interface{node(false, false)}

	apply(t, f, Program{Mode: Enforce, Interfaces: closed, SkipLoopback: true})
	if !admitted(t, client, nodePort) {
		t.Error("a flow over loopback is judged although SkipLoopback is set")
	}
	apply(t, f, Program{Mode: Enforce, Interfaces: closed})
	if admitted(t, client, nodePort) {
		t.Error("with SkipLoopback off, a flow no rule admits got in")
	}
	apply(t, f, Program{Mode: Off})
}
