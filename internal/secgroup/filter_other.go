//go:build !linux || moat_portable

package secgroup

import (
	"errors"
	"syscall"

	"golang.org/x/net/bpf"
)

// The stand-in for systems without socket filters (macOS, the BSDs), also
// built on Linux with the moat_portable tag so that Linux tests run this path.
// There is no SO_ATTACH_FILTER here, so nothing judges a client before the
// kernel completes its handshake: the data plane enforces every policy after
// accept (Policy.Allows), and a denied TCP client's connection is accepted and
// reset (ECONNRESET) instead of timing out, while a denied UDP datagram is
// read and dropped in userspace. Either way its bytes never reach a target.

// SocketFilters is false: this build cannot attach socket filters.
const SocketFilters = false

// ErrNoSocketFilters is returned by AttachFilter on a system without socket
// filters.
var ErrNoSocketFilters = errors.New("socket filters need Linux (SO_ATTACH_FILTER): this system has none")

// AttachFilter fails with ErrNoSocketFilters.
func AttachFilter(syscall.RawConn, []bpf.RawInstruction) error { return ErrNoSocketFilters }

// DetachFilter has nothing to detach and succeeds.
func DetachFilter(syscall.RawConn) error { return nil }

// AttachPolicy attaches nothing and reports ok=false, as for a policy too
// large for a filter: the caller enforces p by accept-and-reset.
func AttachPolicy(syscall.RawConn, *Policy) (ok bool, err error) { return false, nil }
