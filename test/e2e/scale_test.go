package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTenThousandConnections holds 10,000 concurrent TCP connections through one listener of a
// moat lb process, then completes an exchange on every one.
//
// The kernel fast path carries the flows (moat lb runs with --fast-path=kernel): a userspace
// proxy would need two sockets per flow, past the open-file hard limit of small machines, while
// the kernel needs none. Without CAP_NET_ADMIN the test is skipped.
func TestTenThousandConnections(t *testing.T) {
	const total, concurrency = 10000, 128
	if os.Geteuid() != 0 {
		t.Skip("the kernel fast path needs root (CAP_NET_ADMIN)")
	}
	// This process holds every client socket; Go raised its soft limit to the hard one.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < total+1000 {
		t.Fatalf("open-file limit %d: this test needs %d", lim.Cur, total+1000)
	}
	p := startLB(t, t.TempDir(), "--fast-path=kernel")
	backendPort := startEchoServer(t, "127.1.0.50:0")
	st := createStack(t, p, "scale", backendPort, freePort(t), "127.0.0.0/24", false)

	waitServing(t, "127.0.0.2", st.front)

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
	// All of them are held by the kernel, none by moat lb's sockets.
	waitFor(t, 10*time.Second, "moat lb to count every flow as active", func() bool {
		return metricValue(t, p, "moat_dataplane_active_flows") == total
	})
	if fds := metricValue(t, p, "process_open_fds"); fds > 1000 {
		t.Errorf("moat lb holds %v open files with %d flows: the flows are not in the kernel", fds, total)
	}

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
	cmd.SysProcAttr = dieWithTest()
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

// metricValue sums the samples of one metric on moat lb's /metrics, of the series whose labels
// include every one of labels (each written as on the page: protocol="udp").
func metricValue(t *testing.T, p *lbProcess, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(p.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return metricSum(t, resp.Body, name, labels...)
}

// metricSum sums the samples of one metric in a Prometheus text exposition, of the series whose
// labels include every one of labels.
func metricSum(t *testing.T, metrics io.Reader, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(metrics)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(rest, l) }) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}
