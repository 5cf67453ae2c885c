//go:build linux

package dataplane

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pipeBytes is the number of bytes waiting in the process's pipes (FIONREAD
// on every pipe descriptor but stdin, stdout and stderr). Go's splice moves
// socket data through a pipe the net package owns; a userspace copy uses no
// pipe. So while a proxied stream is stalled on a slow receiver, data sitting
// in a pipe of this process proves the kernel is doing the copying.
func pipeBytes(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || !strings.HasPrefix(link, "pipe:") {
			continue
		}
		if n, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err == nil { // TIOCINQ is FIONREAD

			total += n
		}
	}
	return total
}

// stream writes a deterministic pattern and hashes what it wrote.
type stream struct {
	c    *net.TCPConn
	sent int64
	sum  hash.Hash
	buf  []byte
}

func newStream(c *net.TCPConn) *stream {
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7 % 251)
	}
	return &stream{c: c, sum: sha256.New(), buf: buf}
}

// fillUntilStalled writes until the path to the receiver is full: a write
// that makes no progress for 300 ms.
func (s *stream) fillUntilStalled(t testing.TB) {
	t.Helper()
	for {
		s.c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := s.c.Write(s.buf)
		s.sent += int64(n)
		s.sum.Write(s.buf[:n])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.c.SetWriteDeadline(time.Time{})
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if s.sent > 1<<30 {
			t.Fatal("1 GiB written and no stall: is the receiver reading?")
		}
	}
}

func (s *stream) finish(t testing.TB) {
	t.Helper()
	n, err := s.c.Write(s.buf)
	s.sent += int64(n)
	s.sum.Write(s.buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

type received struct {
	n   int64
	sum []byte
}

// stalledSink accepts one stream, reads nothing until release is closed
// (but as many bytes as each nudge asks for), then reads to EOF and reports
// what it got.
func stalledSink(t testing.TB, addr netip.Addr, release <-chan struct{}, nudge <-chan int64, got chan<- received) *server {
	return newServer(t, ap(addr, 0), func(s *server, c *net.TCPConn) {
		h := sha256.New()
		var n int64
		for waiting := true; waiting; {
			select {
			case <-release:
				waiting = false
			case more := <-nudge: // read that much, then stall again
				m, _ := io.CopyN(h, c, more)
				n += m
			case <-time.After(time.Minute):
				waiting = false
			}
		}
		m, _ := io.Copy(h, c)
		got <- received{n + m, h.Sum(nil)}
	})
}

// TestSpliceFastPath proves the proxy's TCP copy runs on splice(2): with the
// target not reading, the proxied stream stalls with its bytes in a kernel
// pipe of this process. The control subtest shows that the probe does not
// find pipe data for a userspace copy (the net package's own fallback), so a
// wrapper that hid *net.TCPConn from ReadFrom would fail this test.
//
// It does not call t.Parallel: it must see this process's pipes alone.
func TestSpliceFastPath(t *testing.T) {
	if *kernelTests {
		t.Skip("the userspace proxy's splice path; with the kernel fast path no flow is spliced")
	}
	t.Run("control: userspace copy leaves no data in pipes", func(t *testing.T) {
		n := newNet()
		release, got := make(chan struct{}), make(chan received, 1)
		sink := stalledSink(t, n.inA(0), release, nil, got)
		relay := newServer(t, ap(n.lbA(), 0), func(s *server, c *net.TCPConn) {
			up, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(sink.addr))
			if err != nil {
				return
			}
			defer up.Close()
			// Wrappers hide the *net.TCPConn: io.Copy falls back to a buffer.
			io.Copy(struct{ io.Writer }{up}, struct{ io.Reader }{c})
			up.CloseWrite()
		})
		c, err := dialFrom(client2, relay.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := newStream(c)
		s.fillUntilStalled(t)
		for range 5 {
			if n := pipeBytes(t); n != 0 {
				t.Fatalf("%d bytes in pipes during a userspace copy: the probe is not specific", n)
			}
			time.Sleep(50 * time.Millisecond) // sampling the stalled state, not synchronising
		}
		close(release)
		s.finish(t)
		if r := <-got; r.n != s.sent {
			t.Fatalf("sink got %d bytes, sent %d", r.n, s.sent)
		}
	})

	t.Run("proxy", func(t *testing.T) {
		n := newNet()
		h := newHarness(t)
		release, nudge, got := make(chan struct{}), make(chan int64), make(chan received, 1)
		sink := stalledSink(t, n.inA(0), release, nudge, got)
		hcPort := freePort(t, n.inA(0))
		acceptServer(t, ap(n.inA(0), hcPort))
		port := freePort(t, n.lbA())
		h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
			ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, tgTarget("sink", sink.addr, "zone-a")),
		}}})
		c, err := dialFrom(client2, ap(n.lbA(), port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := newStream(c)
		var inPipes int
		// On a loaded machine a write can make no progress for a while with the path not yet
		// full (the proxy was not scheduled); writing on until it is full removes that doubt.
		// A stall can also catch the proxy writing a short run through its buffer (runs below
		// spliceMin are not spliced): then the target reads a little, the proxy's write ends,
		// and its next run, the megabytes queued meanwhile, goes by splice.
		waitFor(t, longWait, "the stalled stream's bytes to sit in a splice pipe", func() bool {
			s.fillUntilStalled(t)
			if inPipes = pipeBytes(t); inPipes == 0 {
				t.Logf("stalled after %d bytes with none in a pipe: the target reads 256 KiB", s.sent)
				nudge <- 256 << 10
			}
			return inPipes > 0
		})
		t.Logf("stalled after %d bytes, %d of them in a kernel pipe", s.sent, inPipes)
		close(release)
		s.finish(t)
		r := <-got
		if r.n != s.sent || !bytes.Equal(r.sum, s.sum.Sum(nil)) {
			t.Fatalf("target got %d bytes (sha256 %x), client sent %d (sha256 %x)", r.n, r.sum, s.sent, s.sum.Sum(nil))
		}
		waitFor(t, longWait, "the byte counter", func() bool {
			return h.metric("moat_dataplane_bytes_total", "listener", "l", "direction", "in") == float64(s.sent)
		})
	})
}

// BenchmarkProxyThroughput moves one stream of 1 MiB writes to a sink, once
// directly and once through the proxy, and reports throughput (MB/s) and the
// process's CPU time per GB moved (client, proxy and sink together: compare
// the two sub-benchmarks of one run).
func BenchmarkProxyThroughput(b *testing.B) {
	n := newNet()
	h := newHarness(b)
	got := make(chan int64, 1)
	sink := newServer(b, ap(n.inA(0), 0), func(s *server, c *net.TCPConn) {
		buf := make([]byte, 1<<20)
		var total int64
		for {
			k, err := c.Read(buf)
			total += int64(k)
			if err != nil {
				break
			}
		}
		got <- total
	})
	hcPort := freePort(b, n.inA(0))
	acceptServer(b, ap(n.inA(0), hcPort))
	port := freePort(b, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, tgTarget("sink", sink.addr, "zone-a")),
	}}})

	run := func(b *testing.B, dst netip.AddrPort) {
		c, err := dialFrom(client2, dst, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		b.SetBytes(int64(len(buf)))
		var before, after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.CloseWrite()
		total := <-got
		b.StopTimer()
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		if total != int64(b.N)*int64(len(buf)) {
			b.Fatalf("sink got %d bytes, want %d", total, int64(b.N)*int64(len(buf)))
		}
		cpu := time.Duration(after.Utime.Nano() - before.Utime.Nano() + after.Stime.Nano() - before.Stime.Nano())
		b.ReportMetric(cpu.Seconds()/(float64(total)/1e9), "cpu-s/GB")
	}
	b.Run("direct", func(b *testing.B) { run(b, sink.addr) })
	b.Run("proxy", func(b *testing.B) { run(b, ap(n.lbA(), port)) })
}
