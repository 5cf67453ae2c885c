package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/etcdtest"
)

// The conformance suite: behaviour the Store interface promises, run against every
// implementation. A test gets open, which opens a client of one fresh store each time it is
// called: after the last one is closed, for bolt (one process holds the file); at any time, for
// etcd (each is another node).

type opener func(t *testing.T) Store

func forEachStore(t *testing.T, test func(t *testing.T, open opener)) {
	t.Run("bolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		test(t, func(t *testing.T) Store {
			t.Helper()
			st, err := OpenBolt(path)
			if err != nil {
				t.Fatal(err)
			}
			return st
		})
	})
	t.Run("etcd", func(t *testing.T) { test(t, etcdOpener(t)) })
}

// etcdOpener skips the test when there is no etcd binary, and opens stores under a root of
// the test's own in the package's etcd member.
func etcdOpener(t *testing.T) opener {
	t.Helper()
	endpoint := testEtcd(t)
	// Fresh for every run of the test (-count), as the member outlives them.
	root := fmt.Sprintf("/test/%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), etcdRoots.Add(1))
	return func(t *testing.T) Store {
		t.Helper()
		st, err := OpenEtcd(EtcdConfig{Endpoints: []string{endpoint}, Root: root, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
}

var etcdRoots atomic.Int64

// One etcd member serves the package's tests, each under its own root; it starts with the first
// test that needs it.
var etcdMember struct {
	once   sync.Once
	member *etcdtest.Member
	dir    string
	err    error
	skip   bool
}

func testEtcd(t testing.TB) string {
	t.Helper()
	m := &etcdMember
	m.once.Do(func() {
		bin, err := etcdtest.Binary()
		if err != nil {
			m.err, m.skip = err, errors.Is(err, etcdtest.ErrNoBinary)
			return
		}
		if m.dir, m.err = os.MkdirTemp("", "store-etcd-"); m.err != nil {
			return
		}
		m.member, m.err = etcdtest.Start(bin, filepath.Join(m.dir, "member"))
	})
	switch {
	case m.skip:
		t.Skipf("etcd store tests skipped: %v", m.err)
	case m.err != nil:
		t.Fatalf("start etcd: %v", m.err)
	}
	return m.member.Endpoint
}

func TestMain(m *testing.M) {
	code := m.Run()
	if etcdMember.member != nil {
		etcdMember.member.Stop()
	}
	if etcdMember.dir != "" {
		os.RemoveAll(etcdMember.dir)
	}
	os.Exit(code)
}

type record struct {
	Name  string
	Count int
}

func TestStoreUpdateIsAllOrNothingAndDurable(t *testing.T) {
	forEachStore(t, func(t *testing.T, open opener) {
		st := open(t)
		if err := st.Update(func(tx Tx) error { return Save(tx, "things", "a", record{"a", 1}) }); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err := st.Update(func(tx Tx) error {
			if err := Save(tx, "things", "b", record{"b", 2}); err != nil {
				return err
			}
			if err := tx.Delete("things", "a"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("update error %v", err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}

		st = open(t)
		defer st.Close()
		err = st.View(func(tx Tx) error {
			all, err := List[record](tx, "things")
			if err != nil {
				return err
			}
			if len(all) != 1 || all[0] != (record{"a", 1}) {
				t.Errorf("after a failed update and a reopen: %+v, want only a", all)
			}
			if _, err := Load[record](tx, "things", "b"); !errors.Is(err, ErrNotFound) {
				t.Errorf("b: %v, want ErrNotFound", err)
			}
			if _, err := Load[record](tx, "nothing", "x"); !errors.Is(err, ErrNotFound) {
				t.Errorf("missing bucket: %v, want ErrNotFound", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestStoreChangesSignalsEveryCommit(t *testing.T) {
	forEachStore(t, func(t *testing.T, open opener) {
		st := open(t)
		defer st.Close()
		changes, stop := st.Changes()
		defer stop()
		for i := range 3 { // coalesced: three commits, at least one signal pending
			if err := st.Update(func(tx Tx) error { return Save(tx, "things", "a", record{"a", i}) }); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-changes:
		case <-time.After(5 * time.Second):
			t.Fatal("no change signalled")
		}
		_ = st.Update(func(tx Tx) error { return errors.New("no") })
		_ = st.Update(func(tx Tx) error { _, _ = tx.Get("things", "a"); return nil })
		select {
		case <-changes:
			t.Fatal("a failed or read-only update signalled a change")
		default:
		}
	})
}

// TestStoreConcurrentUpdatesAllOrNothing runs updates at once, as the API's clients do: each
// sees what the updates before it wrote (no lost increment), each runs once, one that fails or
// panics leaves nothing, and the rest are durable. (The bolt store commits them together; the
// etcd store runs them in turn.)
func TestStoreConcurrentUpdatesAllOrNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, open opener) {
		st := open(t)
		const n = 64
		var calls atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, n)
		panics := make([]any, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { panics[i] = recover() }()
				errs[i] = st.Update(func(tx Tx) error {
					calls.Add(1)
					c, err := Load[record](tx, "counter", "c")
					if err != nil && !errors.Is(err, ErrNotFound) {
						return err
					}
					c.Count++
					if err := Save(tx, "counter", "c", c); err != nil {
						return err
					}
					if err := Save(tx, "things", fmt.Sprintf("t%02d", i), record{"t", i}); err != nil {
						return err
					}
					switch i % 8 {
					case 3:
						return errRollback
					case 5:
						panic(fmt.Sprintf("update %d", i))
					}
					return nil
				})
			}()
		}
		wg.Wait()
		if got := calls.Load(); got != n {
			t.Errorf("%d calls of %d update functions, want each called once", got, n)
		}
		want := 0
		for i := range n {
			switch i % 8 {
			case 3:
				if !errors.Is(errs[i], errRollback) {
					t.Errorf("update %d: %v, want its own error", i, errs[i])
				}
			case 5:
				if panics[i] != fmt.Sprintf("update %d", i) {
					t.Errorf("update %d: panic %v in its caller, want its own", i, panics[i])
				}
			default:
				want++
				if errs[i] != nil || panics[i] != nil {
					t.Errorf("update %d: %v, %v", i, errs[i], panics[i])
				}
			}
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if err := st.Update(func(Tx) error { return nil }); err == nil {
			t.Error("an update after Close succeeded")
		}
		st = open(t)
		defer st.Close()
		err := st.View(func(tx Tx) error {
			c, err := Load[record](tx, "counter", "c")
			if err != nil || c.Count != want {
				t.Errorf("counter %+v, %v after a reopen: want %d, one per update that succeeded", c, err, want)
			}
			things, err := List[record](tx, "things")
			for _, th := range things {
				if th.Count%8 == 3 || th.Count%8 == 5 {
					t.Errorf("update %d failed, yet its write is there", th.Count)
				}
			}
			if len(things) != want {
				t.Errorf("%d things, want %d", len(things), want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestStoreUpdateSeesItsOwnWrites: inside an update, reads show its pending writes, in key order.
func TestStoreUpdateSeesItsOwnWrites(t *testing.T) {
	forEachStore(t, func(t *testing.T, open opener) {
		st := open(t)
		defer st.Close()
		var err error
		err = st.Update(func(tx Tx) error {
			for _, k := range []string{"b", "d", "f"} {
				if err := Save(tx, "things", k, record{k, 1}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = st.Update(func(tx Tx) error {
			for _, k := range []string{"a", "d", "e", "g"} {
				if err := Save(tx, "things", k, record{k, 2}); err != nil {
					return err
				}
			}
			if err := tx.Delete("things", "b"); err != nil {
				return err
			}
			if err := tx.Delete("things", "g"); err != nil {
				return err
			}
			if err := tx.Delete("nothing", "x"); err != nil {
				return err
			}
			want := []record{{"a", 2}, {"d", 2}, {"e", 2}, {"f", 1}}
			for _, list := range []func(Tx, string) ([]record, error){List[record], ListShared[record]} {
				got, err := list(tx, "things")
				if err != nil {
					return err
				}
				if !slices.Equal(got, want) {
					t.Errorf("inside the update: %+v, want %+v", got, want)
				}
			}
			if _, err := Load[record](tx, "things", "b"); !errors.Is(err, ErrNotFound) {
				t.Errorf("deleted b: %v", err)
			}
			if got, err := LoadShared[record](tx, "things", "e"); err != nil || got != (record{"e", 2}) {
				t.Errorf("pending e: %+v, %v", got, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = st.View(func(tx Tx) error {
			if err := tx.Put("things", "x", []byte("{}")); err == nil {
				t.Error("a write in a read-only transaction succeeded")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkStoreUpdate: read-modify-write updates of one record each, from 8 goroutines, as API
// clients make them.
func BenchmarkStoreUpdate(b *testing.B) {
	benchStores(b, func(b *testing.B, st Store) {
		var n atomic.Int64
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			key := fmt.Sprintf("k%d", n.Add(1))
			for pb.Next() {
				err := st.Update(func(tx Tx) error {
					r, err := Load[record](tx, "bench", key)
					if err != nil && !errors.Is(err, ErrNotFound) {
						return err
					}
					r.Count++
					return Save(tx, "bench", key, r)
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkStoreView: views reading one record, from 8 goroutines.
func BenchmarkStoreView(b *testing.B) {
	benchStores(b, func(b *testing.B, st Store) {
		if err := st.Update(func(tx Tx) error { return Save(tx, "bench", "k", record{"k", 1}) }); err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := st.View(func(tx Tx) error { _, err := Load[record](tx, "bench", "k"); return err }); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func benchStores(b *testing.B, bench func(b *testing.B, st Store)) {
	b.Run("bolt", func(b *testing.B) {
		st, err := OpenBolt(filepath.Join(b.TempDir(), "state.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		bench(b, st)
	})
	b.Run("etcd", func(b *testing.B) {
		endpoint := testEtcd(b)
		st, err := OpenEtcd(EtcdConfig{Endpoints: []string{endpoint}, Root: fmt.Sprintf("/bench/%s-%d", strings.ReplaceAll(b.Name(), "/", "-"), etcdRoots.Add(1))})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		bench(b, st)
	})
}
