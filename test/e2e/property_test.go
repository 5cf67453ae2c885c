package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// refRule is a rule as the reference evaluator sees it. Its peer is a CIDR, or (group set) a
// referenced group.
type refRule struct {
	proto    string // tcp, udp, icmp or -1
	from, to int
	cidr     netip.Prefix
	group    string
}

// refAdmits is the reference: a TCP flow to port from addr, which carries groups, is admitted iff
// some rule has protocol -1, or tcp with a port range covering port, and a CIDR containing addr or
// a reference to one of groups. Linear and obvious.
func refAdmits(rules []refRule, port int, addr netip.Addr, groups ...string) bool {
	for _, r := range rules {
		if (r.proto == "-1" || (r.proto == "tcp" && r.from <= port && port <= r.to)) &&
			((r.group == "" && r.cidr.Contains(addr)) || (r.group != "" && slices.Contains(groups, r.group))) {
			return true
		}
	}
	return false
}

// TestSecurityGroupDecisionProperty sets random rule sets on a load balancer's group through the
// API and checks, with real connections from random client addresses, that moat lb admits exactly
// the flows the reference evaluator admits.
func TestSecurityGroupDecisionProperty(t *testing.T) {
	rounds, probes := 8, 24
	if testing.Short() {
		rounds = 3
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	p := startLB(t, t.TempDir())
	ec2c, _ := p.clients(t)
	ctx := context.Background()
	be := startBackend(t, "127.1.0.50:0")
	port := freePort(t)
	st := createStack(t, p, "prop", be.port(), port, "127.0.0.250/32", false)

	current := []ec2types.IpPermission{st.rule}
	for round := range rounds {
		// A random rule set over client addresses 127.0.0.0/25, plus a marker rule admitting one
		// address no other rule covers: once the marker is admitted, the whole set is in force.
		marker := netip.AddrFrom4([4]byte{127, 0, 0, byte(200 + round)})
		rules := []refRule{{proto: "tcp", from: port, to: port, cidr: netip.PrefixFrom(marker, 32)}}
		for range 1 + rng.IntN(12) {
			bits := 25 + rng.IntN(8)
			addr := netip.AddrFrom4([4]byte{127, 0, 0, byte(rng.IntN(128))})
			r := refRule{cidr: netip.PrefixFrom(addr, bits).Masked()}
			switch rng.IntN(6) {
			case 0:
				r.proto = "-1"
			case 1:
				r.proto, r.from, r.to = "udp", port, port
			case 2:
				r.proto, r.from, r.to = "icmp", 3, 4
			default:
				r.proto = "tcp"
				r.from = port - rng.IntN(3)
				r.to = r.from + rng.IntN(4)
			}
			rules = append(rules, r)
		}
		perms := toPermissions(rules)
		if _, err := ec2c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: st.sg, IpPermissions: current}); err != nil {
			t.Fatal(err)
		}
		if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: st.sg, IpPermissions: perms}); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		current = perms
		waitFor(t, time.Second, "the new rule set", func() bool { return admitted(marker, st.front) })

		var wg sync.WaitGroup
		for range probes {
			addr := netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + rng.IntN(126))})
			want := refAdmits(rules, port, addr)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := admitted(addr, st.front); got != want {
					t.Errorf("round %d: client %s admitted %v, reference says %v; rules %+v", round, addr, got, want, rules)
				}
			}()
		}
		wg.Wait()
	}
}

// admitted reports whether a connection from addr reaches the backend through front.
func admitted(addr netip.Addr, front string) bool {
	c, _, err := dialFrom(addr.String(), front, 400*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// toPermissions turns reference rules into one IpPermission per rule (duplicates merged away,
// since EC2 refuses a rule twice).
func toPermissions(rules []refRule) []ec2types.IpPermission {
	seen := map[string]bool{}
	var out []ec2types.IpPermission
	for _, r := range rules {
		key := fmt.Sprint(r)
		if seen[key] {
			continue
		}
		seen[key] = true
		p := ec2types.IpPermission{IpProtocol: aws.String(r.proto)}
		if r.group != "" {
			p.UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: aws.String(r.group)}}
		} else {
			p.IpRanges = []ec2types.IpRange{{CidrIp: aws.String(r.cidr.String())}}
		}
		if r.proto != "-1" {
			p.FromPort, p.ToPort = aws.Int32(int32(r.from)), aws.Int32(int32(r.to))
		}
		out = append(out, p)
	}
	return out
}

func (r refRule) String() string {
	peer := r.cidr.String()
	if r.group != "" {
		peer = r.group
	}
	if r.proto == "-1" {
		return "all from " + peer
	}
	return fmt.Sprintf("%s %d-%d from %s", r.proto, r.from, r.to, peer)
}
