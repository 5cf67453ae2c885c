// Package store keeps moat lb's durable state: every resource the API creates, as JSON records in
// named buckets. A mutation is committed (fsynced) before Update returns, so the API can answer only
// after its change is safe, and a kill -9 at any moment loses no acknowledged change.
//
// The interface is deliberately small — buckets of keyed records and serialisable transactions — so
// that it has two implementations: Bolt, one file for one moat lb, and Etcd, an etcd cluster that
// several moat lb nodes share.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Store is a transactional key-value store of JSON records.
type Store interface {
	// View runs fn in a read-only transaction that sees one consistent snapshot.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction. Writes become visible and durable together when
	// fn returns nil; if fn returns an error nothing is written.
	Update(fn func(Tx) error) error
	// Changes returns a channel that receives a value after every committed Update that wrote
	// something (coalesced: a slow reader sees at least one signal after the last change), and a
	// function that stops it.
	Changes() (<-chan struct{}, func())
	Close() error
}

// Tx is a view of the store inside a transaction. Keys are unique within a bucket.
//
// A record whose bytes changed since they were written (damage on disk) is never returned: Get and
// ForEach fail with an error wrapping ErrCorrupt that names its bucket and key.
type Tx interface {
	// Get returns the record bucket/key, or ErrNotFound.
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	// ForEach calls fn for every record of bucket in key order; an error from fn stops the walk.
	ForEach(bucket string, fn func(key string, value []byte) error) error
}

// ErrNotFound is returned by Get and Load when the key does not exist.
var ErrNotFound = errors.New("not found")

// Load decodes the record bucket/key into a new T.
func Load[T any](tx Tx, bucket, key string) (T, error) {
	var v T
	raw, err := tx.Get(bucket, key)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return v, nil
}

// Save encodes v as the record bucket/key.
func Save(tx Tx, bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", bucket, key, err)
	}
	return tx.Put(bucket, key, raw)
}

// List decodes every record of bucket, in key order.
func List[T any](tx Tx, bucket string) ([]T, error) {
	var out []T
	err := tx.ForEach(bucket, func(key string, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s/%s: %w", bucket, key, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}
