//go:build linux && !moat_portable

package node

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// markedDialer marks every socket the agent dials, its DNS lookups' included, with mark
// (SO_MARK, which needs CAP_NET_ADMIN, as the firewall does).
func markedDialer(mark uint32) func(*net.Dialer) {
	control := func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) }); err != nil {
			return err
		}
		return serr
	}
	dns := &net.Dialer{Control: control}
	return func(d *net.Dialer) {
		d.Control = control
		d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			return dns.DialContext(ctx, network, address)
		}}
	}
}
