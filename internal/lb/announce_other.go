//go:build !linux || moat_portable

package lb

import (
	"errors"
	"log/slog"
	"net/netip"
)

// announcer stands in where moat lb cannot put addresses on interfaces: --announce-interface is
// refused.
type announcer struct{}

func newAnnouncer(name string, _ *slog.Logger) (*announcer, error) {
	if name != "" {
		return nil, errors.New("--announce-interface: only on Linux")
	}
	return nil, nil
}

func (*announcer) covers(netip.Addr) bool               { return false }
func (*announcer) add(map[netip.Addr]bool) []netip.Addr { return nil }
func (*announcer) removeExcept(map[netip.Addr]bool)     {}
func (*announcer) announce([]netip.Addr)                {}
