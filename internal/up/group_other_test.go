//go:build !linux || moat_portable

package up

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The watchdog kills the groups still listed when its pipe ends, and leaves alone those released.
func TestWatchdogKillsOnlyListedGroups(t *testing.T) {
	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		return cmd
	}
	listed, released := start(), start()
	runWatchdog(strings.NewReader("+" + strconv.Itoa(listed.Process.Pid) + "\n+" + strconv.Itoa(released.Process.Pid) +
		"\n-" + strconv.Itoa(released.Process.Pid) + "\ngarbage\n+1\n"))

	waited := make(chan error, 1)
	go func() { waited <- listed.Wait() }()
	select {
	case err := <-waited:
		if ws, ok := listed.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the listed child ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listed child still runs 10 s after the watchdog's pipe ended")
	}
	if err := syscall.Kill(released.Process.Pid, 0); err != nil {
		t.Errorf("the released child is gone (%v); the watchdog must leave it alone", err)
	}
	_ = syscall.Kill(-released.Process.Pid, syscall.SIGKILL)
	_ = released.Wait()
}
