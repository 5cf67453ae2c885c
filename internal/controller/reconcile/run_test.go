package reconcile_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/moatlb/moat/internal/controller/reconcile"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// TestRun: `moat controller`'s flags, as moat up and a manifest pass them, run the controller:
// the standard credential chain (here the environment), --aws-api-endpoints to moat lb, the VPC
// found by --aws-vpc-tags, --kubeconfig, --watch-namespace, /healthz, /readyz and /metrics on
// the addresses given.
func TestRun(t *testing.T) {
	h := newHarness(t)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", h.env.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", h.env.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	metrics, probes := freeAddr(t), freeAddr(t)

	var f reconcile.Flags
	fs := pflag.NewFlagSet("controller", pflag.ContinueOnError)
	f.AddFlags(fs)
	err := fs.Parse([]string{
		"--cluster-name=" + cluster, "--aws-region=us-east-1", "--aws-vpc-tags=Name=moat",
		"--aws-api-endpoints=EC2=" + h.env.URL + ",Elastic Load Balancing v2=" + h.env.URL,
		"--kubeconfig=" + path, "--enable-leader-election=false", "--watch-namespace=" + h.ns,
		"--metrics-bind-addr=" + metrics, "--health-probe-bind-addr=" + probes,
		"--enable-shield=false", "--webhook-cert-dir=/nonexistent",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reconcile.Run(ctx, &f, testLogger()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	eventually(t, 30*time.Second, func() error {
		for _, p := range []string{"/healthz", "/readyz"} {
			code, body, err := httpGet("http://" + probes + p)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("%s: %d %s %v", p, code, body, err)
			}
		}
		return nil
	})
	h.create(h.service("web"))
	h.waitDeployed("web")
	code, body, err := httpGet("http://" + metrics + "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, m := range []string{"moat_controller_reconcile_stage_duration_seconds_bucket", `controller_runtime_reconcile_total{controller="service"`} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}
