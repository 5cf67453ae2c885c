package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/controller/reconcile"
)

// newControllerCommand is `moat controller`: the Kubernetes controller, with the AWS Load
// Balancer Controller's flags.
func newControllerCommand(logger func() (*slog.Logger, error)) *cobra.Command {
	var f reconcile.Flags
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the Kubernetes controller: Services of type LoadBalancer → NLBs with security groups",
		Long: `moat controller provisions a Network Load Balancer with security groups for every Service the
AWS Load Balancer Controller would (loadBalancerClass service.k8s.aws/nlb, or the nlb-ip/external
annotations), through the AWS API: AWS itself, or moat lb with --aws-api-endpoints. It takes the AWS
controller's flags; those moat does not implement are accepted and logged as ignored.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.LogLevel == "debug" {
				if err := cmd.Root().PersistentFlags().Set("verbose", "true"); err != nil {
					return err
				}
			}
			log, err := logger()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return reconcile.Run(ctx, &f, logr.FromSlogHandler(log.Handler()))
		},
	}
	f.AddFlags(cmd.Flags())
	return cmd
}
