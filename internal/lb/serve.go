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
