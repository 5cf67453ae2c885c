//go:build linux

// Package netnstest runs a test in a network namespace of its own, so that the addresses, routes
// and rules it makes touch nothing else on the host.
package netnstest

import (
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Enter runs the calling test again, alone, in a new network namespace with loopback up (the test
// binary under ip netns exec, with args after its own flags: the package's flags the inner run must
// see too). It returns true inside the namespace, where the test goes on; outside it reports the
// inner run and returns false. Without root the test is skipped.
func Enter(t *testing.T, args ...string) bool {
	t.Helper()
	if os.Getenv("MOAT_TEST_NETNS") == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) and network namespaces")
	}
	// At most 15 characters: the process and a hash of the test's name, apart from other tests'.
	ns := fmt.Sprintf("mt%d-%04x", os.Getpid()%100000, crc32.ChecksumIEEE([]byte(t.Name()))&0xffff)
	for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	run := []string{"netns", "exec", ns, os.Args[0], "-test.run", "^" + t.Name() + "$", "-test.v", "-test.count=1"}
	if testing.Short() {
		run = append(run, "-test.short")
	}
	cmd := exec.Command("ip", append(run, args...)...)
	cmd.Env = append(os.Environ(), "MOAT_TEST_NETNS="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in network namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("the test failed in its network namespace: %v", err)
	}
	return false
}

// Do runs fn on a thread in network namespace ns (a name under /var/run/netns; "": fn runs as
// is), so that the sockets fn opens live there. The thread returns to its own namespace before it serves other
// goroutines, and never ends: the kernel kills a child started with Pdeathsig when the thread
// that forked it ends, whichever goroutine that was.
func Do(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	runtime.LockOSThread()
	home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer home.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	fnErr := fn()
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stuck in ns, the thread must serve no one else: it stays locked until the program ends.
		panic(fmt.Sprintf("return to the thread's own network namespace: %v", err))
	}
	runtime.UnlockOSThread()
	return fnErr
}
