//go:build linux && !moat_portable

package dataplane

import (
	"os"
	"testing"

	"github.com/google/nftables"
)

// TestKernelFastPath: with the fast path, admitted TCP flows never reach the userspace proxy —
// the target sees the client's own address and port (DNAT), the listening socket holds no flow —
// and the engine's nftables table goes away with the engine.
func TestKernelFastPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
	t.Parallel()
	n := newNet()
	e, err := NewUserspace(Options{Kernel: true})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			e.Close()
		}
	})
	table := e.kernel.Table()
	hcPort := freePort(t, n.inA(0))
	a := newBackend(t, "a", n.inA(0), "zone-a", hcPort)
	port := freePort(t, n.lbA())
	tg := group("tg", hcPort, a.cfg())
	tg.PreserveClientIP = true
	if err := e.Apply(Config{LoadBalancers: []LoadBalancer{{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, AdmitTCP: policy("127.0.0.2/32"), TargetGroup: tg,
	}}}}}); err != nil {
		t.Fatal(err)
	}

	const flows = 50
	var clients []*client
	for range flows {
		c, _ := connect(t, client2, ap(n.lbA(), port))
		clients = append(clients, c)
	}
	for _, c := range clients {
		if err := c.echo("ping"); err != nil {
			t.Fatal(err)
		}
	}
	recs := a.echo.records()
	if len(recs) != flows {
		t.Fatalf("target saw %d connections, want %d", len(recs), flows)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.remote.String()] = true
	}
	for _, c := range clients {
		if local := addrPortOf(c.c.LocalAddr()); !seen[local.String()] {
			t.Errorf("no connection at the target from the client's own %v: the flow was proxied", local)
		}
	}
	e.mu.Lock()
	s := e.sockets[sockKey{addr: n.lbA(), port: port, network: "tcp"}].(*tcpSocket)
	e.mu.Unlock()
	s.mu.Lock()
	proxied := len(s.flows)
	s.mu.Unlock()
	if proxied != 0 {
		t.Errorf("the userspace proxy holds %d flows, want 0", proxied)
	}

	if !hasTable(t, table) {
		t.Fatalf("table %s missing while the engine runs", table)
	}
	e.Close()
	closed = true
	if hasTable(t, table) {
		t.Errorf("table %s outlives the engine", table)
	}
}

func hasTable(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListTableOfFamily(name, nftables.TableFamilyINet)
	return err == nil
}
