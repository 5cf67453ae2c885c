package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/up"
)

func newUpCommand(logger func() (*slog.Logger, error)) *cobra.Command {
	o := up.Options{Out: os.Stdout}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run moat on this machine: the load balancer service with its default inventory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			o.Log = log
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return up.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.StateDir, "state-dir", up.DefaultStateDir(), "directory for everything moat up keeps between runs")
	f.StringVar(&o.APIAddr, "api-addr", "127.0.0.1:7080", "address of the load balancer API")
	f.StringVar(&o.DNSAddr, "dns-addr", "127.0.0.1:7053", "address of the DNS server for load balancer names")
	f.StringVar(&o.Metrics, "metrics-addr", "127.0.0.1:7090", "address of /metrics, /healthz and /readyz")
	return cmd
}
