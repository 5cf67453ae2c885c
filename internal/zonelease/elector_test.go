package zonelease

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/moatlb/moat/internal/etcdtest"
)

func TestFenceEndsMarginBeforeTheEarliestExpiry(t *testing.T) {
	t0 := time.Unix(1000, 0)
	f := fence{margin: Margin(4 * time.Second)}
	if f.alive(t0) {
		t.Fatal("alive without a lease")
	}
	f.renewed(t0, 4*time.Second)
	if !f.alive(t0.Add(2999*time.Millisecond)) || f.alive(t0.Add(3*time.Second)) {
		t.Errorf("a lease renewed at t0 with TTL 4s should be alive until t0+3s (margin 1s): until %v", f.until.Sub(t0))
	}
	// An answer to an older keep-alive, arriving late, never moves the fence back.
	f.renewed(t0.Add(-time.Second), 4*time.Second)
	if !f.alive(t0.Add(2999 * time.Millisecond)) {
		t.Error("an older renewal moved the fence back")
	}
	f.drop()
	if f.alive(t0) {
		t.Error("alive after drop")
	}
}

// interval records when a node held a zone, from polling Active: the test's view of serving.
type interval struct {
	mu         sync.Mutex
	start, end time.Time
}

func (i *interval) get() (start, end time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.start, i.end
}

// candidate runs an Elector for zone "a" through its own client and proxy.
type candidate struct {
	name   string
	proxy  *etcdtest.Proxy
	e      *Elector
	served interval // the first interval it held zone a
}

const testTTL = 3 * time.Second

func startCandidate(t *testing.T, ctx context.Context, member, name string) *candidate {
	proxy, err := etcdtest.NewProxy("127.0.0.1:0", member)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	c := &candidate{name: name, proxy: proxy}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{proxy.Addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c.e = New(Config{Client: client, Prefix: "/test/zones/", Zones: []string{"a"}, Node: name, TTL: testTTL,
		Log: slog.New(slog.DiscardHandler), OnChange: func() {}})
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.e.Run(ctx) })
	wg.Go(func() {
		for ctx.Err() == nil {
			active := c.e.Active("a")
			now := time.Now()
			c.served.mu.Lock()
			if active && c.served.start.IsZero() {
				c.served.start = now
			}
			if !active && !c.served.start.IsZero() && c.served.end.IsZero() {
				c.served.end = now
			}
			c.served.mu.Unlock()
			time.Sleep(time.Millisecond) // polling cadence, not synchronisation
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

func startMember(t *testing.T) string {
	bin, err := etcdtest.Binary()
	if errors.Is(err, etcdtest.ErrNoBinary) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	m, err := etcdtest.Start(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m.Endpoint
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStandbyWinsOnlyAfterTheActiveIsFenced: a node that holds a zone is cut off from etcd. It
// must stop holding the zone by its own fence, before etcd expires its lease and the standby
// wins: the two holding intervals do not overlap.
func TestStandbyWinsOnlyAfterTheActiveIsFenced(t *testing.T) {
	member := startMember(t)
	ctx := t.Context()
	first := startCandidate(t, ctx, member, "node-1")
	waitFor(t, 30*time.Second, "node-1 holds zone a", func() bool { return first.e.Active("a") })
	second := startCandidate(t, ctx, member, "node-2")
	waitFor(t, 30*time.Second, "both see node-1 as the holder", func() bool {
		return first.e.Holders()["a"] == "node-1" && second.e.Holders()["a"] == "node-1"
	})
	if second.e.Active("a") {
		t.Fatal("both hold zone a")
	}

	cutAt := time.Now()
	first.proxy.Cut(true)
	// As the poller saw them: the intervals' ends are recorded from Active, not by the test.
	waitFor(t, 30*time.Second, "node-2 holds zone a after node-1 is cut off", func() bool { start, _ := second.served.get(); return !start.IsZero() })
	secondStart, _ := second.served.get()
	_, firstEnd := first.served.get()
	if firstEnd.IsZero() {
		t.Fatal("node-1 still holds zone a while node-2 does")
	}
	if !firstEnd.Before(secondStart) {
		t.Errorf("node-1 held zone a until %s, after node-2 took it at %s", firstEnd.Format(time.StampMicro), secondStart.Format(time.StampMicro))
	}
	if held := firstEnd.Sub(cutAt); held > testTTL {
		t.Errorf("node-1 held zone a %s after it was cut off, longer than the lease's TTL %s", held, testTTL)
	}
	t.Logf("node-1 cut off from etcd: it let go %s later by its fence, and node-2 took zone a %s after that (%s after the cut)",
		firstEnd.Sub(cutAt).Round(time.Millisecond), secondStart.Sub(firstEnd).Round(time.Millisecond), secondStart.Sub(cutAt).Round(time.Millisecond))

	// Healed, node-1 campaigns again with a new lease and stands by.
	first.proxy.Cut(false)
	waitFor(t, 30*time.Second, "node-1 sees node-2 as the holder after healing", func() bool { return first.e.Holders()["a"] == "node-2" })
	if first.e.Active("a") {
		t.Error("node-1 holds zone a again while node-2 does")
	}
}

// TestStoppingHandsOverAtOnce: a node that stops revokes its lease, so the standby need not wait
// for the TTL.
func TestStoppingHandsOverAtOnce(t *testing.T) {
	member := startMember(t)
	ctx, stopFirst := context.WithCancel(t.Context())
	first := startCandidate(t, ctx, member, "node-1")
	waitFor(t, 30*time.Second, "node-1 holds zone a", func() bool { return first.e.Active("a") })
	second := startCandidate(t, t.Context(), member, "node-2")
	waitFor(t, 30*time.Second, "node-2 sees node-1 as the holder", func() bool { return second.e.Holders()["a"] == "node-1" })
	stoppedAt := time.Now()
	stopFirst()
	waitFor(t, testTTL/2, "node-2 holds zone a well within the TTL", func() bool { return second.e.Active("a") })
	t.Logf("node-2 took over %s after node-1 stopped", time.Since(stoppedAt).Round(time.Millisecond))
}
