// Package lockfile makes one process at a time the owner of a directory (moat up's state dir,
// moat node's data dir): an exclusive flock on a file in it, held until released or until the
// process ends, however it ends. Ownership never rests on a PID being alive.
package lockfile

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrHeld is returned when another process holds the lock.
var ErrHeld = errors.New("held by another process")

// Acquire takes the lock on path (created 0600 if missing) without waiting.
func Acquire(path string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, ErrHeld)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
