package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/moatlb/moat/internal/awsclient"
)

// upState is <state-dir>/up.json, written by a running moat up once everything is ready.
type upState struct {
	LB struct {
		API, DNS, Metrics, CredentialsFile string
		InstanceSecurityGroups             string `json:"instanceSecurityGroups"`
	} `json:"lb"`
	Kubeconfig        string `json:"kubeconfig"`
	KubeAPI           string `json:"kubeAPI"`
	Kubectl           string `json:"kubectl"`
	LocalCluster      bool   `json:"localCluster"`
	VPCID             string `json:"vpcID"`
	ControllerProbes  string `json:"controllerProbes"`
	ControllerMetrics string `json:"controllerMetrics"`
	PID               int    `json:"pid"`
}

// upProcess is a running `moat up`.
type upProcess struct {
	t        *testing.T
	cmd      *exec.Cmd
	stateDir string
	out      *syncBuffer // stdout and stderr
	done     chan struct{}
	started  time.Time
	ready    time.Duration // until up.json appeared
	st       upState
}

// startUp runs moat up with every address on a free port and waits until it is ready.
func startUp(t *testing.T, stateDir string, args ...string) *upProcess {
	t.Helper()
	return startUpEnv(t, stateDir, nil, args...)
}

// startUpEnv is startUp with extra environment variables.
func startUpEnv(t *testing.T, stateDir string, env []string, args ...string) *upProcess {
	t.Helper()
	return startUpBin(t, moatBin, stateDir, env, args...)
}

// startUpBin is startUpEnv with another moat binary than the race-detecting one of TestMain.
func startUpBin(t *testing.T, bin, stateDir string, env []string, args ...string) *upProcess {
	t.Helper()
	args = append([]string{"up", "--state-dir", stateDir,
		"--api-addr", "127.0.0.1:0", "--dns-addr", upDNSAddr(t), "--metrics-addr", "127.0.0.1:0",
		"--kube-api-addr", "127.0.0.1:0", "--etcd-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0",
		"--controller-metrics-addr", "127.0.0.1:0", "--controller-probe-addr", "127.0.0.1:0",
	}, args...)
	p := &upProcess{t: t, cmd: exec.Command(bin, args...), stateDir: stateDir, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.SysProcAttr = dieWithTest()
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(30 * time.Second)
		if t.Failed() {
			t.Logf("moat up output:\n%s", p.out)
			for _, name := range []string{"controller.log", "kube-apiserver.log", "lb.log"} {
				if data, err := os.ReadFile(filepath.Join(stateDir, "logs", name)); err == nil {
					t.Logf("%s (end):\n%s", name, upTail(string(data), 40))
				}
			}
		}
	})

	// The kube assets are built before this (see ensureKubeAssets), so this is a start, not a build.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if data, err := os.ReadFile(filepath.Join(stateDir, "up.json")); err == nil && json.Unmarshal(data, &p.st) == nil && p.st.PID == p.cmd.Process.Pid {
			p.ready = time.Since(p.started)
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("moat up exited before it was ready:\n%s", p.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("moat up not ready within 3 minutes:\n%s", p.out)
		}
	}
}

// waitOutput waits until moat up has printed s.
func (p *upProcess) waitOutput(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.out.String(), s) {
		select {
		case <-p.done:
			p.t.Fatalf("moat up exited before printing %q:\n%s", s, p.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("moat up did not print %q within %s:\n%s", s, timeout, p.out)
		}
	}
}

// stop interrupts moat up as Ctrl-C does and waits for it to end; it reports whether it ended
// by itself, with status 0, within grace.
func (p *upProcess) stop(grace time.Duration) bool {
	select {
	case <-p.done:
		return p.cmd.ProcessState.Success()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		return p.cmd.ProcessState.Success()
	case <-time.After(grace):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return false
	}
}

func (p *upProcess) kube() client.Client {
	p.t.Helper()
	ctrllog.SetLogger(logr.Discard())
	cfg, err := clientcmd.BuildConfigFromFlags("", p.st.Kubeconfig)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

func (p *upProcess) aws() (*ec2.Client, *elbv2.Client) {
	p.t.Helper()
	ctx := context.Background()
	sc, err := config.LoadSharedConfigProfile(ctx, "default", func(o *config.LoadSharedConfigOptions) {
		o.CredentialsFiles = []string{p.st.LB.CredentialsFile}
		o.ConfigFiles = []string{}
	})
	if err != nil {
		p.t.Fatal(err)
	}
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.StaticCredentialsProvider{Value: sc.Credentials}),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
	if err != nil {
		p.t.Fatal(err)
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(p.st.LB.API) }),
		elbv2.NewFromConfig(cfg, func(o *elbv2.Options) { o.BaseEndpoint = aws.String(p.st.LB.API) })
}

// childrenOf lists the processes (pid → command line) whose command line mentions dir: what a
// moat up with that state dir started.
func childrenOf(dir string) map[int]string {
	out := map[int]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil { // no /proc (macOS): ask ps
		ps, _ := exec.Command("ps", "-A", "-o", "pid=,command=").Output()
		for _, line := range strings.Split(string(ps), "\n") {
			var pid int
			if _, err := fmt.Sscan(line, &pid); err == nil && strings.Contains(line, dir) {
				out[pid] = strings.TrimSpace(line)
			}
		}
		return out
	}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(data), "\x00", " ")
		if strings.Contains(cmdline, dir) {
			out[pid] = cmdline
		}
	}
	return out
}

func upTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ensureKubeAssets builds (once) the API server moat up runs, with the project's script, so that
// moat up's own start is timed without the build. It returns the assets' directory. Tests never
// download: they build from the Go module proxy.
func ensureKubeAssets(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("bash", "../../hack/kube-assets.sh", "--kube-assets-source=build")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/kube-assets.sh: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// lookup resolves a load balancer name through moat lb's DNS server: its A or AAAA (qtype)
// addresses, none for NODATA. Any other answer than NOERROR fails the test.
func lookup(t *testing.T, server, name string, qtype uint16) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("resolve %s at %s: %v", name, server, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("resolve %s %s at %s: %s", dns.TypeToString[qtype], name, server, dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		switch a := rr.(type) {
		case *dns.A:
			out = append(out, a.A.String())
		case *dns.AAAA:
			out = append(out, a.AAAA.String())
		}
	}
	return out
}

// getFrom fetches http://addr/ with the client socket bound to src.
func getFrom(src, addr string, timeout time.Duration) (string, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: timeout}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
	}}
	resp, err := hc.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// upForwarder stands in for kube-proxy on a node: it forwards the node's NodePort to a backend.
func upForwarder(t *testing.T, listen, backend string) {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer b.Close()
				go func() { _, _ = io.Copy(b, c); b.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, b)
			}()
		}
	}()
}

// upHTTPBackend is an HTTP server answering body.
func upHTTPBackend(t *testing.T, addr, body string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// upDNSAddr is an address free for both UDP and TCP. (moat lb given host:0 for DNS binds UDP
// first and fails if TCP has that port taken, which a busy machine makes happen now and then.)
func upDNSAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

func upPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestUp runs `moat up --demo` as a user would and then drives the system it started: the demo's
// allowed and denied clients, a source-range change, a second Service in instance mode behind a
// kube-proxy stand-in, a restart that keeps the state, and the deletion that leaves nothing
// behind in moat lb.
func TestUp(t *testing.T) {
	ensureKubeAssets(t)
	stateDir := t.TempDir()
	demoPort := upPort(t)
	up := startUp(t, stateDir, "--demo", "--demo-port", fmt.Sprint(demoPort))
	t.Logf("first start (fresh state, kube assets cached): ready in %s", up.ready.Round(10*time.Millisecond))
	if !up.st.LocalCluster || up.st.Kubectl == "" {
		t.Fatalf("up.json: %+v", up.st)
	}
	ctx := context.Background()
	kube := up.kube()
	ec2c, elbc := up.aws()

	// The kubeconfig works for kubectl (the v1.37 one built with the API server).
	out, err := exec.Command(up.st.Kubectl, "--kubeconfig", up.st.Kubeconfig, "get", "namespaces", "-o", "name").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "namespace/kube-system") {
		t.Fatalf("kubectl get namespaces: %v\n%s", err, out)
	}

	// The demo's nodes stand for moat lb's instances: providerID from DescribeInstances.
	up.waitOutput("demo: kube-proxy stand-ins", time.Minute)
	insts, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("private-ip-address"), Values: []string{"127.1.0.10"}}}})
	if err != nil || len(insts.Reservations) != 1 || len(insts.Reservations[0].Instances) != 1 {
		t.Fatalf("DescribeInstances node-a: %v %+v", err, insts)
	}
	nodeA := insts.Reservations[0].Instances[0]
	var node corev1.Node
	if err := kube.Get(ctx, client.ObjectKey{Name: "node-a"}, &node); err != nil {
		t.Fatal(err)
	}
	if want := "aws:///us-east-1a/" + aws.ToString(nodeA.InstanceId); node.Spec.ProviderID != want || len(node.Status.Addresses) == 0 || node.Status.Addresses[0].Address != "127.1.0.10" {
		t.Fatalf("Node node-a: providerID %q (want %q), addresses %v", node.Spec.ProviderID, want, node.Status.Addresses)
	}
	var svc corev1.Service
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "moat-demo", Name: "webserver"}, &svc); err != nil {
		t.Fatal(err)
	}
	if aws.ToString(svc.Spec.LoadBalancerClass) != "service.k8s.aws/nlb" || len(svc.Spec.LoadBalancerSourceRanges) != 1 || svc.Spec.LoadBalancerSourceRanges[0] != "127.0.0.2/32" || int(svc.Spec.Ports[0].Port) != demoPort {
		t.Fatalf("demo Service: %+v", svc.Spec)
	}

	// The --kubeconfig path: refused while the cluster runs the AWS Load Balancer Controller.
	t.Run("refuses a cluster running the AWS Load Balancer Controller", func(t *testing.T) {
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "aws-load-balancer-controller", Namespace: "kube-system"},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "lbc"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "lbc"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "public.ecr.aws/eks/aws-load-balancer-controller:v2.6.0"}}},
				},
			},
		}
		if err := kube.Create(ctx, dep); err != nil {
			t.Fatal(err)
		}
		other := t.TempDir()
		cmd := exec.Command(moatBin, "up", "--state-dir", other, "--kubeconfig", up.st.Kubeconfig, "--controller=false",
			"--api-addr", "127.0.0.1:0", "--dns-addr", upDNSAddr(t), "--metrics-addr", "127.0.0.1:0")
		cmd.SysProcAttr = dieWithTest()
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "refusing to drive") || !strings.Contains(string(out), "Deployment kube-system/aws-load-balancer-controller") {
			t.Fatalf("moat up --kubeconfig on a cluster with the AWS controller: err %v, output:\n%s", err, out)
		}
		if err := kube.Delete(ctx, dep); err != nil {
			t.Fatal(err)
		}
		// Without it, the same cluster is accepted (no controller here: one already runs on it).
		ex := startUp(t, other, "--kubeconfig", up.st.Kubeconfig, "--controller=false")
		if ex.st.LocalCluster || ex.st.KubeAPI != up.st.KubeAPI {
			t.Fatalf("moat up --kubeconfig: %+v", ex.st)
		}
		if !ex.stop(30 * time.Second) {
			t.Fatalf("moat up --kubeconfig did not stop cleanly:\n%s", ex.out)
		}
		// --context alone: the default kubeconfig ($KUBECONFIG), that context; the controller
		// would get a copy holding only it.
		ex = startUpEnv(t, other, []string{"KUBECONFIG=" + up.st.Kubeconfig}, "--context", "moat", "--controller=false")
		if ex.st.LocalCluster || ex.st.KubeAPI != up.st.KubeAPI || ex.st.Kubeconfig != filepath.Join(other, "existing.kubeconfig") {
			t.Fatalf("moat up --context: %+v", ex.st)
		}
		if !ex.stop(30 * time.Second) {
			t.Fatalf("moat up --context did not stop cleanly:\n%s", ex.out)
		}
	})

	var echoAddr string
	up.waitOutput("The demo is running", 3*time.Minute)
	outText := up.out.String()
	wants := []string{"allowed client 127.0.0.2", "Served by web-", "denied client 127.0.0.3 → ", "no rule of its security groups admits this client",
		// Taking the nodes' rule for the backend group away cuts the load balancer off; putting it back heals it.
		"demo: targets unhealthy: ", "no page (", "demo: targets healthy again: ", "answered again: recovered (Served by web-"}
	// Going around the load balancer: dropped where moat lb enforces the nodes' group, and said
	// to be unenforced (never claimed denied) where it may not.
	if up.st.LB.InstanceSecurityGroups == "enforce" {
		wants = append(wants, "denied client 127.0.0.3 → node-a 127.1.0.10:", "directly: dropped (timed out): node-a's security group ")
	} else {
		t.Logf("instance security groups: %s", up.st.LB.InstanceSecurityGroups)
		wants = append(wants, "instance security groups are not enforced on this host")
	}
	for _, want := range wants {
		if !strings.Contains(outText, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, outText)
		}
	}
	if strings.Contains(outText, "not all unhealthy") || strings.Contains(outText, "not all healthy") || strings.Contains(outText, "still answered") {
		t.Fatalf("the revoke did not show as it should:\n%s", outText)
	}
	t.Logf("demo output:\n%s", upTail(outText, 40))
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "moat-demo", Name: "webserver"}, &svc); err != nil {
		t.Fatal(err)
	}
	lbHost := svc.Status.LoadBalancer.Ingress[0].Hostname
	addrs := lookup(t, up.st.LB.DNS, lbHost, dns.TypeA)
	if len(addrs) == 0 {
		t.Fatalf("%s does not resolve", lbHost)
	}
	front := net.JoinHostPort(addrs[0], fmt.Sprint(demoPort))

	// The moat explain command the demo prints tells why 127.0.0.3 is dropped at every zone's
	// address, and the rule that would admit it; for 127.0.0.2 it names the rule that admits it.
	t.Run("explain", func(t *testing.T) {
		var command []string
		for line := range strings.Lines(outText) {
			if before, _, ok := strings.Cut(line, "    # why, and the rule"); ok && strings.Contains(before, " explain ") {
				command = strings.Fields(before)
			}
		}
		if len(command) == 0 {
			t.Fatalf("the demo prints no moat explain command:\n%s", outText)
		}
		explainAs := func(from string) string {
			args := slices.Clone(command[1:])
			args[slices.Index(args, "--from")+1] = from
			cmd := exec.Command(command[0], args...)
			cmd.Env = append(os.Environ(), "AWS_SHARED_CREDENTIALS_FILE="+up.st.LB.CredentialsFile, "AWS_REGION=us-east-1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", cmd, err, out)
			}
			return string(out)
		}
		out := explainAs("127.0.0.3")
		if strings.Count(out, ": DROPPED_BY_LOAD_BALANCER_GROUP") != 2 || !strings.Contains(out, "authorize-security-group-ingress") || !strings.Contains(out, "--cidr 127.0.0.3/32") {
			t.Errorf("moat explain for 127.0.0.3:\n%s", out)
		}
		out = explainAs("127.0.0.2")
		if strings.Count(out, ": ALLOWED") != 2 || !strings.Contains(out, "inbound tcp "+fmt.Sprint(demoPort)+" from 127.0.0.2/32") {
			t.Errorf("moat explain for 127.0.0.2:\n%s", out)
		}
	})

	// The user edits the source ranges: the other client gets in, the first not.
	t.Run("source ranges follow the Service", func(t *testing.T) {
		svc.Spec.LoadBalancerSourceRanges = []string{"127.0.0.3/32"}
		if err := kube.Update(ctx, &svc); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "127.0.0.3 admitted and 127.0.0.2 denied", func() error {
			if page, err := getFrom("127.0.0.3", front, 2*time.Second); err != nil || !strings.Contains(page, "moat Sample App") {
				return fmt.Errorf("127.0.0.3: %v %q", err, page)
			}
			if _, err := getFrom("127.0.0.2", front, time.Second); err == nil {
				return fmt.Errorf("127.0.0.2 still admitted")
			}
			return nil
		})
	})

	// A second Service, instance mode, behind the test's own kube-proxy stand-in, which
	// outlives this subtest: the restart below checks this Service again.
	outer := t
	t.Run("instance mode", func(t *testing.T) {
		backend := upHTTPBackend(outer, "127.1.0.31:0", "echo backend\n")
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "e2e"}}
		if err := kube.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
		port := upPort(t)
		echo := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "e2e", Annotations: map[string]string{
				"service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance",
			}},
			Spec: corev1.ServiceSpec{
				Type:              corev1.ServiceTypeLoadBalancer,
				LoadBalancerClass: aws.String("service.k8s.aws/nlb"),
				Ports:             []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: int32(port), TargetPort: intstr.FromInt32(80)}},
			},
		}
		if err := kube.Create(ctx, echo); err != nil {
			t.Fatal(err)
		}
		nodePort := echo.Spec.Ports[0].NodePort
		for _, ip := range []string{"127.1.0.10", "127.2.0.10"} {
			upForwarder(outer, net.JoinHostPort(ip, fmt.Sprint(nodePort)), backend)
		}
		var host string
		eventually(t, 2*time.Minute, "echo Service gets a load balancer", func() error {
			if err := kube.Get(ctx, client.ObjectKeyFromObject(echo), echo); err != nil {
				return err
			}
			if len(echo.Status.LoadBalancer.Ingress) == 0 || echo.Status.LoadBalancer.Ingress[0].Hostname == "" {
				return fmt.Errorf("no ingress hostname")
			}
			host = echo.Status.LoadBalancer.Ingress[0].Hostname
			return nil
		})
		addrs := lookup(t, up.st.LB.DNS, host, dns.TypeA)
		if len(addrs) == 0 {
			t.Fatalf("%s does not resolve", host)
		}
		echoAddr = net.JoinHostPort(addrs[0], fmt.Sprint(port))
		eventually(t, 30*time.Second, "traffic through the instance-mode load balancer", func() error {
			body, err := getFrom("127.0.0.3", echoAddr, 2*time.Second)
			if err != nil || body != "echo backend\n" {
				return fmt.Errorf("%v %q", err, body)
			}
			return nil
		})
	})

	// Ctrl-C stops everything; a second start reuses the cluster and the load balancers.
	if !up.stop(60 * time.Second) {
		t.Fatalf("moat up did not stop cleanly on SIGINT:\n%s", up.out)
	}
	if left := childrenOf(stateDir); len(left) > 0 {
		t.Fatalf("processes left running after moat up stopped: %v", left)
	}
	for _, want := range []string{"moat controller stopped", "kube-apiserver stopped", "etcd stopped", "moat lb stopped"} {
		if !strings.Contains(up.out.String(), want) {
			t.Fatalf("moat up did not report %q:\n%s", want, up.out)
		}
	}
	again := startUp(t, stateDir)
	t.Logf("second start (state reused): ready in %s", again.ready.Round(10*time.Millisecond))
	kube = again.kube()
	ec2c, elbc = again.aws()
	if again.st.VPCID != up.st.VPCID || again.st.LB.CredentialsFile != up.st.LB.CredentialsFile {
		t.Fatalf("second start: %+v, first: %+v", again.st, up.st)
	}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "moat-demo", Name: "webserver"}, &svc); err != nil {
		t.Fatalf("the demo Service did not survive the restart: %v", err)
	}
	eventually(t, 30*time.Second, "instance-mode traffic after the restart", func() error {
		body, err := getFrom("127.0.0.3", echoAddr, 2*time.Second)
		if err != nil || body != "echo backend\n" {
			return fmt.Errorf("%v %q", err, body)
		}
		return nil
	})

	// Deleting the Services removes everything the controller made.
	for _, key := range []client.ObjectKey{{Namespace: "moat-demo", Name: "webserver"}, {Namespace: "e2e", Name: "echo"}} {
		if err := kube.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, time.Minute, "Services gone (finalizers removed)", func() error {
		for _, key := range []client.ObjectKey{{Namespace: "moat-demo", Name: "webserver"}, {Namespace: "e2e", Name: "echo"}} {
			if err := kube.Get(ctx, key, &corev1.Service{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("Service %s: %v", key, err)
			}
		}
		return nil
	})
	eventually(t, 30*time.Second, "nothing left in moat lb", func() error {
		if _, err := getFrom("127.0.0.3", echoAddr, time.Second); err == nil {
			return fmt.Errorf("%s still answers", echoAddr)
		}
		lbs, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{})
		if err != nil {
			return err
		}
		if len(lbs.LoadBalancers) > 0 {
			return fmt.Errorf("%d load balancers left", len(lbs.LoadBalancers))
		}
		tgs, err := elbc.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{})
		if err != nil {
			return err
		}
		if len(tgs.TargetGroups) > 0 {
			return fmt.Errorf("%d target groups left", len(tgs.TargetGroups))
		}
		sgs, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{"elbv2.k8s.aws/cluster"}}}})
		if err != nil {
			return err
		}
		if len(sgs.SecurityGroups) > 0 {
			return fmt.Errorf("%d managed security groups left (%s, …)", len(sgs.SecurityGroups), aws.ToString(sgs.SecurityGroups[0].GroupName))
		}
		nodes, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"moat-nodes"}})
		if err != nil {
			return err
		}
		if n := len(nodes.SecurityGroups[0].IpPermissions); n > 0 {
			return fmt.Errorf("the nodes' group still has %d inbound rules", n)
		}
		return nil
	})

	// A crashed moat up leaves nothing running: its children die with it (Pdeathsig).
	if err := again.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-again.done
	eventually(t, 10*time.Second, "children gone after kill -9 of moat up", func() error {
		if left := childrenOf(stateDir); len(left) > 0 {
			return fmt.Errorf("still running: %v", left)
		}
		return nil
	})
	// The killed moat lb left its instance firewall in the kernel (instances must not fall open);
	// the next moat up on the same state dir takes it over, and a clean stop removes it.
	last := startUp(t, stateDir)
	if !last.stop(60 * time.Second) {
		t.Fatalf("moat up after a kill -9 did not stop cleanly:\n%s", last.out)
	}
}
