package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/lbtest"
)

// The scale test's Services admit these sources; scaleDenied is a loopback client outside them,
// and scaleNewClient the one a source-range change admits in place of the last range.
var scaleRanges = []string{"127.0.0.2/32", "127.0.0.4/32", "127.0.0.5/32"}

const (
	scaleAdmitted  = "127.0.0.2"
	scaleDenied    = "127.0.0.3"
	scaleNewClient = "127.0.0.9"
	scaleSample    = 5  // Services that traffic goes to
	scaleClients   = 16 // concurrent creates
)

// TestThousandServices is the scale test on moat up: MOAT_SCALE_SERVICES (default 1,000)
// Services of type LoadBalancer, instance targets, 2 TCP ports and 3 source ranges each, created
// at once. It asserts that every Service gets a hostname, that traffic flows to a sample from an
// admitted source and not from another, that a source-range change admits a new client, and that
// a no-op resync of every Service after a restart makes no mutating call. It reports the figures
// (time to all ready, AWS calls per Service, moat lb's CPU and memory, the time from a rule change
// to the first admitted connection) with t.Logf; it does not assert them: they depend on the
// machine. Each phase has an hour: on a busy 2-core machine, 200 Services were all ready in 34 s
// and reconciled again after a restart in 25 s, 400 in 98 s and 58 s (before the deployer cached
// tags: 38 s and 44 s, 191 s and 130 s), and 1,000 (quiet) in 6 min 29 s and 8 min 1 s. Both
// still grow faster than the count: every reconcile lists every load balancer (twice) and target
// group, as the AWS controller does; only the tags of what it has not seen in 20 minutes are
// described.
//
// moat up runs a binary built without the race detector (unlike the other end-to-end tests):
// the race detector multiplies the CPU time and memory that the test reports. The Services need
// two NodePorts each, from the API server's 2,768: at most about 1,380 Services.
func TestThousandServices(t *testing.T) {
	if testing.Short() {
		t.Skip("the scale test runs in make test-long (MOAT_SCALE_SERVICES sets its size)")
	}
	n := scaleServiceCount(t)
	ctx := context.Background()
	bin := buildMoatWithoutRace(t)
	ensureKubeAssets(t)
	stateDir := t.TempDir()
	quotas := scaleQuotaFlags(n)
	up := startUpBin(t, bin, stateDir, nil, quotas...)
	t.Logf("%d Services; moat up %s ready in %s", n, strings.Join(quotas, " "), up.ready.Round(10*time.Millisecond))
	kube := scaleKubeClient(t, up)
	ec2c, _ := up.aws()
	registerNodes(t, ctx, kube, ec2c)
	backend := upHTTPBackend(t, "127.0.0.1:0", "scale backend\n")

	const ns = "scale"
	if err := kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	ports := []int32{int32(upPort(t)), int32(upPort(t))}
	sample := map[int]bool{}
	for i := range min(scaleSample, n) {
		sample[i*n/min(scaleSample, n)] = true
	}

	calls0, cpu0 := lbCalls(t, up), procCPU(t, up.st.PID)
	start := time.Now()
	created := createScaleServices(t, ctx, kube, ns, n, ports, sample)
	t.Logf("%d Services created in %s (%d clients)", n, time.Since(start).Round(time.Millisecond), scaleClients)
	// kube-proxy's stand-ins on both nodes, for the sample's NodePorts.
	for _, svc := range created {
		for _, p := range svc.Spec.Ports {
			for _, node := range []string{"127.1.0.10", "127.2.0.10"} {
				upForwarder(t, net.JoinHostPort(node, fmt.Sprint(p.NodePort)), backend)
			}
		}
	}
	hosts := waitHostnames(t, ctx, kube, ns, n, time.Hour)
	ready := time.Since(start)
	calls, cpu := lbCalls(t, up).Since(calls0), procCPU(t, up.st.PID)
	t.Logf("all %d Services have a hostname %s after the first create", n, ready.Round(time.Millisecond))
	reportCalls(t, "to all ready", calls, n)
	rss, peak := procMemory(t, up.st.PID)
	t.Logf("moat up (moat lb in-process): %.1f CPU seconds to all ready (%.1f since it started), RSS %d MiB (peak %d MiB)",
		cpu-cpu0, cpu, rss>>20, peak>>20)
	t.Logf("children (CPU seconds since start): %s", childrenCPU(t, stateDir, up.st.PID))
	kubeRequests := metricAt(t, up.st.ControllerMetrics, "rest_client_requests_total")
	t.Logf("Kubernetes API requests of moat controller: %v (%.1f per Service)", kubeRequests, kubeRequests/float64(n))

	// Traffic to the sample, through each Service's name in moat lb's DNS: both ports answer
	// an admitted client and drop the other one.
	var fronts []string // the sample's first port
	for _, svc := range created {
		addrs := lookup(t, up.st.LB.DNS, hosts[svc.Name], dns.TypeA)
		if len(addrs) == 0 {
			t.Fatalf("%s (%s) does not resolve", hosts[svc.Name], svc.Name)
		}
		for i, p := range ports {
			front := net.JoinHostPort(addrs[0], fmt.Sprint(p))
			if i == 0 {
				fronts = append(fronts, front)
			}
			eventually(t, 2*time.Minute, svc.Name+" answers "+scaleAdmitted+" at "+front, func() error {
				body, err := getFrom(scaleAdmitted, front, 2*time.Second)
				if err != nil || body != "scale backend\n" {
					return fmt.Errorf("%v %q", err, body)
				}
				return nil
			})
			if _, err := getFrom(scaleDenied, front, time.Second); err == nil {
				t.Errorf("%s at %s answers %s, outside its source ranges", svc.Name, front, scaleDenied)
			}
		}
	}
	t.Logf("traffic flows to %d sampled Services (%d ports each) from %s, not from %s", len(created), len(ports), scaleAdmitted, scaleDenied)

	// A rule change at this size: the first sampled Service admits a new client in place of its
	// last range. The time runs from the API server's acceptance of the change to the first
	// connection of the new client, tried every 20 ms (a dropped SYN is not answered at all).
	changed := created[0]
	if _, err := getFrom(scaleNewClient, fronts[0], time.Second); err == nil {
		t.Fatalf("%s answers %s before its source ranges admit it", changed.Name, scaleNewClient)
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := kube.Get(ctx, client.ObjectKeyFromObject(changed), changed); err != nil {
			return err
		}
		changed.Spec.LoadBalancerSourceRanges = []string{scaleRanges[0], scaleRanges[1], scaleNewClient + "/32"}
		return kube.Update(ctx, changed)
	}); err != nil {
		t.Fatal(err)
	}
	changedAt := time.Now()
	admittedAt := firstAdmitted(t, scaleNewClient, fronts[0], 2*time.Minute)
	t.Logf("source-range change to the first connection of the new client: %s", admittedAt.Sub(changedAt).Round(time.Millisecond))
	removed := strings.TrimSuffix(scaleRanges[2], "/32")
	eventually(t, 2*time.Minute, removed+" no longer admitted to "+changed.Name, func() error {
		if _, err := getFrom(removed, fronts[0], time.Second); err == nil {
			return errors.New("still answered")
		}
		return nil
	})

	// A no-op resync: moat up restarted on the same state; its controller reconciles every Service
	// and its moat lb (counters from zero) sees no mutating call.
	waitControllerIdle(t, up, 0, 5*time.Minute)
	if !up.stop(2 * time.Minute) {
		t.Fatalf("moat up did not stop cleanly:\n%s", up.out)
	}
	again := startUpBin(t, bin, stateDir, nil, quotas...)
	resyncStart := time.Now()
	waitControllerIdle(t, again, n, time.Hour)
	resync := lbCalls(t, again)
	t.Logf("restart: moat up ready in %s, every Service reconciled %s later", again.ready.Round(10*time.Millisecond), time.Since(resyncStart).Round(time.Millisecond))
	reportCalls(t, "in the no-op resync", resync, n)
	if m := resync.Mutating(); m.Total() > 0 {
		t.Errorf("the no-op resync of %d Services made %d mutating calls: %s", n, m.Total(), m)
	}
	var kubeWrites []string
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		if v := metricAt(t, again.st.ControllerMetrics, "rest_client_requests_total", `method="`+method+`"`); v > 0 {
			kubeWrites = append(kubeWrites, fmt.Sprintf("%s×%v", method, v))
		}
	}
	if kubeWrites == nil {
		kubeWrites = []string{"none"}
	}
	t.Logf("Kubernetes API writes of moat controller in the no-op resync: %s", strings.Join(kubeWrites, ", "))
	if errs := metricAt(t, again.st.ControllerMetrics, "controller_runtime_reconcile_errors_total"); errs > 0 {
		t.Errorf("%v reconcile errors in the no-op resync", errs)
	}
	eventually(t, 2*time.Minute, "traffic to "+changed.Name+" after the restart", func() error {
		_, err := getFrom(scaleNewClient, fronts[0], 2*time.Second)
		return err
	})
}

// firstAdmitted tries to connect from src to addr every 20 ms until a connection is made and an
// HTTP request over a new one is answered (where moat lb cannot drop SYNs, it accepts and resets
// a denied client), and returns when that connection was made.
func firstAdmitted(t *testing.T, src, addr string, timeout time.Duration) time.Time {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 20 * time.Millisecond}
	deadline := time.Now().Add(timeout)
	for {
		tried := time.Now()
		c, err := d.Dial("tcp", addr)
		at := time.Now()
		if err == nil {
			c.Close()
			if _, err = getFrom(src, addr, 2*time.Second); err == nil {
				return at
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not admitted to %s within %s: %v", src, addr, timeout, err)
		}
		time.Sleep(time.Until(tried.Add(20 * time.Millisecond))) // a refused dial returns at once
	}
}

// scaleServiceCount is $MOAT_SCALE_SERVICES, else 1,000.
func scaleServiceCount(t *testing.T) int {
	t.Helper()
	s := os.Getenv("MOAT_SCALE_SERVICES")
	if s == "" {
		return 1000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("MOAT_SCALE_SERVICES=%q: want a positive number", s)
	}
	return n
}

// scaleQuotaFlags are moat up's --quota-… flags for n Services where AWS's defaults are too
// small. Each Service has a load balancer with 2 listeners, 2 target groups and a frontend
// security group with 6 rules. The other defaults suffice: the nodes' group holds one rule from
// the shared backend group, whose port range the controller widens to every NodePort.
func scaleQuotaFlags(n int) []string {
	d := cloud.DefaultQuotas()
	return []string{
		fmt.Sprintf("--quota-load-balancers=%d", max(d.LoadBalancers, n)),
		fmt.Sprintf("--quota-target-groups=%d", max(d.TargetGroups, 2*n)),
		// the frontend groups, the backend group, the nodes' group and the VPC's default group
		fmt.Sprintf("--quota-security-groups-per-vpc=%d", max(d.SecurityGroupsPerVPC, n+3)),
	}
}

// buildMoatWithoutRace builds moat without the race detector.
func buildMoatWithoutRace(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "moat")
	build := exec.Command("go", "build", "-o", bin, "github.com/moatlb/moat/cmd/moat")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build moat: %v\n%s", err, out)
	}
	return bin
}

// scaleKubeClient is a client of moat up's cluster without client-go's default limit of 5
// requests a second, so that the test's creates and lists do not pace the measurement.
func scaleKubeClient(t *testing.T, up *upProcess) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", up.st.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// registerNodes creates a Ready Node for each of moat lb's instances, as a kubelet would register
// it (providerID aws:///<zone>/<id>, InternalIP): moat up without --demo creates none.
func registerNodes(t *testing.T, ctx context.Context, kube client.Client, ec2c *ec2.Client) {
	t.Helper()
	out, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			zone := aws.ToString(in.Placement.AvailabilityZone)
			name := aws.ToString(in.InstanceId)
			for _, tag := range in.Tags {
				if aws.ToString(tag.Key) == "Name" {
					name = aws.ToString(tag.Value)
				}
			}
			node := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name, corev1.LabelTopologyZone: zone}},
				Spec:       corev1.NodeSpec{ProviderID: "aws:///" + zone + "/" + aws.ToString(in.InstanceId)},
			}
			if err := kube.Create(ctx, node); err != nil {
				t.Fatal(err)
			}
			node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: aws.ToString(in.PrivateIpAddress)}}
			node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now()}}
			if err := kube.Status().Update(ctx, node); err != nil {
				t.Fatal(err)
			}
			names = append(names, name+" "+aws.ToString(in.PrivateIpAddress))
		}
	}
	if !slices.Contains(names, "node-a 127.1.0.10") || !slices.Contains(names, "node-b 127.2.0.10") {
		t.Fatalf("moat lb's instances are %v, want node-a 127.1.0.10 and node-b 127.2.0.10", names)
	}
}

// createScaleServices creates Services scale-0000… in ns with scaleClients clients at once, and
// returns the sampled ones as created (with their NodePorts).
func createScaleServices(t *testing.T, ctx context.Context, kube client.Client, ns string, n int, ports []int32, sample map[int]bool) []*corev1.Service {
	t.Helper()
	var mu sync.Mutex
	var created []*corev1.Service
	var firstErr error
	next := make(chan int)
	var wg sync.WaitGroup
	for range scaleClients {
		wg.Go(func() {
			for i := range next {
				svc := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%04d", i), Namespace: ns, Annotations: map[string]string{
						"service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance",
					}},
					Spec: corev1.ServiceSpec{
						Type:                     corev1.ServiceTypeLoadBalancer,
						LoadBalancerClass:        aws.String("service.k8s.aws/nlb"),
						LoadBalancerSourceRanges: slices.Clone(scaleRanges),
						Ports: []corev1.ServicePort{
							{Name: "http", Protocol: corev1.ProtocolTCP, Port: ports[0], TargetPort: intstr.FromInt32(80)},
							{Name: "alt", Protocol: corev1.ProtocolTCP, Port: ports[1], TargetPort: intstr.FromInt32(81)},
						},
					},
				}
				err := kube.Create(ctx, svc)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("create %s: %w", svc.Name, err)
				}
				if err == nil && sample[i] {
					created = append(created, svc)
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	slices.SortFunc(created, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	return created
}

// waitHostnames waits until all n Services of ns have a hostname in their status, and returns
// them by Service name. It logs the progress every 30 seconds.
func waitHostnames(t *testing.T, ctx context.Context, kube client.Client, ns string, n int, timeout time.Duration) map[string]string {
	t.Helper()
	start := time.Now()
	lastLog := start
	hosts := map[string]string{}
	eventually(t, timeout, fmt.Sprintf("all %d Services get a hostname", n), func() error {
		var list corev1.ServiceList
		if err := kube.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var pending []string
		for _, svc := range list.Items {
			if ing := svc.Status.LoadBalancer.Ingress; len(ing) > 0 && ing[0].Hostname != "" {
				hosts[svc.Name] = ing[0].Hostname
			} else {
				pending = append(pending, svc.Name)
			}
		}
		if len(hosts) == n {
			return nil
		}
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			t.Logf("%s: %d of %d Services have a hostname", time.Since(start).Round(time.Second), len(hosts), n)
		}
		return fmt.Errorf("%d without a hostname, e.g. %v", len(pending), pending[:min(len(pending), 10)])
	})
	return hosts
}

// scrape returns the Prometheus text exposition at url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}

// metricAt sums the series of a metric at url whose labels include every one of labels.
func metricAt(t *testing.T, url, name string, labels ...string) float64 {
	t.Helper()
	return metricSum(t, strings.NewReader(scrape(t, url)), name, labels...)
}

var promLabel = regexp.MustCompile(`(\w+)="([^"]*)"`)

// lbCalls reads moat lb's moat_api_requests_total from its /metrics.
func lbCalls(t *testing.T, up *upProcess) lbtest.Calls {
	t.Helper()
	out := lbtest.Calls{}
	for line := range strings.Lines(scrape(t, up.st.LB.Metrics+"/metrics")) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "moat_api_requests_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		var c lbtest.Call
		for _, m := range promLabel.FindAllStringSubmatch(labels, -1) {
			switch m[1] {
			case "service":
				c.Service = m[2]
			case "action":
				c.Action = m[2]
			case "code":
				c.Code = m[2]
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[c] = int(v)
	}
	return out
}

// reportCalls logs the AWS calls of a phase, per Service, the mutating ones by name, and the
// calls that failed.
func reportCalls(t *testing.T, phase string, calls lbtest.Calls, n int) {
	t.Helper()
	failed := lbtest.Calls{}
	for k, v := range calls {
		if k.Code != "OK" {
			failed[k] = v
		}
	}
	m := calls.Mutating()
	t.Logf("AWS calls %s: %d (%.1f per Service), mutating %d (%.1f per Service): %s",
		phase, calls.Total(), float64(calls.Total())/float64(n), m.Total(), float64(m.Total())/float64(n), m)
	t.Logf("AWS calls %s, all: %s", phase, calls)
	if failed.Total() > 0 {
		t.Logf("AWS calls %s that failed: %s", phase, failed)
	}
}

// waitControllerIdle waits until moat controller has nothing to do: both work queues empty, no
// reconcile running, at least minServiceReconciles successful Service reconciles, and no reconcile
// or mutating call in moat lb for a second since that was first seen.
func waitControllerIdle(t *testing.T, up *upProcess, minServiceReconciles int, timeout time.Duration) {
	t.Helper()
	var idleSince time.Time
	var idleMark string
	start, lastLog := time.Now(), time.Now()
	eventually(t, timeout, "moat controller idle", func() error {
		metrics := scrape(t, up.st.ControllerMetrics)
		sum := func(name string, labels ...string) float64 {
			return metricSum(t, strings.NewReader(metrics), name, labels...)
		}
		busy := sum("workqueue_depth") + sum("controller_runtime_active_workers")
		services := sum("controller_runtime_reconcile_total", `controller="service"`, `result="success"`)
		if busy > 0 || services < float64(minServiceReconciles) {
			idleSince = time.Time{}
			if time.Since(lastLog) >= 30*time.Second {
				lastLog = time.Now()
				t.Logf("%s: %v Service reconciles, %v queued or running", time.Since(start).Round(time.Second), services, busy)
			}
			return fmt.Errorf("%v queued or running, %v of %d Service reconciles", busy, services, minServiceReconciles)
		}
		mark := fmt.Sprint(sum("controller_runtime_reconcile_total"), lbCalls(t, up).Mutating().Total())
		if idleSince.IsZero() || mark != idleMark {
			idleSince, idleMark = time.Now(), mark
		}
		if time.Since(idleSince) < time.Second {
			return errors.New("idle for less than a second")
		}
		return nil
	})
}

// procCPU is the CPU time (user and system) of process pid, in seconds.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at field 3, state.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[14-3], 64)
	stime, _ := strconv.ParseFloat(fields[15-3], 64)
	const clockTicks = 100 // USER_HZ, 100 on every Linux architecture Go supports
	return (utime + stime) / clockTicks
}

// procMemory is the resident set size of process pid, now and at its peak, in bytes.
func procMemory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		name, value, _ := strings.Cut(line, ":")
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		switch {
		case err != nil:
		case name == "VmRSS":
			rss = kib << 10
		case name == "VmHWM":
			peak = kib << 10
		}
	}
	return rss, peak
}

// childrenCPU lists the CPU seconds of the children of the moat up with stateDir and pid (etcd,
// kube-apiserver, moat controller).
func childrenCPU(t *testing.T, stateDir string, upPID int) string {
	t.Helper()
	var out []string
	for pid, cmdline := range childrenOf(stateDir) {
		if pid == upPID {
			continue
		}
		args := strings.Fields(cmdline)
		name := filepath.Base(args[0])
		if name == "moat" && len(args) > 1 {
			name += " " + args[1]
		}
		out = append(out, fmt.Sprintf("%s %.1f", name, procCPU(t, pid)))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
