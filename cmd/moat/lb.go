package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/lb"
)

func newLBCommand(logger func() (*slog.Logger, error)) *cobra.Command {
	cfg := lb.Config{Quotas: cloud.DefaultQuotas(), API: lb.DefaultAPILimits()}
	var flowLog string
	cmd := &cobra.Command{
		Use:   "lb",
		Short: "Run the load balancer service: the AWS-compatible ELBv2 and EC2 security-group API",
		Long: `moat lb serves the subset of the AWS Elastic Load Balancing v2 (network load balancers) and EC2
security-group APIs that load balancer controllers use, SigV4-authenticated, with durable state.
On first start it writes <data-dir>/credentials; sign requests with them, for example:

  AWS_SHARED_CREDENTIALS_FILE=<data-dir>/credentials aws --endpoint-url http://127.0.0.1:7080 \
    --region us-east-1 ec2 describe-security-groups

A profile marked moat_read_only = true may call read actions only ("moat lb credentials
add-read-only NAME" adds one); any other valid key may do anything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			cfg.Log = log
			if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
				return fmt.Errorf("--tls-cert-file and --tls-key-file go together")
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if flowLog != "" {
				w, closeLog, err := openFlowLog(flowLog)
				if err != nil {
					return err
				}
				defer closeLog()
				cfg.FlowLog = w
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return lb.Run(ctx, cfg, func(eps lb.Endpoints) {
				console := "off (--console=false)"
				if eps.Console != "" {
					console = eps.Console + " (sign in with a key of the credentials file)"
				}
				fmt.Fprintf(os.Stderr, "\nmoat lb is serving\n  API:         %s\n  DNS:         %s (udp and tcp)\n  metrics:     %s/metrics\n  console:     %s\n  credentials: %s\n\ntry:\n  AWS_SHARED_CREDENTIALS_FILE=%s aws --endpoint-url %s --region %s ec2 describe-security-groups\n\n",
					eps.API, eps.DNS, eps.Metrics, console, eps.CredentialsFile, eps.CredentialsFile, eps.API, cfg.Region)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.APIAddr, "api-addr", "127.0.0.1:7080", "address of the AWS API (ELBv2 and EC2 on one endpoint)")
	f.StringVar(&cfg.DataDir, "data-dir", lb.DefaultDataDir(), "directory for the state and the generated credentials")
	f.StringVar(&cfg.Store, "store", "", "keep the state in etcd instead of <data-dir>/state.db: etcd://host:port[,host:port…][/root], root being the key prefix of this deployment (default /moat). The data dir holds this node's copy of the store's credentials. Back up with etcdctl snapshot save")
	f.StringVar(&cfg.StoreCAFile, "store-cacert", "", "with --store: connect to etcd over TLS, verifying its members with this CA bundle (PEM)")
	f.StringVar(&cfg.StoreCertFile, "store-cert", "", "with --store: connect to etcd over TLS with this client certificate (PEM)")
	f.StringVar(&cfg.StoreKeyFile, "store-key", "", "the --store-cert's private key (PEM)")
	f.StringVar(&cfg.InventoryPath, "inventory", "", "inventory file (YAML) declaring VPCs, subnets, instances and prefix lists; default: one VPC on 127.0.0.0/8 with two zones")
	f.StringVar(&cfg.Region, "region", "us-east-1", "the region this endpoint serves")
	f.StringVar(&cfg.AccountID, "account-id", "000000000000", "the 12-digit account ID in ARNs and owner IDs")
	f.StringVar(&cfg.DNSAddr, "dns-addr", "127.0.0.1:7053", "address (UDP and TCP) answering DNS queries for load balancer names")
	f.StringVar(&cfg.DNSSuffix, "dns-suffix", "moat.internal", "suffix of load balancer DNS names: <name>-<id>.elb.<region>.<suffix>")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:7090", "address of /metrics, /healthz, /readyz and the web console")
	f.BoolVar(&cfg.Console, "console", true, "serve the web console (read-only; sign in with a key of the credentials file) at /console on the metrics address")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "serve the API over HTTPS with this certificate (PEM)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "the certificate's private key (PEM)")
	f.IntVar(&cfg.MaxFlowsPerListener, "max-flows-per-listener", 0, "cap on each listener's flows through the userspace proxy; over it a new flow is refused (reset, or the datagram dropped) and counted (moat_dataplane_denied_flows_total{reason=\"flow_limit\"}); 0: a quarter of the open-file limit")
	f.StringVar(&cfg.FastPath, "fast-path", lb.FastPathAuto, "kernel fast path for TCP and UDP flows within IPv4 or IPv6, local or from other hosts (nftables DNAT + conntrack, needs CAP_NET_ADMIN; forwarding to other hosts needs net.ipv4.ip_forward=1, or net.ipv6.conf.all.forwarding=1): auto, kernel or off")
	f.StringVar((*string)(&cfg.InstanceSGMode), "instance-sg-mode", string(firewall.Enforce), "security groups of the instances whose addresses are on this host, on all their traffic (nftables, needs CAP_NET_ADMIN): enforce, audit (count what enforce would drop) or off")
	f.BoolVar(&cfg.StartFresh, "start-fresh", false, "start with empty state where <data-dir>/state.db is missing or empty although <data-dir>/credentials exists (refused otherwise, as lost state)")
	f.StringVar(&flowLog, "flow-log", "", "write every flow denied by security groups as a JSON line to this file (- for stderr): at a listener (load balancer, listener, client, reason) or, where moat may read the kernel's packet log, at a local instance (instance, interface, direction, 5-tuple)")
	f.StringSliceVar(&cfg.Zones, "zones", nil, "zones whose load balancer addresses this node serves, as the inventory names them (us-east-1a,us-east-1b); default: all. With --store etcd://…, one node at a time serves each zone: the holder of its lease")
	f.DurationVar(&cfg.ZoneLeaseTTL, "zone-lease-ttl", lb.DefaultZoneLeaseTTL, "with --store etcd://…: the TTL of this node's zone lease (whole seconds, at least 2s): how long a zone waits after its serving node dies or loses etcd before a standby serves it; a node cut off from etcd stops serving a quarter of it sooner")
	f.StringVar(&cfg.AnnounceInterface, "announce-interface", "", "put the IPv4 load balancer addresses this node serves that are in this interface's networks on it, announced by gratuitous ARP, and take them off when it stops serving their zone (needs CAP_NET_ADMIN and CAP_NET_RAW); default: addresses are local already")
	f.StringVar(&cfg.NodeName, "node-name", hostname(), "this node's name in the zones' elections, logs and metrics")
	addAPILimitFlags(f, &cfg.API)
	addQuotaFlags(f, &cfg.Quotas)
	cmd.AddCommand(newLBBackupCommand())
	cmd.AddCommand(newLBCredentialsCommand())
	cmd.AddCommand(newLBMigrateCommand())
	return cmd
}

func hostname() string {
	name, _ := os.Hostname()
	return name
}

func openFlowLog(path string) (io.Writer, func(), error) {
	if path == "-" {
		return os.Stderr, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("flow log: %w", err)
	}
	return f, func() { f.Close() }, nil
}
