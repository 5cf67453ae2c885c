package store

import (
	"fmt"
	"io"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded Store: one bbolt file, fsynced on every commit, each record with its own
// checksum.
type Bolt struct {
	db   *bolt.DB
	path string

	mu       sync.Mutex
	watchers map[chan struct{}]struct{}

	cache sharedCache
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
	b := &Bolt{db: db, path: path, watchers: map[chan struct{}]struct{}{}}
	records, err := b.verify(readOnly)
	if err != nil {
		db.Close()
		return nil, 0, err
	}
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

func (b *Bolt) View(fn func(Tx) error) error {
	// The count is read before the transaction begins: see sharedCache.
	btx := &boltTx{path: b.path, cache: &b.cache, deletes: b.cache.deletes.Load()}
	return b.db.View(func(tx *bolt.Tx) error { btx.tx = tx; return fn(btx) })
}

func (b *Bolt) Update(fn func(Tx) error) error {
	btx := &boltTx{path: b.path, cache: &b.cache, deletes: b.cache.deletes.Load(), written: map[recordKey]bool{}}
	if err := b.db.Update(func(tx *bolt.Tx) error { btx.tx = tx; return fn(btx) }); err != nil {
		return err
	}
	b.cache.committedDeletes(btx.deleted)
	// Watchers hear of commits that changed something, so a no-op update wakes nobody.
	if btx.wrote {
		b.notify()
	}
	return nil
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

func (b *Bolt) Close() error { return b.db.Close() }

type boltTx struct {
	tx    *bolt.Tx
	path  string
	wrote bool

	cache *sharedCache
	// deletes is the cache's count of deleting commits when the transaction began.
	deletes uint64
	// written are the records an update wrote: their bytes may never be committed, so they are
	// not cached. deleted are those it deleted, dropped from the cache once committed.
	written map[recordKey]bool
	deleted []recordKey
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
	t.wrote = true
	t.noteWrite(bucket, key, false)
	bk, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return bk.Put([]byte(key), seal(bucket, key, value))
}

func (t *boltTx) Delete(bucket, key string) error {
	t.wrote = true
	t.noteWrite(bucket, key, true)
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil
	}
	return bk.Delete([]byte(key))
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

func (t *boltTx) noteWrite(bucket, key string, deleted bool) {
	if t.written == nil {
		return // a read-only transaction, where bbolt refuses the write
	}
	t.written[recordKey{bucket, key}] = true
	if deleted {
		t.deleted = append(t.deleted, recordKey{bucket, key})
	}
}

// stored returns the record's bytes as stored, unchecked and valid only in the transaction.
func (t *boltTx) stored(bucket, key string) ([]byte, error) {
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

func (t *boltTx) forEachStored(bucket string, fn func(key, stored []byte) error) error {
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil
	}
	return bk.ForEach(fn)
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
