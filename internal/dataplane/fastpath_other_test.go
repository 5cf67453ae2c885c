//go:build !linux || moat_portable

package dataplane

import "testing"

// kernelCarries: there is no kernel fast path off Linux.
func kernelCarries(testing.TB, *Userspace, *client) bool { return false }
