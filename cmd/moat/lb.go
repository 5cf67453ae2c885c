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
	"github.com/moatlb/moat/internal/lb"
)

func newLBCommand(logger func() (*slog.Logger, error)) *cobra.Command {
	cfg := lb.Config{Quotas: cloud.DefaultQuotas()}
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
				fmt.Fprintf(os.Stderr, "\nmoat lb is serving\n  API:         %s\n  DNS:         %s (udp and tcp)\n  metrics:     %s/metrics\n  credentials: %s\n\ntry:\n  AWS_SHARED_CREDENTIALS_FILE=%s aws --endpoint-url %s --region %s ec2 describe-security-groups\n\n",
					eps.API, eps.DNS, eps.Metrics, eps.CredentialsFile, eps.CredentialsFile, eps.API, cfg.Region)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.APIAddr, "api-addr", "127.0.0.1:7080", "address of the AWS API (ELBv2 and EC2 on one endpoint)")
	f.StringVar(&cfg.DataDir, "data-dir", lb.DefaultDataDir(), "directory for the state and the generated credentials")
	f.StringVar(&cfg.InventoryPath, "inventory", "", "inventory file (YAML) declaring VPCs, subnets, instances and prefix lists; default: one VPC on 127.0.0.0/8 with two zones")
	f.StringVar(&cfg.Region, "region", "us-east-1", "the region this endpoint serves")
	f.StringVar(&cfg.AccountID, "account-id", "000000000000", "the 12-digit account ID in ARNs and owner IDs")
	f.StringVar(&cfg.DNSAddr, "dns-addr", "127.0.0.1:7053", "address (UDP and TCP) answering DNS queries for load balancer names")
	f.StringVar(&cfg.DNSSuffix, "dns-suffix", "moat.internal", "suffix of load balancer DNS names: <name>-<id>.elb.<region>.<suffix>")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:7090", "address of /metrics, /healthz and /readyz")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "serve the API over HTTPS with this certificate (PEM)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "the certificate's private key (PEM)")
	f.StringVar(&cfg.FastPath, "fast-path", lb.FastPathAuto, "kernel fast path for TCP flows on loopback (nftables DNAT + conntrack, needs CAP_NET_ADMIN): auto, kernel or off")
	f.StringVar(&flowLog, "flow-log", "", "write every flow denied by security groups as a JSON line (time, load balancer, listener, client, reason) to this file; - for stderr")
	cmd.AddCommand(newLBCredentialsCommand())
	q := &cfg.Quotas
	f.IntVar(&q.SecurityGroupsPerLoadBalancer, "quota-security-groups-per-load-balancer", q.SecurityGroupsPerLoadBalancer, "security groups per load balancer")
	f.IntVar(&q.SecurityGroupsPerInterface, "quota-security-groups-per-interface", q.SecurityGroupsPerInterface, "security groups per network interface")
	f.IntVar(&q.InboundRulesPerGroup, "quota-inbound-rules-per-group", q.InboundRulesPerGroup, "inbound rules per security group (IPv4 and IPv6 counted apart)")
	f.IntVar(&q.OutboundRulesPerGroup, "quota-outbound-rules-per-group", q.OutboundRulesPerGroup, "outbound rules per security group (IPv4 and IPv6 counted apart)")
	f.IntVar(&q.SecurityGroupsPerVPC, "quota-security-groups-per-vpc", q.SecurityGroupsPerVPC, "security groups per VPC")
	f.IntVar(&q.LoadBalancers, "quota-load-balancers", q.LoadBalancers, "network load balancers per region")
	f.IntVar(&q.ListenersPerLoadBalancer, "quota-listeners-per-load-balancer", q.ListenersPerLoadBalancer, "listeners per load balancer")
	f.IntVar(&q.TargetGroups, "quota-target-groups", q.TargetGroups, "target groups per region")
	f.IntVar(&q.TargetsPerTargetGroup, "quota-targets-per-target-group", q.TargetsPerTargetGroup, "targets per target group")
	f.IntVar(&q.TagsPerResource, "quota-tags-per-resource", q.TagsPerResource, "tags per resource")
	return cmd
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
