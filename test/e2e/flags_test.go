package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The real binary refuses each invalid flag at once: exit status 1, the flag named on stderr, and
// nothing written where it keeps its state.
func TestInvalidFlagsExit(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"lb", "--region", "us east 1"}, `--region "us east 1"`},
		{[]string{"lb", "--account-id", "abc"}, `--account-id "abc"`},
		{[]string{"lb", "--quota-load-balancers", "-5"}, "--quota-load-balancers -5"},
		{[]string{"lb", "--dns-suffix", ".."}, `--dns-suffix ".."`},
		{[]string{"lb", "--zone-lease-ttl", "1s"}, "--zone-lease-ttl 1s"},
		{[]string{"up", "--quota-load-balancers", "-5"}, "--quota-load-balancers -5"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			args := append(tc.args, "--api-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0")
			if tc.args[0] == "lb" {
				args = append(args, "--data-dir", dir, "--fast-path", "off")
			} else {
				args = append(args, "--state-dir", dir, "--controller=false")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, moatBin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if exit, ok := errors.AsType[*exec.ExitError](err); !ok || exit.ExitCode() != 1 {
				t.Fatalf("moat %s: %v, want exit status 1\n%s", strings.Join(args, " "), err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not name %s:\n%s", tc.want, stderr.String())
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("moat wrote %s before refusing the flag (%v)", dir, err)
			}
		})
	}
}
