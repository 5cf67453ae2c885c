//go:build linux && !moat_portable

package up

import (
	"os/exec"
	"syscall"
)

// startGroup starts cmd as the leader of a process group of its own, so that Ctrl-C in the
// terminal reaches moat up only, which stops its children in order. On Linux the child dies with
// moat up through Pdeathsig: the kernel sends it SIGKILL when moat up ends, kill -9 included.
// release has nothing to do here; call it once the child has been waited for.
func startGroup(cmd *exec.Cmd) (release func(), err error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {}, nil
}

// MaybeRunWatchdog returns at once: on Linux children die with moat up by Pdeathsig, and moat up
// starts no watchdog (see group_other.go for systems without Pdeathsig).
func MaybeRunWatchdog() {}
