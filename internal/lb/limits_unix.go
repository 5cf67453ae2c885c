//go:build unix

package lb

import "golang.org/x/sys/unix"

// openFileLimit is the soft limit on open files this process runs with.
func openFileLimit() (uint64, error) {
	var lim unix.Rlimit
	err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	return lim.Cur, err
}
