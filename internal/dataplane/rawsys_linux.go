//go:build linux && !moat_portable

package dataplane

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loops' system calls, made without telling the runtime (syscall.RawSyscall). All but
// the wait (sysEpollWait, see eventLoop.run) are on nonblocking descriptors and return at once
// (so never with EINTR), but on a busy host a connect or write runs the network's softirq work
// inline, tens of microseconds, and a call the runtime knows of lasting that long has sysmon
// take the processor away from the loop's thread and hand it back, with context switches and
// sysmon's own wake-ups every 20 µs (a fifth of the CPU per connection, measured).

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func sysRead(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(r), errnoErr(e)
}

func sysWrite(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(r), errnoErr(e)
}

func sysClose(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func sysShutdownWrite(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
}

func sysSetsockopt(fd, level, opt int, v unsafe.Pointer, size uintptr) error {
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(v), size, 0)
	return errnoErr(e)
}

func sysSetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	return sysSetsockopt(fd, level, opt, unsafe.Pointer(&v), 4)
}

// sysReset closes fd with an RST instead of a FIN (SO_LINGER 0).
func sysReset(fd int) {
	l := unix.Linger{Onoff: 1, Linger: 0}
	_ = sysSetsockopt(fd, unix.SOL_SOCKET, unix.SO_LINGER, unsafe.Pointer(&l), unix.SizeofLinger)
	sysClose(fd)
}

func sysSocket(family int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	return int(r), errnoErr(e)
}

// sockaddr is a socket address in the kernel's layout, IPv4 or IPv6.
type sockaddr struct {
	raw  unix.RawSockaddrInet6 // large enough for either
	size uintptr
}

func sockaddrFrom(ap netip.AddrPort) (family int, sa sockaddr) {
	a := ap.Addr()
	port := (*[2]byte)(unsafe.Pointer(&sa.raw.Port))
	port[0], port[1] = byte(ap.Port()>>8), byte(ap.Port())
	if a.Is4() || a.Is4In6() {
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		in4.Family = unix.AF_INET
		in4.Addr = a.Unmap().As4()
		sa.size = unix.SizeofSockaddrInet4
		return unix.AF_INET, sa
	}
	sa.raw.Family = unix.AF_INET6
	sa.raw.Addr = a.As16()
	sa.size = unix.SizeofSockaddrInet6
	return unix.AF_INET6, sa
}

func sysBind(fd int, sa *sockaddr) error {
	_, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa.raw)), sa.size)
	return errnoErr(e)
}

func sysConnect(fd int, sa *sockaddr) error {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa.raw)), sa.size)
	return errnoErr(e)
}

// sysAccept4 accepts a connection as a nonblocking descriptor, with its peer's address.
func sysAccept4(fd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	var addr netip.Addr
	var port [2]byte
	switch rsa.Addr.Family {
	case unix.AF_INET:
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		addr, port = netip.AddrFrom4(in4.Addr), *(*[2]byte)(unsafe.Pointer(&in4.Port))
	case unix.AF_INET6:
		in6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		addr, port = netip.AddrFrom16(in6.Addr).Unmap(), *(*[2]byte)(unsafe.Pointer(&in6.Port))
	}
	return int(r), netip.AddrPortFrom(addr, uint16(port[0])<<8|uint16(port[1])), nil
}

func sysSplice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return int(r), errnoErr(e)
}

func sysEpollAdd(epfd, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

// sysEpollWait waits up to msec (-1: for ever) for ready events.
func sysEpollWait(epfd int, events []unix.EpollEvent, msec int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), uintptr(msec), 0, 0)
	return int(r), errnoErr(e)
}
