package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/node"
)

// newNodeCommand is `moat node`; run is node.Run (tests pass a stand-in to see the config).
func newNodeCommand(logger func() (*slog.Logger, error), run func(context.Context, node.Config, func(string)) error) *cobra.Command {
	cfg := node.Config{Mode: firewall.Audit, PollInterval: node.DefaultPollInterval}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Enforce the security groups of the instances on this host, as read from moat lb's API",
		Long: `moat node enforces EC2 security groups on a machine that hosts instances (a Kubernetes
node, say), where moat lb does not run: every new flow to or from an instance's private address
is admitted only if a rule of its interface's groups allows it (nftables and conntrack; needs
root or CAP_NET_ADMIN). It reads the instances, their groups and the load balancers carrying
referenced groups from moat lb's API with read actions only: give it a read-only key, made with
"moat lb credentials add-read-only NAME". For example:

  moat node --endpoint-url http://10.0.0.5:7080 --credentials-file /etc/moat/node-credentials \
    --profile node --instance-sg-mode enforce

Its instances are those with a private address on this host (or --instance-id). When moat lb is
unreachable or refuses the key, the kernel keeps the last rules. Stopping the agent keeps them
too; --instance-sg-mode=off removes them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			cfg.Log = log
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, cfg, func(metrics string) {
				fmt.Fprintf(os.Stderr, "moat node: metrics on http://%s/metrics\n", metrics)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Endpoint, "endpoint-url", "", "moat lb's API URL (default: AWS_ENDPOINT_URL)")
	f.StringVar(&cfg.Region, "region", "us-east-1", "the region moat lb serves")
	f.StringVar(&cfg.Profile, "profile", "", "profile of the credentials file to sign with, a read-only one (default: AWS_PROFILE, else default)")
	f.StringVar(&cfg.CredentialsFile, "credentials-file", "", "AWS shared-credentials file (default: AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials)")
	f.StringSliceVar(&cfg.InstanceIDs, "instance-id", nil, "an instance to protect (repeatable); default: the instances with a private address on this host")
	f.StringVar((*string)(&cfg.Mode), "instance-sg-mode", string(firewall.Audit), "enforce, audit (count what enforce would drop, drop nothing) or off (remove the agent's rules)")
	f.DurationVar(&cfg.PollInterval, "poll-interval", node.DefaultPollInterval, "how often to read moat lb's API; a rule change reaches the kernel within this and one reading")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:7094", "address of /metrics, /healthz and /readyz")
	f.StringVar(&cfg.DataDir, "data-dir", node.DefaultDataDir(), "directory of the agent's lock (one agent per host)")
	return cmd
}
