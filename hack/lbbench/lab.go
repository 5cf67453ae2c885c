//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/ti-mo/conntrack"

	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/netnstest"
)

// The labs that hack/bench-lb.sh builds, one for each path, alike: a client host, the proxies'
// host and a target host, in three network namespaces joined by veth pairs:
//
//	client 198.18.0.2 ── veth ── proxies 198.18.0.1, 198.18.2.1 (load balancer addresses 198.18.{1,2}.96/27 routed locally, forwarding on) ── veth ── target 198.18.2.10
//
// The direct path is the client to the target through the proxies' host as a router, so that
// every path crosses the same links. Each path has its own hosts, as on separate machines: all
// run at once, and no path's kernel state (moat's table turns on connection tracking for its
// host) touches another's.
const (
	labClientIP = "198.18.0.2"
	labTargetIP = "198.18.2.10"
	labProxyIP  = "198.18.0.1" // HAProxy's and nginx's listeners
	// The backends' ports on the target: TCP sink, TCP echo, UDP echo.
	sinkPort, echoPort, udpPort = 9000, 9001, 9002
)

// labInventory is moat lb's: the target in subnet b, so that the load balancer's zone b address
// serves it (cross-zone load balancing is off, as on AWS).
const labInventory = `
vpcs:
  - {name: bench, cidr: 198.18.0.0/16, default: true}
subnets:
  - {name: a, vpc: bench, zone: a, cidr: 198.18.1.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
  - {name: b, vpc: bench, zone: b, cidr: 198.18.2.0/24, tags: {kubernetes.io/role/internal-elb: "1"}}
`

// runInErr runs one client test with this binary in network namespace ns (its source address
// is labClientIP) and returns its result.
func runInErr(ns, test, addr string, o testOpts) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command("ip", "netns", "exec", ns, self, "-test", test, "-addr", addr,
		"-bytes", strconv.FormatInt(o.size, 10), "-duration", o.duration.String(), "-requests", strconv.Itoa(o.requests))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, err
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		return result{}, err
	}
	log.Printf("  %s %s: %s", addr, test, out)
	return r, nil
}

// runIn is runInErr for callers that stop at the first failure.
func runIn(ns, test, addr string, o testOpts) result {
	r, err := runInErr(ns, test, addr, o)
	if err != nil {
		log.Fatalf("lbbench: %s test of %s: %v", test, addr, err)
	}
	return r
}

type lab struct {
	prefix                     string // of the labs' network namespaces (see ns)
	moat, haproxy, nginx, cpus string
	baseline                   string   // a second moat binary, measured as the paths base and base-us
	paths                      []string // the paths to measure; empty: all
}

// ns is the network namespace of path's client ("c"), proxies' host ("l") or target ("t").
func (l lab) ns(path, host string) string { return l.prefix + path + "-" + host }

// benchLab runs every path's proxy and backends, each in its own lab, for the whole run, and
// measures them round after round. The throughput, connections and latency tests take turns
// between the paths, chunk by chunk of one stream each, a quarter second of connections at a
// time, and request by request, so that every path is measured over the same moments of a noisy
// machine (measured a path at a time, the same path's figures varied by a third between
// rounds). The UDP test takes one path at a time.
func benchLab(l lab, o testOpts, reps int) {
	dir, err := os.MkdirTemp("", "lbbench-")
	check(err)
	defer os.RemoveAll(dir)
	hostPort := func(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	paths := []path{
		{&target{name: "direct"}, func(t *target) func() {
			t.sinkAddr, t.echoAddr, t.udpAddr = hostPort(labTargetIP, sinkPort), hostPort(labTargetIP, echoPort), hostPort(labTargetIP, udpPort)
			return func() {}
		}},
		{&target{name: "moat"}, func(t *target) func() { return l.startMoat(t, l.moat, "kernel", dir, 10000) }},
		{&target{name: "moat-us"}, func(t *target) func() { return l.startMoat(t, l.moat, "off", dir, 10100) }},
	}
	if l.baseline != "" {
		paths = append(paths,
			path{&target{name: "base"}, func(t *target) func() { return l.startMoat(t, l.baseline, "kernel", dir, 10400) }},
			path{&target{name: "base-us"}, func(t *target) func() { return l.startMoat(t, l.baseline, "off", dir, 10500) }})
	}
	if l.haproxy != "" {
		paths = append(paths,
			path{&target{name: "haproxy"}, func(t *target) func() { return l.startHAProxy(t, dir, 10200, false) }},
			path{&target{name: "haproxy-splice"}, func(t *target) func() { return l.startHAProxy(t, dir, 10600, true) }})
	}
	if l.nginx != "" {
		paths = append(paths, path{&target{name: "nginx"}, func(t *target) func() { return l.startNginx(t, dir, 10300) }})
	}
	if len(l.paths) > 0 {
		paths = slices.DeleteFunc(paths, func(p path) bool { return !slices.Contains(l.paths, p.t.name) })
	}
	for _, p := range paths {
		stop := l.startBackends(p.t.name)
		defer stop()
		stop = p.start(p.t)
		defer stop()
	}
	// A proxy's start-up work (its first health checks, its collector's first cycles) is not
	// what a user's long-lived load balancer does.
	time.Sleep(o.settle)

	// run runs a test from t's client host; a failed one stops the benchmark, after what moat lb
	// counted of its flows (refusals and target errors say why a connection was reset).
	run := func(t *target) func(test, addr string) result {
		return func(test, addr string) result {
			r, err := runInErr(l.ns(t.name, "c"), test, addr, o)
			if err != nil {
				if t.metrics != "" {
					log.Printf("%s: %s", t.name, l.flowCounts(t))
				}
				log.Fatalf("lbbench: %s test of %s: %v", test, addr, err)
			}
			return r
		}
	}
	// The UDP test takes one path at a time, every other round in reverse order, so that a
	// machine that slows down or speeds up in the course of a round (a neighbour's load on a
	// shared host) favours no path; the others take turns between the paths (see turns). The
	// connection tracking entries a test leaves on a path's host (tens of thousands after the
	// connections test, in TIME_WAIT for two minutes) are flushed after it: left, they slowed the
	// next round's connections by a third and its p99 latency tenfold.
	for round := range reps {
		order := slices.Clone(paths)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, test := range testNames {
			if !o.wants(test) {
				continue
			}
			if test == "udp" {
				for _, p := range order {
					p.t.measureTest(test, run(p.t), o)
				}
			} else {
				l.turns(test, targets(order), o)
			}
			for _, p := range order {
				flushConntrack(l.ns(p.t.name, "l"))
			}
		}
		for _, p := range paths {
			if p.t.metrics != "" {
				log.Printf("%s: %s", p.t.name, l.flowCounts(p.t))
			}
		}
		log.Printf("measured round %d of %d", round+1, reps)
	}
	ts := targets(paths)
	report(ts)
	fmt.Println("\nmedian of the per-round ratios:")
	byName := map[string]*target{}
	for _, t := range ts {
		byName[t.name] = t
	}
	for _, pair := range [][2]string{{"moat", "direct"}, {"moat-us", "direct"}, {"moat-us", "haproxy"}, {"moat-us", "haproxy-splice"},
		{"moat-us", "nginx"}, {"moat", "nginx"}, {"moat", "base"}, {"moat-us", "base-us"}, {"base", "direct"}, {"base-us", "haproxy"}} {
		if a, b := byName[pair[0]], byName[pair[1]]; a != nil && b != nil {
			ratios(a, b)
		}
	}
}

// turns runs test (latency, throughput or conns) from one client process, which takes turns
// between the paths of ts that serve it, each from its path's client host, and records each
// path's figures.
func (l lab) turns(test string, ts []*target, o testOpts) {
	var turns []string
	var measured []*target
	for _, t := range ts {
		if addr := t.addr(test); addr != "" {
			turns = append(turns, l.ns(t.name, "c")+"="+addr)
			measured = append(measured, t)
		}
	}
	if len(measured) == 0 {
		return
	}
	self, err := os.Executable()
	check(err)
	cmd := exec.Command(self, "-turns", strings.Join(turns, ","), "-test", test,
		"-requests", strconv.Itoa(o.requests), "-bytes", strconv.FormatInt(o.size, 10), "-duration", o.duration.String())
	cmd.Stderr = os.Stderr
	cpu0 := make([]float64, len(measured))
	for i, t := range measured {
		cpu0[i] = t.cpu()
	}
	out, err := cmd.Output()
	if err != nil {
		log.Fatalf("lbbench: %s test: %v", test, err)
	}
	var rs []result
	check(json.Unmarshal(out, &rs))
	// The other paths' proxies idle during t's turns, so t's CPU time in the whole test is what
	// it spent on its own turns.
	for i, t := range measured {
		t.record(test, rs[i], t.cpu()-cpu0[i], o)
		log.Printf("  %s %s: %s", t.name, test, rs[i].format(test))
	}
}

// path is one of the lab's: its figures, and how to start its proxy.
type path struct {
	t     *target
	start func(*target) (stop func())
}

func targets(paths []path) []*target {
	ts := make([]*target, len(paths))
	for i, p := range paths {
		ts[i] = p.t
	}
	return ts
}

// startBackends serves the backends on path's target host until stopped.
func (l lab) startBackends(path string) (stop func()) {
	self, err := os.Executable()
	check(err)
	cmd := exec.Command("ip", "netns", "exec", l.ns(path, "t"), self, "-serve", labTargetIP)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	check(cmd.Start())
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// startMoat starts moat lb with fastPath, a load balancer whose group admits the client among 60
// rules, and listeners from port on for the TCP sink, the TCP echo and the UDP echo, and waits
// until the target is healthy in all three groups.
func (l lab) startMoat(t *target, bin, fastPath, dir string, port int) (stop func()) {
	data, err := os.MkdirTemp(dir, t.name)
	check(err)
	inventory := filepath.Join(dir, "inventory.yaml")
	check(os.WriteFile(inventory, []byte(labInventory), 0o600))
	ns := l.ns(t.name, "l")
	cmd := pinned(ns, l.cpus, bin, "lb", "--data-dir", data, "--inventory", inventory, "--api-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0",
		"--metrics-addr", "127.0.0.1:0", "--fast-path", fastPath)
	logf, err := os.Create(filepath.Join(data, "log"))
	check(err)
	cmd.Stderr = logf
	check(cmd.Start())
	var eps struct{ API, DNS, Metrics, CredentialsFile string }
	for deadline := time.Now().Add(30 * time.Second); ; {
		raw, err := os.ReadFile(filepath.Join(data, "endpoints.json"))
		if err == nil && json.Unmarshal(raw, &eps) == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("lbbench: moat lb did not start; see %s", logf.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithSharedCredentialsFiles([]string{eps.CredentialsFile}), config.WithRegion("us-east-1"))
	check(err)
	// moat lb's API, DNS server and metrics listen on its host's loopback.
	cfg.HTTPClient = awsclient.HTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) { tr.DialContext = dialerIn(ns) }))
	e := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(eps.API) })
	lb := elbv2.NewFromConfig(cfg, func(o *elbv2.Options) { o.BaseEndpoint = aws.String(eps.API) })

	subnets, err := e.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	check(err)
	var ids []string
	for _, s := range subnets.Subnets {
		ids = append(ids, *s.SubnetId)
	}
	vpc := subnets.Subnets[0].VpcId
	sg, err := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("bench"), Description: aws.String("bench clients"), VpcId: vpc})
	check(err)
	// Real rule sets are not one CIDR: 60 rules (the limit per group), 30 for each protocol, the
	// client's among them.
	var ranges []ec2types.IpRange
	for i := range 29 {
		ranges = append(ranges, ec2types.IpRange{CidrIp: aws.String(fmt.Sprintf("10.%d.0.0/16", i))})
	}
	ranges = append(ranges, ec2types.IpRange{CidrIp: aws.String(labClientIP + "/32")})
	var perms []ec2types.IpPermission
	for _, proto := range []string{"tcp", "udp"} {
		perms = append(perms, ec2types.IpPermission{IpProtocol: aws.String(proto), FromPort: aws.Int32(1024), ToPort: aws.Int32(65535), IpRanges: ranges})
	}
	_, err = e.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: perms})
	check(err)
	out, err := lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("bench"), Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: ids, SecurityGroups: []string{*sg.GroupId}})
	check(err)
	nlb := out.LoadBalancers[0]
	// Zone b's address, as its zonal name answers at moat lb's DNS server (AWS describes an
	// address only where the subnet mapping asked for one).
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialerIn(ns)(ctx, "udp", eps.DNS)
	}}
	addrs, err := resolver.LookupHost(ctx, "us-east-1b."+*nlb.DNSName)
	check(err)
	front := addrs[0]
	t.pid, t.metrics = cmd.Process.Pid, eps.Metrics
	var groups []*string
	for i, backend := range []struct {
		proto elbtypes.ProtocolEnum
		port  int
		addr  *string
	}{{elbtypes.ProtocolEnumTcp, sinkPort, &t.sinkAddr}, {elbtypes.ProtocolEnumTcp, echoPort, &t.echoAddr}, {elbtypes.ProtocolEnumUdp, udpPort, &t.udpAddr}} {
		tg, err := lb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(fmt.Sprintf("bench%d", i)), Protocol: backend.proto,
			Port: aws.Int32(int32(backend.port)), VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp,
			// Checked over TCP, on the echo's port, every 5 s, so that the bench starts soon.
			HealthCheckProtocol: elbtypes.ProtocolEnumTcp, HealthCheckPort: aws.String(strconv.Itoa(echoPort)),
			HealthCheckIntervalSeconds: aws.Int32(5), HealthyThresholdCount: aws.Int32(2)})
		check(err)
		arn := tg.TargetGroups[0].TargetGroupArn
		groups = append(groups, arn)
		_, err = lb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: arn, Targets: []elbtypes.TargetDescription{{Id: aws.String(labTargetIP)}}})
		check(err)
		_, err = lb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: nlb.LoadBalancerArn, Protocol: backend.proto, Port: aws.Int32(int32(port + i)),
			DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: arn}}})
		check(err)
		*backend.addr = net.JoinHostPort(front, strconv.Itoa(port+i))
	}
	for _, arn := range groups {
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			h, err := lb.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: arn})
			check(err)
			if len(h.TargetHealthDescriptions) == 1 && h.TargetHealthDescriptions[0].TargetHealth.State == elbtypes.TargetHealthStateEnumHealthy {
				break
			}
			if time.Now().After(deadline) {
				log.Fatalf("lbbench: %s's target is not healthy after 60s; see %s", t.name, logf.Name())
			}
		}
	}
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// flowCounts is what moat lb's metrics say of the flows: how many it saw, and how many of those
// its userspace proxy carried (on the kernel path, only the tests' readiness probes should be).
func (l lab) flowCounts(t *target) string {
	c := http.Client{Transport: &http.Transport{DialContext: dialerIn(l.ns(t.name, "l"))}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(strings.TrimSuffix(t.metrics, "/") + "/metrics")
	check(err)
	defer resp.Body.Close()
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, rest, _ := strings.Cut(sc.Text(), "{")
		switch name {
		case "moat_dataplane_new_flows_total", "moat_dataplane_proxied_flows_total", "moat_dataplane_target_connect_errors_total":
		case "moat_dataplane_denied_flows_total":
			_, reason, _ := strings.Cut(rest, `reason="`)
			reason, _, _ = strings.Cut(reason, `"`)
			name += " " + reason
		default:
			continue
		}
		fields := strings.Fields(rest)
		v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
		sums[name] += v
	}
	check(sc.Err())
	out := fmt.Sprintf("%.0f new flows, %.0f of them through the userspace proxy", sums["moat_dataplane_new_flows_total"], sums["moat_dataplane_proxied_flows_total"])
	for _, reason := range []string{"security_group", "no_target", "flow_limit"} {
		if n := sums["moat_dataplane_denied_flows_total "+reason]; n > 0 {
			out += fmt.Sprintf(", %.0f refused (%s)", n, reason)
		}
	}
	if n := sums["moat_dataplane_target_connect_errors_total"]; n > 0 {
		out += fmt.Sprintf(", %.0f target connect errors", n)
	}
	return out
}

// startProxy writes cfg to a file in dir and starts bin with args (where "CFG" is the file),
// pinned, as t's proxy.
func (l lab) startProxy(t *target, bin, dir, cfg string, args ...string) (stop func()) {
	path := filepath.Join(dir, t.name+".cfg")
	check(os.WriteFile(path, []byte(cfg), 0o600))
	for i := range args {
		args[i] = strings.ReplaceAll(args[i], "CFG", path)
	}
	cmd := pinned(l.ns(t.name, "l"), l.cpus, bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Start())
	t.pid = cmd.Process.Pid
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// startHAProxy starts HAProxy in TCP mode (it has no UDP) on port (sink) and port+1 (echo): as
// configured by default, which copies through its buffers, or, with splice, splicing both ways
// as moat does (its splice-auto left this stream to the buffers).
func (l lab) startHAProxy(t *target, dir string, port int, splice bool) (stop func()) {
	global, defaults := "", ""
	if splice {
		// Each spliced flow holds a pipe (two descriptors): 400 pipes keep the open-file limit
		// HAProxy derives from maxconn within the 20000 it may raise it to.
		global, defaults = "  maxpipes 400\n", "  option splice-request\n  option splice-response\n"
	}
	cfg := fmt.Sprintf(`global
  maxconn 9000
%[7]sdefaults
  mode tcp
%[8]s  timeout connect 5s
  timeout client 350s
  timeout server 350s
frontend sink
  bind %[1]s:%[2]d
  default_backend sink
backend sink
  server s %[3]s:%[4]d
frontend echo
  bind %[1]s:%[5]d
  default_backend echo
backend echo
  server e %[3]s:%[6]d
`, labProxyIP, port, labTargetIP, sinkPort, port+1, echoPort, global, defaults)
	t.sinkAddr, t.echoAddr = net.JoinHostPort(labProxyIP, strconv.Itoa(port)), net.JoinHostPort(labProxyIP, strconv.Itoa(port+1))
	return l.startProxy(t, l.haproxy, dir, cfg, "-db", "-f", "CFG")
}

// startNginx starts nginx's stream module proxying UDP on port, as one process (no master, so
// that its CPU time is the one process's) on the proxies' CPU.
func (l lab) startNginx(t *target, dir string, port int) (stop func()) {
	cfg := fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
stream {
  server {
    listen %[2]s:%[3]d udp;
    proxy_pass %[4]s:%[5]d;
    proxy_timeout 30s;
  }
}
`, dir, labProxyIP, port, labTargetIP, udpPort)
	t.udpAddr = net.JoinHostPort(labProxyIP, strconv.Itoa(port))
	return l.startProxy(t, l.nginx, dir, cfg, "-p", dir, "-e", "stderr", "-c", "CFG")
}

// flushConntrack deletes the connection tracking entries of network namespace ns.
func flushConntrack(ns string) {
	var c *conntrack.Conn
	check(netnstest.Do(ns, func() (err error) {
		c, err = conntrack.Dial(nil) // the socket stays in ns
		return err
	}))
	defer c.Close()
	check(c.Flush())
}
