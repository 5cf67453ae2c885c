package reconcile_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/moatlb/moat/internal/controller/reconcile"
)

var (
	controllerRestarts = flag.Int("controller-restarts", 0, "kill/restart iterations of TestKillRestart (default 3 with -short, 10 without)")
	controllerLog      = flag.Bool("controller-log", false, "print the controllers' logs to stderr")
)

// The suite's Kubernetes API server (envtest: kube-apiserver and etcd built by
// hack/kube-assets.sh), shared by every test; each test works in its own namespace.
var (
	restCfg    *rest.Config
	kubeconfig []byte        // for restCfg, as a file's contents
	k8s        client.Client // uncached
	scheme     = reconcile.NewScheme()
	repo       = filepath.Join("..", "..", "..")
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	ctrl.SetLogger(testLogger())
	assets, err := kubeAssets()
	if err != nil {
		fmt.Fprintf(os.Stderr, "envtest: cannot get the Kubernetes test binaries from hack/kube-assets.sh: %v\n", err)
		return 1
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(repo, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	start := time.Now()
	restCfg, err = env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "envtest: start the API server: %v\n", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "envtest: stop: %v\n", err)
		}
	}()
	kubeconfig = env.KubeConfig
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "envtest: API server up in %s\n", time.Since(start).Round(time.Millisecond))
	}
	if k8s, err = client.New(restCfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintf(os.Stderr, "envtest: client: %v\n", err)
		return 1
	}
	return m.Run()
}

// kubeAssets runs hack/kube-assets.sh, which builds the binaries once (minutes on a cold
// machine) and then answers from its cache, and returns their directory.
func kubeAssets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	var stdout bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(repo, "hack", "kube-assets.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/kube-assets.sh: %w", err)
	}
	dir := strings.TrimSpace(stdout.String())
	if dir == "" {
		return "", errors.New("hack/kube-assets.sh printed no directory")
	}
	return dir, nil
}

func testLogger() logr.Logger {
	if !*controllerLog {
		return logr.Discard()
	}
	return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
}

// eventually polls f until it succeeds or the timeout passes, then fails the test with f's
// last error.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func restarts() int {
	if *controllerRestarts > 0 {
		return *controllerRestarts
	}
	if testing.Short() {
		return 3
	}
	return 10
}

var _ = context.Background
