package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// nested has the maps and slices that shared values must not let readers share by accident.
type nested struct {
	Name  string
	Tags  map[string]string
	Items []item
	ByKey map[string][]int
}

type item struct {
	N    int
	Subs []string
}

func openTemp(t *testing.T) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return st, path
}

// sharedEqualsFresh checks, in one transaction, that the shared reads of bucket give what the
// decoding ones give.
func sharedEqualsFresh[T any](t *testing.T, tx Tx, bucket string) []T {
	t.Helper()
	fresh, err := List[T](tx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := ListShared[T](tx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fresh, shared) {
		t.Fatalf("ListShared %+v, List %+v", shared, fresh)
	}
	return shared
}

// TestSharedReadsFollowCommitsRollbacksAndRestarts reads through the cache after each kind of
// change: it must always show what the transaction's snapshot holds.
func TestSharedReadsFollowCommitsRollbacksAndRestarts(t *testing.T) {
	forEachStore(t, func(t *testing.T, open opener) {
		st := open(t)
		put := func(name string, n int) error {
			return st.Update(func(tx Tx) error { return Save(tx, "things", name, record{name, n}) })
		}
		view := func() []record {
			var out []record
			if err := st.View(func(tx Tx) error { out = sharedEqualsFresh[record](t, tx, "things"); return nil }); err != nil {
				t.Fatal(err)
			}
			return out
		}
		for _, name := range []string{"a", "b", "c"} {
			if err := put(name, 1); err != nil {
				t.Fatal(err)
			}
		}
		view() // caches a, b and c
		if err := put("b", 2); err != nil {
			t.Fatal(err)
		}
		if got := view(); !slices.Equal(got, []record{{"a", 1}, {"b", 2}, {"c", 1}}) {
			t.Fatalf("after changing b: %+v", got)
		}

		// A rolled-back update wrote and read records (shared and not); none of it may show.
		boom := errors.New("boom")
		err := st.Update(func(tx Tx) error {
			if err := Save(tx, "things", "a", record{"a", 99}); err != nil {
				return err
			}
			if err := Save(tx, "things", "d", record{"d", 99}); err != nil {
				return err
			}
			if err := tx.Delete("things", "c"); err != nil {
				return err
			}
			got := sharedEqualsFresh[record](t, tx, "things")
			if !slices.Equal(got, []record{{"a", 99}, {"b", 2}, {"d", 99}}) {
				t.Errorf("inside the update: %+v", got)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if got := view(); !slices.Equal(got, []record{{"a", 1}, {"b", 2}, {"c", 1}}) {
			t.Fatalf("after a rollback: %+v", got)
		}
		err = st.View(func(tx Tx) error {
			if _, err := LoadShared[record](tx, "things", "d"); !errors.Is(err, ErrNotFound) {
				t.Errorf("d after its rollback: %v, want ErrNotFound", err)
			}
			got, err := LoadShared[record](tx, "things", "a")
			if err != nil || got != (record{"a", 1}) {
				t.Errorf("a after the rollback: %+v, %v", got, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		if err := st.Update(func(tx Tx) error { return tx.Delete("things", "a") }); err != nil {
			t.Fatal(err)
		}
		if got := view(); !slices.Equal(got, []record{{"b", 2}, {"c", 1}}) {
			t.Fatalf("after deleting a: %+v", got)
		}

		// A restart starts with nothing cached, and another process (node) may have changed the store.
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		other := open(t)
		if err := other.Update(func(tx Tx) error { return Save(tx, "things", "c", record{"c", 3}) }); err != nil {
			t.Fatal(err)
		}
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		st = open(t)
		defer st.Close()
		if got := view(); !slices.Equal(got, []record{{"b", 2}, {"c", 3}}) {
			t.Fatalf("after a restart: %+v", got)
		}
	})
}

// TestSharedReadRefusesRecordDamagedWhileOpen damages a record the cache holds: the shared read
// fails naming it, as Load does, instead of serving the cached value.
func TestSharedReadRefusesRecordDamagedWhileOpen(t *testing.T) {
	st, path := openTemp(t)
	defer st.Close()
	if err := st.Update(func(tx Tx) error { return Save(tx, "marked", "the-key", markedRecord{"m", marker}) }); err != nil {
		t.Fatal(err)
	}
	read := func() error {
		return st.View(func(tx Tx) error {
			if _, err := LoadShared[markedRecord](tx, "marked", "the-key"); err != nil {
				return err
			}
			_, err := ListShared[markedRecord](tx, "marked")
			return err
		})
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flipAt(t, path, indexAll(data, marker), 1)
	err = read()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "marked/the-key") {
		t.Errorf("shared read of a damaged cached record: %v, want ErrCorrupt naming marked/the-key", err)
	}
}

// TestSharedValuesAreReadOnly: a reader that writes through a shared value is caught (in tests) at
// the next read of the record, and appending to a shared slice leaves the shared one alone.
func TestSharedValuesAreReadOnly(t *testing.T) {
	st, _ := openTemp(t)
	defer st.Close()
	v := nested{Name: "n", Tags: map[string]string{"k": "v"}, Items: []item{{1, []string{"a"}}, {2, nil}, {3, []string{"b", "c"}}}, ByKey: map[string][]int{"x": {1, 2, 3}}}
	if err := st.Update(func(tx Tx) error { return Save(tx, "nested", "n", v) }); err != nil {
		t.Fatal(err)
	}
	load := func() (got nested) {
		t.Helper()
		if err := st.View(func(tx Tx) (err error) { got, err = LoadShared[nested](tx, "nested", "n"); return err }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := load()
	for _, s := range [][]item{first.Items} {
		if cap(s) != len(s) {
			t.Errorf("shared slice has room beyond its length (%d, %d): appends would write into it", len(s), cap(s))
		}
	}
	for _, it := range first.Items {
		if cap(it.Subs) != len(it.Subs) {
			t.Errorf("nested shared slice %v has room beyond its length", it.Subs)
		}
	}
	if s := first.ByKey["x"]; cap(s) != len(s) {
		t.Errorf("shared slice in a map has room beyond its length")
	}
	_ = append(first.Items, item{4, nil})
	first.Name = "assigned" // a field of the reader's copy: allowed
	if got := load(); !reflect.DeepEqual(got, v) {
		t.Fatalf("after appending to and assigning a copy: %+v, want %+v", got, v)
	}

	first.Tags["k"] = "changed"
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(fmt.Sprint(r), "nested/n was changed by a reader") {
			t.Errorf("reading a shared value a reader changed: recovered %v, want the store's panic", r)
		}
	}()
	load()
}

// TestSharedReadsUnderConcurrentWrites runs writers (changing, creating and deleting records)
// against readers that compare shared and decoding reads in each transaction, then checks that
// the cache holds nothing of deleted records. Run it with -race.
func TestSharedReadsUnderConcurrentWrites(t *testing.T) {
	forEachStore(t, func(t *testing.T, open opener) {
		st := open(t)
		defer st.Close()
		const keys = 40
		key := func(i int) string { return fmt.Sprintf("k%03d", i) }
		if err := st.Update(func(tx Tx) error {
			for i := range keys {
				if err := Save(tx, "things", key(i), record{key(i), 0}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		if testing.Short() {
			deadline = time.Now().Add(500 * time.Millisecond)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		fail := func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 1; time.Now().Before(deadline); n++ {
					i := rand.IntN(keys)
					err := st.Update(func(tx Tx) error {
						switch rand.IntN(4) {
						case 0:
							return tx.Delete("things", key(i))
						case 1:
							// Read, write, then fail: nothing of it may stay.
							if _, err := ListShared[record](tx, "things"); err != nil {
								return err
							}
							if err := Save(tx, "things", key(i), record{"rolled back", -1}); err != nil {
								return err
							}
							if _, err := LoadShared[record](tx, "things", key(i)); err != nil {
								return err
							}
							return errRollback
						}
						if _, err := ListShared[record](tx, "things"); err != nil {
							return err
						}
						return Save(tx, "things", key(i), record{key(i), w*1_000_000 + n})
					})
					if err != nil && !errors.Is(err, errRollback) {
						fail(err)
					}
				}
			}()
		}
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					err := st.View(func(tx Tx) error {
						fresh, err := List[record](tx, "things")
						if err != nil {
							return err
						}
						shared, err := ListShared[record](tx, "things")
						if err != nil {
							return err
						}
						if !reflect.DeepEqual(fresh, shared) {
							return fmt.Errorf("ListShared %v, List %v in one transaction", shared, fresh)
						}
						for _, r := range fresh {
							if r.Count < 0 {
								return fmt.Errorf("a rolled-back write is visible: %+v", r)
							}
							got, err := LoadShared[record](tx, "things", r.Name)
							if err != nil || got != r {
								return fmt.Errorf("LoadShared %s: %+v, %v; List has %+v", r.Name, got, err, r)
							}
						}
						return nil
					})
					if err != nil {
						fail(err)
					}
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d failures, first: %v", len(errs), errs[0])
		}
		var live []string
		if err := st.View(func(tx Tx) error {
			return tx.ForEach("things", func(k string, _ []byte) error { live = append(live, k); return nil })
		}); err != nil {
			t.Fatal(err)
		}
		bolt, ok := st.(*Bolt)
		if !ok {
			return // the other stores keep no cache
		}
		b := bolt.cache.bucket("things")
		b.mu.RLock()
		defer b.mu.RUnlock()
		for k := range b.records {
			if !slices.Contains(live, k) {
				t.Errorf("the cache keeps deleted record %s", k)
			}
		}
	})
}

var errRollback = errors.New("rollback")

// TestVersionNamesCommittedContents: a bucket's version changes with every commit that writes it
// and only then, and an update sees which keys differ from it: its own writes and those of the
// updates before it in the same commit.
func TestVersionNamesCommittedContents(t *testing.T) {
	forEachStore(t, func(t *testing.T, open opener) {
		st := open(t)
		defer st.Close()
		version := func(bucket string) uint64 {
			t.Helper()
			var v uint64
			err := st.View(func(tx Tx) error {
				var changed []string
				var ok bool
				if v, changed, ok = Version(tx, bucket); !ok || changed != nil {
					t.Errorf("read-only transaction: version of %s %v, changed %v", bucket, ok, changed)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		put := func(tx Tx, bucket, key string) error { return Save(tx, bucket, key, record{bucket, rand.IntN(1000)}) }
		x0, y0 := version("x"), version("y")
		if err := st.Update(func(tx Tx) error { return put(tx, "x", "k") }); err != nil {
			t.Fatal(err)
		}
		x1 := version("x")
		if x1 == x0 || version("y") != y0 || version("x") != x1 {
			t.Errorf("after writing x: x %d -> %d, y %d -> %d, want x alone to change, once", x0, x1, y0, version("y"))
		}
		err := st.Update(func(tx Tx) error {
			if v, changed, _ := Version(tx, "x"); v != x1 || changed != nil {
				t.Errorf("update before writing x: version %d, changed %v, want %d and none", v, changed, x1)
			}
			if err := put(tx, "x", "k"); err != nil {
				return err
			}
			if err := tx.Delete("x", "a"); err != nil {
				return err
			}
			if v, changed, _ := Version(tx, "x"); v != x1 || !slices.Equal(changed, []string{"a", "k"}) {
				t.Errorf("update after writing x: version %d, changed %v, want %d and [a k]", v, changed, x1)
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
		if v := version("x"); v != x1 {
			t.Errorf("after a rolled-back write: x %d, want %d", v, x1)
		}
	})
}

// TestBoltVersionInGroupCommit: of two updates in one commit, the second sees the first's write
// to x, not yet committed, as a change from x's version.
func TestBoltVersionInGroupCommit(t *testing.T) {
	st, _ := openTemp(t)
	defer st.Close()
	put := func(tx Tx, bucket, key string) error { return Save(tx, bucket, key, record{bucket, rand.IntN(1000)}) }
	version := func(bucket string) (v uint64) {
		t.Helper()
		if err := st.View(func(tx Tx) error { v, _, _ = Version(tx, bucket); return nil }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := st.Update(func(tx Tx) error { return put(tx, "x", "k") }); err != nil {
		t.Fatal(err)
	}
	x1, y0 := version("x"), version("y")
	var second struct {
		x, y      uint64
		cx, cy    []string
		versioned bool
	}
	first := &update{fn: func(tx Tx) error { return put(tx, "x", "j") }, done: make(chan struct{})}
	then := &update{fn: func(tx Tx) error {
		second.x, second.cx, second.versioned = Version(tx, "x")
		second.y, second.cy, _ = Version(tx, "y")
		return nil
	}, done: make(chan struct{})}
	st.commit([]*update{first, then})
	if first.err != nil || then.err != nil {
		t.Fatal(first.err, then.err)
	}
	if !second.versioned || second.x != x1 || !slices.Equal(second.cx, []string{"j"}) || second.y != y0 || second.cy != nil {
		t.Errorf("in a commit after another update wrote x/j: %+v, want x %d changed [j], y %d unchanged", second, x1, y0)
	}
	if v := version("x"); v == x1 {
		t.Error("the commit of the group left x's version as it was")
	}
}

// TestBoltChangedSince: the keys committed to a bucket after a version, up to a reader's, are
// those the commits wrote there, in order and once; a rolled-back update's are not; and a reader
// asking from before what the log keeps, or from after its own version, is told the store cannot
// tell.
func TestBoltChangedSince(t *testing.T) {
	st, _ := openTemp(t)
	defer st.Close()
	put := func(bucket string, keys ...string) {
		t.Helper()
		if err := st.Update(func(tx Tx) error {
			for _, k := range keys {
				if err := Save(tx, bucket, k, record{bucket, rand.IntN(1000)}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	since := func(bucket string, v uint64) (keys []string, ok bool, now uint64) {
		t.Helper()
		if err := st.View(func(tx Tx) error {
			keys, ok = ChangedSince(tx, bucket, v)
			now, _, _ = Version(tx, bucket)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return keys, ok, now
	}
	put("x", "a")
	_, _, x1 := since("x", 0)
	put("x", "c", "b")
	put("y", "z")
	if err := st.Update(func(tx Tx) error {
		if err := tx.Delete("x", "a"); err != nil {
			return err
		}
		return errRollback
	}); !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	put("x", "b")
	if err := st.Update(func(tx Tx) error { return tx.Delete("x", "c") }); err != nil {
		t.Fatal(err)
	}
	keys, ok, x2 := since("x", x1)
	if !ok || !slices.Equal(keys, []string{"b", "c"}) {
		t.Errorf("x since its version after a: %v %v, want [b c]", keys, ok)
	}
	if keys, ok, _ := since("x", x2); !ok || len(keys) != 0 {
		t.Errorf("x since its current version: %v %v, want nothing", keys, ok)
	}
	if keys, ok, _ := since("y", 0); ok {
		t.Errorf("y since before the store opened: %v, want ok false", keys)
	}
	if keys, ok, _ := since("x", x2+1); ok {
		t.Errorf("x since a version after the reader's: %v, want ok false", keys)
	}
	// Past maxLoggedKeys, the oldest commits are forgotten: from before them, the store cannot tell.
	for i := 0; i <= maxLoggedKeys/64; i++ {
		batch := make([]string, 64)
		for j := range batch {
			batch[j] = fmt.Sprintf("k%d-%d", i, j)
		}
		put("x", batch...)
	}
	if keys, ok, _ := since("x", x2); ok {
		t.Errorf("x since a version the log no longer reaches: %d keys, want ok false", len(keys))
	}
}
