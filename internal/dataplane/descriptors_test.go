//go:build linux

package dataplane

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// descriptorChild is the environment variable that makes TestAcceptOutOfDescriptors the engine's
// process: "<listener address:port> <target address:port> <health check port>".
const descriptorChild = "MOAT_TEST_DESCRIPTORS_CHILD"

// TestAcceptOutOfDescriptors: when the process runs out of file descriptors, the listener stops
// accepting (its connections wait in the kernel's queue) instead of failing or spinning, and
// takes them as soon as descriptors are free again. The engine runs in a child process whose
// descriptor limit is lowered, since the limit is the whole process's.
func TestAcceptOutOfDescriptors(t *testing.T) {
	if spec := os.Getenv(descriptorChild); spec != "" {
		runDescriptorChild(t, spec)
		return
	}
	if *kernelTests {
		t.Skip("the kernel fast path carries the flows: no accept to run out")
	}
	t.Parallel()
	n := newNet()
	hcPort := freePort(t, n.inA(0))
	target := newBackend(t, "target", n.inA(0), "zone-a", hcPort)
	front := ap(n.lbA(), freePort(t, n.lbA()))

	var stderr syncBuffer
	cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", descriptorChild, front, target.echo.addr, hcPort))
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("engine process: %v\n%s", err, stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	expect := func(line string) {
		t.Helper()
		for lines.Scan() {
			if lines.Text() == line {
				return
			}
		}
		t.Fatalf("the engine process did not say %q (its output is in the failure below)\n%s", line, stderr.String())
	}
	expect("listening")
	// The first health check has run, and its socket is closing: from now on each flow holds
	// exactly two of the child's descriptors.
	waitFor(t, longWait, "the first health check", func() bool { return len(target.hc.records()) > 0 })
	fmt.Fprintln(stdin, "limit")
	expect("limited")

	type flow struct {
		c  *net.TCPConn
		r  *bufio.Reader
		ok bool
	}
	var served, waiting []flow
	for range descriptorFlows + 4 {
		c, err := dialFrom(client2, front, longWait)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		f := flow{c: c, r: bufio.NewReader(c)}
		c.SetReadDeadline(time.Now().Add(time.Second))
		greeting, err := f.r.ReadString('\n')
		switch {
		case err == nil && greeting == "target\n":
			served = append(served, f)
		case isTimeout(err):
			waiting = append(waiting, f)
		default:
			t.Fatalf("flow %d: %q, %v", len(served)+len(waiting), greeting, err)
		}
	}
	if len(waiting) == 0 {
		t.Fatalf("all %d flows were served: the engine did not run out of descriptors", len(served))
	}
	waitFor(t, longWait, "the engine to log the failed accept", func() bool {
		return strings.Contains(stderr.String(), "accept failed, retrying")
	})
	// Paused, the engine waits (0-10 ms of CPU in the window here): a listener left in the epoll
	// set, level-triggered, with its connection unaccepted would wake the loop for nothing, a
	// core's worth (about 400 ms, its warnings slowed by the pipe to this process).
	before := cpuTime(t, cmd.Process.Pid)
	time.Sleep(time.Second) // a window to measure, not a wait for an event
	if spent := cpuTime(t, cmd.Process.Pid) - before; spent > 100*time.Millisecond {
		t.Errorf("the engine spent %v of CPU in a second out of descriptors", spent)
	}
	for _, f := range served {
		f.c.Close()
	}
	for i, f := range waiting {
		f.c.SetReadDeadline(time.Now().Add(longWait))
		if greeting, err := f.r.ReadString('\n'); err != nil || greeting != "target\n" {
			t.Fatalf("waiting flow %d after descriptors were freed: %q, %v", i, greeting, err)
		}
		if _, err := f.c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		if echo, err := f.r.ReadString('\n'); err != nil || echo != "ping\n" {
			t.Fatalf("waiting flow %d's echo: %q, %v", i, echo, err)
		}
	}
}

// descriptorFlows is how many flows the child's descriptors are limited to.
const descriptorFlows = 8

// runDescriptorChild is the engine's process of TestAcceptOutOfDescriptors: it serves one
// listener and, when the test says so on stdin, limits its descriptors to those it holds and
// two for each of descriptorFlows flows (the accepted socket and the target's).
func runDescriptorChild(t *testing.T, spec string) {
	var frontS, targetS string
	var hcPort uint16
	if _, err := fmt.Sscan(spec, &frontS, &targetS, &hcPort); err != nil {
		t.Fatalf("%s=%q: %v", descriptorChild, spec, err)
	}
	front, target := netip.MustParseAddrPort(frontS), netip.MustParseAddrPort(targetS)
	h := newHarness(t)
	tg := group("tg", hcPort, tgTarget("target", target, "zone-a"))
	tg.HealthCheck.Interval = 300 * time.Second // no check while the descriptors run out
	h.apply(LoadBalancer{ID: "lb", Zones: []Zone{{"zone-a", front.Addr()}}, Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: front.Port(), TargetGroup: tg,
	}}})
	fmt.Println("listening")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "limit" {
		return
	}
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Fatal(err)
	}
	restore := limit
	// A new descriptor takes the lowest free number below the limit: the limit goes where the
	// free numbers below it are two for each flow.
	free := 0
	for fd := uintptr(0); free < 2*descriptorFlows; fd++ {
		if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFD, 0); errno == syscall.EBADF {
			free++
		}
		limit.Cur = uint64(fd + 1)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &restore)
	fmt.Println("limited")
	for in.Scan() {
	}
}

// cpuTime is the CPU time process pid has used (user and system, /proc/<pid>/stat).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's closing parenthesis, from the third (state) on: utime and
	// stime are the 14th and 15th, in clock ticks of 1/100 s.
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
