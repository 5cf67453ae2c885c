// Package e2e runs moat's programs as processes and drives them the way users do: real binaries,
// real sockets on loopback, real AWS clients.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/moatlb/moat/internal/awsclient"
)

var moatBin, echoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "moat-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	moatBin = filepath.Join(dir, "moat")
	build := exec.Command("go", "build", "-race", "-o", moatBin, "github.com/moatlb/moat/cmd/moat")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build moat:", err)
		os.Exit(1)
	}
	echoBin = filepath.Join(dir, "echoserver")
	build = exec.Command("go", "build", "-o", echoBin, "github.com/moatlb/moat/test/e2e/echoserver")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build echoserver:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lbProcess is a running `moat lb` child.
type lbProcess struct {
	cmd     *exec.Cmd
	dataDir string
	stderr  *syncBuffer
	done    chan struct{}
	API     string
	DNS     string
	Metrics string
	Creds   string
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startLB starts moat lb on ephemeral loopback ports with dataDir and waits until it serves.
func startLB(t *testing.T, dataDir string, args ...string) *lbProcess {
	t.Helper()
	// The tests share the host's loopback, and with it the default inventory's instance
	// addresses: a moat lb enforcing their groups there would drop other tests' traffic. Tests
	// that enforce do so in network namespaces of their own (moat up's test excepted).
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--instance-sg-mode") }) {
		args = append(args, "--instance-sg-mode=off")
	}
	return startLBIn(t, nil, "127.0.0.1", dataDir, args...)
}

// startLBIn starts moat lb under a command prefix (e.g. ip netns exec <ns>) with its API, DNS
// and metrics on ephemeral ports of host.
func startLBIn(t *testing.T, prefix []string, host, dataDir string, args ...string) *lbProcess {
	t.Helper()
	// A killed moat lb leaves its endpoints file behind; waiting must not find the old one.
	if err := os.Remove(filepath.Join(dataDir, "endpoints.json")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	args = append([]string{"lb", "--data-dir", dataDir, "--api-addr", host + ":0", "--dns-addr", host + ":0", "--metrics-addr", host + ":0"}, args...)
	argv := append(append(slices.Clone(prefix), moatBin), args...)
	p := &lbProcess{cmd: exec.Command(argv[0], argv[1:]...), dataDir: dataDir, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = dieWithTest()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		// A failure is often moat lb's: say whether it had ended, and what it last said.
		if t.Failed() {
			select {
			case <-p.done:
				t.Logf("moat lb had exited: %v", p.cmd.ProcessState)
			default:
			}
			out := p.stderr.String()
			t.Logf("moat lb's last words:\n%s", out[max(0, len(out)-4000):])
		}
		p.kill()
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(dataDir, "endpoints.json"))
		if err == nil {
			var eps struct{ API, DNS, Metrics, CredentialsFile string }
			if err := json.Unmarshal(data, &eps); err != nil {
				t.Fatal(err)
			}
			p.API, p.DNS, p.Metrics, p.Creds = eps.API, eps.DNS, eps.Metrics, eps.CredentialsFile
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("moat lb exited before serving:\n%s", p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("moat lb did not serve within 60s:\n%s", p.stderr)
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *lbProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// config is an aws.Config for moat lb's endpoint, from the credentials file it wrote, as a user
// would make it.
func (p *lbProcess) config(t *testing.T) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{p.Creds}),
		config.WithSharedConfigFiles([]string{}),
		config.WithRegion("us-east-1"),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		config.WithBaseEndpoint(p.API),
	)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPClient = awsclient.HTTPClient(cfg.HTTPClient)
	return cfg
}

// clients returns EC2 and ELBv2 clients of p.config.
func (p *lbProcess) clients(t *testing.T) (*ec2.Client, *elbv2.Client) {
	t.Helper()
	cfg := p.config(t)
	return ec2.NewFromConfig(cfg), elbv2.NewFromConfig(cfg)
}

// zoneAddress is a load balancer's address of qtype (dns.TypeA or dns.TypeAAAA) in zone, as its
// zonal name answers at p's DNS server: AWS describes an address only where the subnet mapping
// asked for one.
func (p *lbProcess) zoneAddress(t *testing.T, lb elbtypes.LoadBalancer, zone string, qtype uint16) string {
	t.Helper()
	addrs := lookup(t, p.DNS, zone+"."+aws.ToString(lb.DNSName), qtype)
	if len(addrs) != 1 {
		t.Fatalf("%s.%s answers %v, want one address", zone, aws.ToString(lb.DNSName), addrs)
	}
	return addrs[0]
}

// waitServing waits until the listener answers src: moat lb binds it just after CreateListener
// returns, when the data plane applies the commit.
func waitServing(t *testing.T, src, front string) {
	t.Helper()
	waitFor(t, 10*time.Second, front+" to answer", func() bool {
		c, _, err := dialFrom(src, front, 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}
