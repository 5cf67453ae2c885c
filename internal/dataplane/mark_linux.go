//go:build linux && !moat_portable

package dataplane

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// markSocket gives a socket the engine's mark (SO_MARK), so that the flows
// and health checks it carries are recognised as moat lb's (see nftutil's
// mark layout): the instance firewall admits them. Setting it needs
// CAP_NET_ADMIN; without it nothing enforces instance groups here either, so
// a refusal is ignored.
func markSocket(c syscall.RawConn, mark uint32) {
	_ = c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	})
}
