package dataplane

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// irregularStream is a deterministic stream of total bytes written in runs of irregular sizes:
// from a single byte to twice the proxy's copy buffer, or, chatty, never more than a packet.
type irregularStream struct {
	total  int
	seed   uint64
	chatty bool
}

// write writes the stream to w and returns its SHA-256.
func (s irregularStream) write(w io.Writer) ([]byte, error) {
	rng := rand.New(rand.NewPCG(s.seed, s.seed))
	data := make([]byte, 2*spliceMin)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sizes := []int{1, 100, 1500, spliceMin - 1, spliceMin, 2 * spliceMin}
	if s.chatty {
		sizes = sizes[:3]
	}
	h := sha256.New()
	for sent := 0; sent < s.total; {
		k := min(1+rng.IntN(sizes[rng.IntN(len(sizes))]), s.total-sent)
		off := rng.IntN(len(data) - k + 1)
		if _, err := w.Write(data[off : off+k]); err != nil {
			return nil, err
		}
		h.Write(data[off : off+k])
		sent += k
	}
	return h.Sum(nil), nil
}

// readIrregularly reads r to its end in reads of irregular sizes, pausing now and then so that
// the sender's path fills up, and returns how many bytes came and their SHA-256.
func readIrregularly(r io.Reader, seed uint64) (int, []byte, error) {
	rng := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 2*spliceMin)
	h := sha256.New()
	n := 0
	for {
		k, err := r.Read(buf[:1+rng.IntN(len(buf))])
		h.Write(buf[:k])
		n += k
		if err == io.EOF {
			return n, h.Sum(nil), nil
		}
		if err != nil {
			return n, nil, err
		}
		if n == k || rng.IntN(64) == 0 {
			// Backpressure, not synchronisation: long enough for the sender's path (socket
			// buffers of megabytes on loopback) to fill, so that the proxy's writes are taken
			// only in part and its reads wait.
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestStreamIntegrity sends irregular runs of bytes both ways at once through the proxy, over
// several flows, to a target that reads in irregular sizes with pauses, and checks that every
// byte arrives once and in order: the copy's buffer, the writes the other side takes only in
// part, and the switches between copying and splicing lose, repeat or reorder nothing.
func TestStreamIntegrity(t *testing.T) {
	t.Parallel()
	// Half the flows send bulk runs toward the target (spliced, mostly), half small ones (copied
	// through the buffer, whose writes the stalled target's side takes in part).
	const flows = 4
	up, down := irregularStream{total: 16 << 20, seed: 1}, irregularStream{total: 16 << 20, seed: 2}
	chatty := irregularStream{total: 4 << 20, seed: 5, chatty: true}
	wantUp, _ := up.write(io.Discard)
	wantDown, _ := down.write(io.Discard)
	wantChatty, _ := chatty.write(io.Discard)

	n := newNet()
	h := newHarness(t)
	type result struct {
		n   int
		sum []byte
		err error
	}
	atTarget := make(chan result, flows)
	target := newServer(t, ap(n.inA(0), 0), func(s *server, c *net.TCPConn) {
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := down.write(c); err == nil {
				_ = c.CloseWrite()
			}
		})
		got, sum, err := readIrregularly(c, 3)
		atTarget <- result{got, sum, err}
		wg.Wait()
	})
	hcPort := freePort(t, n.inA(0))
	acceptServer(t, ap(n.inA(0), hcPort))
	port := freePort(t, n.lbA())
	h.apply(LoadBalancer{ID: "lb", Zones: n.zoneA(), Listeners: []Listener{{
		ID: "l", Protocol: TCP, Port: port, TargetGroup: group("tg", hcPort, tgTarget("t", target.addr, "zone-a")),
	}}})

	atClient := make(chan result, flows)
	for i := range flows {
		c, err := dialFrom(client2, ap(n.lbA(), port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * longWait))
		go func() {
			s := up
			if i%2 == 1 {
				s = chatty
			}
			if _, err := s.write(c); err == nil {
				_ = c.CloseWrite()
			}
		}()
		go func() {
			got, sum, err := readIrregularly(c, 4)
			atClient <- result{got, sum, err}
		}()
	}
	for range flows {
		r := <-atTarget
		switch {
		case r.err == nil && r.n == up.total && bytes.Equal(r.sum, wantUp):
		case r.err == nil && r.n == chatty.total && bytes.Equal(r.sum, wantChatty):
		default:
			t.Errorf("target got %d bytes (sha256 %x, error %v), want %d (sha256 %x) or %d (sha256 %x)",
				r.n, r.sum, r.err, up.total, wantUp, chatty.total, wantChatty)
		}
	}
	for range flows {
		if r := <-atClient; r.err != nil || r.n != down.total || !bytes.Equal(r.sum, wantDown) {
			t.Errorf("client got %d bytes (sha256 %x, error %v), want %d (sha256 %x)", r.n, r.sum, r.err, down.total, wantDown)
		}
	}
}
