package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/up"
)

// newUpCommand is `moat up`; run is up.Run, or a stand-in in tests.
func newUpCommand(logger func() (*slog.Logger, error), run func(context.Context, up.Options) error) *cobra.Command {
	o := up.Options{Out: os.Stdout, Quotas: cloud.DefaultQuotas()}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run all of moat on this machine: moat lb, a local Kubernetes API server and moat controller",
		Long: `moat up runs the whole system on this machine, with its state under --state-dir:

  - moat lb (embedded store, default inventory: VPC 127.0.0.0/8, subnets 127.1.0.0/16 and
    127.2.0.0/16, nodes node-a 127.1.0.10 and node-b 127.2.0.10);
  - a local Kubernetes API server (etcd + kube-apiserver v1.37) and a kubeconfig for kubectl. The
    binaries come from hack/kube-assets.sh (embedded) and are cached in ~/.cache/moat/kube: the
    first start downloads envtest's release for that version, checked against its sha512, in
    seconds, or else builds them from the Go module proxy, which needs the Go toolchain and takes
    minutes (--kube-assets-source);
  - moat controller against both (leader election off).

With --kubeconfig or --context, moat up drives that cluster instead of starting one — never
implicitly — and refuses a cluster that runs the AWS Load Balancer Controller. Without
--inventory, moat lb's instances are then the cluster's Nodes (their InternalIPs and zones), and
its load balancers get addresses on this host's loopback that reach the Nodes' NodePorts.

--demo then reproduces the AWS blog post on security groups for NLBs: a web app's backends, a
Service of type LoadBalancer that admits only 127.0.0.2, and requests from 127.0.0.2 (answered)
and 127.0.0.3 (dropped).

Ctrl-C stops everything moat up started, in order; the next moat up reuses the state.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := logger(); err != nil { // validates --log-format
				return err
			}
			o.LogFormat, _ = cmd.Root().PersistentFlags().GetString("log-format")
			o.Verbose, _ = cmd.Root().PersistentFlags().GetBool("verbose")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.StateDir, "state-dir", up.DefaultStateDir(), "directory for everything moat up keeps between runs")
	f.StringVar(&o.APIAddr, "api-addr", "127.0.0.1:7080", "address of the load balancer API (host:0 for any free port)")
	f.StringVar(&o.DNSAddr, "dns-addr", "127.0.0.1:7053", "address of the DNS server for load balancer names")
	f.StringVar(&o.Metrics, "metrics-addr", "127.0.0.1:7090", "address of moat lb's /metrics, /healthz, /readyz and web console (/console)")
	f.StringVar(&o.Inventory, "inventory", "", "moat lb's inventory file (see moat lb --inventory); default: moat lb's default inventory, or with --kubeconfig/--context one derived from the cluster's Nodes (<state-dir>/inventory.yaml)")
	f.StringVar(&o.KubeAPIAddr, "kube-api-addr", "127.0.0.1:7443", "address of the local kube-apiserver")
	f.StringVar(&o.EtcdAddr, "etcd-addr", "127.0.0.1:7379", "client address of the local etcd")
	f.StringVar(&o.EtcdPeerAddr, "etcd-peer-addr", "127.0.0.1:7380", "peer address of the local etcd")
	f.StringVar(&o.KubeAssets, "kube-assets", "", "directory holding kube-apiserver, etcd and kubectl (default: download or build, and cache, them with the embedded hack/kube-assets.sh)")
	f.StringVar(&o.KubeAssetsSource, "kube-assets-source", "", "how the first start gets kube-apiserver, etcd and kubectl: download (envtest's release, sha512-checked), build (from the Go module proxy) or auto (download, else build); default $MOAT_KUBE_ASSETS_SOURCE, else auto")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "drive the cluster of this kubeconfig instead of starting a local one")
	f.StringVar(&o.Context, "context", "", "drive the cluster of this kubeconfig context instead of starting a local one")
	f.BoolVar(&o.Controller, "controller", true, "start moat controller (false: moat lb and the cluster only, e.g. to run a controller yourself)")
	f.StringVar(&o.ControllerMetricsAddr, "controller-metrics-addr", "127.0.0.1:7091", "address of the controller's /metrics")
	f.StringVar(&o.ControllerProbeAddr, "controller-probe-addr", "127.0.0.1:7092", "address of the controller's /healthz and /readyz")
	f.BoolVar(&o.Demo, "demo", false, "reproduce the walkthrough of the AWS blog post on NLB security groups once everything is up")
	f.IntVar(&o.DemoPort, "demo-port", 8080, "port of the demo Service (the load balancer's listener)")
	addQuotaFlags(f, &o.Quotas)
	f.BoolVar(&o.StartFresh, "start-fresh", false, "let moat lb start with empty state where <state-dir>/lb/state.db is missing or empty although its credentials exist (refused otherwise, as lost state)")
	f.StringVar((*string)(&o.InstanceSGMode), "instance-sg-mode", string(firewall.Enforce), "moat lb's enforcement of the instances' security groups on this host: enforce, audit or off")
	return cmd
}
