// Command moat gives Kubernetes Services of type LoadBalancer a Network Load Balancer with
// security groups, on AWS or anywhere: `moat lb` is the load balancer service, `moat controller`
// the Kubernetes controller, `moat node` the agent enforcing instance security groups on other
// hosts, and `moat up` runs everything on one machine.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	// The container image has no CA certificates: without system roots, TLS to AWS (moat
	// controller) and to an etcd or API with public certificates verifies against this bundle.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/moatlb/moat/internal/node"
	"github.com/moatlb/moat/internal/up"
)

func main() {
	// Off Linux, moat up runs this binary again as the watchdog of its children.
	up.MaybeRunWatchdog()
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "moat:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var logFormat string
	var verbose bool
	root := &cobra.Command{
		Use:           "moat",
		Short:         "Network Load Balancers with security groups, on AWS or anywhere",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug messages too")
	logger := func() (*slog.Logger, error) {
		opts := &slog.HandlerOptions{Level: slog.LevelInfo}
		if verbose {
			opts.Level = slog.LevelDebug
		}
		switch logFormat {
		case "text":
			return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
		}
		return nil, fmt.Errorf("--log-format must be text or json, not %q", logFormat)
	}
	root.AddCommand(newLBCommand(logger), newUpCommand(logger, up.Run), newControllerCommand(logger), newNodeCommand(logger, node.Run), newExplainCommand())
	return root
}
