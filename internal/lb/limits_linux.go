package lb

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// raiseFileLimit lets moat lb hold many flows: every proxied TCP flow needs two descriptors. The
// soft limit goes up to the hard one; with the privilege to do so, both go up to the kernel's
// per-process maximum (fs.nr_open).
func raiseFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if data, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if max, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); err == nil && max > lim.Max {
			raised := unix.Rlimit{Cur: max, Max: max}
			if unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
				return max, nil
			}
		}
	}
	lim.Cur = lim.Max
	return lim.Cur, unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
}
