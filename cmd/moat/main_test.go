package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/up"
)

// Each invalid flag makes `moat lb` fail at once with an error naming it, before it writes
// anything to its data dir.
func TestLBRefusesInvalidFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--region", "us east 1"}, `--region "us east 1"`},
		{[]string{"--account-id", "abc"}, `--account-id "abc"`},
		{[]string{"--quota-load-balancers", "-5"}, "--quota-load-balancers -5"},
		{[]string{"--quota-targets-per-target-group", "0"}, "--quota-targets-per-target-group 0"},
		{[]string{"--dns-suffix", ".."}, `--dns-suffix ".."`},
		{[]string{"--api-max-connections", "0"}, "--api-max-connections 0"},
		{[]string{"--api-read-timeout", "0s"}, "--api-read-timeout"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "lb")
			root := newRootCommand()
			root.SetArgs(append([]string{"lb", "--data-dir", dataDir, "--api-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--fast-path", "off"}, tc.args...))
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.ExecuteContext(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("moat lb %s: error %v, want one naming %s", strings.Join(tc.args, " "), err, tc.want)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("moat lb created its data dir before refusing the flags (%v)", err)
			}
		})
	}
}

// moat up declares the same --quota-… flags as moat lb and hands them to moat lb.
func TestUpPassesQuotas(t *testing.T) {
	var got up.Options
	run := func(_ context.Context, o up.Options) error { got = o; return nil }
	root := newRootCommand()
	for _, c := range root.Commands() {
		if c.Name() == "up" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(newUpCommand(func() (*slog.Logger, error) { return nil, nil }, run))
	root.SetArgs([]string{"up", "--quota-load-balancers", "2000", "--quota-target-groups", "5000", "--quota-listeners-per-load-balancer", "60"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := cloud.DefaultQuotas()
	want.LoadBalancers, want.TargetGroups, want.ListenersPerLoadBalancer = 2000, 5000, 60
	if got.Quotas != want {
		t.Errorf("moat up quotas %+v, want %+v", got.Quotas, want)
	}

	lbFlags, upFlags := newLBCommand(nil).Flags(), newUpCommand(nil, run).Flags()
	var quotaFlags int
	lbFlags.VisitAll(func(f *pflag.Flag) {
		if !strings.HasPrefix(f.Name, "quota-") {
			return
		}
		quotaFlags++
		if g := upFlags.Lookup(f.Name); g == nil || g.DefValue != f.DefValue || g.Usage != f.Usage {
			t.Errorf("moat up lacks --%s as moat lb has it", f.Name)
		}
	})
	if quotaFlags == 0 {
		t.Error("moat lb has no --quota-… flags")
	}
}
