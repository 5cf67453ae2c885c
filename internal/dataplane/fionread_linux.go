package dataplane

import "golang.org/x/sys/unix"

// fionread is the ioctl that reads how many bytes a socket has queued for
// reading (SIOCINQ, Linux's FIONREAD).
const fionread = unix.SIOCINQ
