//go:build linux

// Command lbbench measures moat lb's data plane side by side with a direct connection, HAProxy
// (TCP mode, as configured by default and splicing) and nginx's stream module (UDP) in one run,
// against alike backends: throughput of one stream, connections per second, request/response
// latency (p50, p99) and UDP datagrams per second, with the CPU seconds each proxy spent. Each path's client, proxy and
// backends sit in three network namespaces of their own that hack/bench-lb.sh creates (see
// lab.go). With -firewall it measures the instance firewall instead: direct connections with
// enforcement off and on (hack/bench-firewall.sh). It is Linux's only: it reads /proc for CPU
// time and pins processes with taskset.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatlb/moat/internal/netnstest"
)

// The addresses of the firewall bench, on loopback; the lab's are in lab.go.
var (
	backendIP = "127.1.0.60" // in subnet a of moat's default inventory
	clientIP  = "127.0.0.2"
)

func main() {
	moat := flag.String("moat", "bin/moat", "the moat binary")
	baseline := flag.String("baseline", "", "a second moat binary (e.g. built from main), measured in the same run as the paths base and base-us")
	haproxy := flag.String("haproxy", "haproxy", "the haproxy binary (empty: skip HAProxy)")
	nginx := flag.String("nginx", "nginx", "the nginx binary, with the stream module installed (empty: skip nginx)")
	proxyCPU := flag.String("proxy-cpus", "", "CPU list to pin the proxies to with taskset (e.g. 1)")
	size := flag.Int64("bytes", 2<<30, "bytes sent in the throughput test")
	duration := flag.Duration("duration", 5*time.Second, "length of the connections-per-second and UDP tests")
	requests := flag.Int("requests", 20000, "request/response round trips in the latency test")
	settle := flag.Duration("settle", 2*time.Second, "how long the paths run before they are measured, so that a proxy's start-up work (its first health checks, its collector's first cycles) is not measured")
	reps := flag.Int("reps", 3, "rounds: each path runs each test once per round; the median is reported (odd is best)")
	labs := flag.String("labs", "", "prefix of the labs' network namespaces: <prefix><path>-c, -l and -t, each path's client, proxies' host and target (hack/bench-lb.sh makes them)")
	clientNS := flag.String("client-ns", "", "with -firewall: network namespace of the client host (hack/bench-firewall.sh makes it)")
	fw := flag.Bool("firewall", false, "measure the instance firewall: direct connections to an instance with enforcement off and on (root, in a network namespace of its own; with -client-ns, the client dials from there over a link, and the instance is -instance-ip)")
	instanceIP := flag.String("instance-ip", backendIP, "with -firewall -client-ns: the instance's address, on the link to the client")
	// The lab runs lbbench itself in the client's and the target's namespaces for these.
	test := flag.String("test", "", "internal: run one client test (throughput, conns, latency, udp) against -addr and print its result")
	addr := flag.String("addr", "", "internal: the address -test measures")
	turns := flag.String("turns", "", "internal: run -test (latency, throughput or conns), taking turns between these NETNS=ADDR, and print their results")
	serveAt := flag.String("serve", "", "internal: serve the backends on this IP until killed")
	connWorkerAddr := flag.String("conn-worker", "", "internal: open connections to this address for each duration read from stdin (see connsTurns)")
	tests := flag.String("tests", "", "comma-separated tests to run (throughput, conns, latency, udp); empty: all")
	paths := flag.String("paths", "", "comma-separated paths to measure ("+strings.Join(pathNames, ", ")+"; base and base-us need -baseline); empty: all")
	flag.Parse()
	log.SetFlags(0)
	if *fw && *clientNS != "" {
		backendIP = *instanceIP
	}
	opts := testOpts{size: *size, duration: *duration, requests: *requests, settle: *settle, tests: list(*tests)}
	for _, p := range list(*paths) {
		if !slices.Contains(pathNames, p) || strings.HasPrefix(p, "base") && *baseline == "" {
			log.Fatalf("lbbench: -paths: no path %q (%s; base and base-us need -baseline)", p, strings.Join(pathNames, ", "))
		}
	}
	for _, t := range opts.tests {
		if !slices.Contains(testNames, t) {
			log.Fatalf("lbbench: -tests: no test %q (%s)", t, strings.Join(testNames, ", "))
		}
	}
	switch {
	case *fw:
		benchFirewall(opts, *reps, *clientNS)
	case *turns != "":
		clientIP = labClientIP
		var to []hostAddr
		for _, t := range list(*turns) {
			ns, a, _ := strings.Cut(t, "=")
			to = append(to, hostAddr{ns: ns, addr: a})
		}
		switch *test {
		case "latency":
			check(json.NewEncoder(os.Stdout).Encode(latencyTurns(to, *requests)))
		case "throughput":
			check(json.NewEncoder(os.Stdout).Encode(throughputTurns(to, *size)))
		case "conns":
			check(json.NewEncoder(os.Stdout).Encode(connsTurns(to, *duration)))
		default:
			log.Fatalf("lbbench: -turns: -test %q takes no turns", *test)
		}
	case *test != "":
		clientIP = labClientIP
		check(json.NewEncoder(os.Stdout).Encode(runTest(*test, *addr, opts)))
	case *connWorkerAddr != "":
		clientIP = labClientIP
		connWorker(*connWorkerAddr)
	case *serveAt != "":
		backendIP = *serveAt
		serve(strconv.Itoa(sinkPort), sink)
		serve(strconv.Itoa(echoPort), echo)
		serveUDPEcho(strconv.Itoa(udpPort))
		select {}
	case *labs == "":
		log.Fatal("lbbench: -labs is needed (hack/bench-lb.sh makes them), or -firewall")
	default:
		benchLab(lab{prefix: *labs, moat: *moat, haproxy: *haproxy, nginx: *nginx, cpus: *proxyCPU, baseline: *baseline, paths: list(*paths)}, opts, *reps)
	}
}

type testOpts struct {
	size     int64
	duration time.Duration
	requests int
	settle   time.Duration // before a path's tests, after its start
	tests    []string      // the tests to run; empty: all
}

// pathNames are the paths the lab can measure.
var pathNames = []string{"direct", "moat", "moat-us", "base", "base-us", "haproxy", "haproxy-splice", "nginx"}

// testNames are the tests a path can run, in the order they run.
var testNames = []string{"throughput", "conns", "latency", "udp"}

func (o testOpts) wants(test string) bool { return len(o.tests) == 0 || slices.Contains(o.tests, test) }

// list splits a comma-separated flag; empty gives none.
func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// result is one test's outcome: a rate (MB/s, conn/s or datagrams/s), or latency percentiles.
type result struct {
	Rate     float64       `json:",omitempty"`
	P50, P99 time.Duration `json:",omitempty"`
}

// format is r as test's figures, for the log.
func (r result) format(test string) string {
	switch test {
	case "throughput":
		return fmt.Sprintf("%.0f MB/s", r.Rate)
	case "conns":
		return fmt.Sprintf("%.0f conn/s", r.Rate)
	case "udp":
		return fmt.Sprintf("%.0f dgram/s", r.Rate)
	}
	return fmt.Sprintf("p50 %v, p99 %v", r.P50, r.P99)
}

func runTest(test, addr string, o testOpts) result {
	switch test {
	case "throughput":
		return result{Rate: throughput(addr, o.size)}
	case "conns":
		return result{Rate: connsPerSecond(addr, o.duration)}
	case "latency":
		p50, p99 := latency(addr, o.requests)
		return result{P50: p50, P99: p99}
	case "udp":
		return result{Rate: udpRate(addr, o.duration)}
	}
	log.Fatalf("lbbench: unknown test %q", test)
	return result{}
}

type target struct {
	name                        string
	sinkAddr, echoAddr, udpAddr string // empty: the path does not serve that protocol
	pid                         int
	metrics                     string // moat lb's metrics address
	mbps, cps, pps              []float64
	p50, p99                    []time.Duration
	cpuPerGB                    []float64
	cpuPerConn                  []float64 // CPU seconds per connection of the connections test
}

// measure runs each test of o's that the path serves once, through run, and records the results.
func (t *target) measure(run func(test, addr string) result, o testOpts) {
	for _, test := range testNames {
		t.measureTest(test, run, o)
	}
}

// measureTest runs test through run, if o wants it and the path serves it, and records the
// result.
func (t *target) measureTest(test string, run func(test, addr string) result, o testOpts) {
	if addr := t.addr(test); o.wants(test) && addr != "" {
		cpu0 := t.cpu()
		r := run(test, addr)
		t.record(test, r, t.cpu()-cpu0, o)
	}
}

// addr is the address that serves test on t's path ("": none).
func (t *target) addr(test string) string {
	switch test {
	case "throughput":
		return t.sinkAddr
	case "conns", "latency":
		return t.echoAddr
	case "udp":
		return t.udpAddr
	}
	return ""
}

// record keeps a test's result, with the CPU seconds t's proxy spent during it.
func (t *target) record(test string, r result, cpu float64, o testOpts) {
	switch test {
	case "throughput":
		t.mbps = append(t.mbps, r.Rate)
		t.cpuPerGB = append(t.cpuPerGB, cpu/(float64(streamBytes(o.size))/1e9))
	case "conns":
		t.cps = append(t.cps, r.Rate)
		t.cpuPerConn = append(t.cpuPerConn, cpu/(r.Rate*o.duration.Seconds()))
	case "latency":
		t.p50 = append(t.p50, r.P50)
		t.p99 = append(t.p99, r.P99)
	case "udp":
		t.pps = append(t.pps, r.Rate)
	}
}

// cpu is the CPU seconds the proxy process has used so far (0 for the direct path).
func (t *target) cpu() float64 {
	if t.pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", t.pid))
	check(err)
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// median is v's median, or NaN for a test the path did not run.
func median[T float64 | time.Duration](v []T) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return float64(s[len(s)/2])
}

// cell formats v, or "-" where the path has no such figure.
func cell(format string, v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func report(ts []*target) {
	fmt.Printf("\n%-15s %14s %12s %10s %12s %10s %10s %14s\n", "path", "throughput", "proxy cpu", "conn/s", "cpu/conn", "p50", "p99", "udp")
	us := func(d float64) string { return cell("%.0f µs", d/1e3) }
	for _, t := range ts {
		cpu, cpuConn := "-", "-"
		if t.pid != 0 {
			cpu = cell("%.2f s/GB", median(t.cpuPerGB))
			cpuConn = cell("%.0f µs", median(t.cpuPerConn)*1e6)
		}
		fmt.Printf("%-15s %14s %12s %10s %12s %10s %10s %14s\n", t.name, cell("%.0f MB/s", median(t.mbps)), cpu, cell("%.0f", median(t.cps)),
			cpuConn, us(median(t.p50)), us(median(t.p99)), cell("%.0f dgram/s", median(t.pps)))
	}
	fmt.Println("(higher is better for throughput, conn/s and udp; lower for latency and cpu)")
}

// ratios prints the median of the per-round ratios of a's figures to b's, for those both have.
// The rounds of all paths are neighbours in time, so this cancels the machine's drift over the
// run better than the ratio of the medians.
func ratios(a, b *target) {
	var out []string
	add := func(name string, x, y []float64) {
		if len(x) == 0 || len(x) != len(y) {
			return
		}
		r := make([]float64, len(x))
		for i := range x {
			r[i] = x[i] / y[i]
		}
		out = append(out, fmt.Sprintf("%s %.2f", name, median(r)))
	}
	secs := func(v []time.Duration) []float64 {
		f := make([]float64, len(v))
		for i, d := range v {
			f[i] = d.Seconds()
		}
		return f
	}
	add("throughput", a.mbps, b.mbps)
	add("conn/s", a.cps, b.cps)
	add("p50", secs(a.p50), secs(b.p50))
	add("p99", secs(a.p99), secs(b.p99))
	add("udp", a.pps, b.pps)
	if a.pid != 0 && b.pid != 0 {
		add("cpu/GB", a.cpuPerGB, b.cpuPerGB)
		add("cpu/conn", a.cpuPerConn, b.cpuPerConn)
	}
	fmt.Printf("%s/%s: %s\n", a.name, b.name, strings.Join(out, ", "))
}

// The backends: a sink that discards, an echo server for latency and connection tests, and a UDP
// echo server.

func serveSink() string {
	return serve("0", sink)
}

// streamChunk is what the throughput test sends at a time: the sink acknowledges each with a
// byte, so that the client can time chunks that take turns between paths.
const streamChunk = 256 << 20

// sink discards what c receives without copying it (splice moves the received pages to
// /dev/null) and acknowledges every streamChunk bytes. The load shares a CPU on this machine:
// a sink that copied, 8 KiB a read, bounded every path's stream with its own CPU, so that the
// test measured the load and not the proxies (with the client and the server on other machines,
// as users have them, the proxies' host bounds it).
func sink(c net.Conn) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	check(err)
	defer null.Close()
	for {
		n, _ := null.ReadFrom(io.LimitReader(c, streamChunk)) // splices from a TCP connection
		if n < streamChunk {
			return
		}
		if _, err := c.Write([]byte{1}); err != nil {
			return
		}
	}
}

func serveEcho() string {
	return serve("0", echo)
}

func echo(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// serve runs handle on every connection to a new backend listener on port, closing the
// connection after, and returns the listener's address.
func serve(port string, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", net.JoinHostPort(backendIP, port))
	check(err)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

// serveUDPEcho answers every datagram on port with itself, from two readers.
func serveUDPEcho(port string) {
	c, err := net.ListenPacket("udp", net.JoinHostPort(backendIP, port))
	check(err)
	for range 2 {
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := c.ReadFrom(buf)
				check(err)
				_, _ = c.WriteTo(buf[:n], from)
			}
		}()
	}
}

func dial(addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// throughput streams size bytes (see throughputTurns) over one connection and returns MB/s.
func throughput(addr string, size int64) float64 {
	return throughputTurns([]hostAddr{{addr: addr}}, size)[0].Rate
}

// streamBytes is what the throughput test sends for size: whole chunks, at least one.
func streamBytes(size int64) int64 {
	return max(1, (size+streamChunk-1)/streamChunk) * streamChunk
}

// throughputTurns streams streamBytes(size) over one connection to each address, a chunk at a
// time, taking turns between them in a new random order each time, so that all are measured
// over the same moments of a noisy machine; each chunk is timed from its first byte sent to the
// sink's acknowledgement. The bytes go 1 MiB at a time from memory with sendfile: no copy, as
// the sink makes none (see sink).
func throughputTurns(to []hostAddr, size int64) []result {
	const write = 1 << 20
	fd, err := unix.MemfdCreate("lbbench-stream", 0)
	check(err)
	data := os.NewFile(uintptr(fd), "lbbench-stream")
	defer data.Close()
	_, err = data.Write(make([]byte, write))
	check(err)
	conns := dialTurns(to)
	defer closeAll(conns)
	elapsed := make([]time.Duration, len(to))
	ack := make([]byte, 1)
	for _, order := range turnOrders(len(to), int(streamBytes(size)/streamChunk)) {
		for _, i := range order {
			c := conns[i].(*net.TCPConn)
			start := time.Now()
			for range streamChunk / write {
				_, err := data.Seek(0, io.SeekStart)
				check(err)
				n, err := c.ReadFrom(data) // sendfile
				check(err)
				if n != write {
					log.Fatalf("lbbench: sent %d bytes of %d", n, write)
				}
			}
			_, err := io.ReadFull(c, ack)
			check(err)
			elapsed[i] += time.Since(start)
		}
	}
	results := make([]result, len(to))
	for i, c := range conns {
		check(c.(*net.TCPConn).CloseWrite())
		results[i] = result{Rate: float64(streamBytes(size)) / 1e6 / elapsed[i].Seconds()}
	}
	return results
}

// connsPerSecond opens connections to addr for d (see connections) and returns the rate.
func connsPerSecond(addr string, d time.Duration) float64 {
	waitServing(addr)
	start := time.Now()
	n := connections(addr, d)
	return float64(n) / time.Since(start).Seconds()
}

// connections opens connections to addr for d from 8 workers, each doing a 1-byte exchange then
// closing with a reset, and returns how many exchanges went well.
func connections(addr string, d time.Duration) int64 {
	var n atomic.Int64
	until := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			b := []byte{'x'}
			for time.Now().Before(until) {
				if exchange(addr, b) {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return n.Load()
}

// connsTurns opens connections to each address for d in all, taking turns of connTurn each, in
// a new random order each time, so that all are measured over the same moments of a noisy
// machine. Each address is dialled by a process of its own in its network namespace (see
// connWorker): goroutines on threads locked into namespaces pay a thread switch for every wait.
func connsTurns(to []hostAddr, d time.Duration) []result {
	self, err := os.Executable()
	check(err)
	type worker struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Scanner
	}
	workers := make([]worker, len(to))
	for i, h := range to {
		cmd := exec.Command(self, "-conn-worker", h.addr)
		if h.ns != "" {
			cmd = exec.Command("ip", "netns", "exec", h.ns, self, "-conn-worker", h.addr)
		}
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		check(err)
		out, err := cmd.StdoutPipe()
		check(err)
		check(cmd.Start())
		workers[i] = worker{cmd, in, bufio.NewScanner(out)}
	}
	counts := make([]int64, len(to))
	elapsed := make([]time.Duration, len(to))
	for _, order := range turnOrders(len(to), max(1, int(d/connTurn))) {
		for _, i := range order {
			w := workers[i]
			start := time.Now()
			_, err := fmt.Fprintln(w.in, connTurn)
			check(err)
			if !w.out.Scan() {
				log.Fatalf("lbbench: the connections worker of %s stopped: %v", to[i].addr, w.out.Err())
			}
			elapsed[i] += time.Since(start)
			n, err := strconv.ParseInt(w.out.Text(), 10, 64)
			check(err)
			counts[i] += n
		}
	}
	results := make([]result, len(to))
	for i, w := range workers {
		check(w.in.Close())
		check(w.cmd.Wait())
		results[i] = result{Rate: float64(counts[i]) / elapsed[i].Seconds()}
	}
	return results
}

// connWorker serves connsTurns: for each duration read from stdin it opens connections to addr
// for that long and prints how many exchanges went well.
func connWorker(addr string) {
	waitServing(addr)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		d, err := time.ParseDuration(in.Text())
		check(err)
		fmt.Println(connections(addr, d))
	}
	check(in.Err())
}

// connTurn is how long the connections test stays with one address at a time.
const connTurn = 250 * time.Millisecond

// exchange connects to addr, sends b, reads its echo and closes with a reset; whether all went
// well.
func exchange(addr string, b []byte) bool {
	c, err := dial(addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetLinger(0)
	if _, err := c.Write(b); err != nil {
		return false
	}
	_, err = io.ReadFull(c, b)
	return err == nil
}

// latency measures round trips of 64 bytes on one connection.
func latency(addr string, n int) (p50, p99 time.Duration) {
	r := latencyTurns([]hostAddr{{addr: addr}}, n)[0]
	return r.P50, r.P99
}

// hostAddr is an address as reached from network namespace ns ("": this process's).
type hostAddr struct{ ns, addr string }

// latencyTurns measures n round trips of 64 bytes on one connection to each address, taking
// turns between them in a new random order each time, so that all are measured over the same
// moments of a noisy machine and none always follows the same other.
func latencyTurns(to []hostAddr, n int) []result {
	conns := dialTurns(to)
	defer closeAll(conns)
	msg := make([]byte, 64)
	samples := make([][]time.Duration, len(to))
	for i := range samples {
		samples[i] = make([]time.Duration, 0, n)
	}
	for _, order := range turnOrders(len(to), n) {
		for _, i := range order {
			start := time.Now()
			_, err := conns[i].Write(msg)
			check(err)
			_, err = io.ReadFull(conns[i], msg)
			check(err)
			samples[i] = append(samples[i], time.Since(start))
		}
	}
	results := make([]result, len(to))
	for i, s := range samples {
		slices.Sort(s)
		results[i] = result{P50: s[n/2], P99: s[n*99/100]}
	}
	return results
}

// dialTurns connects to each address, from its network namespace, once it answers.
func dialTurns(to []hostAddr) []net.Conn {
	conns := make([]net.Conn, len(to))
	for i, h := range to {
		check(netnstest.Do(h.ns, func() (err error) {
			waitServing(h.addr)
			conns[i], err = dial(h.addr)
			return err
		}))
	}
	return conns
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// turnOrders is n turns between as many paths, each in a new random order, so that none always
// follows the same other.
func turnOrders(paths, n int) [][]int {
	orders := make([][]int, n)
	for k := range orders {
		orders[k] = rand.Perm(paths)
	}
	return orders
}

// udpRate is the datagrams per second echoed through addr to 4 flows (client sockets) of 64-byte
// datagrams, each keeping 16 in flight: an answer sends the next, and a pause of 50 ms (a lost
// window) sends a new window, so that loss slows a flow down rather than stopping it.
func udpRate(addr string, d time.Duration) float64 {
	const flows, window = 4, 16
	to, err := net.ResolveUDPAddr("udp", addr)
	check(err)
	conns := make([]*net.UDPConn, flows)
	for i := range conns {
		conns[i], err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(clientIP)}, to)
		check(err)
		defer conns[i].Close()
	}
	// Wait until the path answers (health checks, the kernel's rules).
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, _ = conns[0].Write(buf[:64])
		_ = conns[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := conns[0].Read(buf); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("lbbench: %s does not answer UDP", addr)
		}
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for _, c := range conns {
		wg.Go(func() {
			msg, in := make([]byte, 64), make([]byte, 2048)
			burst := func() {
				for range window {
					_, _ = c.Write(msg)
				}
			}
			burst()
			for time.Now().Before(end) {
				_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := c.Read(in); err != nil {
					burst()
					continue
				}
				n.Add(1)
				_, _ = c.Write(msg)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// The proxies.

// pinned is the command that runs name with args in network namespace ns ("": this one), on
// cpus (with taskset; "": any). Both ip netns exec and taskset exec the program in place, so the
// command's pid is the program's own.
func pinned(ns, cpus string, name string, args ...string) *exec.Cmd {
	if cpus != "" {
		args = append([]string{"-c", cpus, name}, args...)
		name = "taskset"
	}
	if ns != "" {
		args = append([]string{"netns", "exec", ns, name}, args...)
		name = "ip"
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// dialerIn dials from network namespace ns, for HTTP clients and resolvers.
func dialerIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = netnstest.Do(ns, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

func waitServing(addr string) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, err := dial(addr)
		if err == nil {
			c.Close()
			return
		}
	}
	log.Fatalf("lbbench: %s does not answer", addr)
}

func check(err error) {
	if err != nil {
		log.Fatalf("lbbench: %v", err)
	}
}
