package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/etcdtest"
)

// Tests of what only a shared store has: several nodes (clients) writing at once. Each test
// opens two stores on one root of the package's etcd member, as two moat lb nodes would.

func twoNodes(t *testing.T) (Store, Store) {
	open := etcdOpener(t)
	return open(t), open(t)
}

// countedUpdate runs an update, counting how often fn runs: more runs than updates are
// conflicts that were retried.
func countedUpdate(st Store, runs *atomic.Int64, fn func(Tx) error) error {
	return st.Update(func(tx Tx) error { runs.Add(1); return fn(tx) })
}

// TestEtcdCreateIfAbsentHasOneWinner: writers on two nodes each create a record named X, under
// a key of their own, if no record of the bucket has that name, as the API checks names. Exactly
// one may succeed, though none of them wrote a key another read.
func TestEtcdCreateIfAbsentHasOneWinner(t *testing.T) {
	a, b := twoNodes(t)
	errExists := errors.New("exists")
	var runs atomic.Int64
	const rounds, writers = 5, 8
	for round := range rounds {
		name := fmt.Sprintf("name-%d", round)
		var wg sync.WaitGroup
		var won atomic.Int64
		for w := range writers {
			st := []Store{a, b}[w%2]
			wg.Go(func() {
				err := countedUpdate(st, &runs, func(tx Tx) error {
					err := tx.ForEach("named", func(_ string, raw []byte) error {
						if strings.Contains(string(raw), `"`+name+`"`) {
							return errExists
						}
						return nil
					})
					if err != nil {
						return err
					}
					return Save(tx, "named", fmt.Sprintf("%s-writer-%d", name, w), record{name, w})
				})
				switch {
				case err == nil:
					won.Add(1)
				case !errors.Is(err, errExists):
					t.Errorf("writer %d: %v", w, err)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Errorf("%s: %d writers created it, want exactly one", name, won.Load())
		}
	}
	all := viewAll(t, a, "named")
	if len(all) != rounds {
		t.Errorf("%d records, want one per name (%d): %+v", len(all), rounds, all)
	}
	t.Logf("%d updates ran their function %d times", rounds*writers, runs.Load())
}

// TestEtcdCounterFromTwoNodes increments one counter n times from each node, from several
// goroutines: no increment may be lost.
func TestEtcdCounterFromTwoNodes(t *testing.T) {
	a, b := twoNodes(t)
	const n, goroutines = 40, 4 // per node
	var runs atomic.Int64
	var wg sync.WaitGroup
	for _, st := range []Store{a, b} {
		for range goroutines {
			wg.Go(func() {
				for range n / goroutines {
					err := countedUpdate(st, &runs, func(tx Tx) error {
						c, err := Load[record](tx, "counter", "c")
						if err != nil && !errors.Is(err, ErrNotFound) {
							return err
						}
						c.Count++
						return Save(tx, "counter", "c", c)
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	for _, st := range []Store{a, b} {
		err := st.View(func(tx Tx) error {
			c, err := Load[record](tx, "counter", "c")
			if err == nil && c.Count != 2*n {
				t.Errorf("counter %d, want %d", c.Count, 2*n)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d increments ran their function %d times", 2*n, runs.Load())
}

// TestEtcdUpdateRacingDeleteNeverResurrects: one node keeps changing a record if it exists while
// the other deletes it. Once the delete is acknowledged, the record stays gone.
func TestEtcdUpdateRacingDeleteNeverResurrects(t *testing.T) {
	a, b := twoNodes(t)
	for round := range 10 {
		key := fmt.Sprintf("r%d", round)
		if err := a.Update(func(tx Tx) error { return Save(tx, "racing", key, record{key, 0}) }); err != nil {
			t.Fatal(err)
		}
		deleted := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			// Until well after the delete: changes in flight when it commits must all fail.
			for after := 0; after < 5; {
				select {
				case <-deleted:
					after++
				default:
				}
				err := a.Update(func(tx Tx) error {
					r, err := Load[record](tx, "racing", key)
					if errors.Is(err, ErrNotFound) {
						return nil
					}
					if err != nil {
						return err
					}
					r.Count++
					return Save(tx, "racing", key, r)
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
		if err := b.Update(func(tx Tx) error {
			if _, err := tx.Get("racing", key); err != nil {
				return err
			}
			return tx.Delete("racing", key)
		}); err != nil {
			t.Fatal(err)
		}
		close(deleted)
		wg.Wait()
		for _, st := range []Store{a, b} {
			if all := viewAll(t, st, "racing"); len(all) != 0 {
				t.Fatalf("round %d: deleted record is back: %+v", round, all)
			}
		}
	}
}

// TestEtcdViewIsOneSnapshotAcrossPages reads a bucket larger than one page while another node
// changes records on both sides of where the walk is: the walk shows the bucket as it was when
// it began.
func TestEtcdViewIsOneSnapshotAcrossPages(t *testing.T) {
	a, b := twoNodes(t)
	const n = 3*etcdPage + 10
	key := func(i int) string { return fmt.Sprintf("k%04d", i) }
	pad := strings.Repeat("x", 2000) // some megabytes in all, more than one etcd message may hold
	for from := 0; from < n; from += 100 {
		if err := a.Update(func(tx Tx) error {
			for i := from; i < min(from+100, n); i++ {
				if err := Save(tx, "big", key(i), record{key(i) + pad, i}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var seen []record
	err := a.View(func(tx Tx) error {
		return tx.ForEach("big", func(k string, raw []byte) error {
			if len(seen) == n/2 {
				// Change a record already read, one not yet read, delete one, add one.
				err := b.Update(func(tx Tx) error {
					for _, i := range []int{1, n - 2} {
						if err := Save(tx, "big", key(i), record{"changed", -1}); err != nil {
							return err
						}
					}
					if err := tx.Delete("big", key(n-1)); err != nil {
						return err
					}
					return Save(tx, "big", key(n), record{"added", -1})
				})
				if err != nil {
					return err
				}
			}
			r, err := Load[record](tx, "big", k)
			seen = append(seen, r)
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("the walk saw %d records, want %d", len(seen), n)
	}
	for i, r := range seen {
		if r.Count != i || r.Name != key(i)+pad {
			t.Fatalf("record %d: %.20q %d, want it as it was when the view began", i, r.Name, r.Count)
		}
	}
}

// TestEtcdChangesHearOtherNodes: a commit on one node signals the Changes of another.
func TestEtcdChangesHearOtherNodes(t *testing.T) {
	a, b := twoNodes(t)
	changes, stop := a.Changes()
	defer stop()
	if err := b.Update(func(tx Tx) error { return Save(tx, "things", "x", record{"x", 1}) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("no change signalled on the other node")
	}
}

// TestEtcdQuietKeysDoNotSignal: another node's write under the quiet prefix reaches the watch
// without signalling Changes; a record's commit after it does signal.
func TestEtcdQuietKeysDoNotSignal(t *testing.T) {
	a, b := twoNodes(t)
	watcher, writer := a.(*Etcd), b.(*Etcd)
	changes, stop := watcher.Changes()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	put, err := writer.Client().Put(ctx, writer.QuietPrefix()+"health/x", "healthy")
	if err != nil {
		t.Fatal(err)
	}
	watcher.awaitWatch(ctx, put.Header.Revision)
	if ctx.Err() != nil {
		t.Fatal("the watch did not see the quiet write")
	}
	select {
	case <-changes:
		t.Fatal("a quiet write signalled Changes")
	default:
	}
	if err := writer.Update(func(tx Tx) error { return Save(tx, "things", "x", record{"x", 1}) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-ctx.Done():
		t.Fatal("a record's commit after a quiet write signalled no change")
	}
}

// TestEtcdBucketChanges: a reader of one bucket is signalled by another node's commit to that
// bucket, and not by commits to other buckets.
func TestEtcdBucketChanges(t *testing.T) {
	a, b := twoNodes(t)
	watcher, writer := a.(*Etcd), b.(*Etcd)
	things, stopThings := watcher.BucketChanges("things")
	defer stopThings()
	all, stopAll := watcher.Changes()
	defer stopAll()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := writer.Update(func(tx Tx) error { return Save(tx, "others", "x", record{"x", 1}) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatal("a commit to another bucket signalled no change at all")
	}
	select {
	case <-things:
		t.Fatal("a commit to another bucket signalled the bucket's readers")
	default:
	}
	if err := writer.Update(func(tx Tx) error { return Save(tx, "things", "x", record{"x", 1}) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-things:
	case <-ctx.Done():
		t.Fatal("a commit to the bucket signalled no change to its readers")
	}
}

// TestEtcdRefusesDamagedRecord: a value that is not what the store sealed under its key (bytes
// changed, or a record moved under another key, by another etcd client) is ErrCorrupt.
func TestEtcdRefusesDamagedRecord(t *testing.T) {
	st := etcdOpener(t)(t).(*Etcd)
	if err := st.Update(func(tx Tx) error { return Save(tx, "things", "a", record{"a", 1}) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := st.client.Get(ctx, st.bucketPrefix("things")+"a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	sealed := resp.Kvs[0].Value
	flipped := append([]byte(nil), sealed...)
	flipped[len(flipped)-2] ^= 1
	for key, value := range map[string][]byte{"moved": sealed, "flipped": flipped} {
		if _, err := st.client.Put(ctx, st.bucketPrefix("things")+key, string(value)); err != nil {
			t.Fatal(err)
		}
		err := st.View(func(tx Tx) error { _, err := tx.Get("things", key); return err })
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "things/"+key) {
			t.Errorf("Get of a %s record: %v, want ErrCorrupt naming it", key, err)
		}
		err = st.View(func(tx Tx) error { return tx.ForEach("things", func(string, []byte) error { return nil }) })
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("ForEach over a %s record: %v, want ErrCorrupt", key, err)
		}
		if _, err := st.client.Delete(ctx, st.bucketPrefix("things")+key); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEtcdStuckClusterTimesOut: when etcd stops answering, View and Update fail after the
// timeout instead of hanging, and work again once it answers.
func TestEtcdStuckClusterTimesOut(t *testing.T) {
	testEtcd(t) // skips without a binary
	bin, err := etcdtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	member, err := etcdtest.Start(bin, filepath.Join(t.TempDir(), "member"))
	if err != nil {
		t.Fatal(err)
	}
	defer member.Stop()
	const timeout = time.Second
	st, err := OpenEtcd(EtcdConfig{Endpoints: []string{member.Endpoint}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	write := func() error { return st.Update(func(tx Tx) error { return Save(tx, "things", "a", record{"a", 1}) }) }
	read := func() error { return st.View(func(tx Tx) error { _, err := tx.Get("things", "a"); return err }) }
	if err := write(); err != nil {
		t.Fatal(err)
	}
	if err := member.Pause(); err != nil {
		t.Fatal(err)
	}
	// Several at once: each fails within its own deadline, not after those queued before it.
	var wg sync.WaitGroup
	for i := range 8 {
		name, call := "Update", write
		if i%4 == 0 {
			name, call = "View", read
		}
		wg.Go(func() {
			start := time.Now()
			err := call()
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s against a stuck etcd: %v, want a deadline error", name, err)
			}
			if took > 4*timeout {
				t.Errorf("%s against a stuck etcd took %s, with a timeout of %s", name, took, timeout)
			}
		})
	}
	wg.Wait()
	if err := member.Resume(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for err := read(); err != nil; err = read() {
		if time.Now().After(deadline) {
			t.Fatalf("after resuming etcd: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// TestOpenEtcdUnreachable: opening a store no etcd answers for fails within the timeout.
func TestOpenEtcdUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // nothing listens there now
	start := time.Now()
	st, err := OpenEtcd(EtcdConfig{Endpoints: []string{l.Addr().String()}, Timeout: time.Second})
	if err == nil {
		st.Close()
		t.Fatal("opened a store on a port no etcd listens on")
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("failing took %s, with a timeout of 1s", took)
	}
	if !strings.Contains(err.Error(), "no answer within 1s") {
		t.Errorf("error %q does not say that nothing answered", err)
	}
}

func viewAll(t *testing.T, st Store, bucket string) []record {
	t.Helper()
	var all []record
	if err := st.View(func(tx Tx) (err error) { all, err = List[record](tx, bucket); return err }); err != nil {
		t.Fatal(err)
	}
	return all
}

// TestEtcdKeepsAcknowledgedWritesWhenTheLeaderDies: writers on two nodes of a three-member
// cluster write records while the leader is killed. Every acknowledged write is there
// afterwards, read through either node, and writes succeed again without it.
func TestEtcdKeepsAcknowledgedWritesWhenTheLeaderDies(t *testing.T) {
	testEtcd(t) // skips without a binary
	bin, err := etcdtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	members, err := etcdtest.StartCluster(bin, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, m := range members {
			m.Stop()
		}
	}()
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, m.Endpoint)
	}
	nodes := make([]*Etcd, 2)
	for i := range nodes {
		if nodes[i], err = OpenEtcd(EtcdConfig{Endpoints: endpoints, Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		defer nodes[i].Close()
	}
	leader := findLeader(t, nodes[0], members)

	var mu sync.Mutex
	acked := map[string]bool{}
	var failed []error
	killed := make(chan struct{})
	enough := make(chan struct{}) // closed at 40 acknowledged writes
	enoughOnce := sync.OnceFunc(func() { close(enough) })
	var wg sync.WaitGroup
	for w := range 4 {
		st := nodes[w%2]
		wg.Go(func() {
			// Until a few writes of this writer succeeded after the kill.
			for i, afterKill := 0, 0; afterKill < 5; i++ {
				select {
				case <-killed:
					afterKill++
				default:
				}
				key := fmt.Sprintf("w%d-%04d", w, i)
				err := st.Update(func(tx Tx) error { return Save(tx, "acked", key, record{key, i}) })
				mu.Lock()
				if err == nil {
					acked[key] = true
				} else {
					failed = append(failed, err)
					afterKill-- // only successes count
				}
				if len(acked) >= 40 {
					enoughOnce()
				}
				mu.Unlock()
				if i > 2000 {
					t.Errorf("writer %d: no progress after the kill (%v)", w, err)
					return
				}
			}
		})
	}
	select {
	case <-enough:
	case <-time.After(60 * time.Second):
		t.Fatal("not 40 writes acknowledged in 60 s")
	}
	leader.Stop()
	close(killed)
	wg.Wait()
	for i, st := range nodes {
		all := viewAll(t, st, "acked")
		have := map[string]bool{}
		for _, r := range all {
			have[r.Name] = true
		}
		for key := range acked {
			if !have[key] {
				t.Errorf("node %d: acknowledged write %s is gone", i, key)
			}
		}
	}
	t.Logf("%d writes acknowledged, %d failed while the leader was killed (their outcome is unknown): %v", len(acked), len(failed), failed)
}

// findLeader returns the member that leads the cluster, asking it through the store's client.
func findLeader(t *testing.T, st *Etcd, members []*etcdtest.Member) *etcdtest.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range members {
		status, err := st.client.Status(ctx, m.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		if status.Leader == status.Header.MemberId {
			return m
		}
	}
	t.Fatal("no member leads the cluster")
	return nil
}

// TestEtcdVersionFollowsOtherNodes: a bucket's version is the same on every node, and changes
// when any node writes the bucket, deletes included, so that an index kept on one node is not
// reused after another changed the bucket.
func TestEtcdVersionFollowsOtherNodes(t *testing.T) {
	a, b := twoNodes(t)
	version := func(st Store) uint64 {
		t.Helper()
		var v uint64
		err := st.View(func(tx Tx) error {
			var ok bool
			if v, _, ok = Version(tx, "x"); !ok {
				t.Fatal("the etcd store keeps no versions")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i, change := range []func(tx Tx) error{
		func(tx Tx) error { return Save(tx, "x", "k", record{"k", 1}) },
		func(tx Tx) error { return tx.Delete("x", "k") },
	} {
		before := version(a)
		if err := b.Update(change); err != nil {
			t.Fatal(err)
		}
		after := version(a)
		if after == before {
			t.Errorf("change %d on node b: node a's version stays %d", i, before)
		}
		if vb := version(b); vb != after {
			t.Errorf("change %d: node a has version %d, node b %d", i, after, vb)
		}
	}
}
