package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTenThousandConnections holds 10,000 concurrent TCP connections through one listener of a
// moat lb process, then completes an exchange on every one. It is a long test: make test-long
// runs it (it is skipped with -short).
func TestTenThousandConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("long test: run without -short (make test-long)")
	}
	const want, concurrency = 10000, 128
	// A userspace proxy holds two sockets per flow. moat lb raises its open-file limit as far as
	// it may; where the hard limit is below what 10,000 flows need (and the process lacks
	// CAP_SYS_RESOURCE to lift it), the test holds as many as fit and says so.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	total := want
	if fit := int(lim.Max-200) / 2; fit < total {
		total = fit
		t.Logf("the hard open-file limit is %d: holding %d connections, not %d (the kernel fast path will lift this)", lim.Max, total, want)
	}
	p := startLB(t, t.TempDir())
	backendPort := startEchoServer(t, "127.1.0.50:0")
	st := createStack(t, p, "scale", backendPort, freePort(t), "127.0.0.0/24", false)

	conns := make([]net.Conn, total)
	start := time.Now()
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	fail := func(err error) {
		failed.Add(1)
		once.Do(func() { firstErr = err })
	}
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Spread clients over 200 source addresses, as many clients would be.
			c, _, err := dialFrom(fmt.Sprintf("127.0.0.%d", 2+i%200), st.front, 30*time.Second)
			if err != nil {
				fail(err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d connections failed; first: %v\nmoat lb:\n%s\n%s", n, total, firstErr, lastBytes(p.stderr.String(), 3000), dataPlaneMetrics(t, p))
	}
	t.Logf("%d connections open and greeted in %v", total, time.Since(start).Round(time.Millisecond))

	// Every connection is still there: each completes an exchange now, with all of them held.
	for i, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			want := fmt.Sprintf("ping %d\n", i)
			if _, err := c.Write([]byte(want)); err != nil {
				fail(err)
				return
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != want {
				fail(fmt.Errorf("echo %q, %v", got, err))
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d exchanges failed; first: %v", n, total, firstErr)
	}
	t.Logf("all %d exchanges completed in %v", total, time.Since(start).Round(time.Millisecond))
}

// startEchoServer runs the echo backend as its own process, so its sockets do not count against
// this process's open-file limit, and returns its port.
func startEchoServer(t *testing.T, addr string) int {
	t.Helper()
	cmd := exec.Command(echoBin, addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("echoserver: %v", err)
	}
	_, port, err := net.SplitHostPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// dataPlaneMetrics returns moat lb's data plane metrics, for failure messages.
func dataPlaneMetrics(t *testing.T, p *lbProcess) string {
	resp, err := http.Get(p.Metrics + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "moat_dataplane") || strings.HasPrefix(line, "process_open_fds") || strings.HasPrefix(line, "process_max_fds") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
