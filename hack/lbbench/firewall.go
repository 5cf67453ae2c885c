//go:build linux

package main

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/secgroup"
)

// benchFirewall measures direct connections from the client to the backends, which sit on an
// instance's address, with the instance firewall off (no table, so no connection tracking
// either), with its table protecting another instance only (ct-only: the cost of tracking
// connections; a table that protects no instance hooks nothing) and enforcing, in turns (off,
// ct-only, enforce, off, …) so that a noisy machine weighs on all alike. The instance's group is a full one: 59 rules that do not match the client, then the one
// that does, as real rule sets are. The firewall judges a flow's first packet only; conntrack
// carries the rest, so the figures should be close.
//
// With clientNS, the client runs in that namespace and reaches the instance over a link, as
// traffic reaches a real host's instance; otherwise both are on this namespace's loopback.
func benchFirewall(o testOpts, reps int, clientNS string) {
	fw, err := firewall.New(firewall.Options{Table: "bench"})
	check(err)
	defer fw.Close()
	run := func(test, addr string) result { return runTest(test, addr, o) }
	if clientNS != "" {
		clientIP = labClientIP
		run = func(test, addr string) result { return runIn(clientNS, test, addr, o) }
	}
	var rules []secgroup.Rule
	for i := range 59 {
		rules = append(rules, secgroup.Rule{Protocol: secgroup.ProtocolTCP, FromPort: 1024, ToPort: 65535,
			Sources: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", i))}})
	}
	rules = append(rules, secgroup.Rule{Protocol: secgroup.ProtocolTCP, FromPort: 1024, ToPort: 65535,
		Sources: []netip.Prefix{netip.MustParsePrefix(clientIP + "/32")}})
	instance := firewall.Interface{ID: "eni-bench", Instance: "i-bench", Addrs: []netip.Addr{netip.MustParseAddr(backendIP)},
		Inbound:  rules,
		Outbound: []secgroup.Rule{{Protocol: secgroup.ProtocolAll, Sources: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}}}
	// Another instance on the host, at an address of TEST-NET-1: the table hooks and tracks
	// connections, and judges none of the benchmark's.
	other := firewall.Interface{ID: "eni-other", Instance: "i-other", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	sink, echo := serveSink(), serveEcho()
	modes := []struct {
		t *target
		p firewall.Program
	}{
		{&target{name: "sg-off", sinkAddr: sink, echoAddr: echo}, firewall.Program{Mode: firewall.Off}},
		{&target{name: "ct-only", sinkAddr: sink, echoAddr: echo}, firewall.Program{Mode: firewall.Enforce, Interfaces: []firewall.Interface{other}}},
		{&target{name: "sg-enforce", sinkAddr: sink, echoAddr: echo}, firewall.Program{Mode: firewall.Enforce, Interfaces: []firewall.Interface{instance}}},
	}
	for range reps {
		for _, m := range modes {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := fw.Wait(ctx, fw.Apply(m.p))
			cancel()
			check(err)
			m.t.measure(run, o)
		}
	}
	log.Printf("measured %d rounds of each", reps)
	var ts []*target
	for _, m := range modes {
		ts = append(ts, m.t)
	}
	report(ts)
	// sg-enforce/ct-only is what enforcing adds on a host that tracks connections already (any
	// Kubernetes node does, for its services).
	fmt.Println("\nmedian of the per-round ratios:")
	for i, b := range ts {
		for _, a := range ts[i+1:] {
			ratios(a, b)
		}
	}
}
