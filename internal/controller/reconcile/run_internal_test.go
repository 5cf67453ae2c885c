package reconcile

import (
	"os"
	"path/filepath"
	"testing"
)

// The controller's Kubernetes client is not rate limited on the client side (client-go's default
// of 5 requests a second per resource would pace a large cluster's reconciles).
func TestRestConfigHasNoClientRateLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kubeconfig := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := restConfig(&Flags{Kubeconfig: path})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS >= 0 || cfg.RateLimiter != nil {
		t.Errorf("rest config QPS %v, rate limiter %v: want no client-side rate limit (QPS < 0)", cfg.QPS, cfg.RateLimiter)
	}
}
