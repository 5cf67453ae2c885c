package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/moatlb/moat/internal/testcheck"
)

// Shared reads. Decoding JSON is most of what reading the store costs, and the API and the data
// plane scan whole buckets (every target group to check a name, every group to filter by tag), so
// the store keeps the decoded form of each record it reads, and LoadShared and ListShared hand
// that out instead of decoding again.
//
// The cache is keyed by bucket and key and checked by content: a record is served from it only
// when the bytes the reading transaction finds in the file (checksum included) are exactly the
// bytes it was decoded from. So it can never show a transaction anything but what the file holds
// for that transaction — whatever commits, rollbacks and restarts happened, and without knowing
// about any of them — and damage on disk still fails the read: damaged bytes differ from the
// cached ones, and a record is checked against its checksum before it is decoded.
//
// Entries of deleted records are dropped after the commit. A reader whose transaction began
// before a delete may still find and cache the deleted record; it drops what it cached whenever a
// delete committed while it read, so that no entry outlives its record for long.

// sharedCache holds the decoded records of one store.
type sharedCache struct {
	buckets sync.Map // bucket name -> *bucketCache
	// deletes counts commits that deleted records.
	deletes atomic.Uint64
}

type bucketCache struct {
	mu      sync.RWMutex
	records map[string]*decoded
}

// decoded is a record as stored and as decoded: value is a *T, shared by every reader.
type decoded struct {
	stored []byte
	value  any
}

func (c *sharedCache) bucket(name string) *bucketCache {
	if b, ok := c.buckets.Load(name); ok {
		return b.(*bucketCache)
	}
	b, _ := c.buckets.LoadOrStore(name, &bucketCache{records: map[string]*decoded{}})
	return b.(*bucketCache)
}

// lookup returns the decoded value of the record bucket/key if stored are the bytes it was
// decoded from.
func (c *sharedCache) lookup(bucket string, key []byte, stored []byte) (any, bool) {
	b := c.bucket(bucket)
	b.mu.RLock()
	d := b.records[string(key)]
	b.mu.RUnlock()
	if d == nil || !bytes.Equal(d.stored, stored) {
		return nil, false
	}
	return d.value, true
}

func (c *sharedCache) remember(bucket, key string, stored []byte, value any) {
	b := c.bucket(bucket)
	d := &decoded{stored: bytes.Clone(stored), value: value}
	b.mu.Lock()
	b.records[key] = d
	b.mu.Unlock()
}

func (c *sharedCache) forget(bucket, key string) {
	b := c.bucket(bucket)
	b.mu.Lock()
	delete(b.records, key)
	b.mu.Unlock()
}

// committedDeletes drops the entries of records a commit deleted. The count goes up first, so
// that a reader which cached one of them after this drop sees it changed and drops it itself.
func (c *sharedCache) committedDeletes(keys []recordKey) {
	if len(keys) == 0 {
		return
	}
	c.deletes.Add(1)
	for _, k := range keys {
		c.forget(k.bucket, k.key)
	}
}

type recordKey struct{ bucket, key string }

// sharedTx is what a transaction offers LoadShared and ListShared: the stored bytes of records,
// unchecked, and the cache.
type sharedTx interface {
	stored(bucket, key string) ([]byte, error)
	forEachStored(bucket string, fn func(key, stored []byte) error) error
	sharedValue(bucket string, key, stored []byte, decode func(value []byte) (any, error), is func(any) bool) (any, error)
}

// Version returns a number naming committed contents of bucket: transactions of a store that get
// the same version of a bucket start from the same records in it, so that something derived from
// them (an index) can be kept and reused while the version stays. changed are the keys, in
// order, of the records tx sees otherwise, because it (or an earlier update of its commit) wrote
// them: nil in a read-only transaction. ok is false when the store keeps no versions.
func Version(tx Tx, bucket string) (v uint64, changed []string, ok bool) {
	if vt, is := tx.(interface {
		version(string) (uint64, []string)
	}); is {
		v, changed = vt.version(bucket)
		return v, changed, true
	}
	return 0, nil, false
}

// LoadShared is Load for readers: the value's maps and slices may be shared with every other
// reader of the record, so it must be read, never written through (no element assignments, map
// writes, deletes or in-place sorts; assigning its fields, and appending to its slices, are fine).
// Tests fail loudly when a shared value was changed.
func LoadShared[T any](tx Tx, bucket, key string) (T, error) {
	st, ok := tx.(sharedTx)
	if !ok {
		return Load[T](tx, bucket, key)
	}
	stored, err := st.stored(bucket, key)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := sharedDecode[T](st, bucket, []byte(key), stored)
	if err != nil {
		var zero T
		return zero, err
	}
	return *v, nil
}

// ListShared is List for readers, with LoadShared's rule: never write through what it returns.
func ListShared[T any](tx Tx, bucket string) ([]T, error) {
	st, ok := tx.(sharedTx)
	if !ok {
		return List[T](tx, bucket)
	}
	var out []T
	err := st.forEachStored(bucket, func(key, stored []byte) error {
		v, err := sharedDecode[T](st, bucket, key, stored)
		if err != nil {
			return err
		}
		out = append(out, *v)
		return nil
	})
	return out, err
}

func sharedDecode[T any](st sharedTx, bucket string, key, stored []byte) (*T, error) {
	v, err := st.sharedValue(bucket, key, stored, func(value []byte) (any, error) {
		p := new(T)
		if err := json.Unmarshal(value, p); err != nil {
			return nil, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
		}
		clipSlices(reflect.ValueOf(p).Elem())
		return p, nil
	}, func(v any) bool { _, ok := v.(*T); return ok })
	if err != nil {
		return nil, err
	}
	return v.(*T), nil
}

// checkUnchanged, in tests, decodes the record again and compares: a reader that wrote through a
// shared value would otherwise corrupt what every later reader sees, silently.
func checkUnchanged(bucket string, key []byte, value []byte, shared any, decode func([]byte) (any, error)) {
	if !testcheck.Enabled() {
		return
	}
	fresh, err := decode(value)
	if err != nil {
		panic(err)
	}
	if !reflect.DeepEqual(fresh, shared) {
		panic(fmt.Sprintf("store: the shared value of record %s/%s was changed by a reader (LoadShared and ListShared values are read-only): %+v, stored %+v",
			bucket, key, reflect.ValueOf(shared).Elem(), reflect.ValueOf(fresh).Elem()))
	}
}

// clipSlices sets the capacity of every slice in v to its length, so that a reader appending to
// a shared slice gets a new array instead of writing into the one every reader shares.
func clipSlices(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			clipSlices(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				clipSlices(f)
			}
		}
	case reflect.Slice:
		v.Set(v.Slice3(0, v.Len(), v.Len()))
		for i := range v.Len() {
			clipSlices(v.Index(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			clipSlices(v.Index(i))
		}
	case reflect.Map:
		if !mayHoldSlices(v.Type().Elem(), map[reflect.Type]bool{}) {
			return
		}
		// Map values cannot be changed in place: clip a copy and put it back.
		iter := v.MapRange()
		for iter.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(iter.Value())
			clipSlices(e)
			v.SetMapIndex(iter.Key(), e)
		}
	}
}

// mayHoldSlices reports whether a value of type t can contain a slice; seen stops the walk at
// types it is already in.
func mayHoldSlices(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Slice, reflect.Interface:
		return true
	case reflect.Pointer, reflect.Array, reflect.Map:
		return mayHoldSlices(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if mayHoldSlices(t.Field(i).Type, seen) {
				return true
			}
		}
	}
	return false
}
