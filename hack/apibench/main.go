//go:build linux

// Command apibench measures moat lb's API (and its DNS server) as state grows to the sizes users
// reach: it starts a real moat lb on loopback with a temporary data dir, builds load balancers,
// target groups, listeners and security groups with rules through aws-sdk-go-v2, as a controller
// would, and at each size measures, while nothing else runs, mutations per second, Describe calls
// per second with their p50/p99, DNS queries per second, and the CPU moat lb spent per call. Given
// a second binary (-baseline), it measures both in the same run, one after the other, and prints
// one table. With -stores it measures each binary on each store: bbolt (the default) and etcd
// clusters of N members (etcdN, started from the kube assets' etcd on loopback), so that one run
// compares them. hack/bench-api.sh and hack/bench-store.sh build and run it; see the README. It is
// Linux's only: it reads /proc for CPU time and pins processes with taskset.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/miekg/dns"

	"github.com/moatlb/moat/internal/awsclient"
	"github.com/moatlb/moat/internal/etcdtest"
)

// size is one state to measure at: load balancers, target groups (one listener each) and security
// groups (one frontend group per load balancer, one shared backend group, the rest other groups).
type size struct{ lbs, tgs, sgs int }

func (s size) String() string { return fmt.Sprintf("%d/%d/%d", s.lbs, s.tgs, s.sgs) }

func parseSizes(s string) ([]size, error) {
	var out []size
	for _, part := range strings.Split(s, ",") {
		var z size
		if _, err := fmt.Sscanf(part, "%d/%d/%d", &z.lbs, &z.tgs, &z.sgs); err != nil {
			return nil, fmt.Errorf("size %q: want LBS/TGS/SGS: %w", part, err)
		}
		if z.lbs < 1 || z.tgs < z.lbs || z.sgs < z.lbs+1 {
			return nil, fmt.Errorf("size %q: need at least 1 load balancer, a target group per load balancer, and a group per load balancer plus one", part)
		}
		if len(out) > 0 {
			p := out[len(out)-1]
			if z.lbs < p.lbs || z.tgs < p.tgs || z.sgs < p.sgs {
				return nil, fmt.Errorf("sizes must grow: %v after %v", z, p)
			}
		}
		out = append(out, z)
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("client count %q: want a positive number", part)
		}
		out = append(out, n)
	}
	return out, nil
}

func main() {
	bin := flag.String("moat", "bin/moat", "the moat binary to measure")
	baseline := flag.String("baseline", "", "a second moat binary to measure in the same run, before -moat (e.g. built from main)")
	sizesFlag := flag.String("sizes", "2/9/10,300/1350/2000", "comma-separated LBS/TGS/SGS states, growing: load balancers, target groups (one listener each), security groups")
	writers := flag.String("write-clients", "16", "comma-separated client counts for mutations")
	readers := flag.String("read-clients", "1,16", "comma-separated client counts for Describe calls and DNS queries")
	duration := flag.Duration("duration", 5*time.Second, "length of each measurement")
	lbCPUs := flag.String("lb-cpus", "", "CPU list to pin moat lb to with taskset (e.g. 1)")
	fastPath := flag.String("fast-path", "auto", "moat lb's --fast-path")
	profile := flag.String("profile", "", "with a moat built with -tags moat_pprof: write CPU profiles of moat lb and of the clients over the largest size's measurements (-moat only) to this directory")
	storesFlag := flag.String("stores", "bbolt", "comma-separated stores to measure each binary on: bbolt, or etcdN for an etcd cluster of N members on loopback (e.g. bbolt,etcd1,etcd3)")
	markdown := flag.Bool("markdown", false, "print the table in markdown")
	flag.Parse()
	log.SetFlags(0)
	sizes, err := parseSizes(*sizesFlag)
	check(err)
	wc, err := parseInts(*writers)
	check(err)
	rc, err := parseInts(*readers)
	check(err)
	stores, err := parseStores(*storesFlag)
	check(err)

	dir, err := os.MkdirTemp("", "apibench-")
	check(err)
	atExit(func() { os.RemoveAll(dir) })
	backend := serveBackend()

	var rows []row
	bins := []string{*bin}
	if *baseline != "" {
		bins = []string{*baseline, *bin}
	}
	for i, b := range bins {
		for _, store := range stores {
			name := "moat"
			if len(bins) > 1 && i == 0 {
				name = "baseline"
			}
			rows = append(rows, measureBinary(name, b, store, *lbCPUs, *fastPath, filepath.Join(dir, name+"-"+store.String()), backend, sizes, wc, rc, *duration, *profile)...)
		}
	}
	runAtExit()
	report(rows, wc, rc, *markdown)
}

// measureBinary starts moat lb from bin on store, measures it at every size, and stops it.
func measureBinary(name, bin string, store storeKind, lbCPUs, fastPath, dir, backend string, sizes []size, wc, rc []int, duration time.Duration, profile string) []row {
	check(os.MkdirAll(dir, 0o700))
	name += "/" + store.String()
	storeArgs, stopStore := store.start(dir)
	defer stopStore()
	m := startMoat(name, bin, lbCPUs, fastPath, filepath.Join(dir, "moat"), sizes[len(sizes)-1], storeArgs...)
	defer m.stop()
	var rows []row
	st := &state{m: m, backend: backend, signed: newSignedReads(context.Background(), m)}
	for si, z := range sizes {
		start := time.Now()
		st.grow(z)
		log.Printf("%s: built %v (load balancers/target groups/security groups) in %v", name, z, time.Since(start).Round(time.Second))
		prof := ""
		if profile != "" && strings.HasPrefix(name, "moat/") && si == len(sizes)-1 {
			prof = filepath.Join(profile, store.String())
		}
		r := row{binary: name, size: z}
		m.settle()
		stopProf := m.startProfile(prof, "idle")
		cpu0, t0 := m.cpu(), time.Now()
		time.Sleep(4 * time.Second)
		stopProf()
		log.Printf("%s: at %v, idle, moat lb uses %.0f%% of a CPU (health checks, counters, timers)", name, z, 100*(m.cpu()-cpu0)/time.Since(t0).Seconds())
		for _, n := range wc {
			stopProf = m.startProfile(prof, fmt.Sprintf("writes-%d", n))
			r.writes = append(r.writes, st.measure(n, duration, st.mutate))
			stopProf()
		}
		for _, n := range rc {
			stopProf = m.startProfile(prof, fmt.Sprintf("reads-%d", n))
			r.reads = append(r.reads, st.measure(n, duration, st.describe))
			stopProf()
			stopProf = m.startProfile(prof, fmt.Sprintf("signed-%d", n))
			r.signedReads = append(r.signedReads, st.measure(n, duration, st.describeSigned))
			stopProf()
			stopProf = m.startProfile(prof, fmt.Sprintf("dns-%d", n))
			r.dns = append(r.dns, st.measure(n, duration, st.resolve))
			stopProf()
		}
		rows = append(rows, r)
		log.Printf("%s: measured %v", name, z)
	}
	return rows
}

// storeKind is where moat lb keeps its state: bbolt in its data dir (members 0), or an etcd
// cluster of that many members.
type storeKind struct{ members int }

func (k storeKind) String() string {
	if k.members == 0 {
		return "bbolt"
	}
	return fmt.Sprintf("etcd%d", k.members)
}

func parseStores(s string) ([]storeKind, error) {
	var out []storeKind
	for _, part := range strings.Split(s, ",") {
		if part == "bbolt" {
			out = append(out, storeKind{})
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(part, "etcd"))
		if !strings.HasPrefix(part, "etcd") || err != nil || n < 1 {
			return nil, fmt.Errorf("store %q: want bbolt or etcdN, N members", part)
		}
		out = append(out, storeKind{members: n})
	}
	return out, nil
}

// start starts the store's etcd cluster, if any, with its data in dir, and returns moat lb's
// arguments for it and a function that stops it.
func (k storeKind) start(dir string) (args []string, stop func()) {
	if k.members == 0 {
		return nil, func() {}
	}
	bin, err := etcdtest.Binary()
	check(err)
	members, err := etcdtest.StartCluster(bin, filepath.Join(dir, "etcd"), k.members)
	check(err)
	var endpoints []string
	stopMembers := func() {
		for _, m := range members {
			m.Stop()
		}
	}
	cancel := atExit(stopMembers)
	for _, m := range members {
		endpoints = append(endpoints, m.Endpoint)
	}
	log.Printf("%s: etcd members on %s", k, strings.Join(endpoints, ","))
	return []string{"--store", "etcd://" + strings.Join(endpoints, ",")}, func() { stopMembers(); cancel() }
}

// Cleanups that must run however the program ends (check exits), so that no moat lb or etcd
// member outlives it or writes into the directory being removed: the last registered runs first.
var (
	exitMu  sync.Mutex
	exitFns []func() // nil: unregistered
)

// atExit registers f to run at exit and returns a function that unregisters it.
func atExit(f func()) (cancel func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	i := len(exitFns)
	exitFns = append(exitFns, f)
	return func() {
		exitMu.Lock()
		defer exitMu.Unlock()
		if i < len(exitFns) {
			exitFns[i] = nil
		}
	}
}

func runAtExit() {
	exitMu.Lock()
	fns := exitFns
	exitFns = nil
	exitMu.Unlock()
	for _, f := range slices.Backward(fns) {
		if f != nil {
			f()
		}
	}
}

// The moat lb under test.

type moat struct {
	cmd        *exec.Cmd
	unregister func() // its stop at exit
	log        string
	ec2        *ec2.Client
	elb        *elbv2.Client
	dnsAddr    string
	pprof      string
	vpc        string
	endpoint   string // the API's URL
	creds      aws.CredentialsProvider
	subnets    []string
}

func startMoat(name, bin, cpus, fastPath, data string, largest size, extra ...string) *moat {
	args := []string{"lb", "--data-dir", data, "--api-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0",
		"--metrics-addr", "127.0.0.1:0", "--fast-path", fastPath,
		// The API is measured, not the instance firewall; and enforcing the default inventory's
		// groups on the host's loopback would drop the traffic of any moat up on the machine.
		"--instance-sg-mode", "off",
		// Room for the largest size and the churn of the measurements.
		"--quota-load-balancers", strconv.Itoa(largest.lbs + 100),
		"--quota-target-groups", strconv.Itoa(largest.tgs + 1000),
		"--quota-security-groups-per-vpc", strconv.Itoa(largest.sgs + 100),
		"--quota-listeners-per-load-balancer", strconv.Itoa(largest.tgs/largest.lbs + 10),
	}
	args = append(args, extra...)
	if cpus != "" {
		args = append([]string{"-c", cpus, bin}, args...)
		bin = "taskset" // it execs the program in place, so the pid is moat lb's either way
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pprofAddr := freeAddr()
	cmd.Env = append(os.Environ(), "MOAT_PPROF_ADDR="+pprofAddr)
	logf, err := os.Create(data + ".log")
	check(err)
	cmd.Stderr = logf
	check(cmd.Start())
	unregister := atExit(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var eps struct{ API, DNS, CredentialsFile string }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		raw, err := os.ReadFile(filepath.Join(data, "endpoints.json"))
		if err == nil && json.Unmarshal(raw, &eps) == nil {
			break
		}
		if time.Now().After(deadline) {
			check(fmt.Errorf("moat lb did not start; see %s", logf.Name()))
		}
	}
	ctx := context.Background()
	// One pool of keep-alive connections large enough for every client, as SDK users share one
	// client.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns, t.MaxIdleConnsPerHost = 256, 256
	})
	cfg, err := config.LoadDefaultConfig(ctx, config.WithSharedCredentialsFiles([]string{eps.CredentialsFile}),
		config.WithRegion("us-east-1"), config.WithHTTPClient(awsclient.HTTPClient(httpClient)))
	check(err)
	m := &moat{cmd: cmd, unregister: unregister, log: logf.Name(), dnsAddr: eps.DNS, pprof: pprofAddr,
		endpoint: eps.API, creds: cfg.Credentials,
		ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(eps.API) }),
		elb: elbv2.NewFromConfig(cfg, func(o *elbv2.Options) { o.BaseEndpoint = aws.String(eps.API) })}
	subnets, err := m.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	check(err)
	for _, s := range subnets.Subnets {
		m.subnets = append(m.subnets, *s.SubnetId)
	}
	m.vpc = *subnets.Subnets[0].VpcId
	log.Printf("%s: moat lb pid %d, log %s, profiles (with -tags moat_pprof) at http://%s/debug/pprof/", name, cmd.Process.Pid, logf.Name(), pprofAddr)
	return m
}

func (m *moat) stop() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	m.unregister()
}

// cpu is the CPU seconds moat lb has used so far.
func (m *moat) cpu() float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
	check(err)
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// settle waits (up to a minute) until moat lb is quiet — using less than a fifth of a CPU over
// half a second — so that a measurement does not pay for the work the last one left behind (the
// data plane applying the last changes).
func (m *moat) settle() {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		cpu0, t0 := m.cpu(), time.Now()
		time.Sleep(500 * time.Millisecond)
		if (m.cpu()-cpu0)/time.Since(t0).Seconds() < 0.2 {
			return
		}
	}
	log.Printf("moat lb is still busy after a minute; measuring anyway")
}

// startProfile starts a CPU profile of moat lb into dir/name.pprof, and one of this program —
// the clients, which share the machine with moat lb — over the same time into
// dir/name-clients.pprof (nothing when dir is empty); it returns a function that waits for them.
func (m *moat) startProfile(dir, name string) func() {
	if dir == "" {
		return func() {}
	}
	check(os.MkdirAll(dir, 0o755))
	clients, err := os.Create(filepath.Join(dir, name+"-clients.pprof"))
	check(err)
	check(pprof.StartCPUProfile(clients))
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer clients.Close()
		defer pprof.StopCPUProfile()
		// The profile covers the measurement that follows; it ends a little before it.
		resp, err := http.Get("http://" + m.pprof + "/debug/pprof/profile?seconds=4")
		if err != nil {
			log.Printf("profile %s: %v (was moat built with -tags moat_pprof?)", name, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, name+".pprof"))
		check(err)
		defer f.Close()
		_, err = f.ReadFrom(resp.Body)
		check(err)
	}()
	return func() { <-done }
}

// The state, built through the API as a controller builds it: a Service is a load balancer with
// its frontend group, its target groups and listeners, all tagged; other groups stand for nodes'
// and other applications' groups.

type state struct {
	m       *moat
	backend string
	lbs     []lbState
	tgs     []tgState
	sgs     []string // all the groups, frontend groups first
	backSG  string
	cur     size
	// churn is each mutating worker's temporary target group, created and deleted in turn.
	churn []string
	// measurements counts the measurements so far: a rule a worker of the last one added and did
	// not get to revoke must not collide with the next one's.
	measurements int
	// dns is each resolving worker's socket.
	dns sync.Map
	// signed sends Describe calls without the SDK's clients.
	signed *signedReads
}

type lbState struct {
	name, arn, dns, frontSG string
	tgs                     []int // indexes in state.tgs
}

type tgState struct {
	arn string
	lb  int
}

const cluster = "apibench"

func stackTags(stack string) []ec2types.Tag {
	return []ec2types.Tag{
		{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String(cluster)},
		{Key: aws.String("service.k8s.aws/stack"), Value: aws.String(stack)},
		{Key: aws.String("service.k8s.aws/resource"), Value: aws.String("ManagedLBSecurityGroup")},
	}
}

func elbTags(stack, resource string) []elbtypes.Tag {
	return []elbtypes.Tag{
		{Key: aws.String("elbv2.k8s.aws/cluster"), Value: aws.String(cluster)},
		{Key: aws.String("service.k8s.aws/stack"), Value: aws.String(stack)},
		{Key: aws.String("service.k8s.aws/resource"), Value: aws.String(resource)},
	}
}

// grow builds the state up to z, 16 calls at a time.
func (s *state) grow(z size) {
	ctx := context.Background()
	if s.backSG == "" {
		s.backSG = s.createGroup(ctx, "k8s-traffic-"+cluster, "backend", 0)
	}
	// Frontend groups of new load balancers, then the other groups.
	newLBs := z.lbs - s.cur.lbs
	fronts := make([]string, newLBs)
	parallel(newLBs, func(i int) {
		fronts[i] = s.createGroup(ctx, fmt.Sprintf("k8s-default-svc%d", s.cur.lbs+i), fmt.Sprintf("default/svc%d", s.cur.lbs+i), 3)
	})
	others := (z.sgs - z.lbs - 1) - (len(s.sgs) - s.cur.lbs)
	otherIDs := make([]string, max(others, 0))
	parallel(len(otherIDs), func(i int) {
		n := len(s.sgs) - s.cur.lbs + i
		otherIDs[i] = s.createGroup(ctx, fmt.Sprintf("other-%d", n), fmt.Sprintf("other/%d", n), 5)
	})
	// Load balancers with their frontend group and the backend group.
	lbs := make([]lbState, newLBs)
	parallel(newLBs, func(i int) {
		n := s.cur.lbs + i
		name := fmt.Sprintf("svc%d", n)
		out, err := s.m.elb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String(name),
			Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal,
			Subnets: s.m.subnets, SecurityGroups: []string{fronts[i], s.backSG}, Tags: elbTags("default/"+name, "LoadBalancer")})
		check(err)
		lbs[i] = lbState{name: name, arn: *out.LoadBalancers[0].LoadBalancerArn, dns: *out.LoadBalancers[0].DNSName, frontSG: fronts[i]}
	})
	s.lbs = append(s.lbs, lbs...)
	s.sgs = slices.Concat(s.sgs[:s.cur.lbs], fronts, s.sgs[s.cur.lbs:], otherIDs)
	// Target groups spread over the load balancers, each with a listener and a target. Two new
	// target groups of one load balancer must not race for one listener port, so each worker
	// takes whole load balancers.
	for t := s.cur.tgs; t < z.tgs; t++ {
		lb := t % z.lbs
		s.tgs = append(s.tgs, tgState{lb: lb})
		s.lbs[lb].tgs = append(s.lbs[lb].tgs, t)
	}
	host, port, _ := net.SplitHostPort(s.backend)
	p, _ := strconv.Atoi(port)
	parallel(z.lbs, func(lb int) {
		for k, t := range s.lbs[lb].tgs {
			if s.tgs[t].arn != "" {
				continue
			}
			name := fmt.Sprintf("tg%d", t)
			out, err := s.m.elb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(name), Protocol: elbtypes.ProtocolEnumTcp,
				Port: aws.Int32(int32(p)), VpcId: aws.String(s.m.vpc), TargetType: elbtypes.TargetTypeEnumIp, Tags: elbTags("default/"+s.lbs[lb].name, name)})
			check(err)
			arn := out.TargetGroups[0].TargetGroupArn
			_, err = s.m.elb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: arn, Targets: []elbtypes.TargetDescription{{Id: aws.String(host), Port: aws.Int32(int32(p))}}})
			check(err)
			_, err = s.m.elb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: aws.String(s.lbs[lb].arn), Protocol: elbtypes.ProtocolEnumTcp,
				Port: aws.Int32(int32(20000 + k)), DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: arn}}})
			check(err)
			s.tgs[t].arn = *arn
		}
	})
	s.cur = z
}

// createGroup creates a group tagged for stack with rules inbound rules (one CIDR each).
func (s *state) createGroup(ctx context.Context, name, stack string, rules int) string {
	out, err := s.m.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String("apibench " + name),
		VpcId: aws.String(s.m.vpc), TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: stackTags(stack)}}})
	check(err)
	if rules > 0 {
		var ranges []ec2types.IpRange
		for i := range rules {
			ranges = append(ranges, ec2types.IpRange{CidrIp: aws.String(fmt.Sprintf("10.%d.%d.0/24", rand.IntN(256), i))})
		}
		_, err = s.m.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: out.GroupId, IpPermissions: []ec2types.IpPermission{
			{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(443), IpRanges: ranges},
		}})
		check(err)
	}
	return *out.GroupId
}

// parallel runs f(0..n-1) on 16 workers.
func parallel(n int, f func(int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(16, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// The measurements. Each worker w runs its own sequence of calls, on resources of its own where
// it changes them, so that workers do not conflict.

// result is one measurement: calls per second, latency percentiles, moat lb's CPU per call and
// the clients' (this process's).
type result struct {
	rate         float64
	p50, p99     time.Duration
	cpuPer       time.Duration
	clientCPUPer time.Duration
	errors       int64
}

func (s *state) measure(clients int, d time.Duration, op func(ctx context.Context, worker, i int) error) result {
	s.m.settle()
	ctx := context.Background()
	s.churn = make([]string, clients)
	s.measurements++
	lat := make([][]time.Duration, clients)
	var errs atomic.Int64
	var firstErr atomic.Pointer[error]
	cpu0, clientCPU0 := s.m.cpu(), selfCPU()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				t := time.Now()
				if err := op(ctx, w, i); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				lat[w] = append(lat[w], time.Since(t))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu, clientCPU := s.m.cpu()-cpu0, selfCPU()-clientCPU0
	all := slices.Concat(lat...)
	if p := firstErr.Load(); p != nil {
		log.Printf("%d calls failed, the first: %v", errs.Load(), *p)
	}
	if len(all) == 0 {
		return result{errors: errs.Load()}
	}
	slices.Sort(all)
	return result{rate: float64(len(all)) / elapsed.Seconds(), p50: all[len(all)/2], p99: all[len(all)*99/100],
		cpuPer: time.Duration(cpu / float64(len(all)) * float64(time.Second)), clientCPUPer: clientCPU / time.Duration(len(all)),
		errors: errs.Load()}
}

// selfCPU is the CPU time this process — the clients — has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mutate is one call of a cycle of changes that leaves the state as it found it: a rule added
// and revoked, a target group created and deleted, tags added and removed.
func (s *state) mutate(ctx context.Context, w, i int) error {
	lb := s.lbs[w%len(s.lbs)]
	sg := s.sgs[len(s.sgs)-1-w%len(s.sgs)]
	perm := []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(9000), ToPort: aws.Int32(9000),
		IpRanges: []ec2types.IpRange{{CidrIp: aws.String(fmt.Sprintf("10.%d.%d.0/24", s.measurements%256, w%256))}}}}
	var err error
	switch i % 6 {
	case 0:
		_, err = s.m.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(sg), IpPermissions: perm})
	case 1:
		_, err = s.m.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(sg), IpPermissions: perm})
	case 2:
		var out *elbv2.CreateTargetGroupOutput
		out, err = s.m.elb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(fmt.Sprintf("churn%d", w)), Protocol: elbtypes.ProtocolEnumTcp,
			Port: aws.Int32(8080), VpcId: aws.String(s.m.vpc), TargetType: elbtypes.TargetTypeEnumIp, Tags: elbTags("default/churn", "churn")})
		if err == nil {
			s.churn[w] = *out.TargetGroups[0].TargetGroupArn
		}
	case 3:
		_, err = s.m.elb.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: aws.String(s.churn[w])})
	case 4:
		_, err = s.m.elb.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: []string{lb.arn}, Tags: []elbtypes.Tag{{Key: aws.String("apibench"), Value: aws.String(strconv.Itoa(i))}}})
	case 5:
		_, err = s.m.elb.RemoveTags(ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{lb.arn}, TagKeys: []string{"apibench"}})
	}
	return err
}

// describe is one of the reads a controller makes to reconcile a Service, for a random one.
func (s *state) describe(ctx context.Context, w, i int) error {
	lb := s.lbs[rand.IntN(len(s.lbs))]
	tg := s.tgs[lb.tgs[rand.IntN(len(lb.tgs))]]
	var err error
	switch i % 7 {
	case 0:
		_, err = s.m.elb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{lb.name}})
	case 1:
		_, err = s.m.elb.DescribeListeners(ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: aws.String(lb.arn)})
	case 2:
		_, err = s.m.elb.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: aws.String(lb.arn)})
	case 3:
		_, err = s.m.elb.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(tg.arn)})
	case 4:
		_, err = s.m.elb.DescribeTags(ctx, &elbv2.DescribeTagsInput{ResourceArns: []string{lb.arn, tg.arn}})
	case 5:
		_, err = s.m.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{lb.frontSG}})
	case 6:
		var out *ec2.DescribeSecurityGroupsOutput
		out, err = s.m.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{s.m.vpc}},
			{Name: aws.String("tag:elbv2.k8s.aws/cluster"), Values: []string{cluster}},
			{Name: aws.String("tag:service.k8s.aws/stack"), Values: []string{"default/" + lb.name}},
		}})
		if err == nil && len(out.SecurityGroups) != 1 {
			err = fmt.Errorf("DescribeSecurityGroups by stack tag found %d groups, want 1", len(out.SecurityGroups))
		}
	}
	return err
}

// resolve asks moat lb's DNS server for a random load balancer's name.
func (s *state) resolve(_ context.Context, w, _ int) error {
	v, ok := s.dns.Load(w)
	if !ok {
		c, err := dns.Dial("udp", s.m.dnsAddr)
		if err != nil {
			return err
		}
		v, _ = s.dns.LoadOrStore(w, c)
	}
	conn := v.(*dns.Conn)
	lb := s.lbs[rand.IntN(len(s.lbs))]
	q := new(dns.Msg).SetQuestion(dns.Fqdn(lb.dns), dns.TypeA)
	check(conn.SetDeadline(time.Now().Add(2 * time.Second)))
	if err := conn.WriteMsg(q); err != nil {
		return err
	}
	r, err := conn.ReadMsg()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// A lost datagram: start again on a fresh socket, so a late answer is not taken for
			// the next question's.
			s.dns.Delete(w)
			conn.Close()
		}
		return err
	}
	if r.Id != q.Id || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		return fmt.Errorf("dns %s: rcode %s, %d answers", lb.dns, dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	return nil
}

// The backend all targets point at: it accepts health checks and closes.
func serveBackend() string {
	ln, err := net.Listen("tcp", "127.1.0.60:0") // in subnet a of the default inventory
	check(err)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer ln.Close()
	return ln.Addr().String()
}

// The table.

type row struct {
	binary string
	size   size
	writes []result
	reads  []result
	// signedReads are the same reads sent as signed HTTP requests, without the SDK's clients.
	signedReads []result
	dns         []result
}

// report prints the table: aligned columns, or markdown.
func report(rows []row, wc, rc []int, markdown bool) {
	fmt.Println()
	fmt.Println("binary is the moat measured and its store; sizes are load balancers/target groups (one listener")
	fmt.Println("each)/security groups; rates are calls per second, latencies p50/p99 in ms, cpu is moat lb's + the")
	fmt.Println("clients' CPU time per call in ms; Describe* goes through aws-sdk-go-v2's clients, signed HTTP sends")
	fmt.Println("the same calls, signed by the SDK's SigV4 signer, without them; higher rates and lower times are better")
	fmt.Println()
	head := []string{"binary", "size"}
	widths := []int{14, 15}
	for _, n := range wc {
		head, widths = append(head, fmt.Sprintf("mutations, %d clients", n)), append(widths, 36)
	}
	for _, n := range rc {
		head, widths = append(head, fmt.Sprintf("Describe*, %d clients", n)), append(widths, 36)
	}
	for _, n := range rc {
		head, widths = append(head, fmt.Sprintf("signed HTTP, %d clients", n)), append(widths, 36)
	}
	for _, n := range rc {
		head, widths = append(head, fmt.Sprintf("DNS, %d clients", n)), append(widths, 24)
	}
	lines := [][]string{head}
	for _, r := range rows {
		cells := []string{r.binary, r.size.String()}
		for _, res := range slices.Concat(r.writes, r.reads, r.signedReads) {
			cells = append(cells, res.cell(true))
		}
		for _, res := range r.dns {
			cells = append(cells, res.cell(false))
		}
		lines = append(lines, cells)
	}
	for i, cells := range lines {
		if markdown {
			for j, c := range cells {
				cells[j] = strings.Join(strings.Fields(c), " ")
			}
			fmt.Println("| " + strings.Join(cells, " | ") + " |")
			if i == 0 {
				fmt.Println(strings.Repeat("|---", len(cells)) + "|")
			}
			continue
		}
		padded := make([]string, len(cells))
		for j, c := range cells {
			padded[j] = fmt.Sprintf("%-*s", widths[j], c)
		}
		fmt.Println(strings.TrimRight(strings.Join(padded, " | "), " "))
	}
}

// cell renders a result: rate, p50/p99, moat lb's and the clients' CPU per call if withCPU, and
// the errors.
func (r result) cell(withCPU bool) string {
	s := fmt.Sprintf("%6.0f/s %6s/%-6s", r.rate, ms(r.p50), ms(r.p99))
	if withCPU {
		s += " cpu " + ms(r.cpuPer) + "+" + ms(r.clientCPUPer)
	}
	if r.errors > 0 {
		s += fmt.Sprintf(" (%d errors)", r.errors)
	}
	return s
}

// ms renders a duration in milliseconds, with a precision that suits it.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func check(err error) {
	if err != nil {
		runAtExit()
		log.Fatalf("apibench: %v", err)
	}
}
