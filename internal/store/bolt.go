package store

import (
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded Store: one bbolt file, fsynced on every commit.
type Bolt struct {
	db *bolt.DB

	mu       sync.Mutex
	watchers map[chan struct{}]struct{}
}

// OpenBolt opens (or creates) the store file at path. A second process opening the same file waits
// up to a few seconds for the lock, then fails, so two moat lb never share one data dir.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db, watchers: map[chan struct{}]struct{}{}}, nil
}

func (b *Bolt) View(fn func(Tx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

func (b *Bolt) Update(fn func(Tx) error) error {
	btx := &boltTx{}
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
	wrote bool
}

func (t *boltTx) Get(bucket, key string) ([]byte, bool) {
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil, false
	}
	v := bk.Get([]byte(key))
	if v == nil {
		return nil, false
	}
	// bbolt's slices are valid only inside the transaction; callers may keep the copy.
	return append([]byte(nil), v...), true
}

func (t *boltTx) Put(bucket, key string, value []byte) error {
	t.wrote = true
	bk, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return bk.Put([]byte(key), value)
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
	return bk.ForEach(func(k, v []byte) error { return fn(string(k), v) })
}
