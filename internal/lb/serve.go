package lb

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dnsserver"
)

type nameResolver struct{ c *cloud.Cloud }

func (r nameResolver) Resolve(name string) ([]netip.Addr, bool) { return r.c.ResolveName(name) }

func serveDNS(ctx context.Context, c *cloud.Cloud, addr string, log *slog.Logger) (string, error) {
	cfg := c.Config()
	srv := dnsserver.New("elb."+cfg.Region+"."+cfg.DNSSuffix, nameResolver{c}, log)
	bound, err := srv.ListenAndServe(ctx, addr)
	if err != nil {
		return "", err
	}
	return bound.String(), nil
}

// activate marks new load balancers active. It stands in for the data plane, which will mark a
// load balancer active once it listens on its addresses; until then the API's lifecycle is the
// same as AWS's, just without traffic.
func activate(ctx context.Context, c *cloud.Cloud, log *slog.Logger) {
	changes, stop := c.Store().Changes()
	defer stop()
	for {
		arns, err := c.Provisioning()
		if err != nil {
			log.Error("list provisioning load balancers failed", "err", err)
		}
		for _, arn := range arns {
			if err := c.SetLoadBalancerState(arn, "active", ""); err != nil {
				log.Error("activate load balancer failed", "arn", arn, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}
