package store

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bolt is the embedded Store: one bbolt file, fsynced on every commit, each record with its own
// checksum. Concurrent updates share commits (see Update).
type Bolt struct {
	db   *bolt.DB
	path string

	mu       sync.Mutex
	watchers map[chan struct{}]struct{}

	cache sharedCache
	log   *changeLog

	updates   chan *update
	closing   chan struct{}
	closeOnce sync.Once
	stopped   chan struct{} // closed when commitLoop returns
}

// OpenBolt opens (or creates) the store file at path, and refuses a damaged one: it checks the file
// before bbolt maps it, every record's checksum and bbolt's consistency check, and upgrades a file
// of an older record format. Damage is an error wrapping ErrCorrupt, never a panic. A file another
// process holds (another moat lb) is ErrLocked after a short wait.
func OpenBolt(path string) (*Bolt, error) {
	b, _, err := openBolt(path, false)
	return b, err
}

// OpenBoltReadOnly opens an existing store file for reading, checked as OpenBolt does but never
// written: Update fails.
func OpenBoltReadOnly(path string) (*Bolt, error) {
	b, _, err := openBolt(path, true)
	return b, err
}

func openBolt(path string, readOnly bool) (*Bolt, int, error) {
	if err := inspectFile(path, readOnly); err != nil {
		return nil, 0, err
	}
	db, err := openDB(path, readOnly)
	if err != nil {
		return nil, 0, err
	}
	b := &Bolt{db: db, path: path, watchers: map[chan struct{}]struct{}{},
		updates: make(chan *update), closing: make(chan struct{}), stopped: make(chan struct{})}
	records, err := b.verify(readOnly)
	if err != nil {
		db.Close()
		return nil, 0, err
	}
	var last uint64
	if err := db.View(func(tx *bolt.Tx) error { last = uint64(tx.ID()); return nil }); err != nil {
		db.Close()
		return nil, 0, err
	}
	b.log = newChangeLog(last)
	go b.commitLoop()
	return b, records, nil
}

// Backup writes a consistent copy of the whole store file to w, from one read transaction, so it
// may run while updates continue. The copy is a store file that OpenBolt opens.
func (b *Bolt) Backup(w io.Writer) (int64, error) {
	var n int64
	err := b.db.View(func(tx *bolt.Tx) (err error) {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Buckets names the buckets that hold records, in order: what a copy of the whole store (moat lb
// migrate) walks.
func (b *Bolt) Buckets() ([]string, error) {
	var names []string
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if string(name) != formatBucket {
				names = append(names, string(name))
			}
			return nil
		})
	})
	return names, err
}

func (b *Bolt) View(fn func(Tx) error) error {
	// The count is read before the transaction begins: see sharedCache.
	btx := &boltTx{path: b.path, cache: &b.cache, log: b.log, deletes: b.cache.deletes.Load()}
	return b.db.View(func(tx *bolt.Tx) error { btx.tx = tx; return fn(btx) })
}

// Update commits fn's writes together with those of the updates running at the same time: one
// bbolt transaction, so one fsync, for all of them (group commit). A commit costs about one disk
// flush, 10 ms on a virtual disk, so committing each update alone caps every writer together at
// about a hundred updates a second. Each fn still runs alone, in turn, and sees everything the
// updates before it wrote; its writes are held aside until it returns, so one that fails leaves
// nothing and the others commit.
func (b *Bolt) Update(fn func(Tx) error) error {
	u := &update{fn: fn, done: make(chan struct{})}
	select {
	case b.updates <- u:
	case <-b.closing:
		return berrors.ErrDatabaseNotOpen
	}
	<-u.done
	if u.panicked != nil {
		panic(u.panicked) // in the caller's goroutine, as if fn had run there
	}
	return u.err
}

// update is one Update call waiting for its commit.
type update struct {
	fn       func(Tx) error
	err      error
	panicked any
	tx       *boltTx
	done     chan struct{}
}

// maxGroup bounds the updates of one commit, so that none waits behind an unbounded one.
const maxGroup = 256

// commitLoop takes the updates waiting at each turn (those that came while the last commit was
// being written) and commits them together, until the store closes.
func (b *Bolt) commitLoop() {
	defer close(b.stopped)
	for {
		var group []*update
		select {
		case u := <-b.updates:
			group = append(group, u)
		case <-b.closing:
			return
		}
	more:
		for len(group) < maxGroup {
			select {
			case u := <-b.updates:
				group = append(group, u)
			default:
				break more
			}
		}
		b.commit(group)
	}
}

func (b *Bolt) commit(group []*update) {
	deletes := b.cache.deletes.Load() // before the transaction: see sharedCache
	written, bases := map[recordKey]bool{}, map[string]uint64{}
	var id uint64
	err := b.db.Update(func(tx *bolt.Tx) error {
		id = uint64(tx.ID())
		for _, u := range group {
			u.tx = &boltTx{tx: tx, path: b.path, cache: &b.cache, log: b.log, deletes: deletes, written: written, bases: bases, pending: map[string]map[string][]byte{}}
			u.run()
			if u.err != nil || u.panicked != nil {
				continue
			}
			if err := u.tx.flush(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		b.log.add(id, writtenKeys(written, bases))
	}
	wrote := false
	for _, u := range group {
		switch {
		case u.panicked != nil:
		case err != nil:
			u.err = err
		case u.err == nil:
			b.cache.committedDeletes(u.tx.deleted)
			wrote = wrote || u.tx.wrote
		}
	}
	// Watchers hear of commits that changed something, so a no-op update wakes nobody; and they
	// hear of it before the updates return.
	if wrote {
		b.notify()
	}
	for _, u := range group {
		close(u.done)
	}
}

// run calls fn, catching a panic to hand it back to the caller.
func (u *update) run() {
	defer func() {
		if r := recover(); r != nil {
			u.panicked = r
		}
	}()
	u.err = u.fn(u.tx)
}

func (b *Bolt) Changes() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	b.watchers[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.watchers, ch)
		b.mu.Unlock()
	}
}

func (b *Bolt) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.watchers {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending; the reader will see this change too
		}
	}
}

// Close waits for the commit in progress, then closes the file; updates after it fail.
func (b *Bolt) Close() error {
	b.closeOnce.Do(func() { close(b.closing) })
	<-b.stopped
	return b.db.Close()
}

type boltTx struct {
	tx    *bolt.Tx
	path  string
	wrote bool

	cache *sharedCache
	// deletes is the cache's count of deleting commits when the transaction began.
	deletes uint64
	// pending holds an update's writes (bucket, key, stored bytes or nil for a delete) until it
	// returns: flush writes them into the transaction, or they are dropped with the update.
	// It is nil in a read-only transaction.
	pending map[string]map[string][]byte
	// written are the records the updates of the commit wrote: their bytes may never be committed,
	// so they are not cached. deleted are those this update deleted, dropped from the cache once
	// committed.
	written map[recordKey]bool
	deleted []recordKey
	// bases are the versions of the buckets the commit has flushed writes to, before them.
	bases map[string]uint64
	// log is the store's log of the keys commits wrote (ChangedSince).
	log *changeLog
}

func (t *boltTx) Get(bucket, key string) ([]byte, error) {
	stored, err := t.stored(bucket, key)
	if err != nil {
		return nil, err
	}
	v, err := unseal(t.path, bucket, key, stored)
	if err != nil {
		return nil, err
	}
	// bbolt's slices are valid only inside the transaction; callers may keep the copy.
	return append([]byte(nil), v...), nil
}

func (t *boltTx) Put(bucket, key string, value []byte) error {
	// What bbolt would refuse is refused here, so that flush cannot fail on it.
	switch {
	case t.pending == nil:
		return berrors.ErrTxNotWritable
	case bucket == "" || len(bucket) > bolt.MaxKeySize:
		return fmt.Errorf("bucket %q: %w", bucket, berrors.ErrBucketNameRequired)
	case key == "":
		return berrors.ErrKeyRequired
	case len(key) > bolt.MaxKeySize:
		return berrors.ErrKeyTooLarge
	case len(value)+sumSize > bolt.MaxValueSize:
		return berrors.ErrValueTooLarge
	}
	t.note(bucket, key, seal(bucket, key, value))
	return nil
}

func (t *boltTx) Delete(bucket, key string) error {
	if t.pending == nil {
		return berrors.ErrTxNotWritable
	}
	t.note(bucket, key, nil)
	t.deleted = append(t.deleted, recordKey{bucket, key})
	return nil
}

// note holds a write (stored nil: a delete) until the update returns.
func (t *boltTx) note(bucket, key string, stored []byte) {
	t.wrote = true
	t.written[recordKey{bucket, key}] = true
	if t.pending[bucket] == nil {
		t.pending[bucket] = map[string][]byte{}
	}
	t.pending[bucket][key] = stored
}

// flush writes the update's pending writes into the transaction.
func (t *boltTx) flush() error {
	for bucket, writes := range t.pending {
		bk := t.tx.Bucket([]byte(bucket))
		for key, stored := range writes {
			var err error
			switch {
			case stored == nil && bk == nil: // nothing to delete
			case stored == nil:
				err = bk.Delete([]byte(key))
			default:
				if bk == nil {
					if bk, err = t.tx.CreateBucket([]byte(bucket)); err != nil {
						return fmt.Errorf("bucket %s: %w", bucket, err)
					}
				}
				err = bk.Put([]byte(key), stored)
			}
			if err != nil {
				return fmt.Errorf("%s/%s: %w", bucket, key, err)
			}
		}
		// The bucket's version: this commit's ID (see Version).
		if bk != nil {
			if _, ok := t.bases[bucket]; !ok {
				t.bases[bucket] = bk.Sequence()
			}
			if err := bk.SetSequence(uint64(t.tx.ID())); err != nil {
				return fmt.Errorf("bucket %s: %w", bucket, err)
			}
		}
	}
	return nil
}

func (t *boltTx) ForEach(bucket string, fn func(key string, value []byte) error) error {
	return t.forEachStored(bucket, func(k, stored []byte) error {
		key := string(k)
		v, err := unseal(t.path, bucket, key, stored)
		if err != nil {
			return err
		}
		return fn(key, v)
	})
}

// stored returns the record's bytes as stored, unchecked and valid only in the transaction.
func (t *boltTx) stored(bucket, key string) ([]byte, error) {
	if stored, ok := t.pending[bucket][key]; ok {
		if stored == nil {
			return nil, ErrNotFound
		}
		return stored, nil
	}
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil, ErrNotFound
	}
	stored := bk.Get([]byte(key))
	if stored == nil {
		return nil, ErrNotFound
	}
	return stored, nil
}

// forEachStored calls fn with every record of bucket in key order, the update's pending writes
// merged in.
func (t *boltTx) forEachStored(bucket string, fn func(key, stored []byte) error) error {
	walk := func(yield func(k, stored []byte) error) error {
		if bk := t.tx.Bucket([]byte(bucket)); bk != nil {
			return bk.ForEach(yield)
		}
		return nil
	}
	return withPending(t.pending[bucket], walk, fn)
}

// withPending calls fn for every record that walk yields (in key order) with an update's pending
// writes to the bucket (stored bytes, or nil for a delete) merged in, in key order.
func withPending(writes map[string][]byte, walk func(yield func(key, stored []byte) error) error, fn func(key, stored []byte) error) error {
	pendingKeys := slices.Sorted(maps.Keys(writes))
	// yieldPending calls fn for the pending records before key (all of them when key is nil).
	yieldPending := func(key []byte) error {
		for len(pendingKeys) > 0 && (key == nil || pendingKeys[0] < string(key)) {
			k := pendingKeys[0]
			pendingKeys = pendingKeys[1:]
			if stored := writes[k]; stored != nil {
				if err := fn([]byte(k), stored); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := walk(func(k, stored []byte) error {
		if err := yieldPending(k); err != nil {
			return err
		}
		if stored, ok := writes[string(k)]; ok {
			if len(pendingKeys) > 0 && pendingKeys[0] == string(k) {
				pendingKeys = pendingKeys[1:]
			}
			if stored == nil {
				return nil // deleted
			}
			return fn(k, stored)
		}
		return fn(k, stored)
	})
	if err != nil {
		return err
	}
	return yieldPending(nil)
}

// version implements Version: a bucket's sequence is the ID of the last commit that wrote it
// (flush sets it), and commit IDs only grow, so it names the bucket's committed contents. In an
// update, the bucket may have writes of this commit (this update's pending ones, or those an
// earlier update of the same commit flushed, after recording the version they changed): their
// keys are the changed ones.
func (t *boltTx) version(bucket string) (uint64, []string) {
	var changed []string
	for k := range t.written {
		if k.bucket == bucket {
			changed = append(changed, k.key)
		}
	}
	slices.Sort(changed)
	return t.committedVersion(bucket), changed
}

// committedVersion is the version of the bucket's committed records that the transaction sees.
func (t *boltTx) committedVersion(bucket string) uint64 {
	if v, ok := t.bases[bucket]; ok {
		return v
	}
	if bk := t.tx.Bucket([]byte(bucket)); bk != nil {
		return bk.Sequence()
	}
	return 0
}

func (t *boltTx) changedSince(bucket string, since uint64) ([]string, bool) {
	return t.log.since(bucket, since, t.committedVersion(bucket))
}

// writtenKeys are the keys a commit wrote, per bucket it flushed writes to (those in bases): the
// keys of updates that failed in a flushed bucket are among them, which costs a reader of the
// log a needless read, never a missed change.
func writtenKeys(written map[recordKey]bool, bases map[string]uint64) map[string][]string {
	out := map[string][]string{}
	for k := range written {
		if _, flushed := bases[k.bucket]; flushed {
			out[k.bucket] = append(out[k.bucket], k.key)
		}
	}
	return out
}

// sharedValue returns the decoded record from the cache when stored are the bytes it was decoded
// from (is tells a value of the caller's type), or checks, decodes and caches it.
func (t *boltTx) sharedValue(bucket string, key, stored []byte, decode func(value []byte) (any, error), is func(any) bool) (any, error) {
	if v, ok := t.cache.lookup(bucket, key, stored); ok && is(v) {
		checkUnchanged(bucket, key, stored[sumSize:], v, decode)
		return v, nil
	}
	k := string(key)
	value, err := unseal(t.path, bucket, k, stored)
	if err != nil {
		return nil, err
	}
	v, err := decode(value)
	if err != nil {
		return nil, err
	}
	rk := recordKey{bucket, k}
	if t.written[rk] {
		return v, nil // not committed yet, perhaps never
	}
	t.cache.remember(bucket, k, stored, v)
	if t.cache.deletes.Load() != t.deletes {
		// A delete committed meanwhile: this may be its record, which this older transaction
		// still sees; the delete's own drop may have come before this entry.
		t.cache.forget(bucket, k)
	}
	return v, nil
}
