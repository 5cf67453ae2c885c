package lb

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/store"
)

// MigrateResult says what Migrate copied.
type MigrateResult struct {
	Buckets, Records int
	// Credentials is whether the data dir's credentials file was copied (it is missing when the
	// data dir never served).
	Credentials bool
}

// Batches of a copy: one etcd transaction each, well inside etcd's defaults (128 operations,
// the bucket's marker among them; 1.5 MiB).
const (
	migrateBatchRecords = 100
	migrateBatchBytes   = 1 << 20
)

// Migrate copies the state of cfg.DataDir's state file, every bucket, and its credentials file
// into the etcd root cfg.Store names, so that moat lb --store answers as the data dir's moat lb
// did, with the same keys. The root must be empty, so that the copy never mixes with another
// deployment's state, and no moat lb may hold the data dir, so that the copy is the last state.
// The state file is only read. A copy that fails part-way leaves a partial root: delete it
// (etcdctl del --prefix ROOT/) before trying again.
func Migrate(cfg Config) (MigrateResult, error) {
	var res MigrateResult
	if cfg.Store == "" {
		return res, errors.New("--to: want the etcd store to copy the state to, etcd://host:port[,host:port…][/root]")
	}
	if err := cfg.validateStore(); err != nil {
		return res, err
	}
	stopFirst := "stop it first, so that the copy is its last state"
	release, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return res, fmt.Errorf("%w: %s", err, stopFirst)
	}
	defer release()
	statePath := filepath.Join(cfg.DataDir, StateFile)
	if _, err := os.Stat(statePath); err != nil {
		return res, fmt.Errorf("no state to migrate: %w", err)
	}
	from, err := store.OpenBoltReadOnly(statePath)
	if errors.Is(err, store.ErrLocked) {
		return res, fmt.Errorf("data dir %s is in use by another moat lb: %s", cfg.DataDir, stopFirst)
	}
	if err != nil {
		return res, err
	}
	defer from.Close()
	credsPath := filepath.Join(cfg.DataDir, CredentialsFile)
	creds, err := os.ReadFile(credsPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		creds = nil
	case err != nil:
		return res, fmt.Errorf("read credentials: %w", err)
	default:
		if _, err := sigv4.ParseKeys(credsPath, creds); err != nil {
			return res, err
		}
	}

	to, err := openEtcd(cfg)
	if err != nil {
		return res, err
	}
	defer to.Close()
	empty, err := to.Empty()
	if err != nil {
		return res, fmt.Errorf("--to: %w", err)
	}
	if !empty {
		return res, fmt.Errorf("--to %s: the root holds state already; migrate copies only into an empty root (another root, or delete this one with etcdctl del --prefix %s/)", cfg.Store, to.Root())
	}

	buckets, err := from.Buckets()
	if err != nil {
		return res, err
	}
	if creds != nil {
		err := to.Update(func(tx store.Tx) error {
			return store.Save(tx, credentialsBucket, credentialsKey, sharedCredentials{File: string(creds)})
		})
		if err != nil {
			return res, fmt.Errorf("copy credentials: %w", err)
		}
		res.Credentials = true
	}
	// One read transaction for every bucket: the copy is one consistent state.
	err = from.View(func(tx store.Tx) error {
		for _, bucket := range buckets {
			n, err := copyBucket(tx, to, bucket)
			res.Records += n
			if err != nil {
				return fmt.Errorf("copy bucket %s (%d records of %d buckets copied so far; delete the root before trying again): %w", bucket, res.Records, res.Buckets, err)
			}
			res.Buckets++
		}
		return nil
	})
	return res, err
}

// copyBucket writes every record of bucket in from into to, in batches.
func copyBucket(from store.Tx, to store.Store, bucket string) (copied int, err error) {
	type record struct {
		key   string
		value []byte
	}
	var batch []record
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := to.Update(func(tx store.Tx) error {
			for _, r := range batch {
				if err := tx.Put(bucket, r.key, r.value); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			copied += len(batch)
		}
		batch, size = batch[:0], 0
		return err
	}
	err = from.ForEach(bucket, func(key string, value []byte) error {
		if len(batch) == migrateBatchRecords || (len(batch) > 0 && size+len(key)+len(value) > migrateBatchBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, record{key, value}) // valid until the read transaction ends, after every flush
		size += len(key) + len(value)
		return nil
	})
	if err != nil {
		return copied, err
	}
	return copied, flush()
}
