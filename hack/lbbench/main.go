//go:build linux

// Command lbbench measures moat lb's data plane side by side with a direct connection and with
// HAProxy (TCP mode) in one run, against the same backends: throughput of one stream with large
// writes, connections per second, and request/response latency (p50, p99), with the CPU seconds
// each proxy spent. hack/bench-lb.sh builds and runs it; see the README. With -firewall it
// measures the instance firewall instead: direct connections with enforcement off and on
// (hack/bench-firewall.sh). It is Linux's only: it reads /proc for CPU time and pins processes
// with taskset.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

const (
	backendIP = "127.1.0.60" // in subnet a of moat's default inventory
	haproxyIP = "127.0.0.20"
	clientIP  = "127.0.0.2"
)

func main() {
	moat := flag.String("moat", "bin/moat", "the moat binary")
	haproxy := flag.String("haproxy", "haproxy", "the haproxy binary (empty: skip HAProxy)")
	proxyCPU := flag.String("proxy-cpus", "", "CPU list to pin the proxies to with taskset (e.g. 1)")
	size := flag.Int64("bytes", 2<<30, "bytes sent in the throughput test")
	duration := flag.Duration("duration", 5*time.Second, "length of the connections-per-second test")
	requests := flag.Int("requests", 20000, "request/response round trips in the latency test")
	reps := flag.Int("reps", 3, "repetitions of each test; the median is reported")
	fw := flag.Bool("firewall", false, "measure the instance firewall: direct connections to an instance with enforcement off and on (root, in a network namespace of its own)")
	flag.Parse()
	log.SetFlags(0)
	if *fw {
		benchFirewall(*size, *duration, *requests, *reps)
		return
	}

	dir, err := os.MkdirTemp("", "lbbench-")
	check(err)
	defer os.RemoveAll(dir)
	sink, echo := serveSink(), serveEcho()

	// One path at a time, so that they do not compete for the CPUs: the direct connection, moat
	// lb with its kernel fast path and without it, and HAProxy.
	paths := []func() (*target, func()){
		func() (*target, func()) { return &target{name: "direct", sinkAddr: sink, echoAddr: echo}, func() {} },
		func() (*target, func()) { return startMoat("moat", "auto", *moat, *proxyCPU, dir, sink, echo) },
		func() (*target, func()) { return startMoat("moat-us", "off", *moat, *proxyCPU, dir, sink, echo) },
	}
	if *haproxy != "" {
		paths = append(paths, func() (*target, func()) { return startHAProxy(*haproxy, *proxyCPU, dir, sink, echo) })
	}
	var targets []*target
	for _, start := range paths {
		t, stop := start()
		for range *reps {
			t.measure(*size, *duration, *requests)
		}
		stop()
		targets = append(targets, t)
		log.Printf("measured %s", t.name)
	}
	report(targets)
}

type target struct {
	name               string
	sinkAddr, echoAddr string
	pid                int
	mbps, cps          []float64
	p50, p99           []time.Duration
	cpuPerGB           []float64
}

// measure runs each test once and records the results.
func (t *target) measure(size int64, d time.Duration, requests int) {
	cpu0 := t.cpu()
	mbps := throughput(t.sinkAddr, size)
	t.cpuPerGB = append(t.cpuPerGB, (t.cpu()-cpu0)/(float64(size)/1e9))
	t.mbps = append(t.mbps, mbps)
	t.cps = append(t.cps, connsPerSecond(t.echoAddr, d))
	p50, p99 := latency(t.echoAddr, requests)
	t.p50 = append(t.p50, p50)
	t.p99 = append(t.p99, p99)
}

// cpu is the CPU seconds the proxy process has used so far (0 for the direct path).
func (t *target) cpu() float64 {
	if t.pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", t.pid))
	check(err)
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func median[T int64 | float64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(ts []*target) {
	fmt.Printf("\n%-10s %14s %12s %12s %10s %10s\n", "path", "throughput", "proxy cpu", "conn/s", "p50", "p99")
	for _, t := range ts {
		cpu := "-"
		if t.pid != 0 {
			cpu = fmt.Sprintf("%.2f s/GB", median(t.cpuPerGB))
		}
		fmt.Printf("%-10s %9.0f MB/s %12s %12.0f %10v %10v\n", t.name, median(t.mbps), cpu, median(t.cps), median(t.p50).Round(time.Microsecond), median(t.p99).Round(time.Microsecond))
	}
	ratios := func(a, b *target) string {
		return fmt.Sprintf("throughput %.2f, conn/s %.2f, p50 %.2f, p99 %.2f",
			median(a.mbps)/median(b.mbps), median(a.cps)/median(b.cps),
			float64(median(a.p50))/float64(median(b.p50)), float64(median(a.p99))/float64(median(b.p99)))
	}
	fmt.Println()
	for _, m := range ts[1:] {
		if m.name == "haproxy" {
			continue
		}
		fmt.Printf("%s/%s:  %s\n", m.name, ts[0].name, ratios(m, ts[0]))
		if h := ts[len(ts)-1]; h.name == "haproxy" {
			fmt.Printf("%s/haproxy: %s, cpu/GB %.2f\n", m.name, ratios(m, h), median(m.cpuPerGB)/median(h.cpuPerGB))
		}
	}
	fmt.Println("(higher is better for throughput and conn/s; lower for latency and cpu)")
}

// The backends: a sink that discards, and an echo server for latency and connection tests.

func serveSink() string {
	return serve(func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

func serveEcho() string {
	return serve(func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// serve runs handle on every connection to a new backend listener, closing the connection
// after, and returns the listener's address.
func serve(handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", backendIP+":0")
	check(err)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

func dial(addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// throughput sends size bytes over one connection with 1 MiB writes and returns MB/s.
func throughput(addr string, size int64) float64 {
	c, err := dial(addr)
	check(err)
	defer c.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		_, err := c.Write(buf)
		check(err)
	}
	check(c.(*net.TCPConn).CloseWrite())
	_, _ = c.Read(buf[:1]) // wait for the far end to finish reading and close
	return float64(size) / 1e6 / time.Since(start).Seconds()
}

// connsPerSecond opens connections from 8 workers, each doing a 1-byte exchange then closing.
func connsPerSecond(addr string, d time.Duration) float64 {
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []byte{'x'}
			for time.Now().Before(deadline) {
				c, err := dial(addr)
				if err != nil {
					continue
				}
				if _, err := c.Write(b); err == nil {
					if _, err := io.ReadFull(c, b); err == nil {
						n.Add(1)
					}
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// latency measures round trips of 64 bytes on one connection.
func latency(addr string, n int) (p50, p99 time.Duration) {
	c, err := dial(addr)
	check(err)
	defer c.Close()
	msg := make([]byte, 64)
	samples := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		_, err := c.Write(msg)
		check(err)
		_, err = io.ReadFull(c, msg)
		check(err)
		samples[i] = time.Since(start)
	}
	slices.Sort(samples)
	return samples[n/2], samples[n*99/100]
}

// The proxies.

func pinned(cpus string, name string, args ...string) *exec.Cmd {
	if cpus != "" {
		args = append([]string{"-c", cpus, name}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func startMoat(name, fastPath, bin, cpus, dir, sink, echo string) (*target, func()) {
	data := filepath.Join(dir, name)
	// taskset execs the program in place, so the pid is the proxy's own either way.
	cmd := pinned(cpus, bin, "lb", "--data-dir", data, "--api-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0",
		"--metrics-addr", "127.0.0.1:0", "--fast-path", fastPath)
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	check(err)
	cmd.Stderr = logf
	check(cmd.Start())
	var eps struct{ API, DNS, CredentialsFile string }
	for deadline := time.Now().Add(30 * time.Second); ; {
		raw, err := os.ReadFile(filepath.Join(data, "endpoints.json"))
		if err == nil && json.Unmarshal(raw, &eps) == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("moat lb did not start; see %s", logf.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithSharedCredentialsFiles([]string{eps.CredentialsFile}), config.WithRegion("us-east-1"))
	check(err)
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
	// Real rule sets are not one CIDR: 60 rules, the client's among them.
	var ranges []ec2types.IpRange
	for i := range 59 {
		ranges = append(ranges, ec2types.IpRange{CidrIp: aws.String(fmt.Sprintf("10.%d.0.0/16", i))})
	}
	ranges = append(ranges, ec2types.IpRange{CidrIp: aws.String(clientIP + "/32")})
	_, err = e.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(1024), ToPort: aws.Int32(65535), IpRanges: ranges},
	}})
	check(err)
	out, err := lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("bench"), Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: ids, SecurityGroups: []string{*sg.GroupId}})
	check(err)
	nlb := out.LoadBalancers[0]
	// Zone a's address, as its zonal name answers at moat lb's DNS server (AWS describes an
	// address only where the subnet mapping asked for one).
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", eps.DNS)
	}}
	addrs, err := resolver.LookupHost(ctx, "us-east-1a."+*nlb.DNSName)
	check(err)
	front := addrs[0]
	t := &target{name: name, pid: cmd.Process.Pid}
	for i, backend := range []string{sink, echo} {
		host, port, _ := net.SplitHostPort(backend)
		p, _ := strconv.Atoi(port)
		tg, err := lb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(fmt.Sprintf("bench%d", i)), Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(int32(p)), VpcId: vpc, TargetType: elbtypes.TargetTypeEnumIp})
		check(err)
		_, err = lb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroups[0].TargetGroupArn, Targets: []elbtypes.TargetDescription{{Id: aws.String(host), Port: aws.Int32(int32(p))}}})
		check(err)
		listen := freePort()
		_, err = lb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: nlb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(int32(listen)),
			DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroups[0].TargetGroupArn}}})
		check(err)
		addr := net.JoinHostPort(front, strconv.Itoa(listen))
		if i == 0 {
			t.sinkAddr = addr
		} else {
			t.echoAddr = addr
		}
	}
	waitServing(t.sinkAddr)
	waitServing(t.echoAddr)
	return t, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

func startHAProxy(bin, cpus, dir, sink, echo string) (*target, func()) {
	sinkPort, echoPort := freePort(), freePort()
	cfg := fmt.Sprintf(`global
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 350s
  timeout server 350s
frontend sink
  bind %[1]s:%[2]d
  default_backend sink
backend sink
  server s %[3]s
frontend echo
  bind %[1]s:%[4]d
  default_backend echo
backend echo
  server e %[5]s
`, haproxyIP, sinkPort, sink, echoPort, echo)
	path := filepath.Join(dir, "haproxy.cfg")
	check(os.WriteFile(path, []byte(cfg), 0o600))
	cmd := pinned(cpus, bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Start())
	t := &target{name: "haproxy", pid: cmd.Process.Pid,
		sinkAddr: net.JoinHostPort(haproxyIP, strconv.Itoa(sinkPort)), echoAddr: net.JoinHostPort(haproxyIP, strconv.Itoa(echoPort))}
	waitServing(t.sinkAddr)
	waitServing(t.echoAddr)
	return t, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

func waitServing(addr string) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, err := dial(addr)
		if err == nil {
			c.Close()
			return
		}
	}
	log.Fatalf("%s does not answer", addr)
}

func freePort() int {
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	check(err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func check(err error) {
	if err != nil {
		log.Fatalf("lbbench: %v", err)
	}
}
