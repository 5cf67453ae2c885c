// Package up runs moat on one machine: the load balancer service with its embedded store and
// default inventory, so a newcomer can try it with one command.
//
// This is the first slice of `moat up` (SPEC §3). The local Kubernetes API server and the
// controller join it in later slices; until then it starts moat lb alone.
package up

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/lb"
)

// Options configure moat up.
type Options struct {
	StateDir string // everything moat up keeps: <state-dir>/lb holds moat lb's data
	APIAddr  string
	DNSAddr  string
	Metrics  string
	Log      *slog.Logger
	Out      io.Writer // where progress and instructions go
}

// DefaultStateDir is moat up's state directory, reused by the next run.
func DefaultStateDir() string {
	return filepath.Join(filepath.Dir(lb.DefaultDataDir()), "up")
}

// Run starts everything and serves until ctx ends (Ctrl-C).
func Run(ctx context.Context, o Options) error {
	fmt.Fprintf(o.Out, "moat up: starting moat lb (state in %s)\n", o.StateDir)
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return err
	}
	cfg := lb.Config{
		APIAddr: o.APIAddr, DataDir: filepath.Join(o.StateDir, "lb"), Region: "us-east-1", AccountID: "000000000000",
		DNSAddr: o.DNSAddr, DNSSuffix: "moat.internal", MetricsAddr: o.Metrics, Quotas: cloud.DefaultQuotas(), Log: o.Log,
	}
	return lb.Run(ctx, cfg, func(eps lb.Endpoints) {
		fmt.Fprintf(o.Out, `
moat is up. Ctrl-C stops it; the next moat up keeps its state.

  load balancer API  %[1]s   (ELBv2 and EC2, SigV4)
  DNS                %[2]s   (load balancer names, udp and tcp)
  metrics            %[3]s/metrics
  credentials        %[4]s

Try it with the AWS CLI:

  export AWS_SHARED_CREDENTIALS_FILE=%[4]s AWS_REGION=us-east-1
  aws --endpoint-url %[1]s ec2 describe-subnets
  aws --endpoint-url %[1]s ec2 create-security-group --group-name web --description "web clients"
  aws --endpoint-url %[1]s elbv2 describe-load-balancers

Not yet in this version: the local Kubernetes API server and the controller (see the README).
`, eps.API, eps.DNS, eps.Metrics, eps.CredentialsFile)
	})
}
