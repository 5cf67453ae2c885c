package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/node"
)

// nodeConfig parses args as `moat node` does and returns the configuration it would run with.
func nodeConfig(t *testing.T, args []string) node.Config {
	t.Helper()
	var got node.Config
	run := func(_ context.Context, c node.Config, _ func(string)) error { got = c; return nil }
	cmd := newNodeCommand(func() (*slog.Logger, error) { return slog.New(slog.DiscardHandler), nil }, run)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("moat node %s: %v", strings.Join(args, " "), err)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("moat node %s: %v", strings.Join(args, " "), err)
	}
	return got
}

// The DaemonSet in config/node runs moat node with flags it accepts, in the host's network
// namespace with NET_ADMIN, and the systemd unit's command line parses too: the deployments
// cannot drift from the flags.
func TestNodeDeployments(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "node", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		t.Fatalf("config/node/daemonset.yaml: %v", err)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || len(spec.Containers) != 1 {
		t.Fatalf("the DaemonSet must run one container in the host's network namespace: %+v", spec)
	}
	c := spec.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Add, "NET_ADMIN") {
		t.Errorf("the agent's container lacks NET_ADMIN: %+v", c.SecurityContext)
	}
	if len(c.Args) == 0 || c.Args[0] != "node" {
		t.Fatalf("container args %q do not run moat node", c.Args)
	}
	cfg := nodeConfig(t, c.Args[1:])
	if cfg.Mode != firewall.Audit || cfg.Profile == "" || cfg.CredentialsFile == "" || cfg.Endpoint == "" {
		t.Errorf("the DaemonSet's agent: %+v, want audit mode with an endpoint and a read-only profile's file", cfg)
	}

	unit, err := os.ReadFile(filepath.Join("..", "..", "config", "node", "moat-node.service"))
	if err != nil {
		t.Fatal(err)
	}
	var exec string
	for _, line := range strings.Split(strings.ReplaceAll(string(unit), "\\\n", " "), "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			exec = rest
		}
	}
	fields := strings.Fields(exec)
	if len(fields) < 2 || filepath.Base(fields[0]) != "moat" || fields[1] != "node" {
		t.Fatalf("ExecStart %q does not run moat node", exec)
	}
	if cfg := nodeConfig(t, fields[2:]); cfg.Mode != firewall.Audit || cfg.Endpoint == "" {
		t.Errorf("the unit's agent: %+v", cfg)
	}
}

// moat node's defaults: audit mode, a poll fast enough for the one-second promise, metrics on
// loopback.
func TestNodeDefaults(t *testing.T) {
	cfg := nodeConfig(t, []string{})
	if cfg.Mode != firewall.Audit || cfg.PollInterval > node.DefaultPollInterval || !strings.HasPrefix(cfg.MetricsAddr, "127.0.0.1:") {
		t.Errorf("defaults %+v", cfg)
	}
}
