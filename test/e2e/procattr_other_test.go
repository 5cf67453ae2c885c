//go:build !linux

package e2e

import "syscall"

// dieWithTest has no Pdeathsig to ask for here: the tests' cleanups stop what they start, but a
// test binary that is killed can leave its processes running.
func dieWithTest() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
