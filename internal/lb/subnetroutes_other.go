//go:build !linux || moat_portable

package lb

import (
	"errors"
	"log/slog"
	"net/netip"
)

// subnetRouter stands in where moat lb cannot add routes: an API-made subnet's block outside
// 127.0.0.0/8 is never made local, and the port check says so.
type subnetRouter struct{}

func newSubnetRouter(*slog.Logger) *subnetRouter { return &subnetRouter{} }

func (*subnetRouter) Sync([]netip.Prefix) {}

func (*subnetRouter) Why(netip.Addr) error {
	return errors.New("moat lb makes API-made subnets' blocks local only on Linux; add the address to the host by hand")
}

func (*subnetRouter) Close() {}
