//go:build linux

package dataplane

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/moatlb/moat/internal/netnstest"
)

// ipv6Net is TestLifetimeIPv6's addresses, on lo in its own network namespace (loopback has
// only ::1). Its cases share them: each has ports of its own.
func ipv6Net() lifetimeNet {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	return lifetimeNet{lb: a("fd00:6::100"), targets: [2]netip.Addr{a("fd00:6::10"), a("fd00:6::11")},
		client: a("fd00:6::2"), other: a("fd00:6::3")}
}

// TestIPv6Flows runs the flow-lifetime invariants over IPv6 — an IPv6 load balancer address, IPv6
// targets and IPv6 clients — and source-IP stickiness. With -kernel every flow is first proved to
// be the kernel's (conntrack holds it with the engine's mark, and the userspace proxy accepted
// nothing), as for IPv4.
func TestIPv6Flows(t *testing.T) {
	var inner []string
	if *kernelTests {
		inner = append(inner, "-kernel")
	}
	if !netnstest.Enter(t, inner...) {
		return
	}
	n := ipv6Net()
	for _, a := range []netip.Addr{n.lb, n.targets[0], n.targets[1], n.client, n.other} {
		if out, err := exec.Command("ip", "-6", "addr", "add", only(a), "dev", "lo", "nodad").CombinedOutput(); err != nil {
			t.Fatalf("add %s: %v\n%s", a, err, out)
		}
	}
	for name, run := range map[string]lifetimeCase{
		"denied":           lifetimeDenied,
		"revoke":           lifetimeRevoke,
		"deregister":       lifetimeDeregister,
		"unhealthy":        lifetimeUnhealthy,
		"idle":             lifetimeIdle,
		"deleted listener": lifetimeDeletedListener,
	} {
		t.Run(name, func(t *testing.T) { bothProtocols(t, ipv6Net, run) })
	}
	t.Run("client reset", func(t *testing.T) { lifetimeClientReset(t, ipv6Net) })
	t.Run("stickiness", func(t *testing.T) { stickiness(t, ipv6Net()) })
}
