//go:build !linux || moat_portable

package lb

import (
	"log/slog"
	"net/netip"
)

// subnetRouter stands in where moat lb does not add routes: an API-made subnet's block outside
// 127.0.0.0/8 is never made local, and, as moat lb did not try, the port check refuses its
// addresses as any other the host does not have.
type subnetRouter struct{}

func newSubnetRouter(*slog.Logger) *subnetRouter { return &subnetRouter{} }

func (*subnetRouter) Sync([]netip.Prefix) {}

func (*subnetRouter) Why(netip.Addr) error { return nil }

func (*subnetRouter) Close() {}
