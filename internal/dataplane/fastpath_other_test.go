//go:build !linux || moat_portable

package dataplane

import (
	"net/netip"
	"testing"
)

// kernelCarries: there is no kernel fast path off Linux.
func kernelCarries(testing.TB, *Userspace, netip.AddrPort, uint8) bool { return false }
