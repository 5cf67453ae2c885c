package e2e

import "syscall"

// dieWithTest makes a process the tests start die with the test binary (Pdeathsig), so a crashed
// or timed-out run leaves nothing behind.
func dieWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
