//go:build !linux

package dataplane

// fionread is the ioctl that reads how many bytes a socket has queued for
// reading: FIONREAD, _IOR('f', 127, int) on macOS and the BSDs, which
// golang.org/x/sys/unix does not export there.
const fionread = 0x4004667f
