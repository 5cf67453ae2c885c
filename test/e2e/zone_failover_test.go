//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/etcdtest"
)

// failoverInventory has zone a's subnet on the lab's link, with the target in it.
const failoverInventory = `
vpcs:
  - {name: lab, cidr: 198.18.0.0/16, default: true}
subnets:
  - {name: a, vpc: lab, zone: a, cidr: 198.18.1.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
  - {name: b, vpc: lab, zone: b, cidr: 198.18.2.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
securityGroups:
  - {name: targets, vpc: lab, description: the target host}
instances:
  - {name: target, subnet: a, privateIp: 198.18.1.10, securityGroups: [targets]}
`

const (
	failoverAddr = "198.18.1.100:80" // zone a's address of the load balancer: the allocator's first
	allowed      = "198.18.1.2"
	denied       = "198.18.1.3"
	failoverTTL  = 3 * time.Second
)

// failoverLab is one Ethernet link (a bridge in a namespace of its own) joining a client host,
// two moat lb nodes and a target host, all in 198.18.1.0/24, as machines in one subnet:
//
//	client (.2 allowed, .3 denied) ─┐
//	node-1 (.11) ───────────────────┤ bridge
//	node-2 (.12) ───────────────────┤
//	target (.10, echo on 8080) ─────┘
//
// Each node also has a veth to the test's namespace (a /30 in 198.18.10.0/24) for its API and
// for etcd, which runs in the test's namespace behind one etcdtest.Proxy per node, so that a node
// can be cut off from etcd alone. The active node for zone a puts 198.18.1.100 on its link
// interface (--announce-interface) and sends a gratuitous ARP: the client's next connections go
// to it.
type failoverLab struct {
	t                      *testing.T
	id                     string
	sw, client, target     string
	nodeNS                 [2]string
	linkIf, apiHost, proxy [2]string
	proxies                [2]*etcdtest.Proxy
	inventory              string
}

func newFailoverLab(t *testing.T) *failoverLab {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	member := etcdMember(t)

	id := fmt.Sprintf("z%d", os.Getpid()%10000)
	l := &failoverLab{t: t, id: id, sw: "moats" + id, client: "moatc" + id, target: "moatt" + id,
		nodeNS: [2]string{"moat1" + id, "moat2" + id}}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{l.sw, l.client, l.target, l.nodeNS[0], l.nodeNS[1]} {
		run("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run("-n", ns, "link", "set", "lo", "up")
	}
	run("-n", l.sw, "link", "add", "br0", "type", "bridge")
	run("-n", l.sw, "link", "set", "br0", "up")
	// port joins ns to the bridge through a veth named dev there, with addrs.
	port := func(ns, dev string, addrs ...string) {
		peer := "s" + dev
		run("link", "add", dev, "type", "veth", "peer", "name", peer)
		run("link", "set", dev, "netns", ns)
		run("link", "set", peer, "netns", l.sw)
		run("-n", l.sw, "link", "set", peer, "master", "br0", "up")
		run("-n", ns, "link", "set", dev, "up")
		for _, a := range addrs {
			run("-n", ns, "addr", "add", a, "dev", dev)
		}
	}
	port(l.client, "c"+id, allowed+"/24", denied+"/24")
	port(l.target, "t"+id, "198.18.1.10/24")
	octet := 8 * (os.Getpid() % 32)
	for i, ns := range l.nodeNS {
		l.linkIf[i] = fmt.Sprintf("n%d%s", i+1, id)
		port(ns, l.linkIf[i], fmt.Sprintf("198.18.1.%d/24", 11+i))
		here, there := fmt.Sprintf("198.18.10.%d", octet+4*i+1), fmt.Sprintf("198.18.10.%d", octet+4*i+2)
		dev, peer := fmt.Sprintf("r%d%s", i+1, id), fmt.Sprintf("a%d%s", i+1, id)
		run("link", "add", dev, "type", "veth", "peer", "name", peer)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", dev).Run() })
		run("link", "set", peer, "netns", ns)
		run("addr", "add", here+"/30", "dev", dev)
		run("link", "set", dev, "up")
		run("-n", ns, "addr", "add", there+"/30", "dev", peer)
		run("-n", ns, "link", "set", peer, "up")
		l.apiHost[i] = there
		proxy, err := etcdtest.NewProxy(here+":0", member.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		l.proxies[i] = proxy
		t.Cleanup(func() { proxy.Close() })
	}
	l.inventory = filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(l.inventory, []byte(failoverInventory), 0o600); err != nil {
		t.Fatal(err)
	}
	l.serve(l.target, echoBin, "198.18.1.10:8080")
	return l
}

func (l *failoverLab) serve(ns string, args ...string) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.SysProcAttr = dieWithTest()
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// startNode starts node i (0 or 1) for zone a, its store reached through its proxy.
func (l *failoverLab) startNode(i int) *lbProcess {
	l.t.Helper()
	return startLBIn(l.t, []string{"ip", "netns", "exec", l.nodeNS[i]}, l.apiHost[i], filepath.Join(l.t.TempDir(), "lb"),
		"--inventory", l.inventory, "--store=etcd://"+l.proxies[i].Addr(), "--zones=us-east-1a",
		"--zone-lease-ttl="+failoverTTL.String(), fmt.Sprintf("--node-name=node-%d", i+1),
		"--announce-interface="+l.linkIf[i], "--fast-path=off", "--instance-sg-mode=off")
}

// dial opens one connection from source to the load balancer's zone a address; it answers
// the target's greeting or fails (a denied client times out after dialTimeout).
func (l *failoverLab) dial(source string, timeout time.Duration) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", l.client, echoBin, "dial", failoverAddr, source, timeout.String()).Output()
	greeting, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return greeting, err
}

// prober opens new connections from the allowed client without pause and records when each that
// succeeded began: one begun after a moment proves the load balancer served after it.
type prober struct {
	mu        sync.Mutex
	successes []time.Time
	stop      chan struct{}
	done      chan struct{}
}

func (l *failoverLab) startProber() *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			began := time.Now()
			if _, err := l.dial(allowed, 300*time.Millisecond); err == nil {
				p.mu.Lock()
				p.successes = append(p.successes, began)
				p.mu.Unlock()
			}
		}
	}()
	l.t.Cleanup(func() { p.halt() })
	return p
}

func (p *prober) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// gapAround is the longest time without a successful connection that spans at, and the first
// success after at (zero if none yet).
func (p *prober) gapAround(at time.Time) (gap time.Duration, resumed time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, s := range p.successes {
		if s.Before(at) {
			last = s
			continue
		}
		return s.Sub(last), s
	}
	return 0, time.Time{}
}

var zoneLogLine = regexp.MustCompile(`msg="zone (active|standby)" zone=us-east-1a node=(\S+) (?:since=(\S+)|served_from=(\S+) served_until=(\S+))`)

// servingIntervals reads a node's serving intervals of zone a from its log; an open one ends at
// the zero time.
func servingIntervals(t *testing.T, p *lbProcess) [][2]time.Time {
	t.Helper()
	var out [][2]time.Time
	parse := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("zone log time %q: %v", s, err)
		}
		return v
	}
	for _, m := range zoneLogLine.FindAllStringSubmatch(p.stderr.String(), -1) {
		if m[1] == "active" {
			out = append(out, [2]time.Time{parse(m[3])})
			continue
		}
		if n := len(out); n > 0 && out[n-1][1].IsZero() {
			out[n-1][1] = parse(m[5])
		}
	}
	return out
}

func zoneActive(t *testing.T, p *lbProcess) bool {
	return metricValue(t, p, "moat_lb_zone_active", `zone="us-east-1a"`) == 1
}

// TestZoneFailover: zone a has an active node and a standby on one link; a client opens new
// connections all the time. Killing the active node (kill -9), the standby serves the address
// after the lease lapses, and the security groups still hold: the allowed client gets in, the
// denied one is dropped. Then the active node is cut off from etcd instead: it must stop serving
// (by its own fence) before the other starts, as the two nodes' logs show.
func TestZoneFailover(t *testing.T) {
	l := newFailoverLab(t)
	first := l.startNode(0)
	waitFor(t, 30*time.Second, "node-1 active for zone a", func() bool { return zoneActive(t, first) })
	second := l.startNode(1)
	waitFor(t, 30*time.Second, "node-2 sees node-1 holding zone a", func() bool {
		return metricValue(t, second, "moat_lb_zone_holder", `zone="us-east-1a"`, `node="node-1"`) == 1
	})
	if zoneActive(t, second) {
		t.Fatal("node-2 is active for zone a too")
	}
	buildFailoverStack(t, first)
	waitFor(t, 30*time.Second, "the allowed client gets in through node-1", func() bool {
		_, err := l.dial(allowed, time.Second)
		return err == nil
	})

	probes := l.startProber()
	waitFor(t, 10*time.Second, "the prober's connections succeed", func() bool { gap, _ := probes.gapAround(time.Now().Add(-time.Second)); return gap > 0 })
	first.kill()
	killedAt := time.Now()
	var gap time.Duration
	waitFor(t, 30*time.Second, "new connections succeed again after node-1 is killed", func() bool {
		var resumed time.Time
		gap, resumed = probes.gapAround(killedAt)
		return !resumed.IsZero()
	})
	// The contract's 5 s is reported, not asserted: a loaded CI machine may stretch it; the
	// deadline above is the assertion.
	t.Logf("kill -9 of the active node: new connections failed for %s (lease TTL %s; within 5s: %v)", gap.Round(time.Millisecond), failoverTTL, gap <= 5*time.Second)
	waitFor(t, 2*time.Second, "node-2, serving, says it is active", func() bool { return zoneActive(t, second) })
	if greeting, err := l.dial(denied, 2*time.Second); err == nil {
		t.Errorf("the denied client got in through node-2 (%s)", greeting)
	}

	// Partition: node-1 comes back as the standby; node-2, active, is cut off from etcd.
	first = l.startNode(0)
	waitFor(t, 30*time.Second, "node-1 back as the standby", func() bool {
		return metricValue(t, first, "moat_lb_zone_holder", `zone="us-east-1a"`, `node="node-2"`) == 1
	})
	cutAt := time.Now()
	l.proxies[1].Cut(true)
	waitFor(t, 30*time.Second, "node-1 active again after node-2 is cut off", func() bool { return zoneActive(t, first) })

	secondServed, firstServed := servingIntervals(t, second), servingIntervals(t, first)
	if len(secondServed) == 0 || len(firstServed) == 0 {
		t.Fatalf("serving intervals from the logs: node-2 %v, node-1 (restarted) %v", secondServed, firstServed)
	}
	ended := secondServed[len(secondServed)-1]
	started := firstServed[len(firstServed)-1]
	if ended[1].IsZero() {
		t.Fatalf("node-2 still serves zone a (since %s) while node-1 does (since %s)", ended[0].Format(time.StampMicro), started[0].Format(time.StampMicro))
	}
	if !ended[1].Before(started[0]) {
		t.Errorf("serving intervals overlap: node-2 served until %s, node-1 from %s", ended[1].Format(time.StampMicro), started[0].Format(time.StampMicro))
	}
	waitFor(t, 30*time.Second, "new connections succeed through node-1", func() bool { _, resumed := probes.gapAround(ended[1]); return !resumed.IsZero() })
	gap, _ = probes.gapAround(ended[1])
	probes.halt()
	t.Logf("node-2 cut off from etcd at %s stopped serving at %s (its fence); node-1 began at %s, %s later; new connections failed for %s",
		cutAt.Format(time.StampMilli), ended[1].Format(time.StampMilli), started[0].Format(time.StampMilli), started[0].Sub(ended[1]).Round(time.Millisecond), gap.Round(time.Millisecond))
	if greeting, err := l.dial(allowed, time.Second); err != nil {
		t.Errorf("the allowed client cannot get in through node-1: %v", err)
	} else if _, err := l.dial(denied, 2*time.Second); err == nil {
		t.Errorf("the denied client got in through node-1 (%s)", greeting)
	}
}

// buildFailoverStack makes, through p, a load balancer in zone a admitting only the allowed
// client on TCP 80, forwarding to the target instance's port 8080.
func buildFailoverStack(t *testing.T, p *lbProcess) {
	t.Helper()
	ec2c, elbc := p.clients(t)
	ctx := context.Background()
	subnets, err := ec2c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("availability-zone"), Values: []string{"us-east-1a"}}}})
	if err != nil || len(subnets.Subnets) != 1 {
		t.Fatalf("zone a's subnet: %v (%d found)", err, len(subnets.Subnets))
	}
	insts, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	instance := insts.Reservations[0].Instances[0]
	st := &labStack{vpc: subnets.Subnets[0].VpcId, instance: instance.InstanceId, targetGroup: instance.SecurityGroups[0].GroupId}
	front, err := ec2c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("front"), Description: aws.String("clients"), VpcId: st.vpc})
	if err != nil {
		t.Fatal(err)
	}
	st.front = front.GroupId
	if _, err := ec2c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: st.front,
		IpPermissions: []ec2types.IpPermission{portRule("tcp", 80, allowed+"/32")}}); err != nil {
		t.Fatal(err)
	}
	lb, err := elbc.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("failover"), Type: elbtypes.LoadBalancerTypeEnumNetwork,
		Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: []string{*subnets.Subnets[0].SubnetId}, SecurityGroups: []string{*st.front}})
	if err != nil {
		t.Fatal(err)
	}
	st.lbARN = *lb.LoadBalancers[0].LoadBalancerArn
	st.admitFront(t, ec2c, portRule("tcp", 8080))
	st.forward(t, elbc, elbtypes.ProtocolEnumTcp, 80, 8080, "")
}
