//go:build !linux || moat_portable

package dataplane

import "syscall"

// The stand-ins for systems without Linux's socket options (built on Linux too
// with the moat_portable tag).

// controlBindNoPort sets nothing: IP_BIND_ADDRESS_NO_PORT is Linux's. A socket
// that binds a source address gets its port at bind time, so all targets
// share that address's ephemeral ports.
func controlBindNoPort(network, address string, c syscall.RawConn) error { return nil }

// socketDrops reports no reading: there is no SO_MEMINFO drop counter, and no
// socket filter whose drops it would count, so
// moat_dataplane_listener_dropped_packets_total stays 0.
func socketDrops(rc syscall.RawConn) (uint32, bool) { return 0, false }
