//go:build linux && !moat_portable

package dataplane

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// controlBindNoPort sets IP_BIND_ADDRESS_NO_PORT on an outgoing TCP socket
// that binds a source address (the zone address, or the client's for client
// IP preservation): the kernel then picks the source port at connect time,
// knowing the destination, so each (source, target) pair gets its own ~28k
// ports instead of all targets sharing one source address's ports.
func controlBindNoPort(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
}

// socketDrops reads the socket's drop counter (SO_MEMINFO, SK_MEMINFO_DROPS):
// on a listening socket, mostly the packets its filter rejected.
func socketDrops(rc syscall.RawConn) (uint32, bool) {
	var m [unix.SK_MEMINFO_VARS]uint32
	size := uint32(len(m) * 4)
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&m[0])), uintptr(unsafe.Pointer(&size)), 0)
	}); err != nil || errno != 0 {
		return 0, false
	}
	return m[unix.SK_MEMINFO_DROPS], true
}
