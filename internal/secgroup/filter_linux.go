//go:build linux && !moat_portable

package secgroup

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// SocketFilters is true where this build attaches socket filters (Linux): a
// denied client's SYN or datagram is dropped in the kernel. filter_other.go
// is the stand-in for systems without SO_ATTACH_FILTER.
const SocketFilters = true

// ErrMultipathTCP is returned by AttachFilter for an MPTCP socket, which
// refuses socket filters. Go creates MPTCP listeners by default since Go 1.24;
// a listener that needs a filter must be created from a net.ListenConfig with
// SetMultipathTCP(false). The connections it accepts are plain TCP either way
// unless the client speaks MPTCP.
var ErrMultipathTCP = errors.New("socket filters need a plain TCP socket, not MPTCP: create the listener with net.ListenConfig.SetMultipathTCP(false)")

// AttachFilter attaches prog to the socket behind conn (SO_ATTACH_FILTER),
// atomically replacing any filter already there: regenerate and re-attach on
// every rule change, and no packet ever sees the socket without a filter.
//
// An accepted TCP connection inherits the filter its listener had when the
// handshake completed (re-attaching the listener's filter later does not
// change that copy). The data plane must call DetachFilter on every accepted
// connection: admission is judged once per flow, as AWS's stateful groups do,
// but a filter left on the connection goes on judging every segment it
// receives. It costs time on the data path, holds socket memory, and would
// stall the flow as soon as a revoked policy's filter reached it. Detached,
// an established flow survives any later rule change.
//
// An error wrapping ENOMEM means the kernel would not charge the program to
// the socket (net.core.optmem_max, which must hold the old and the new filter
// while one replaces the other); AttachPolicy handles that case.
func AttachFilter(conn syscall.RawConn, prog []bpf.RawInstruction) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("attach socket filter: %d instructions, want 1 to %d", len(prog), maxInsns)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	var serr error
	var proto int
	if err := conn.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
		if errors.Is(serr, unix.EOPNOTSUPP) {
			proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
		}
	}); err != nil {
		return fmt.Errorf("attach socket filter: %w", err)
	}
	switch {
	case serr == nil:
		return nil
	case proto == unix.IPPROTO_MPTCP:
		return ErrMultipathTCP
	case errors.Is(serr, unix.ENOMEM):
		return fmt.Errorf("attach socket filter of %d instructions (over net.core.optmem_max?): %w", len(prog), serr)
	}
	return fmt.Errorf("attach socket filter of %d instructions: %w", len(prog), serr)
}

// DetachFilter removes the socket filter from the socket behind conn
// (SO_DETACH_FILTER). Detaching a socket that has none is not an error, so
// the data plane can call it on every accepted connection whether or not its
// listener had a filter.
func DetachFilter(conn syscall.RawConn) error {
	var serr error
	if err := conn.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	}); err != nil {
		return fmt.Errorf("detach socket filter: %w", err)
	}
	if serr != nil && !errors.Is(serr, unix.ENOENT) {
		return fmt.Errorf("detach socket filter: %w", serr)
	}
	return nil
}

// AttachPolicy is the usual way to use the functions above: it reads the
// socket's address family, compiles p with SocketFilter and attaches the
// result, and reports ok=true when the socket now enforces p.
//
// When the program does not fit it returns ok=false with the socket left
// without any filter, so that a stale filter cannot keep dropping clients the
// new rules admit; the caller then enforces p by accept-and-reset. "Does not
// fit" is ok=false from SocketFilter, or ENOMEM from the kernel, in which case
// the old filter is detached and the attach retried once, because replacing
// a filter needs room for both. Other errors (ErrMultipathTCP, a closed
// socket) are returned as they are.
func AttachPolicy(conn syscall.RawConn, p *Policy) (ok bool, err error) {
	var family int
	var serr error
	if err := conn.Control(func(fd uintptr) {
		family, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return false, fmt.Errorf("socket family: %w", err)
	}
	if serr != nil {
		return false, fmt.Errorf("socket family: %w", serr)
	}
	prog, ok, err := SocketFilter(p, family)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, DetachFilter(conn)
	}
	err = AttachFilter(conn, prog)
	if !errors.Is(err, unix.ENOMEM) {
		return err == nil, err
	}
	if err := DetachFilter(conn); err != nil {
		return false, err
	}
	err = AttachFilter(conn, prog)
	if errors.Is(err, unix.ENOMEM) {
		return false, nil
	}
	return err == nil, err
}
