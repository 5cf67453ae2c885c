//go:build !linux || moat_portable

package dataplane

import "syscall"

// markSocket: socket marks are Linux's; nothing reads them elsewhere.
func markSocket(syscall.RawConn, uint32) {}
