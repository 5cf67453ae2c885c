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
	return b.db.View(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx, path: b.path}) })
}

func (b *Bolt) Update(fn func(Tx) error) error {
	btx := &boltTx{path: b.path}
	if err := b.db.Update(func(tx *bolt.Tx) error { btx.tx = tx; return fn(btx) }); err != nil {
		return err
	}
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
}

func (t *boltTx) Get(bucket, key string) ([]byte, error) {
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil, ErrNotFound
	}
	stored := bk.Get([]byte(key))
	if stored == nil {
		return nil, ErrNotFound
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
	bk, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return bk.Put([]byte(key), seal(bucket, key, value))
}

func (t *boltTx) Delete(bucket, key string) error {
	t.wrote = true
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil
	}
	return bk.Delete([]byte(key))
}

func (t *boltTx) ForEach(bucket string, fn func(key string, value []byte) error) error {
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil
	}
	return bk.ForEach(func(k, stored []byte) error {
		key := string(k)
		v, err := unseal(t.path, bucket, key, stored)
		if err != nil {
			return err
		}
		return fn(key, v)
	})
}
