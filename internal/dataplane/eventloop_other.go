//go:build !linux || moat_portable

package dataplane

import "syscall"

// eventLoops exist on Linux only (see eventloop_linux.go): elsewhere every TCP flow has
// goroutines of its own.
type eventLoops struct{}

func newEventLoops(*Userspace) (*eventLoops, error) { return nil, nil }

func (*eventLoops) listen(*tcpSocket, func(syscall.RawConn) error) error {
	return syscall.ENOTSUP // never called: the engine has no loops here
}

func (*eventLoops) stop() {}
